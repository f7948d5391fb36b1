"""``dpmap release`` and ``dpmap explain``: their options come from the parameter table
(:mod:`dpmap.parameters`); a ``--config`` TOML file may hold any of them."""

from __future__ import annotations

import hashlib
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from dpmap import parameters
from dpmap.cli.options import CTX, option, table_options, table_values, with_signature
from dpmap.cli.outputs import check_new_files
from dpmap.errors import DataFileError, DpmapError, SpecError
from dpmap.io import histogram_path, manifest_path

__all__ = ["explain_cmd", "release_cmd"]

_err = Console(stderr=True, highlight=False)

#: options of `dpmap release` that are no release parameter (what to write, and how)
_OUTPUT_OPTIONS = [
    option(
        None,
        Path | None,
        "--out",
        help="Output release: .geojson, .parquet or .csv "
        "(a .manifest.json is written beside it). Required (here or in --config).",
    ),
    option(
        None,
        Path | None,
        "--png",
        help="Also draw a static map to this PNG (one map: not with --category; draw each "
        "category afterwards with dpmap plot, which spends no budget).",
    ),
    option(
        False,
        bool,
        "--overwrite",
        help="Replace existing output files (the release, its manifest, the PNG). Without "
        "it, an existing output stops the release before anything is spent.",
    ),
    option(
        False,
        bool,
        "--include-unbiased",
        help="Also write the unbiased noisy estimates of every row, suppressed ones "
        "included (count_unbiased, count_var, ...), so that readers can add up areas "
        "without the bias of suppression. No extra privacy cost.",
    ),
    option(False, bool, "--quiet", help="Print nothing but errors."),
]
_RELEASE_SIGNATURE = [CTX, *table_options("release"), *_OUTPUT_OPTIONS]
_EXPLAIN_SIGNATURE = [
    CTX,
    *table_options("explain"),
    option(False, bool, "--json", help="Print the plan as JSON."),
]

#: settings a --config file may hold: the options of `dpmap release`, as Python names
#: (`dpmap explain` reads the same files and ignores the settings it has no use for)
_CONFIG_KEYS = frozenset(p.name for p in _RELEASE_SIGNATURE) - {"ctx", "config"}
_PATH_SETTINGS = ("region", "zones", "ledger", "out", "png", "points")
_BOOLEAN_SETTINGS = frozenset(
    p.name for p in _RELEASE_SIGNATURE if p.default is False and p.name in _CONFIG_KEYS
)


def _release_kwargs(kw: dict[str, Any], ctx: Any, command: str) -> dict[str, Any]:
    """The command's flags, merged with its --config file, as Python keywords."""
    config = kw.pop("config", None)
    if config is not None:
        kw = _merge_config(kw, Path(config), ctx)
    if kw.get("resolution") is None and kw.get("zones") is None:
        raise SpecError(
            "--resolution is required (or --zones FILE --by COLUMN for one row per zone); pass "
            "it on the command line or in --config"
        )
    if kw.get("epsilon") is None:
        raise SpecError("--epsilon is required; pass it on the command line or in --config")
    return table_values(kw, command)


def _merge_config(kw: dict[str, Any], path: Path, ctx: Any) -> dict[str, Any]:
    """Settings from a TOML file, overridden by flags given on the command line."""

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
        if key in _PATH_SETTINGS and not isinstance(value, str):
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
        if key in _PATH_SETTINGS and value is not None and "://" not in value:  # not a URL
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


@with_signature(_RELEASE_SIGNATURE)
def release_cmd(ctx: typer.Context, **kw: Any) -> None:
    """Release a differentially private map of POINTS.

    Examples:

        dpmap release debts.csv --region hebei.geojson --resolution 7 --epsilon 1 --person debtor_id --value amount --bounds 0 50000 --out map.geojson --png map.png

        dpmap release debts.csv --zones counties.geojson --by name --epsilon 1 --person debtor_id --value amount --bounds 0 50000 --out counties.csv

        dpmap release --config release.toml     (settings kept under version control)
    """
    from dpmap.diagnostics import Diagnostics
    from dpmap.releases import release

    kw = _release_kwargs(kw, ctx, "release")
    points, out, png, quiet = kw.pop("points"), kw.pop("out"), kw.pop("png"), kw.pop("quiet")
    show_diag, overwrite = kw.pop("diagnostics"), bool(kw.pop("overwrite", False))
    include_unbiased = bool(kw.pop("include_unbiased", False))
    if points is None or out is None:
        missing = "POINTS" if points is None else "--out"
        raise SpecError(f"{missing} is required; pass it on the command line or in --config")
    out, png = Path(out), Path(png) if png is not None else None
    # Everything that can fail after the release is checked before it: once the release
    # is computed, its privacy budget is spent (and charged to the ledger).
    inputs = (points, kw.get("ledger"), kw.get("zones"))
    histogram = kw.get("quantiles") is not None or kw.get("value_bands") is not None
    _check_outputs(out, png, overwrite=overwrite, inputs=inputs, histogram=histogram)
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
        hist = f", {histogram_path(out)}" if rel.histogram is not None else ""
        typer.echo(f"wrote {out}{hist} and {manifest_path(out)}" + (f" and {png}" if png else ""))
        typer.echo(rel.privacy_statement)


def _check_outputs(
    out: Path,
    png: Path | None,
    *,
    overwrite: bool,
    inputs: tuple[Any, ...],
    histogram: bool = False,
) -> None:
    """Refuse, before anything is spent, every output that could not be written
    (``histogram``: the release writes its value histogram beside the table too)."""
    from dpmap.releases.result import release_kind

    if png is not None and png.suffix.lower() != ".png":
        raise SpecError(f"--png {str(png)!r} must end in .png")
    release_kind(out)  # refuse an unsupported output type before reading any data
    targets = [("--out", out), ("--out (its manifest)", manifest_path(out))]
    if histogram:
        targets.append(("--out (its value histogram)", histogram_path(out)))
    if png is not None:
        targets.append(("--png", png))
    check_new_files(targets, overwrite=overwrite, inputs=inputs)


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
    if ledger and ledger.get("claim_entry_id") is not None:  # a continual continuation
        return (
            f"the release was computed (its new periods' noise was drawn once, recorded as "
            f"ledger entry #{ledger['claim_entry_id']}; the horizon's ε = {eps} was charged to "
            f"dataset {ledger['dataset']!r} in entry #{ledger['entry_id']})"
        )
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


#: keywords `dpmap explain` passes on to dpmap.explain (of those it reads, or its --config holds)
_EXPLAIN_KEYS = parameters.names("explain") & {
    p.name for p in parameters.for_entry_point("cli explain")
}


@with_signature(_EXPLAIN_SIGNATURE)
def explain_cmd(ctx: typer.Context, **kw: Any) -> None:
    """Explain a release without data: noise scale, ε per statistic, expected 95% error per cell.

    Example:

        dpmap explain --region hebei.geojson --resolution 7 --epsilon 1 --value amount --bounds 0 50000
    """
    import json

    from dpmap.releases import explain

    as_json = kw.pop("json")
    kw = _release_kwargs(kw, ctx, "explain")
    ex = explain(**{k: v for k, v in kw.items() if k in _EXPLAIN_KEYS})
    typer.echo(json.dumps(ex.as_dict(), indent=2, ensure_ascii=False) if as_json else str(ex))
