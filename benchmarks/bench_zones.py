#!/usr/bin/env python
"""Benchmark: districts released directly (zone release) against an H3 release rolled up.

Run from the repository root::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_zones.py              # 10 runs per ε
    PYTHONPATH=src .venv/bin/python benchmarks/bench_zones.py --runs 30 --debtors 400000

A measurement script, not a test. Data: the demo's synthetic debtors (placed around real
GeoNames places of Hebei, skewed amounts), one record per debtor (so bounding keeps every
record and the true values are exact), amounts clamped to the public bounds. Districts: the
Voronoi cells of the ``--districts`` most populous GeoNames places of Hebei, clipped to the
demo region — public zones of very different sizes. For each ε it releases, ``--runs`` times:

``zones``
    ``dpmap.release(points, zones=districts, by="name", ...)``: one noisy count and sum per
    district.
``H3 r → roll-up``
    ``dpmap.release(points, region=..., resolution=r, ...)`` then ``aggregate_to(districts)``:
    the cells' unbiased estimates added up, area-apportioned at the district borders, with the
    roll-up's 95% interval (``count_lo``/``count_hi``, which includes the border error).

Both spend the same ε (with ``count_share`` 0.5 between counts and sums). Districts are put
in three size classes by their true number of debtors (terciles), and for each method the
table shows the median absolute error of the count and of the sum, the median half-width of
the 95% interval for the count, and how often that interval covered the true count.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

import dpmap
from dpmap.demo import hebei_places, hebei_region, synthetic_debtors

BOUNDS = (0, 50_000)


def districts(n: int) -> gpd.GeoDataFrame:
    """Voronoi cells of the ``n`` most populous places, clipped to the demo region."""
    places = hebei_places().sort_values("population", ascending=False).head(n)
    region = hebei_region()
    points = shapely.multipoints(np.column_stack([places["lng"], places["lat"]]))
    cells = shapely.get_parts(shapely.voronoi_polygons(points, extend_to=region))
    seeds = shapely.points(places["lng"].to_numpy(), places["lat"].to_numpy())
    names, geoms = [], []
    for name, seed in zip(places["name"], seeds, strict=True):
        cell = next(c for c in cells if c.contains(seed))
        names.append(str(name))
        geoms.append(shapely.make_valid(cell.intersection(region)))
    frame = gpd.GeoDataFrame({"name": names}, geometry=geoms, crs="EPSG:4326")
    frame["name"] = frame["name"].where(~frame["name"].duplicated(), frame["name"] + " (2)")
    return frame


def truth(points: pd.DataFrame, zones: gpd.GeoDataFrame) -> pd.DataFrame:
    """True count and sum of the (clamped, whole-unit) amounts per district."""
    pts = gpd.GeoDataFrame(
        points, geometry=gpd.points_from_xy(points["lng"], points["lat"]), crs="EPSG:4326"
    )
    joined = gpd.sjoin(pts, zones, predicate="within", how="inner")
    amount = np.floor(np.clip(joined["amount"], *BOUNDS) + 0.5)
    out = (
        joined.assign(amount=amount)
        .groupby("name")
        .agg(count=("amount", "size"), sum=("amount", "sum"))
    )
    return out.reindex(zones["name"]).fillna(0.0)


def run_zones(points: pd.DataFrame, zones: gpd.GeoDataFrame, eps: float) -> pd.DataFrame:
    rel = dpmap.release(
        points, zones=zones, by="name", epsilon=eps, person="debtor_id", value="amount",
        bounds=BOUNDS, suppress_below=False,
    )  # fmt: skip
    t = rel.cells.set_index("name")
    return pd.DataFrame(
        {
            "count": t["count"].astype(float),
            "sum": t["sum"].astype(float),
            "lo": t["count"].astype(float) - t["count_moe"],
            "hi": t["count"].astype(float) + t["count_moe"],
        }
    )


def run_rollup(
    points: pd.DataFrame, zones: gpd.GeoDataFrame, eps: float, resolution: int
) -> pd.DataFrame:
    rel = dpmap.release(
        points, region=hebei_region(), resolution=resolution, epsilon=eps, person="debtor_id",
        value="amount", bounds=BOUNDS, suppress_below=False,
    )  # fmt: skip
    r = rel.aggregate_to(zones, "name").set_index("name")
    return pd.DataFrame(
        {"count": r["count"], "sum": r["sum"], "lo": r["count_lo"], "hi": r["count_hi"]}
    )


def summarise(runs: list[pd.DataFrame], true: pd.DataFrame, size: pd.Series) -> list[str]:
    rows = []
    for label in ("small", "medium", "large"):
        names = size.index[size == label]
        err_c = [abs(r.loc[n, "count"] - true.loc[n, "count"]) for r in runs for n in names]
        err_s = [abs(r.loc[n, "sum"] - true.loc[n, "sum"]) for r in runs for n in names]
        half = [(r.loc[n, "hi"] - r.loc[n, "lo"]) / 2 for r in runs for n in names]
        cover = [
            r.loc[n, "lo"] <= true.loc[n, "count"] <= r.loc[n, "hi"] for r in runs for n in names
        ]
        rows.append(
            f"{label:>6}: count error {statistics.median(err_c):9.1f}  sum error "
            f"{statistics.median(err_s):12.0f}  95% half-width {statistics.median(half):8.1f}  "
            f"coverage {np.mean(cover):6.1%}"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--debtors", type=int, default=200_000)
    ap.add_argument("--districts", type=int, default=40)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[6, 7])
    ap.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 1.0])
    args = ap.parse_args(argv)
    points = synthetic_debtors(args.debtors, seed=1).drop_duplicates("debtor_id")
    zones = districts(args.districts)
    true = truth(points, zones)
    size = pd.qcut(true["count"].rank(method="first"), 3, labels=["small", "medium", "large"])
    size = pd.Series(np.asarray(size), index=true.index)
    print(
        f"{len(points):,} debtors (one record each), {len(zones)} districts; true debtors per "
        f"district: min {true['count'].min():.0f}, median {true['count'].median():.0f}, "
        f"max {true['count'].max():.0f}"
    )
    for eps in args.epsilons:
        methods: dict[str, Any] = {"zones": lambda e=eps: run_zones(points, zones, e)}
        for r in args.resolutions:
            methods[f"H3 {r} → roll-up"] = lambda e=eps, r=r: run_rollup(points, zones, e, r)
        for name, run in methods.items():
            start = time.perf_counter()
            runs = [run() for _ in range(args.runs)]
            seconds = (time.perf_counter() - start) / args.runs
            print(f"\nε = {eps:g}, {name} ({seconds:.1f} s per release):")
            for line in summarise(runs, true, size):
                print("  " + line)


if __name__ == "__main__":
    main()
