"""The one table of release parameters, and what is derived from it.

Every parameter of a release is described once, in :data:`PARAMETERS`: its Python name,
type and default (as :func:`dpmap.release` declares them), a one-line help text, its
command-line flag with the type and default of that flag and the function that turns the
flag's text into the Python value, and the entry points that take it:

* ``"release"``, ``"explain"``, ``"audit"``: the Python functions :func:`dpmap.release`,
  :func:`dpmap.explain` and :func:`dpmap.audit` (through ``**params``);
* ``"cli release"``, ``"cli explain"``, ``"cli audit"``: the commands ``dpmap release``,
  ``dpmap explain`` and ``dpmap audit``.

A few rows are flags of the command line only (``--no-suppress`` and ``--adaptive-method``
stand for values of ``suppress_below=`` and ``adaptive=``). The command line builds the
options of those three commands from this table (``dpmap.cli.options``), the audit takes
:data:`AUDIT_PARAMETERS` from it, and ``tests/test_parameters.py`` checks that the
signature and docstring of :func:`dpmap.release` agree with it.

A base module: it imports nothing of dpmap but :mod:`dpmap.errors`.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from dpmap.errors import SpecError

__all__ = [
    "AUDIT_PARAMETERS",
    "DEFAULT_INTERNAL_SHARE",
    "DEFAULT_TREE_SHARE",
    "ENTRY_POINTS",
    "PARAMETERS",
    "REQUIRED",
    "Parameter",
    "check_keywords",
    "checked",
    "for_entry_point",
    "names",
    "parameter",
    "parse_levels",
]

#: the default of a parameter that has none (``inspect.Parameter.empty``)
REQUIRED: Any = inspect.Parameter.empty

#: share of ε an adaptive release spends on its split (PrivTree) or first level (grid).
#: Default share of ε for the split decisions. Measured by benchmarks/utility.py over three
#: regions, N = 1e4..1e6 and ε = 0.1..1: 0.3 gave lower range-query error than 0.5 in
#: 81 of 81 settings (median −19%); 0.2 was about level, 0.1 worse at small N.
DEFAULT_TREE_SHARE = 0.3
#: share of the rest spent on noisy internal nodes of a PrivTree (0: leaves only).
#: Default share of each statistic's post-tree budget for the internal nodes (split evenly
#: over the internal resolutions); the leaves get the rest. 0 publishes leaves only.
#: Measured by benchmarks/utility.py (random rectangles, three regions): 0.2 raised the mean
#: error by 8–10% (finest resolution UG rule + 2) and 4–5% (+1) in each size class (full
#: run, N = 1e4..1e6, ε = 0.1..1, geometric means over settings); in exploratory
#: runs (N = 1e4, 1e5, ε = 0.5, 1) 0.35 by 14–18% and 0.5 by 28–29%, and shares on the
#: coarsest depths only, with a coarser root or with tree_share 0.2, were at best level on
#: the 1–10% rectangles (−0.6% to +7%) and worse on smaller ones. The leaves lose budget
#: everywhere while an internal value helps only queries covering its whole subtree of many
#: leaves (the region total: standard deviation 71 → 26 in one Pennsylvania tree with 0.3
#: at the coarsest depth). So internal values are opt-in.
DEFAULT_INTERNAL_SHARE = 0.0

ENTRY_POINTS = ("release", "explain", "audit", "cli release", "cli explain", "cli audit")

_SAME: Any = object()
_F = TypeVar("_F", bound=Callable[..., Any])
#: the Python types (as declared) that a flag reads as they are
_RUNTIME_TYPES: dict[str, Any] = {
    "bool": bool,
    "float": float,
    "int": int,
    "str": str,
    "int | None": int | None,
    "str | None": str | None,
}  # "the flag has the Python default / type"


@dataclass(frozen=True)
class Parameter:
    """One release parameter: how Python and the command line spell, type and read it."""

    name: str
    #: the annotation :func:`dpmap.release` declares (as text: the modules use
    #: ``from __future__ import annotations``); None for a flag of the command line only
    type: str | None
    default: Any
    help: str
    takes: frozenset[str]
    #: long flag (None: not on the command line); ``aliases`` are its other names
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    #: the flag's type and default as Typer reads them (default: the Python ones)
    cli_type: Any = _SAME
    cli_default: Any = _SAME
    #: flag text (or a --config value) → the Python value; None: taken as Typer reads it
    convert: Callable[[Any], Any] | None = None
    metavar: str | None = None
    #: POSITIONAL_OR_KEYWORD for ``points``, KEYWORD_ONLY for every other parameter
    kind: Any = inspect.Parameter.KEYWORD_ONLY

    @property
    def option_type(self) -> Any:
        """The type of the command-line option (a runtime type Typer can read)."""
        if self.cli_type is not _SAME:
            return self.cli_type
        return _RUNTIME_TYPES[str(self.type)]

    @property
    def option_default(self) -> Any:
        """The default of the command-line option (REQUIRED: none)."""
        return self.default if self.cli_default is _SAME else self.cli_default

    def from_cli(self, value: Any) -> Any:
        """The Python value of this flag's (or --config setting's) value."""
        return value if self.convert is None or value is None else self.convert(value)


# ---------------------------------------------------------------------------------------
# conversions of flag text to Python values


def _numbers(text: str, flag: str) -> list[float]:
    out = []
    for part in str(text).split(","):
        try:
            out.append(float(part))
        except ValueError:
            raise SpecError(f"{flag} takes numbers separated by commas, got {text!r}") from None
    return out


def parse_levels(value: Any) -> Any:
    """--resolution: '7' -> 7, '5,6,7' -> [5, 6, 7]; other values are left to the spec."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            levels = [int(p) for p in parts]
        except ValueError:
            raise SpecError(
                f"--resolution takes whole numbers 0..9 (or several, comma-separated), got {value!r}"
            ) from None
        return levels[0] if len(levels) == 1 else levels
    return value


def _level_split(value: Any) -> Any:
    """--level-split: geometric, even, or weights '1,2,4' -> [1.0, 2.0, 4.0]."""
    if isinstance(value, str) and value not in ("geometric", "even"):
        return _numbers(value, "--level-split")
    return value


def _quantiles(value: Any) -> Any:
    """--quantiles: '0.25,0.5,0.75' -> [0.25, 0.5, 0.75]."""
    return _numbers(value, "--quantiles") if isinstance(value, str) else value


def _value_bands(value: Any) -> Any:
    """--value-bands: '0,1000,5000' -> [0.0, 1000.0, 5000.0]."""
    return _numbers(value, "--value-bands") if isinstance(value, str) else value


def _internal_share(value: Any) -> Any:
    """--internal-share: '0.2' -> 0.2, '0.1,0.1,0,0' -> [0.1, 0.1, 0.0, 0.0]."""
    if isinstance(value, str):
        parts = _numbers(value, "--internal-share")
        return parts[0] if len(parts) == 1 else parts
    return value


def _categories(value: Any) -> Any:
    """--categories a,b,c (a --config file may give a list): the spec reads 'a,b,c'."""
    return ",".join(str(c) for c in value) if isinstance(value, list) else value


def _pair(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _periods(value: Any) -> Any:
    """--periods: '2026-01..2026-12' -> a pandas PeriodIndex (frequency from the labels:
    2026 years, 2026Q1 quarters, 2026-01 months, 2026-01-05 days); 'a,b,c' -> edges."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if ".." in text:
        import pandas as pd

        first, _, last = text.partition("..")
        try:
            a, b = pd.Period(first.strip()), pd.Period(last.strip())
            return pd.period_range(a, b, freq=a.freq)
        except (ValueError, TypeError) as exc:
            raise SpecError(
                f"--periods {value!r}: cannot read the periods ({exc}); use FIRST..LAST such as "
                "2026-01..2026-12 (months), 2026Q1..2026Q4 or 2020..2026 (years)"
            ) from None
    return [part.strip() for part in text.split(",") if part.strip()]


def _time_levels(value: Any) -> Any:
    """--time-levels: 'Q=0.2,Y=0.2' -> {'Q': 0.2, 'Y': 0.2} (the spec checks the rest)."""
    if not isinstance(value, str):
        return value
    out: dict[str, float] = {}
    for part in (p.strip() for p in value.split(",")):
        freq, eq, share = part.partition("=")
        try:
            out[freq.strip()] = float(share)
        except ValueError:
            eq = ""
        if not eq or not freq.strip():
            raise SpecError(
                f"--time-levels takes FREQ=SHARE pairs separated by commas, got {value!r}; "
                "e.g. --time-levels Q=0.2,Y=0.2"
            )
    return out


def _path_text(value: Any) -> Any:
    return str(value)


# ---------------------------------------------------------------------------------------
# the table

#: the spec's own parameters, taken by every Python entry point (the audit too)
_SPEC = frozenset({"release", "explain", "audit", "cli release", "cli explain", "cli audit"})
_SPEC_NOT_CLI_AUDIT = _SPEC - {"cli audit"}
#: about the data and the region: the audit builds its own
_DATA = frozenset({"release", "explain", "cli release", "cli explain"})
#: a continual release
_CONTINUAL = frozenset({"release", "explain", "cli release", "cli explain"})
#: of the release run itself (explain accepts and ignores them)
_RUN = frozenset({"release", "explain", "cli release"})


def _p(
    name: str, type_: str, default: Any, help: str, takes: Iterable[str], **kw: Any
) -> Parameter:
    """A row whose flag (if any command takes it) is the name with dashes."""
    takes = frozenset(takes)
    on_cli = any(t.startswith("cli ") for t in takes)
    return Parameter(
        name,
        type_,
        default,
        help,
        takes,
        flag="--" + name.replace("_", "-") if on_cli else None,
        **kw,
    )


PARAMETERS: tuple[Parameter, ...] = (
    Parameter(
        "points",
        "Any",
        REQUIRED,
        "Points: .csv or .parquet file (or `points` in --config).",
        frozenset({"release", "cli release"}),
        cli_type=Path | None,
        cli_default=None,
        metavar="POINTS",
        kind=inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ),
    _p(
        "region",
        "Any",
        None,
        "Public area as GeoJSON (or GeoParquet/GeoPackage): every H3 cell overlapping it is "
        "published. Omit only with --delta > 0 (cells then chosen privately).",
        _DATA,
        cli_type=Path | None,
        convert=_path_text,
    ),
    _p(
        "zones",
        "Any",
        None,
        "Public, non-overlapping zones (GeoJSON/GeoPackage/GeoParquet of polygons, any CRS): "
        "one row per zone instead of H3 cells; with --by, instead of --region/--resolution.",
        _DATA,
        cli_type=Path | None,
        convert=_path_text,
    ),
    _p(
        "by",
        "str | None",
        None,
        "The zones' column that names each zone (with --zones).",
        _DATA,
    ),
    _p(
        "resolution",
        "int | None",
        None,
        "H3 resolution 0..9 (7 ≈ 5 km² cells); several, comma-separated (5,6,7), for a "
        "hierarchical release made consistent across levels. Not with --zones.",
        _SPEC,
        cli_type=str,
        convert=parse_levels,
    ),
    _p(
        "epsilon",
        "float",
        REQUIRED,
        "Privacy budget ε of this release (> 0).",
        _SPEC,
        cli_type=float,
    ),
    _p("delta", "float", 0.0, "δ (0 for pure ε-DP; > 0 for gaussian or without --region).", _SPEC),
    _p("lat", "str", "lat", "Latitude column (degrees).", _DATA),
    _p("lng", "str", "lng", "Longitude column (degrees).", _DATA),
    _p(
        "person",
        "str | None",
        None,
        "Column identifying a person (the privacy unit). Default: every row is a different person.",
        _DATA,
    ),
    _p("value", "str | None", None, "Value column to sum and average (needs --bounds).", _DATA),
    _p(
        "bounds",
        "tuple[float, float] | None",
        None,
        "Public clamping bounds LO HI of the value, in whole units.",
        _SPEC,
        cli_type=tuple[float, float] | None,
        convert=_pair,
        metavar="LO HI",
    ),
    _p("max_cells", "int", 1, "Cells one person may count in (L0).", _SPEC),
    _p("max_records_per_cell", "int", 1, "Records one person may contribute per cell (L∞).", _SPEC),
    _p("category", "str | None", None, "Breakdown column (needs --categories).", _DATA),
    _p(
        "categories",
        "Any",
        None,
        "Public category list, comma-separated: a,b,c (others are counted as 'other').",
        _DATA,
        cli_type=str | None,
        convert=_categories,
    ),
    _p("mechanism", "str", "laplace", "laplace (pure ε-DP) or gaussian (needs --delta).", _SPEC),
    _p(
        "suppress_below",
        "float | bool | None",
        None,
        "Hide cells whose noisy count is below this (default: the count's 95% margin of error).",
        _SPEC,
        cli_type=float | None,
    ),
    Parameter(
        "no_suppress",
        None,
        False,
        "Publish every noisy value (unbiased; may be negative).",
        frozenset({"cli release", "cli explain", "cli audit"}),
        flag="--no-suppress",
        cli_type=bool,
    ),
    _p(
        "count_share",
        "float",
        0.5,
        "Share of ε for counts when --value is used.",
        _SPEC_NOT_CLI_AUDIT,
    ),
    _p(
        "quantiles",
        "list[float] | None",
        None,
        "Public probabilities in (0, 1), comma-separated (0.25,0.5,0.75): private quantiles "
        "of the value per row, with intervals (needs --value, --bounds).",
        _SPEC_NOT_CLI_AUDIT,
        cli_type=str | None,
        convert=_quantiles,
    ),
    _p(
        "value_bands",
        "list[float] | None",
        None,
        "Public band edges of the value, comma-separated (0,1000,5000,20000,50000): noisy "
        "counts per band per row (needs --value, --bounds).",
        _SPEC_NOT_CLI_AUDIT,
        cli_type=str | None,
        convert=_value_bands,
    ),
    _p(
        "histogram_share",
        "float",
        0.5,
        "Share of ε for the value histogram behind --quantiles / --value-bands.",
        _SPEC_NOT_CLI_AUDIT,
    ),
    _p(
        "people",
        "bool",
        False,
        "Also publish people/people_moe: distinct persons per row beside the record count "
        "(needs --person and --max-records-per-cell > 1).",
        _SPEC_NOT_CLI_AUDIT,
    ),
    _p(
        "people_share",
        "float",
        0.5,
        "Share of ε for --people (of what --histogram-share leaves; count and sum share the rest).",
        _SPEC_NOT_CLI_AUDIT,
    ),
    _p(
        "time",
        "str | None",
        None,
        "Panel releases: the date column (datetime or ISO date text); one row per (cell, "
        "period) for the public --periods (needs --max-periods).",
        _DATA,
    ),
    _p(
        "periods",
        "Any",
        None,
        "Panel releases: the PUBLIC periods, FIRST..LAST of one frequency (2026-01..2026-12) or "
        "comma-separated edges (2026-01-01,2026-07-01,2027-01-01); never read from the data.",
        _DATA,
        cli_type=str | None,
        convert=_periods,
    ),
    _p(
        "max_periods",
        "int | None",
        None,
        "Panel releases: periods one person may count in (the bound across time).",
        _DATA,
    ),
    _p(
        "time_levels",
        "dict[str, float] | None",
        None,
        "Panel releases: budget at coarser time levels, FREQ=SHARE,... (Y=0.5: the yearly "
        "totals get half of each statistic's budget, the periods the rest; Q=0.2,Y=0.2 for "
        "quarters too); coarse rows are published too, every level consistent by least squares.",
        _DATA,
        cli_type=str | None,
        convert=_time_levels,
    ),
    _p(
        "running_totals",
        "bool",
        False,
        "Panel releases: running totals by the tree mechanism, published period by period "
        "(each person keeps their earliest max_periods periods).",
        _CONTINUAL,
    ),
    _p(
        "through",
        "Any",
        None,
        "Continual releases: the last period published (default: the last of the horizon).",
        _CONTINUAL,
        cli_type=str | None,
    ),
    _p(
        "previous",
        "Any",
        None,
        "Continual releases: the release (file) this one extends; its nodes are kept and "
        "nothing more is charged. Needs the ledger and dataset that charged the horizon, "
        "where the continuation is recorded: each release is extended once.",
        frozenset({"release", "cli release"}),
        cli_type=str | None,
        convert=_path_text,
    ),
    _p(
        "selection",
        "str",
        "random",
        "How kept records are chosen: random or hash.",
        _SPEC_NOT_CLI_AUDIT,
    ),
    _p(
        "seed",
        "int | None",
        None,
        "Key for --selection hash (reproducible bounding).",
        _SPEC_NOT_CLI_AUDIT,
    ),
    _p(
        "level_split",
        "str | list[float]",
        "geometric",
        "Hierarchical releases: geometric (default), even, or weights per level (1,2,4).",
        _SPEC_NOT_CLI_AUDIT,
        cli_type=str | None,
        cli_default=None,
        convert=_level_split,
    ),
    _p(
        "integers",
        "bool",
        False,
        "Hierarchical releases: publish non-negative integers that still add up.",
        _SPEC_NOT_CLI_AUDIT,
    ),
    _p(
        "adaptive",
        "bool | str",
        False,
        "Adaptive release: refine dense areas down to --resolution, keep sparse areas coarse.",
        _SPEC,
        cli_type=bool,
    ),
    Parameter(
        "adaptive_method",
        None,
        "privtree",
        "Adaptive releases: privtree (default; best for small areas) or grid (a two-level "
        "adaptive grid; best for district and regional totals).",
        frozenset({"cli release", "cli explain", "cli audit"}),
        flag="--adaptive-method",
        cli_type=str,
    ),
    _p(
        "adaptive_from",
        "int | None",
        None,
        "Adaptive releases: the coarsest resolution.",
        _SPEC_NOT_CLI_AUDIT,
    ),
    _p(
        "tree_share",
        "float",
        DEFAULT_TREE_SHARE,
        "Adaptive releases: share of ε for the split, or for a grid's first level "
        f"(default {DEFAULT_TREE_SHARE}).",
        _SPEC_NOT_CLI_AUDIT,
    ),
    _p(
        "internal_share",
        "float | list[float]",
        DEFAULT_INTERNAL_SHARE,
        "Adaptive releases: share of the rest for noisy internal nodes, in total or one per "
        "internal resolution (0.2 or 0.1,0.1,0,0); default 0: leaves only.",
        _SPEC_NOT_CLI_AUDIT,
        cli_type=str | None,
        cli_default=None,
        convert=_internal_share,
    ),
    _p(
        "config",
        "dict[str, Any] | None",
        None,
        "TOML file with these settings (keys as the long flags, with _ or -); flags given on "
        "the command line win. Recorded in the manifest.",
        {"release", "cli release", "cli explain"},
        cli_type=Path | None,
    ),
    _p(
        "progress",
        "Callable[[str], None] | None",
        None,
        "Called with the name of each stage as it starts.",
        {"release"},
    ),
    _p(
        "diagnostics",
        "Diagnostics | None",
        None,
        "Print PRIVATE diagnostics about the input to stderr (for the data owner; never "
        "written to the release).",
        _RUN,
        cli_type=bool,
        cli_default=False,
    ),
    _p(
        "ledger",
        "Any",
        None,
        "Privacy-budget ledger to charge: a file (SQLite) or a postgresql:// URL; needs --dataset.",
        _RUN,
        cli_type=str | None,
    ),
    _p("dataset", "str | None", None, "Dataset name in the ledger.", _RUN),
    _p(
        "period",
        "str | None",
        None,
        "The period this release covers, e.g. 2026-01 (a pd.Period works too): stored in the "
        "manifest, so that series and trends line monthly releases up.",
        _RUN,
    ),
    _p(
        "title",
        "str | None",
        None,
        "Title of the release: stored in the manifest, drawn on the map and recorded as the "
        "ledger entry's label, e.g. 'Debtors, January 2026'.",
        _RUN,
        aliases=("--label",),
    ),
    _p(
        "engine",
        "str | None",
        None,
        "Where the points are read, bounded and aggregated: local (in memory; files over "
        "1 GB are streamed), streaming (bounded memory, for files larger than memory) or "
        "spark (needs pip install 'dpmap\\[spark]'). Default: local.",
        _RUN,
    ),
)

_BY_NAME = {p.name: p for p in PARAMETERS}


def for_entry_point(entry_point: str) -> list[Parameter]:
    """The parameters ``entry_point`` takes, in the table's order."""
    if entry_point not in ENTRY_POINTS:
        raise ValueError(f"unknown entry point {entry_point!r}; one of {ENTRY_POINTS}")
    return [p for p in PARAMETERS if entry_point in p.takes]


def names(entry_point: str) -> frozenset[str]:
    """The keyword names ``entry_point`` takes."""
    return frozenset(p.name for p in for_entry_point(entry_point))


def parameter(name: str) -> Parameter:
    """The row of ``name``."""
    return _BY_NAME[name]


#: release parameters an audit accepts (the data columns, region and ledger are its own)
AUDIT_PARAMETERS = names("audit")


def check_keywords(entry_point: str, keywords: Collection[str]) -> None:
    """Raise SpecError for the first keyword ``entry_point`` does not take, with the
    closest name it does take ("did you mean")."""
    allowed = names(entry_point)
    for key in keywords:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
        fix = (
            f"did you mean {close[0]!r}?"
            if close
            else f"{entry_point} takes {', '.join(sorted(allowed))}"
        )
        raise SpecError(f"unknown parameter {key!r} of {entry_point}; {fix}")


def checked(entry_point: str) -> Callable[[_F], _F]:
    """Decorator: :func:`check_keywords` on every call's keywords before the function runs
    (its signature, docstring and name are kept: ``inspect.signature`` sees the original)."""

    def decorate(func: _F) -> _F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            check_keywords(entry_point, kwargs)
            return func(*args, **kwargs)

        return cast(_F, wrapper)

    return decorate
