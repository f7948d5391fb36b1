#!/usr/bin/env python
"""Benchmark: what starting dpmap costs: ``import dpmap``, the ``dpmap`` command, a Spark worker.

Run from the repository root (the baseline: the sources of another commit, e.g. the one
before lazy imports, unpacked with ``git archive``)::

    mkdir -p /tmp/base && git archive f2c9630 src | tar -x -C /tmp/base
    .venv/bin/python benchmarks/bench_imports.py --baseline-src /tmp/base/src
    .venv/bin/python benchmarks/bench_imports.py --runs 5           # quick, no baseline

A measurement script, not a test: it asserts nothing about timings. Every measurement is a
fresh ``python`` (``PYTHONPATH`` = the sources measured), repeated ``--runs`` times; the
median wall time and the median CPU time (user + system of the child) are printed, with
their ratio to ``python -c pass`` (the interpreter's own start) and, with
``--baseline-src``, to the same measurement on the baseline sources. The two sources
alternate within every round, so both see the same load (the machine may be shared: the
load average is printed; compare the CPU columns when it is high).

``python -c pass``       the interpreter's start (the reference)
``import pandas``        for scale: the cost of one heavy library
``import dpmap``         the package (its public names are imported on first use)
``dpmap.release``        ``import dpmap; dpmap.release``: the whole library loaded
``dpmap --help``         the command line's start (``python -m dpmap.cli --help``)
``dpmap release`` load   ``import dpmap.cli, dpmap; dpmap.release``: what a release
                         command imports before it reads data
``pyspark.cloudpickle``  what a Spark Python worker has loaded before it unpickles a UDF
``Spark worker``         unpickle the engine's ``mapInArrow`` function, pickled by
                         Spark's cloudpickle (what each executor's Python worker does
                         once per task); its import cost is the difference to the row above
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: build the engine's mapInArrow function with the sources on sys.path and pickle it as
#: Spark does (the current class, or the closure of the commits before it)
PICKLE_WORKER = """
import sys
import pyarrow as pa
import shapely
from pyspark import cloudpickle
from dpmap.grid import region_to_cells, to_region
from dpmap.spec import ReleaseSpec
spec = ReleaseSpec(resolution=7, epsilon=1.0, person="pid", value="amount", bounds=(0, 100))
domain = region_to_cells(to_region(shapely.box(116.0, 39.0, 116.3, 39.2)), 7)
schema = pa.schema([("__person", pa.string()), ("__cell", pa.int64()), ("__value", pa.int64()),
                    ("__prio", pa.int64()), ("__diag", pa.list_(pa.float64()))])
try:
    from dpmap.engines.spark_worker import PrepareBatches
    fn = PrepareBatches(spec, domain, schema, "__diag")
except ImportError:  # before the worker's own module
    from dpmap.engines.spark import _prepare_fn
    fn = _prepare_fn(spec, domain, schema)
open(sys.argv[1], "wb").write(cloudpickle.dumps(fn))
"""


def measurements(pickled: str) -> list[tuple[str, list[str]]]:
    """(label, python arguments) of every measurement."""
    return [
        ("python -c pass", ["-c", "pass"]),
        ("import pandas", ["-c", "import pandas"]),
        ("import dpmap", ["-c", "import dpmap"]),
        ("dpmap.release (full load)", ["-c", "import dpmap; dpmap.release"]),
        ("dpmap --help", ["-m", "dpmap.cli", "--help"]),
        ("dpmap release: its imports", ["-c", "import dpmap.cli, dpmap; dpmap.release"]),
        ("pyspark.cloudpickle", ["-c", "from pyspark import cloudpickle"]),
        (
            "Spark worker: unpickle the UDF",
            [
                "-c",
                f"from pyspark import cloudpickle; cloudpickle.loads(open({pickled!r}, 'rb').read())",
            ],
        ),
    ]


def run_once(python: str, args: list[str], src: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one fresh ``python args``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([python, *args], env=env, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{args} failed with {src}:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def pickle_worker(python: str, src: Path, path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run(
        [python, "-c", PICKLE_WORKER, str(path)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"cannot pickle the Spark worker's function with {src}:\n{proc.stderr}")


def modules_loaded(python: str, src: Path, code: str) -> str:
    """The heavy libraries ``code`` loads (for the report)."""
    heavy = ("pandas", "polars", "numpy", "pyarrow", "h3", "shapely", "opendp", "matplotlib")
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {heavy!r} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True)
    return out.stdout.strip() or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per measurement")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the sources measured")
    parser.add_argument("--baseline-src", type=Path, help="the sources to compare with")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    trees = {"now": args.src.resolve()}
    if args.baseline_src is not None:
        trees["baseline"] = args.baseline_src.resolve()

    tmp = Path(tempfile.mkdtemp(prefix="bench_imports_"))
    rows = {}
    for name, src in trees.items():
        pickle_worker(args.python, src, tmp / f"{name}.pkl")
        rows[name] = measurements(str(tmp / f"{name}.pkl"))
    labels = [label for label, _ in rows["now"]]
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    load_start = os.getloadavg()
    for label, _ in rows["now"]:  # warm the file cache once
        for name, src in trees.items():
            run_once(args.python, dict(rows[name])[label], src)
    for _ in range(args.runs):
        for i, label in enumerate(labels):
            for name, src in trees.items():
                times.setdefault((name, label), []).append(
                    run_once(args.python, rows[name][i][1], src)
                )
    load_end = os.getloadavg()
    report(args, trees, labels, times, load_start, load_end)
    for name, src in trees.items():
        worker = f"from pyspark import cloudpickle; cloudpickle.loads(open({str(tmp / (name + '.pkl'))!r}, 'rb').read())"
        print(
            f"{name}: import dpmap loads [{modules_loaded(args.python, src, 'import dpmap')}]; "
            f"a Spark worker loads [{modules_loaded(args.python, src, worker)}]"
        )


def report(args, trees, labels, times, load_start, load_end) -> None:  # type: ignore[no-untyped-def]
    med = {
        key: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for key, v in times.items()
    }
    print(
        f"dpmap start-up benchmark: median of {args.runs} fresh processes; python "
        f"{sys.version.split()[0]}; {os.cpu_count()} CPUs; load average "
        f"{load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end"
    )
    for name, src in trees.items():
        print(f"  {name}: {src}")
    base = "baseline" in trees
    head = f"{'':32} {'wall s':>7} {'CPU s':>7} {'CPU×pass':>8}"
    if base:
        head += f" {'base wall':>10} {'base CPU':>9} {'now/base CPU':>13}"
    print(head)
    ref = med[("now", "python -c pass")]
    for label in labels:
        wall, cpu = med[("now", label)]
        line = f"{label:32} {wall:7.3f} {cpu:7.3f} {cpu / ref[1]:8.1f}"
        if base:
            bwall, bcpu = med[("baseline", label)]
            line += f" {bwall:10.3f} {bcpu:9.3f} {cpu / bcpu:13.2f}"
        print(line)
    w_now = med[("now", labels[-1])][1] - med[("now", "pyspark.cloudpickle")][1]
    line = f"the Spark worker's own import (CPU): {w_now:.3f} s"
    if base:
        w_base = med[("baseline", labels[-1])][1] - med[("baseline", "pyspark.cloudpickle")][1]
        line += f" (baseline {w_base:.3f} s)"
    print(line)


if __name__ == "__main__":
    main()
