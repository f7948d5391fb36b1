"""Contribution bounding: its semantics, the sensitivities that follow, and a reference.

Semantics (the privacy unit is one person; neighbouring datasets add or remove all of
one person's records):

1. Rows outside the public cell set, with missing coordinates, a missing person id or a
   missing value are dropped (each decision looks at that row only).
2. Each person keeps at most ``L∞ = max_records_per_cell`` records in each cell: those
   with the smallest *priority*.
3. Each person keeps at most ``L0 = max_cells`` cells: those whose smallest kept
   priority is smallest.
4. Values are clamped to ``bounds = (lo, hi)`` and rounded to whole units.

A record's priority depends only on that record (keyed hash) or on fresh randomness
(random priorities), so which of a person's records survive depends only on that
person's own records. After bounding, one person changes each cell's count by at most
L∞, touches at most L0 cells, and changes a cell's sum by at most L∞·M with
M = max(|lo|, |hi|). :func:`sensitivities` turns that into the L1/L2 sensitivities that
the noise is calibrated to — the only place where they are derived.

:func:`bound_reference` is a tiny pure-Python implementation of the same rules, used by
the tests to check the engines.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from fractions import Fraction

from dpmap.spec import ReleaseSpec

__all__ = [
    "Sensitivity",
    "bound_reference",
    "histogram_sensitivity",
    "kept_reference",
    "level_sensitivities",
    "packed_periods",
    "people_reference",
    "people_sensitivity",
    "sensitivities",
    "time_level_sensitivity",
    "time_sensitivities",
]


@dataclass(frozen=True)
class Sensitivity:
    """How much one person can change a statistic's vector over all published cells.

    ``l1`` and ``linf`` are exact integers; ``l2`` is √(L0·L∞²(·M²)) rounded UP to the
    next float, so the sensitivity the Gaussian noise assumes is never too small.
    ``l0`` is the number of output coordinates one person can touch.
    """

    l0: int
    l1: int
    l2: float
    linf: int


def sqrt_up(n: int) -> float:
    """The smallest float whose square is at least the integer ``n`` (√n rounded up)."""
    root = math.sqrt(n)
    while Fraction(root) ** 2 < n:
        root = math.nextafter(root, math.inf)
    return root


def sensitivities(spec: ReleaseSpec) -> dict[str, Sensitivity]:
    """Sensitivity of each statistic's per-cell vector under adding/removing one person.

    With L0 = ``max_cells``, L∞ = ``max_records_per_cell`` (both 1 when each row is a
    person) and M = max(|lo|, |hi|):

    ======  ===========  ============  ======  =====================
    stat    L1           L2            L∞      coordinates touched
    ======  ===========  ============  ======  =====================
    count   L0·L∞        √L0·L∞        L∞      L0·min(L∞, k)
    sum     L0·L∞·M      √L0·L∞·M      L∞·M    L0·min(L∞, k)
    ======  ===========  ============  ======  =====================

    where k is the number of categories (1 without a breakdown): with categories a
    person's L∞ records in one cell may fall into up to min(L∞, k) (cell, category)
    coordinates, which changes how many coordinates are touched but not L1 or L2
    (the squares of a split never sum to more than the square of the whole).

    ``people`` (distinct persons per row, with ``people=True``): see
    :func:`people_sensitivity`.
    """
    l0, linf = spec.l0, spec.linf
    k = len(spec.categories) if spec.categories else 1
    touched = l0 * min(linf, k)
    out = {"count": Sensitivity(l0=touched, l1=l0 * linf, l2=sqrt_up(l0 * linf**2), linf=linf)}
    if spec.value is not None:
        m = spec.value_magnitude
        out["sum"] = Sensitivity(
            l0=touched, l1=l0 * linf * m, l2=sqrt_up(l0 * linf**2 * m**2), linf=linf * m
        )
    if spec.people:
        out["people"] = people_sensitivity(spec)
    if spec.histogram:
        out["hist"] = histogram_sensitivity(spec)
    return out


def people_sensitivity(spec: ReleaseSpec) -> Sensitivity:
    """Sensitivity of the vector of distinct persons per row (cell, or cell × category).

    A row's people count moves by 1 when one person with at least one kept record in it
    is added or removed, and by 0 otherwise. After bounding a person keeps records in at
    most L0 cells, and in one cell at most L∞ records, which fall into at most
    min(L∞, k) categories (k: the number of categories, 1 without a breakdown). So the
    person touches at most t = L0·min(L∞, k) rows, each by exactly 1:

    * L0 = t, L1 = t, L2 = √t, L∞ = 1.

    Without categories that is L1 = L0 (the record count's is L0·L∞).
    """
    k = len(spec.categories) if spec.categories else 1
    touched = spec.l0 * min(spec.linf, k)
    return Sensitivity(l0=touched, l1=touched, l2=sqrt_up(touched), linf=1)


def histogram_sensitivity(spec: ReleaseSpec) -> Sensitivity:
    """Sensitivity of the value histogram's vector (rows × measured tree nodes).

    A person reaches at most L0 rows and L∞ records per row; each kept record adds 1 to
    exactly one node on each of the D measured levels of the public value tree
    (:class:`dpmap.valuetree.ValueTree`; the root is not measured). So, per row and level,
    the person's records add at most L∞ in total, to at most min(L∞, b^d) nodes of level d:

    * L1 = L0·L∞·D (every record moves D coordinates by 1);
    * L2 = √(L0·D·L∞²) (per row and level the squares of a split of L∞ never exceed L∞²);
    * L∞ = L∞ (all of a row's records in one node);
    * coordinates touched: L0·Σ_d min(L∞, k·b^d).

    With k categories (one histogram per (cell, category)) a person's L∞ records of one cell
    are split over up to k histograms of that cell: per cell and level they still add at
    most L∞ in total, so L1, L2 and L∞ are unchanged; only the coordinates touched grow
    (k·b^d nodes per cell and level).
    """
    tree = spec.value_tree
    l0, linf, depth = spec.l0, spec.linf, tree.depth
    k = len(spec.categories) if spec.categories else 1
    touched = l0 * sum(min(linf, k * tree.branching**d) for d in range(1, depth + 1))
    return Sensitivity(
        l0=touched, l1=l0 * linf * depth, l2=sqrt_up(l0 * depth * linf**2), linf=linf
    )


def level_sensitivities(spec: ReleaseSpec, resolution: int) -> dict[str, Sensitivity]:
    """Sensitivities of each statistic's vector at ``resolution`` of a hierarchical release.

    At the finest level these are :func:`sensitivities`. A coarser cell at Δ levels above
    has at most c = 7^Δ finest descendants, so a person's L0 cells can fall under one
    parent: that parent's count moves by up to min(L0, c)·L∞. L1 is unchanged (L0·L∞);
    L∞ becomes min(L0, c)·L∞; L2 is largest when the L0 cells are packed c per parent:
    √((⌊L0/c⌋·c² + (L0 mod c)²)·L∞²) (·M for sums).
    """
    base = sensitivities(spec)
    delta = spec.finest - resolution
    if delta <= 0:
        return base
    if spec.people:  # a parent's distinct persons are not the sum of its children's
        raise AssertionError("people counts are measured at one level only")
    children = 7**delta
    l0, linf = spec.l0, spec.linf
    packed = (l0 // children) * children**2 + (l0 % children) ** 2  # Σ (cells per parent)²
    per_parent = min(l0, children)
    out = {}
    for stat, sens in base.items():
        m = spec.value_magnitude if stat == "sum" else 1
        out[stat] = Sensitivity(
            l0=sens.l0, l1=sens.l1, l2=sqrt_up(packed * linf**2 * m**2), linf=per_parent * linf * m
        )
    return out


def kept_reference(
    records: Iterable[tuple[Hashable, Hashable, Hashable, float, float]],
    *,
    max_cells: int,
    max_records_per_cell: int,
) -> list[tuple[Hashable, Hashable, Hashable, float]]:
    """Reference bounding, written for clarity, not speed: the kept ``(person, cell,
    category, value)`` of ``records`` given as ``(person, cell, category, value, priority)``."""
    by_person_cell: dict[tuple[Hashable, Hashable], list[tuple[float, Hashable, float]]] = (
        defaultdict(list)
    )
    for person, cell, category, value, priority in records:
        by_person_cell[(person, cell)].append((priority, category, value))
    kept_cells: dict[
        Hashable, list[tuple[float, Hashable, list[tuple[float, Hashable, float]]]]
    ] = defaultdict(list)
    for (person, cell), recs in by_person_cell.items():
        recs = sorted(recs, key=lambda r: r[0])[:max_records_per_cell]
        kept_cells[person].append((recs[0][0], cell, recs))
    return [
        (person, cell, category, value)
        for person, cells in kept_cells.items()
        for _prio, cell, recs in sorted(cells, key=lambda c: c[0])[:max_cells]
        for _p, category, value in recs
    ]


def bound_reference(
    records: Iterable[tuple[Hashable, Hashable, Hashable, float, float]],
    *,
    max_cells: int,
    max_records_per_cell: int,
    bounds: tuple[int, int] | None,
) -> tuple[dict[Hashable, int], dict[Hashable, int]]:
    """Reference bounding + aggregation, written for clarity, not speed.

    ``records`` are ``(person, cell, category, value, priority)``; returns per-key
    ``(counts, sums)`` where a key is ``(cell, category)``.
    """
    counts: dict[Hashable, int] = defaultdict(int)
    sums: dict[Hashable, int] = defaultdict(int)
    kept = kept_reference(records, max_cells=max_cells, max_records_per_cell=max_records_per_cell)
    for _person, cell, category, value in kept:
        counts[(cell, category)] += 1
        if bounds is not None:
            v = min(max(value, bounds[0]), bounds[1])
            sums[(cell, category)] += math.floor(v + 0.5)  # half up, as the engines
    return dict(counts), dict(sums)


def people_reference(
    records: Iterable[tuple[Hashable, Hashable, Hashable, float, float]],
    *,
    max_cells: int,
    max_records_per_cell: int,
) -> dict[Hashable, int]:
    """Reference distinct persons per key ``(cell, category)`` among the kept records."""
    kept = kept_reference(records, max_cells=max_cells, max_records_per_cell=max_records_per_cell)
    persons: dict[Hashable, set[Hashable]] = defaultdict(set)
    for person, cell, category, _value in kept:
        persons[(cell, category)].add(person)
    return {key: len(p) for key, p in persons.items()}


def packed_periods(max_periods: int, group_sizes: Iterable[int]) -> list[int]:
    """How a person's ``max_periods`` periods fall into time groups to move a coarse level's
    vector the most in L2: the largest groups filled first, ``k_G = min(g_G, what is left)``.

    This maximises Σ_G k_G² over integers 0 ≤ k_G ≤ g_G with Σ_G k_G ≤ max_periods: the
    greedy vector's i largest entries add up to min(max_periods, sum of the i largest g_G),
    the most any feasible vector's i largest entries can, so it majorises every feasible
    vector, and Σ k² is Schur-convex. Returned in the order of ``group_sizes``.
    """
    sizes = [int(g) for g in group_sizes]
    if max_periods < 1 or any(g < 1 for g in sizes):
        raise ValueError("max_periods and every group size must be at least 1")
    left = int(max_periods)
    out = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        out[i] = min(sizes[i], left)
        left -= out[i]
    return out


def time_level_sensitivity(
    *,
    max_cells: int,
    max_records_per_cell: int,
    max_periods: int,
    group_sizes: Iterable[int],
    magnitude: int = 1,
    categories: int = 1,
) -> Sensitivity:
    """Sensitivity of a panel's vector (rows × time groups) at one level of a time hierarchy.

    A panel bounds each person to at most P = ``max_periods`` periods, L0 = ``max_cells``
    cells per period and L∞ = ``max_records_per_cell`` records per (cell, period) (each
    record moves a count by 1 and a sum by at most M = ``magnitude``). A coarse level adds
    the periods up in public groups (months → quarters → years); ``group_sizes`` gives, for
    every group of the level, how many of the panel's finest periods it holds (g_G; partial
    groups at the ends of the panel are smaller). With the finest level itself (every
    g_G = 1) these are the panel's own sensitivities.

    Let k_G ≤ min(g_G, P) be the person's periods inside group G (Σ_G k_G ≤ P) and n_{c,G}
    the periods of G in which the person has records in cell c (n_{c,G} ≤ k_G,
    Σ_c n_{c,G} ≤ L0·k_G). Coordinate (c, G) moves by at most n_{c,G}·L∞·M, so:

    * L1 = P·L0·L∞·M (unchanged: every kept record still moves one coordinate);
    * L∞ = min(P, max g_G)·L∞·M (all P periods inside the largest group, one cell);
    * L2² = L0·L∞²·M²·max Σ_G k_G² (for fixed k, Σ_c n_{c,G}² is largest with the records of
      each group packed into L0 cells, n_{c,G} = k_G; the maximum over k is taken by
      :func:`packed_periods`: the largest groups first). Equal groups of size g:
      Σ k_G² = ⌊P/g⌋·g² + (P mod g)², as :func:`level_sensitivities` for H3 parents.
    * coordinates touched: P·L0·min(L∞, k) (at most one coordinate per kept
      (period, cell, category)), with k = ``categories``.

    With k categories the L1, L2 and L∞ bounds are unchanged (a split of one cell's records
    over categories never adds to any of them), as in :func:`sensitivities`. Distinct-person
    counts are not sums over periods and have no coarse level here.
    """
    sizes = [int(g) for g in group_sizes]
    if not sizes:
        raise ValueError("a time level needs at least one group")
    l0, linf, m = int(max_cells), int(max_records_per_cell), int(magnitude)
    if min(l0, linf, m, int(categories)) < 1:
        raise ValueError("max_cells, max_records_per_cell, magnitude and categories must be ≥ 1")
    packed = sum(k * k for k in packed_periods(max_periods, sizes))
    per_coordinate = min(int(max_periods), max(sizes))
    return Sensitivity(
        l0=int(max_periods) * l0 * min(linf, int(categories)),
        l1=int(max_periods) * l0 * linf * m,
        l2=sqrt_up(l0 * linf**2 * m**2 * packed),
        linf=per_coordinate * linf * m,
    )


def time_sensitivities(
    spec: ReleaseSpec, max_periods: int, group_sizes: Iterable[int]
) -> dict[str, Sensitivity]:
    """:func:`time_level_sensitivity` for each summable statistic of ``spec`` (``count``,
    and ``sum`` with M = ``spec.value_magnitude``) at a time level with ``group_sizes``.
    The cells per period are ``spec.l0`` over its periods per person (a panel's L0 counts
    (cell, period) pairs; ``max_periods`` is passed on its own)."""
    if spec.people:  # a group's distinct persons are not the sum of its periods'
        raise AssertionError("people counts have no coarse time level")
    sizes = [int(g) for g in group_sizes]
    k = len(spec.categories) if spec.categories else 1
    stats = {"count": 1}
    if spec.value is not None:
        stats["sum"] = max(spec.value_magnitude, 1)
    out = {}
    for stat, m in stats.items():
        out[stat] = time_level_sensitivity(
            max_cells=spec.l0 // spec.periods_per_person,
            max_records_per_cell=spec.linf,
            max_periods=max_periods,
            group_sizes=sizes,
            magnitude=m,
            categories=k,
        )
    return out
