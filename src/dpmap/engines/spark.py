"""The Spark engine: the exact, noise-free data plane (bin, bound, aggregate) in Spark.

``dpmap.release(spark_df, ...)`` (or ``engine="spark"``, or the path of a Parquet file or
dataset too large for memory) runs here. Like the local engine it never imports OpenDP
and publishes nothing: it returns the PRIVATE per-cell
:class:`~dpmap.aggregates.BoundedAggregates`, which :func:`dpmap.release` privatizes
with exactly the code it uses for the local engine.

How the work is split (one Spark job; only the per-cell aggregates reach the driver):

1. **Project** the role columns under internal names (casts as in the local engine);
   missing or non-numeric columns are refused with the local engine's messages
   (:func:`dpmap.engines.frames.check_columns`, on the schema converted through Arrow).
2. **Prepare** each Arrow batch in a vectorised UDF (``mapInArrow``, a
   :class:`~dpmap.engines.spark_worker.PrepareBatches`, in a module of its own so that an
   executor imports only what it needs) that calls the local engine's own functions on a
   polars frame: drop rows with missing coordinates / person / value, bin with the same
   ``polars_h3`` call, keep rows in the public cell set (a sorted int64 array shipped with
   the UDF, binary search), clamp and round values, index the categories
   (:func:`~dpmap.engines.frames.prepare_rows`), and compute each record's priority with
   :func:`~dpmap.engines.frames.priorities`. Each partition also emits one summary row
   with its :class:`~dpmap.engines.frames.RowCounts`.
3. **Bound** with window functions, partitioned by person (one shuffle, keyed by a 64-bit
   hash of the person followed by the person itself): ``row_number`` over (person, cell)
   ordered by priority ≤ L∞; then the cells ranked by their smallest priority
   (``dense_rank`` over person) ≤ L0 — the rules of :mod:`dpmap._privacy.bounding`. With
   L0 = L∞ = 1 (the default) one window suffices: each person's smallest priority.
4. **Aggregate** per (cell[, category]): count and sum, plus the summary rows merged
   into one, and collect with ``toArrow()``.

Engine parity. With ``selection="hash"`` a record's priority is polars' keyed hash of its
own (person, cell, category, value), computed by the same function on the same dtypes in
both engines; it is evaluated row by row, so batch boundaries do not matter. The two
engines therefore keep the same records and return identical aggregates (tests check it
on several datasets). Ties only occur between identical records, where the choice does
not change any aggregate. Conditions: the person column must reach polars with the same
dtype in both engines (e.g. Int64 vs Int32 ids hash differently), and the executors must
run the same polars version as the driver. With ``selection="random"`` the engines need
not agree: each executor draws fresh operating-system randomness for every record of
each batch it prepares, which depends on no person's data and on no row position.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from dpmap.aggregates import BoundedAggregates
from dpmap.diagnostics import Diagnostics
from dpmap.engines import frames
from dpmap.engines.frames import CAT, CELL, LAT, LEAF, LNG, PERIOD, PERSON, PRIO, TIME, VALUE
from dpmap.engines.spark_worker import PrepareBatches
from dpmap.errors import DataFileError, InputError, missing_extra
from dpmap.io import points_file_kind, read_points
from dpmap.spec import ReleaseSpec

__all__ = ["bound_and_aggregate", "get_session", "is_spark_dataframe"]

_DIAG, _RN, _CP, _CR, _FIRST, _H = "__diag", "__rn", "__cp", "__cr", "__first", "__h"
_PEOPLE = "__people"
_PP, _PR = "__pp", "__pr"  # a panel: the period's smallest priority, and its rank
_COUNT_FIELDS = [f.name for f in fields(frames.RowCounts)]

#: settings of the session dpmap creates when none is active
SESSION_CONFIG = {
    "spark.master": "local[2]",
    "spark.app.name": "dpmap",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "2g",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "65536",
    "spark.sql.session.timeZone": "UTC",
}


# ---------------------------------------------------------------------------------------
# session and input


def _pyspark() -> Any:
    try:
        import pyspark.sql
    except ImportError:
        raise missing_extra("pyspark", "spark") from None
    return pyspark.sql


def is_spark_dataframe(obj: Any) -> bool:
    """Whether ``obj`` is a pyspark DataFrame (without importing pyspark)."""
    mod = sys.modules.get("pyspark.sql")
    return mod is not None and isinstance(obj, mod.DataFrame)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence PySpark's warning about the installed pandas version (dpmap uses Arrow)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*PySpark does not yet fully support pandas", category=FutureWarning
        )
        yield


def get_session() -> Any:
    """The active SparkSession, or a new ``local[2]`` one (:data:`SESSION_CONFIG`).

    A new session runs its Python workers with this interpreter (``PYSPARK_PYTHON``,
    unless set), so they import the same dpmap and polars as the driver.
    """
    sql = _pyspark()
    active = sql.SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # a local session stays on loopback
    builder = sql.SparkSession.builder
    for key, val in SESSION_CONFIG.items():
        builder = builder.config(key, val)
    with _quiet():
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _read_path(spark: Any, path: str) -> Any:
    """A Spark DataFrame over a CSV or Parquet file, or a Parquet dataset directory."""
    remote = "://" in path
    suffix = Path(path).suffix.lower()
    if remote or os.path.isdir(path):
        kind = "csv" if suffix == ".csv" else "parquet"
    else:
        kind = points_file_kind(path)
    try:
        if kind == "csv":
            sdf = spark.read.csv(path, header=True, inferSchema=True)
        else:
            sdf = spark.read.parquet(path)
        sdf.schema  # noqa: B018 - resolves the files now, so a bad one fails here
    except Exception as exc:
        raise DataFileError(
            f"cannot read points file {path!r}: {_first_line(exc)}; check that it is a complete, "
            "valid CSV/Parquet file (re-export it)"
        ) from exc
    return sdf


def _to_spark(points: Any, spec: ReleaseSpec, spark: Any) -> Any:
    """Any supported input as a Spark DataFrame (in-memory inputs go through Arrow)."""
    if is_spark_dataframe(points):
        return points
    if isinstance(points, (str, os.PathLike)):
        return _read_path(spark, os.fspath(points))
    lf = read_points(points, spec)  # pandas / polars / GeoPandas, as the local engine reads them
    try:
        # the local engine's column checks first, then only the columns used cross over
        frames.check_columns(lf.collect_schema(), spec, lambda: lf.head(1).collect().height == 0)
        used = [spec.lat, spec.lng, spec.person, spec.value, spec.category]
        df = lf.select(list(dict.fromkeys(c for c in used if c is not None))).collect()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the points: {_first_line(exc)}") from exc
    return spark.createDataFrame(df.to_arrow(compat_level=pl.CompatLevel.oldest()))


def _col(name: str) -> Any:
    return _pyspark().functions.col("`" + name.replace("`", "``") + "`")


def _polars_schema(sdf: Any, spec: ReleaseSpec) -> dict[str, pl.DataType]:
    """Column name -> polars dtype (via Arrow) of the role columns; others as ``Null``."""
    from pyspark.sql.pandas.types import to_arrow_type

    roles = {spec.lat, spec.lng, spec.person, spec.value, spec.category, spec.time}
    out: dict[str, pl.DataType] = {}
    for f in sdf.schema.fields:
        dtype: pl.DataType = pl.Null()
        if f.name in roles and f.name == spec.time and _is_time_type(f.dataType):
            dtype = pl.Datetime("us")  # sent on as text (:func:`_time_text`)
        elif f.name in roles:
            try:
                empty = pa.schema([pa.field("c", to_arrow_type(f.dataType))]).empty_table()
                dtype = pl.from_arrow(empty).schema["c"]  # type: ignore[union-attr]
            except Exception:  # a type without an Arrow/polars equivalent: not numeric
                dtype = pl.Unknown()
        out[f.name] = dtype
    return out


def _project(sdf: Any, spec: ReleaseSpec) -> Any:
    """Check the columns (the local engine's messages) and select them under internal names."""
    schema = _polars_schema(sdf, spec)
    frames.check_columns(schema, spec, lambda: bool(sdf.isEmpty()))
    cols = [
        _col(spec.lat).cast("double").alias(LAT),
        _col(spec.lng).cast("double").alias(LNG),
    ]
    if spec.person is not None:
        cols.append(_col(spec.person).alias(PERSON))
    if spec.value is not None:
        cols.append(_col(spec.value).cast("double").alias(VALUE))
    if spec.category is not None:
        cols.append(_col(spec.category).cast("string").alias(CAT))
    if spec.time is not None:
        cols.append(_time_text(sdf, spec.time).alias(TIME))
    return sdf.select(cols)


def _is_time_type(dtype: Any) -> bool:
    from pyspark.sql import types as T

    return isinstance(dtype, (T.DateType, T.TimestampType, T.TimestampNTZType))


def _time_text(sdf: Any, name: str) -> Any:
    """A panel's time column as the text the row preparation parses: Spark dates and
    timestamps formatted as wall-clock ISO date-times (in the session's time zone, where
    Spark shows them), text as it is."""
    from pyspark.sql import functions as F

    if _is_time_type(sdf.schema[name].dataType):
        return F.date_format(_col(name), "yyyy-MM-dd HH:mm:ss.SSSSSS")
    return _col(name)


# ---------------------------------------------------------------------------------------
# the plan


@dataclass(frozen=True)
class _Plan:
    """The lazy Spark DataFrames of each stage (for the engine and the benchmarks)."""

    projected: Any  # internal columns, as read
    prepared: Any  # binned, filtered, clamped rows with priorities, + one summary row per partition
    bounded: Any  # rows kept by contribution bounding (+ the summary rows)
    aggregated: Any  # per (cell[, category]): count, sum, persons; the summary row has cell null


def _plan(sdf: Any, spec: ReleaseSpec, domain: np.ndarray | None) -> _Plan:
    """Build the lazy stages; nothing runs until the aggregates are collected."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import to_arrow_schema

    projected = _project(sdf, spec)
    out_fields = []
    if spec.person is not None:
        out_fields.append(T.StructField(PERSON, projected.schema[PERSON].dataType, True))
    out_fields.append(T.StructField(CELL, T.LongType(), True))
    if spec.periods is not None:
        out_fields.append(T.StructField(PERIOD, T.LongType(), True))
    if spec.category is not None:
        out_fields.append(T.StructField(CAT, T.LongType(), True))
    if spec.value is not None:
        out_fields.append(T.StructField(VALUE, T.LongType(), True))
    if spec.person is not None:
        out_fields.append(T.StructField(PRIO, T.LongType(), True))
    out_fields.append(T.StructField(_DIAG, T.ArrayType(T.DoubleType(), False), True))
    out_schema = T.StructType(out_fields)
    arrow_schema = to_arrow_schema(out_schema)
    prepared = projected.mapInArrow(PrepareBatches(spec, domain, arrow_schema, _DIAG), out_schema)

    summary = F.col(_DIAG).isNotNull()
    if spec.person is not None:
        bounded = _bound(prepared, spec, summary)
    else:
        bounded = prepared.withColumn(_RN, F.lit(1)).withColumn(_CR, F.lit(1))
        bounded = bounded.withColumn(_PR, F.lit(1)).withColumn(_FIRST, F.lit(0).cast("long"))

    keys = frames.keys_of(spec)
    if spec.people:  # 1 on one kept record of each (person, cell[, category]): distinct persons
        bounded = bounded.withColumn(_PEOPLE, _first_of_key(spec, summary))
    aggs = _aggregations(spec)
    if spec.histogram:  # the value tree's leaf, in the same integer arithmetic as polars
        tree = spec.value_tree
        leaf = F.expr(f"(({VALUE} - {tree.lo}) * {tree.leaves}) div {tree.hi - tree.lo}")
        bounded = bounded.withColumn(LEAF, F.least(leaf, F.lit(tree.leaves - 1)).cast("long"))
        keys.append(LEAF)
    aggregated = bounded.groupBy(*keys).agg(*aggs)
    return _Plan(projected=projected, prepared=prepared, bounded=bounded, aggregated=aggregated)


def _bound(prepared: Any, spec: ReleaseSpec, summary: Any) -> Any:
    """The kept rows (the rule of :mod:`dpmap.engines.bounding`) with their ranks: ``_RN``
    in the (person[, period], cell), ``_CR`` the cell's in the (person[, period]), ``_PR``
    the period's in the person (1 without a panel); ``_FIRST`` marks one row per person."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # Partition and sort by a 64-bit hash of the person first: Spark compares longs by
    # their sort prefix, strings mostly not. The person itself stays in every key, so
    # a hash collision cannot merge two persons.
    rows = prepared.withColumn(_H, F.xxhash64(PERSON)).repartition(F.col(_H))
    panel = spec.periods is not None
    if spec.max_cells == 1 and spec.max_records_per_cell == 1 and not panel:
        # each person keeps exactly one record: their record of smallest priority
        first = Window.partitionBy(_H, PERSON).orderBy(PRIO)
        bounded = (
            rows.withColumn(_RN, F.row_number().over(first))
            .where(summary | (F.col(_RN) == 1))
            .withColumn(_CR, F.col(_RN))
            .withColumn(_PR, F.lit(1))
        )
    else:
        outer = [_H, PERSON] + ([PERIOD] if panel else [])
        by_cell = Window.partitionBy(*outer, CELL).orderBy(PRIO)
        by_outer = Window.partitionBy(*outer).orderBy(_CP, CELL)
        bounded = (
            rows.withColumn(_RN, F.row_number().over(by_cell))  # one shuffle, all windows
            .withColumn(_CP, F.min(PRIO).over(by_cell))  # the cell's smallest priority
            .where(summary | (F.col(_RN) <= spec.max_records_per_cell))
            .withColumn(_CR, F.dense_rank().over(by_outer))
            .where(summary | (F.col(_CR) <= spec.max_cells))
        )
        if panel:
            period_best = Window.partitionBy(*outer)
            # a continual release keeps the earliest periods (spec.earliest_periods)
            first_periods = (PERIOD,) if spec.earliest_periods else (_PP, PERIOD)
            by_person = Window.partitionBy(_H, PERSON).orderBy(*first_periods)
            bounded = (
                bounded.withColumn(_PP, F.min(PRIO).over(period_best))
                .withColumn(_PR, F.dense_rank().over(by_person))
                .where(summary | (F.col(_PR) <= spec.periods_per_person))
            )
        else:
            bounded = bounded.withColumn(_PR, F.lit(1))
    person_first = (F.col(_RN) == 1) & (F.col(_CR) == 1) & (F.col(_PR) == 1)
    return bounded.withColumn(_FIRST, person_first.cast("long"))


def _first_of_key(spec: ReleaseSpec, summary: Any) -> Any:
    """1 on the kept record of smallest priority of each (person, cell[, category]), else 0
    (the summary rows: 0): summed per key, the distinct persons (``people=True``)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    keys = [_H, PERSON, *frames.keys_of(spec)]
    rank = F.row_number().over(Window.partitionBy(*keys).orderBy(PRIO))
    return F.when(summary, F.lit(0)).otherwise((rank == 1).cast("long")).cast("long")


def _aggregations(spec: ReleaseSpec) -> list[Any]:
    """What is added up per (cell[, category][, leaf]): count, persons, the bound checks,
    [people], [sum and the clamping checks], and the diagnostics of the summary rows."""
    from pyspark.sql import functions as F

    aggs = [
        F.count(F.lit(1)).alias("count"),
        F.sum(_FIRST).alias("persons"),
        F.max(_RN).alias("max_rn"),
        F.max(_CR).alias("max_cr"),
        F.max(_PR).alias("max_pr"),
    ]
    if spec.people:
        aggs.append(F.sum(_PEOPLE).alias("people"))
    if spec.value is not None:
        aggs += [
            # 38-digit decimals: a cell's sum cannot wrap around (saturated in _finish)
            F.sum(F.col(VALUE).cast("decimal(38,0)")).alias("sum"),
            F.min(VALUE).alias("min_value"),
            F.max(VALUE).alias("max_value"),
        ]
    for i, name in enumerate(_COUNT_FIELDS):
        x = F.col(_DIAG)[i]
        agg = F.min if name.endswith("_lo") else F.max if name.endswith("_hi") else F.sum
        aggs.append(agg(x).alias("__d_" + name))
    return aggs


# ---------------------------------------------------------------------------------------
# the engine


def bound_and_aggregate(
    points: Any,
    spec: ReleaseSpec,
    domain: np.ndarray | None,
    diagnostics: Diagnostics | None = None,
) -> BoundedAggregates:
    """PRIVATE exact aggregates of the bounded data, computed in Spark.

    Internal: :func:`dpmap.release` privatizes the result, and tests compare it with the
    local engine's (:func:`dpmap.engines.local.bound_and_aggregate`, same signature). Do
    not publish it. ``points``: a pyspark DataFrame, the path of a CSV/Parquet file or a
    Parquet dataset directory (read by Spark), or any in-memory input of the local engine
    (sent to Spark through Arrow). ``domain``: the sorted public cell set (int64), or
    ``None`` for private discovery. Only the per-cell aggregates are collected.

    Privacy
    -------
    Spends no budget and adds no noise: the result is the exact input of the one OpenDP
    measurement in :func:`dpmap.release`. It enforces the bounds the noise is calibrated
    to (unit: one person; at most ``max_cells`` cells and ``max_records_per_cell``
    records per cell each, values clamped to ``bounds``), choosing a person's records
    only from that person's own records (keyed hash) or fresh randomness, as the local
    engine does; with ``selection="hash"`` it keeps exactly the local engine's records.
    The executors see the raw rows, the public cell set and the selection key: run it
    only on a cluster trusted with the data. The workers must import the same dpmap and
    polars as the driver (a session created here sets ``PYSPARK_PYTHON`` to this
    interpreter).
    """
    _pyspark()
    diag = diagnostics if diagnostics is not None else Diagnostics()
    with _quiet():
        spark = points.sparkSession if is_spark_dataframe(points) else get_session()
        plan = _plan(_to_spark(points, spec, spark), spec, domain)
        table = plan.aggregated.toArrow()
    return _finish(pl.DataFrame(pl.from_arrow(table)), spec, domain, diag)


def _finish(
    g: pl.DataFrame, spec: ReleaseSpec, domain: np.ndarray | None, diag: Diagnostics
) -> BoundedAggregates:
    """Split the collected table into diagnostics and aggregates; check, as the local engine."""
    is_summary = pl.col(CELL).is_null()
    s = g.filter(is_summary)
    counts = frames.RowCounts()
    if s.height:
        counts = frames.RowCounts.from_floats(
            0.0 if s["__d_" + n][0] is None else s["__d_" + n][0] for n in _COUNT_FIELDS
        )
    frames.record_and_check(counts, diag, spec, domain is not None)
    g = g.filter(~is_summary).sort(frames.keys_of(spec))
    used = int(g["count"].sum())
    if spec.person is not None:
        diag.persons = int(g["persons"].sum())
    diag.records_cut_by_bounding = counts.rows_left - used
    diag.records_used = used
    _assert_bounded(g, spec)
    return frames.finish(g, spec, diag)


def _assert_bounded(g: pl.DataFrame, spec: ReleaseSpec) -> None:
    """The bounds the noise assumes, checked on what the windows kept."""
    if g.height == 0:
        return
    worst_records, worst_rank = int(g["max_rn"].max()), int(g["max_cr"].max())  # type: ignore[arg-type]
    worst_period = int(g["max_pr"].max())  # type: ignore[arg-type]
    if (
        worst_records > spec.linf
        or worst_rank > spec.l0 // spec.periods_per_person
        or (worst_period > spec.periods_per_person)
    ):
        raise AssertionError(
            f"bounding failed: a person has {worst_period} periods / {worst_rank} cells / "
            f"{worst_records} records in a cell, bounds are {spec.periods_per_person} / "
            f"{spec.max_cells} / {spec.max_records_per_cell}"
        )
    if spec.value is not None:
        lo, hi = spec.bounds  # type: ignore[misc]
        if int(g["min_value"].min()) < lo or int(g["max_value"].max()) > hi:  # type: ignore[arg-type]
            raise AssertionError("clamping failed: a value lies outside the bounds")
