"""The local engine: validate, bin, bound and aggregate on one machine with polars.

This is the exact, noise-free data plane. It never imports OpenDP and never publishes
anything: it returns PRIVATE :class:`~dpmap.aggregates.BoundedAggregates` and fills the
PRIVATE :class:`~dpmap.Diagnostics`. Validation, row preparation (cleaning, binning,
region filter, clamping) and record priorities live in :mod:`dpmap.engines.frames`,
which the Spark engine runs on each Arrow batch, so both engines keep the same records.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import polars as pl

from dpmap.aggregates import BoundedAggregates
from dpmap.diagnostics import Diagnostics
from dpmap.engines import bounding, frames
from dpmap.engines.frames import PERSON as _PERSON
from dpmap.errors import InputError
from dpmap.io import read_points, safe_message
from dpmap.spec import ReleaseSpec

__all__ = ["STREAM_ABOVE_BYTES", "bound_and_aggregate"]


def bound_and_aggregate(
    points: Any,
    spec: ReleaseSpec,
    domain: np.ndarray | None,
    diagnostics: Diagnostics | None = None,
) -> BoundedAggregates:
    """PRIVATE exact aggregates of the bounded data (see :mod:`dpmap._privacy.bounding`).

    ``domain``: the sorted public cell set (int64), or ``None`` for private discovery.
    The whole input is read into memory: :func:`dpmap.engines.engine_for` sends a points
    file larger than :data:`STREAM_ABOVE_BYTES` to the streaming engine instead.
    """
    diag = diagnostics if diagnostics is not None else Diagnostics()
    lf = frames.project(read_points(points, spec), spec)
    try:
        df = lf.collect()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the points: {safe_message(exc)}") from exc
    except OSError as exc:
        raise InputError(f"cannot read the points: {exc}") from exc
    df, counts = frames.prepare_rows(df, spec, domain)
    frames.record_and_check(counts, diag, spec, domain is not None)

    before = df.height
    if spec.person is not None:
        df = bounding.bound(df, spec)
        if diagnostics is not None:  # only when the data owner asked: costly on large inputs
            diag.persons = int(df[_PERSON].n_unique())
    diag.records_cut_by_bounding = before - df.height
    diag.records_used = df.height
    return frames.finish(bounding.group(df, spec), spec, diag)


#: points files above this size are released by the streaming engine (bounded memory)
STREAM_ABOVE_BYTES = 1 << 30


def is_large_file(points: Any) -> bool:
    """Whether ``points`` is the path of an existing file above :data:`STREAM_ABOVE_BYTES`."""
    if not isinstance(points, (str, os.PathLike)):
        return False
    try:
        return os.path.getsize(points) > STREAM_ABOVE_BYTES
    except (OSError, ValueError):  # missing, not a file, a NUL in the path, ...
        return False  # read_points reports a bad path with its own message
