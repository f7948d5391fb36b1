"""The documentation: the site builds strictly, every relative link resolves, the API
reference covers the public names, and nothing cites documents that are not in the
repository.

The site is built with ``mkdocs build --strict`` (mkdocs.yml: a warning — a broken link or
anchor, a page missing from the nav, a docstring mkdocstrings cannot render — is an
error) into a temporary folder, in a fresh interpreter, without the network. When mkdocs
is not installed the build test is skipped, unless ``CI`` is set: CI installs the ``docs``
extra (through ``dev``), so there a missing mkdocs fails.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import dpmap
from common import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BUILD_TIMEOUT_S = 120

#: Markdown files whose relative links must resolve.
MARKDOWN = sorted([ROOT / "README.md", ROOT / "examples" / "README.md", *DOCS.rglob("*.md")])

#: A cited Markdown document (``guides/methods.md``, ``../notes/x.md``, ``README.md``).
MD_CITATION = re.compile(r"(?<![\w/.-])((?:\.{1,2}/)*[\w/.-]*\w\.md)\b")
#: A relative path that climbs out of its folder (``../x``): it must lead to something that
#: exists in the repository.
CLIMB = re.compile(r"(?<![\w/.-])((?:\.\./)+[\w.-]+)")

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
DIRECTIVE = re.compile(r"^:::\s*(\S+)", re.M)


def relative_links(path: Path) -> list[str]:
    """The link targets in a Markdown file that point into the repository (code blocks and
    inline code left out; web addresses, mail and same-page anchors left out)."""
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        targets.append(target)
    return targets


def test_markdown_files_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in MARKDOWN}
    assert {"README.md", "docs/index.md", "docs/privacy-promise.md"} <= names
    assert len(names) >= 20, sorted(names)


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_files_that_exist(path: Path) -> None:
    broken = []
    for target in relative_links(path):
        file_part = target.split("#", 1)[0]
        if not file_part:
            continue
        resolved = (path.parent / file_part).resolve()
        if not resolved.exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)} links to missing files: {broken}"


def test_link_checker_sees_links_and_catches_a_broken_one(tmp_path: Path) -> None:
    """The checker itself: it finds links outside code and ignores those inside it."""
    page = tmp_path / "page.md"
    page.write_text(
        "See [a](real.md#part), [b](missing.md) and [c](https://example.org).\n"
        "`[d](in-code.md)`\n```\n[e](in-fence.md)\n```\n",
        encoding="utf-8",
    )
    assert relative_links(page) == ["real.md#part", "missing.md"]


def test_readme_starts_with_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = FENCE.search(readme)
    assert first_block is not None
    assert readme[: first_block.start()].count("\n") <= 2, "the commands must come first"
    commands = [
        line.split("#", 1)[0].strip()
        for line in first_block.group(0).splitlines()[1:-1]
        if line.strip()
    ]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert len(readme.splitlines()) <= 150, "keep the README short: move details to docs/"


def _cited_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "mkdocs.yml"]
    for folder in ("docs", "src", "examples", "benchmarks"):
        files += [
            p
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and p.suffix in {".md", ".py", ".yml", ".toml", ".txt"}
        ]
    return files


def outside_citations(path: Path, text: str) -> list[str]:
    """The documents ``text`` (of the file ``path``) cites that are not in the repository:
    a Markdown file found neither beside ``path``, nor from the repository's root or the docs
    folder, nor by its name anywhere in the repository; or a ``../`` path to nothing in it."""
    names = {p.name for p in MARKDOWN}
    bases = (path.parent, ROOT, DOCS)
    out = []
    for cited in MD_CITATION.findall(text):
        found = any(
            (b / cited).resolve().is_file() and (b / cited).resolve().is_relative_to(ROOT)
            for b in bases
        )
        by_name = "/" not in cited.lstrip("./") and cited in names
        if not (found or by_name):
            out.append(cited)
    for climb in CLIMB.findall(text):
        target = (path.parent / climb).resolve()
        if not (target.exists() and target.is_relative_to(ROOT)):
            out.append(climb)
    return out


def test_no_reference_to_documents_outside_the_repository() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {cited}"
        for path in _cited_files()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for cited in outside_citations(path, line)
    ]
    assert not hits, "references to documents that are not in the repository:\n" + "\n".join(hits)


def test_outside_citations_finds_what_it_must() -> None:
    here = DOCS / "index.md"
    for text in ("see NOTES_ELSEWHERE.md", "(../../../notes/x)", "../../outside.md", "../notes/x"):
        assert outside_citations(here, text), text
    for text in ("guides/methods.md", "docs/guides/methods.md", "README.md", "../src/dpmap"):
        assert not outside_citations(here, text), text


def reference_directives() -> set[str]:
    found: set[str] = set()
    for page in (DOCS / "reference").glob("*.md"):
        found |= set(DIRECTIVE.findall(page.read_text(encoding="utf-8")))
    return found


def test_api_reference_covers_every_public_name() -> None:
    documented = reference_directives()
    public = [name for name in dpmap.__all__ if name != "__version__"]
    missing = [name for name in public if f"dpmap.{name}" not in documented]
    assert not missing, f"public names without an API reference entry: {missing}"


def test_docs_site_builds_strictly(tmp_path: Path) -> None:
    if (
        importlib.util.find_spec("mkdocs") is None
        or importlib.util.find_spec("mkdocstrings_handlers") is None
    ):
        skip_or_fail("mkdocs/mkdocstrings are not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    assert "WARNING" not in log, log
    # every page of the nav was written, and the reference rendered every public name
    for page in DOCS.rglob("*.md"):
        rel = page.relative_to(DOCS).with_suffix("")
        out = site / rel.parent / "index.html" if rel.name == "index" else site / rel / "index.html"
        assert out.is_file(), f"{page.relative_to(ROOT)} was not built ({out})"
    html = "".join(p.read_text(encoding="utf-8") for p in (site / "reference").rglob("*.html"))
    # numpydoc entries of several names ("epsilon, delta", "lat, lng") show each name's own
    # default (docs/_griffe/readable_docstrings.py; griffe alone repeats the first name's)
    roles = sorted(
        set(re.findall(r":(?:func|class|meth|mod|attr|data|exc):(?:`|<code>)[^<`]*", html))
    )
    assert not roles, f"Sphinx roles shown literally in the API reference: {roles[:5]}"
    page = (site / "reference" / "api-release" / "index.html").read_text(encoding="utf-8")
    page = page[page.index('id="dpmap.release"') :]
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)).replace("&#39;", "'")
    text = text[text.index("Parameters:") :]
    for name, default, following in (("delta", "0.0", "lat"), ("lng", "'lng'", "person")):
        row = re.search(rf" {name} \S+ .*? (\S+) {following} ", text)
        assert row is not None, f"no parameter row for {name!r} in the API reference"
        assert row.group(1) == default, f"{name} is shown with default {row.group(1)}"
    for name in dpmap.__all__:
        if name == "__version__":
            continue
        assert f'id="dpmap.{name}"' in html, f"dpmap.{name} is not rendered in the API reference"


def load_docs_extension() -> ModuleType:
    if importlib.util.find_spec("griffe") is None:
        skip_or_fail("griffe is not installed (pip install -e '.[docs]')")
    path = DOCS / "_griffe" / "readable_docstrings.py"
    spec = importlib.util.spec_from_file_location("readable_docstrings", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_extension_rewrites_roles_and_prose_definition_lists() -> None:
    ext = load_docs_extension()
    assert ext.ROLE.sub(ext._role, ":func:`dpmap.explain`") == "`dpmap.explain`"
    assert ext.ROLE.sub(ext._role, ":class:`~dpmap.releases.Release`") == "`Release`"
    assert ext.ROLE.sub(ext._role, ":meth:`the table <Release.table>`") == "`the table`"
    text = "\n".join(
        [
            "Summary.",
            "",
            "Two releases",
            "    Cell by cell.",
            "    More.",
            "Two roll-ups",
            "    Zone by zone.",
            "",
            "```",
            "",
            "term",
            "    code",
            "```",
            "",
            "Parameters",
            "----------",
            "a",
            "    The a.",
            "b",
            "    The b.",
        ]
    )
    assert ext._definition_lists(text).split("\n") == [
        "Summary.",
        "",
        "Two releases",
        ":   Cell by cell.",
        "    More.",
        "",
        "Two roll-ups",
        ":   Zone by zone.",
        "",
        "```",
        "",
        "term",
        "    code",
        "```",
        "",
        "Parameters",
        "----------",
        "a",
        "    The a.",
        "b",
        "    The b.",
    ]
