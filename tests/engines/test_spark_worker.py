"""What a Spark executor imports to run dpmap's ``mapInArrow`` function, and that the
function, pickled as Spark pickles it and run in a fresh interpreter, returns what it
returns in this process.

No Spark session is needed: the function is pickled with Spark's own cloudpickle, exactly
what ``mapInArrow`` ships to the executors, and loaded in a fresh ``python`` (an executor's
Python worker imports pyspark, then unpickles the function).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa

from common import REGION, RESOLUTION, as_polars, debtors, import_or_skip
from dpmap.engines import frames
from dpmap.engines.frames import CELL, PERSON, PRIO, VALUE
from dpmap.engines.spark_worker import PrepareBatches
from dpmap.grid import region_to_cells, to_region
from parity import spec_of

SRC = Path(__file__).resolve().parents[2] / "src"
DIAG = "__diag"

#: what an executor must not import to prepare rows: the heavy libraries it does not use,
#: the Spark engine's driver code and the layers above the engines
NOT_ON_WORKERS = (
    "pandas",
    "geopandas",
    "opendp",
    "matplotlib",
    "folium",
    "pyproj",
    "dpmap.engines.spark",
    "dpmap.engines.local",
    "dpmap._privacy",
    "dpmap.designs",
    "dpmap.analysis",
    "dpmap.maps",
    "dpmap.releases",
    "dpmap.auditing",
    "dpmap.site",
    "dpmap.cli",
)

#: run in a fresh interpreter: unpickle, note the modules, run on the batches, write the result
WORKER = """
import sys
import pyarrow as pa, pyarrow.ipc
from pyspark import cloudpickle
fn = cloudpickle.loads(open(sys.argv[1], "rb").read())
batches = pa.ipc.open_file(sys.argv[2]).read_all().to_batches()
out = list(fn(iter(batches)))
with pa.ipc.new_file(sys.argv[3], out[0].schema) as writer:
    for batch in out:
        writer.write_batch(batch)
print(" ".join(sys.modules))
"""


def worker_function() -> tuple[PrepareBatches, pa.Table]:
    spec = spec_of(person="pid", value="amount", bounds=(0, 2000), max_cells=2)
    points = as_polars(debtors(200, 3, 6))
    table = frames.project(points.lazy(), spec).collect().to_arrow()
    schema = pa.schema(
        [
            (PERSON, pa.string()),
            (CELL, pa.int64()),
            (VALUE, pa.int64()),
            (PRIO, pa.int64()),
            (DIAG, pa.list_(pa.float64())),
        ]
    )
    domain = region_to_cells(to_region(REGION), RESOLUTION)
    return PrepareBatches(spec, domain, schema, DIAG), table


def test_an_executor_imports_only_the_row_preparation(tmp_path: Path) -> None:
    cloudpickle = import_or_skip("pyspark.cloudpickle", "pyspark is not installed (dpmap[spark])")
    fn, table = worker_function()
    (tmp_path / "fn.pkl").write_bytes(cloudpickle.dumps(fn))
    with pa.ipc.new_file(tmp_path / "in.arrow", table.schema) as writer:
        for batch in table.to_batches(max_chunksize=100):  # several batches, as Spark sends
            writer.write_batch(batch)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    args = [str(tmp_path / name) for name in ("fn.pkl", "in.arrow", "out.arrow")]
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = set(proc.stdout.split())
    dragged = sorted(
        m for m in NOT_ON_WORKERS if m in loaded or any(x.startswith(m + ".") for x in loaded)
    )
    assert not dragged, f"a Spark executor imports {dragged} to prepare rows"
    assert "dpmap.engines.spark_worker" in loaded  # pickled by reference: imported there

    got = pl.from_arrow(pa.ipc.open_file(args[2]).read_all())
    here = pl.from_arrow(pa.Table.from_batches(list(fn(iter(table.to_batches(max_chunksize=100))))))
    assert isinstance(got, pl.DataFrame) and isinstance(here, pl.DataFrame)
    data = got.filter(pl.col(DIAG).is_null())
    # the same rows (hash priorities: deterministic), and one summary row per batch stream
    assert data.drop(DIAG).equals(here.filter(pl.col(DIAG).is_null()).drop(DIAG))
    expected, _ = frames.prepare_rows(pl.DataFrame(table), fn.spec, fn.domain)
    assert data.height == expected.height > 0
    summary = got.filter(pl.col(DIAG).is_not_null())[DIAG].to_list()
    assert len(summary) == 1 and summary[0][0] == table.num_rows  # RowCounts.rows first
