"""The public tree of value bands behind private quantiles and value bands (a base module).

A release with ``quantiles=`` or ``value_bands=`` also publishes a hierarchical histogram of
the clamped values of each row (cell or zone). Its bands are fixed by the public ``bounds``
alone, never by the data: ``[lo, hi]`` is cut into ``BRANCHING`` equal bands, each of those
again, ``DEPTH`` times, so the leaves are ``BRANCHING**DEPTH`` equal bands with edges

    e_k = lo + k·(hi − lo) / BRANCHING**DEPTH,   k = 0 … BRANCHING**DEPTH.

A (clamped, whole) value v lies in leaf ``min(⌊(v − lo)·L / (hi − lo)⌋, L − 1)`` (bands are
half-open ``[e_k, e_{k+1})``, the last one also holds ``hi``), computed in integers so that
every engine puts every value in the same leaf. The tree's nodes are numbered level by level
(level 1: ``BRANCHING`` nodes, …, level ``DEPTH``: the leaves); the root (the row's count) is
not measured. One record adds 1 to exactly one node per level.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = ["BRANCHING", "DEPTH", "ValueTree"]

#: children of every node of the value tree
BRANCHING = 10
#: measured levels below the root (leaves: BRANCHING**DEPTH bands)
DEPTH = 3


@dataclass(frozen=True)
class ValueTree:
    """The public value tree over ``[lo, hi]`` (see the module docstring)."""

    lo: int
    hi: int
    branching: int = BRANCHING
    depth: int = DEPTH

    @property
    def leaves(self) -> int:
        return int(self.branching**self.depth)

    @property
    def nodes(self) -> int:
        """Measured nodes per row (every level but the root)."""
        return sum(self.branching**d for d in range(1, self.depth + 1))

    def level_offset(self, level: int) -> int:
        """Position of the first node of ``level`` (1 … depth) in a row's node vector."""
        return sum(self.branching**d for d in range(1, level))

    def leaf_of(self, values: np.ndarray) -> np.ndarray:
        """The leaf of each clamped whole value (int64 arithmetic, as the engines do)."""
        v = np.asarray(values, dtype=np.int64)
        return np.minimum((v - self.lo) * self.leaves // (self.hi - self.lo), self.leaves - 1)

    def edges(self) -> np.ndarray:
        """The ``leaves + 1`` leaf edges, ``lo`` … ``hi`` (floats)."""
        return self.lo + np.arange(self.leaves + 1) * ((self.hi - self.lo) / self.leaves)

    def edge_position(self, x: float) -> int | None:
        """``k`` when ``x`` is the leaf edge ``e_k`` exactly, else None (exact arithmetic)."""
        k = (Fraction(x) - self.lo) * self.leaves / (self.hi - self.lo)
        if k.denominator != 1 or not 0 <= k <= self.leaves:
            return None
        return int(k)

    def nearest_edges(self, x: float) -> tuple[float, float]:
        """The leaf edges just below and above ``x`` (for an error message's fix)."""
        width = Fraction(self.hi - self.lo, self.leaves)
        k = int((Fraction(x) - self.lo) / width)
        below = self.lo + k * width
        return float(below), float(min(below + width, Fraction(self.hi)))

    def node_matrix(self) -> np.ndarray:
        """The 0/1 matrix (nodes × leaves) that adds leaves up into every measured node."""
        a = np.zeros((self.nodes, self.leaves))
        leaf = np.arange(self.leaves)
        for level in range(1, self.depth + 1):
            node = self.level_offset(level) + leaf // self.branching ** (self.depth - level)
            a[node, leaf] = 1.0
        return a

    def node_vectors(
        self, row: np.ndarray, leaf: np.ndarray, count: np.ndarray, rows: int
    ) -> np.ndarray:
        """Dense node counts (rows × nodes, int64) from per-(row, leaf) record counts."""
        out = np.zeros((rows, self.nodes), dtype=np.int64)
        leaf = np.asarray(leaf, dtype=np.int64)
        for level in range(1, self.depth + 1):
            node = self.level_offset(level) + leaf // self.branching ** (self.depth - level)
            np.add.at(
                out, (np.asarray(row, dtype=np.int64), node), np.asarray(count, dtype=np.int64)
            )
        return out

    def describe(self) -> dict[str, object]:
        return {
            "lo": self.lo,
            "hi": self.hi,
            "branching": self.branching,
            "depth": self.depth,
            "leaves": self.leaves,
            "leaf_width": (self.hi - self.lo) / self.leaves,
            "bands": "half-open [e_k, e_k+1), the last one closed",
        }
