"""The exact, noise-free output of an engine: PRIVATE data, never published.

Engines (local, and later Spark) produce a :class:`BoundedAggregates`: per occupied key
(cell, or cell × category) the count of bounded records and the sum of their clamped
values. It is the only thing that crosses from the data plane to the privacy layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BoundedAggregates"]


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
        int64 sum of clamped, rounded values per key, or ``None`` without a value column.
    """

    cells: np.ndarray
    category: np.ndarray | None
    count: np.ndarray
    sum: np.ndarray | None

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
        return out
