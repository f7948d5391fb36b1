"""``dpmap demo``: a release of SYNTHETIC debtors in Hebei province, start to finish."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from dpmap.errors import SpecError

__all__ = ["demo_cmd"]


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

    Writes the synthetic input, the region, the release (GeoJSON + manifest) and a PNG map to --out,
    and the release's website to --out/site (dpmap publish; with the unbiased estimates, so
    that "around here" can answer over hidden cells).
    """
    from dpmap.demo import DEMO_DATA_NOTICE
    from dpmap.release import release
    from dpmap.site.build import check_out, publish

    if not out.exists():
        out.mkdir(parents=True)
    elif not out.is_dir():
        raise SpecError(f"--out {str(out)!r} exists and is not a folder; choose a folder")
    check_out(out / "site")  # refused before any work when it is not a site written before
    console = Console(stderr=True, highlight=False)
    points, region, points_path, region_path = _synthetic_input(out, rows, seed, console)
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
    with console.status("writing the website…"):
        site = publish(
            rel,
            out / "site",
            title="Synthetic debtors in Hebei (dpmap demo)",
            noun="debtors",
            include_unbiased=True,
        )
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
    typer.echo(f"website: {site / 'index.html'} (open it in a browser; no network needed)")
    typer.echo(rel.privacy_statement)


def _synthetic_input(out: Path, rows: int, seed: int, console: Console) -> tuple[Any, ...]:
    """The synthetic points and the region, built and written to ``out`` (both or neither).

    Returns the points, the region and the two paths written.
    """
    import shapely

    from dpmap.demo import hebei_region, synthetic_debtors
    from dpmap.io import atomic_write

    with console.status("building synthetic debtors from GeoNames places…"):
        region = hebei_region()
        points = synthetic_debtors(rows, seed=seed)
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
    return points, region, points_path, region_path
