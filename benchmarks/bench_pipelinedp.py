#!/usr/bin/env python
"""Benchmark: dpmap.release against PipelineDP's local engine on the same job.

Run from the repository root (PipelineDP is not a dpmap dependency; ``make bench``
installs it with the ``bench`` extra, or ``pip install pipeline-dp``)::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_pipelinedp.py            # N = 1e6
    PYTHONPATH=src .venv/bin/python benchmarks/bench_pipelinedp.py --sizes 1e5 1e6 --rounds 3

A measurement script, not a test: it asserts nothing about timings. The job (issue 5):
a user-level private count and sum per H3 cell (resolution 7) of N synthetic debt records
(the generator of ``bench_release.py``: points in the approximate Hebei outline, debtor
ids, ~10% repeat records, log-normal amounts), one record per person (L0 = L∞ = 1),
amounts clamped to [0, 100,000], ε = 1 with Laplace noise, over the public set of cells
of the region (no partition selection), no suppression:

``dpmap``
    ``dpmap.release(df, region=..., ...)``: validation, binning, bounding, noise (OpenDP),
    margins, the output table with polygons.
``pipelinedp``
    binning with ``polars_h3`` (timed separately, as ``pipelinedp bin``; PipelineDP has no
    spatial binning), then ``pipeline_dp.DPEngine(...).aggregate`` with ``LocalBackend``,
    ``Metrics.COUNT`` and ``Metrics.SUM``, ``max_partitions_contributed = 1``,
    ``max_contributions_per_partition = 1``, the same bounds and ε, the same public cells,
    and materialising its output (the engine is lazy).

Rounds alternate the two (the machine is shared and noisy); the best and median rounds
are printed with the ratio PipelineDP / dpmap (the issue's target: ≥ 10).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import polars_h3 as plh3

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_release import BOUNDS, EPSILON, RESOLUTION, _region, make_points


def run_dpmap(df: pl.DataFrame, region: Any) -> int:
    import dpmap

    rel = dpmap.release(
        df, region=region, resolution=RESOLUTION, epsilon=EPSILON, lat="lat", lng="lng",
        person="debtor_id", value="amount", bounds=BOUNDS, max_cells=1,
        max_records_per_cell=1, suppress_below=False,
    )  # fmt: skip
    return len(rel.cells)


def bin_points(df: pl.DataFrame) -> list[tuple[str, int, float]]:
    cells = df.select(
        pl.col("debtor_id"),
        plh3.latlng_to_cell("lat", "lng", RESOLUTION, return_dtype=pl.UInt64).alias("cell"),
        pl.col("amount"),
    )
    return list(cells.iter_rows())


def run_pipelinedp(rows: list[tuple[str, int, float]], public: list[int]) -> int:
    import pipeline_dp

    accountant = pipeline_dp.NaiveBudgetAccountant(total_epsilon=EPSILON, total_delta=0)
    engine = pipeline_dp.DPEngine(accountant, pipeline_dp.LocalBackend())
    params = pipeline_dp.AggregateParams(
        metrics=[pipeline_dp.Metrics.COUNT, pipeline_dp.Metrics.SUM],
        noise_kind=pipeline_dp.NoiseKind.LAPLACE,
        max_partitions_contributed=1,
        max_contributions_per_partition=1,
        min_value=float(BOUNDS[0]),
        max_value=float(BOUNDS[1]),
    )
    extractors = pipeline_dp.DataExtractors(
        privacy_id_extractor=lambda r: r[0],
        partition_extractor=lambda r: r[1],
        value_extractor=lambda r: r[2],
    )
    result = engine.aggregate(rows, params, extractors, public_partitions=public)
    accountant.compute_budgets()
    return len(list(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", nargs="*", type=float, default=[1e6])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    try:
        import pipeline_dp  # noqa: F401
    except ImportError:
        raise SystemExit(
            "PipelineDP is not installed: pip install pipeline-dp (or make bench)"
        ) from None
    from dpmap.grid import region_to_cells, to_region

    region = _region()
    public = [int(c) for c in region_to_cells(to_region(region), RESOLUTION).astype(np.uint64)]
    print(f"{len(public):,} public cells at resolution {RESOLUTION}; load {os.getloadavg()[0]:.2f}")
    for n in (int(s) for s in args.sizes):
        df = make_points(n)
        times: dict[str, list[float]] = {"dpmap": [], "pipelinedp bin": [], "pipelinedp": []}
        for _ in range(args.rounds):
            t = time.perf_counter()
            cells_dpmap = run_dpmap(df, region)
            times["dpmap"].append(time.perf_counter() - t)
            t = time.perf_counter()
            rows = bin_points(df)
            times["pipelinedp bin"].append(time.perf_counter() - t)
            t = time.perf_counter()
            cells_pdp = run_pipelinedp(rows, public)
            times["pipelinedp"].append(time.perf_counter() - t)
            del rows
        best = {k: min(v) for k, v in times.items()}
        print(f"\n=== N = {n:,} ({cells_dpmap:,} cells from dpmap, {cells_pdp:,} from PipelineDP)")
        for k, v in times.items():
            print(f"  {k:<16} best {min(v):7.2f} s   median {statistics.median(v):7.2f} s")
        print(
            f"  ratio PipelineDP / dpmap: {best['pipelinedp'] / best['dpmap']:.1f}× "
            f"(with its binning: {(best['pipelinedp'] + best['pipelinedp bin']) / best['dpmap']:.1f}×)"
        )


if __name__ == "__main__":
    main()
