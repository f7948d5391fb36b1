"""The ``dpmap`` command line: a thin layer over the Python API.

A user mistake (any :class:`~dpmap.errors.DpmapError`, or a bad flag) prints one line
on stderr and exits with status 2, with no traceback and no output file left behind
(files are written to temporary names and renamed when complete).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from dpmap._version import __version__
from dpmap.cli.budget import budget_app
from dpmap.designs.privtree import DEFAULT_INTERNAL_SHARE, DEFAULT_TREE_SHARE
from dpmap.errors import DataFileError, DpmapError, DpmapWarning, SpecError
from dpmap.io import manifest_path, temp_beside

__all__ = ["app", "main"]

app = typer.Typer(
    name="dpmap",
    help=(
        "Publish differentially private H3 maps of sensitive point data.\n\n"
        "Example:\n\n"
        "  dpmap release debts.csv --region province.geojson --resolution 7 --epsilon 1 "
        "--person debtor_id --value amount --bounds 0 50000 --out map.geojson"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(budget_app, name="budget")

_err = Console(stderr=True, highlight=False)
#: --category value of dpmap plot that maps the total of every category
ALL_CATEGORIES = "all"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dpmap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
) -> None:
    """Publish differentially private H3 maps of sensitive point data."""


# ---------------------------------------------------------------------------------------
# the release flags, shared by `release` and `explain`


def _opt(default: Any, annotation: Any, *names: str, help: str, **kw: Any) -> inspect.Parameter:
    name = names[0].lstrip("-").replace("-", "_")
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, typer.Option(*names, help=help, **kw)],
    )


_REQUIRED = ...
_SPEC_OPTIONS = [
    _opt(
        None,
        Path | None,
        "--region",
        help="Public area as GeoJSON (or GeoParquet/GeoPackage): every H3 "
        "cell overlapping it is published. Omit only with --delta > 0 (cells then chosen privately).",
    ),
    _opt(
        None,
        str | None,
        "--resolution",
        help="H3 resolution 0..9 (7 ≈ 5 km² cells); several, comma-separated (5,6,7), for a "
        "hierarchical release made consistent across levels. Required (here or in --config).",
    ),
    _opt(
        None,
        float | None,
        "--epsilon",
        help="Privacy budget ε of this release (> 0). Required (here or in --config).",
    ),
    _opt(0.0, float, "--delta", help="δ (0 for pure ε-DP; > 0 for gaussian or without --region)."),
    _opt("lat", str, "--lat", help="Latitude column (degrees)."),
    _opt("lng", str, "--lng", help="Longitude column (degrees)."),
    _opt(
        None,
        str | None,
        "--person",
        help="Column identifying a person (the privacy unit). "
        "Default: every row is a different person.",
    ),
    _opt(None, str | None, "--value", help="Value column to sum and average (needs --bounds)."),
    _opt(
        None,
        tuple[float, float] | None,
        "--bounds",
        help="Public clamping bounds LO HI of the value, in whole units.",
        metavar="LO HI",
    ),
    _opt(1, int, "--max-cells", help="Cells one person may count in (L0)."),
    _opt(1, int, "--max-records-per-cell", help="Records one person may contribute per cell (L∞)."),
    _opt(None, str | None, "--category", help="Breakdown column (needs --categories)."),
    _opt(
        None,
        str | None,
        "--categories",
        help="Public category list, comma-separated: a,b,c (others are counted as 'other').",
    ),
    _opt("laplace", str, "--mechanism", help="laplace (pure ε-DP) or gaussian (needs --delta)."),
    _opt(
        None,
        float | None,
        "--suppress-below",
        help="Hide cells whose noisy count is below this "
        "(default: the count's 95% margin of error).",
    ),
    _opt(
        False, bool, "--no-suppress", help="Publish every noisy value (unbiased; may be negative)."
    ),
    _opt(0.5, float, "--count-share", help="Share of ε for counts when --value is used."),
    _opt("random", str, "--selection", help="How kept records are chosen: random or hash."),
    _opt(None, int | None, "--seed", help="Key for --selection hash (reproducible bounding)."),
    _opt(
        None,
        str | None,
        "--level-split",
        help="Hierarchical releases: geometric (default), even, or weights per level (1,2,4).",
    ),
    _opt(
        False,
        bool,
        "--integers",
        help="Hierarchical releases: publish non-negative integers that still add up.",
    ),
    _opt(
        False,
        bool,
        "--adaptive",
        help="Adaptive release: refine dense areas down to --resolution, keep sparse areas coarse.",
    ),
    _opt(
        "privtree",
        str,
        "--adaptive-method",
        help="Adaptive releases: privtree (default; best for small areas) or grid (a two-level "
        "adaptive grid; best for district and regional totals).",
    ),
    _opt(None, int | None, "--adaptive-from", help="Adaptive releases: the coarsest resolution."),
    _opt(
        DEFAULT_TREE_SHARE,
        float,
        "--tree-share",
        help="Adaptive releases: share of ε for the split, or for a grid's first level "
        "(default 0.3).",
    ),
    _opt(
        None,
        str | None,
        "--internal-share",
        help="Adaptive releases: share of the rest for noisy internal nodes, in total or one per "
        "internal resolution (0.2 or 0.1,0.1,0,0); default 0: leaves only.",
    ),
    _opt(
        None,
        Path | None,
        "--config",
        help="TOML file with these settings (keys as the long flags, with _ or -); flags given "
        "on the command line win. Recorded in the manifest.",
    ),
]
_LEDGER_OPTIONS = [
    _opt(
        None,
        Path | None,
        "--ledger",
        help="Privacy-budget ledger (SQLite) to charge; needs --dataset.",
    ),
    _opt(None, str | None, "--dataset", help="Dataset name in the ledger."),
]


def _spec_kwargs(kw: dict[str, Any], ctx: Any = None) -> dict[str, Any]:
    config = kw.pop("config", None)
    if config is not None:
        kw = _merge_config(kw, Path(config), ctx)
    for flag in ("resolution", "epsilon"):
        if kw.get(flag) is None:
            raise SpecError(f"--{flag} is required; pass it on the command line or in --config")
    kw["resolution"] = _parse_levels(kw["resolution"])
    if isinstance(kw.get("level_split"), str) and kw["level_split"] not in ("geometric", "even"):
        kw["level_split"] = [_number(w, "--level-split") for w in kw["level_split"].split(",")]
    if kw.get("level_split") is None:
        kw["level_split"] = "geometric"
    share = kw.get("internal_share")
    if share is None:
        kw["internal_share"] = DEFAULT_INTERNAL_SHARE
    elif isinstance(share, str):
        parts = [_number(w, "--internal-share") for w in share.split(",")]
        kw["internal_share"] = parts[0] if len(parts) == 1 else parts
    kw["adaptive"] = _adaptive_arg(bool(kw.get("adaptive")), kw.pop("adaptive_method", None))
    if isinstance(kw.get("categories"), list):
        kw["categories"] = ",".join(str(c) for c in kw["categories"])
    if kw.pop("no_suppress"):
        if kw["suppress_below"] is not None:
            raise SpecError(
                "--suppress-below and --no-suppress contradict each other; pass one of them"
            )
        kw["suppress_below"] = False
    if kw.get("region") is not None:
        kw["region"] = str(kw["region"])
    return kw


def _adaptive_arg(adaptive: bool, method: str | None) -> bool | str:
    """--adaptive and --adaptive-method as the ``adaptive=`` argument of a release."""
    method = method or "privtree"
    if method not in ("privtree", "grid"):
        raise SpecError(f"--adaptive-method must be privtree or grid, got {method!r}")
    if method == "grid" and not adaptive:
        raise SpecError("--adaptive-method applies to adaptive releases; add --adaptive")
    return "grid" if method == "grid" else adaptive


def _number(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SpecError(f"{flag} takes numbers separated by commas, got {text!r}") from None


def _parse_levels(value: Any) -> Any:
    """'7' -> 7, '5,6,7' -> [5, 6, 7]; other values are left to the spec to judge."""
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


#: settings a --config file may hold (the long flags, as Python names)
#: settings of `dpmap release` only (not of the release's spec): `explain` ignores them
_RELEASE_ONLY_KEYS = (
    "points",
    "out",
    "png",
    "title",
    "quiet",
    "diagnostics",
    "engine",
    "overwrite",
    "include_unbiased",
)
_CONFIG_KEYS = {p.name for p in _SPEC_OPTIONS + _LEDGER_OPTIONS} - {"config"} | set(
    _RELEASE_ONLY_KEYS
)


_BOOLEAN_SETTINGS = (
    "no_suppress",
    "integers",
    "adaptive",
    "quiet",
    "diagnostics",
    "overwrite",
    "include_unbiased",
)


def _merge_config(kw: dict[str, Any], path: Path, ctx: Any) -> dict[str, Any]:
    """Settings from a TOML file, overridden by flags given on the command line."""
    import hashlib
    import tomllib

    if not path.is_file():
        raise DataFileError(f"config file {str(path)!r} does not exist; check the path")
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(
            f"config file {str(path)!r} is not valid TOML ({exc}); fix the file"
        ) from exc
    data = data.get("release", data)  # allow a [release] table
    if not isinstance(data, dict):
        raise SpecError(f"config file {str(path)!r}: [release] must be a table of settings")
    settings = {str(k).replace("-", "_"): v for k, v in data.items()}
    if "label" in settings:  # --label is another name of --title
        if "title" in settings:
            raise SpecError(
                f"config file {str(path)!r} sets both title and label (the same setting); keep one"
            )
        settings["title"] = settings.pop("label")
    for key, value in settings.items():
        if key in ("region", "ledger", "out", "png", "points") and not isinstance(value, str):
            raise SpecError(f"config setting {key!r} must be a path (a string), got {value!r}")
        if key in _BOOLEAN_SETTINGS and not isinstance(value, bool):
            raise SpecError(f"config setting {key!r} must be true or false, got {value!r}")
    unknown = sorted(set(settings) - _CONFIG_KEYS)
    if unknown:
        raise SpecError(
            f"config file {str(path)!r} has unknown settings {unknown}; valid ones are "
            f"{sorted(_CONFIG_KEYS)}"
        )
    merged = dict(kw)
    for key, value in settings.items():
        if ctx is not None and key in merged:
            source = ctx.get_parameter_source(key)
            if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
                continue
        if key == "bounds" and isinstance(value, list):
            value = tuple(value)
        if key in ("region", "ledger", "out", "png", "points") and value is not None:
            value = (
                Path(value) if Path(value).is_absolute() else path.parent / value
            )  # beside the file
        merged[key] = value
    merged["_config"] = {
        "file": path.name,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "settings": settings,
    }
    return merged


def _with_signature(params: list[inspect.Parameter]) -> Any:
    def decorate(func: Any) -> Any:
        func.__signature__ = inspect.Signature(params)
        return func

    return decorate


_STAGE_TEXT = {
    "plan": "planning the noise (OpenDP)",
    "read and bound": "reading, checking, binning to H3 and bounding each person",
    "noise": "adding OpenDP noise",
    "table": "building the cell table",
    "write": "writing the release and its manifest",
    "map": "drawing the map",
}


class _Stages:
    """Rich progress on stderr: one line per pipeline stage, with its elapsed time."""

    def __init__(self, quiet: bool) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        console = Console(stderr=True, highlight=False)
        # only for a person at a terminal; it clears itself, so an error stays one line
        console.quiet = quiet or not console.is_terminal
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )

        self._task: Any = None

    def __enter__(self) -> _Stages:
        self._progress.__enter__()
        return self

    def __call__(self, name: str) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=1)
        self._task = self._progress.add_task(_STAGE_TEXT.get(name, name), total=1)

    def __exit__(self, *exc: object) -> None:
        if self._task is not None and exc[0] is None:
            self._progress.update(self._task, completed=1)
        self._progress.__exit__(*exc)  # type: ignore[arg-type]


_CTX = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)


@app.command("release")
@_with_signature(
    [
        _CTX,
        inspect.Parameter(
            "points",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=None,
            annotation=Annotated[
                Path | None,
                typer.Argument(
                    metavar="POINTS",
                    help="Points: .csv or .parquet file (or `points` in --config).",
                ),
            ],
        ),
    ]
    + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in _SPEC_OPTIONS + _LEDGER_OPTIONS]
    + [
        _opt(
            None,
            Path | None,
            "--out",
            help="Output release: .geojson, .parquet or .csv "
            "(a .manifest.json is written beside it). Required (here or in --config).",
        ),
        _opt(
            None,
            Path | None,
            "--png",
            help="Also draw a static map to this PNG (one map: not with --category; draw each "
            "category afterwards with dpmap plot, which spends no budget).",
        ),
        _opt(
            None,
            str | None,
            "--title",
            "--label",
            help="Title of the release: stored in the manifest, drawn on the map and recorded "
            "as the ledger entry's label, e.g. 'Debtors, January 2026'.",
        ),
        _opt(
            False,
            bool,
            "--overwrite",
            help="Replace existing output files (the release, its manifest, the PNG). Without "
            "it, an existing output stops the release before anything is spent.",
        ),
        _opt(
            None,
            str | None,
            "--engine",
            help="Where the points are read, bounded and aggregated: local (in memory; files "
            "over 1 GB are streamed), streaming (bounded memory, for files larger than memory) "
            "or spark (needs pip install 'dpmap\\[spark]'). Default: local.",
        ),
        _opt(
            False,
            bool,
            "--include-unbiased",
            help="Also write the unbiased noisy estimates of every row, suppressed ones "
            "included (count_unbiased, count_var, ...), so that readers can add up areas "
            "without the bias of suppression. No extra privacy cost.",
        ),
        _opt(
            False,
            bool,
            "--diagnostics",
            help="Print PRIVATE diagnostics about the input to stderr "
            "(for the data owner; never written to the release).",
        ),
        _opt(False, bool, "--quiet", help="Print nothing but errors."),
    ]
)
def release_cmd(ctx: typer.Context, **kw: Any) -> None:
    """Release a differentially private map of POINTS.

    Examples:

        dpmap release debts.csv --region hebei.geojson --resolution 7 --epsilon 1 --person debtor_id --value amount --bounds 0 50000 --out map.geojson --png map.png

        dpmap release --config release.toml     (settings kept under version control)
    """
    from dpmap.diagnostics import Diagnostics
    from dpmap.release import release

    kw = _spec_kwargs(kw, ctx)
    points, out, png, quiet = kw.pop("points"), kw.pop("out"), kw.pop("png"), kw.pop("quiet")
    show_diag, overwrite = kw.pop("diagnostics"), bool(kw.pop("overwrite", False))
    include_unbiased = bool(kw.pop("include_unbiased", False))
    if points is None or out is None:
        missing = "POINTS" if points is None else "--out"
        raise SpecError(f"{missing} is required; pass it on the command line or in --config")
    out, png = Path(out), Path(png) if png is not None else None
    # Everything that can fail after the release is checked before it: once the release
    # is computed, its privacy budget is spent (and charged to the ledger).
    _check_outputs(out, png, overwrite=overwrite, inputs=(points, kw.get("ledger")))
    if png is not None:
        _check_png_options(kw)
    diag = Diagnostics()
    last_entry = _last_entry(kw.get("ledger"))
    with _Stages(quiet) as stages:
        try:
            rel = release(
                str(points), diagnostics=diag, config=kw.pop("_config", None), progress=stages, **kw
            )
        except DpmapError as exc:  # say so when it failed after the budget was spent
            _note_spent(exc, kw.get("ledger"), kw.get("dataset"), last_entry)
            raise
        stages("write")
        written = _write_paid_release(rel, out, include_unbiased=include_unbiased)
        map_error: BaseException | None = None
        if png is not None and written == out:
            stages("map")
            try:
                rel.plot(png)
            except Exception as exc:  # the release stands; report the map's failure below
                map_error = exc
    if show_diag:
        _err.print(str(diag), markup=False)
    if written != out:
        raise typer.Exit(code=2)
    if map_error is not None:
        reason = " ".join(str(map_error).split()) or type(map_error).__name__
        print(
            f"dpmap: error: drawing the map {str(png)!r} failed ({reason}); {_paid(rel)} and "
            f"written to {out} and {manifest_path(out)}. Draw the map again, without spending "
            f"budget, with: dpmap plot {out} --png PNG",
            file=sys.stderr,
        )
        raise typer.Exit(code=2 if isinstance(map_error, DpmapError) else 1)
    if not quiet:
        typer.echo(f"wrote {out} and {manifest_path(out)}" + (f" and {png}" if png else ""))
        typer.echo(rel.privacy_statement)


def _check_outputs(
    out: Path, png: Path | None, *, overwrite: bool, inputs: tuple[Any, ...]
) -> None:
    """Refuse, before anything is spent, every output that could not be written."""
    from dpmap.release.result import release_kind

    if png is not None and png.suffix.lower() != ".png":
        raise SpecError(f"--png {str(png)!r} must end in .png")
    release_kind(out)  # refuse an unsupported output type before reading any data
    targets = [("--out", out), ("--out (its manifest)", manifest_path(out))]
    if png is not None:
        targets.append(("--png", png))
    used = {_same_file_key(Path(p)) for p in inputs if p is not None}
    for flag, target in targets:
        try:
            _check_target(flag, target, overwrite=overwrite, used=used)
        except DpmapError:  # DataFileError is an OSError too: already one clear line
            raise
        except OSError as exc:  # e.g. ENAMETOOLONG from the file system
            raise DataFileError(
                f"cannot write {flag} {str(target)!r} ({exc.strerror or exc}); choose another path"
            ) from None


def _check_target(flag: str, target: Path, *, overwrite: bool, used: set[Path]) -> None:
    if not target.parent.is_dir():
        raise DataFileError(
            f"folder {str(target.parent)!r} does not exist; create it or choose another path"
        )
    if _same_file_key(target) in used:
        raise SpecError(
            f"{flag} {str(target)!r} is an input of this release (the points or the "
            "ledger); choose another output path"
        )
    if target.is_dir():
        raise DataFileError(f"{flag} {str(target)!r} is a folder; choose a file path")
    if target.exists() and not overwrite:
        raise DataFileError(
            f"{flag} {str(target)!r} already exists; nothing was spent. Choose another "
            "path, or pass --overwrite to replace it"
        )
    # the very temporary file the writer will make (io.atomic_write): the folder must be
    # writable and the temporary name (longer than the target's) must be allowed
    temp_beside(target, f"{flag} {str(target)!r}").unlink()


def _same_file_key(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def _check_png_options(kw: dict[str, Any]) -> None:
    """The map drawn by --png must be drawable before the release is paid for."""
    if kw.get("category") is not None:
        raise SpecError(
            "--png draws one map, but --category makes one row per category; drop --png, then "
            "draw each category from the written release (no budget spent) with: dpmap plot "
            "OUT --png MAP.png --category NAME"
        )
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        from dpmap.errors import missing_extra

        raise missing_extra("matplotlib", "plot") from None


def _last_entry(ledger: Any) -> int | None:
    """The newest entry id of the ledger before a release (None: no ledger, or unusable —
    the release then reports that itself)."""
    if ledger is None:
        return None
    from dpmap.ledger import Ledger

    try:
        book = Ledger(ledger)
        return max((e.id for d in book.datasets() for e in book.history(d)), default=0)
    except Exception:
        return None


def _note_spent(exc: BaseException, ledger: Any, dataset: Any, last_entry: int | None) -> None:
    """Add to a release's error that its budget was spent, if the ledger says so (a
    failure after noise was drawn: the spend stands, and nothing was written)."""
    if last_entry is None or not isinstance(dataset, str):
        return
    from dpmap.ledger import Ledger

    try:
        entries = [e for e in Ledger(ledger).history(dataset) if e.id > last_entry and e.counts]
    except Exception:
        return
    if entries:
        e = entries[-1]
        exc.args = (
            f"{' '.join(str(exc).split())}. This failure came after noise was drawn: the "
            f"release's budget (ε = {float(e.epsilon):g}) was spent, ledger entry #{e.id} of "
            f"dataset {dataset!r}, and nothing was written",
            *exc.args[1:],
        )


def _paid(rel: Any) -> str:
    """How the release was paid for, for the messages printed after it was computed."""
    eps = rel.manifest.get("privacy", {}).get("epsilon")
    ledger = rel.manifest.get("ledger")
    if ledger:
        return (
            f"the release was paid for (ε = {eps} charged to dataset {ledger['dataset']!r}, "
            f"ledger entry #{ledger['entry_id']})"
        )
    return f"the release was computed (its ε = {eps} is spent on this data)"


def _write_paid_release(rel: Any, out: Path, *, include_unbiased: bool = False) -> Path:
    """Write a release that was paid for; if ``out`` fails, save it elsewhere and say where.

    Returns the path written (``out`` unless it failed). Never raises: the budget is spent,
    so losing the release would make the user pay again for the same map.
    """
    import tempfile
    import time

    try:
        rel.to_file(out, include_unbiased=include_unbiased)
        return out
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for folder in (Path.cwd(), Path(tempfile.gettempdir())):
        rescue = folder / f"dpmap-release-{stamp}-{os.getpid()}{out.suffix.lower()}"
        try:
            rel.to_file(rescue, include_unbiased=include_unbiased)
        except Exception:
            continue
        print(
            f"dpmap: error: writing {out} failed ({reason}); {_paid(rel)}, so it was saved to "
            f"{rescue} and {manifest_path(rescue)} instead: move them where they belong",
            file=sys.stderr,
        )
        return rescue
    print(
        f"dpmap: error: writing {out} failed ({reason}); {_paid(rel)}, and it could not be "
        "saved anywhere else (current folder, temporary folder)",
        file=sys.stderr,
    )
    return Path()


@app.command("explain")
@_with_signature(
    [_CTX]
    + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in _SPEC_OPTIONS]
    + [_opt(False, bool, "--json", help="Print the plan as JSON.")]
)
def explain_cmd(ctx: typer.Context, **kw: Any) -> None:
    """Explain a release without data: noise scale, ε per statistic, expected 95% error per cell.

    Example:

        dpmap explain --region hebei.geojson --resolution 7 --epsilon 1 --value amount --bounds 0 50000
    """
    import json

    from dpmap.release import explain

    as_json = kw.pop("json")
    kw = _spec_kwargs(kw, ctx)
    for key in (*_RELEASE_ONLY_KEYS, "_config", "ledger", "dataset"):
        kw.pop(key, None)
    ex = explain(**kw)
    typer.echo(json.dumps(ex.as_dict(), indent=2, ensure_ascii=False) if as_json else str(ex))


@app.command("plot")
def plot_cmd(
    release_file: Annotated[
        Path, typer.Argument(metavar="RELEASE", help="A release written by dpmap.")
    ],
    png: Annotated[Path | None, typer.Option("--png", help="Output PNG file.")] = None,
    column: Annotated[
        str, typer.Option("--column", help="Statistic to map: count, sum or mean.")
    ] = "count",
    category: Annotated[
        str | None,
        typer.Option(
            "--category",
            help="Category to map (with a breakdown), or 'all' for the total of every category "
            "(the default for a release with categories).",
        ),
    ] = None,
    # -- interactive map (dpmap.maps.interactive) --
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Output interactive map: one self-contained HTML file that works offline.",
        ),
    ] = None,
) -> None:
    """Draw a static map (PNG) and/or an interactive map (HTML) of a published release.

    Example: dpmap plot map.geojson --png map.png --html map.html
    """
    from dpmap.release import read_release

    if png is None and html is None:
        raise SpecError("dpmap plot needs an output: --png PATH, --html PATH, or both")
    if png is not None and png.suffix.lower() != ".png":
        raise SpecError(f"--png {str(png)!r} must end in .png")
    document = None
    if html is not None:
        from dpmap.maps.interactive import check_html_path

        check_html_path(html)
    rel = read_release(release_file)
    cells, manifest, title = rel.cells, rel.manifest, None
    has_cat = "category" in cells.columns
    named = set(cells["category"].astype(str)) if has_cat else set()
    if has_cat and category is None:  # the total, as a map of the whole release should be
        names = ", ".join(str(c) for c in manifest.get("categories") or sorted(named))
        print(
            f"dpmap: note: the release has one row per category ({names}); mapping their "
            "total. Map one category with --category NAME.",
            file=sys.stderr,
        )
    if category is None or (category == ALL_CATEGORIES and ALL_CATEGORIES not in named):
        if has_cat:
            from dpmap.analysis.tables import category_total_cells

            cells = category_total_cells(rel)
            title = f"{manifest.get('title') or 'dpmap release'} — total of all categories"
        category = None  # a release without a breakdown is its own total
    if html is not None:  # built before any file is written, so a mistake writes nothing
        from dpmap.maps.interactive import html_document

        document = html_document(cells, manifest, column=column, category=category, title=title)
    if png is not None:
        from dpmap.maps.static import plot_release

        plot_release(cells, manifest, png, column=column, category=category, title=title)
    if html is not None and document is not None:
        from dpmap.maps.interactive import save_html

        save_html(document, html)
    typer.echo("wrote " + " and ".join(str(p) for p in (png, html) if p is not None))


# -- press tables, roll-ups and comparisons of published releases (post-processing) --


def _read_zones(path: Path) -> Any:
    """Zone polygons (GeoJSON, GeoPackage, shapefile, GeoParquet) as a GeoDataFrame."""
    from dpmap.grid import read_polygon_file

    if not path.is_file():
        raise DataFileError(f"--zones file {str(path)!r} does not exist; check the path")
    return read_polygon_file(
        path,
        f"--zones file {str(path)!r}",
        "pass a GeoJSON, GeoPackage, shapefile or GeoParquet file of polygons",
    )


def _check_new_files(
    targets: list[tuple[str, Path]], *, overwrite: bool, inputs: tuple[Any, ...]
) -> None:
    """Refuse, before any work, outputs that exist (without --overwrite) or cannot be written."""
    used = {_same_file_key(Path(p)) for p in inputs if p is not None}
    for flag, target in targets:
        try:
            _check_target(flag, target, overwrite=overwrite, used=used)
        except DpmapError:
            raise
        except OSError as exc:
            raise DataFileError(
                f"cannot write {flag} {str(target)!r} ({exc.strerror or exc}); choose another path"
            ) from None


_TABLE_KINDS = {".csv": "csv", ".geojson": "geojson", ".json": "geojson", ".parquet": "parquet"}


def _table_kind(out: Path) -> str:
    kind = _TABLE_KINDS.get(out.suffix.lower())
    if kind is None:
        raise DataFileError(
            f"cannot write {str(out)!r} as {out.suffix or '(no suffix)'!r}; use .csv, .geojson "
            "or .parquet"
        )
    return kind


def _write_table(gdf: Any, out: Path, manifest: dict[str, Any]) -> None:
    """A roll-up or comparison (GeoDataFrame) and its manifest, both or neither."""
    import json

    import pandas as pd

    from dpmap.io import atomic_write

    kind = _table_kind(out)
    text = json.dumps(manifest, indent=2, ensure_ascii=False)
    with atomic_write([out, manifest_path(out)]) as (tmp, tmp_manifest):
        if kind == "geojson":
            tmp.write_text(gdf.to_json(drop_id=True, na="null"), encoding="utf-8")
        elif kind == "parquet":
            gdf.to_parquet(tmp, index=False)
        else:
            df = pd.DataFrame(gdf.drop(columns=gdf.geometry.name))
            df["geometry"] = gdf.geometry.to_wkt(rounding_precision=-1)
            df.to_csv(tmp, index=False)
        tmp_manifest.write_text(text + "\n", encoding="utf-8")


def _read_rollup(path: Path) -> Any:
    """A roll-up written by ``dpmap aggregate`` (its manifest says so), else None."""
    import json

    import geopandas as gpd
    import pandas as pd
    import shapely

    mpath = manifest_path(path)
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8")) if mpath.is_file() else {}
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or "dpmap_rollup" not in meta:
        return None
    kind = _table_kind(path)
    try:
        if kind == "geojson":
            gdf = gpd.read_file(path)
        elif kind == "parquet":
            gdf = gpd.read_parquet(path)
        else:
            by = str(meta.get("by"))
            df = pd.read_csv(path, dtype={by: str, "category": str})
            gdf = gpd.GeoDataFrame(
                df.drop(columns="geometry"),
                geometry=shapely.from_wkt(df["geometry"].to_numpy()),
                crs="EPSG:4326",
            )
    except Exception as exc:
        raise DataFileError(f"cannot read the roll-up {str(path)!r} ({exc})") from None
    gdf.attrs["dpmap_by"] = meta.get("by")
    return gdf


def _release_summary(rel: Any, path: Path) -> dict[str, Any]:
    return {
        "file": path.name,
        "fingerprint": rel.fingerprint,
        "title": rel.manifest.get("title"),
        "privacy_statement": rel.privacy_statement,
    }


@app.command("table")
def table_cmd(
    release_file: Annotated[
        Path, typer.Argument(metavar="RELEASE", help="A release written by dpmap.")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Output table (.csv); a .manifest.json and a .notes.txt go beside it."
        ),
    ],
    zones: Annotated[
        Path | None,
        typer.Option("--zones", help="Polygons to add the cells up in (e.g. counties)."),
    ] = None,
    by: Annotated[str, typer.Option("--by", help="Column naming each zone.")] = "name",
    sum_unit: Annotated[
        float | None,
        typer.Option(
            "--sum-unit", help="Round sums to this unit (default: 3 significant figures)."
        ),
    ] = None,
    mean_unit: Annotated[
        float | None,
        typer.Option(
            "--mean-unit", help="Round means to this unit (default: 3 significant figures)."
        ),
    ] = None,
    no_unbiased: Annotated[
        bool,
        typer.Option(
            "--no-unbiased", help="Leave out the unrounded unbiased columns (display values only)."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing output files.")
    ] = False,
) -> None:
    """A press-ready table: rounded, non-negative, reliability-flagged, with totals.

    Counts are rounded to whole records, sums and means to 3 significant figures; suppressed
    rows read 'hidden' (never 0); each row gets a reliability flag from its coefficient of
    variation; a 'total' row per cell or zone adds up the categories. The privacy statement
    and the manifest are written beside the table. No budget is spent.

    Example: dpmap table map.geojson --zones counties.gpkg --by name --out counties.csv
    """
    from dpmap.analysis.tables import notes_path
    from dpmap.release import read_release

    if out.suffix.lower() != ".csv":
        raise SpecError(f"--out {str(out)!r} must end in .csv (a press table is a CSV file)")
    _check_new_files(
        [
            ("--out", out),
            ("--out (its manifest)", manifest_path(out)),
            ("--out (its notes)", notes_path(out)),
        ],
        overwrite=overwrite,
        inputs=(release_file, zones),
    )
    rel = read_release(release_file)
    polygons = _read_zones(zones) if zones is not None else None
    table = rel.table(
        polygons, by, sum_unit=sum_unit, mean_unit=mean_unit, unbiased=not no_unbiased
    )
    written = table.to_file(out)
    typer.echo("wrote " + ", ".join(str(p) for p in written))
    typer.echo(rel.privacy_statement)


@app.command("aggregate")
def aggregate_cmd(
    release_file: Annotated[
        Path, typer.Argument(metavar="RELEASE", help="A release written by dpmap.")
    ],
    zones: Annotated[
        Path, typer.Option("--zones", help="Polygons to add the cells up in (e.g. counties).")
    ],
    out: Annotated[
        Path,
        typer.Option("--out", help="Output (.csv, .geojson or .parquet) + .manifest.json."),
    ],
    by: Annotated[str, typer.Option("--by", help="Column naming each zone.")] = "name",
    resolution: Annotated[
        int | None,
        typer.Option("--resolution", help="Level of a hierarchical release (default: the finest)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing output files.")
    ] = False,
) -> None:
    """Totals with 95% margins over your polygons (districts, postcodes, ...).

    Adds up the unbiased estimates of the cells overlapping each zone, weighted by the
    share of each cell inside it. No budget is spent.

    Example: dpmap aggregate map.geojson --zones counties.gpkg --by name --out counties.csv
    """
    from dpmap.release import read_release

    _table_kind(out)
    _check_new_files(
        [("--out", out), ("--out (its manifest)", manifest_path(out))],
        overwrite=overwrite,
        inputs=(release_file, zones),
    )
    rel = read_release(release_file)
    rollup = rel.aggregate_to(_read_zones(zones), by, resolution=resolution)
    _write_table(
        rollup,
        out,
        {
            "dpmap_rollup": 1,
            "zones": zones.name,
            "by": by,
            "resolution": resolution,
            "method": "unbiased cell estimates weighted by the share of each cell's area in the "
            "zone; 95% margins from the noise variances (dpmap.analysis.aggregate_to)",
            "release": _release_summary(rel, release_file),
            "release_manifest": rel.manifest,
        },
    )
    typer.echo(f"wrote {out} and {manifest_path(out)} ({len(rollup)} rows)")
    typer.echo(rel.privacy_statement)


@app.command("compare")
def compare_cmd(
    a: Annotated[Path, typer.Argument(metavar="A", help="The earlier release (or roll-up).")],
    b: Annotated[Path, typer.Argument(metavar="B", help="The later release (or roll-up).")],
    out: Annotated[
        Path,
        typer.Option("--out", help="Output (.csv, .geojson or .parquet) + .manifest.json."),
    ],
    zones: Annotated[
        Path | None,
        typer.Option("--zones", help="Roll both releases up to these polygons, then compare."),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option("--by", help="Column naming each zone (with --zones, or of two roll-ups)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing output files.")
    ] = False,
) -> None:
    """Change from A to B with 95% margins, cell by cell or zone by zone.

    A and B are releases of the same region and resolution (compared cell by cell), or
    with --zones rolled up to the same polygons first, or two roll-ups written by dpmap
    aggregate. No budget is spent (each release has already spent its own).

    Example: dpmap compare january.geojson june.geojson --out change.csv
    """
    from dpmap.analysis import compare
    from dpmap.release import read_release

    _table_kind(out)
    _check_new_files(
        [("--out", out), ("--out (its manifest)", manifest_path(out))],
        overwrite=overwrite,
        inputs=(a, b, zones),
    )
    rollups = [_read_rollup(p) for p in (a, b)]
    sources: list[Any] = []
    if any(r is not None for r in rollups):
        if not all(r is not None for r in rollups) or zones is not None:
            raise SpecError(
                "compare two releases, or two roll-ups written by dpmap aggregate (without "
                "--zones); got one of each"
            )
        result = compare(rollups[0], rollups[1], by=by)
        for p in (a, b):
            meta = json.loads(manifest_path(p).read_text(encoding="utf-8"))
            sources.append({"file": p.name, "rollup_of": meta.get("release")})
    else:
        ra, rb = read_release(a), read_release(b)
        sources = [_release_summary(ra, a), _release_summary(rb, b)]
        if zones is not None:
            polygons = _read_zones(zones)
            key = by or "name"
            result = compare(ra.aggregate_to(polygons, key), rb.aggregate_to(polygons, key))
        else:
            if by is not None:
                raise SpecError("--by applies with --zones (or to two roll-ups); add --zones FILE")
            result = compare(ra, rb)
    _write_table(
        result,
        out,
        {
            "dpmap_comparison": 1,
            "a": sources[0],
            "b": sources[1],
            "zones": zones.name if zones is not None else None,
            "method": "change = b − a of the unbiased estimates; 95% margin of the change from "
            "both releases' noise (independent releases); significant: |change| > margin "
            "(expect about 5% false alarms among unchanged rows)",
            "privacy": "post-processing of two releases; publishing both spends both budgets",
        },
    )
    n_sig = int(result["significant"].sum()) if "significant" in result else 0
    typer.echo(
        f"wrote {out} and {manifest_path(out)} ({len(result)} rows, {n_sig} with a change "
        "larger than its 95% margin)"
    )


# -- around a point (dpmap.analysis) --
@app.command("around")
def around_cmd(
    release_file: Annotated[
        Path, typer.Argument(metavar="RELEASE", help="A release written by dpmap.")
    ],
    lat: Annotated[float, typer.Option("--lat", help="Latitude of the point (degrees).")],
    lng: Annotated[float, typer.Option("--lng", help="Longitude of the point (degrees).")],
    radius_m: Annotated[
        float, typer.Option("--radius-m", help="Radius of the circle in metres.")
    ] = 500.0,
    resolution: Annotated[
        int | None,
        typer.Option("--resolution", help="Level of a hierarchical release (default: the finest)."),
    ] = None,
    noun: Annotated[
        str, typer.Option("--noun", help="What the count counts, for the sentence (e.g. debts).")
    ] = "records",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Totals of the whole H3 cells overlapping a circle around a point (not a count within it).

    Example: dpmap around map.geojson --lat 39.1 --lng 116.15 --radius-m 500
    """
    import json

    from dpmap.release import read_release

    rel = read_release(release_file)
    result = rel.around(lat, lng, radius_m, resolution=resolution, noun=noun)
    typer.echo(
        json.dumps(result.as_dict(), indent=2, ensure_ascii=False) if as_json else str(result)
    )


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("out"),
    rows: Annotated[
        int, typer.Option("--rows", help="Synthetic debt records to generate.")
    ] = 200_000,
    resolution: Annotated[int, typer.Option("--resolution", help="H3 resolution of the map.")] = 6,
    epsilon: Annotated[
        float, typer.Option("--epsilon", help="Privacy budget of the release.")
    ] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic data.")] = 0,
    include_unbiased: Annotated[
        bool,
        typer.Option(
            "--include-unbiased",
            help="Also write the unbiased noisy estimates of every row (for adding up areas).",
        ),
    ] = False,
) -> None:
    """Release a map of SYNTHETIC debtors in Hebei province (built from real GeoNames places).

    Writes the synthetic input, the region, the release (GeoJSON + manifest) and a PNG map to --out.
    """
    from dpmap.demo import DEMO_DATA_NOTICE, hebei_region, synthetic_debtors
    from dpmap.io import atomic_write
    from dpmap.release import release

    if not out.exists():
        out.mkdir(parents=True)
    elif not out.is_dir():
        raise SpecError(f"--out {str(out)!r} exists and is not a folder; choose a folder")
    console = Console(stderr=True, highlight=False)
    with console.status("building synthetic debtors from GeoNames places…"):
        region = hebei_region()
        points = synthetic_debtors(rows, seed=seed)
    import json

    import shapely

    points_path, region_path = out / "synthetic_debtors.csv", out / "hebei_region.geojson"
    with atomic_write([points_path, region_path]) as (tp, tr):
        points.to_csv(tp, index=False)
        tr.write_text(
            json.dumps(
                {
                    "type": "Feature",
                    "properties": {"name": "Hebei (approximate)"},
                    "geometry": json.loads(shapely.to_geojson(region)),
                }
            )
        )
    with console.status("releasing the private map…"):
        rel = release(
            points,
            region=region,
            resolution=resolution,
            epsilon=epsilon,
            person="debtor_id",
            value="amount",
            bounds=(0, 50_000),
            title="Synthetic debtors in Hebei (dpmap demo)",
        )
    map_path, png_path = out / "hebei_debt_map.geojson", out / "hebei_debt_map.png"
    with console.status("writing the release and the map…"):
        rel.to_file(map_path, include_unbiased=include_unbiased)
        rel.plot(png_path)
    cells = rel.cells
    typer.echo(DEMO_DATA_NOTICE)
    typer.echo(
        f"input (synthetic, NOT for publication): {points_path} ({len(points)} rows), region: {region_path}"
    )
    typer.echo(
        f"release: {map_path} + {map_path.with_name(map_path.stem + '.manifest.json')}, map: {png_path}"
    )
    typer.echo(
        f"{len(cells)} cells at resolution {resolution}, {int((~cells['suppressed']).sum())} published, "
        f"{int(cells['suppressed'].sum())} suppressed"
    )
    typer.echo(rel.privacy_statement)


# -- empirical privacy audit (dpmap.audit) --
@app.command("audit")
def audit_cmd(
    resolution: Annotated[
        str,
        typer.Option(
            "--resolution", help="H3 resolution 0..9, or several comma-separated (5,6,7)."
        ),
    ],
    epsilon: Annotated[float, typer.Option("--epsilon", help="The ε of the release to audit.")],
    delta: Annotated[
        float, typer.Option("--delta", help="δ (needed for gaussian/discovery).")
    ] = 0.0,
    mechanism: Annotated[str, typer.Option("--mechanism", help="laplace or gaussian.")] = "laplace",
    max_cells: Annotated[int, typer.Option("--max-cells", help="Cells per person (L0).")] = 1,
    max_records_per_cell: Annotated[
        int, typer.Option("--max-records-per-cell", help="Records per person and cell (L∞).")
    ] = 1,
    bounds: Annotated[
        tuple[float, float] | None,
        typer.Option("--bounds", help="Audit a value column clamped to LO HI.", metavar="LO HI"),
    ] = None,
    suppress_below: Annotated[
        float | None, typer.Option("--suppress-below", help="Suppression threshold.")
    ] = None,
    no_suppress: Annotated[
        bool, typer.Option("--no-suppress", help="Publish every noisy value.")
    ] = False,
    adaptive: Annotated[
        bool, typer.Option("--adaptive", help="Audit an adaptive release.")
    ] = False,
    adaptive_method: Annotated[
        str,
        typer.Option("--adaptive-method", help="Adaptive releases: privtree (default) or grid."),
    ] = "privtree",
    discovery: Annotated[
        bool,
        typer.Option("--discovery", help="Audit a release without a region (needs --delta > 0)."),
    ] = False,
    runs: Annotated[int, typer.Option("--runs", help="Runs on each dataset.")] = 400,
    alpha: Annotated[
        float, typer.Option("--alpha", help="Chance that a correct release is flagged.")
    ] = 1e-6,
    level: Annotated[
        str,
        typer.Option(
            "--level",
            help="release (whole releases, every mode) or mechanism (only the noise step of a "
            "flat release: many more runs per second).",
        ),
    ] = "release",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Audit the privacy of a release configuration empirically, on SYNTHETIC data.

    Builds a tiny public region (an H3 cell and its six neighbours near 39.1 N, 116.15 E), a dataset D (ten persons with two records in six of the cells) and D′ = D plus one adversarial person (200 records, all but one in max-cells cells and one in one more cell, at random positions among D's rows, extreme values), and runs the release --runs times on each.

    The best separating events (count, sum, suppression, published cells, a pooled likelihood-ratio score) are chosen on a fifth of the runs and measured on the rest; the result is a (1 − alpha)-confidence lower bound on ε, printed beside the claimed ε and beside the most the runs could ever certify (with a warning when that is not above the claim).

    Exit status 1 if the bound exceeds the claim (the release leaks more than it says), 0 otherwise.

    Example: dpmap audit --resolution 7 --epsilon 1 --runs 400
    """
    import json

    from dpmap.audit import audit

    if no_suppress and suppress_below is not None:
        raise SpecError(
            "--suppress-below and --no-suppress contradict each other; pass one of them"
        )
    params: dict[str, Any] = {
        "resolution": _parse_levels(resolution),
        "epsilon": epsilon,
        "delta": delta,
        "mechanism": mechanism,
        "max_cells": max_cells,
        "max_records_per_cell": max_records_per_cell,
        "suppress_below": False if no_suppress else suppress_below,
        "adaptive": _adaptive_arg(adaptive, adaptive_method),
    }
    if bounds is not None:
        params["bounds"] = bounds
    console = Console(stderr=True, highlight=False, quiet=as_json)
    with console.status("auditing…") as status:

        def progress(done: int, total: int) -> None:
            status.update(f"auditing… {done}/{total} runs on each dataset")

        report = audit(
            runs=runs, alpha=alpha, level=level, discovery=discovery, progress=progress, **params
        )
    typer.echo(
        json.dumps(report.as_dict(), indent=2, ensure_ascii=False) if as_json else str(report)
    )
    if not report.passed:
        raise typer.Exit(code=1)


# -- end of audit --


# -- errors in the words of the command line -----------------------------------------
# The Python API's messages name keywords ("pass person='<column>'", "max_cells must be
# ..."); on the command line they are translated to the flags ("--person <column>",
# "--max-cells"), using the CLI's own option list.

_VALUE = r"""'[^']*'|"[^"]*"|\([^()]*\)|\[[^\[\]]*\]|<[^<>]*>|\.\.\.|\w+\([^()]*\)|[-+\w.]+"""


def _cli_options() -> dict[str, tuple[str, bool]]:
    """Python keyword → (long flag, is a boolean flag), from every command's options
    (``release`` first, so its flags win where commands share a keyword)."""
    root = typer.main.get_command(app)
    commands: list[Any] = []

    def visit(command: Any) -> None:
        commands.append(command)
        for sub in getattr(command, "commands", {}).values():
            visit(sub)

    visit(root)
    commands.sort(key=lambda c: c.name != "release")
    options: dict[str, tuple[str, bool]] = {}
    for command in commands:
        for param in command.params:
            if getattr(param, "param_type_name", "") == "option" and param.name:
                flag = next((o for o in param.opts if o.startswith("--")), None)
                if flag is not None:
                    options.setdefault(param.name, (flag, bool(param.is_flag)))
    return options


def _flag_value(name: str, flag: str, is_flag: bool, value: str) -> str:
    if name == "suppress_below" and value == "False":
        return "--no-suppress"
    if name == "adaptive" and value.strip("'\"") in ("grid", "privtree"):
        return f"--adaptive --adaptive-method {value.strip(chr(39) + chr(34))}"
    if value == "True":
        return flag if is_flag else f"{flag} true"
    if value == "False":
        return f"no {flag}" if is_flag else f"{flag} false"
    if value == "None":
        return f"no {flag}"
    if value[:1] in "'\"" and value[-1:] == value[:1]:
        inner = value[1:-1]
        return (
            f"{flag} {inner}"
            if inner and not any(c.isspace() for c in inner)
            else f"{flag} {value}"
        )
    if value[:1] in "([":  # bounds=(lo, hi) → --bounds lo hi; resolution=[5, 6] → 5,6
        items = [v.strip().strip("'\"") for v in value[1:-1].split(",") if v.strip()]
        if not items:
            return f"{flag} ''"
        return f"{flag} " + (" ".join(items) if value[0] == "(" else ",".join(items))
    call = re.fullmatch(r"\w+\(([^()]*)\)", value)  # ledger=Ledger(path) → --ledger path
    if call:
        return f"{flag} {call.group(1)}"
    return f"{flag} {value}"


def as_command_line(message: str, options: dict[str, tuple[str, bool]] | None = None) -> str:
    """``message`` with Python keywords replaced by the command line's flags."""
    options = _cli_options() if options is None else options
    names = "|".join(sorted((re.escape(n) for n in options), key=len, reverse=True))
    if not names:
        return message

    def keyword(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        flag, is_flag = options[name]
        return _flag_value(name, flag, is_flag, value)

    # not inside a word, a quoted name or a path ("out/max_cells.csv")
    before = r"(?<![\w\-.'\"/\\])"
    message = re.sub(rf"{before}({names})=({_VALUE})", keyword, message)
    # bare identifiers that can only be Python names ("max_cells must be ...")
    bare = "|".join(re.escape(n) for n in options if "_" in n)
    if bare:
        message = re.sub(
            rf"{before}({bare})(?![\w=/\\]|\.\w)", lambda m: options[m.group(1)][0], message
        )
    return message


_showwarning = warnings.showwarning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """dpmap's own warnings as one line on stderr; others as Python prints them."""
    if issubclass(category, DpmapWarning):
        text = as_command_line(" ".join(str(message).split()))
        print(f"dpmap: warning: {text}", file=sys.stderr)
    else:
        _showwarning(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes → one line on stderr and exit status 2.

    Returns the exit status (the ``dpmap`` console script passes it to ``sys.exit``).
    """
    command = typer.main.get_command(app)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", DpmapWarning)  # every time, never as an error
            warnings.showwarning = _show_warning
            result = command.main(args=argv, prog_name="dpmap", standalone_mode=False)
    except DpmapError as exc:
        message = as_command_line(" ".join(str(exc).split()))
        print(f"dpmap: error: {message}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.TyperException as exc:  # usage errors (bad or missing flags)
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help(), err=True)
            return 2
        message = " ".join(exc.format_message().split())
        hint = f"see {ctx.command_path} --help" if ctx is not None else "see dpmap --help"
        print(f"dpmap: error: {message} ({hint})", file=sys.stderr)
        return 2
    except typer.Abort:
        print("dpmap: aborted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0
