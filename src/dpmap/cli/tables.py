"""Press tables, roll-ups, comparisons and totals around a point, from published releases
(post-processing: no budget is spent): ``dpmap table``, ``aggregate``, ``compare``,
``around``, and over a sequence of releases ``series`` and ``trend``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from dpmap.cli.outputs import check_new_files
from dpmap.errors import DataFileError, SpecError
from dpmap.io import manifest_path

__all__ = [
    "aggregate_cmd",
    "around_cmd",
    "compare_cmd",
    "period_names",
    "series_cmd",
    "table_cmd",
    "trend_cmd",
]


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
    from dpmap.releases import read_release

    if out.suffix.lower() != ".csv":
        raise SpecError(f"--out {str(out)!r} must end in .csv (a press table is a CSV file)")
    check_new_files(
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
    from dpmap.releases import read_release

    _table_kind(out)
    check_new_files(
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


def compare_cmd(
    a: Annotated[Path, typer.Argument(metavar="A", help="The earlier release (or roll-up).")],
    b: Annotated[
        Path | None,
        typer.Argument(metavar="[B]", help="The later release (or roll-up); none with --periods."),
    ] = None,
    *,
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
    periods: Annotated[
        str | None,
        typer.Option(
            "--periods",
            help="Compare two periods of ONE panel file A: FIRST,SECOND (e.g. 2026-01,2026-12).",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing output files.")
    ] = False,
) -> None:
    """Change from A to B with 95% margins, cell by cell or zone by zone.

    A and B are releases of the same region and resolution (compared cell by cell), or
    with --zones rolled up to the same polygons first, or two roll-ups written by dpmap
    aggregate. With --periods, A is one panel file and two of its periods are compared
    (their margin includes the periods' shared noise where they share it). No budget is
    spent (each release has already spent its own).

    Examples: dpmap compare january.geojson june.geojson --out change.csv;
    dpmap compare panel.geojson --periods 2026-01,2026-12 --out change.csv
    """

    _table_kind(out)
    check_new_files(
        [("--out", out), ("--out (its manifest)", manifest_path(out))],
        overwrite=overwrite,
        inputs=(a, b, zones),
    )
    if periods is not None:
        _compare_periods(a, b, periods, (zones, by), out)
        return
    if b is None:
        raise SpecError(
            "compare needs two files A and B, or one panel file A with --periods FIRST,SECOND; "
            "add the second file"
        )
    _compare_files(a, b, zones, by, out)


def _compare_files(a: Path, b: Path, zones: Path | None, by: str | None, out: Path) -> None:
    """``dpmap compare A B``: two releases (cell by cell, or rolled up to --zones) or two
    roll-ups."""
    from dpmap.analysis import compare
    from dpmap.releases import read_release

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
    _write_comparison(
        result,
        out,
        {
            "a": sources[0],
            "b": sources[1],
            "zones": zones.name if zones is not None else None,
            "method": "change = b − a of the unbiased estimates; 95% margin of the change from "
            "both releases' noise (independent releases); significant: |change| > margin "
            "(expect about 5% false alarms among unchanged rows)",
            "privacy": "post-processing of two releases; publishing both spends both budgets",
        },
    )


def _compare_periods(
    a: Path, b: Path | None, periods: str, place: tuple[Path | None, str | None], out: Path
) -> None:
    """``dpmap compare PANEL --periods FIRST,SECOND``: two periods of one panel file."""
    from dpmap.analysis import compare
    from dpmap.releases import read_release

    if b is not None or place != (None, None):
        raise SpecError(
            "--periods compares two periods of ONE panel file, cell by cell (or zone by zone for "
            f"a zone panel); drop {'B' if b is not None else '--zones/--by'}, or compare "
            "two files without --periods"
        )
    pair = [x.strip() for x in periods.split(",")]
    if len(pair) != 2 or not all(pair):
        raise SpecError(
            f"--periods takes two of the panel's periods, FIRST,SECOND, got {periods!r}; "
            "e.g. --periods 2026-01,2026-12"
        )
    panel = read_release(a)
    result = compare(panel, periods=(pair[0], pair[1]))
    summary = _release_summary(panel, a)
    _write_comparison(
        result,
        out,
        {
            "a": {**summary, "period": pair[0]},
            "b": {**summary, "period": pair[1]},
            "zones": None,
            "method": "change = b − a of the unbiased estimates of two periods of one panel; 95% "
            "margin of the change from the panel's noise, the two periods' covariance included "
            "where they share noise (time levels, running totals); significant: |change| > "
            "margin (expect about 5% false alarms among unchanged rows)",
            "privacy": "post-processing of one panel release: no budget spent",
        },
        span=f" from {pair[0]} to {pair[1]}",
    )


def _write_comparison(result: Any, out: Path, meta: dict[str, Any], span: str = "") -> None:
    """Write a comparison and its manifest (``meta``: sources, method, privacy), and say how
    many rows changed by more than their margin (``span``: between which periods)."""
    _write_table(result, out, {"dpmap_comparison": 1, **meta})
    n_sig = int(result["significant"].sum()) if "significant" in result else 0
    typer.echo(
        f"wrote {out} and {manifest_path(out)} ({len(result)} rows, {n_sig} with a change"
        f"{span} larger than its 95% margin)"
    )


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
    from dpmap.releases import read_release

    rel = read_release(release_file)
    result = rel.around(lat, lng, radius_m, resolution=resolution, noun=noun)
    typer.echo(
        json.dumps(result.as_dict(), indent=2, ensure_ascii=False) if as_json else str(result)
    )


def _series_inputs(
    release_files: list[Path], zones: Path | None, periods: str | None
) -> tuple[list[Any], Any, list[Any] | None]:
    """The releases (oldest first), the zones and the period names of ``series``/``trend``."""
    from dpmap.releases import read_release

    rels = [read_release(f) for f in release_files]
    if len(rels) == 1 and rels[0].periods is not None:  # a panel: its own public periods
        if periods is not None:
            raise SpecError(
                "--periods names the periods of separate release files; a panel release has its "
                "own periods: drop --periods"
            )
        return rels, (_read_zones(zones) if zones is not None else None), None
    names = period_names(periods, len(release_files))
    return rels, (_read_zones(zones) if zones is not None else None), names


def period_names(periods: str | None, files: int) -> list[Any] | None:
    """The periods of ``--periods`` (comma-separated, one per release file): pandas Periods
    when they all parse as such (ISO months, quarters, years…), else the names as given."""
    if periods is None:
        return None
    names: list[Any] = [p.strip() for p in periods.split(",") if p.strip()]
    if len(names) != files:
        raise SpecError(
            f"--periods names {len(names)} periods for {files} release files; "
            "give one name per file, comma-separated, e.g. --periods 2026-01,2026-02"
        )
    import contextlib

    import pandas as pd

    with contextlib.suppress(ValueError, TypeError):  # ISO months, quarters, years…
        names = [pd.Period(n) for n in names]  # spaced by their own calendar
    return names


_RELEASES = Annotated[
    list[Path],
    typer.Argument(metavar="RELEASES...", help="One release per period, oldest first."),
]
_SERIES_ZONES = Annotated[
    Path | None,
    typer.Option("--zones", help="Polygons to follow instead of cells (the cells are rolled up)."),
]
_PERIODS = Annotated[
    str | None,
    typer.Option("--periods", help="The periods' names, comma-separated (e.g. 2026-01,2026-02)."),
]
_SERIES_OUT = Annotated[
    Path, typer.Option("--out", help="Output (.csv, .geojson or .parquet) + .manifest.json.")
]
_BY = Annotated[str, typer.Option("--by", help="Column naming each zone.")]
_PNG = Annotated[
    Path | None, typer.Option("--png", help="Also draw it as a PNG image (needs dpmap[plot]).")
]
_OVERWRITE = Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")]


def series_cmd(
    release_files: _RELEASES,
    out: _SERIES_OUT,
    zones: _SERIES_ZONES = None,
    by: _BY = "name",
    periods: _PERIODS = None,
    png: _PNG = None,
    overwrite: _OVERWRITE = False,
) -> None:
    """Every cell's (or zone's) estimates per period, with 95% margins, as one long table.

    No budget is spent.

    Example: dpmap series 2026-*.geojson --zones counties.gpkg --by name --out series.csv
    """
    import pandas as pd

    from dpmap.analysis import series
    from dpmap.maps.trends import plot_series

    if Path(out).suffix.lower() != ".csv":
        raise DataFileError(f"cannot write {str(out)!r}: a series is a table, write it as .csv")
    _check_outputs(out, png, overwrite, release_files, zones)
    rels, polys, names = _series_inputs(release_files, zones, periods)
    table = series(rels, polys, by, periods=names)
    figure = plot_series(table) if png else None
    _write_csv_with_manifest(
        pd.DataFrame(table),
        out,
        {
            "dpmap_series": 1,
            "zones": zones.name if zones else None,
            "by": by if zones else None,
            "method": "unbiased estimates per period; 95% margins of the noise (dpmap.series)",
            "releases": [_release_summary(r, f) for r, f in zip(rels, release_files, strict=True)],
        },
    )
    typer.echo(f"wrote {out} and {manifest_path(out)} ({len(table)} rows)")
    _write_png(figure, png)


def trend_cmd(
    release_files: _RELEASES,
    out: _SERIES_OUT,
    zones: _SERIES_ZONES = None,
    by: _BY = "name",
    periods: _PERIODS = None,
    statistic: Annotated[str, typer.Option("--statistic", help="count or sum.")] = "count",
    fdr: Annotated[
        float, typer.Option("--fdr", help="False-discovery rate of 'significant' (≤ 0.09).")
    ] = 0.05,
    png: _PNG = None,
    overwrite: _OVERWRITE = False,
) -> None:
    """The trend of every cell (or zone) over the periods: slope with a 95% margin, and
    'significant' with the false-discovery rate controlled (Benjamini–Hochberg).

    No budget is spent.

    Example: dpmap trend 2026-*.geojson --zones counties.gpkg --by name --out trends.csv
    """
    from dpmap.analysis import trend
    from dpmap.maps.trends import plot_trend

    _table_kind(out)
    _check_outputs(out, png, overwrite, release_files, zones)
    rels, polys, names = _series_inputs(release_files, zones, periods)
    table = trend(rels, polys, by, periods=names, statistic=statistic, fdr=fdr)
    figure = plot_trend(table) if png else None
    significant = int(table["significant"].sum())
    _write_table(
        table,
        out,
        {
            "dpmap_trend": 1,
            "zones": zones.name if zones else None,
            "by": by if zones else None,
            "statistic": statistic,
            "periods": table.attrs["periods"],
            "method": table.attrs["method"],
            "releases": [_release_summary(r, f) for r, f in zip(rels, release_files, strict=True)],
        },
    )
    typer.echo(
        f"wrote {out} and {manifest_path(out)} ({len(table)} rows, {significant} significant "
        f"at a false-discovery rate of {fdr:g})"
    )
    _write_png(figure, png)


def _check_outputs(
    out: Path, png: Path | None, overwrite: bool, release_files: list[Path], zones: Path | None
) -> None:
    """Refuse, before reading anything, outputs that exist or a PNG path of another kind."""
    if png is not None and png.suffix.lower() != ".png":
        raise DataFileError(f"--png {str(png)!r} must end in .png; e.g. --png trend.png")
    check_new_files(
        [
            ("--out", out),
            ("--out (its manifest)", manifest_path(out)),
            *([("--png", png)] if png is not None else []),
        ],
        overwrite=overwrite,
        inputs=(*release_files, *([zones] if zones else [])),
    )


def _write_png(figure: Any, png: Path | None) -> None:
    if figure is None or png is None:
        return
    from dpmap.io import atomic_write

    with atomic_write([png]) as (tmp,):
        figure.savefig(tmp, format="png", dpi=150)
    typer.echo(f"wrote {png}")


def _write_csv_with_manifest(df: Any, out: Path, manifest: dict[str, Any]) -> None:
    """A plain table (no geometry) and its manifest, both or neither."""
    from dpmap.io import atomic_write

    text = json.dumps(manifest, indent=2, ensure_ascii=False)
    with atomic_write([out, manifest_path(out)]) as (tmp, tmp_manifest):
        df.to_csv(tmp, index=False)
        tmp_manifest.write_text(text + "\n", encoding="utf-8")
