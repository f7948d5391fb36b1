"""What the Spark engine's executors run: the row preparation of each Arrow batch.

:mod:`dpmap.engines.spark` hands :class:`PrepareBatches` to ``mapInArrow``. Spark pickles it
by reference, so an executor imports this module and what it needs to prepare rows
(:mod:`dpmap.engines.frames`: polars, polars-h3, the spec) and nothing else: not the Spark
engine's driver code, not pandas, OpenDP or the rest of dpmap (``import dpmap`` is light;
``tests/engines/test_spark_worker.py`` checks what unpickling one imports).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from dpmap.engines import frames
from dpmap.engines.frames import PRIO

if TYPE_CHECKING:
    import numpy as np

    from dpmap.spec import ReleaseSpec

__all__ = ["PrepareBatches"]


@dataclass(frozen=True, eq=False)
class PrepareBatches:
    """The ``mapInArrow`` function: the local engine's row preparation on each batch.

    Each batch of the (projected) points becomes its binned, filtered, clamped rows with
    their priorities (when persons are bounded), in ``schema``; after the last batch, one
    summary row whose ``diag_column`` holds the partition's
    :class:`~dpmap.engines.frames.RowCounts` (its other columns null).
    """

    spec: ReleaseSpec
    domain: np.ndarray | None  # the public cells, sorted (None: no region)
    schema: pa.Schema
    diag_column: str

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        spec, schema, diag = self.spec, self.schema, self.diag_column
        data_names = [n for n in schema.names if n != diag]
        total = frames.RowCounts()
        for rb in batches:
            df, counts = frames.prepare_rows(pl.DataFrame(pl.from_arrow(rb)), spec, self.domain)
            total = total.merge(counts)
            if df.height == 0:
                continue
            if spec.person is not None:  # the local engine's priorities (fresh for "random")
                prio = frames.priorities(df, spec)
                # u64 -> i64 preserving order (Spark has no unsigned longs): flip the top bit
                df = df.with_columns(
                    (prio ^ pl.lit(1 << 63, dtype=pl.UInt64)).reinterpret(signed=True).alias(PRIO)
                )
            table = df.select(data_names).to_arrow(compat_level=pl.CompatLevel.oldest())
            table = table.append_column(diag, pa.nulls(df.height, schema.field(diag).type))
            yield from table.cast(schema).to_batches()
        summary = {n: pa.nulls(1, schema.field(n).type) for n in data_names}
        # through polars: pa.array on a Python list would import pandas (pyarrow checks it)
        counts = pl.Series(diag, [total.as_floats()], dtype=pl.List(pl.Float64)).to_arrow()
        summary[diag] = counts.cast(schema.field(diag).type)
        yield pa.RecordBatch.from_pydict(summary, schema=schema)
