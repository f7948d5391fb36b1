"""The streaming engine: the local engine's exact aggregates in bounded memory.

For inputs larger than memory (a 100 M-row Parquet file) on one machine. Two passes:

1. **Read in batches** (:data:`BATCH_ROWS` rows at a time; :func:`_batches`) and
   run the local engine's own row preparation on each batch
   (:func:`~dpmap.engines.frames.prepare_rows`: drop, bin, filter, clamp; each decision
   looks at one row, so batches change nothing) and record priorities
   (:func:`~dpmap.engines.frames.priorities`: a keyed hash of the record's own
   fields, or fresh operating-system randomness per record for ``selection="random"``). The prepared rows —
   person, cell, category, value, priority: no coordinates — are **spilled** to Arrow IPC
   files in a private temporary folder (mode 0700, removed when the release ends, also on
   errors), split into :data:`SPILL_BUCKETS` buckets by a hash of the person
   (:func:`~dpmap.engines.bounding.person_part`), so each person's records are all in one
   bucket. Without a person column each record is its own person and nothing is
   spilled: the batches' per-cell counts are added up as they come.
2. **Bound each partition** — consecutive buckets of about :data:`PART_BYTES` spilled
   bytes — with the local engine's :func:`~dpmap.engines.bounding.bound` (which re-checks
   the bounds) and aggregate it; the partitions' per-cell counts and sums are added up.

Bounding a partition bounds exactly the persons in it, and the priorities do not depend
on batches or partitions, so with ``selection="hash"`` the aggregates are identical to
the local engine's (a test checks this); peak memory is about one batch plus one
partition. The spilled files hold PRIVATE rows: they never leave the temporary folder,
which honours ``TMPDIR``. A bucket made huge by one person's millions of records is
read in pieces that keep only the records the bounding could select
(:func:`_read_partition`); only a person with records in millions of *cells* would still
have to fit in memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from dpmap.aggregates import BoundedAggregates
from dpmap.diagnostics import Diagnostics
from dpmap.engines import bounding, frames
from dpmap.engines.frames import PERSON as _PERSON
from dpmap.errors import DataFileError, InputError
from dpmap.io import is_parquet_path, read_points, safe_message
from dpmap.spec import ReleaseSpec

__all__ = ["BATCH_ROWS", "bound_and_aggregate"]

#: rows read per batch
BATCH_ROWS = 1_000_000
#: buckets (by a hash of the person) the prepared rows are spilled into
SPILL_BUCKETS = 64
#: spilled bytes bounded at a time (~4 M rows of 32 bytes: ~1 GB of working memory)
PART_BYTES = 128 << 20


def bound_and_aggregate(
    points: Any,
    spec: ReleaseSpec,
    domain: np.ndarray | None,
    diagnostics: Diagnostics | None = None,
    *,
    batch_rows: int = BATCH_ROWS,
    part_bytes: int = PART_BYTES,
) -> BoundedAggregates:
    """PRIVATE exact aggregates of the bounded data; same contract as the local engine's.

    ``batch_rows``: rows read at a time; ``part_bytes``: spilled bytes bounded at a time.
    """
    diag = diagnostics if diagnostics is not None else Diagnostics()
    lf = frames.project(read_points(points, spec), spec)
    counts = frames.RowCounts()
    groups: list[pl.DataFrame] = []
    with tempfile.TemporaryDirectory(prefix="dpmap-spill-") as tmp:
        for i, batch in enumerate(_batches(points, lf, batch_rows)):
            rows, c = frames.prepare_rows(batch, spec, domain)
            counts = counts.merge(c)
            if not rows.height:
                continue
            if spec.person is None:  # every record is its own person: nothing to bound
                groups = _compact([*groups, bounding.group(rows, spec)], spec)
                continue
            rows = rows.with_columns(
                frames.priorities(rows, spec), bounding.person_part(SPILL_BUCKETS).alias("__part")
            )
            _spill(rows, Path(tmp), i)
            del rows, batch
        frames.record_and_check(counts, diag, spec, domain is not None)
        used = counts.rows_left
        if spec.person is not None:
            used, persons = 0, 0
            for files in _partitions(Path(tmp), part_bytes):
                bounded = bounding.bound(_read_partition(files, spec, part_bytes), spec)
                used += bounded.height
                if diagnostics is not None:
                    persons += int(bounded[_PERSON].n_unique())
                groups = _compact([*groups, bounding.group(bounded, spec)], spec)
                del bounded
                for f in files:
                    f.unlink()
            if diagnostics is not None:
                diag.persons = persons
    diag.records_cut_by_bounding = counts.rows_left - used
    diag.records_used = used
    return frames.finish(bounding.merge(groups, spec), spec, diag)


def _spill(rows: pl.DataFrame, folder: Path, batch: int) -> None:
    """Append a batch's prepared rows to the person buckets' files in ``folder``."""
    try:
        for (part,), sub in rows.partition_by("__part", as_dict=True, include_key=False).items():
            sub.write_ipc(folder / f"{part}-{batch}.arrow")
    except OSError as exc:
        raise DataFileError(
            f"cannot write the streaming engine's temporary files in {str(folder.parent)!r} "
            f"({exc.strerror or exc}); set TMPDIR to a folder with free space about the size "
            "of the points file"
        ) from exc


def _batches(points: Any, lf: pl.LazyFrame, batch_rows: int) -> Iterator[pl.DataFrame]:
    """The projected points in batches, with the local engine's reading errors.

    A Parquet file is read by slices (polars reads only the row groups a slice needs, so
    memory stays at one batch: 0.2 GB for 1 M-row slices of a 100 M-row file); anything
    else through polars' streaming engine (``collect_batches``), which reads ahead (up to
    ~1 GB measured on the same file) — slicing a CSV file would re-read it from the start.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    try:
        if is_parquet_path(points):
            offset = 0
            while True:
                batch = lf.slice(offset, batch_rows).collect()
                if batch.height == 0:
                    return
                offset += batch.height
                yield batch
        else:
            yield from lf.collect_batches(chunk_size=batch_rows)
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the points: {safe_message(exc)}") from exc
    except OSError as exc:
        raise InputError(f"cannot read the points: {exc}") from exc


def _partitions(folder: Path, part_bytes: int) -> Iterator[list[Path]]:
    """The spilled files, grouped into partitions of whole buckets of about ``part_bytes``.

    A bucket holds whole persons, so a union of buckets does too; a bucket larger than
    ``part_bytes`` is a partition of its own.
    """
    files: list[Path] = []
    size = 0
    for bucket in range(SPILL_BUCKETS):
        these = sorted(folder.glob(f"{bucket}-*.arrow"))
        files += these
        size += sum(f.stat().st_size for f in these)
        if files and size >= part_bytes:
            yield files
            files, size = [], 0
    if files:
        yield files


def _read_partition(files: list[Path], spec: ReleaseSpec, part_bytes: int) -> pl.DataFrame:
    """A partition's spilled rows, in bounded memory even when one person has very many.

    A partition larger than twice ``part_bytes`` — one bucket holding a person with
    millions of records — is read in pieces of about ``part_bytes``, and each piece keeps
    only its L∞ records of smallest priority per (person, cell). That loses nothing: a
    record with L∞ records of smaller priority in its (person, cell) within a piece has
    at least as many in the whole data, so the bounding would never keep it. A person
    with millions of records in few cells then shrinks to a few per cell and piece.
    """
    sizes = [f.stat().st_size for f in files]
    if sum(sizes) <= 2 * part_bytes:
        return pl.scan_ipc(files).collect()
    pieces: list[pl.DataFrame] = []
    chunk: list[Path] = []
    size = 0
    for f, n in zip(files, sizes, strict=True):
        chunk.append(f)
        size += n
        if size >= part_bytes or f is files[-1]:
            pieces.append(bounding.keep_first_records(pl.scan_ipc(chunk).collect(), spec))
            chunk, size = [], 0
    return pl.concat(pieces)


def _compact(groups: list[pl.DataFrame], spec: ReleaseSpec) -> list[pl.DataFrame]:
    """Keep the partial aggregates small: merge them once there are many."""
    return [bounding.merge(groups, spec)] if len(groups) >= 16 else groups
