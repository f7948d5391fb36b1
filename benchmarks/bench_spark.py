#!/usr/bin/env python
"""Benchmark: the Spark engine on ``local[2]``, stage by stage, against the local engine.

Run from the repository root::

    .venv/bin/python benchmarks/bench_spark.py                    # N = 1e6, 1e7
    .venv/bin/python benchmarks/bench_spark.py --sizes 1e6 1e7 1e8 --max-minutes 40
    .venv/bin/python benchmarks/bench_spark.py --quick            # N = 2e5, 1e6

A measurement script, not a test: it asserts nothing about timings. For each N it
writes N synthetic debt records as a Parquet dataset on disk, in chunks of 2.5 M rows
(so inputs larger than memory can be made), inside a public region (a 6.3° x 6.6° box
around Hebei, ~109k H3 cells at resolution 7; ~2 % of the points fall outside it):
string debtor ids with homes clustered around 300 centres, ~1.25 records per debtor
(a few with dozens), log-normal amounts, four creditor types.

The Spark engine is lazy, so each stage is timed as its own job that runs the pipeline
up to that stage and discards the result (``df.write.format("noop")``); a stage's cost
is the difference to the previous job:

``read``       scan the Parquet files and project the columns
``bin``        + the Arrow UDF: clean rows, H3 binning, region filter, clamp, priorities
``bound``      + the shuffle by person and the two window functions
``aggregate``  + group by (cell, category): count, sum
``one job``    the real thing: ``engines.spark.bound_and_aggregate`` (aggregate, then
               ``toArrow()`` of the per-cell table and the driver-side checks)

Both the cumulative times and their differences are printed (``aggregate + collect`` is
the one job minus the job up to ``bound``).

Above ``--stages-up-to`` (default 2e7) only ``read`` and the one job are timed. The local
(polars) engine's ``bound_and_aggregate`` on the same files is the baseline up to 2e7
(``--no-local`` skips it). N ≥ 5e7 is attempted only when the disk has room and the
previous N's timing predicts it fits in ``--max-minutes``; otherwise it is skipped with a
message.
``--domain-experiment`` also compares ways to filter by a large public cell set (≈0.76 M
cells at resolution 8): binary search in the UDF (what the engine does) versus a broadcast
semi join of the cell table.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

RESOLUTION = 7
BOX = (113.5, 36.0, 119.8, 42.6)  # lon/lat box around Hebei
CHUNK = 2_500_000
CREDITORS = ("bank", "utility", "telecom", "payday")
PHI1, PHI2 = 0.6180339887498949, 0.7548776662466927


# ---------------------------------------------------------------------------------------
# data


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def make_chunk(start: int, n: int, n_debtors: int, seed: int) -> pl.DataFrame:
    """Rows ``start .. start+n``: debtors' homes are a pure function of the debtor id."""
    rng = np.random.default_rng([seed, start])
    x0, y0, x1, y1 = BOX
    # 80 % of rows are the debtor's first record, the rest repeat records (Zipf-ish heavy tail)
    first = rng.random(n) < 0.8
    debtor = np.where(
        first,
        rng.integers(0, n_debtors, n),
        np.minimum(rng.zipf(1.6, n) - 1, n_debtors - 1) * 7919 % n_debtors,
    )
    d = debtor.astype(np.float64)
    centre = (_frac(d * PHI1) * 300).astype(np.int64)
    c_rng = np.random.default_rng(12345)
    cx = c_rng.uniform(x0 + 0.3, x1 - 0.3, 300)
    cy = c_rng.uniform(y0 + 0.3, y1 - 0.3, 300)
    sd = c_rng.uniform(0.01, 0.15, 300)
    # Box–Muller from the id: the same home for every record of a debtor
    u1, u2 = np.clip(_frac(d * PHI2 + 0.1234), 1e-12, 1.0), _frac(d * PHI1 * PHI2)
    r = np.sqrt(-2.0 * np.log(u1))
    lng = cx[centre] + sd[centre] * r * np.cos(2 * np.pi * u2)
    lat = cy[centre] + sd[centre] * r * np.sin(2 * np.pi * u2)
    stray = rng.random(n) < 0.02  # anywhere, partly outside the region
    lng[stray] = rng.uniform(x0 - 1, x1 + 1, int(stray.sum()))
    lat[stray] = rng.uniform(y0 - 1, y1 + 1, int(stray.sum()))
    ids = "D" + pl.Series("d", debtor).cast(pl.String).str.zfill(9)
    return pl.DataFrame(
        {
            "debtor_id": ids,
            "lat": lat,
            "lng": lng,
            "amount": np.round(rng.lognormal(np.log(20_000.0), 1.2, n), 2),
            "creditor": pl.Series(np.array(CREDITORS)[rng.integers(0, 4, n)]),
        }
    )


def write_dataset(folder: Path, n: int, seed: int = 0) -> float:
    """Write ``n`` rows as ``part-*.parquet`` in ``folder``; return the seconds it took."""
    if (folder / "_DONE").exists():
        return 0.0
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t = time.perf_counter()
    n_debtors = max(1, int(n / 1.25))
    for i, start in enumerate(range(0, n, CHUNK)):
        make_chunk(start, min(CHUNK, n - start), n_debtors, seed).write_parquet(
            folder / f"part-{i:05d}.parquet", row_group_size=500_000
        )
    (folder / "_DONE").write_text(str(n))
    return time.perf_counter() - t


def dataset_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.parquet"))


# ---------------------------------------------------------------------------------------
# timing


def session(memory: str, partitions: int) -> Any:
    from dpmap.engines import spark as engine

    conf = dict(engine.SESSION_CONFIG)
    conf["spark.driver.memory"] = memory
    conf["spark.sql.shuffle.partitions"] = str(partitions)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def run_noop(df: Any) -> float:
    t = time.perf_counter()
    df.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - t


#: the release benchmarked (also by bench_streaming.py): person-level count and sum per
#: cell and creditor type, two cells per person, two records per cell
RELEASE_PARAMS: dict[str, Any] = dict(
    resolution=RESOLUTION,
    epsilon=1.0,
    person="debtor_id",
    value="amount",
    bounds=(0, 100_000),
    max_cells=2,
    max_records_per_cell=2,
    category="creditor",
    categories=CREDITORS[:3],
)


def spec_for() -> Any:
    from dpmap import ReleaseSpec

    return ReleaseSpec(**RELEASE_PARAMS, selection="hash", seed=1)


def domain_for(resolution: int) -> np.ndarray:
    import shapely

    from dpmap.grid import region_to_cells, to_region

    return region_to_cells(to_region(shapely.box(*BOX)), resolution)


def bench_spark(
    spark: Any, folder: Path, domain: np.ndarray, stages: bool = True
) -> dict[str, float]:
    """Seconds of each cumulative job (up to a stage) and of the one real job.

    Without ``stages`` only ``read`` and the one job are run (for very large N).
    """
    from dpmap.engines import spark as engine

    spec = spec_for()
    sdf = spark.read.parquet(str(folder))
    plan = engine._plan(sdf, spec, domain)
    out = {"read": run_noop(plan.projected)}
    if stages:
        out["bin"] = run_noop(plan.prepared)
        out["bound"] = run_noop(plan.bounded)
        out["aggregate"] = run_noop(plan.aggregated)
    t = time.perf_counter()
    agg = engine.bound_and_aggregate(str(folder), spec, domain)
    out["one job"] = time.perf_counter() - t
    out["_keys"] = float(len(agg.cells))
    return out


def increments(r: dict[str, float]) -> dict[str, float]:
    """Per-stage cost: each cumulative job minus the previous one (aggregate and collect
    together: the one job minus the job up to bounding)."""
    if "bin" not in r:
        return {"read": r["read"]}
    return {
        "read": r["read"],
        "bin": r["bin"] - r["read"],
        "bound": r["bound"] - r["bin"],
        "aggregate + collect": r["one job"] - r["bound"],
    }


def bench_local(folder: Path, domain: np.ndarray) -> float:
    from dpmap.engines import local

    spec = spec_for()
    gc.collect()
    t = time.perf_counter()
    local.bound_and_aggregate(pl.scan_parquet(folder / "*.parquet"), spec, domain)
    return time.perf_counter() - t


def domain_experiment(spark: Any, folder: Path) -> None:
    """Region filter with ~0.76 M public cells: binary search in the UDF vs broadcast join."""
    from pyspark.sql import functions as F

    from dpmap.engines import frames
    from dpmap.engines import spark as engine

    t = time.perf_counter()
    big = domain_for(8)
    print(
        f"\nregion filter, {len(big):,} public cells (res 8; polyfill {time.perf_counter() - t:.1f} s)"
    )
    spec = spec_for()
    import dataclasses

    spec = dataclasses.replace(spec, resolution=8)
    sdf = spark.read.parquet(str(folder))
    search = run_noop(engine._plan(sdf, spec, big).prepared)
    cells = spark.createDataFrame(pl.DataFrame({frames.CELL: big}).to_arrow())
    joined = engine._plan(sdf, spec, None).prepared.join(
        F.broadcast(cells), on=frames.CELL, how="left_semi"
    )
    join = run_noop(joined)
    none = run_noop(engine._plan(sdf, spec, None).prepared)
    print(f"  {'no region filter (UDF only)':<40}{none:8.2f} s")
    print(f"  {'binary search in the UDF (engine)':<40}{search:8.2f} s")
    print(f"  {'broadcast semi join':<40}{join:8.2f} s")


# ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="*", type=float, default=[1e6, 1e7])
    ap.add_argument("--quick", action="store_true", help="N = 2e5, 1e6")
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "dpmap-bench-spark"))
    ap.add_argument("--memory", default="4g", help="spark.driver.memory (local mode)")
    ap.add_argument("--max-minutes", type=float, default=30.0)
    ap.add_argument(
        "--stages-up-to",
        type=float,
        default=2e7,
        help="time each stage up to this N; above it only read + the one job",
    )
    ap.add_argument("--no-local", action="store_true", help="skip the local-engine baseline")
    ap.add_argument("--domain-experiment", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the generated Parquet files")
    args = ap.parse_args()
    sizes = [2e5, 1e6] if args.quick else args.sizes
    sizes = sorted(int(s) for s in sizes)
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)

    import pyspark

    print(f"dpmap Spark engine benchmark — pyspark {pyspark.__version__}, polars {pl.__version__}, "
          f"{os.cpu_count()} cores, local[2], driver memory {args.memory}")  # fmt: skip
    t = time.perf_counter()
    domain = domain_for(RESOLUTION)
    print(
        f"public cells: {len(domain):,} at resolution {RESOLUTION} ({time.perf_counter() - t:.1f} s)"
    )
    t = time.perf_counter()
    spark = session(args.memory, 8)
    print(f"Spark session start: {time.perf_counter() - t:.1f} s")
    # warm up (JVM, Python workers, imports) on a tiny dataset
    warm = root / "warmup"
    write_dataset(warm, 20_000)
    bench_spark(spark, warm, domain)

    rows: list[tuple[int, dict[str, float], float | None]] = []
    per_row: float | None = None
    for n in sizes:
        folder = root / f"n{n}"
        need = int(n * 40 * 1.5)  # ~40 B/row in Parquet, with margin
        free = shutil.disk_usage(root).free
        if need > free:
            print(
                f"\nN = {n:,}: skipped — needs ~{need / 1e9:.1f} GB of disk, {free / 1e9:.1f} GB free"
            )
            continue
        staged = n <= args.stages_up_to
        if per_row is not None and n >= 5e7:
            # generation + read + the one job (+ the four cumulative jobs when staged)
            predicted = per_row * n * (4.0 if staged else 1.5) / 60
            if predicted > args.max_minutes:
                print(
                    f"\nN = {n:,}: skipped — predicted {predicted:.0f} min > --max-minutes {args.max_minutes:g}"
                )
                continue
        spark.conf.set("spark.sql.shuffle.partitions", str(max(8, n // 1_000_000)))
        gen = write_dataset(folder, n)
        size = dataset_bytes(folder)
        print(
            f"\nN = {n:,}: Parquet {size / 1e6:,.0f} MB"
            + (f" (written in {gen:.1f} s)" if gen else "")
        )
        res = bench_spark(spark, folder, domain, stages=staged)
        loc = None if args.no_local or n > 2e7 else bench_local(folder, domain)
        rows.append((n, res, loc))
        per_row = res["one job"] / n
        if args.domain_experiment and n == sizes[0]:
            domain_experiment(spark, folder)
        if not args.keep and n >= 5e7:
            shutil.rmtree(folder, ignore_errors=True)

    def table(title: str, data: list[dict[str, float]], keys: list[str]) -> None:
        print(title)
        head = f"{'':<22}" + "".join(f"{f'N={n:,}':>16}" for n, _, _ in rows)
        print(head + (f"{'growth (last/first)':>22}" if len(rows) > 1 else ""))
        for k in keys:
            line = f"{k:<22}" + "".join(f"{d[k]:>16.2f}" if k in d else f"{'-':>16}" for d in data)
            have = [d[k] for d in data if k in d]
            if len(have) > 1 and have[0] > 0:
                line += f"{have[-1] / have[0]:>21.1f}x"
            print(line)

    results = [r for _, r, _ in rows]
    table(
        "\nSpark local[2]: seconds of each job, run up to and including the stage (noop sink)",
        [{f"up to {k}" if k != "one job" else k: v for k, v in r.items()} for r in results],
        ["up to read", "up to bin", "up to bound", "up to aggregate", "one job"],
    )
    table(
        "\nper stage (difference of consecutive jobs; noisy on a shared machine)",
        [increments(r) for r in results],
        ["read", "bin", "bound", "aggregate + collect"],
    )
    print(f"{'rows/s (one job)':<22}" + "".join(f"{n / r['one job']:>16,.0f}" for n, r, _ in rows))
    print(f"{'occupied keys':<22}" + "".join(f"{int(r['_keys']):>16,}" for _, r, _ in rows))
    if any(loc is not None for _, _, loc in rows):
        print(f"{'local engine (s)':<22}" + "".join(
            f"{loc:>16.2f}" if loc is not None else f"{'-':>16}" for _, _, loc in rows))  # fmt: skip
        print(f"{'spark / local':<22}" + "".join(
            f"{r['one job'] / loc:>15.2f}x" if loc else f"{'-':>16}" for _, r, loc in rows))  # fmt: skip
    if len(rows) > 1:
        (n0, r0, _), (n1, r1, _) = rows[0], rows[-1]
        print(f"\nN grew {n1 / n0:.0f}x; the one job grew {r1['one job'] / r0['one job']:.1f}x")
    spark.stop()
    if not args.keep:
        shutil.rmtree(warm, ignore_errors=True)


if __name__ == "__main__":
    main()
