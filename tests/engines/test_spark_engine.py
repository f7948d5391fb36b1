"""The Spark engine agrees with the local engine (engine parity), on ``local[2]``.

The exact, noise-free aggregates are PRIVATE; they are compared here through the
internal ``bound_and_aggregate`` of each engine (the same function ``dpmap.release``
calls), never through a published release. With ``selection="hash"`` and a fixed seed
both engines must keep the same records and so return *identical* arrays (cells,
category, count, sum) and identical PRIVATE diagnostics; bad inputs must raise the same
:class:`dpmap.DpmapError` subclass with the same message.

Spark runs in one shared session (started once, ~5-15 s). The tests skip, with the
reason, when pyspark or Java is missing — and fail instead when the environment variable
``CI`` is set (``.ci/run`` installs a Java runtime and the ``spark`` extra).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest

import dpmap
from common import (
    REGION,
    RESOLUTION,
    as_geodataframe,
    debtors,
    leaky_debtors,
    skip_or_fail,
    write_parquet,
)
from dpmap import DataFileError, Diagnostics, DpmapError, InputError, SpecError
from dpmap.engines import frames, local
from dpmap.engines import spark as spark_engine
from dpmap.grid import region_to_cells, to_region
from dpmap.spec import ReleaseSpec
from parity import (
    BAD,
    NOTHING_USABLE,
    PARITY,
    ZONE_PARITY,
    assert_same,
    heavy_person,
    random_points,
    spec_of,
    zone_points,
    zone_spec_of,
)

pytestmark = pytest.mark.filterwarnings(
    # pyspark warns about pandas >= 3 when converting; dpmap talks to Spark through Arrow
    "ignore:.*PySpark does not yet fully support pandas:FutureWarning"
)

DOMAIN = region_to_cells(to_region(REGION), RESOLUTION)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        skip_or_fail("pyspark is not installed (pip install 'dpmap[spark]')")
    if shutil.which("java") is None and not _java_home():
        skip_or_fail("Java is not installed; the Spark engine needs a JVM (Java 17+)")

    created = SparkSession.getActiveSession() is None
    try:
        session = spark_engine.get_session()
    except Exception as exc:  # pragma: no cover - depends on the machine
        skip_or_fail(f"cannot start a local Spark session: {exc}")
    yield session
    if created:
        session.stop()


def _java_home() -> bool:
    import os

    home = os.environ.get("JAVA_HOME")
    return bool(home) and Path(home, "bin", "java").exists()


def to_spark(spark: Any, df: pd.DataFrame | pl.DataFrame, partitions: int | None = None) -> Any:
    """The same rows as a Spark DataFrame (via Arrow, so nulls stay nulls)."""
    pdf = df if isinstance(df, pl.DataFrame) else pl.from_pandas(df)
    sdf = spark.createDataFrame(pdf.to_arrow(compat_level=pl.CompatLevel.oldest()))
    return sdf if partitions is None else sdf.repartition(partitions)


def both(
    spark: Any, df: pd.DataFrame | pl.DataFrame, spec: ReleaseSpec, domain: Any = DOMAIN
) -> tuple[Any, Any, Diagnostics, Diagnostics]:
    d_local, d_spark = Diagnostics(), Diagnostics()
    a = local.bound_and_aggregate(df, spec, domain, d_local)
    b = spark_engine.bound_and_aggregate(to_spark(spark, df), spec, domain, d_spark)
    return a, b, d_local, d_spark


# ------------------------------------------------------------------------------ datasets


@pytest.mark.parametrize("name", list(PARITY))
def test_parity_bounded_aggregates(spark: Any, name: str) -> None:
    make, kw = PARITY[name]
    a, b, d_local, d_spark = both(spark, make(), spec_of(**kw))
    assert_same(a, b)
    assert d_local == d_spark
    assert d_spark.rows_read > 0 and d_spark.records_used == int(b.count.sum())


@pytest.mark.parametrize("name", list(ZONE_PARITY))
def test_parity_zone_aggregates(spark: Any, name: str) -> None:
    """A zone release: Spark puts every point in the same zone (borders, holes, outside)
    as the local engine, in every partition, and bounds to the same aggregates."""
    spec = zone_spec_of(**ZONE_PARITY[name])
    assert spec.zones is not None
    d_local, d_spark = Diagnostics(), Diagnostics()
    a = local.bound_and_aggregate(zone_points(), spec, spec.zones.domain, d_local)
    sdf = to_spark(spark, zone_points(), partitions=3)
    b = spark_engine.bound_and_aggregate(sdf, spec, spec.zones.domain, d_spark)
    assert_same(a, b)
    assert d_local == d_spark
    assert set(a.cells.tolist()) == set(range(5))


@pytest.mark.parametrize("name", list(NOTHING_USABLE))
def test_parity_nothing_usable(spark: Any, name: str) -> None:
    """No usable point is empty aggregates (not an error) on both engines, same notes."""
    make, kw = NOTHING_USABLE[name]
    a, b, d_local, d_spark = both(spark, make(), spec_of(**kw))
    assert_same(a, b)
    assert len(b.cells) == 0
    assert d_local == d_spark and d_spark.private_notes


def test_parity_heavy_person_is_really_bounded(spark: Any) -> None:
    """The heavy person keeps exactly L0·L∞ records; every ordinary person its own."""
    df = heavy_person()
    spec = spec_of(person="pid", max_cells=5, max_records_per_cell=3)
    a, b, d_local, d_spark = both(spark, df, spec)
    assert_same(a, b)
    assert d_local == d_spark
    others = df[df.pid != "the-heavy-one"]
    assert int(b.count.sum()) == 5 * 3 + 200 * 4  # each debtor: 4 cells x 1 record
    assert d_spark.persons == 201 and len(others) == 800


def test_parity_discovery_without_region(spark: Any) -> None:
    a, b, d_local, d_spark = both(spark, random_points(), spec_of(person="pid"), domain=None)
    assert_same(a, b)
    assert d_local == d_spark
    assert d_spark.rows_outside_region == 0


def test_parity_is_independent_of_batches_and_partitions(spark: Any) -> None:
    """Tiny Arrow batches and many partitions do not change the kept records."""
    df = heavy_person(3000)
    spec = spec_of(person="pid", value="amount", bounds=(0, 2500), max_cells=4)
    expected = local.bound_and_aggregate(df, spec, DOMAIN)
    old = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "97")
    try:
        got = spark_engine.bound_and_aggregate(to_spark(spark, df, 11), spec, DOMAIN)
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", old)
    assert_same(expected, got)


def test_pandas_input_and_natural_spark_frame(spark: Any) -> None:
    """``engine="spark"`` takes a pandas frame or a GeoDataFrame (through the local reader);
    ``createDataFrame(pandas)`` (NaN, not null, for missing coordinates) gives the same too."""
    df = leaky_debtors()
    spec = spec_of(person="pid", value="amount", bounds=(0, 2000))
    expected = local.bound_and_aggregate(df, spec, DOMAIN)
    assert_same(expected, spark_engine.bound_and_aggregate(df, spec, DOMAIN))
    assert_same(expected, spark_engine.bound_and_aggregate(spark.createDataFrame(df), spec, DOMAIN))
    geo = debtors(60, 2, 3)  # a GeoDataFrame: coordinates come from its geometry
    assert_same(
        local.bound_and_aggregate(geo, spec, DOMAIN),
        spark_engine.bound_and_aggregate(as_geodataframe(geo, 3857), spec, DOMAIN),
    )


def test_random_selection_still_bounds(spark: Any) -> None:
    """``selection="random"`` need not match the local engine, but it bounds the same way."""
    df = heavy_person(2000)
    spec = ReleaseSpec(resolution=RESOLUTION, epsilon=1.0, person="pid", max_cells=3)
    diag = Diagnostics()
    got = spark_engine.bound_and_aggregate(to_spark(spark, df), spec, DOMAIN, diag)
    assert int(got.count.sum()) == 3 + 200 * 3  # 3 cells each, 1 record per cell
    assert diag.persons == 201


# -------------------------------------------------------------- priorities are batch-free


def test_hash_priority_does_not_depend_on_batches() -> None:
    """polars' struct hash of the same values and dtypes is the same in any batch split,
    with or without nulls filtered out first and after an Arrow round trip."""
    rng = np.random.default_rng(3)
    n = 20_000
    df = pl.DataFrame(
        {
            frames.PERSON: [f"p{i}" if i % 31 else None for i in rng.integers(0, 900, n)],
            frames.CELL: rng.integers(0, 2**62, n),
            frames.CAT: rng.integers(0, 3, n),
            frames.VALUE: rng.integers(-5, 2000, n),
        }
    )
    spec = spec_of(
        person="pid", value="amount", bounds=(0, 1), category="c", categories=["a"], seed=99
    )
    clean = df.filter(pl.col(frames.PERSON).is_not_null())
    whole = frames.priorities(clean, spec)
    parts = []
    for start in range(0, n, 1234):
        batch = pl.DataFrame(
            pl.from_arrow(df.slice(start, 1234).to_arrow(compat_level=pl.CompatLevel.oldest()))
        ).filter(pl.col(frames.PERSON).is_not_null())
        parts.append(frames.priorities(batch, spec))
    assert pl.concat(parts).equals(whole)


# ------------------------------------------------------------------------------ release


def test_release_of_a_spark_frame_matches_local(spark: Any) -> None:
    df = debtors(150, 3, 5)
    params: dict[str, Any] = dict(
        region=REGION, resolution=RESOLUTION, epsilon=1.0, person="pid", value="amount",
        bounds=(0, 2000), max_cells=2, selection="hash", seed=5,
    )  # fmt: skip
    d_local, d_spark = Diagnostics(), Diagnostics()
    rel_local = dpmap.release(df, diagnostics=d_local, **params)
    rel_spark = dpmap.release(to_spark(spark, df), diagnostics=d_spark, **params)  # auto: spark
    assert d_local == d_spark
    a, b = rel_local.cells, rel_spark.cells
    assert list(a.columns) == list(b.columns)
    assert list(a.dtypes) == list(b.dtypes)
    assert a["cell"].tolist() == b["cell"].tolist()
    assert _without_time(rel_local.manifest) == _without_time(rel_spark.manifest)


def _without_time(manifest: dict[str, Any]) -> Any:
    """The manifest with its creation time (also quoted in the statement) blanked out."""
    return json.loads(json.dumps(manifest).replace(str(manifest["created"]), "<created>"))


def test_release_reads_parquet_with_spark(spark: Any, tmp_path: Path) -> None:
    df = debtors(80, 2, 4)
    path = write_parquet(df, tmp_path)
    kw: dict[str, Any] = dict(region=REGION, resolution=RESOLUTION, epsilon=1.0, person="pid")
    d_local, d_spark = Diagnostics(), Diagnostics()
    dpmap.release(path, diagnostics=d_local, **kw)
    rel = dpmap.release(str(path), engine="spark", diagnostics=d_spark, **kw)
    assert d_local == d_spark and d_spark.rows_read == 160
    assert len(rel.cells) > 0
    spec = spec_of(person="pid")
    assert_same(
        local.bound_and_aggregate(path, spec, DOMAIN),
        spark_engine.bound_and_aggregate(path, spec, DOMAIN),
    )


def test_unknown_engine_is_refused() -> None:
    with pytest.raises(SpecError, match="engine must be one of"):
        dpmap.release(debtors(5, 1, 1), region=REGION, resolution=RESOLUTION, epsilon=1.0,
                      engine="dask")  # fmt: skip


def test_missing_pyspark_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(dpmap.MissingDependencyError, match=r"dpmap\[spark\]"):
        spark_engine.bound_and_aggregate(debtors(5, 1, 1), spec_of(), DOMAIN)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_same_error(spark: Any, name: str) -> None:
    make, kw = BAD[name]
    df = make()
    spec = spec_of(**kw)
    with pytest.raises(DpmapError) as local_err:
        local.bound_and_aggregate(df, spec, DOMAIN)
    with pytest.raises(DpmapError) as spark_err:
        spark_engine.bound_and_aggregate(to_spark(spark, df), spec, DOMAIN)
    assert type(spark_err.value) is type(local_err.value)
    assert str(spark_err.value) == str(local_err.value)


def test_bad_files_same_error(spark: Any, tmp_path: Path) -> None:
    header_only = tmp_path / "header.csv"
    header_only.write_text("lat,lng,pid\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    cases = [tmp_path / "nope.parquet", tmp_path / "points.txt", empty]
    (tmp_path / "points.txt").write_text("lat,lng\n1,2\n")
    for path in cases:
        with pytest.raises(DpmapError) as local_err:
            local.bound_and_aggregate(str(path), spec_of(), DOMAIN)
        with pytest.raises(DpmapError) as spark_err:
            spark_engine.bound_and_aggregate(str(path), spec_of(), DOMAIN)
        assert type(spark_err.value) is type(local_err.value), path.name
        assert str(spark_err.value) == str(local_err.value), path.name
    assert isinstance(spark_err.value, InputError)  # the 0-byte file has no columns
    # a header-only file is an empty dataset, not an error (a refusal would be a free answer)
    a = local.bound_and_aggregate(str(header_only), spec_of(), DOMAIN)
    b = spark_engine.bound_and_aggregate(str(header_only), spec_of(), DOMAIN)
    assert len(a.cells) == len(b.cells) == 0
    with pytest.raises(DataFileError):
        spark_engine.bound_and_aggregate(str(tmp_path / "nope.parquet"), spec_of(), DOMAIN)
