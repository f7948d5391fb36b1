"""Quantiles and value bands with a category breakdown: one value histogram per
(row, category) on flat and zone releases.

The sensitivity (categories change only the coordinates touched), one person inserted
first/middle/last moving the categorised histogram by at most it, the engines' per-category
histograms (parity across engines: tests/engines with tests/parity.py), releases, and the
coverage of the per-category quantile intervals.
"""

from __future__ import annotations

from typing import Any

import h3
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

import dpmap
from common import REGION, RESOLUTION, cell_centre, interior_cells
from dpmap import grid
from dpmap._privacy.bounding import histogram_sensitivity
from dpmap._privacy.noise import plan_noise
from dpmap.aggregates import BoundedAggregates
from dpmap.designs import DesignOptions, design_for
from dpmap.designs.distribution import distribution_columns
from dpmap.engines import local, streaming
from dpmap.spec import ReleaseSpec
from parity import parity_zones

DOMAIN = grid.region_to_cells(grid.to_region(REGION), RESOLUTION)
CELLS = interior_cells(6)
BOUNDS = (0, 50_000)
CATS = ("bank", "utility")  # + "other"


def spec_with(**kw: Any) -> ReleaseSpec:
    base: dict[str, Any] = {
        "resolution": RESOLUTION,
        "epsilon": 1.0,
        "person": "pid",
        "value": "amount",
        "bounds": BOUNDS,
        "quantiles": (0.5,),
        "category": "creditor",
        "categories": CATS,
        "selection": "hash",
        "seed": 11,
    }
    return ReleaseSpec(**{**base, **kw})


def nodes(agg: BoundedAggregates, spec: ReleaseSpec) -> np.ndarray:
    k = len(spec.categories) if spec.categories else 1
    row, leaf, count = agg.histogram_leaves(DOMAIN, k)
    return spec.value_tree.node_vectors(row, leaf, count, len(DOMAIN) * k)


def points(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cells = [CELLS[i] for i in rng.integers(0, len(CELLS), n)]
    lat, lng = zip(*(cell_centre(c) for c in cells), strict=True)
    return pd.DataFrame(
        {
            "lat": lat,
            "lng": lng,
            "pid": [f"p{i}" for i in rng.integers(0, max(1, n // 2), n)],
            "amount": rng.lognormal(8, 1.5, n),
            "creditor": rng.choice(["bank", "utility", "court"], n),
        }
    )


@pytest.mark.parametrize(("l0", "linf"), [(1, 1), (2, 3), (5, 2), (3, 30)])
def test_categories_change_only_the_coordinates_touched(l0: int, linf: int) -> None:
    """L1 = L0·L∞·D, L2 = √(L0·D·L∞²), L∞ = L∞ with or without categories; coordinates
    touched L0·Σ_d min(L∞, k·b^d); the histogram's noise scale is the same."""
    with_cats = spec_with(max_cells=l0, max_records_per_cell=linf)
    without = spec_with(max_cells=l0, max_records_per_cell=linf, category=None, categories=None)
    a, b = histogram_sensitivity(with_cats), histogram_sensitivity(without)
    assert (a.l1, a.l2, a.linf) == (b.l1, b.l2, b.linf)
    tree = with_cats.value_tree
    assert a.l0 == l0 * sum(min(linf, 3 * tree.branching**d) for d in range(1, tree.depth + 1))
    assert (
        plan_noise(with_cats).statistics["hist"].scale
        == plan_noise(without).statistics["hist"].scale
    )


VALUES = st.one_of(st.floats(-1e15, 1e15, allow_nan=False), st.sampled_from([0.0, 5e4, 6e4]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    extra=st.lists(
        st.tuples(st.integers(0, len(CELLS) - 1), VALUES, st.sampled_from(["bank", "x", None])),
        min_size=1,
        max_size=14,
    ),
    place=st.sampled_from(["first", "middle", "last"]),
    l0=st.integers(1, 3),
    linf=st.integers(1, 3),
    streamed=st.booleans(),
)
def test_one_person_moves_the_categorised_histogram_by_at_most_its_sensitivity(
    extra: list[tuple[int, float, str | None]], place: str, l0: int, linf: int, streamed: bool
) -> None:
    spec = spec_with(max_cells=l0, max_records_per_cell=linf)
    base = points(300, seed=3)
    rows = []
    for cell, value, cat in extra:
        lat, lng = cell_centre(CELLS[cell])
        rows.append({"lat": lat, "lng": lng, "pid": "extra", "amount": value, "creditor": cat})
    person = pd.DataFrame(rows)
    at = {"first": 0, "middle": len(base) // 2, "last": len(base)}[place]
    both = pd.concat([base.iloc[:at], person, base.iloc[at:]], ignore_index=True)

    def run(df: pd.DataFrame) -> BoundedAggregates:
        if streamed:
            return streaming.bound_and_aggregate(df, spec, DOMAIN, batch_rows=97, part_bytes=4096)
        return local.bound_and_aggregate(df, spec, DOMAIN)

    diff = nodes(run(both), spec) - nodes(run(base), spec)
    assert np.array_equal(diff, nodes(run(person), spec))  # only the newcomer's records
    sens = histogram_sensitivity(spec)
    assert np.abs(diff).sum() <= sens.l1
    assert float(np.sqrt((diff.astype(float) ** 2).sum())) <= sens.l2
    assert np.abs(diff).max() <= sens.linf
    assert np.count_nonzero(diff) <= sens.l0


def test_per_category_histograms_add_up_to_the_whole_and_match_the_counts() -> None:
    """Bounds that never bind: the category histograms of a cell add up to its histogram
    without categories, and each category's histogram holds that category's records."""
    df = points(3000, seed=5)
    spec = spec_with(max_cells=6, max_records_per_cell=1000)
    plain = spec_with(max_cells=6, max_records_per_cell=1000, category=None, categories=None)
    a, b = local.bound_and_aggregate(df, spec, DOMAIN), local.bound_and_aggregate(df, plain, DOMAIN)
    by_cat = nodes(a, spec).reshape(len(DOMAIN), 3, -1)
    np.testing.assert_array_equal(by_cat.sum(axis=1), nodes(b, plain))
    depth1 = spec.value_tree.level_offset(1), spec.value_tree.level_offset(2)
    per_row = by_cat[:, :, depth1[0] : depth1[1]].sum(axis=2).reshape(-1)
    np.testing.assert_array_equal(per_row, a.densify(DOMAIN, 3)["count"])
    assert (by_cat.sum(axis=2) > 0).sum() > 6  # several categories per cell occupied


def test_flat_and_zone_releases_publish_quantiles_per_category() -> None:
    df = points(3000, seed=8)
    rel = dpmap.release(
        df, region=REGION, resolution=RESOLUTION, epsilon=1.0, person="pid", value="amount",
        bounds=BOUNDS, category="creditor", categories=list(CATS), quantiles=[0.5],
        value_bands=[0, 1000, 50_000], max_records_per_cell=2,
    )  # fmt: skip
    cells = rel.cells
    assert len(cells) == len(DOMAIN) * 3
    assert {"q50", "q50_lo", "q50_hi", "band_0_1000", "band_0_1000_moe"} <= set(cells.columns)
    shown = ~cells["suppressed"].to_numpy(dtype=bool)
    assert shown.any() and cells.loc[~shown, "q50"].isna().all()
    assert set(cells.loc[shown, "category"]) <= {"bank", "utility", "other"}
    z = dpmap.release(
        df, zones=parity_zones(), by="name", epsilon=1.0, person="pid", value="amount",
        bounds=BOUNDS, category="creditor", categories=list(CATS), quantiles=[0.5],
        suppress_below=False,
    )  # fmt: skip
    assert len(z.cells) == 5 * 3 and z.cells["q50_lo"].notna().all()


def test_per_category_quantile_intervals_cover() -> None:
    """Each (cell, category) row's q50 interval covers that row's true median with
    probability ≥ 95% (the method's claim, one-sided, as tests/test_quantiles.py).

    Data: 6 cells × 3 categories, 150 persons each (one record), with values of very
    different size per category (bank ~ e^7, utility ~ e^9, other ~ e^10), so a histogram
    that mixed categories would miss most rows. The release's own noise plan is drawn
    R = 60 times on the engine's 18 occupied per-(cell, category) histograms: n = 1080
    independent trials (independent noise) of which at most π ≤ 5% miss; the test fails
    above the smallest k with P(Bin(1080, 0.05) > k) < 1e-8 (≈ 9% misses).
    """
    rng = np.random.default_rng(21)
    mus = {"bank": 7.0, "utility": 9.0, "court": 10.0}
    frames = []
    for i, cell in enumerate(CELLS):
        lat, lng = cell_centre(cell)
        for cat, mu in mus.items():
            v = np.clip(np.floor(rng.lognormal(mu, 0.5, 150) + 0.5), *BOUNDS)
            frames.append(
                pd.DataFrame(
                    {
                        "lat": lat,
                        "lng": lng,
                        "amount": v,
                        "creditor": cat,
                        "pid": [f"{i}-{cat}-{j}" for j in range(150)],
                    }
                )
            )
    df = pd.concat(frames, ignore_index=True)
    spec = spec_with(suppress_below=False)
    design = design_for(spec, grid.to_region(REGION), DesignOptions())
    agg = local.bound_and_aggregate(df, spec, design.domain)
    cat_of = {"bank": 0, "utility": 1, "court": 2}
    truth: dict[int, float] = {}
    for (lat, lng, cat), g in df.groupby(["lat", "lng", "creditor"]):
        cell = h3.str_to_int(h3.latlng_to_cell(float(lat), float(lng), RESOLUTION))
        pos = int(np.searchsorted(design.domain, cell))
        assert design.domain[pos] == cell
        s = np.sort(g["amount"].to_numpy())
        truth[pos * 3 + cat_of[str(cat)]] = float(s[int(np.ceil(0.5 * len(s) - 1e-9)) - 1])
    rows = np.array(sorted(truth))
    want = np.array([truth[r] for r in rows])
    exact = nodes(agg, spec)[rows]  # the engine's per-(cell, category) histograms
    runs = 60  # R independent draws of every row's noise, in one call
    plan, zeros = design.noise, np.zeros(runs * len(rows), dtype=np.int64)
    noisy = plan.run_dense(
        {"count": zeros, "sum": zeros, "hist": np.tile(exact, (runs, 1)).reshape(-1)}
    )
    dist = distribution_columns(spec, plan, noisy["hist"])
    wants = np.tile(want, runs)
    misses = int(((dist["q50_lo"] > wants) | (dist["q50_hi"] < wants)).sum())
    n = runs * len(rows)
    limit = int(stats.binom.isf(1e-8, n, 0.05))
    assert misses <= limit, (misses, n, limit)
