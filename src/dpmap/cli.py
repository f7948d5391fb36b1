"""The ``dpmap`` command line: a thin layer over the Python API.

A user mistake (any :class:`~dpmap.errors.DpmapError`, or a bad flag) prints one line
on stderr and exits with status 2, with no traceback and no output file left behind
(files are written to temporary names and renamed when complete).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ._version import __version__
from .cli_budget import budget_app
from .errors import DpmapError, SpecError

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
    _opt(_REQUIRED, int, "--resolution", help="H3 resolution 0..9 (7 ≈ 5 km² cells)."),
    _opt(_REQUIRED, float, "--epsilon", help="Privacy budget ε of this release (> 0)."),
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


def _spec_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    if kw.pop("no_suppress"):
        if kw["suppress_below"] is not None:
            raise SpecError(
                "--suppress-below and --no-suppress contradict each other; pass one of them"
            )
        kw["suppress_below"] = False
    if kw.get("region") is not None:
        kw["region"] = str(kw["region"])
    return kw


def _with_signature(params: list[inspect.Parameter]) -> Any:
    def decorate(func: Any) -> Any:
        func.__signature__ = inspect.Signature(params)
        return func

    return decorate


@app.command("release")
@_with_signature(
    [
        inspect.Parameter(
            "points",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[
                Path, typer.Argument(metavar="POINTS", help="Points: .csv or .parquet file.")
            ],
        )
    ]
    + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in _SPEC_OPTIONS + _LEDGER_OPTIONS]
    + [
        _opt(
            _REQUIRED,
            Path,
            "--out",
            help="Output release: .geojson, .parquet or .csv "
            "(a .manifest.json is written beside it).",
        ),
        _opt(None, Path | None, "--png", help="Also draw a static map to this PNG."),
        _opt(None, str | None, "--title", help="Title stored in the manifest."),
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
def release_cmd(**kw: Any) -> None:
    """Release a differentially private map of POINTS.

    Example:

        dpmap release debts.csv --region hebei.geojson --resolution 7 --epsilon 1 --person debtor_id --value amount --bounds 0 50000 --out map.geojson --png map.png
    """
    from .diagnostics import Diagnostics
    from .release import release

    points, out, png, quiet = kw.pop("points"), kw.pop("out"), kw.pop("png"), kw.pop("quiet")
    show_diag = kw.pop("diagnostics")
    kw = _spec_kwargs(kw)
    if png is not None and png.suffix.lower() != ".png":
        raise SpecError(f"--png {str(png)!r} must end in .png")
    from .release import _kind_of

    _kind_of(out)  # refuse an unsupported output type before reading any data
    diag = Diagnostics()
    console = Console(stderr=True, highlight=False, quiet=quiet)
    with console.status("reading, binning, bounding and adding noise…"):
        rel = release(str(points), diagnostics=diag, **kw)
    with console.status("writing…"):
        rel.to_file(out)
        if png is not None:
            rel.plot(png)
    if show_diag:
        _err.print(str(diag), markup=False)
    if not quiet:
        typer.echo(
            f"wrote {out} and {out.with_name(out.stem + '.manifest.json')}"
            + (f" and {png}" if png else "")
        )
        typer.echo(rel.privacy_statement)


@app.command("explain")
@_with_signature(
    [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in _SPEC_OPTIONS]
    + [_opt(False, bool, "--json", help="Print the plan as JSON.")]
)
def explain_cmd(**kw: Any) -> None:
    """Explain a release without data: noise scale, ε per statistic, expected 95% error per cell.

    Example:

        dpmap explain --region hebei.geojson --resolution 7 --epsilon 1 --value amount --bounds 0 50000
    """
    import json

    from .release import explain

    as_json = kw.pop("json")
    ex = explain(**_spec_kwargs(kw))
    typer.echo(json.dumps(ex.as_dict(), indent=2, ensure_ascii=False) if as_json else str(ex))


@app.command("plot")
def plot_cmd(
    release_file: Annotated[
        Path, typer.Argument(metavar="RELEASE", help="A release written by dpmap.")
    ],
    png: Annotated[Path, typer.Option("--png", help="Output PNG file.")],
    column: Annotated[
        str, typer.Option("--column", help="Statistic to map: count, sum or mean.")
    ] = "count",
    category: Annotated[
        str | None, typer.Option("--category", help="Category to map (with a breakdown).")
    ] = None,
) -> None:
    """Draw a static map (PNG) of a published release.

    Example: dpmap plot map.geojson --png map.png
    """
    from .release import read_release

    rel = read_release(release_file)
    rel.plot(png, column=column, category=category)
    typer.echo(f"wrote {png}")


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
) -> None:
    """Release a map of SYNTHETIC debtors in Hebei province (built from real GeoNames places).

    Writes the synthetic input, the region, the release (GeoJSON + manifest) and a PNG map to --out.
    """
    from .demo import DEMO_DATA_NOTICE, hebei_region, synthetic_debtors
    from .io import atomic_write
    from .release import release

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
        rel.to_file(map_path)
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


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes → one line on stderr and exit status 2.

    Returns the exit status (the ``dpmap`` console script passes it to ``sys.exit``).
    """
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="dpmap", standalone_mode=False)
    except DpmapError as exc:
        message = " ".join(str(exc).split())
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
