"""Engines: the exact, noise-free data plane (read, clean, bin, bound, aggregate: PRIVATE).

- :mod:`~dpmap.engines.frames`: row preparation shared by every engine (column checks,
  cleaning, binning to H3, the region filter, clamping, record priorities).
- :mod:`~dpmap.engines.bounding`: each person's contribution bounded, then added up (polars).
- :mod:`~dpmap.engines.local`: one machine, in memory (polars).
- :mod:`~dpmap.engines.streaming`: one machine, bounded memory (batches, a private spill folder).
- :mod:`~dpmap.engines.spark`: a Spark cluster (PySpark; optional).

Every engine returns the same :class:`~dpmap.aggregates.BoundedAggregates` for the same input
(parity tests). No engine imports OpenDP or draws noise. :func:`engine_for` is the one place
where the engine of a release is chosen.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from dpmap.errors import SpecError

__all__ = ["engine_for"]


def engine_for(points: Any, engine: str | None) -> ModuleType:
    """The engine module that bins, bounds and aggregates ``points``.

    ``engine=None`` picks one: Spark for a pyspark DataFrame, the local engine otherwise. A
    points file larger than :data:`dpmap.engines.local.STREAM_ABOVE_BYTES` given to the local
    engine goes to the streaming engine (bounded memory, the same aggregates). The engines are
    imported here, on demand: Spark's is optional and heavy.
    """
    from dpmap.engines import local

    if engine is None:
        from dpmap.engines.spark import is_spark_dataframe

        engine = "spark" if is_spark_dataframe(points) else "local"
    if engine == "local" and not local.is_large_file(points):
        return local
    if engine in ("local", "streaming"):
        from dpmap.engines import streaming

        return streaming
    if engine == "spark":
        from dpmap.engines import spark

        return spark
    raise SpecError(
        f"engine must be one of 'local', 'streaming', 'spark' or None (auto), got {engine!r}"
    )
