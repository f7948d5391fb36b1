"""The one parameter table (:mod:`dpmap.parameters`) agrees with every entry point.

The table is the single place a release parameter is written down; the command line's
options and :data:`dpmap.auditing.AUDIT_PARAMETERS` are derived from it. These tests check
what is *not* derived: the signature and the docstring of :func:`dpmap.release` and the
keywords :func:`dpmap.explain` accepts, and that the derived ``--help`` of each command
lists every flag of the table.
"""

from __future__ import annotations

import inspect
import re

import pytest
from shapely.geometry import box
from typer.testing import CliRunner

import dpmap
from dpmap import SpecError, parameters
from dpmap.cli import app

REGION = box(116.0, 39.0, 116.5, 39.4)
#: values for the parameters without a default (the rest are passed at their defaults)
REQUIRED_VALUES = {"points": None, "resolution": 6, "epsilon": 1.0}


def test_release_signature_is_the_table() -> None:
    """Same names in the same order, same kinds, defaults and declared types."""
    signature = inspect.signature(dpmap.release)
    rows = parameters.for_entry_point("release")
    assert list(signature.parameters) == [p.name for p in rows]
    for p in rows:
        declared = signature.parameters[p.name]
        assert declared.kind == p.kind, p.name
        assert declared.default == p.default, p.name
        assert type(declared.default) is type(p.default), p.name  # 0 is not 0.0
        assert declared.annotation == p.type, p.name


def _numpydoc_parameters(doc: str) -> set[str]:
    """Names documented in a numpydoc "Parameters" section ("a, b" lines count both)."""
    lines = inspect.cleandoc(doc).splitlines()
    start = lines.index("Parameters") + 2  # the title and its underline
    names: set[str] = set()
    for i, line in enumerate(lines[start:], start):
        if i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1]):
            break  # the next section's title
        if line and not line[0].isspace():
            names.update(n.strip() for n in line.split(","))
    return names


def test_numpydoc_reader_reads_sections() -> None:
    doc = """Title.

    Parameters
    ----------
    a, b
        Two.
    c
        One.

    Returns
    -------
    d
        Not a parameter.
    """
    assert _numpydoc_parameters(doc) == {"a", "b", "c"}


def test_release_docstring_documents_every_parameter() -> None:
    documented = _numpydoc_parameters(dpmap.release.__doc__ or "")
    assert documented == parameters.names("release")


def test_explain_accepts_its_parameters() -> None:
    """Every explain parameter of the table, at its default, is accepted by dpmap.explain."""
    kwargs = {
        p.name: REQUIRED_VALUES.get(p.name, p.default)
        for p in parameters.for_entry_point("explain")
    }
    kwargs["region"] = REGION
    ex = dpmap.explain(**kwargs)
    assert ex.spec.resolution == 6 and ex.plan.epsilon <= 1.0
    assert ex.cells is not None and ex.cells > 0


def test_explain_is_a_subset_of_release() -> None:
    assert parameters.names("explain") <= parameters.names("release")
    assert parameters.names("explain") >= parameters.AUDIT_PARAMETERS


def test_audit_takes_the_tables_audit_parameters() -> None:
    from dpmap.auditing import AUDIT_PARAMETERS

    assert parameters.names("audit") == AUDIT_PARAMETERS
    assert {"resolution", "epsilon", "bounds", "adaptive"} <= AUDIT_PARAMETERS
    assert not {"region", "person", "lat", "ledger"} & AUDIT_PARAMETERS


@pytest.mark.parametrize("command", ["release", "explain", "audit"])
def test_help_lists_every_flag_of_the_table(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # no flag cut by a narrow terminal
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    flags = set(re.findall(r"--[a-z][a-z-]*", result.output))
    rows = parameters.for_entry_point(f"cli {command}")
    assert rows
    for p in rows:
        if p.flag is None:  # the points: an argument
            assert p.metavar is not None and p.metavar in result.output
            continue
        assert {p.flag, *p.aliases} <= flags, p.name
        assert p.help.split(";")[0][:40] in " ".join(result.output.split()), p.name


def test_a_flag_of_another_command_is_refused() -> None:
    """The derived options are the command's own: dpmap audit has no --region."""
    result = CliRunner().invoke(
        app, ["audit", "--resolution", "7", "--epsilon", "1", "--region", "x"]
    )
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("entry_point", "keyword", "suggestion"),
    [
        ("explain", "epsilom", "epsilon"),
        ("explain", "max_cell", "max_cells"),
        ("audit", "mechansim", "mechanism"),
        ("release", "suppress_bellow", "suppress_below"),
    ],
)
def test_check_keywords_suggests_the_closest_name(
    entry_point: str, keyword: str, suggestion: str
) -> None:
    with pytest.raises(SpecError) as info:
        parameters.check_keywords(entry_point, {"resolution": 7, keyword: 1})
    message = str(info.value)
    assert f"unknown parameter {keyword!r}" in message
    assert f"did you mean {suggestion!r}?" in message
    assert "\n" not in message


def test_check_keywords_lists_the_names_when_none_is_close() -> None:
    with pytest.raises(SpecError, match=r"unknown parameter 'zzz'.*audit takes adaptive, "):
        parameters.check_keywords("audit", ["zzz"])
    parameters.check_keywords("audit", sorted(parameters.AUDIT_PARAMETERS))  # all known: fine


def test_checked_keeps_the_signature_and_checks_keywords() -> None:
    @parameters.checked("explain")
    def plan(*, resolution: int, epsilon: float = 1.0, **rest: object) -> int:
        return resolution

    assert list(inspect.signature(plan).parameters) == ["resolution", "epsilon", "rest"]
    assert plan(resolution=7) == 7
    with pytest.raises(SpecError, match="did you mean 'epsilon'"):
        plan(resolution=7, epsilom=1.0)


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("resolution", "7", 7),
        ("resolution", "5,6,7", [5, 6, 7]),
        ("level_split", "1,2,4", [1.0, 2.0, 4.0]),
        ("level_split", "even", "even"),
        ("internal_share", "0.2", 0.2),
        ("internal_share", "0.1,0,0", [0.1, 0.0, 0.0]),
        ("categories", ["a", "b"], "a,b"),
        ("bounds", [0, 10], (0, 10)),
        ("mechanism", "gaussian", "gaussian"),
        ("region", None, None),
    ],
)
def test_flag_text_becomes_the_python_value(name: str, text: object, value: object) -> None:
    assert parameters.parameter(name).from_cli(text) == value


@pytest.mark.parametrize(("name", "text"), [("resolution", "7,x"), ("level_split", "1,a")])
def test_bad_flag_text_is_a_one_line_spec_error(name: str, text: str) -> None:
    with pytest.raises(SpecError) as info:
        parameters.parameter(name).from_cli(text)
    assert "--" + name.replace("_", "-") in str(info.value) and repr(text) in str(info.value)


def test_the_table_is_consistent() -> None:
    seen_flags: set[str] = set()
    for p in parameters.PARAMETERS:
        assert p.takes and p.takes <= set(parameters.ENTRY_POINTS), p.name
        on_cli = any(t.startswith("cli ") for t in p.takes)
        assert (p.flag is not None or p.metavar is not None) == on_cli, p.name
        for flag in (p.flag, *p.aliases):
            if flag is not None:
                assert flag not in seen_flags, flag
                seen_flags.add(flag)
        assert p.help and "\n" not in p.help, p.name
        if p.type is None:  # a flag of the command line only
            assert p.takes <= {"cli release", "cli explain", "cli audit"}, p.name
        if on_cli:
            p.option_type  # noqa: B018 - a type Typer can read, for every flag
    with pytest.raises(ValueError, match="unknown entry point"):
        parameters.for_entry_point("cli plot")
