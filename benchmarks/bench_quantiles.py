#!/usr/bin/env python
"""Benchmark: the median debt per district, dpmap's zone release against OpenDP's quantile.

Run from the repository root::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_quantiles.py              # 10 runs per ε
    PYTHONPATH=src .venv/bin/python benchmarks/bench_quantiles.py --runs 30 --debtors 400000

A measurement script, not a test. Data and districts are ``bench_zones.py``'s: the demo's
synthetic debtors (skewed, log-normal amounts), one record each, amounts clamped to the public
bounds and rounded to whole yuan; the Voronoi cells of Hebei's ``--districts`` most populous
GeoNames places, clipped to the demo region (districts of very different sizes). The true
median of a district is the smallest amount v with #{amounts ≤ v} ≥ N/2. For each ε it
runs ``--runs`` times:

``dpmap zones``
    ``dpmap.release(points, zones=districts, by="name", quantiles=[0.5], epsilon=ε, ...)``:
    the whole release spends ε; the value histogram behind the quantiles gets
    ``histogram_share`` (default 0.5) of it, the count and sum the rest. It publishes a point
    estimate ``q50`` and a 95% interval ``q50_lo``–``q50_hi`` per district.
``OpenDP ε_m``
    ``opendp.measurements.make_private_quantile`` (exponential-mechanism style scoring with
    noisy max, OpenDP 0.16), run once per district on that district's amounts (districts are
    disjoint, so the per-district runs compose in parallel: ε_m in all), with the same bounds
    and candidates the edges of dpmap's value-tree leaves (0, 50, …, 50,000), the scale
    chosen by ``binary_search_param`` so that OpenDP's own privacy map gives exactly ε_m for
    one person (one record) added or removed. It publishes a point estimate only, no interval
    and no count or sum. It runs at ε_m = ``histogram_share``·ε (the same ε on the median as
    dpmap's histogram) and at ε_m = ε (the whole budget on the median).

Districts are put in three size classes by their true number of debtors (terciles); the table
shows, per class, the median relative error |q̂ − q| / q of the median, and for dpmap the
coverage of the 95% interval (how often q50_lo ≤ q ≤ q50_hi) and its median width.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import geopandas as gpd
import numpy as np
import opendp.prelude as dp
import pandas as pd
from bench_zones import BOUNDS, districts

import dpmap
from dpmap.demo import synthetic_debtors
from dpmap.valuetree import ValueTree

CANDIDATES = [int(v) for v in ValueTree(*BOUNDS).edges()]


def district_amounts(points: pd.DataFrame, zones: gpd.GeoDataFrame) -> dict[str, np.ndarray]:
    """Each district's clamped, whole-yuan amounts (the values both mechanisms see)."""
    pts = gpd.GeoDataFrame(
        points, geometry=gpd.points_from_xy(points["lng"], points["lat"]), crs="EPSG:4326"
    )
    joined = gpd.sjoin(pts, zones, predicate="within", how="inner")
    amount = np.floor(np.clip(joined["amount"], *BOUNDS) + 0.5).astype(np.int64)
    groups = pd.Series(amount.to_numpy(), index=joined["name"].to_numpy()).groupby(level=0)
    out = {str(k): np.sort(v.to_numpy()) for k, v in groups}
    return {name: out.get(name, np.zeros(0, np.int64)) for name in zones["name"]}


def true_median(values: np.ndarray) -> float:
    return float(values[math.ceil(0.5 * len(values) - 1e-9) - 1])


def run_dpmap(
    points: pd.DataFrame, zones: gpd.GeoDataFrame, eps: float, share: float
) -> pd.DataFrame:
    rel = dpmap.release(
        points, zones=zones, by="name", epsilon=eps, person="debtor_id", value="amount",
        bounds=BOUNDS, suppress_below=False, quantiles=[0.5], histogram_share=share,
    )  # fmt: skip
    t = rel.cells.set_index("name")
    return pd.DataFrame({"q": t["q50"], "lo": t["q50_lo"], "hi": t["q50_hi"]}).astype(float)


def opendp_median(eps: float) -> dp.Measurement:
    """OpenDP's private median over the value tree's edges, its scale set so that ε is exact."""
    dp.enable_features("contrib")

    def make(scale: float) -> dp.Measurement:
        return dp.m.make_private_quantile(
            dp.vector_domain(dp.atom_domain(T=int)),
            dp.symmetric_distance(),
            dp.max_divergence(),
            CANDIDATES,
            0.5,
            scale,
        )

    m = make(dp.binary_search_param(make, d_in=1, d_out=eps))
    assert m.map(1) <= eps + 1e-12
    return m


def run_opendp(amounts: dict[str, np.ndarray], eps: float) -> pd.DataFrame:
    m = opendp_median(eps)
    q = {name: float(m(v.tolist())) for name, v in amounts.items()}
    nan = float("nan")
    return pd.DataFrame({"q": q, "lo": nan, "hi": nan})


def summarise(runs: list[pd.DataFrame], true: pd.Series, size: pd.Series) -> list[str]:
    rows = []
    for label in ("small", "medium", "large"):
        names = size.index[size == label]
        rel = [abs(r.loc[n, "q"] - true[n]) / true[n] for r in runs for n in names]
        line = f"{label:>6}: median relative error {statistics.median(rel):7.2%}"
        if not runs[0]["lo"].isna().all():
            cover = [r.loc[n, "lo"] <= true[n] <= r.loc[n, "hi"] for r in runs for n in names]
            width = [r.loc[n, "hi"] - r.loc[n, "lo"] for r in runs for n in names]
            line += (
                f"  95% interval coverage {np.mean(cover):6.1%}  median width "
                f"{statistics.median(width):8.0f}"
            )
        rows.append(line)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--debtors", type=int, default=200_000)
    ap.add_argument("--districts", type=int, default=40)
    ap.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--histogram-share", type=float, default=0.5)
    args = ap.parse_args(argv)
    points = synthetic_debtors(args.debtors, seed=1).drop_duplicates("debtor_id")
    zones = districts(args.districts)
    amounts = district_amounts(points, zones)
    counts = pd.Series({n: len(v) for n, v in amounts.items()})
    true = pd.Series({n: true_median(v) for n, v in amounts.items()})
    size = pd.qcut(counts.rank(method="first"), 3, labels=["small", "medium", "large"])
    size = pd.Series(np.asarray(size), index=counts.index)
    print(
        f"{len(points):,} debtors (one record each), {len(zones)} districts; debtors per "
        f"district: min {counts.min()}, median {counts.median():.0f}, max {counts.max()}; "
        f"true medians {true.min():.0f}–{true.max():.0f} yuan"
    )
    share = args.histogram_share
    for eps in args.epsilons:
        methods = {
            f"dpmap zones (ε = {eps:g}: {share * eps:g} on the histogram)": (
                lambda e=eps: run_dpmap(points, zones, e, share)
            ),
            f"OpenDP ε_m = {share * eps:g}": lambda e=share * eps: run_opendp(amounts, e),
            f"OpenDP ε_m = {eps:g}": lambda e=eps: run_opendp(amounts, e),
        }
        for name, run in methods.items():
            start = time.perf_counter()
            runs = [run() for _ in range(args.runs)]
            seconds = (time.perf_counter() - start) / args.runs
            print(f"\nε = {eps:g}, {name} ({seconds:.2f} s per release):")
            for line in summarise(runs, true, size):
                print("  " + line)


if __name__ == "__main__":
    main()
