#!/usr/bin/env python
"""Benchmark: a release from one large Parquet file in bounded memory (streaming engine).

Run from the repository root::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_streaming.py             # N = 1e7, 1e8
    PYTHONPATH=src .venv/bin/python benchmarks/bench_streaming.py --quick     # N = 1e6, 1e7
    PYTHONPATH=src .venv/bin/python benchmarks/bench_streaming.py --sizes 3e7 --keep

A measurement script, not a test: it asserts nothing about timings or memory. For each N
it writes ONE Parquet file of N synthetic debt records (the generator of
``bench_spark.py``: string debtor ids, ~1.25 records per debtor with a heavy tail, homes
clustered around 300 centres in a 6.3° x 6.6° box around Hebei, log-normal amounts,
four creditor types), chunk by chunk so that files larger than memory can be made, in
``--data`` (default: a folder under the system's temporary folder; ``--keep`` leaves the
files there for the next run). Then each step runs in a fresh subprocess, which reports its
wall time; the parent reads the child's CPU time and peak resident memory from the kernel
(``os.wait4``):

``baseline``
    a non-private map of the same file with polars' streaming engine:
    ``scan_parquet → latlng_to_cell (resolution 7) → group_by(cell).len()``.
``streaming``
    ``dpmap.release(path, engine="streaming", ...)`` over the box (~109k public cells at
    resolution 7; person, value, bounds, L0 = L∞ = 2, three public creditor categories):
    the whole release, noise included.
``local``
    the same release with the in-memory local engine (``engine="local"``), only up to
    ``--local-up-to`` rows (default 2e7: beyond that it needs more memory than the
    machine should give it).

The ratio is each step's wall time over the baseline's, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_spark import BOX, CHUNK, RELEASE_PARAMS, RESOLUTION, make_chunk

STEPS = ("baseline", "streaming", "local")


def write_file(path: Path, n: int, seed: int = 0) -> float:
    """Write ``n`` rows into one Parquet file, chunk by chunk; return the seconds it took."""
    import pyarrow.parquet as pq

    done = path.with_suffix(".done")
    if done.exists() and path.exists():
        return 0.0
    t = time.perf_counter()
    n_debtors = max(1, int(n / 1.25))
    tmp = path.with_suffix(".partial")
    writer = None
    try:
        for start in range(0, n, CHUNK):
            table = make_chunk(start, min(CHUNK, n - start), n_debtors, seed).to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table, row_group_size=500_000)
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(path)
    done.write_text(str(n))
    return time.perf_counter() - t


def release_kwargs() -> dict[str, Any]:
    import shapely

    return dict(region=shapely.box(*BOX), **RELEASE_PARAMS)


def child(step: str, path: str) -> None:
    """Run one step and print its wall time as JSON (the parent measures CPU and memory)."""
    import polars as pl

    t = time.perf_counter()
    if step == "baseline":
        import polars_h3 as plh3

        cells = (
            pl.scan_parquet(path)
            .select(
                plh3.latlng_to_cell("lat", "lng", RESOLUTION, return_dtype=pl.UInt64).alias("c")
            )
            .group_by("c")
            .len()
            .collect(engine="streaming")
        )
        extra: dict[str, Any] = {"cells": cells.height}
    else:
        import dpmap

        rel = dpmap.release(path, engine=step, **release_kwargs())
        extra = {"cells": len(rel.cells)}
    print(json.dumps({"seconds": time.perf_counter() - t, **extra}))


def run_child(step: str, path: Path) -> dict[str, Any]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        os.dup2(w, 1)
        os.execv(
            sys.executable,
            [sys.executable, __file__, "--child", step, "--input", str(path)],
        )
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status, usage = os.wait4(pid, 0)
    if status != 0:
        raise SystemExit(f"step {step} failed (status {status}): {out[-2000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res["cpu"] = usage.ru_utime + usage.ru_stime
    res["peak_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", nargs="*", type=float)
    ap.add_argument("--quick", action="store_true", help="N = 1e6, 1e7")
    ap.add_argument("--local-up-to", type=float, default=2e7)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "dpmap-bench-stream")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.input)
        return
    sizes = [int(s) for s in (args.sizes or ([1e6, 1e7] if args.quick else [1e7, 1e8]))]
    args.data.mkdir(parents=True, exist_ok=True)
    results = []
    print(f"2 steps per N (+ local up to {args.local_up_to:.0e}); load {os.getloadavg()[0]:.2f}")
    for n in sizes:
        path = args.data / f"points-{n}.parquet"
        gen = write_file(path, n)
        size_mb = path.stat().st_size / 2**20
        print(f"\n=== N = {n:,}: {size_mb:,.0f} MB Parquet (written in {gen:.0f} s)", flush=True)
        steps = [s for s in STEPS if s != "local" or n <= args.local_up_to]
        row: dict[str, Any] = {"n": n, "file_mb": size_mb}
        for step in steps:
            res = run_child(step, path)
            row[step] = res
            ratio = res["seconds"] / row["baseline"]["seconds"]
            print(
                f"  {step:<10} {res['seconds']:8.1f} s wall {res['cpu']:8.1f} s cpu  "
                f"peak {res['peak_mb']:7,.0f} MB  ratio {ratio:5.2f}  ({res['cells']:,} cells)",
                flush=True,
            )
        results.append(row)
        if not args.keep:
            path.unlink()
            path.with_suffix(".done").unlink()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
