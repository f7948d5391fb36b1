#!/usr/bin/env python
"""Benchmark: dpmap's static map (``plot_release`` to PNG) against a bare GeoDataFrame plot.

Run from the repository root::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_static_map.py               # r6 and r7
    PYTHONPATH=src .venv/bin/python benchmarks/bench_static_map.py --runs 5 --profile

A measurement script, not a test: it prints a table and asserts nothing. Data: the demo's
release (200,000 synthetic debtors around real GeoNames places of Hebei, ε = 1, default
suppression) at H3 resolution 6 (the demo map, ~6.9 k cells) and 7 (~46 k cells). For each
size it times, ``--runs`` times each, alternating, in this one process:

``baseline``
    the bare two-panel GeoDataFrame plot of the same cells: one figure of the same size as
    dpmap's, two axes, ``cells.plot(column="count")`` and ``cells.plot(column="count_moe")``
    (GeoPandas' defaults: rows without a value are not drawn, no legend, no caption), saved
    to PNG at the same dpi (150).
``dpmap``
    ``plot_release(cells, manifest, path)``: the value panel, the uncertainty panel, hatched
    suppressed cells, colour bars, legend and caption, saved to PNG (``bbox_inches="tight"``).

Both start from the same in-memory GeoDataFrame (EPSG:4326 hexagons, as ``rel.cells``), so
building the release and reading files are not timed. The table gives the median time of
each and their ratio; the machine is shared, so the load average is printed with it, and the
ratio (both measured in the same process, interleaved) is the figure to compare.
``--profile`` prints where one more ``plot_release`` call spends its time (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import geopandas as gpd

import dpmap
from dpmap.demo import hebei_region, synthetic_debtors
from dpmap.maps.static import plot_release

DPI = 150


def demo_release(resolution: int, debtors: int) -> Any:
    """The demo's release (as ``dpmap demo``) at `resolution`."""
    return dpmap.release(
        synthetic_debtors(debtors, seed=0), region=hebei_region(), resolution=resolution,
        epsilon=1.0, person="debtor_id", value="amount", bounds=(0, 50_000),
        title="Synthetic debtors in Hebei (dpmap demo)",
    )  # fmt: skip


def baseline(cells: gpd.GeoDataFrame, size: tuple[float, float], path: Path) -> None:
    """The bare two-panel GeoDataFrame plot of the same cells, saved as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    cells.plot(column="count", ax=left)
    cells.plot(column="count_moe", ax=right)
    fig.savefig(path, format="png", dpi=DPI)


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(resolution: int, debtors: int, runs: int, profile: bool, folder: Path) -> str:
    rel = demo_release(resolution, debtors)
    cells, manifest = rel.cells, rel.manifest
    png = folder / f"dpmap_r{resolution}.png"
    size = tuple(plot_release(cells, manifest, dpi=DPI).get_size_inches())
    base_times, dpmap_times = [], []
    for _ in range(runs):
        base_times.append(timed(lambda: baseline(cells, size, folder / "baseline.png")))
        dpmap_times.append(timed(lambda: plot_release(cells, manifest, png, dpi=DPI)))
    if profile:
        prof = cProfile.Profile()
        prof.runcall(plot_release, cells, manifest, png, dpi=DPI)
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
        print(f"--- where plot_release spends its time, resolution {resolution}\n{out.getvalue()}")
    base, mine = statistics.median(base_times), statistics.median(dpmap_times)
    n_supp = int(cells["suppressed"].sum())
    return (
        f"r{resolution}  {len(cells):>7,} cells ({n_supp:,} suppressed)  baseline "
        f"{base:6.2f} s  dpmap {mine:6.2f} s  ratio {mine / base:5.2f}  "
        f"(load {os.getloadavg()[0]:.1f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--resolutions", nargs="+", type=int, default=[6, 7])
    ap.add_argument("--debtors", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile one more plot_release")
    args = ap.parse_args()
    print(
        f"{os.cpu_count()} cores; load average {os.getloadavg()}; dpi {DPI}; median of {args.runs}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for resolution in args.resolutions:
            print(measure(resolution, args.debtors, args.runs, args.profile, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
