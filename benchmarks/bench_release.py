#!/usr/bin/env python
"""Benchmark: dpmap.release versus a plain (non-private) polars bin + group-by.

Run from the repository root::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_release.py               # N = 1e6, 1e7
    PYTHONPATH=src .venv/bin/python benchmarks/bench_release.py --quick       # N = 1e5, 1e6
    PYTHONPATH=src .venv/bin/python benchmarks/bench_release.py --sizes 2e6 --json out.json

This is a measurement script, not a test: it asserts nothing about timings. For each N
it generates N synthetic points inside :func:`dpmap.demo.hebei_region` (about 165,000 km²,
~46k H3 cells at resolution 7), clustered around a few hundred centres, with debtor ids
(~10% of rows are repeat records of a debtor) and log-normal amounts, and measures on
the SAME in-memory polars DataFrame:

``baseline``
    ``latlng_to_cell`` (polars_h3, resolution 7) + ``group_by(cell).len()``: what a
    non-private map of the same points costs.
``nonprivate``
    the same work as a person-level release without privacy, in one lazy polars query:
    bin, keep one record per person (the one with the smallest random 64-bit priority,
    drawn afresh each run; a sort by priority, then each person's first row), then
    ``group_by(cell)`` with the count and the sum of the amounts. The yardstick of the
    issue for the person-level release ("ratio np" below).
``release``
    the full ``dpmap.release`` (person + value + bounds, max_cells = 1,
    max_records_per_cell = 1).
``count``
    a count-only ``dpmap.release`` (person=None, no value).

Timings are taken in this process, alternating baseline/release/count in every round
(the machine may be shared and noisy, so the steps share its noise); the best and the
median of the rounds are reported, with the process CPU time of the best round. Peak
memory is measured separately in a fresh subprocess per step (the input is handed over
as a Parquet file): the child imports everything, warms the step up on a tiny slice,
loads the input, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), runs the
step once and reads ``VmHWM``. "peak" is the whole process (interpreter + libraries +
input + step); "step" is the peak minus the resident size just before the step.

A per-stage breakdown of the release per N is obtained by wrapping dpmap's internal
functions with wall/CPU timers (exclusive: a stage's time excludes the wrapped stages it
calls; minimum over the rounds) and, in one more subprocess, with each stage's peak RSS.
The engine's inline code (collect, bin, region filter, cleaning/clamping, bounding) is
broken down per source statement by a line tracer limited to the engine's functions.
Functions missing from the installed dpmap are skipped, so the script survives
refactorings. ``--profile FILE`` also writes a cProfile of one release at the largest N.

On a shared machine compare the CPU columns too: wall times inflate with the load, and
polars' binning uses both cores when they are free while other stages use one.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import polars_h3 as plh3

RESOLUTION = 7
EPSILON = 1.0
BOUNDS = (0, 100_000)
KM_PER_DEG = 111.32
STEPS = ("baseline", "nonprivate", "release", "count")
STEP_LABELS = {
    "baseline": "baseline: polars bin + group_by (not private)",
    "nonprivate": "non-private pipeline: bin, one record per person (random priority), group_by",
    "release": "dpmap.release (person, value, bounds; L0 = L∞ = 1)",
    "count": "dpmap.release count-only (person=None)",
}


# ---------------------------------------------------------------------------------------
# data


@functools.lru_cache(maxsize=1)
def _region() -> Any:
    import shapely

    from dpmap.demo import hebei_region

    geom = hebei_region()
    shapely.prepare(geom)
    return geom


def make_points(n: int, *, seed: int = 0, n_centres: int = 300) -> pl.DataFrame:
    """``n`` synthetic debt records inside the Hebei region (fast, numpy only).

    Homes: 90% scattered normally around ``n_centres`` random centres inside the region
    (log-normal weights, spread 0.7–10 km growing with the weight), 10% uniform; points
    falling outside the region are redrawn (rejection sampling with shapely.contains_xy).
    About n/1.1 debtors: every debtor has one record at home, the remaining ~9% of rows are
    further records of random debtors (at the same home). Rows are shuffled.
    """
    import shapely

    rng = np.random.default_rng(seed)
    region = _region()
    x0, y0, x1, y1 = region.bounds

    cx_parts, cy_parts, got = [], [], 0
    while got < n_centres:
        x, y = rng.uniform(x0, x1, 4 * n_centres), rng.uniform(y0, y1, 4 * n_centres)
        inside = shapely.contains_xy(region, x, y)
        cx_parts.append(x[inside])
        cy_parts.append(y[inside])
        got += int(inside.sum())
    cx, cy = np.concatenate(cx_parts)[:n_centres], np.concatenate(cy_parts)[:n_centres]
    weight = rng.lognormal(0.0, 1.0, n_centres)
    weight /= weight.sum()
    sd_km = np.clip(3.0 * np.sqrt(weight * n_centres), 0.7, 10.0)

    n_debtors = max(1, round(n / 1.1))
    lng, lat = np.empty(n_debtors), np.empty(n_debtors)
    centre = rng.choice(n_centres, n_debtors, p=weight)
    background = rng.random(n_debtors) < 0.10
    todo = np.arange(n_debtors)
    while todo.size:
        c = centre[todo]
        xs = cx[c] + rng.standard_normal(todo.size) * sd_km[c] / (
            KM_PER_DEG * np.cos(np.radians(cy[c]))
        )
        ys = cy[c] + rng.standard_normal(todo.size) * sd_km[c] / KM_PER_DEG
        bg = background[todo]
        xs[bg], ys[bg] = rng.uniform(x0, x1, int(bg.sum())), rng.uniform(y0, y1, int(bg.sum()))
        ok = shapely.contains_xy(region, xs, ys)
        lng[todo[ok]], lat[todo[ok]] = xs[ok], ys[ok]
        todo = todo[~ok]

    debtor = np.concatenate([np.arange(n_debtors), rng.integers(0, n_debtors, n - n_debtors)])
    debtor = debtor[rng.permutation(n)]
    amount = np.round(rng.lognormal(np.log(20_000.0), 1.2, n), 2)
    ids = "D" + pl.Series("d", debtor).cast(pl.String).str.zfill(8)
    return pl.DataFrame(
        {"debtor_id": ids, "lat": lat[debtor], "lng": lng[debtor], "amount": amount}
    )


# ---------------------------------------------------------------------------------------
# the measured steps


def release_kwargs(step: str) -> dict[str, Any]:
    kw: dict[str, Any] = dict(
        region=_region(), resolution=RESOLUTION, epsilon=EPSILON, lat="lat", lng="lng"
    )
    if step == "release":
        kw.update(
            person="debtor_id", value="amount", bounds=BOUNDS, max_cells=1, max_records_per_cell=1
        )
    return kw


def run_step(step: str, df: pl.DataFrame) -> int:
    """Run one measured step on ``df``; returns the number of output rows."""
    if step == "nonprivate":
        prio = pl.Series("prio", np.random.default_rng().integers(0, 2**63, df.height))
        out = (
            df.lazy()
            .with_columns(prio, plh3.latlng_to_cell("lat", "lng", RESOLUTION).alias("cell"))
            .sort("prio")
            .filter(pl.col("debtor_id").is_first_distinct())
            .group_by("cell")
            .agg(pl.len().alias("count"), pl.col("amount").sum())
            .collect()
        )
        return out.height
    if step == "baseline":
        out = (
            df.lazy()
            .select(plh3.latlng_to_cell("lat", "lng", RESOLUTION).alias("cell"))
            .group_by("cell")
            .agg(pl.len().alias("count"))
            .collect()
        )
        return out.height
    import dpmap

    return len(dpmap.release(df, **release_kwargs(step)).cells)


def _cpu() -> float:
    return time.process_time()  # user + system CPU of all the process's threads


def timed(f: Callable[[], Any]) -> tuple[float, float, Any]:
    gc.collect()
    c0, t0 = _cpu(), time.perf_counter()
    out = f()
    return time.perf_counter() - t0, _cpu() - c0, out


# ---------------------------------------------------------------------------------------
# peak memory (subprocess per step)


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # best effort


class _PeakSampler:
    """Fallback when the peak mark cannot be reset: sample VmRSS every 5 ms."""

    def __init__(self) -> None:
        import threading

        self.peak = _rss_mb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mb())

    def __enter__(self) -> _PeakSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_mb())


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def child_main(step: str, path: str, stage_memory: bool = False) -> None:
    """Entry point of a memory-measuring subprocess: prints one JSON line."""
    import geopandas  # noqa: F401  (imported lazily by the release; keep it out of the step)
    import opendp  # noqa: F401

    import dpmap  # noqa: F401

    df = pl.read_parquet(path)  # decoded into anonymous memory (not a file mapping)
    run_step(step, df.head(2_000))  # warm-up: lazy imports, one-time initialisation
    gc.collect()
    before = _rss_mb()
    if stage_memory:  # per-stage peaks of one release (the stage wrappers reset the mark)
        acc: dict[str, float] = {}
        mem: dict[str, float] = {}
        rel = _release_module()
        with stage_timers(acc, None, mem):
            rel.release(df, **release_kwargs(step))
        print(
            json.dumps(
                {
                    "step": step,
                    "rss_before_mb": before,
                    "stage_peak_mb": {k: v for k, v in mem.items()},
                    "stage_step_mb": {k: v - before for k, v in mem.items()},
                }
            )
        )
        return
    if _reset_peak():
        method = "VmHWM after clear_refs"
        wall, cpu, rows = timed(lambda: run_step(step, df))
        peak = _status_kb("VmHWM") / 1024  # type: ignore[operator]
    else:
        method = "VmRSS sampled every 5 ms"
        with _PeakSampler() as s:
            wall, cpu, rows = timed(lambda: run_step(step, df))
        peak = s.peak
    print(
        json.dumps(
            {
                "step": step,
                "rows_out": rows,
                "rss_before_mb": before,
                "peak_mb": peak,
                "step_mb": peak - before,
                "wall_s": wall,
                "cpu_s": cpu,
                "method": method,
            }
        )
    )


class BeforeWorker:
    """The release of another dpmap source tree (``--before SRC``, e.g. an export of the
    previous commit), run in one long-lived child process that reads the same input from a
    Parquet file; the parent alternates it with the other steps, so before and after share
    the machine's state. Its wall and CPU times are measured inside the child."""

    def __init__(self, src: str, path: Path) -> None:
        env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
        cmd = [sys.executable, os.path.abspath(__file__), "--before-worker", "--input", str(path)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline())  # after imports, loading and warm-up
        print(f"  before: dpmap {ready['version']} from {ready['file']}", flush=True)

    def run(self) -> tuple[float, float, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        out = json.loads(self.proc.stdout.readline())
        return out["wall_s"], out["cpu_s"], out["rows_out"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def before_worker_main(path: str) -> None:
    """Entry point of :class:`BeforeWorker`'s child: one release per ``run`` line on stdin."""
    import dpmap

    df = pl.read_parquet(path)
    run_step("release", df.head(2_000))
    print(json.dumps({"version": dpmap.__version__, "file": dpmap.__file__}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        wall, cpu, rows = timed(lambda: run_step("release", df))
        print(json.dumps({"wall_s": wall, "cpu_s": cpu, "rows_out": rows}), flush=True)


def measure_memory(step: str, path: Path, stage_memory: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", step, "--input", str(path)]
    if stage_memory:
        cmd.append("--stage-memory")
    res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if res.returncode != 0:
        return {
            "step": step,
            "error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed",
        }
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# per-stage breakdown


def _stage_targets() -> list[tuple[Any, str, str]]:
    """(owner, attribute, label) of the internal functions to time; missing ones are skipped."""
    from dpmap import grid
    from dpmap._privacy.noise import NoisePlan
    from dpmap.aggregates import BoundedAggregates
    from dpmap.engines import bounding, local

    rel = _release_module()
    common = _engine_common()
    return [
        (rel, "release", "release(): spec, checks, glue (rest)"),
        (rel, "_resolve_region", "region: to_region (validate, fingerprint)"),
        (grid, "region_to_cells", "region: region_to_cells (H3 polyfill)"),
        (rel, "plan_noise", "noise: plan_noise (OpenDP calibration)"),
        (
            local,
            "bound_and_aggregate",
            "engine: bound_and_aggregate (rest: collect input, n_unique, glue)",
        ),
        (local, "read_points", "engine: read_points"),
        (common, "project", "engine: project (schema checks)"),
        (common, "prepare_rows", "engine: prepare_rows (rest: validate, bin, clean, clamp)"),
        (common, "inside_domain", "engine: inside_domain (region filter)"),
        (common, "record_and_check", "engine: record_and_check (diagnostics, refusals)"),
        (bounding, "bound", "engine: bound (select records, re-check)"),
        (bounding, "_assert_bounded", "engine: _assert_bounded (re-check bounds)"),
        (bounding, "group", "engine: group (group_by cell)"),
        (common, "finish", "engine: finish (sort, saturate, to numpy)"),
        (BoundedAggregates, "densify", "noise: densify onto the domain"),
        (NoisePlan, "run_dense", "noise: run_dense (OpenDP sampling)"),
        (rel, "_level_vectors", "noise: _level_vectors (hierarchy)"),
        (rel, "_consistent", "post: _consistent (hierarchy)"),
        (rel, "_flat_estimates", "post: _flat_estimates"),
        (rel, "publish", "post: publish (suppression, means)"),
        (rel, "_cell_table", "table: _cell_table (rest: DataFrames)"),
        (grid, "cells_to_hex", "table: cells_to_hex"),
        (grid, "cells_to_polygons", "table: cells_to_polygons"),
        (rel, "_normalise_dtypes", "table: _normalise_dtypes"),
        (rel, "_estimates_frame", "table: _estimates_frame"),
        (rel, "_manifest", "manifest: _manifest"),
        (rel.Release, "__init__", "manifest: Release() (JSON deep copy)"),
    ]


@contextlib.contextmanager
def stage_timers(
    acc: dict[str, float],
    cpu_acc: dict[str, float] | None = None,
    mem_acc: dict[str, float] | None = None,
) -> Iterator[None]:
    """Wrap the internal functions with exclusive wall-clock and CPU timers, restored on exit.

    ``mem_acc``: also record each stage's peak RSS in MB (inclusive of the stages it calls),
    from the kernel's peak mark, which is reset on entering every stage (Linux only).
    """
    stack: list[list[float]] = []  # per active call: [wall, cpu in wrapped children, peak MB seen]
    patched = []
    cpu_acc = {} if cpu_acc is None else cpu_acc

    def hwm() -> float:
        return (_status_kb("VmHWM") or 0) / 1024

    def wrap(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*a: Any, **k: Any) -> Any:
            if mem_acc is not None:
                if stack:
                    stack[-1][2] = max(stack[-1][2], hwm())
                _reset_peak()
            stack.append([0.0, 0.0, 0.0])
            t0, c0 = time.perf_counter(), _cpu()
            try:
                return fn(*a, **k)
            finally:
                total, ctotal = time.perf_counter() - t0, _cpu() - c0
                children, cchildren, peak = stack.pop()
                acc[label] = acc.get(label, 0.0) + total - children
                cpu_acc[label] = cpu_acc.get(label, 0.0) + ctotal - cchildren
                if mem_acc is not None:
                    peak = max(peak, hwm())
                    mem_acc[label] = max(mem_acc.get(label, 0.0), peak)
                if stack:
                    stack[-1][0] += total
                    stack[-1][1] += ctotal
                    stack[-1][2] = max(stack[-1][2], peak)

        return inner

    for owner, name, label in _stage_targets():
        if name in vars(owner):
            orig = vars(owner)[name]
            patched.append((owner, name, orig))
            setattr(owner, name, wrap(orig, label))
    try:
        yield
    finally:
        for owner, name, orig in reversed(patched):
            setattr(owner, name, orig)


def _engine_common() -> Any:
    """dpmap.engines.frames if this dpmap has it (helpers shared by the engines), else a stub."""
    import importlib
    import types

    try:
        return importlib.import_module("dpmap.engines.frames")
    except ImportError:
        return types.SimpleNamespace()


def _release_module() -> Any:
    import importlib

    return importlib.import_module(
        "dpmap.releases.pipeline"
    )  # `from dpmap import release` is the function


def stage_breakdown(df: pl.DataFrame, runs: int) -> dict[str, Any]:
    """Instrumented releases; each stage's minimum over ``runs`` runs (noise-robust)."""
    rel = _release_module()
    per_run: list[dict[str, float]] = []
    per_run_cpu: list[dict[str, float]] = []
    totals = []
    for _ in range(runs):
        acc: dict[str, float] = {}
        cpu_acc: dict[str, float] = {}
        with stage_timers(acc, cpu_acc):
            # call the module's function (dpmap.release is the unwrapped package-level alias)
            wall, _, _ = timed(lambda: rel.release(df, **release_kwargs("release")))
        per_run.append(acc)
        per_run_cpu.append(cpu_acc)
        totals.append(wall)
    labels = {k for acc in per_run for k in acc}
    best = {k: min(acc.get(k, 0.0) for acc in per_run) for k in labels}
    best_cpu = {k: min(acc.get(k, 0.0) for acc in per_run_cpu) for k in labels}
    stages = dict(sorted(best.items(), key=lambda kv: -kv[1]))
    return {
        "runs": runs,
        "total_best_s": min(totals),
        "total_all_s": totals,
        "sum_of_stage_minima_s": sum(best.values()),
        "stages_s": stages,
        "stages_cpu_s": {k: best_cpu[k] for k in stages},
        "engine_lines": engine_lines(df, runs),
    }


_SOURCE_MAPS: dict[Any, dict[tuple[str, int], tuple[int, str]]] = {}


class LineTimer:
    """Wall time per source statement of a few functions (sys.settrace on their frames only).

    The engine does its work in polars/numpy calls made from a handful of Python lines, so
    a statement's time is the time of the calls it makes (inclusive of any function it
    calls). Other frames are not traced, which keeps the overhead to a few microseconds
    per traced line.
    """

    def __init__(self, funcs: list[Callable[..., Any]]) -> None:
        import ast
        import inspect
        import textwrap

        self.codes: dict[Any, str] = {}
        self.stmt_of: dict[tuple[str, int], tuple[int, str]] = {}
        for f in funcs:
            f = inspect.unwrap(f)
            code = f.__code__
            self.codes[code] = f.__name__
            if code in _SOURCE_MAPS:  # built once per process: the file may change on disk later
                self.stmt_of.update(_SOURCE_MAPS[code])
                continue
            _SOURCE_MAPS[code] = {}
            try:
                lines, first = inspect.getsourcelines(f)
            except (OSError, TypeError):
                continue
            if first != code.co_firstlineno:  # the file changed since the module was imported
                continue
            tree = ast.parse(textwrap.dedent("".join(lines)))
            compound = (
                ast.If,
                ast.For,
                ast.While,
                ast.With,
                ast.Try,
                ast.FunctionDef,
                ast.AsyncFunctionDef,
            )
            for node in ast.walk(tree):
                if isinstance(node, ast.stmt):
                    lo = node.lineno + first - 1
                    if isinstance(node, compound) and getattr(node, "body", None):
                        last = node.body[0].lineno - 1  # the header of a compound statement
                    else:
                        last = node.end_lineno or node.lineno
                    hi = last + first - 1
                    text = " ".join(lines[node.lineno - 1].split())
                    for ln in range(lo, hi + 1):
                        _SOURCE_MAPS[code][(f.__name__, ln)] = (lo, text)
            self.stmt_of.update(_SOURCE_MAPS[code])
        self.times: dict[tuple[str, int, str], float] = {}
        self._last: dict[Any, tuple[tuple[str, int, str], float]] = {}

    def _key(self, name: str, lineno: int) -> tuple[str, int, str]:
        lo, text = self.stmt_of.get((name, lineno), (lineno, "(source unavailable)"))
        return (name, lo, text)

    def _local(self, frame: Any, event: str, arg: Any) -> Any:
        now = time.perf_counter()
        prev = self._last.pop(frame, None)
        if prev is not None:
            self.times[prev[0]] = self.times.get(prev[0], 0.0) + now - prev[1]
        if event == "line":
            self._last[frame] = (
                self._key(self.codes[frame.f_code], frame.f_lineno),
                time.perf_counter(),
            )
        return self._local

    def _global(self, frame: Any, event: str, arg: Any) -> Any:
        return self._local if frame.f_code in self.codes else None

    def __enter__(self) -> LineTimer:
        self._prev = sys.gettrace()
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(self._prev)


def _engine_funcs() -> list[Callable[..., Any]]:
    """The functions defined in the local engine and its shared helpers."""
    import inspect

    from dpmap.engines import bounding, local

    out: list[Callable[..., Any]] = []
    for mod in (local, _engine_common(), bounding):
        for name, f in sorted(vars(mod).items()):
            if (
                inspect.isfunction(f)
                and f.__module__ == getattr(mod, "__name__", None)
                and not name.startswith("__")
            ):
                out.append(f)
    return out


def engine_lines(df: pl.DataFrame, runs: int) -> list[dict[str, Any]]:
    """Per-statement times of the engine (minimum over ``runs`` traced releases)."""
    try:
        funcs = _engine_funcs()
        rel = _release_module()
        results = []
        for _ in range(runs):
            lt = LineTimer(funcs)
            with lt:
                rel.release(df, **release_kwargs("release"))
            results.append(lt.times)
    except Exception as exc:  # the engine changed shape: the line breakdown is optional
        return [
            {
                "function": "?",
                "line": 0,
                "statement": f"unavailable: {type(exc).__name__}: {exc}",
                "s": 0.0,
            }
        ]
    keys = {k for r in results for k in r}
    best = {k: min(r.get(k, 0.0) for r in results) for k in keys}
    return [
        {"function": f, "line": ln, "statement": text, "s": t}
        for (f, ln, text), t in sorted(best.items(), key=lambda kv: -kv[1])
    ]


# ---------------------------------------------------------------------------------------
# main


def parse_sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s.strip()]


def fmt_mb(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--sizes", default="1e6,1e7", help="comma-separated numbers of points (default 1e6,1e7)"
    )
    ap.add_argument("--quick", action="store_true", help="sizes 1e5,1e6")
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timing rounds per size (default: 3 up to 1e6 points, 2 above)",
    )
    ap.add_argument(
        "--json", dest="json_out", default=None, help="also write the results as JSON here"
    )
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--no-stages", action="store_true", help="skip the per-stage breakdown")
    ap.add_argument(
        "--profile", default=None, help="write a cProfile of one release at the largest size"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--before",
        default=None,
        metavar="SRC",
        help="also time the release of the dpmap package under SRC (e.g. an export of an older "
        "commit's src/), alternating with the other steps",
    )
    ap.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    ap.add_argument("--before-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--stage-memory", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(args.child, args.input, args.stage_memory)
        return 0
    if args.before_worker:
        before_worker_main(args.input)
        return 0

    sizes = parse_sizes("1e5,1e6" if args.quick else args.sizes)
    import dpmap

    t0 = time.perf_counter()
    _region()
    region_s = time.perf_counter() - t0
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "polars_threads": pl.thread_pool_size(),
        "versions": {
            m: _version(m)
            for m in (
                "dpmap",
                "polars",
                "polars-h3",
                "h3",
                "opendp",
                "numpy",
                "pandas",
                "geopandas",
                "shapely",
            )
        },
        "loadavg_start": _loadavg(),
        "region_build_s": region_s,
    }
    print(
        f"dpmap {dpmap.__version__} | polars {env['versions']['polars']} ({env['polars_threads']} threads) | "
        f"{env['cpus']} CPUs | load {env['loadavg_start']}"
    )
    print(f"region: hebei_region() built in {region_s:.2f} s (not in any timing below)\n")

    # warm-up on a tiny input: imports and one-time initialisation out of the timings
    small = make_points(2_000, seed=args.seed + 99)
    for step in STEPS:
        run_step(step, small)

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dpmap-bench-") as tmp:
        for n in sizes:
            res = bench_size(n, args, Path(tmp))
            results.append(res)
            print_size(res)
        if args.profile:
            profile_release(max(sizes), args)

    env["loadavg_end"] = _loadavg()
    print_summary(results)
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({"environment": env, "results": results}, indent=2) + "\n"
        )
        print(f"\nwrote {args.json_out}")
    return 0


def bench_size(n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    print(f"=== N = {n:,} points " + "=" * 50, flush=True)
    wall, _, df = timed(lambda: make_points(n, seed=args.seed))
    info = {
        "n": n,
        "persons": df["debtor_id"].n_unique(),
        "input_mb": df.estimated_size() / 2**20,
        "generate_s": wall,
    }
    print(
        f"generated in {wall:.1f} s: {info['persons']:,} debtors, {info['input_mb']:.0f} MB in memory",
        flush=True,
    )

    repeats = args.repeats or (3 if n <= 1_000_000 else 2)
    steps = list(STEPS)
    before = None
    if args.before:  # the release of another dpmap source tree, in a worker process
        path = tmp / f"points_{n}_before.parquet"
        df.write_parquet(path, compression="lz4")
        before = BeforeWorker(args.before, path)
        steps.append("before")
    runs: dict[str, list[tuple[float, float]]] = {s: [] for s in steps}
    rows: dict[str, int] = {}
    try:
        for r in range(repeats):
            for step in steps:  # alternate: the steps of one round share the machine's state
                if step == "before":
                    assert before is not None
                    w, c, rows[step] = before.run()
                else:
                    w, c, rows[step] = timed(functools.partial(run_step, step, df))
                runs[step].append((w, c))
                print(
                    f"  round {r + 1}/{repeats} {step:10s} {w:7.2f} s wall  {c:7.2f} s cpu",
                    flush=True,
                )
    finally:
        if before is not None:
            before.close()
    timing: dict[str, dict[str, Any]] = {}
    for step in steps:
        walls = [w for w, _ in runs[step]]
        best = min(range(len(walls)), key=walls.__getitem__)
        timing[step] = {
            "best_s": walls[best],
            "median_s": statistics.median(walls),
            "cpu_best_s": runs[step][best][1],
            "all_s": walls,
            "cpu_all_s": [c for _, c in runs[step]],
            "rows_out": rows[step],
        }
    base, nonpriv = timing["baseline"], timing["nonprivate"]
    for step in steps[1:]:
        t = timing[step]
        t["ratio_best"] = t["best_s"] / base["best_s"]
        t["ratio_median"] = t["median_s"] / base["median_s"]
        t["ratio_cpu"] = t["cpu_best_s"] / base["cpu_best_s"]
        t["ratio_np_best"] = t["best_s"] / nonpriv["best_s"]
        t["ratio_np_median"] = t["median_s"] / nonpriv["median_s"]
        t["ratio_np_cpu"] = t["cpu_best_s"] / nonpriv["cpu_best_s"]

    memory = {}
    if not args.no_memory:
        path = tmp / f"points_{n}.parquet"
        df.write_parquet(path, compression="lz4")
        for step in STEPS:
            memory[step] = measure_memory(step, path)
            m = memory[step]
            print(
                f"  memory {step:8s} "
                + (
                    f"peak {m['peak_mb']:,.0f} MB (step +{m['step_mb']:,.0f} MB)"
                    if "peak_mb" in m
                    else m.get("error", "?")
                ),
                flush=True,
            )
        if not args.no_stages:
            memory["release_stages"] = measure_memory("release", path, stage_memory=True)
        path.unlink()

    stages = None
    if not args.no_stages:
        stages = stage_breakdown(df, runs=repeats)
        stages["stage_peak_mb"] = memory.get("release_stages", {}).get("stage_step_mb", {})
    return {
        "n": n,
        "info": info,
        "repeats": repeats,
        "timing": timing,
        "memory": memory,
        "stages": stages,
    }


def print_size(res: dict[str, Any]) -> None:
    st = res["stages"]
    if not st:
        print()
        return
    tot = st["sum_of_stage_minima_s"]
    print(
        f"\n  stage breakdown of the release at N = {res['n']:,}: exclusive time, minimum of {st['runs']} "
        f"instrumented runs\n  (sum of minima {tot:.2f} s; best instrumented run {st['total_best_s']:.2f} s)"
    )
    peaks = st.get("stage_peak_mb") or {}
    print(f"    {'stage':70s} {'wall':>7s}    {'share':>6s} {'cpu':>7s}    {'peak+MB':>7s}")
    for label, s in st["stages_s"].items():
        if s >= 0.0005:
            pk = f"{peaks[label]:9,.0f}" if label in peaks else ""
            print(
                f"    {label:70s} {s:7.3f} s  {100 * s / tot:5.1f}%  {st['stages_cpu_s'][label]:7.3f} s {pk}"
            )
    if peaks:
        print(
            "    (peak+MB: the stage's peak RSS above the RSS before the release, stages it calls included;"
            " fresh subprocess)"
        )
    print(
        "  engine statements (functions of dpmap.engines.local/_common; inclusive of the calls they make,"
        " minimum of the traced runs):"
    )
    for row in st["engine_lines"]:
        if row["s"] >= 0.01 * tot or row["line"] == 0:
            stmt = (
                row["statement"] if len(row["statement"]) <= 72 else row["statement"][:69] + "..."
            )
            print(
                f"    {row['function'] + ':' + str(row['line']):26s} {stmt:72s} {row['s']:7.3f} s"
            )
    print()


def print_summary(results: list[dict[str, Any]]) -> None:
    print(
        "\nSUMMARY (best of the rounds; ratio = step / baseline, ratio np = step / non-private"
        " pipeline; peak = whole-process"
    )
    print(
        "peak RSS in a fresh subprocess, step = peak minus RSS just before the step; input = the"
        " DataFrame's size)"
    )
    hdr = (
        f"{'N':>12} {'step':10} {'best s':>8} {'median s':>9} {'cpu s':>7} {'ratio':>6} "
        f"{'ratio np':>8} {'np med':>7} {'np cpu':>7} {'peak MB':>8} {'step MB':>8} {'input MB':>8}"
    )
    print(hdr)
    print("-" * len(hdr))
    for res in results:
        for step, t in res["timing"].items():
            m = res["memory"].get(step, {})

            def r(key: str, t: dict[str, Any] = t) -> str:
                return f"{t[key]:.2f}" if key in t else ""

            print(
                f"{res['n']:>12,} {step:10} {t['best_s']:8.2f} {t['median_s']:9.2f} "
                f"{t['cpu_best_s']:7.2f} {r('ratio_best'):>6} {r('ratio_np_best'):>8} "
                f"{r('ratio_np_median'):>7} {r('ratio_np_cpu'):>7} {fmt_mb(m.get('peak_mb')):>8} "
                f"{fmt_mb(m.get('step_mb')):>8} {res['info']['input_mb']:8.0f}"
            )
    print(
        "targets (issue 18): release ≤ 1.2 × the non-private pipeline (ratio np) at 2 M and 10 M"
        " points, peak memory ≤ 2 GB at 10 M"
    )


def profile_release(n: int, args: argparse.Namespace) -> None:
    import cProfile
    import pstats

    import dpmap

    df = make_points(n, seed=args.seed)
    prof = cProfile.Profile()
    prof.enable()
    dpmap.release(df, **release_kwargs("release"))
    prof.disable()
    prof.dump_stats(args.profile)
    print(
        f"\ncProfile of one release at N = {n:,} written to {args.profile}; top entries (cumulative):"
    )
    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
