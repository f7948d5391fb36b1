"""Quantiles and value bands after roll-ups, and on hierarchical releases.

The noisy value histogram is published beside the table (:attr:`dpmap.Release.histogram`,
``<name>.histogram.parquet``); a roll-up adds the cells' histograms with the area weights of
the counts and computes the columns with the per-node variance Σ w²·hist_var
(:func:`dpmap.analysis.rollup.summed_histograms`,
:func:`dpmap.designs.distribution.histogram_columns`). A hierarchical release measures the
histogram at its finest level only; a coarser cell holds its children's sum.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from scipy import stats

import dpmap
from common import REGION, RESOLUTION, cell_centre, interior_cells
from dpmap._privacy.noise import plan_noise
from dpmap.analysis.rollup import summed_histograms
from dpmap.designs.distribution import border_intervals, histogram_columns
from dpmap.errors import DpmapWarning
from dpmap.io import histogram_path
from dpmap.spec import Mechanism, ReleaseSpec

BOUNDS = (0, 50_000)
QUANTILES = (0.25, 0.5, 0.75)
LEVELS = [RESOLUTION - 1, RESOLUTION]


def spec_with(**kw: Any) -> ReleaseSpec:
    base: dict[str, Any] = {
        "resolution": RESOLUTION,
        "epsilon": 0.5,
        "person": "pid",
        "value": "amount",
        "bounds": BOUNDS,
        "quantiles": QUANTILES,
    }
    return ReleaseSpec(**{**base, **kw})


# ------------------------------------------------------- coverage of summed histograms

#: (cells per roll-up, area weights) of the simulated roll-ups
CASES = [(1, "whole"), (2, "whole"), (7, "whole"), (12, "whole"), (12, "split")]
#: independent roll-ups per case, records per cell, roll-ups simulated at a time
GROUPS, PER_CELL, BATCH = 2000, 50, 250


def weighted_true_quantile(values: np.ndarray, weights: np.ndarray, p: float) -> float:
    """The smallest value v whose weighted count of values ≤ v is at least p·(total weight):
    the quantile of the area-apportioned population that the summed histogram measures
    (with weights 1, the smallest v with #{values ≤ v} ≥ p·N)."""
    order = np.argsort(values, kind="stable")
    cw = np.cumsum(weights[order])
    i = int(np.argmax(cw >= p * cw[-1] * (1 - 1e-12)))
    return float(values[order][i])


def simulate_rollups(k: int, weights: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """GROUPS independent roll-ups of k cells each: every cell has PER_CELL records with
    its own value distribution and its own noise (discrete Laplace at the release's planned
    scale, drawn as the difference of two geometric variables: OpenDP's distribution, whose
    variance tests/test_quantiles.py checks against OpenDP's own draws; numpy because OpenDP
    takes ~9 s per million draws and this needs 70 million). Returns the columns of the
    summed histograms and the true quantiles (GROUPS × len(QUANTILES))."""
    spec = spec_with()
    tree, plan = spec.value_tree, plan_noise(spec)
    hist = plan.statistics["hist"]
    q = 1.0 - math.exp(-1.0 / hist.scale)
    rng = np.random.default_rng(20261206 + 100 * k + len(weights))
    cols: dict[str, list[np.ndarray]] = {}
    truth = np.zeros((GROUPS, len(QUANTILES)))
    for start in range(0, GROUPS, BATCH):
        n = BATCH * k  # cells in this batch; cell c belongs to roll-up c // k
        mu = rng.uniform(6.5, 10.0, n)
        values = np.clip(np.floor(rng.lognormal(mu[:, None], 1.0, (n, PER_CELL)) + 0.5), *BOUNDS)
        values = values.astype(np.int64)
        cell = np.repeat(np.arange(n), PER_CELL)
        exact = tree.node_vectors(cell, tree.leaf_of(values.reshape(-1)), np.ones(cell.size), n)
        shape = exact.shape
        noisy = exact + rng.geometric(q, shape) - rng.geometric(q, shape)
        w = np.ones(n) if weights == "whole" else rng.uniform(0.05, 1.0, n)
        group = np.arange(n) // k
        y, var = summed_histograms(noisy, np.full(n, hist.variance), np.arange(n), group, w, BATCH)
        out = histogram_columns(tree, Mechanism.LAPLACE, hist.scale, QUANTILES, None, y, var)
        for name, v in out.items():
            cols.setdefault(name, []).append(v)
        for g in range(BATCH):
            vals = values[g * k : (g + 1) * k].reshape(-1)
            ws = np.repeat(w[g * k : (g + 1) * k], PER_CELL)
            for j, p in enumerate(QUANTILES):
                truth[start + g, j] = weighted_true_quantile(vals, ws, p)
    return {name: np.concatenate(v) for name, v in cols.items()}, truth


@pytest.mark.parametrize(("k", "weights"), CASES)
def test_rollup_quantile_intervals_cover_at_least_95_percent(k: int, weights: str) -> None:
    """Coverage of [q_lo, q_hi] for sums of k cells' noisy histograms (whole cells, or cells
    with area weights in [0.05, 1]), with the one-row band factor (k = 7: a hierarchical
    release's parent of 7 finest cells).

    The method claims coverage ≥ 95% per roll-up and quantile (a lower bound: the band
    factor simulated for one row's noise is conservative for sums, whose tails are lighter),
    so the check is one-sided. Roll-ups are independent (own data, own noise), so the
    misses of one quantile in one case are Binomial(GROUPS, π) with π ≤ 0.05. A case fails
    if the misses of any quantile exceed the smallest k with P(Bin(GROUPS, 0.05) > k) <
    1e-8 / 15 (3 quantiles × 5 cases): the false-failure probability of the whole file is
    < 1e-8 (union bound). GROUPS = 2000 gives a limit of about 8% misses.
    """
    cols, truth = simulate_rollups(k, weights)
    limit = int(stats.binom.isf(1e-8 / 15, GROUPS, 0.05))
    assert 140 < limit < 185
    for j, p in enumerate(QUANTILES):
        name = f"q{p * 100:g}"
        t = truth[:, j]
        misses = int(((cols[f"{name}_lo"] > t) | (cols[f"{name}_hi"] < t)).sum())
        assert misses <= limit, f"{name}, {k} cells: {misses} of {GROUPS} miss (limit {limit})"
        # the point estimate sits where the truth is, give or take the interval
        width = cols[f"{name}_hi"] - cols[f"{name}_lo"]
        assert np.median(np.abs(cols[name] - t)) < np.median(width)


def test_summed_histograms_add_with_the_weights_and_square_them_for_the_variance() -> None:
    nodes = np.array([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]])
    y, var = summed_histograms(
        nodes,
        np.array([1.0, 2.0, 4.0]),
        np.array([0, 1, 2, 1]),
        np.array([0, 0, 1, 1]),
        np.array([1.0, 0.5, 0.25, 1.0]),
        3,
    )
    np.testing.assert_allclose(y, [[6.0, 12.0], [35.0, 70.0], [0.0, 0.0]])
    np.testing.assert_allclose(var, [1.0 + 0.25 * 2.0, 0.0625 * 4.0 + 2.0, 0.0])


# ------------------------------------------------------------ releases and their files


def points(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cells = interior_cells(12)
    picked = [cells[i] for i in rng.integers(0, len(cells), n)]
    lat, lng = zip(*(cell_centre(c) for c in picked), strict=True)
    return pd.DataFrame(
        {
            "lat": lat,
            "lng": lng,
            "pid": [f"p{i}" for i in rng.integers(0, max(1, n // 2), n)],
            "amount": rng.lognormal(8, 1.5, n),
        }
    )


def zones() -> gpd.GeoDataFrame:
    x0, y0, x1, y1 = REGION.bounds
    mid = (x0 + x1) / 2
    return gpd.GeoDataFrame(
        {"name": ["west", "east"]},
        geometry=[shapely.box(x0, y0, mid, y1), shapely.box(mid, y0, x1, y1)],
        crs="EPSG:4326",
    )


@pytest.fixture(scope="module")
def flat() -> dpmap.Release:
    return dpmap.release(
        points(3000),
        region=REGION,
        resolution=RESOLUTION,
        epsilon=1.0,
        person="pid",
        value="amount",
        bounds=BOUNDS,
        quantiles=[0.5],
        value_bands=[0, 1000, 50_000],
    )


@pytest.fixture(scope="module")
def hier() -> dpmap.Release:
    return dpmap.release(
        points(3000, seed=1),
        region=REGION,
        resolution=LEVELS,
        epsilon=1.0,
        person="pid",
        value="amount",
        bounds=BOUNDS,
        quantiles=[0.25, 0.5],
    )


DIST = ["q50", "q50_lo", "q50_hi", "band_0_1000", "band_0_1000_moe"]


def test_a_rollup_has_quantile_and_band_columns(flat: dpmap.Release) -> None:
    out = flat.aggregate_to(zones(), by="name")
    cols = list(out.columns)
    assert cols.index("band_1000_50000_moe") < cols.index("coverage")
    assert out[DIST].notna().all().all()
    assert (out["q50_lo"] <= out["q50"]).all() and (out["q50"] <= out["q50_hi"]).all()
    # the bands of a zone add up to its consistent total, like a cell's
    h = flat.histogram
    assert h is not None and len(h) == len(flat.cells)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".geojson"])
def test_the_file_rollup_equals_the_in_memory_rollup(
    flat: dpmap.Release, tmp_path: Path, suffix: str
) -> None:
    path = flat.to_file(tmp_path / f"m{suffix}", include_unbiased=True)
    assert histogram_path(path).is_file()
    back = dpmap.read_release(path)
    assert back.manifest == flat.manifest
    pd.testing.assert_frame_equal(back.histogram, flat.histogram, check_dtype=False)
    a = pd.DataFrame(flat.aggregate_to(zones()).drop(columns="geometry"))
    b = pd.DataFrame(back.aggregate_to(zones()).drop(columns="geometry"))
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
    assert {"q50", "band_0_1000_moe"} <= set(b.columns)


def test_suppressed_rows_histograms_are_absent_from_the_default_file(
    flat: dpmap.Release, tmp_path: Path
) -> None:
    t = flat.cells
    hidden = t["suppressed"].to_numpy(bool)
    assert hidden.any() and (~hidden).any()
    path = flat.to_file(tmp_path / "m.parquet")
    written = pd.read_parquet(histogram_path(path))
    assert set(written["cell"]) == set(t.loc[~hidden, "cell"])
    h = flat.histogram
    assert h is not None
    shown = h[h["cell"].isin(written["cell"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(written, shown, check_dtype=False)
    assert dpmap.read_release(path).manifest == flat.manifest
    everything = pd.read_parquet(
        histogram_path(flat.to_file(tmp_path / "u.parquet", include_unbiased=True))
    )
    assert set(everything["cell"]) == set(t["cell"])


def test_a_file_without_its_histogram_rolls_up_without_quantiles(tmp_path: Path) -> None:
    rel = dpmap.release(
        points(2000),
        region=REGION,
        resolution=RESOLUTION,
        epsilon=1.0,
        person="pid",
        value="amount",
        bounds=BOUNDS,
        quantiles=[0.5],
        suppress_below=False,
    )
    path = rel.to_file(tmp_path / "m.csv")
    full = dpmap.read_release(path).aggregate_to(zones())  # nothing hidden: all rows written
    assert "q50" in full.columns
    histogram_path(path).unlink()
    back = dpmap.read_release(path)
    assert back.histogram is None
    with pytest.warns(DpmapWarning, match="include_unbiased=True") as caught:
        out = back.aggregate_to(zones())
    assert "\n" not in str(caught[0].message)
    assert "q50" not in out.columns and out["count"].notna().all()
    pd.testing.assert_series_equal(out["count"], full["count"])


def test_a_release_without_quantiles_writes_no_histogram(tmp_path: Path) -> None:
    rel = dpmap.release(
        points(500), region=REGION, resolution=RESOLUTION, epsilon=1.0, person="pid"
    )
    assert rel.histogram is None
    path = rel.to_file(tmp_path / "m.parquet", include_unbiased=True)
    assert not histogram_path(path).exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = dpmap.read_release(path).aggregate_to(zones())
    assert not any(c.startswith(("q", "band_")) for c in out.columns)


# ------------------------------------------------------------------- hierarchical


def test_hierarchical_histogram_privacy_map_is_exact() -> None:
    """The histogram is one more vector of the composed measurement, at the finest level,
    with its own share: L1 = L0·L∞·3 and scale = L1 / (share·ε); the levels' counts and sums
    split the rest; OpenDP's map of the composition gives exactly the ε asked for."""
    spec = spec_with(resolution=tuple(LEVELS), epsilon=1.0, max_cells=2, histogram_share=0.4)
    plan = plan_noise(spec)
    assert list(plan.statistics) == [
        *(f"{s}@{r}" for s in ("count", "sum") for r in LEVELS),
        "hist",
    ]
    hist = plan.statistics["hist"]
    assert hist.sensitivity.l1 == 2 * 1 * 3
    assert hist.scale == pytest.approx(6 / 0.4, rel=1e-12)
    assert hist.epsilon == pytest.approx(0.4, rel=1e-12)
    shares = spec.level_shares()
    for r in LEVELS:
        assert plan.statistics[f"count@{r}"].epsilon == pytest.approx(0.6 * 0.5 * shares[r])
        assert plan.statistics[f"sum@{r}"].epsilon == pytest.approx(0.6 * 0.5 * shares[r])
    assert plan.epsilon <= 1.0
    assert plan.epsilon == pytest.approx(1.0, rel=1e-12)


def test_coarser_cells_hold_the_sum_of_their_childrens_histograms(hier: dpmap.Release) -> None:
    import h3

    h = hier.histogram
    assert h is not None
    nodes = [c for c in h.columns if c.startswith("node_")]
    assert len(nodes) == 1110
    fine = h[h["resolution"] == RESOLUTION]
    coarse = h[h["resolution"] == RESOLUTION - 1].set_index("cell")
    var = hier.manifest["value_distribution"]
    sigma2 = float(fine["hist_var"].iloc[0])
    assert (fine["hist_var"] == sigma2).all()
    parent = fine["cell"].map(lambda c: h3.cell_to_parent(c, RESOLUTION - 1))
    sums = fine[nodes].groupby(parent.to_numpy()).sum()
    children = parent.value_counts()
    np.testing.assert_array_equal(coarse.loc[sums.index, nodes].to_numpy(), sums.to_numpy())
    np.testing.assert_allclose(
        coarse.loc[children.index, "hist_var"], sigma2 * children.to_numpy(), rtol=1e-12
    )
    assert "finest children" in var["levels"]
    # a shown coarse row holding records has a median. (Not every shown coarse row: a truly
    # empty one shows with chance ≤ 1/rows and then, its histogram being pure noise, has no
    # median with chance ≈ 5e-6 — about 23 of the ~35 coarse rows are empty, ≈ 5e-7 a run.)
    t = hier.cells
    shown = ~t["suppressed"].to_numpy(bool)
    occupied = {h3.cell_to_parent(c, RESOLUTION - 1) for c in interior_cells(12)}
    coarse_shown = shown & (t["resolution"] == RESOLUTION - 1).to_numpy()
    held = coarse_shown & t["cell"].isin(occupied).to_numpy()
    assert held.any() and t.loc[held, "q50"].notna().all()


def test_hierarchical_explain_and_rollup_at_each_level(hier: dpmap.Release) -> None:
    text = str(
        dpmap.explain(
            region=REGION,
            resolution=LEVELS,
            epsilon=1.0,
            person="pid",
            value="amount",
            bounds=BOUNDS,
            quantiles=[0.5],
        )
    )
    assert f"measured at resolution {RESOLUTION} only" in text
    for r in LEVELS:
        out = hier.aggregate_to(zones(), resolution=r)
        assert out[["q25", "q50", "q50_lo", "q50_hi"]].notna().all().all()


def test_a_polygon_of_whole_cells_gets_the_columns_of_their_summed_histograms(
    flat: dpmap.Release,
) -> None:
    """A polygon that is one published cell gets that cell's own columns; one that is two
    whole cells gets the columns of the sum of their noisy histograms, with variance 2σ²."""
    from dpmap.grid import cells_to_polygons, hex_to_cells

    t = flat.cells
    h = flat.histogram
    assert h is not None
    shown = t[~t["suppressed"].to_numpy(bool)].reset_index(drop=True)
    a, b = shown["cell"].iloc[0], shown["cell"].iloc[-1]
    pa, pb = cells_to_polygons(hex_to_cells(np.array([a, b], dtype=object)))
    polys = gpd.GeoDataFrame(
        {"name": ["a", "ab"]}, geometry=[pa, shapely.union(pa, pb)], crs="EPSG:4326"
    )
    out = flat.aggregate_to(polys).set_index("name")
    assert out.loc["a", "cells"] == 1 and out.loc["ab", "cells"] == 2
    for col in DIST:
        assert out.loc["a", col] == pytest.approx(shown.loc[0, col], rel=1e-12, abs=1e-9)
    nodes = [c for c in h.columns if c.startswith("node_")]
    rows = h.set_index("cell").loc[[a, b]]
    spec = spec_with(epsilon=1.0, quantiles=(0.5,), value_bands=(0, 1000, 50_000))
    vd = flat.manifest["value_distribution"]
    want = histogram_columns(
        spec.value_tree,
        Mechanism.LAPLACE,
        vd["scale"],
        (0.5,),
        (0, 1000, 50_000),
        rows[nodes].to_numpy(np.float64).sum(axis=0, keepdims=True),
        np.array([rows["hist_var"].sum()]),
    )
    for col in DIST:
        assert out.loc["ab", col] == pytest.approx(want[col][0], rel=1e-12, abs=1e-9)


# ------------------------------------------- borders: split cells, whatever lies inside

#: (inside cells, split cells, which of a split cell's records lie in the polygon, records
#: per cell: many, so that the border decides, or few, so that the noise does)
BORDER_CASES = [
    (3, 4, "lowest", 1000),
    (3, 4, "highest", 1000),
    (0, 2, "lowest", 1000),
    (6, 3, "random", 1000),
    (0, 3, "random", 40),
]
BORDER_GROUPS = 1000  # polygons per case


def simulate_border_rollups(
    k_in: int, k_b: int, allocation: str, per_cell: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """BORDER_GROUPS polygons, each with k_in cells wholly inside and k_b cells its border
    splits; of each split cell's per_cell records, a share drawn in [0.2, 0.8] lies inside:
    its lowest values, its highest (the worst cases for an area-apportioned estimate) or a
    random subset. Returns the border-aware columns, the area-apportioned columns (area share
    0.5: what an interval that assumes evenly spread records would say), the true quantiles
    of each polygon's records, and the true band counts [0, 1000)."""
    spec = spec_with(value_bands=[0, 1000, 50_000])
    tree, hist = spec.value_tree, plan_noise(spec).statistics["hist"]
    q = 1.0 - math.exp(-1.0 / hist.scale)
    rng = np.random.default_rng(7_000 + 10 * k_in + k_b + len(allocation) + per_cell)
    k = k_in + k_b
    n = BORDER_GROUPS * k
    mu = rng.uniform(6.5, 10.0, n)
    values = np.clip(np.floor(rng.lognormal(mu[:, None], 1.0, (n, per_cell)) + 0.5), *BOUNDS)
    values = np.sort(values.astype(np.int64), axis=1)
    cell = np.repeat(np.arange(n), per_cell)
    exact = tree.node_vectors(cell, tree.leaf_of(values.reshape(-1)), np.ones(cell.size), n)
    noisy = exact + rng.geometric(q, exact.shape) - rng.geometric(q, exact.shape)
    group = np.arange(n) // k
    split = (np.arange(n) % k) >= k_in
    ones, var1 = np.ones(n), np.full(n, hist.variance)
    rows = np.arange(n)
    inside = summed_histograms(
        noisy, var1, rows[~split], group[~split], ones[~split], len(group) // k
    )
    border = summed_histograms(noisy, var1, rows[split], group[split], ones[split], len(group) // k)
    cols = border_intervals(
        tree, Mechanism.LAPLACE, hist.scale, QUANTILES, [0, 1000, 50_000], inside, border
    )
    y, var = summed_histograms(noisy, var1, rows, group, np.where(split, 0.5, 1.0), n // k)
    spread = histogram_columns(tree, Mechanism.LAPLACE, hist.scale, QUANTILES, None, y, var)
    truth = np.zeros((n // k, len(QUANTILES)))
    low_band = np.zeros(n // k)
    for g in range(n // k):
        parts = []
        for c in range(g * k, (g + 1) * k):
            if not split[c]:
                parts.append(values[c])
                continue
            m = int(rng.integers(int(0.2 * per_cell), int(0.8 * per_cell) + 1))
            if allocation == "lowest":
                parts.append(values[c, :m])
            elif allocation == "highest":
                parts.append(values[c, per_cell - m :])
            else:
                parts.append(rng.choice(values[c], m, replace=False))
        vals = np.sort(np.concatenate(parts))
        low_band[g] = (vals < 1000).sum()
        for j, p in enumerate(QUANTILES):
            truth[g, j] = vals[int(np.ceil(p * len(vals))) - 1]  # smallest v with F(v) ≥ pN
    return cols, spread, truth, low_band


@pytest.mark.parametrize(("k_in", "k_b", "allocation", "per_cell"), BORDER_CASES)
def test_border_aware_intervals_cover_whatever_lies_inside(
    k_in: int, k_b: int, allocation: str, per_cell: int
) -> None:
    """A roll-up's quantile interval and band interval cover the polygon's true values at
    least 95% of the time whichever records of the split cells lie inside — the lowest, the
    highest or any — while an interval that assumes them spread evenly does not.

    Polygons are independent (own data, own noise): misses are Binomial(BORDER_GROUPS, π)
    with π ≤ 0.05 by the method (union of two 97.5% simultaneous bands). Limit: the
    smallest k with P(Bin(1000, 0.05) > k) < 1e-8 / 20 (4 statistics × 5 cases), so the
    false-failure probability of the file is < 1e-8. Broken on purpose (the roll-up's
    border-aware override dropped: the area-apportioned interval) — the ``spread`` columns
    below — misses 40–100% in the 'lowest'/'highest' cases: red."""
    cols, spread, truth, low_band = simulate_border_rollups(k_in, k_b, allocation, per_cell)
    limit = int(stats.binom.isf(1e-8 / 20, BORDER_GROUPS, 0.05))
    assert 80 < limit < 110
    for j, p in enumerate(QUANTILES):
        name = f"q{p * 100:g}"
        t = truth[:, j]
        misses = int(((cols[f"{name}_lo"] > t) | (cols[f"{name}_hi"] < t)).sum())
        assert misses <= limit, f"{name}: {misses} of {BORDER_GROUPS} miss (limit {limit})"
        if allocation != "random":
            naive = int(((spread[f"{name}_lo"] > t) | (spread[f"{name}_hi"] < t)).sum())
            assert naive > limit, f"{name}: the evenly-spread interval missed only {naive}"
    band_misses = int(
        ((cols["band_0_1000_lo"] > low_band) | (cols["band_0_1000_hi"] < low_band)).sum()
    )
    assert band_misses <= limit, f"band [0, 1000): {band_misses} of {BORDER_GROUPS} miss"


@pytest.mark.filterwarnings("ignore::dpmap.errors.NegligibleNoiseWarning")
def test_a_polygon_splitting_a_cell_gets_an_interval_that_holds_for_any_split() -> None:
    """One cell, cut in half by two polygons; its low values lie in the west half and its
    high values in the east half. With noise made negligible (ε = 200), the intervals are
    the border's alone: each half's interval holds its true median, which an interval
    assuming the cell's records spread evenly (the cell's own median, 40,000 for both
    halves) would not.

    At ε = 200 the histogram's noise has scale 0.03 (q = e^{-33.3}): every node's noise is 0
    except with chance 2q/(1 + q) < 7e-15. At the former ε = 40 (scale 0.15, q = e^{-6.7})
    a node's noise was ±1 with chance 2.5e-3, and a −1 on the low band put the west half's
    band_0_1000_hi at 19.97 < 20: 1 run in 300 failed when measured. (Not much higher: the
    band's exact margin, 2e-7 here, falls below float rounding near ε = 400, where the
    noiseless band_0_1000_hi comes out as 20 − 7e-15.)"""
    cell = interior_cells(1)[0]
    lat, lng = cell_centre(cell)
    d = 0.002  # well inside the cell (resolution 7: edges of about 1.2 km)
    west = pd.DataFrame({"lat": lat, "lng": lng - d, "amount": 100.0}, index=range(20))
    east = pd.DataFrame({"lat": lat, "lng": lng + d, "amount": 40_000.0}, index=range(30))
    pts = pd.concat([west, east], ignore_index=True)
    pts["pid"] = [f"p{i}" for i in range(len(pts))]
    rel = dpmap.release(
        pts, region=REGION, resolution=RESOLUTION, epsilon=200.0, person="pid",
        value="amount", bounds=BOUNDS, quantiles=[0.5], value_bands=[0, 1000, 50_000],
        suppress_below=False,
    )  # fmt: skip
    poly = shapely.Polygon(cell_polygon_lnglat(cell))
    halves = gpd.GeoDataFrame(
        {"name": ["west", "east"]},
        geometry=[
            poly.intersection(shapely.box(lng - 1, lat - 1, lng, lat + 1)),
            poly.intersection(shapely.box(lng, lat - 1, lng + 1, lat + 1)),
        ],
        crs="EPSG:4326",
    )
    out = rel.aggregate_to(halves, by="name").set_index("name")
    assert out.loc["west", "q50_lo"] <= 100 <= out.loc["west", "q50_hi"]
    assert out.loc["east", "q50_lo"] <= 40_000 <= out.loc["east", "q50_hi"]
    assert out.loc["west", "band_0_1000_lo"] <= 20 <= out.loc["west", "band_0_1000_hi"]
    assert out.loc["east", "band_0_1000_lo"] <= 0 <= out.loc["east", "band_0_1000_hi"]
    # the apportioned point estimates are the cell's own, for both halves
    assert out.loc["west", "q50"] > 1000 and out.loc["east", "q50"] > 1000


def cell_polygon_lnglat(cell: str) -> list[tuple[float, float]]:
    import h3

    return [(lng, lat) for lat, lng in h3.cell_to_boundary(cell)]


@pytest.mark.parametrize("adaptive", [True, "grid"])
def test_adaptive_releases_keep_their_leaf_histograms_for_rollups(adaptive: object) -> None:
    """PrivTree and adaptive-grid releases keep one noisy histogram per published leaf, so
    their roll-ups get quantile columns (without the missing-histogram warning)."""
    rel = dpmap.release(
        points(2000, seed=3), region=REGION, resolution=RESOLUTION, epsilon=1.0, person="pid",
        value="amount", bounds=BOUNDS, quantiles=[0.5], adaptive=adaptive,
    )  # fmt: skip
    h = rel.histogram
    assert h is not None and len(h) == len(rel.cells)
    assert list(h["cell"]) == list(rel.cells["cell"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DpmapWarning)
        out = rel.aggregate_to(zones(), by="name")
    assert out[["q50", "q50_lo", "q50_hi"]].notna().all().all()
    assert (out["q50_lo"] <= out["q50_hi"]).all()
