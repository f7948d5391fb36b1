"""Property-based tests of contribution bounding: the engine, the reference, and SENSITIVITY.

The noise is calibrated to :func:`dpmap._privacy.bounding.sensitivities`. These tests check that the
local engine (:func:`dpmap.engines.local.bound_and_aggregate`) never lets one person move
the aggregate vectors further than that table says:

(a) per person: ≤ max_cells cells, ≤ max_records_per_cell records per cell (checked on
    single-person datasets, whose aggregates ARE that person's bounded contribution);
(b) the engine agrees exactly with the pure-Python reference ``bound_reference`` where the
    bounding choices cannot matter, and is *additive over persons* on arbitrary data
    (engine(D) = Σ_p engine(D_p): a person's kept records depend only on their own records);
(c) SENSITIVITY: for D and D' = D ± one adversarial person (selection="hash" with a fixed
    seed), the densified count/sum vectors differ by at most the table's L1 / L2 / L∞ / L0;
    person=None: one row changes exactly one count by exactly 1;
(d) ``bound_reference`` itself obeys the bounds.

The data are tiny: a public domain of 7 H3 cells (resolution 7) with points at cell centres,
plus points in 2 cells outside the domain; values include extremes (±1e12, ±inf, NaN,
half units) and categories include unknown ones and nulls.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from fractions import Fraction
from typing import Any

import h3
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpmap._privacy.bounding import (
    bound_reference,
    people_reference,
    people_sensitivity,
    sensitivities,
)
from dpmap._privacy.noise import plan_noise
from dpmap.aggregates import BoundedAggregates
from dpmap.designs import hierarchy
from dpmap.diagnostics import Diagnostics
from dpmap.engines.local import bound_and_aggregate
from dpmap.spec import ReleaseSpec

# ---------------------------------------------------------------------------------- domain

RES = 7
CENTRE = h3.latlng_to_cell(52.52, 13.40, RES)
DOMAIN_HEX = sorted(h3.grid_disk(CENTRE, 1))  # 7 public cells
OUTSIDE_HEX = sorted(h3.grid_ring(CENTRE, 4))[:2]  # 2 cells with points that must be dropped
DOMAIN = np.array(sorted(h3.str_to_int(c) for c in DOMAIN_HEX), dtype=np.int64)
ALL_CELLS = [h3.str_to_int(c) for c in sorted(DOMAIN_HEX)] + [h3.str_to_int(c) for c in OUTSIDE_HEX]
N_IN = len(DOMAIN_HEX)
CENTRES = [h3.cell_to_latlng(h3.int_to_str(c)) for c in ALL_CELLS]
assert all(
    h3.latlng_to_cell(*ll, RES) == h3.int_to_str(c)
    for ll, c in zip(CENTRES, ALL_CELLS, strict=True)
)

CATEGORIES = ("a", "b")  # the spec appends "other"
CAT_INDEX = {"a": 0, "b": 1}  # anything else (unknown, null) -> 2 ("other")
BOUNDS = [(0, 100), (-50, 20), (3, 9), (-10, -2), (-1, 1)]

SCHEMA = {"lat": pl.Float64, "lng": pl.Float64, "p": pl.Int64, "v": pl.Float64, "c": pl.String}

Row = tuple[Any, int, float | None, str | None]  # (person, cell index, value, category)


def frame(rows: list[Row]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "lat": [CENTRES[r[1]][0] for r in rows],
            "lng": [CENTRES[r[1]][1] for r in rows],
            "p": [r[0] for r in rows],
            "v": [r[2] for r in rows],
            "c": [r[3] for r in rows],
        },
        schema=SCHEMA,
    )


def cat_index(spec: ReleaseSpec, c: str | None) -> int:
    return CAT_INDEX.get(c, 2) if spec.categories is not None else 0  # type: ignore[arg-type]


def n_categories(spec: ReleaseSpec) -> int:
    return len(spec.categories) if spec.categories else 1


def usable(spec: ReleaseSpec, row: Row) -> bool:
    """Rule 1 of dpmap._privacy.bounding: in the public cell set, person and value present."""
    person, cell, value, _ = row
    if cell >= N_IN:
        return False
    if spec.person is not None and person is None:
        return False
    return not (spec.value is not None and (value is None or math.isnan(value)))


def clamp_round(spec: ReleaseSpec, value: float) -> int:
    lo, hi = spec.bounds  # type: ignore[misc]
    return math.floor(min(max(value, lo), hi) + 0.5)  # clamp, then round half up


def engine(
    rows: list[Row], spec: ReleaseSpec, diag: Diagnostics | None = None
) -> BoundedAggregates:
    return bound_and_aggregate(frame(rows), spec, DOMAIN, diag)


def as_dict(agg: BoundedAggregates) -> dict[tuple[int, int], tuple[int, int]]:
    cats = agg.category if agg.category is not None else np.zeros(len(agg.cells), dtype=np.int64)
    sums = agg.sum if agg.sum is not None else np.zeros(len(agg.cells), dtype=np.int64)
    out = {}
    for c, k, n, s in zip(
        agg.cells.tolist(), cats.tolist(), agg.count.tolist(), sums.tolist(), strict=True
    ):
        assert (c, k) not in out, "the engine returned a key twice"
        assert n > 0, "the engine returned an empty key"
        out[(int(c), int(k))] = (int(n), int(s))
    return out


def dense(rows: list[Row], spec: ReleaseSpec) -> dict[str, np.ndarray]:
    """Densified aggregates over the public domain; all-zero when no row is usable."""
    ncat = n_categories(spec)
    if not any(usable(spec, r) for r in rows):
        zero = np.zeros(len(DOMAIN) * ncat, dtype=np.int64)
        out = {"count": zero, **({"sum": zero.copy()} if spec.value else {})}
        return {**out, **({"people": zero.copy()} if spec.people else {})}
    return engine(rows, spec).densify(DOMAIN, ncat)


def reference(
    rows: list[Row], spec: ReleaseSpec, priorities: list[float] | None = None
) -> dict[tuple[int, int], tuple[int, int]]:
    prios = priorities if priorities is not None else [0.0] * len(rows)
    recs = [
        (
            r[0] if spec.person is not None else ("row", i),
            ALL_CELLS[r[1]],
            cat_index(spec, r[3]),
            r[2] if spec.value is not None else 0.0,
            prios[i],
        )
        for i, r in enumerate(rows)
        if usable(spec, r)
    ]
    counts, sums = bound_reference(
        recs,
        max_cells=spec.l0,
        max_records_per_cell=spec.linf,
        bounds=spec.bounds if spec.value is not None else None,
    )
    return {k: (n, sums.get(k, 0)) for k, n in counts.items()}


# ------------------------------------------------------------------------------ strategies

EXTREMES = [1e12, -1e12, math.inf, -math.inf, 1e9, -1e9, 0.5, -0.5, 2.5, -3.5, 0.0, 99.5, 1e300]
VALUES = st.one_of(
    st.integers(-200, 200).map(float),
    st.floats(-1e4, 1e4, allow_nan=False),
    st.sampled_from(EXTREMES),
    st.sampled_from([math.nan, None]),
)
CLEAN_VALUES = st.one_of(
    st.integers(-200, 200).map(float),
    st.floats(-1e4, 1e4, allow_nan=False),
    st.sampled_from(EXTREMES),
)
CATS = st.sampled_from(["a", "b", "zz", None])
CELL_IDX = st.integers(0, len(ALL_CELLS) - 1)
PERSONS = st.one_of(st.integers(0, 5), st.just(None))

ROWS = st.lists(st.tuples(PERSONS, CELL_IDX, VALUES, CATS), max_size=40)
#: the adversary: many records, many cells (inside and outside), extreme values, all categories
ADVERSARY = st.lists(
    st.tuples(CELL_IDX, st.one_of(st.sampled_from(EXTREMES), VALUES), CATS), min_size=1, max_size=50
)
#: a person who is always there, so no dataset is empty
ANCHOR: Row = (1000, 0, 1.0, "a")


@st.composite
def specs(draw: Any, *, person: bool = True, selection: str = "hash") -> ReleaseSpec:
    use_value = draw(st.booleans())
    use_cat = draw(st.booleans())
    linf = draw(st.integers(1, 3))
    return ReleaseSpec(
        resolution=RES,
        epsilon=1.0,
        person="p" if person else None,
        value="v" if use_value else None,
        bounds=draw(st.sampled_from(BOUNDS)) if use_value else None,
        max_cells=draw(st.integers(1, 3)),
        max_records_per_cell=linf,
        category="c" if use_cat else None,
        categories=CATEGORIES if use_cat else None,
        selection=selection,
        seed=draw(st.integers(0, 2**40)) if selection == "hash" else None,
        people=person and linf > 1 and draw(st.booleans()),
    )


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOWER = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# =========================================================================================
# (a) per-person bounds, on single-person datasets


def check_one_person(rows: list[Row], spec: ReleaseSpec) -> None:
    """``rows`` all belong to one person: the aggregates are that person's bounded records."""
    use = [r for r in rows if usable(spec, r)]
    if not use:
        return
    agg = as_dict(engine(rows, spec))
    by_cell: dict[int, list[Row]] = defaultdict(list)
    for r in use:
        by_cell[ALL_CELLS[r[1]]].append(r)
    kept_cells = {c for c, _ in agg}
    assert kept_cells <= set(by_cell), "a kept cell the person has no usable record in"
    assert len(kept_cells) == min(spec.l0, len(by_cell))
    for cell in kept_cells:
        mine = by_cell[cell]
        n_kept = sum(n for (c, _), (n, _) in agg.items() if c == cell)
        assert n_kept == min(spec.linf, len(mine))
        have = Counter(cat_index(spec, r[3]) for r in mine)
        for (c, k), (n, _) in agg.items():
            if c == cell:
                assert n <= have[k]
        if spec.value is not None:
            vals = sorted(clamp_round(spec, r[2]) for r in mine)  # type: ignore[arg-type]
            total = sum(s for (c, _), (_, s) in agg.items() if c == cell)
            assert sum(vals[:n_kept]) <= total <= sum(vals[-n_kept:])
            lo, hi = spec.bounds  # type: ignore[misc]
            assert lo * n_kept <= total <= hi * n_kept


@FAST
@given(spec=specs(), recs=st.lists(st.tuples(CELL_IDX, VALUES, CATS), min_size=1, max_size=40))
def test_one_person_is_bounded_hash(spec: ReleaseSpec, recs: list[Any]) -> None:
    check_one_person([(7, c, v, k) for c, v, k in recs], spec)


@SLOWER
@given(
    spec=specs(selection="random"),
    recs=st.lists(st.tuples(CELL_IDX, VALUES, CATS), min_size=1, max_size=40),
)
def test_one_person_is_bounded_random(spec: ReleaseSpec, recs: list[Any]) -> None:
    check_one_person([(7, c, v, k) for c, v, k in recs], spec)


@FAST
@given(spec=specs(selection="random"), rows=ROWS)
def test_every_cell_is_bounded_by_its_persons(spec: ReleaseSpec, rows: list[Row]) -> None:
    """Any selection: a key's count never exceeds Σ_persons min(L∞, their records there),
    and the total never exceeds Σ_persons L0·L∞."""
    rows = [*rows, ANCHOR]
    agg = as_dict(engine(rows, spec))
    per: dict[tuple[Any, tuple[int, int]], int] = Counter()
    persons = set()
    for r in rows:
        if usable(spec, r):
            per[(r[0], (ALL_CELLS[r[1]], cat_index(spec, r[3])))] += 1
            persons.add(r[0])
    for key, (n, _) in agg.items():
        assert n <= sum(min(spec.linf, m) for (p, k), m in per.items() if k == key)
    assert sum(n for n, _ in agg.values()) <= len(persons) * spec.l0 * spec.linf


# =========================================================================================
# (b) the engine agrees with the reference


def within_bounds(rows: list[Row], spec: ReleaseSpec) -> list[Row]:
    """Drop usable records beyond each person's first L0 cells / first L∞ records per cell
    (unusable rows stay: the engine must drop them itself)."""
    cells: dict[Any, list[int]] = defaultdict(list)
    per_cell: Counter[tuple[Any, int]] = Counter()
    out = []
    for r in rows:
        if not usable(spec, r):
            out.append(r)
            continue
        p, c = r[0], r[1]
        if c not in cells[p]:
            if len(cells[p]) >= spec.l0:
                continue
            cells[p].append(c)
        if per_cell[(p, c)] >= spec.linf:
            continue
        per_cell[(p, c)] += 1
        out.append(r)
    return out


@FAST
@given(spec=specs(), rows=ROWS)
def test_engine_equals_reference_when_bounds_do_not_bind(
    spec: ReleaseSpec, rows: list[Row]
) -> None:
    rows = within_bounds([*rows, ANCHOR], spec)
    diag = Diagnostics()
    got = as_dict(engine(rows, spec, diag))
    assert got == reference(rows, spec)
    assert diag.records_cut_by_bounding == 0
    assert diag.rows_outside_region == sum(1 for r in rows if r[1] >= N_IN)
    # and with any priorities, since nothing is cut
    assert got == reference(rows, spec, priorities=[float(-i) for i in range(len(rows))])


@FAST
@given(spec=specs(person=False), rows=ROWS)
def test_engine_equals_reference_each_row_a_person(spec: ReleaseSpec, rows: list[Row]) -> None:
    rows = [*rows, ANCHOR]
    assert as_dict(engine(rows, spec)) == reference(rows, spec)


def test_half_units_round_half_up_like_the_reference() -> None:
    spec = ReleaseSpec(
        resolution=RES,
        epsilon=1.0,
        person="p",
        value="v",
        bounds=(-10, 10),
        max_cells=3,
        max_records_per_cell=9,
    )
    rows: list[Row] = [
        (1, 0, v, None) for v in (2.5, -3.5, 0.5, -0.5, 9.5, -9.5, 10.5, -10.5, 1e300)
    ]
    got = as_dict(engine(rows, spec))
    # 3 - 3 + 1 + 0 + 10 - 9 + 10 - 10 + 10: clamp, then floor(x + 0.5)
    assert got == {(ALL_CELLS[0], 0): (9, 12)}
    assert got == reference(rows, spec)


@SLOWER
@given(spec=specs(), rows=ROWS, order=st.randoms(use_true_random=False))
def test_engine_is_additive_over_persons(spec: ReleaseSpec, rows: list[Row], order: Any) -> None:
    """engine(D) == Σ_p engine(D_p), in any row order: with selection="hash" a person's kept
    records are a function of their own records only (rule 2 of the privacy contract)."""
    rows = [*rows, ANCHOR]
    order.shuffle(rows)
    whole = dense(rows, spec)
    parts = {k: np.zeros_like(v) for k, v in whole.items()}
    for p in {r[0] for r in rows if r[0] is not None}:
        mine = [r for r in rows if r[0] == p]
        for k, v in dense(mine, spec).items():
            parts[k] += v
    for k in whole:
        np.testing.assert_array_equal(whole[k], parts[k])


# =========================================================================================
# (c) SENSITIVITY: one person added or removed


def check_neighbours(small: list[Row], big: list[Row], spec: ReleaseSpec) -> None:
    """The densified vectors of neighbouring datasets differ by at most the table's values,
    and in one direction only (the other persons' choices did not change)."""
    sens = sensitivities(spec)
    a, b = dense(small, spec), dense(big, spec)
    for stat in a:
        d = (b[stat] - a[stat]).astype(object)  # exact Python integers
        s = sens[stat]
        assert sum(abs(x) for x in d) <= s.l1, f"{stat}: L1 {sum(abs(x) for x in d)} > {s.l1}"
        sq = sum(x * x for x in d)
        assert sq <= Fraction(s.l2) ** 2, f"{stat}: L2² {sq} > {s.l2}²"
        assert max(abs(x) for x in d) <= s.linf, f"{stat}: L∞ {max(abs(x) for x in d)} > {s.linf}"
        assert sum(1 for x in d if x != 0) <= s.l0
        if stat in ("count", "people"):
            assert all(x >= 0 for x in d), (
                "adding a person lowered a count: others' choices changed"
            )


@SLOWER
@given(spec=specs(), rows=ROWS, adversary=ADVERSARY, order=st.randoms(use_true_random=False))
def test_adding_an_adversarial_person(
    spec: ReleaseSpec, rows: list[Row], adversary: list[Any], order: Any
) -> None:
    base = [*rows, ANCHOR]
    big = base + [(99, c, v, k) for c, v, k in adversary]
    order.shuffle(big)  # the newcomer's rows anywhere in the file
    check_neighbours(base, big, spec)


@SLOWER
@given(spec=specs(), rows=ROWS, who=st.integers(0, 5))
def test_removing_a_person(spec: ReleaseSpec, rows: list[Row], who: int) -> None:
    big = [*rows, ANCHOR]
    small = [r for r in big if r[0] != who]
    check_neighbours(small, big, spec)


@SLOWER
@given(
    spec=specs(person=False),
    rows=ROWS,
    row=st.tuples(st.just(None), CELL_IDX, VALUES, CATS),
    at=st.integers(0, 40),
)
def test_each_row_a_person_one_row_moves_one_count_by_one(
    spec: ReleaseSpec, rows: list[Row], row: Row, at: int
) -> None:
    base = [*rows, ANCHOR]
    big = [*base[:at], row, *base[at:]]
    a, b = dense(base, spec), dense(big, spec)
    d = b["count"] - a["count"]
    if usable(spec, row):
        (idx,) = np.flatnonzero(d)
        assert d[idx] == 1
        assert idx == int(np.searchsorted(DOMAIN, ALL_CELLS[row[1]])) * n_categories(
            spec
        ) + cat_index(spec, row[3])
        if spec.value is not None:
            ds = b["sum"] - a["sum"]
            assert np.count_nonzero(np.delete(ds, idx)) == 0
            assert ds[idx] == clamp_round(spec, row[2])  # type: ignore[arg-type]
            assert abs(ds[idx]) <= spec.value_magnitude
    else:
        assert not d.any()
    check_neighbours(base, big, spec)


@pytest.mark.parametrize("cats", [None, CATEGORIES])
@pytest.mark.parametrize(
    ("l0", "linf", "bounds"),
    [(1, 1, (0, 100)), (3, 2, (-50, 20)), (2, 3, (3, 9)), (5, 4, (-10, -2)), (7, 1, (-1, 1))],
)
def test_the_table_is_attained(l0: int, linf: int, bounds: tuple[int, int], cats: Any) -> None:
    """A worst-case person reaches every bound exactly: the table is not loose either."""
    spec = ReleaseSpec(
        resolution=RES,
        epsilon=1.0,
        person="p",
        value="v",
        bounds=bounds,
        max_cells=l0,
        max_records_per_cell=linf,
        category="c" if cats else None,
        categories=cats,
        selection="hash",
        seed=3,
    )
    sens = sensitivities(spec)
    m = spec.value_magnitude
    worst = bounds[0] if abs(bounds[0]) >= abs(bounds[1]) else bounds[1]
    # L∞ records in each of the 7 cells (only L0 cells survive), categories cycling a, b, other
    cat_cycle = ["a", "b", "zz"] if cats else [None]
    adversary = [
        (5, c, float(worst) * 10, cat_cycle[j % len(cat_cycle)])
        for c in range(N_IN)
        for j in range(linf)
    ]
    base = [ANCHOR]
    a, b = dense(base, spec), dense(base + adversary, spec)
    dc, ds = b["count"] - a["count"], b["sum"] - a["sum"]
    assert int(np.abs(dc).sum()) == sens["count"].l1 == l0 * linf
    assert int(np.abs(ds).sum()) == sens["sum"].l1 == l0 * linf * m
    assert np.count_nonzero(dc) == sens["count"].l0
    if not cats:
        assert int((dc.astype(object) ** 2).sum()) == l0 * linf**2
        assert int(np.abs(dc).max()) == sens["count"].linf
        assert int(np.abs(ds).max()) == sens["sum"].linf
    check_neighbours(base, base + adversary, spec)


def test_hierarchical_levels_sensitivity() -> None:
    """Several resolutions: the coarse level is the sum of the finest cells' children.

    One person with L0 finest cells under ONE res-5 parent moves that parent's count by
    L0·L∞: the coarse level's L2 (and L∞) sensitivity is L0·L∞, not √L0·L∞. The plan's noise
    for that level must be calibrated to what the data can actually do.
    """
    l0, linf = 4, 2
    spec = ReleaseSpec(
        resolution=[5, RES],
        epsilon=1.0,
        delta=1e-6,
        mechanism="gaussian",
        person="p",
        max_cells=l0,
        max_records_per_cell=linf,
        selection="hash",
        seed=1,
    )
    flat = ReleaseSpec(
        resolution=RES,
        epsilon=1.0,
        delta=1e-6,
        mechanism="gaussian",
        person="p",
        max_cells=l0,
        max_records_per_cell=linf,
        selection="hash",
        seed=1,
    )
    parents = [h3.cell_to_parent(h3.int_to_str(c), 5) for c in ALL_CELLS[:N_IN]]
    common = Counter(parents).most_common(1)[0][0]
    same_parent = [i for i in range(N_IN) if parents[i] == common]
    assert len(same_parent) >= l0
    adversary = [(5, i, None, None) for i in same_parent for _ in range(linf)]
    tree = hierarchy.build_tree(DOMAIN, (5, RES))
    base = [ANCHOR]
    a = hierarchy.level_totals(tree, dense(base, flat)["count"])
    b = hierarchy.level_totals(tree, dense(base + adversary, flat)["count"])
    coarse = (b[0] - a[0]).astype(np.int64)
    assert int(np.abs(coarse).max()) == l0 * linf  # one parent moved by L0·L∞
    plan = plan_noise(spec)
    assumed = plan.statistics["count@5"].sensitivity
    assert math.sqrt(int((coarse**2).sum())) <= assumed.l2, (
        f"the res-5 level moved by {math.sqrt(int((coarse**2).sum()))} in L2; the noise assumes {assumed.l2}"
    )
    assert int(np.abs(coarse).max()) <= assumed.linf


# =========================================================================================
# (d) the reference obeys the bounds


@FAST
@given(
    l0=st.integers(1, 4),
    linf=st.integers(1, 4),
    bounds=st.sampled_from([None, *BOUNDS]),
    recs=st.lists(
        st.tuples(
            st.integers(0, 4),
            st.integers(0, 9),
            st.sampled_from([0, 1, 2]),
            st.floats(-1e6, 1e6),
            st.floats(0, 1),
        ),
        max_size=60,
    ),
)
def test_reference_obeys_the_bounds(l0: int, linf: int, bounds: Any, recs: list[Any]) -> None:
    kw = dict(max_cells=l0, max_records_per_cell=linf, bounds=bounds)
    counts, sums = bound_reference(recs, **kw)
    total_c: Counter[Any] = Counter()
    total_s: Counter[Any] = Counter()
    for p in {r[0] for r in recs}:
        mine = [r for r in recs if r[0] == p]
        c, s = bound_reference(mine, **kw)
        cells = Counter()
        for (cell, _), n in c.items():
            cells[cell] += n
        assert len(cells) == min(l0, len({r[1] for r in mine}))
        for cell, n in cells.items():
            assert n == min(linf, sum(1 for r in mine if r[1] == cell))
        for key, n in c.items():
            assert 0 < n <= sum(1 for r in mine if (r[1], r[2]) == key)
            if bounds is not None:
                assert bounds[0] * n <= s.get(key, 0) <= bounds[1] * n
        total_c.update(c)
        total_s.update(s)
    # additive over persons
    assert counts == {k: v for k, v in total_c.items() if v}
    if bounds is not None:
        assert {k: v for k, v in sums.items() if v} == {k: v for k, v in total_s.items() if v}
    else:
        assert sums == {}


def test_reference_keeps_smallest_priorities() -> None:
    recs = [
        ("p", "A", 0, 1.0, 0.9),
        ("p", "A", 0, 2.0, 0.1),
        ("p", "A", 0, 4.0, 0.5),
        ("p", "B", 0, 8.0, 0.3),
        ("p", "C", 0, 16.0, 0.05),
        ("q", "A", 0, 32.0, 0.99),
    ]
    counts, sums = bound_reference(recs, max_cells=2, max_records_per_cell=2, bounds=(0, 100))
    # p: cell A keeps priorities 0.1, 0.5 (min 0.1); B: 0.3; C: 0.05 -> cells C and A
    assert counts == {("A", 0): 3, ("C", 0): 1}
    assert sums == {("A", 0): 2 + 4 + 32, ("C", 0): 16}


def test_engine_does_not_refuse_a_region_without_points() -> None:
    """No point in the region is not an error (that would be a free membership test):
    the aggregates are empty, and only the PRIVATE diagnostics say why."""
    spec = ReleaseSpec(resolution=RES, epsilon=1.0, person="p", selection="hash", seed=0)
    diag = Diagnostics()
    agg = engine([(1, N_IN, 1.0, None)], spec, diag)  # only a point outside the region
    assert as_dict(agg) == {}
    assert diag.rows_outside_region == 1
    assert any("no point lies inside the region" in n for n in diag.private_notes)


# ------------------------------------------------------- the engine re-checks its bounds


@pytest.mark.parametrize(("max_cells", "max_records_per_cell"), [(1, 1), (2, 1), (1, 3), (3, 2)])
@pytest.mark.parametrize("n_persons", [40, 150_000])
def test_engine_refuses_data_that_bounding_left_unbounded(
    monkeypatch: pytest.MonkeyPatch, max_cells: int, max_records_per_cell: int, n_persons: int
) -> None:
    """If record selection were broken (here: replaced by keeping every record), the
    re-check in ``bounding.bound`` raises instead of handing unbounded data to the noise —
    with one partition and with several (600k rows are split into parallel partitions)."""
    from dpmap.engines import bounding as engine_bounding
    from dpmap.engines import frames

    # every person: 4 records, 3 in one cell and 1 in another: 2 cells, 3 records in a cell
    df = pl.DataFrame(
        {
            frames.PERSON: np.repeat(np.arange(n_persons), 4),
            frames.CELL: np.tile([0, 0, 0, 1], n_persons) + np.repeat(np.arange(n_persons), 4) * 10,
        }
    )
    spec = ReleaseSpec(
        resolution=7, epsilon=1.0, person="p", max_cells=max_cells,
        max_records_per_cell=max_records_per_cell,
    )  # fmt: skip
    honest = engine_bounding.bound(df, spec)  # the real selection passes its own check
    assert honest.height <= n_persons * max_cells * max_records_per_cell
    monkeypatch.setattr(engine_bounding, "_bound_plan", lambda lf, spec: lf)
    # 2 cells and 3 records in a cell: more than each of these bounds allows
    with pytest.raises(AssertionError, match="bounding failed"):
        engine_bounding.bound(df, spec)


def test_one_record_per_person_recheck_lets_the_strings_decide_a_hash_repeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With L0 = L∞ = 1 the re-check counts 64-bit hashes of the kept persons; a repeated
    hash (a repeated person, or two persons of equal hash) is decided on the persons
    themselves: distinct persons pass, a repeated person is refused. Here every person
    hashes alike, the worst case of a collision."""
    from dpmap.engines import bounding as engine_bounding
    from dpmap.engines import frames

    spec = ReleaseSpec(resolution=7, epsilon=1.0, person="p")
    monkeypatch.setattr(engine_bounding, "_hashed_person", lambda: pl.lit(0, dtype=pl.UInt64))
    distinct = pl.DataFrame({frames.PERSON: ["a", "b", "c"], frames.CELL: [1, 2, 3]})
    assert sorted(engine_bounding.bound(distinct, spec)[frames.PERSON]) == ["a", "b", "c"]
    monkeypatch.setattr(engine_bounding, "_bound_plan", lambda lf, spec: lf)
    repeated = pl.DataFrame({frames.PERSON: ["a", "a", "b"], frames.CELL: [1, 2, 3]})
    with pytest.raises(AssertionError, match="bounding failed"):
        engine_bounding.bound(repeated, spec)


# =========================================================================================
# (e) people=True: distinct persons per key


def people_specs() -> Any:
    return specs().filter(lambda s: s.people)


def people_dense(rows: list[Row], spec: ReleaseSpec) -> np.ndarray:
    return dense(rows, spec)["people"]


@FAST
@given(spec=people_specs(), rows=ROWS)
def test_people_equal_the_reference_when_bounds_do_not_bind(
    spec: ReleaseSpec, rows: list[Row]
) -> None:
    """Distinct persons per (cell, category) among the kept records, as the reference counts
    them; never more than the records, and present exactly where records are."""
    rows = within_bounds([*rows, ANCHOR], spec)
    agg = engine(rows, spec)
    assert agg.people is not None and agg.people.dtype == np.int64
    cats = agg.category if agg.category is not None else np.zeros(len(agg.cells), dtype=np.int64)
    got = dict(
        zip(zip(agg.cells.tolist(), cats.tolist(), strict=True), agg.people.tolist(), strict=True)
    )
    recs = [
        (r[0], ALL_CELLS[r[1]], cat_index(spec, r[3]), r[2] if spec.value else 0.0, 0.0)
        for r in rows
        if usable(spec, r)
    ]
    want = people_reference(recs, max_cells=spec.l0, max_records_per_cell=spec.linf)
    assert got == want
    assert (agg.people <= agg.count).all() and (agg.people >= 1).all()


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@SLOWER
@given(spec=people_specs(), rows=ROWS, adversary=ADVERSARY)
def test_one_person_inserted_moves_people_by_at_most_the_sensitivity(
    where: str, spec: ReleaseSpec, rows: list[Row], adversary: list[Any]
) -> None:
    """A newcomer's rows placed before, among or after everyone else's move each people count
    by 0 or +1, on at most L0·min(L∞, k) rows (the declared sensitivity), and the other
    persons' counts not at all."""
    base = [*rows, ANCHOR]
    mine = [(99, c, v, k) for c, v, k in adversary]
    at = {"first": 0, "middle": len(base) // 2, "last": len(base)}[where]
    big = [*base[:at], *mine, *base[at:]]
    d = people_dense(big, spec) - people_dense(base, spec)
    sens = people_sensitivity(spec)
    assert set(np.unique(d).tolist()) <= {0, 1}
    assert int(d.sum()) <= sens.l1 and np.count_nonzero(d) <= sens.l0
    assert np.array_equal(d, people_dense(mine, spec))  # exactly the newcomer's own rows
    check_neighbours(base, big, spec)


@pytest.mark.parametrize("cats", [None, CATEGORIES])
@pytest.mark.parametrize(("l0", "linf"), [(1, 2), (3, 2), (2, 3), (5, 4)])
def test_people_sensitivity_is_exact_and_attained(l0: int, linf: int, cats: Any) -> None:
    """L0 = L1 = L0·min(L∞, k), L2 = √(L0·min(L∞, k)), L∞ = 1; a worst-case person (L∞
    records in every cell, categories cycling) reaches them exactly."""
    spec = ReleaseSpec(
        resolution=RES, epsilon=1.0, person="p", max_cells=l0, max_records_per_cell=linf,
        category="c" if cats else None, categories=cats, selection="hash", seed=3, people=True,
    )  # fmt: skip
    k = 3 if cats else 1
    t = l0 * min(linf, k)
    s = sensitivities(spec)["people"]
    assert (s.l0, s.l1, s.linf) == (t, t, 1)
    assert Fraction(s.l2) ** 2 >= t and Fraction(math.nextafter(s.l2, 0)) ** 2 < t
    cat_cycle = ["a", "b", "zz"] if cats else [None]
    adversary = [
        (5, c, 1.0, cat_cycle[j % 3 if cats else 0]) for c in range(N_IN) for j in range(linf)
    ]
    d = people_dense([ANCHOR, *adversary], spec) - people_dense([ANCHOR], spec)
    assert int(d.sum()) == np.count_nonzero(d) == t
    assert int(d.max()) == 1


def test_people_count_persons_not_records() -> None:
    """Three persons, one with 3 records in a cell: 3 people, 5 records there."""
    spec = ReleaseSpec(
        resolution=RES, epsilon=1.0, person="p", max_records_per_cell=3, people=True,
        selection="hash", seed=1,
    )  # fmt: skip
    agg = engine([(1, 0, None, None)] * 3 + [(2, 0, None, None), (3, 0, None, None)], spec)
    assert agg.count.tolist() == [5] and agg.people is not None and agg.people.tolist() == [3]
