"""The package's structure rules, enforced (see docs: the architecture page).

- Import contracts (``.importlinter``, checked with import-linter): the layers from the command
  line down to the parameters, only the privacy layer imports OpenDP, the engines never reach
  the privacy layer or the designs.
- No module imports a private (underscore) name from another module, nor reads another
  object's private attributes through a module it imported.
- No function in ``src/`` is longer than 80 lines (its docstring not counted), unless listed in
  :data:`LONG_FUNCTIONS` with the reason.
- Every design is registered, and every registered design implements the whole protocol.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "dpmap"

#: functions allowed over the limit, with the reason (keep this list short)
LONG_FUNCTIONS: dict[str, str] = {
    "dpmap.auditing.audit": "its keyword-only signature alone is 20 lines (every audit parameter); "
    "the body is named steps",
}

MAX_LINES = 80


def _python_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_import_contracts() -> None:
    """The layers and the OpenDP boundary, as import-linter checks them."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        skip_or_fail("import-linter is not installed (pip install -e '.[dev]')")
    proc = subprocess.run(
        [exe, "--config", str(ROOT / ".importlinter")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(SRC.parent), "PATH": str(Path(sys.executable).parent)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout


def _private_crossings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = _module_name(path)
    imported_modules: dict[str, str] = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dpmap"):
            for alias in node.names:
                name = alias.name
                if name.startswith("_") and not name.startswith("__") and node.module != own:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{name}")
                elif not name.startswith("_"):
                    imported_modules[alias.asname or name] = node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("dpmap"):
                    imported_modules[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in imported_modules
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_private_name_crosses_a_module_border() -> None:
    found = [hit for path in _python_files() for hit in _private_crossings(path)]
    assert found == [], "private names used across modules:\n" + "\n".join(found)


def test_the_private_name_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from dpmap.releases.result import _write_geoparquet\n"
        "from dpmap.engines import local\n"
        "local._secret()\n"
    )
    src = SRC / "bad_probe.py"
    shutil.copy(bad, src)
    try:
        assert len(_private_crossings(src)) == 2
    finally:
        src.unlink()


def _function_lengths(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                lines -= first.end_lineno - first.lineno + 1  # type: ignore[operator]
            out.append((f"{_module_name(path)}.{node.name}", lines))
    return out


def test_no_function_is_too_long() -> None:
    long = {
        name: n
        for path in _python_files()
        for name, n in _function_lengths(path)
        if n > MAX_LINES and name not in LONG_FUNCTIONS
    }
    assert long == {}, f"functions over {MAX_LINES} lines (docstring not counted): {long}"


def test_every_design_implements_the_protocol() -> None:
    from dpmap.designs import DESIGNS
    from dpmap.designs.base import Design

    members = [
        name
        for name, value in vars(Design).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, classmethod))
    ]
    assert {"plan", "measure", "correlation", "recognises", "manifest_entries"} <= set(members)
    kinds = set()
    for design in DESIGNS:
        for name in members:
            assert callable(getattr(design, name, None)), f"{design.__name__} lacks {name}"
        for attr in ("kind", "several_levels", "mixed_resolutions"):
            assert hasattr(design, attr), f"{design.__name__} lacks {attr}"
        kinds.add(design.kind)
    assert len(kinds) == len(DESIGNS)
    modules = {p.stem for p in (SRC / "designs").glob("*.py")} - {
        "__init__",
        "base",
        "hierarchy",
        "adaptive",
        "distribution",  # quantiles and value bands, shared by the flat and zone designs
        "timeline",  # least squares along a panel's time hierarchy (post-processing)
        "continual",  # the tree mechanism for running totals, for the panel release to wire in
    }
    assert {d.__module__.rsplit(".", 1)[1] for d in DESIGNS} == modules


@pytest.mark.parametrize(
    "design",
    ["flat", "discovery", "hierarchical", "privtree", "grid"],
)
def test_old_manifests_name_their_design(design: str) -> None:
    """Format-1 manifests written before the ``design`` entry are recognised from their
    other entries, exactly as the release that wrote them would name itself."""
    from dpmap.designs import design_of

    manifests = {
        "flat": {"cell_selection": {"method": "public region"}, "resolution": 7},
        "discovery": {"cell_selection": {"method": "private discovery"}, "resolution": 7},
        "hierarchical": {
            "cell_selection": {"method": "public region"},
            "hierarchy": {"levels": [5, 7]},
            "resolution": [5, 7],
        },
        "privtree": {
            "cell_selection": {"method": "public region"},
            "adaptive": {"root_resolution": 3},
        },
        "grid": {"cell_selection": {"method": "public region"}, "adaptive": {"kind": "grid"}},
    }
    assert design_of(manifests[design]).kind == design
    assert design_of({**manifests[design], "design": design}).kind == design
