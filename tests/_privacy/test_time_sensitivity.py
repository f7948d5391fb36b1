"""Coarse time levels of a panel: the sensitivity formulas against brute force.

A person of a panel keeps records in at most P periods, at most L0 cells per period and at
most L∞ records per (cell, period). The brute force below enumerates every such person on a
few cells and periods (records only ever add, so a person with L∞ records in each kept
(cell, period) moves every coordinate the most: it suffices to enumerate which (cell,
period) pairs are kept), adds the periods up into the groups of a coarse level, and takes
the largest L1, L2² and L∞ of the person's contribution. The formulas must equal these
maxima exactly (not only bound them).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dpmap._privacy.bounding import (
    packed_periods,
    sensitivities,
    sqrt_up,
    time_level_sensitivity,
    time_sensitivities,
)
from dpmap.spec import ReleaseSpec


def _brute(group_of: list[int], cells: int, l0: int, linf: int) -> dict[int, tuple[int, ...]]:
    """Per P (the person's periods): the largest (L1, L2², L∞) of one person's contribution
    to the (cells × groups) vector, over every person keeping at most P periods."""
    ngroups = max(group_of) + 1
    subsets = [s for r in range(l0 + 1) for s in itertools.combinations(range(cells), r)]
    # one row per subset of cells kept in a period (at most L0; subset 0 is the empty one)
    incidence = np.zeros((len(subsets), cells), dtype=np.int64)
    for i, s in enumerate(subsets):
        incidence[i, list(s)] = linf
    choice = np.array(list(itertools.product(range(len(subsets)), repeat=len(group_of))))
    v = np.zeros((len(choice), cells, ngroups), dtype=np.int64)  # every person at once
    for period, group in enumerate(group_of):
        v[:, :, group] += incidence[choice[:, period]]
    used = (choice > 0).sum(axis=1)
    found = np.stack([v.sum(axis=(1, 2)), (v * v).sum(axis=(1, 2)), v.max(axis=(1, 2))], 1)
    # at most P periods: the best over every person with P' ≤ P periods
    return {
        p: tuple(int(x) for x in found[used <= p].max(axis=0)) for p in range(len(group_of) + 1)
    }


def _groups(sizes: list[int]) -> list[int]:
    return [g for g, n in enumerate(sizes) for _ in range(n)]


@pytest.mark.parametrize(
    "sizes",
    [[3, 2], [1, 3], [2, 2, 2], [4, 1], [1, 1, 1], [2, 3, 1], [5]],
    ids=str,
)
@pytest.mark.parametrize("l0,linf", [(1, 1), (2, 1), (1, 2), (2, 3)])
def test_formulas_equal_brute_force(sizes: list[int], l0: int, linf: int) -> None:
    """Exact for equal and unequal (partial) groups, every P from 1 to all periods."""
    group_of = _groups(sizes)
    brute = _brute(group_of, l0 + 1, l0, linf)
    for p in range(1, len(group_of) + 1):
        l1, l2sq, lmax = brute[p]
        sens = time_level_sensitivity(
            max_cells=l0, max_records_per_cell=linf, max_periods=p, group_sizes=sizes
        )
        assert (sens.l1, sens.linf) == (l1, lmax), (sizes, p)
        assert sens.l2 == sqrt_up(l2sq), (sizes, p, sens.l2**2, l2sq)


def test_packing_fills_the_largest_groups_first() -> None:
    assert packed_periods(5, [2, 4, 3]) == [0, 4, 1]
    assert packed_periods(12, [3, 3, 3, 3]) == [3, 3, 3, 3]
    assert packed_periods(2, [1, 3, 1]) == [0, 2, 0]
    with pytest.raises(ValueError, match="at least 1"):
        packed_periods(0, [3])


@pytest.mark.parametrize("p", [1, 3, 12])
def test_equal_groups_closed_form_and_the_finest_level(p: int) -> None:
    """Equal groups of g: Σ k² = ⌊P/g⌋·g² + (P mod g)²; groups of one period (the panel's
    own months) give √(P·L0)·L∞; a year over twelve months gives min(P, 12)·√L0·L∞."""
    for g in (1, 3, 12):
        sens = time_level_sensitivity(
            max_cells=4, max_records_per_cell=2, max_periods=p, group_sizes=[g] * (12 // g)
        )
        packed = (p // g) * g * g + (p % g) ** 2
        assert sens.l2 == sqrt_up(4 * 4 * packed)
        assert sens.l1 == p * 4 * 2
        assert sens.linf == min(p, g) * 2
        assert sens.l0 == p * 4


def test_from_a_spec_matches_the_flat_sensitivities_for_one_period() -> None:
    """One period per person and groups of one period: the flat release's numbers (counts,
    and sums scaled by M)."""
    spec = ReleaseSpec(
        epsilon=1.0,
        resolution=7,
        person="person",
        max_cells=3,
        max_records_per_cell=2,
        value="amount",
        bounds=(0, 500),
    )
    flat = sensitivities(spec)
    coarse = time_sensitivities(spec, 1, [1] * 6)
    assert set(coarse) == {"count", "sum"}
    for stat in coarse:
        assert coarse[stat] == flat[stat]
    year = time_sensitivities(spec, 12, [12])
    assert year["sum"].l2 == sqrt_up(3 * 4 * 500**2 * 144)
    assert year["sum"].linf == 12 * 2 * 500
