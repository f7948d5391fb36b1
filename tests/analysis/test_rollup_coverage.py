"""Coverage of the roll-up intervals ``[count_lo, count_hi]`` of :func:`dpmap.aggregate_to`,
measured by simulation against a known truth.

Data: clustered points (40 tight "villages"), so most cells are empty and the records of a
split border cell are not spread evenly over it. Zones: 30 grid boxes over the region
(much larger than cells at resolution 8, about as large as cells at resolution 6), 40
small boxes around the villages (much smaller than a cell: L = 0 and U = the cell(s) they
touch) and about 30 zones made of whole cells (L = U: only the noise is at stake). Every
point is its own person, so the true count of a zone is the number of points in it.
Designs: flat at resolutions 6 and 8, hierarchical [6, 7, 8], and the adaptive grid (a
weaker, one-block-per-release bound, see its test). The releases of one design share its
plan (``cached_plans`` in tests/conftest.py: a plan is a deterministic function of the
public parameters, and calibrating a hierarchical one took half of each release's time); the
noise, binning, bounding and roll-up run afresh in every release.

Tolerance (false failure < 1e-8 per run)
    Each zone's interval covers its true count with probability p ≥ 0.95 (a union of two
    one-sided 97.5% bounds; more when the border cells hold records). Within a release the
    hits of zones are dependent when they share noise: in a flat release when they touch a
    common cell; in a hierarchical one when their cells share a resolution-6 ancestor (the
    least-squares estimates of different top-level subtrees are independent; the tree has no
    level above them). Hits of different releases are independent. The test builds this
    dependency graph from the public geometry and colours it greedily with χ colours (≥ its
    fractional chromatic number χ*). Janson's (2004) Hoeffding inequality for sums with a
    dependency graph gives P(S ≤ E S − t) ≤ exp(−2t² / (χ*·n)) (and the same for S ≥ E S + t)
    for n Bernoulli hits, so with τ = √(χ·ln(2·10⁹) / (2n)) a coverage below 0.95 − τ (or
    beyond an exact expected value ± τ) has probability < 5e-10 per side and check: three
    designs × three checks × two sides, plus the adaptive grid's one, stay < 1e-8. For the mixed zones coverage above 0.95
    is expected (conservative by construction), so only the lower side is tested there, and
    the width is checked separately against what the construction needs. For whole-cell
    zones of a flat release the miss probability is known exactly (discrete Laplace noise)
    and that check is two-sided (it catches a quarter of the right margin; three times the
    right margin is caught by the width check, the two-sided window being ±0.038 here).
"""

from __future__ import annotations

import math
from typing import Any

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pytest
import shapely

import dpmap
from common import REGION, REGION_BOUNDS
from dpmap._privacy.noise import noise_variance
from dpmap.analysis import totals
from dpmap.spec import Mechanism

RUNS = 250
LOG_INV_FAIL = math.log(2e9)  # 1e-8 split over three designs x three checks (x2: two-sided)


def _clustered_points(seed: int = 20) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = REGION_BOUNDS
    villages = np.column_stack(
        [rng.uniform(x0 + 0.01, x1 - 0.01, 40), rng.uniform(y0 + 0.01, y1 - 0.01, 40)]
    )
    k = rng.integers(0, 40, 3000)
    lng = villages[k, 0] + rng.normal(0, 0.002, 3000)
    lat = villages[k, 1] + rng.normal(0, 0.002, 3000)
    keep = (lng > x0 + 1e-4) & (lng < x1 - 1e-4) & (lat > y0 + 1e-4) & (lat < y1 - 1e-4)
    return pd.DataFrame({"lat": lat[keep], "lng": lng[keep]}), villages


def _zones(villages: np.ndarray) -> gpd.GeoDataFrame:
    x0, y0, x1, y1 = REGION_BOUNDS
    xs, ys = np.linspace(x0, x1, 7), np.linspace(y0, y1, 6)
    big = [shapely.box(xs[i], ys[j], xs[i + 1], ys[j + 1]) for i in range(6) for j in range(5)]
    # small boxes (about 170 m x 220 m) a little off each village's centre
    small = [shapely.box(x - 0.0007, y - 0.001, x + 0.0013, y + 0.001) for x, y in villages]
    geoms = big + small
    return gpd.GeoDataFrame(
        {"name": [f"z{i}" for i in range(len(geoms))]}, geometry=geoms, crs="EPSG:4326"
    )


def _touching(rel: dpmap.Release, zones: gpd.GeoDataFrame, res: int) -> tuple[Any, Any, Any]:
    """Per zone: the finest released cells touching it (positive shared area) and those
    wholly inside it, from shapely, independently of dpmap's overlay."""
    cells = rel.cells.drop_duplicates("cell")
    cells = cells[cells["resolution"] == res]
    geoms = cells.geometry.to_numpy()
    ids = cells["cell"].to_numpy()
    touch, inside = [], []
    for z in zones.geometry:
        shared = shapely.area(shapely.intersection(geoms, z)) / shapely.area(geoms)
        touch.append(set(ids[shared > 1e-6]))
        inside.append(set(ids[shared > 1 - 1e-6]))
    return touch, inside, ids


def _colours(blocks: list[set[str]]) -> int:
    """Greedy colouring of the graph 'zones share a noise block': an upper bound on χ*."""
    colour: list[int] = []
    for i, b in enumerate(blocks):
        used = {colour[j] for j in range(i) if blocks[j] & b}
        colour.append(next(c for c in range(len(blocks) + 1) if c not in used))
    return max(colour) + 1


DESIGNS = {"flat6": 6, "flat8": 8, "hier678": [6, 7, 8]}


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    pts, villages = _clustered_points()
    zones = _zones(villages)
    truth = np.array([shapely.contains_xy(z, pts["lng"], pts["lat"]).sum() for z in zones.geometry])
    fine_of = {
        r: pd.Series([h3.latlng_to_cell(a, b, r) for a, b in zip(pts.lat, pts.lng, strict=True)])
        for r in (6, 8)
    }
    return {
        "pts": pts,
        "zones": zones,
        "truth": truth,
        "cells": {r: s.value_counts() for r, s in fine_of.items()},
    }


def _whole_cell_zones(rel: dpmap.Release, finest: int) -> tuple[list[list[str]], list[Any]]:
    """30 disjoint zones made of whole released cells (L = U = the true count, so only the
    noise is at stake): single cells at resolution 6, else the 7 children of an interior
    resolution-(finest − 1) cell."""
    fine = set(rel.cells.loc[rel.cells["resolution"] == finest, "cell"])
    if finest == 6:
        groups = [[c] for c in sorted(fine)]
    else:
        parents = sorted({h3.cell_to_parent(c, finest - 1) for c in fine})
        groups = [sorted(h3.cell_to_children(p, finest)) for p in parents]
        groups = [g for g in groups if set(g) <= fine]
    groups = [groups[i] for i in np.linspace(0, len(groups) - 1, min(30, len(groups))).astype(int)]
    geoms = [
        shapely.union_all([shapely.Polygon([(y, x) for x, y in h3.cell_to_boundary(c)]) for c in g])
        for g in groups
    ]
    return groups, geoms


def _exact_tail(scale: float, k: int, margin: float) -> float:
    """P(X₁ + … + X_k > margin) for k discrete Laplace draws, by direct convolution."""
    x = np.arange(-600, 601)
    one = np.exp(-np.abs(x) / scale)
    one /= one.sum()
    pmf = one
    for _ in range(k - 1):
        pmf = np.convolve(pmf, one)
    support = np.arange(len(pmf)) - (len(pmf) - 1) // 2
    return float(pmf[support > margin].sum())


@pytest.mark.slow
@pytest.mark.usefixtures("cached_plans")
@pytest.mark.parametrize("design", list(DESIGNS))
def test_rollup_intervals_cover_the_true_zone_count(data: dict[str, Any], design: str) -> None:
    resolution = DESIGNS[design]
    finest = resolution[-1] if isinstance(resolution, list) else resolution
    pts, zones, truth = data["pts"], data["zones"], data["truth"]
    kw = dict(region=REGION, resolution=resolution, epsilon=1.0, suppress_below=False)
    first = dpmap.release(pts, **kw)
    groups, geoms = _whole_cell_zones(first, finest)
    nz = len(zones)
    zones = gpd.GeoDataFrame(
        {"name": [*zones["name"], *(f"w{i}" for i in range(len(groups)))]},
        geometry=[*zones.geometry, *geoms],
        crs="EPSG:4326",
    )
    touch, inside, _ = _touching(first, zones, finest)
    per_cell = data["cells"][finest]
    whole_truth = np.array([per_cell.reindex(g).fillna(0).sum() for g in groups])
    truth = np.r_[truth, whole_truth]
    lower = np.array([per_cell.reindex(list(s)).fillna(0).sum() for s in inside])
    upper = np.array([per_cell.reindex(list(s)).fillna(0).sum() for s in touch])
    assert ((lower <= truth) & (truth <= upper)).all()  # the bounds the interval rests on
    assert (lower[nz:] == upper[nz:]).all() and len(groups) >= 20  # whole cells: L = U
    share_empty = 1 - len(per_cell) / len(first.cells[first.cells["resolution"] == finest])
    assert share_empty > (0.35 if finest == 6 else 0.8)  # many empty cells
    if isinstance(resolution, list):  # noise blocks: the top-level (resolution-6) subtrees
        blocks = [{h3.cell_to_parent(c, 6) for c in s} for s in touch]
    else:
        blocks = touch
    hits, width, naive_hits = [], [], []
    for _ in range(RUNS):
        out = dpmap.release(pts, **kw).aggregate_to(zones)
        lo, hi = out["count_lo"].to_numpy(), out["count_hi"].to_numpy()
        hits.append((lo <= truth) & (truth <= hi))
        width.append((hi - lo)[:nz])
        est, moe = out["count"].to_numpy(), out["count_moe"].to_numpy()
        naive_hits.append(np.abs(est - truth) <= moe)
    hit = np.asarray(hits)

    def tau(cols: np.ndarray) -> float:
        chi = _colours([blocks[i] for i in cols])
        return math.sqrt(chi * LOG_INV_FAIL / (2 * RUNS * len(cols)))

    everything, small = np.arange(nz), np.arange(30, nz)
    coverage = float(hit[:, everything].mean())
    naive = float(np.asarray(naive_hits)[:, everything].mean())
    assert coverage >= 0.95 - tau(everything), (design, coverage, naive)
    assert hit[:, small].mean() >= 0.95 - tau(small)
    # zones of whole cells: the noise alone decides. For a flat release the miss
    # probability is known exactly (two-sided check): with X the summed noise and m the
    # margin, a zone with true count T > 0 is missed iff |X| > m (2p), one with T = 0 iff
    # X > m (p: the upper end is clamped at ≥ 0 = T).
    whole = np.arange(nz, len(zones))
    got = float(hit[:, whole].mean())
    if isinstance(resolution, list):  # least-squares noise: no exact expected value, lower side
        assert got >= 0.95 - tau(whole), (design, got)
    else:
        st = first.manifest["statistics"]["count"]
        k = len(groups[0])
        margin = st["moe_95"] if k == 1 else totals._laplace_sum_quantile(st["scale"], k)
        p = _exact_tail(st["scale"], k, margin)
        assert p <= 0.025  # one-sided 97.5% (OpenDP's two-sided 95% margin for one cell)
        expected = float(np.mean(np.where(whole_truth > 0, 1 - 2 * p, 1 - p)))
        assert abs(got - expected) <= tau(whole), (design, got, expected)
    # not wider than needed: the expected width is (U − L) + m(L) + m(U) (clamping at 0 only
    # narrows it); for flat releases m is the exact one-sided 97.5% quantile of k cells'
    # discrete Laplace noise (checked against a direct convolution in test_analysis), or
    # OpenDP's exact margin for one cell. Averaged over n zone-runs the noise terms (Û − U) and
    # (L − L̂) have mean 0; a release's average over its zones has variance at most that of
    # one zone (Cauchy-Schwarz), ≤ (sd_U + sd_L)² ≤ 4·kmax·var, and releases are
    # independent: SE ≤ √(4·kmax·var / RUNS); 6 SE (normal tail < 1e-9).
    if not isinstance(resolution, list):
        st = first.manifest["statistics"]["count"]
        var = noise_variance(Mechanism.LAPLACE, st["scale"])

        def m(k: int) -> float:  # the one-sided 97.5% noise margin of k whole cells
            if k <= 1:
                return 0.0 if k == 0 else st["moe_95"]
            return totals._laplace_sum_quantile(st["scale"], k)

        need = np.array(
            [
                u - lw + m(len(i)) + m(len(t))
                for u, lw, i, t in zip(upper[:nz], lower[:nz], inside[:nz], touch[:nz], strict=True)
            ]
        )
        kmax = max(len(t) for t in touch)
        se = math.sqrt(4 * kmax * var / RUNS)
        assert float(np.mean(width)) <= float(need.mean()) + 6 * se


@pytest.mark.slow
@pytest.mark.usefixtures("cached_plans")
def test_adaptive_grid_rollup_intervals_cover_the_true_zone_count(data: dict[str, Any]) -> None:
    """The adaptive grid (cells at resolutions 7 and 8 chosen from noisy counts, least-squares
    estimates with exact variances). Its partition changes from release to release, but
    L ≤ T ≤ U holds for any partition. All zones of a release are treated as one block of
    dependent hits (χ = number of zones: sound whatever ties the estimates together), so
    τ = √(ln(2·10⁹) / (2·RUNS)) ≈ 0.21: a weak but sound lower bound, far above what the
    noise-only interval reaches on these data (about a third)."""
    pts, zones, truth = data["pts"], data["zones"], data["truth"]
    kw = dict(region=REGION, resolution=8, epsilon=1.0, suppress_below=False, adaptive="grid")
    hits, naive_hits = [], []
    mixed = False
    for _ in range(RUNS):
        rel = dpmap.release(pts, **kw)
        mixed |= rel.cells["resolution"].nunique() > 1
        out = rel.aggregate_to(zones)
        lo, hi = out["count_lo"].to_numpy(), out["count_hi"].to_numpy()
        hits.append((lo <= truth) & (truth <= hi))
        naive_hits.append(np.abs(out["count"].to_numpy() - truth) <= out["count_moe"].to_numpy())
    assert mixed  # cells at more than one resolution
    tau = math.sqrt(len(zones) * LOG_INV_FAIL / (2 * RUNS * len(zones)))
    coverage = float(np.mean(hits))
    assert coverage >= 0.95 - tau, (coverage, tau, float(np.mean(naive_hits)))
