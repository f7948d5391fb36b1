"""The exact, noise-free output of an engine: PRIVATE data, never published.

Engines (local, and later Spark) produce a :class:`BoundedAggregates`: per occupied key
(cell, or cell × category) the count of bounded records and the sum of their clamped
values. It is the only thing that crosses from the data plane to the privacy layer.

Saturation. Every number that reaches the noise lies in ``[-SUM_LIMIT, SUM_LIMIT]``
(``SUM_LIMIT = 2**62``, about 4.6e18): engines form each cell's sum without overflow
(128-bit integers) and saturate it to that range, and every coarser total (hierarchy
levels, adaptive trees, region totals) is formed exactly and saturated again
(:func:`saturate`, :func:`exact_total`). Saturation is 1-Lipschitz: one person moves a
saturated value by at most as much as the unsaturated one, so the sensitivities the noise
is calibrated to stay valid. Without it a sum could wrap around the 64-bit range, and two
neighbouring datasets could then differ by 2**64 in one coordinate: no privacy at all.
The headroom above the limit keeps OpenDP's integer noise from reaching the int64 edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SUM_LIMIT", "BoundedAggregates", "exact_total", "in_range", "saturate"]

#: every coordinate that reaches the noise lies in [-SUM_LIMIT, SUM_LIMIT]
SUM_LIMIT = 2**62


def saturate(values: np.ndarray) -> np.ndarray:
    """``values`` (int64, or Python ints in an object array) clipped to ±SUM_LIMIT, int64."""
    a = np.asarray(values)
    if a.dtype == object:
        flat = [min(max(int(v), -SUM_LIMIT), SUM_LIMIT) for v in a.reshape(-1)]
        return np.array(flat, dtype=np.int64).reshape(a.shape)
    return np.clip(a, -SUM_LIMIT, SUM_LIMIT).astype(np.int64, copy=False)


def exact_total(values: np.ndarray) -> int:
    """The exact sum of integer ``values`` (no wrap-around), saturated to ±SUM_LIMIT."""
    a = np.asarray(values).reshape(-1)
    if a.size and np.abs(a, dtype=np.float64).sum() >= 2.0**62:  # int64 could wrap: exact ints
        total = sum(int(v) for v in a.tolist())
    else:
        total = int(a.sum(dtype=np.int64))
    return min(max(total, -SUM_LIMIT), SUM_LIMIT)


def in_range(values: np.ndarray) -> bool:
    """Whether every value lies in [-SUM_LIMIT, SUM_LIMIT] (checked before any noise)."""
    a = np.asarray(values)
    if a.size == 0:
        return True
    if a.dtype.kind not in "iu":
        raise TypeError(f"noise inputs must be integers, got dtype {a.dtype}")
    return bool(int(a.min()) >= -SUM_LIMIT and int(a.max()) <= SUM_LIMIT)


@dataclass(frozen=True, eq=False, repr=False)
class BoundedAggregates:
    """PRIVATE exact aggregates of bounded data, for occupied keys only.

    Attributes
    ----------
    cells
        int64 H3 ids, one per occupied key.
    category
        int index into the spec's public ``categories`` per key, or ``None``.
    count
        int64 number of bounded records per key.
    sum
        int64 sum of clamped, rounded values per key, saturated to ±:data:`SUM_LIMIT`,
        or ``None`` without a value column.
    hist
        A value histogram (quantiles, value bands): ``(cells, leaf, count)`` arrays, the
        number of bounded records of each cell whose clamped value lies in each leaf of the
        public value tree (occupied pairs only); ``None`` otherwise. With categories, each
        entry's category index is in ``hist_category``.
    people
        int64 number of distinct persons with at least one bounded record per key
        (``people=True``), or ``None``.
    """

    cells: np.ndarray
    category: np.ndarray | None
    count: np.ndarray
    sum: np.ndarray | None
    hist: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    people: np.ndarray | None = None
    #: the category index of each histogram entry (a categorised histogram), or ``None``
    hist_category: np.ndarray | None = None

    def __repr__(self) -> str:  # never print private numbers by accident
        return f"<BoundedAggregates (PRIVATE): {len(self.cells)} occupied keys>"

    def densify(self, domain_cells: np.ndarray, n_categories: int) -> dict[str, np.ndarray]:
        """Scatter onto the public domain (sorted cells × categories), zeros elsewhere.

        Keys outside the domain are a bug of the engine (it must filter them first).
        """
        n = len(domain_cells) * n_categories
        pos = np.searchsorted(domain_cells, self.cells)
        ok = (pos < len(domain_cells)) & (
            domain_cells[np.minimum(pos, len(domain_cells) - 1)] == self.cells
        )
        if not ok.all():
            raise AssertionError("engine returned cells outside the public cell set")
        idx = pos * n_categories + (self.category if self.category is not None else 0)
        out = {"count": np.zeros(n, dtype=np.int64)}
        np.add.at(out["count"], idx, self.count)
        if self.sum is not None:
            out["sum"] = np.zeros(n, dtype=np.int64)
            np.add.at(out["sum"], idx, self.sum)
        if self.people is not None:
            out["people"] = np.zeros(n, dtype=np.int64)
            np.add.at(out["people"], idx, self.people)
        return out

    def histogram_leaves(
        self, domain_cells: np.ndarray, n_categories: int = 1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The histogram as (row, leaf, count): the row of :meth:`densify` (cell position in
        the sorted public domain × ``n_categories`` + category index)."""
        assert self.hist is not None
        cells, leaf, count = self.hist
        pos = np.searchsorted(domain_cells, cells)
        ok = (pos < len(domain_cells)) & (
            domain_cells[np.minimum(pos, len(domain_cells) - 1)] == cells
        )
        if not ok.all():
            raise AssertionError("engine returned cells outside the public cell set")
        if self.hist_category is not None:
            pos = pos * n_categories + np.asarray(self.hist_category, dtype=np.int64)
        return pos, np.asarray(leaf, dtype=np.int64), np.asarray(count, dtype=np.int64)
