"""``import dpmap`` is light, and every public name still resolves.

The public names are imported on first use (``dpmap.__getattr__``), so ``import dpmap`` (and
so the start of the ``dpmap`` command and of every Spark worker, which import the package
first) must not load the heavy libraries. Checked in a fresh interpreter through
``sys.modules`` (timings are in ``benchmarks/bench_imports.py``, not asserted here).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import dpmap

SRC = Path(__file__).resolve().parents[1] / "src"

#: libraries that ``import dpmap`` must not import (each costs 0.05-0.3 s)
HEAVY = (
    "pandas",
    "polars",
    "geopandas",
    "h3",
    "shapely",
    "opendp",
    "matplotlib",
    "folium",
    "numpy",
    "pyarrow",
    "pyspark",
)


def loaded_after(code: str) -> list[str]:
    """The modules of :data:`HEAVY` and of dpmap loaded by ``code`` in a fresh interpreter."""
    probe = (
        f"{code}\nimport sys\n"
        f"print(' '.join(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}"
        " or m.startswith('dpmap.')))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split()


def test_import_dpmap_loads_no_heavy_library() -> None:
    loaded = loaded_after("import dpmap")
    heavy = sorted({m.split(".")[0] for m in loaded} & set(HEAVY))
    assert not heavy, f"import dpmap imports {heavy}"
    assert [m for m in loaded if m.startswith("dpmap.")] == ["dpmap._version"]


def test_the_command_line_starts_without_heavy_libraries() -> None:
    """Building the whole ``dpmap`` command (every subcommand's options) imports none of them;
    the commands import the library when they run."""
    code = "from dpmap.cli.app import cli_options\nassert 'epsilon' in cli_options()"
    heavy = sorted({m.split(".")[0] for m in loaded_after(code)} & set(HEAVY))
    assert not heavy, f"the dpmap command imports {heavy} before running a command"


def test_every_public_name_resolves() -> None:
    for name in dpmap.__all__:
        assert getattr(dpmap, name) is not None, name
    assert set(dpmap.__all__) <= set(dir(dpmap))


def test_public_functions_are_not_shadowed_by_modules() -> None:
    """``dpmap.release`` and ``dpmap.audit`` stay the functions whatever is imported later
    (their code lives in ``dpmap.releases`` and ``dpmap.auditing``)."""
    code = (
        "import dpmap\nfrom dpmap import release, audit\n"
        "import dpmap.releases, dpmap.releases.pipeline, dpmap.auditing\n"
        "from dpmap import Release\n"
        "assert dpmap.release is release and callable(release), dpmap.release\n"
        "assert dpmap.audit is audit and callable(audit), dpmap.audit\n"
        "assert release.__module__ == 'dpmap.releases.pipeline'\n"
        "assert Release is dpmap.releases.Release\n"
    )
    loaded_after(code)


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'relase'"):
        dpmap.relase  # noqa: B018
    assert not hasattr(dpmap, "pandas")
