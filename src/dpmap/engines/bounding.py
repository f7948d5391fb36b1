"""Bounding each person's contribution, and adding up what is kept (polars, exact, PRIVATE).

The local and streaming engines call these on whole frames or on partitions of persons; the
Spark engine runs the same row preparation (:mod:`dpmap.engines.frames`) and bounds with
Spark's window functions to the same rule. The rule: per person, the ``max_cells`` cells whose
best record has the smallest priority, and in each of them the ``max_records_per_cell``
records of smallest priority (priorities: :func:`dpmap.engines.frames.priorities`). In a panel
the periods come first: per person the ``max_periods`` periods whose best record has the
smallest priority (a continual release, ``spec.earliest_periods``: the EARLIEST
``max_periods`` periods, which periods arriving later cannot change), then in each of them
the ``max_cells`` cells, then the records. The result
is re-checked against the bounds before it leaves (:func:`bound`), so the noise never sees
unbounded data.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from dpmap.aggregates import SUM_LIMIT
from dpmap.engines import frames
from dpmap.engines.frames import CAT as _CAT
from dpmap.engines.frames import CELL as _CELL
from dpmap.engines.frames import PERIOD as _PERIOD
from dpmap.engines.frames import PERSON as _PERSON
from dpmap.engines.frames import PRIO as _PRIO
from dpmap.engines.frames import VALUE as _VALUE
from dpmap.spec import ReleaseSpec

__all__ = ["bound", "group", "keep_first_records", "merge", "person_part"]


#: rows per bounding partition, and the most partitions (see :func:`bound`)
_ROWS_PER_PART = 500_000

_MAX_PARTS = 16

#: the seed of the person hash that re-checks one record per person (see _bound_check)
_CHECK_SEED = 0x5EED


def person_part(parts: int) -> pl.Expr:
    """The partition of each record: a fixed hash of its person, so a person's records
    are always in one partition (bounding a partition = bounding its persons)."""
    return (pl.col(_PERSON).hash(seed=0) % parts).cast(pl.Int64)


def bound(df: pl.DataFrame, spec: ReleaseSpec) -> pl.DataFrame:
    """Keep ≤ L∞ records per (person, cell) and ≤ L0 cells per person (see dpmap._privacy.bounding).

    Bounding looks at one person's records at a time, so the rows are split by
    :func:`person_part` into up to 16 partitions that polars bounds in parallel; the
    priorities (``__prio``, computed here unless present) are per record, so the kept
    records do not depend on the split. Each partition's result is re-checked against
    the bounds in the same parallel pass (:func:`_bound_check`). Partitions also save CPU
    (smaller hash tables per grouping): one record per person at 10 M rows took 2.3 s of
    CPU in 8 partitions, 2.5 s in one (with the earlier selection by a window minimum per
    person, 3.7 s and +440 MB against 4.6 s and +800 MB).
    """
    fields = [_PERSON, _CELL] + [c for c in (_PERIOD, _CAT, _VALUE) if c in df.columns]
    if _PRIO in df.columns:
        x = df.select(*fields, _PRIO)
    else:
        x = df.select(fields)
        x = x.with_columns(frames.priorities(x, spec))
    parts = max(1, min(_MAX_PARTS, x.height // _ROWS_PER_PART))
    if parts == 1:
        kept = [_bound_plan(x.lazy(), spec).drop(_PRIO)]
    else:
        x = x.with_columns(person_part(parts).alias("__part"))
        kept = [
            _bound_plan(x.lazy().filter(pl.col("__part") == i).drop("__part"), spec).drop(_PRIO)
            for i in range(parts)
        ]
    # one pass: polars computes each partition once for its rows and for its check
    done = pl.collect_all(kept + [_bound_check(k, spec) for k in kept])
    out = pl.concat(done[: len(kept)])
    _assert_bounded(pl.concat(done[len(kept) :]), out, spec)
    return out


def _one_per_person(spec: ReleaseSpec, columns: list[str]) -> bool:
    """Whether each person keeps exactly one record (L0 = L∞ = 1, not a panel)."""
    return spec.max_cells == 1 and spec.max_records_per_cell == 1 and _PERIOD not in columns


def keep_first_records(df: pl.DataFrame, spec: ReleaseSpec) -> pl.DataFrame:
    """The rows (with ``__prio``) among the L∞ of smallest priority of their (person, cell):
    a superset of what :func:`bound` keeps from any data that contains these rows."""
    rank = pl.col(_PRIO).rank("ordinal").over(_cell_key(df))
    return df.filter(rank <= spec.max_records_per_cell)


def _cell_key(df: pl.DataFrame | pl.LazyFrame) -> list[str]:
    """What one person's L∞ records are counted in: the cell, and a panel's period."""
    names = df.collect_schema().names() if isinstance(df, pl.LazyFrame) else df.columns
    return [_PERSON] + ([_PERIOD] if _PERIOD in names else []) + [_CELL]


def _bound_plan(lf: pl.LazyFrame, spec: ReleaseSpec) -> pl.LazyFrame:
    """The records kept: per person, (in a panel, the ``max_periods`` periods whose best
    record has the smallest priority — the earliest ones when ``spec.earliest_periods`` —
    and in each of them) the L0 cells whose best record
    has the smallest priority, and in each of them the L∞ records of smallest priority."""
    l0, linf = spec.max_cells, spec.max_records_per_cell
    names = lf.collect_schema().names()
    panel = _PERIOD in names
    if _one_per_person(spec, names):
        # each person keeps exactly one record: their record of smallest priority. One
        # grouping by person, no sort of all rows (at 2 M rows 0.35 s of CPU against 0.43 s
        # for the records of minimal priority per person, then each person's first).
        # Records of equal priority are identical under selection="hash" (the priority
        # hashes the kept fields), so whichever comes first is the same record; a stable
        # sort per person would cost 7x more
        others = [c for c in names if c != _PERSON]
        return lf.group_by(_PERSON).agg(pl.col(others).sort_by(_PRIO).first())
    # One sort instead of window ranks, a group-by and a join (2x faster at 10 M rows):
    # order each person's records by their period's best priority, then period, then their
    # cell's best priority, cell and priority; a record's rank in its cell, its cell's rank
    # in its period and its period's rank in its person are then distances to the start of
    # its run of equal (person, period, cell) / (person, period) / person.
    cell_key = _cell_key(lf)
    lf = lf.with_columns(pl.col(_PRIO).min().over(cell_key).alias("__cp"))
    order = [_PERSON]
    by_best = panel and not spec.earliest_periods  # a continual release: earliest periods
    if panel and spec.earliest_periods:
        order += [_PERIOD]
    elif by_best:
        lf = lf.with_columns(pl.col(_PRIO).min().over([_PERSON, _PERIOD]).alias("__pp"))
        order += ["__pp", _PERIOD]
    lf = lf.sort([*order, "__cp", _CELL, _PRIO])
    row = pl.int_range(pl.len(), dtype=pl.Int64)

    def starts(col: str, outer: pl.Expr) -> pl.Expr:
        return outer | (pl.col(col) != pl.col(col).shift(1)).fill_null(True)

    def rank_in(new: pl.Expr, outer: pl.Expr) -> pl.Expr:
        so_far = new.cast(pl.Int64).cum_sum()
        return so_far - pl.when(outer).then(so_far).forward_fill()

    new_person = (pl.col(_PERSON) != pl.col(_PERSON).shift(1)).fill_null(True)
    new_period = starts(_PERIOD, new_person) if panel else new_person
    new_cell = starts(_CELL, new_period)
    keep = ((row - pl.when(new_cell).then(row).forward_fill()) < linf) & (
        rank_in(new_cell, new_period) < l0
    )
    if panel:
        keep = keep & (rank_in(new_period, new_person) < spec.periods_per_person)
    return lf.filter(keep).drop("__cp", *(["__pp"] if by_best else []))


def _bound_check(kept: pl.LazyFrame, spec: ReleaseSpec) -> pl.LazyFrame:
    """One row: the most records a person keeps in one cell (of a period), the most cells
    (in a period) and, in a panel, the most periods."""
    names = kept.collect_schema().names()
    panel = _PERIOD in names
    if _one_per_person(spec, names):
        # one record per person satisfies both bounds; it holds iff no person repeats
        # (counting distinct persons is much cheaper than grouping by person and cell).
        # Counted on a 64-bit hash of the person (under half the time of the strings): a
        # repeated person always repeats its hash, so "all hashes distinct" proves "all
        # persons distinct"; only the other outcome (a repeat, or two persons of equal
        # hash) is decided exactly by _assert_bounded on the strings
        distinct = _hashed_person().n_unique()
        most = pl.when(pl.len() == distinct).then(pl.len().clip(upper_bound=1)).otherwise(2)
        # computed once, then copied (three uses in one select count the persons thrice)
        return kept.select(most.alias("records")).with_columns(
            pl.col("records").alias("cells"), pl.col("records").alias("periods")
        )
    per_cell = kept.group_by([_PERSON, *([_PERIOD] if panel else []), _CELL]).len()
    if not panel:
        return per_cell.select(
            pl.col("len").max().fill_null(0).alias("records"),
            pl.col(_PERSON).unique_counts().max().fill_null(0).alias("cells"),
            pl.len().clip(upper_bound=1).alias("periods"),
        )
    per_period = per_cell.group_by([_PERSON, _PERIOD]).agg(pl.col("len").max(), pl.len().alias("n"))
    per_person = per_period.group_by(_PERSON).agg(
        pl.col("len").max(), pl.col("n").max(), pl.len().alias("periods")
    )
    return per_person.select(
        pl.col("len").max().fill_null(0).alias("records"),
        pl.col("n").max().fill_null(0).alias("cells"),
        pl.col("periods").max().fill_null(0).alias("periods"),
    )


def _hashed_person() -> pl.Expr:
    """A 64-bit hash of each record's person, for the re-check of one record per person."""
    return pl.col(_PERSON).hash(seed=_CHECK_SEED)


def _assert_bounded(checks: pl.DataFrame, df: pl.DataFrame, spec: ReleaseSpec) -> None:
    """The sensitivity the noise assumes, checked against the bounded data itself.

    ``checks``: the rows of :func:`_bound_check` for the partitions of ``df``.
    """
    worst_records = int(frames.as_float(checks["records"].max() or 0))
    worst_cells = int(frames.as_float(checks["cells"].max() or 0))
    worst_periods = int(frames.as_float(checks["periods"].max() or 0))
    if worst_records > 1 and _one_per_person(spec, df.columns):
        # the hashed check saw a repeat: a repeated person, or two persons of equal hash
        repeats = df.height - df[_PERSON].n_unique()
        worst_records = worst_cells = worst_periods = 2 if repeats else min(df.height, 1)
    if (
        worst_records > spec.max_records_per_cell
        or worst_cells > spec.max_cells
        or worst_periods > spec.periods_per_person
    ):
        raise AssertionError(
            f"bounding failed: a person has {worst_periods} periods / {worst_cells} cells / "
            f"{worst_records} records in a cell (at least), bounds are {spec.periods_per_person} / "
            f"{spec.max_cells} / {spec.max_records_per_cell}"
        )
    if _VALUE in df.columns and df.height:
        lo, hi = spec.bounds  # type: ignore[misc]
        if frames.as_float(df[_VALUE].min()) < lo or frames.as_float(df[_VALUE].max()) > hi:
            raise AssertionError("clamping failed: a value lies outside the bounds")


def group(df: pl.DataFrame, spec: ReleaseSpec) -> pl.DataFrame:
    """Per-key ``count`` (and ``sum``) of the rows: partial aggregates add up (:func:`merge`).

    Sums are formed in 128-bit integers when 64 bits could wrap around (more rows than
    2**62 / M), and saturated by :func:`dpmap.engines.frames.finish`.
    """
    aggs = [pl.len().cast(pl.Int64).alias("count")]
    if spec.value is not None:
        value = pl.col(_VALUE)
        if df.height * spec.value_magnitude >= SUM_LIMIT:
            value = value.cast(pl.Int128)
        aggs.append(value.sum().alias("sum"))
    if spec.people:
        # one marker per (person, key): partial aggregates are of disjoint persons (whole
        # persons per partition), so the markers add up to distinct persons per key, also
        # across the value tree's leaves
        # (marked before grouping: the groups may be finer, per leaf of the value tree)
        first = pl.col(_PERSON).is_first_distinct().over(frames.keys_of(spec))
        df = df.with_columns(first.cast(pl.Int64).alias("__people"))
        aggs.append(pl.col("__people").sum().alias("people"))
    if spec.histogram:
        df = df.with_columns(frames.leaf_expr(spec))
    return df.group_by(frames.group_keys(spec)).agg(aggs)


def merge(groups: list[pl.DataFrame], spec: ReleaseSpec) -> pl.DataFrame:
    """The sum of partial aggregates from :func:`group` (of disjoint sets of rows; none:
    the empty aggregates)."""
    if not groups:
        schema: dict[str, Any] = dict.fromkeys(frames.keys_of(spec), pl.Int64)
        if spec.value is not None:
            schema[_VALUE] = pl.Int64
        if spec.people:
            schema[_PERSON] = pl.String
        return group(pl.DataFrame(schema=schema), spec)
    if len(groups) == 1:
        return groups[0]
    sums = [pl.col("count").sum()]
    if spec.value is not None:  # partial sums add up in 128 bits: no wrap-around
        sums.append(pl.col("sum").cast(pl.Int128).sum())
    if spec.people:
        sums.append(pl.col("people").sum())
    return pl.concat(groups, how="vertical_relaxed").group_by(frames.group_keys(spec)).agg(sums)
