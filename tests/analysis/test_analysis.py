"""Analyses of releases: roll-ups to polygons, comparisons, "around a point", planning ε.

Exact tests check the arithmetic against the release's own unbiased estimates (which are
public noisy outputs). Statistical tests (marked ``slow``) use data where every point is
its own person, so the true per-cell counts are known exactly; their tolerances are at
least 6 standard errors (the arithmetic is stated next to each), so they cannot flake.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path
from typing import Any

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Geod

import dpmap
from common import CATEGORIES, REGION, cell_centre, cell_polygon, debtors, interior_cells
from common import uniform_points as _points
from dpmap._privacy.postprocess import Z95
from dpmap.analysis import nearby, totals
from dpmap.cli import main
from dpmap.releases import targets

GEOD = Geod(ellps="WGS84")


def _truth(points: pd.DataFrame) -> pd.Series:
    cells = [h3.latlng_to_cell(a, b, 7) for a, b in zip(points["lat"], points["lng"], strict=True)]
    return pd.Series(cells).value_counts()


def _geo_area(geom: Any) -> float:
    """Geodesic area (m²) of a lon/lat geometry, densified so edges follow lon/lat lines."""
    return abs(GEOD.geometry_area_perimeter(shapely.segmentize(geom, 0.0005))[0])


def _union(cells: list[str]) -> Any:
    return shapely.union_all([cell_polygon(c) for c in cells])


def _groups(rel: dpmap.Release, k: int) -> list[list[str]]:
    """The release's cells split into k strips by the longitude of their centres."""
    cells = sorted(rel.cells["cell"].unique(), key=lambda c: cell_centre(c)[1])
    return [list(g) for g in np.array_split(np.array(cells, dtype=object), k)]


def _polys(groups: list[list[str]], crs: Any = "EPSG:4326") -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"name": [f"g{i}" for i in range(len(groups))]},
        geometry=[_union(g) for g in groups],
        crs="EPSG:4326",
    ).to_crs(crs)


def _est(rel: dpmap.Release) -> pd.DataFrame:
    est = rel.estimates
    assert est is not None
    return est


# ------------------------------------------------------------------------------- roll-ups


def test_rollup_is_the_sum_of_unbiased_estimates_per_category() -> None:
    pts = debtors(300, 2, 8)
    rel = dpmap.release(
        pts,
        region=REGION,
        resolution=7,
        epsilon=1.0,
        person="pid",
        value="amount",
        bounds=(0, 2000),
        max_cells=2,
        category="creditor",
        categories=list(CATEGORIES),
    )
    assert rel.cells["suppressed"].any()  # suppressed rows are included all the same
    groups = _groups(rel, 5)
    out = rel.aggregate_to(_polys(groups, crs="EPSG:32650"))  # any CRS
    est = _est(rel)
    assert list(out.columns) == [
        "name",
        "category",
        "count",
        "count_moe",
        "count_lo",
        "count_hi",
        "sum",
        "sum_moe",
        "sum_lo",
        "sum_hi",
        "coverage",
        "cells",
        "geometry",
    ]
    assert out.crs == "EPSG:4326" and len(out) == 5 * 3
    st = rel.manifest["statistics"]
    for i, g in enumerate(groups):
        # polygons made of whole cells: inside = touching = g, so the interval is the noise
        # interval of their total, one-sided 97.5% each way (exact discrete Laplace quantile)
        q_count = totals._laplace_sum_quantile(st["count"]["scale"], len(g))
        q_sum = totals._laplace_sum_quantile(st["sum"]["scale"], len(g))
        for cat in (*CATEGORIES, "other"):
            row = out[(out["name"] == f"g{i}") & (out["category"] == cat)].iloc[0]
            mine = est[est["cell"].isin(g) & (est["category"] == cat)]
            assert len(mine) == len(g) == row["cells"]
            assert row["count"] == pytest.approx(mine["count"].sum(), rel=1e-9, abs=1e-9)
            assert row["sum"] == pytest.approx(mine["sum"].sum(), rel=1e-9, abs=1e-6)
            assert row["count_moe"] == pytest.approx(Z95 * math.sqrt(mine["count_var"].sum()))
            assert row["sum_moe"] == pytest.approx(Z95 * math.sqrt(mine["sum_var"].sum()))
            assert row["coverage"] == pytest.approx(1.0, abs=1e-9)
            c, s_ = mine["count"].sum(), mine["sum"].sum()
            assert row["count_lo"] == pytest.approx(max(0.0, c - q_count), abs=1e-9)
            assert row["count_hi"] == pytest.approx(max(0.0, c + q_count), abs=1e-9)
            assert row["sum_lo"] == pytest.approx(max(0.0, s_ - q_sum), abs=1e-6)
            assert row["sum_hi"] == pytest.approx(max(0.0, s_ + q_sum), abs=1e-6)


def test_a_cell_split_by_a_border_is_apportioned_by_area() -> None:
    rel = dpmap.release(_points(500, 1), region=REGION, resolution=7, epsilon=1.0)
    cell = interior_cells(1)[0]
    poly = cell_polygon(cell)
    x0, y0, x1, y1 = poly.bounds
    cut = x0 + 0.3 * (x1 - x0)  # an uneven split, not through the centre
    west = poly.intersection(shapely.box(x0 - 1, y0 - 1, cut, y1 + 1))
    east = poly.intersection(shapely.box(cut, y0 - 1, x1 + 1, y1 + 1))
    polys = gpd.GeoDataFrame(
        {"name": ["west", "east", "whole"]}, geometry=[west, east, poly], crs="EPSG:4326"
    )
    out = rel.aggregate_to(polys).set_index("name")
    row = _est(rel).set_index("cell").loc[cell]
    share = _geo_area(west) / _geo_area(poly)  # geodesic, independent of dpmap's projection
    assert 0.15 < share < 0.35
    sd = math.sqrt(row["count_var"])
    assert out.loc["west", "count"] == pytest.approx(share * row["count"], rel=1e-4, abs=1e-4)
    assert out.loc["east", "count"] == pytest.approx((1 - share) * row["count"], rel=1e-4, abs=1e-4)
    assert out.loc["west", "count"] + out.loc["east", "count"] == pytest.approx(row["count"])
    assert out.loc["west", "count_moe"] == pytest.approx(Z95 * share * sd, rel=1e-4)
    assert out.loc["east", "count_moe"] == pytest.approx(Z95 * (1 - share) * sd, rel=1e-4)
    assert (out["cells"] == 1).all()  # neighbours sharing only an edge are not counted
    assert (out["coverage"] > 1 - 1e-5).all()
    # one whole cell: its own estimate and the exact discrete margin of the release
    assert out.loc["whole", "count"] == pytest.approx(row["count"])
    exact = rel.manifest["statistics"]["count"]["moe_95"]
    assert out.loc["whole", "count_moe"] == pytest.approx(exact)
    # the interval: a part of a cell holds between 0 (no whole cell inside: L = 0 exactly)
    # and all of that cell's records (U), whatever the share of its area
    for part in ("west", "east"):
        assert out.loc[part, "count_lo"] == 0.0
        assert out.loc[part, "count_hi"] == pytest.approx(max(0.0, row["count"] + exact))
    assert out.loc["whole", "count_lo"] == pytest.approx(max(0.0, row["count"] - exact))
    assert out.loc["whole", "count_hi"] == pytest.approx(max(0.0, row["count"] + exact))


@pytest.mark.parametrize("scale", [0.8, 2.0, 7.5])
def test_laplace_sum_quantile_is_the_exact_one_sided_quantile(scale: float) -> None:
    """Against a direct convolution of the discrete Laplace pmf: P(X > q) ≤ 2.5% < P(X > q−1)."""
    x = np.arange(-400, 401)
    one = np.exp(-np.abs(x) / scale)
    one /= one.sum()
    pmf = one.copy()
    for k in range(1, 9):
        if k > 1:
            pmf = np.convolve(pmf, one)
        support = np.arange(len(pmf)) - (len(pmf) - 1) // 2
        q = totals._laplace_sum_quantile(scale, k)
        assert pmf[support > q].sum() <= 0.025 < pmf[support > q - 1].sum()
    # large scales (sums): scaled from a fitting lattice, within a unit per 1000 of the
    # continuous Laplace limit; k = 1: −ln(0.05)/√2 standard deviations
    big = totals._laplace_sum_quantile(50_000.0, 1)
    assert big == pytest.approx(-math.log(0.05) * 50_000.0, rel=1e-3)


def _split_polygons() -> tuple[gpd.GeoDataFrame, list[str], str]:
    """'mixed': three whole cells plus the western 30% of a fourth; 'part': only that part."""
    cells = interior_cells(12)
    whole = cells[:3]
    cut_cell = next(c for c in cells[3:] if not any(h3.are_neighbor_cells(c, w) for w in whole))
    poly = cell_polygon(cut_cell)
    x0, y0, x1, y1 = poly.bounds
    part = poly.intersection(shapely.box(x0 - 1, y0 - 1, x0 + 0.3 * (x1 - x0), y1 + 1))
    mixed = shapely.union_all([_union(whole), part])
    polys = gpd.GeoDataFrame({"name": ["mixed", "part"]}, geometry=[mixed, part], crs=4326)
    return polys, whole, cut_cell


def test_rollup_interval_bounds_inside_and_touching_cells() -> None:
    """count_lo/count_hi: L̂ − m(L) with L the cells wholly inside, Û + m(U) with U every cell
    touching; exact one-sided quantiles for a flat Laplace release; clamped at 0."""
    rel = dpmap.release(
        _points(600, 22),
        region=REGION,
        resolution=7,
        epsilon=1.0,
        value="amount",
        bounds=(0, 100),
        suppress_below=False,
    )
    polys, whole, cut = _split_polygons()
    out = rel.aggregate_to(polys).set_index("name")
    est = _est(rel).set_index("cell")
    st = rel.manifest["statistics"]
    for stat in ("count", "sum"):
        inside = est.loc[whole, stat].sum()
        touching = inside + est.loc[cut, stat]
        q3 = totals._laplace_sum_quantile(st[stat]["scale"], 3)
        q4 = totals._laplace_sum_quantile(st[stat]["scale"], 4)
        row = out.loc["mixed"]
        assert row[f"{stat}_lo"] == pytest.approx(max(0.0, inside - q3))
        assert row[f"{stat}_hi"] == pytest.approx(max(0.0, touching + q4))
        assert out.loc["part", f"{stat}_lo"] == 0.0  # nothing wholly inside: L = 0, no noise
        assert out.loc["part", f"{stat}_hi"] == pytest.approx(
            max(0.0, est.loc[cut, stat] + st[stat]["moe_95"])
        )


def test_rollup_interval_of_sums_of_values_of_both_signs() -> None:
    """Bounds (−50, 100): the records of a border cell can pull the sum either way, so
    sum_lo/hi = S_inside + (−50 | 100)·C_border ∓ 1.96·√(Var S_inside + b²·Var C_border)."""
    rng = np.random.default_rng(23)
    pts = _points(600, 23)
    # 300 more records at the cut cell's centre: its noisy count is then positive for any
    # noise that can occur (scale ≈ 2), so the part's lower end is negative on every run
    lat, lng = h3.cell_to_latlng(_split_polygons()[2])
    pts = pd.concat([pts, pts.head(300).assign(lat=lat, lng=lng)], ignore_index=True)
    pts = pts.assign(amount=rng.integers(-50, 101, len(pts)))
    rel = dpmap.release(
        pts,
        region=REGION,
        resolution=7,
        epsilon=1.0,
        value="amount",
        bounds=(-50, 100),
        suppress_below=False,
    )
    polys, whole, cut = _split_polygons()
    out = rel.aggregate_to(polys).set_index("name")
    est = _est(rel).set_index("cell")
    s_in, v_in = est.loc[whole, "sum"].sum(), est.loc[whole, "sum_var"].sum()
    c_b, v_b = est.loc[cut, "count"], est.loc[cut, "count_var"]
    row = out.loc["mixed"]
    assert row["sum_lo"] == pytest.approx(s_in - 50 * c_b - Z95 * math.sqrt(v_in + 2500 * v_b))
    assert row["sum_hi"] == pytest.approx(s_in + 100 * c_b + Z95 * math.sqrt(v_in + 1e4 * v_b))
    part = out.loc["part"]  # no whole cell: S_inside = 0 exactly
    assert part["sum_lo"] == pytest.approx(-50 * c_b - Z95 * math.sqrt(2500 * v_b))
    assert part["sum_hi"] == pytest.approx(100 * c_b + Z95 * math.sqrt(1e4 * v_b))
    # the true sum of the part lies in [−50, 100] × (records of the cut cell) for any data:
    # the bounds do not assume the values are ≥ 0 (a negative lower end is kept)
    assert part["sum_lo"] < 0
    # whole cells only (no border cell): their sum ± its exact one-sided margin, not clamped
    only = rel.aggregate_to(
        gpd.GeoDataFrame({"name": ["w"]}, geometry=[_union(whole)], crs=4326)
    ).iloc[0]
    q3 = totals._laplace_sum_quantile(rel.manifest["statistics"]["sum"]["scale"], 3)
    assert only["sum_lo"] == pytest.approx(s_in - q3) and only["sum_hi"] == pytest.approx(s_in + q3)


def test_coverage_of_polygons_partly_or_wholly_outside() -> None:
    rel = dpmap.release(_points(300, 2), region=REGION, resolution=7, epsilon=1.0)
    partly = shapely.box(116.2, 39.1, 116.5, 39.3)
    inside = shapely.box(116.1, 39.05, 116.2, 39.15)
    outside = shapely.box(117.0, 40.0, 117.2, 40.1)
    polys = gpd.GeoDataFrame(
        {"name": ["partly", "inside", "outside"]},
        geometry=[partly, inside, outside],
        crs="EPSG:4326",
    )
    out = rel.aggregate_to(polys).set_index("name")
    released = shapely.union_all(rel.cells.geometry.to_numpy())
    expected = _geo_area(partly.intersection(released)) / _geo_area(partly)
    assert 0.05 < expected < 0.9
    assert out.loc["partly", "coverage"] == pytest.approx(expected, abs=2e-3)
    assert out.loc["inside", "coverage"] == pytest.approx(1.0, abs=1e-6)
    assert out.loc["outside", "coverage"] == 0 and out.loc["outside", "cells"] == 0
    assert np.isnan(out.loc["outside", "count"]) and np.isnan(out.loc["outside", "count_moe"])


def test_rollup_does_not_depend_on_the_polygons_crs() -> None:
    rel = dpmap.release(_points(300, 3), region=REGION, resolution=7, epsilon=1.0)
    boxes = [shapely.box(116.0, 39.0, 116.13, 39.11), shapely.box(116.13, 39.0, 116.3, 39.2)]
    a = rel.aggregate_to(gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=boxes, crs=4326))
    for crs in ("EPSG:32650", "EPSG:3857"):
        gdf = gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=boxes, crs=4326).to_crs(crs)
        b = rel.aggregate_to(gdf)
        np.testing.assert_allclose(b["count"], a["count"], rtol=1e-3)
        np.testing.assert_allclose(b["coverage"], a["coverage"], atol=1e-3)


def test_rollup_input_errors() -> None:
    rel = dpmap.release(_points(100, 4), region=REGION, resolution=7, epsilon=1.0)
    box = shapely.box(116.0, 39.0, 116.1, 39.1)
    with pytest.raises(dpmap.SpecError, match="no CRS"):
        rel.aggregate_to(gpd.GeoDataFrame({"name": ["a"]}, geometry=[box]))
    with pytest.raises(dpmap.SpecError, match="no column 'name'"):
        rel.aggregate_to(gpd.GeoDataFrame({"id": ["a"]}, geometry=[box], crs=4326))
    with pytest.raises(dpmap.SpecError, match="repeats"):
        rel.aggregate_to(gpd.GeoDataFrame({"name": ["a", "a"]}, geometry=[box, box], crs=4326))
    with pytest.raises(dpmap.SpecError, match="not an area"):
        line = shapely.LineString([(116.0, 39.0), (116.1, 39.1)])
        rel.aggregate_to(gpd.GeoDataFrame({"name": ["a"]}, geometry=[line], crs=4326))
    with pytest.raises(dpmap.SpecError, match="GeoDataFrame"):
        rel.aggregate_to(pd.DataFrame({"name": ["a"]}))
    with pytest.raises(dpmap.SpecError, match="resolution 6"):
        rel.aggregate_to(gpd.GeoDataFrame({"name": ["a"]}, geometry=[box], crs=4326), resolution=6)
    by_index = rel.aggregate_to(gpd.GeoSeries([box], crs=4326), by=None)
    assert "polygon" in by_index.columns and len(by_index) == 1


def _interior_parent(rel: dpmap.Release) -> tuple[str, list[str]]:
    fine = set(rel.cells.loc[rel.cells["resolution"] == 7, "cell"])
    for parent in sorted(rel.cells.loc[rel.cells["resolution"] == 6, "cell"]):
        kids = sorted(h3.cell_to_children(parent, 7))
        if set(kids) <= fine:
            return parent, kids
    raise AssertionError("no interior parent")  # pragma: no cover


def test_hierarchical_rollup_uses_one_level_with_the_exact_correlated_variance() -> None:
    rel = dpmap.release(_points(800, 5), region=REGION, resolution=[5, 6, 7], epsilon=1.0)
    est = _est(rel).set_index("cell")
    parent, kids = _interior_parent(rel)
    polys = gpd.GeoDataFrame({"name": ["kids"]}, geometry=[_union(kids)], crs=4326)
    out = rel.aggregate_to(polys).iloc[0]  # finest level by default
    assert out["cells"] == 7
    assert out["count"] == pytest.approx(est.loc[kids, "count"].sum())
    # the children of a parent add up to the parent (consistency), and the variance of
    # their total is the parent's own exact variance: an independent check of wᵀP(Σw)
    assert out["count"] == pytest.approx(est.loc[parent, "count"])
    assert out["count_moe"] == pytest.approx(Z95 * math.sqrt(est.loc[parent, "count_var"]))
    naive = Z95 * math.sqrt(est.loc[kids, "count_var"].sum())  # ignores the correlations
    assert out["count_moe"] < naive
    # the interval: whole cells only, so L = U = the parent, with its exact variance and
    # the one-sided 97.5% point of one Laplace draw (−ln 0.05 / √2 standard deviations)
    sd = math.sqrt(est.loc[parent, "count_var"])
    z = -math.log(0.05) / math.sqrt(2)
    assert out["count_lo"] == pytest.approx(max(0.0, est.loc[parent, "count"] - z * sd))
    assert out["count_hi"] == pytest.approx(max(0.0, est.loc[parent, "count"] + z * sd))
    # a polygon inside one fine cell: L = 0, U = that cell (exact variance of its estimate)
    small = gpd.GeoDataFrame(
        {"name": ["in"]}, geometry=[cell_polygon(kids[0]).buffer(-0.002)], crs=4326
    )
    tiny = rel.aggregate_to(small).iloc[0]
    assert tiny["count_lo"] == 0.0
    u, u_sd = est.loc[kids[0], "count"], math.sqrt(est.loc[kids[0], "count_var"])
    assert tiny["count_hi"] == pytest.approx(max(0.0, u + z * u_sd))
    # a coarser level on request
    coarse = rel.aggregate_to(polys, resolution=6).iloc[0]
    assert coarse["cells"] >= 1 and coarse["coverage"] == pytest.approx(1.0, abs=1e-6)


def test_hierarchical_variance_matches_a_dense_solver() -> None:
    rel = dpmap.release(_points(400, 6), region=REGION, resolution=[5, 6, 7], epsilon=1.0)
    rows = totals.rows_of(rel)
    h = rows.corr.tree
    assert h is not None
    tree = h.tree
    n = len(tree.levels[-1])
    blocks = []
    for j, level in enumerate(tree.levels):  # which leaves descend from each node
        anc = np.arange(n)
        for jj in range(len(tree.levels) - 1, j, -1):
            anc = tree.parent[jj][anc]  # type: ignore[index]
        block = np.zeros((len(level), n))
        block[anc, np.arange(n)] = 1.0
        blocks.append(block)
    H = np.vstack(blocks)
    var = h.level_var["count"]
    w = np.concatenate([np.full(len(lv), 1 / var[j]) for j, lv in enumerate(tree.levels)])
    cov = np.linalg.inv(H.T @ (w[:, None] * H))[np.ix_(h.pos, h.pos)]  # leaf covariance
    rng = np.random.default_rng(0)
    W = rng.uniform(0, 1, (len(rows.cells), 6)) * (rng.uniform(size=(len(rows.cells), 6)) < 0.3)
    exact = np.einsum("im,ij,jm->m", W, cov, W)
    cell = np.repeat(np.arange(len(rows.cells)), 6)
    group = np.tile(np.arange(6), len(rows.cells))
    mine = totals._hier_variance(h, "count", cell, group, W.reshape(-1), 6)
    np.testing.assert_allclose(mine, exact, rtol=1e-9)


# --------------------------------------------------------------------- suppression


@pytest.fixture(scope="module")
def sparse_release() -> dpmap.Release:
    """About 2 points per cell: the default threshold (≈3.4) hides many cells."""
    return dpmap.release(_points(400, 7), region=REGION, resolution=7, epsilon=1.0)


def test_a_file_without_unbiased_values_refuses_hidden_cells(
    sparse_release: dpmap.Release, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rel = sparse_release
    assert rel.cells["suppressed"].mean() > 0.3
    groups = _groups(rel, 3)
    polys = _polys(groups)
    rel.to_file(tmp_path / "plain.geojson")
    rel.to_file(tmp_path / "full.parquet", include_unbiased=True)
    plain = dpmap.read_release(tmp_path / "plain.geojson")
    full = dpmap.read_release(tmp_path / "full.parquet")
    assert plain.estimates is None
    hidden = rel.cells["suppressed"].sum()
    with pytest.raises(dpmap.SpecError, match=rf"hides {hidden} of the {len(rel.cells)} cells"):
        plain.aggregate_to(_polys([list(rel.cells["cell"])]))
    with pytest.raises(dpmap.SpecError, match=r"include_unbiased=True.*suppress_below=False"):
        plain.aggregate_to(polys)
    hidden_cell = rel.cells.loc[rel.cells["suppressed"], "cell"].iloc[0]
    # around() answers the public: plain words; the publisher's fix only in a note
    with pytest.raises(dpmap.SpecError) as info:
        plain.around(*cell_centre(hidden_cell), radius_m=1)
    public = str(info.value)
    assert public.startswith("this map cannot answer for this place: the map cell needed")
    assert "the publisher did not include the numbers needed" in public
    assert "to_file" not in public and "include_unbiased" not in public and "\n" not in public
    note = " ".join(getattr(info.value, "__notes__", []))
    assert "1 of the 1 cells needed are suppressed" in note
    assert "to_file(..., include_unbiased=True)" in note and "suppress_below=False" in note
    plain_path = tmp_path / "plain.geojson"
    code = main(
        [
            "around",
            str(plain_path),
            "--lat",
            str(cell_centre(hidden_cell)[0]),
            "--lng",
            str(cell_centre(hidden_cell)[1]),
            "--radius-m",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "publisher did not include" in err
    assert "include_unbiased" not in err and "Traceback" not in err
    with pytest.raises(dpmap.SpecError, match="release a hides"):
        dpmap.compare(plain, full)
    # with the unbiased columns, a file gives exactly the in-memory answer
    pd.testing.assert_frame_equal(
        pd.DataFrame(full.aggregate_to(polys).drop(columns="geometry")),
        pd.DataFrame(rel.aggregate_to(polys).drop(columns="geometry")),
    )
    # without them, polygons of visible cells only work from the published values
    shown = list(rel.cells.loc[~rel.cells["suppressed"], "cell"][:5])
    a = plain.aggregate_to(_polys([shown]))
    b = rel.aggregate_to(_polys([shown]))
    np.testing.assert_allclose(a["count"], b["count"])
    np.testing.assert_allclose(a["count_moe"], b["count_moe"])


def test_an_unsuppressed_file_needs_no_unbiased_columns(tmp_path: Path) -> None:
    rel = dpmap.release(
        _points(300, 8), region=REGION, resolution=[6, 7], epsilon=1.0, suppress_below=False
    )
    rel.to_file(tmp_path / "r.csv")
    back = dpmap.read_release(tmp_path / "r.csv")
    polys = _polys(_groups(rel, 4))
    a, b = back.aggregate_to(polys), rel.aggregate_to(polys)
    np.testing.assert_allclose(a["count"], b["count"], rtol=1e-9)
    np.testing.assert_allclose(a["count_moe"], b["count_moe"], rtol=1e-6)
    lat, lng = cell_centre(interior_cells(3)[1])
    assert back.around(lat, lng, 1500).count == pytest.approx(rel.around(lat, lng, 1500).count)


# ------------------------------------------------------------ statistical (slow) checks

RUNS = 200
GROUPS = 8


@pytest.fixture(scope="module")
def repeated() -> dict[str, Any]:
    """RUNS releases of the same sparse data (default suppression) rolled up to GROUPS
    polygons, each the union of about 23 whole cells; true totals known exactly."""
    pts = _points(400, 9)
    truth = _truth(pts)
    first = dpmap.release(pts, region=REGION, resolution=7, epsilon=1.0)
    assert set(truth.index) <= set(first.cells["cell"])
    groups = _groups(first, GROUPS)
    polys = _polys(groups)
    true_totals = np.array([truth.reindex(g).fillna(0).sum() for g in groups])
    est, moe, naive, hidden = [], [], [], []
    for _ in range(RUNS):
        rel = dpmap.release(pts, region=REGION, resolution=7, epsilon=1.0)
        out = rel.aggregate_to(polys)
        est.append(out["count"].to_numpy())
        moe.append(out["count_moe"].to_numpy())
        shown = rel.cells.set_index("cell")["count"].astype("Float64").fillna(0)
        naive.append([float(shown.reindex(g).sum()) for g in groups])
        hidden.append(rel.cells["suppressed"].mean())
    return {
        "truth": true_totals,
        "est": np.array(est),
        "moe": np.array(moe),
        "naive": np.array(naive),
        "hidden": float(np.mean(hidden)),
        "sizes": [len(g) for g in groups],
        "scale": float(first.manifest["statistics"]["count"]["scale"]),
    }


@pytest.mark.slow
def test_rollup_margins_cover_95_percent(repeated: dict[str, Any]) -> None:
    """RUNS × GROUPS = 1600 totals of 23–24 whole cells (noise-only coverage), checked
    two-sided against the margin's exact coverage.

    A group's total has the noise of a sum of n i.i.d. discrete Laplace draws (the
    release's count scale); its exact chance p_g of lying within the margin comes by
    convolution. The margin 1.96·√(n·Var) is a normal one over integer noise, so p_g is
    not 0.95 but 0.941–0.953 depending on n (0.944 at n = 23): the former fixed window
    [0.917, 0.983] failed a correct release with chance ≈ 4e-6. The number of hits is a
    sum of independent Bernoulli trials with mean 1600·p̄ (p̄ the groups' mean p_g); by
    Hoeffding (1956) its tails beyond its mean ± 1 are at most those of Binomial(1600, p̄),
    so accepting between that binomial's 1e-9 and 1 − 1e-9 quantiles fails a correct
    release with chance < 2e-9. A margin for one cell, or ¼ of the noise, falls outside."""
    from scipy import stats

    hits = np.abs(repeated["est"] - repeated["truth"]) <= repeated["moe"]
    moe = repeated["moe"]
    assert np.allclose(moe, moe[0])  # the margins are public: the same every run
    q = math.exp(-1 / repeated["scale"])
    support = np.arange(-300, 301)  # the mass beyond ±300 is below q^300 (scale 1: e^-300)
    pmf = (1 - q) / (1 + q) * q ** np.abs(support)
    p_g = []
    for n, m in zip(repeated["sizes"], moe[0], strict=True):
        dist = pmf
        for _ in range(n - 1):
            dist = np.convolve(dist, pmf)
        centre, k = len(dist) // 2, math.floor(m + 1e-9)
        p_g.append(float(dist[centre - k : centre + k + 1].sum()))
    p = float(np.mean(p_g))
    assert 0.93 <= p <= 0.96
    lo, hi = stats.binom.ppf([1e-9, 1 - 1e-9], hits.size, p)
    assert lo <= hits.sum() <= hi, (hits.sum(), lo, hi, p)


@pytest.mark.slow
def test_rollups_of_a_suppressed_release_are_unbiased(repeated: dict[str, Any]) -> None:
    """Mean over RUNS of each polygon's total ≈ its true total. The SE of a mean is
    sd/√RUNS with sd = moe/1.96 (≈ 6.5/√200 ≈ 0.46); 6.5 SE ≈ 3.0. The mean of 200 sums of
    ~23 Laplace draws is normal to high accuracy: P(|Z| > 6.5) = 8e-11 per polygon, < 1e-9
    for the 8 (at 6 SE it was 2e-9 each, 1.6e-8 in all). The displayed values (suppressed
    cells shown as null) are far below the truth."""
    assert repeated["hidden"] > 0.3  # many cells are suppressed
    truth = repeated["truth"]
    sd = repeated["moe"][0] / Z95
    se = sd / math.sqrt(RUNS)
    bias = repeated["est"].mean(axis=0) - truth
    assert (np.abs(bias) <= 6.5 * se).all(), (bias, se)
    naive = repeated["naive"].mean(axis=0)
    assert naive.sum() < 0.8 * truth.sum()  # what the suppression caveat warns about


def _p_beyond(scale: float, moe: float) -> float:
    """P(|X − Y| > moe) for X, Y iid discrete Laplace(scale): P(D = d) =
    c²·q^|d|·(|d| + 1 + 2q²/(1 − q²)), c = (1 − q)/(1 + q), q = e^(−1/scale)."""
    q = math.exp(-1 / scale)
    c = (1 - q) / (1 + q)
    d = np.arange(-math.floor(moe), math.floor(moe) + 1)
    inside = c**2 * q ** np.abs(d) * (np.abs(d) + 1 + 2 * q**2 / (1 - q**2))
    return float(1 - inside.sum())


@pytest.mark.slow
def test_comparing_two_releases_of_the_same_data_flags_about_5_percent() -> None:
    """25 pairs × 187 cells = 4675 independent comparisons per statistic. With no real
    change the rate of 'significant' is P(|X − Y| > 1.96·√(2 var)), computed exactly
    (≈ 0.05–0.06). Binomial SE ≤ √(0.07·0.93/4675) = 0.0037; tolerance 6 SE = 0.022."""
    pts = _points(600, 10)
    kw: dict[str, Any] = dict(
        region=REGION, resolution=7, epsilon=1.0, value="amount", bounds=(0, 100)
    )
    flags: dict[str, list[np.ndarray]] = {"significant": [], "sum_significant": []}
    first = None
    for _ in range(25):
        out = dpmap.compare(dpmap.release(pts, **kw), dpmap.release(pts, **kw))
        for k in flags:
            flags[k].append(out[k].to_numpy())
        first = out if first is None else first
    assert first is not None
    plan = dpmap.explain(**kw).plan.statistics
    for k, stat in (("significant", "count"), ("sum_significant", "sum")):
        moe = Z95 * math.sqrt(2 * plan[stat].variance)
        prefix = "" if stat == "count" else "sum_"
        assert first[f"{prefix}change_moe"].to_numpy() == pytest.approx(moe)
        expected = _p_beyond(plan[stat].scale, moe)
        assert 0.03 <= expected <= 0.07
        rate = np.concatenate(flags[k]).mean()
        se = math.sqrt(0.07 * 0.93 / (25 * 187))
        assert abs(rate - expected) <= 6 * se, (k, rate, expected)


# ----------------------------------------------------------------------------- compare


def test_compare_releases_arithmetic() -> None:
    kw: dict[str, Any] = dict(
        region=REGION,
        resolution=7,
        epsilon=1.0,
        person="pid",
        value="amount",
        bounds=(0, 2000),
        category="creditor",
        categories=list(CATEGORIES),
    )
    a = dpmap.release(debtors(200, 1, 6), **kw)
    b = dpmap.release(debtors(300, 1, 6), **kw)
    out = dpmap.compare(a, b)
    ea, eb = _est(a), _est(b)
    assert list(out.columns) == [
        "cell",
        "resolution",
        "category",
        "count_a",
        "count_b",
        "change",
        "change_moe",
        "significant",
        "sum_a",
        "sum_b",
        "sum_change",
        "sum_change_moe",
        "sum_significant",
        "geometry",
    ]
    assert len(out) == len(ea) and (out["cell"].to_numpy() == ea["cell"].to_numpy()).all()
    np.testing.assert_array_equal(out["category"], ea["category"])
    np.testing.assert_allclose(out["count_a"], ea["count"])
    np.testing.assert_allclose(out["change"], eb["count"] - ea["count"])
    np.testing.assert_allclose(out["change_moe"], Z95 * np.sqrt(ea["count_var"] + eb["count_var"]))
    np.testing.assert_array_equal(out["significant"], np.abs(out["change"]) > out["change_moe"])
    np.testing.assert_allclose(out["sum_change"], eb["sum"] - ea["sum"])
    assert isinstance(out, gpd.GeoDataFrame) and out.crs == "EPSG:4326"


def test_compare_refuses_mismatched_releases() -> None:
    pts = _points(200, 11)
    base = dpmap.release(pts, region=REGION, resolution=7, epsilon=1.0)
    other_region = shapely.box(116.0, 39.0, 116.3, 39.25)
    with pytest.raises(dpmap.SpecError, match="different resolutions"):
        dpmap.compare(base, dpmap.release(pts, region=REGION, resolution=6, epsilon=1.0))
    with pytest.raises(dpmap.SpecError, match="different regions"):
        dpmap.compare(base, dpmap.release(pts, region=other_region, resolution=7, epsilon=1.0))
    pts["kind"] = "bank"
    with pytest.raises(dpmap.SpecError, match="different categories"):
        dpmap.compare(
            base,
            dpmap.release(
                pts,
                region=REGION,
                resolution=7,
                epsilon=1.0,
                category="kind",
                categories=["bank"],
            ),
        )
    with pytest.raises(dpmap.SpecError, match="chosen privately"):
        dpmap.compare(base, dpmap.release(pts, resolution=7, epsilon=1.0, delta=1e-6))
    with pytest.raises(dpmap.SpecError, match="two Releases or two roll-ups"):
        dpmap.compare(base, base.cells)


def test_compare_rollups() -> None:
    pts = _points(300, 12)
    a = dpmap.release(pts, region=REGION, resolution=7, epsilon=1.0)
    b = dpmap.release(pts.iloc[:200], region=REGION, resolution=7, epsilon=1.0)
    polys = _polys(_groups(a, 4))
    ra, rb = a.aggregate_to(polys), b.aggregate_to(polys)
    out = dpmap.compare(ra, rb)
    assert list(out.columns) == [
        "name",
        "count_a",
        "count_b",
        "change",
        "change_moe",
        "significant",
        "geometry",
    ]
    np.testing.assert_allclose(out["change"], rb["count"] - ra["count"])
    np.testing.assert_allclose(out["change_moe"], np.hypot(ra["count_moe"], rb["count_moe"]))
    # reordered rows are matched by name; a plain DataFrame works with by=
    back = dpmap.compare(pd.DataFrame(ra.drop(columns="geometry")), rb.iloc[::-1], by="name")
    np.testing.assert_allclose(back["change"], out["change"])
    with pytest.raises(dpmap.SpecError, match="different polygons"):
        dpmap.compare(ra, rb.iloc[:3])


# ----------------------------------------------------------------------------- around


def _geodesic_distances(lat: float, lng: float, cells: list[str]) -> np.ndarray:
    """Distance (m) from a point to each cell polygon: 0 inside, else the nearest point of
    its boundary sampled every ~1 m (error far below the 0.3% tolerance used)."""
    polys = np.array([cell_polygon(c) for c in cells])
    rings = shapely.segmentize(shapely.get_exterior_ring(polys), 1e-5)
    coords, index = shapely.get_coordinates(rings, return_index=True)
    _, _, dist = GEOD.inv(
        np.full(len(coords), lng), np.full(len(coords), lat), coords[:, 0], coords[:, 1]
    )
    nearest = np.full(len(cells), np.inf)
    np.minimum.at(nearest, index, dist)
    return np.where(shapely.contains_xy(polys, lng, lat), 0.0, nearest)


@pytest.mark.parametrize(
    "cell_index,offset,radius",
    [(0, (0.0, 0.0), 500), (1, (0.004, -0.003), 1200), (2, (0.0, 0.0), 4000), (3, (0, 0), 30)],
)
def test_around_takes_exactly_the_cells_overlapping_the_disk(
    cell_index: int, offset: tuple[float, float], radius: float
) -> None:
    rel = dpmap.release(
        _points(400, 13), region=REGION, resolution=7, epsilon=1.0, value="amount", bounds=(0, 100)
    )
    lat, lng = cell_centre(interior_cells(4)[cell_index])
    lat, lng = lat + offset[0], lng + offset[1]
    res = rel.around(lat, lng, radius, noun="debts")
    cells = rel.cells
    # brute force over every released cell with the same disk polygon
    disk = nearby._disk(lat, lng, radius)
    brute = sorted(cells.loc[shapely.intersects(cells.geometry.to_numpy(), disk), "cell"])
    assert list(res.cells) == brute
    # and independently, by geodesic distance (cells within 0.3% of the radius are ambiguous)
    # cells whose centre is more than radius + 5 km away (a res-7 cell is < 1.6 km across
    # its centre) cannot overlap; the others are measured
    centres = np.array([cell_centre(c) for c in cells["cell"]])
    _, _, to_centre = GEOD.inv(
        np.full(len(centres), lng), np.full(len(centres), lat), centres[:, 1], centres[:, 0]
    )
    near = to_centre < radius + 5000
    dist = np.full(len(cells), np.inf)
    dist[near] = _geodesic_distances(lat, lng, list(cells.loc[near, "cell"]))
    chosen = cells["cell"].isin(res.cells).to_numpy()
    assert chosen[dist < 0.997 * radius].all()
    assert not chosen[dist > 1.003 * radius].any()
    assert res.area_km2 == pytest.approx(sum(h3.cell_area(c, unit="km^2") for c in res.cells))
    est = _est(rel).set_index("cell").loc[list(res.cells)]
    assert res.count == pytest.approx(est["count"].sum())
    assert res.sum == pytest.approx(est["sum"].sum())
    if len(res.cells) == 1:  # one whole cell: the release's exact margin
        assert res.count_moe == pytest.approx(rel.manifest["statistics"]["count"]["moe_95"])
    else:
        assert res.count_moe == pytest.approx(Z95 * math.sqrt(est["count_var"].sum()))
        assert res.sum_moe == pytest.approx(Z95 * math.sqrt(est["sum_var"].sum()))
    text = str(res)
    assert text.startswith("about ") and " debts in " in text
    assert f"whole H3 cell{'s' if len(res.cells) > 1 else ''} (" in text
    distance = f"{radius:g} m" if radius < 1000 else f"{radius / 1000:g} km"
    # one display rule for every number (amounts are ≥ 0 here): negative totals shown as 0
    shown = (
        f"not a count within {distance}; their amount adds up to about "
        f"{nearby._fmt(max(res.sum, 0.0), 0)} ± {nearby._fmt(res.sum_moe, 0)}"
    )
    moved = res.count < 0 or res.sum < 0
    rule = " (noisy totals below 0 are shown as 0)"
    assert text.endswith(shown + rule if moved else shown) or ("reaches beyond" in text)
    assert res.coverage == pytest.approx(1.0, abs=1e-3)


def _around_with(res: nearby.Around, **values: Any) -> nearby.Around:
    return dataclasses.replace(res, **values)


def test_around_applies_one_display_rule_to_every_number() -> None:
    """The issue's sentence: "about 0 ± 24 debtors … amount about 72,119" came from a
    clamped count next to an unclamped amount. Every number shown now follows one rule,
    stated in the sentence; the dict keeps the unbiased values."""
    rel = dpmap.release(
        _points(300, 21),
        region=REGION,
        resolution=7,
        epsilon=1.0,
        value="amount",
        bounds=(0, 100),
        suppress_below=False,
    )
    lat, lng = cell_centre(interior_cells(4)[0])
    base = rel.around(lat, lng, 1200, noun="debtors")
    res = _around_with(base, count=-6.0, sum=-207_318.0, sum_moe=24_000.0)
    text = str(res)
    assert text.startswith(f"about 0 ± {nearby._fmt(res.count_moe, 0)} debtors")
    assert "amount adds up to about 0 ± 24,000" in text and "207,318" not in text
    assert text.endswith("(noisy totals below 0 are shown as 0)")
    d = res.as_dict()
    assert d["count"] == -6.0 and d["sum"] == -207_318.0  # unbiased, for adding up
    assert d["display"] == {"count": 0.0, "sum": 0.0}
    assert d["display_rule"] == "noisy totals below 0 are shown as 0"
    assert d["statement"] == text
    # a positive sum next to a negative count: both shown by the same rule
    mixed = _around_with(base, count=-6.0, sum=72_119.0, sum_moe=24_000.0)
    assert "about 0 ±" in str(mixed) and "about 72,119 ± 24,000" in str(mixed)
    assert str(mixed).endswith("(noisy totals below 0 are shown as 0)")
    # nothing moved: no rule in the sentence
    plain = _around_with(base, count=12.0, sum=900.0)
    assert "shown as 0" not in str(plain) and plain.as_dict()["display"]["count"] == 12.0
    # values of both signs: sums can be negative and are shown as they are; counts clamped
    signed = _around_with(base, count=-2.0, sum=-5_000.0, value_bounds=(-100.0, 100.0))
    assert "about 0 ±" in str(signed) and "adds up to about -5,000" in str(signed)
    assert str(signed).endswith(f"({signed.display_rule})") and "sums can be negative" in str(
        signed
    )
    assert signed.as_dict()["display"] == {"count": 0.0, "sum": -5_000.0}


def test_around_categories_follow_the_same_display_rule() -> None:
    pts = debtors(300, 1, 8)
    rel = dpmap.release(
        pts,
        region=REGION,
        resolution=7,
        epsilon=1.0,
        person="pid",
        value="amount",
        bounds=(0, 2000),
        category="creditor",
        categories=list(CATEGORIES),
        suppress_below=False,
    )
    lat, lng = cell_centre(interior_cells(8)[2])
    base = rel.around(lat, lng, 900)
    assert base.categories is not None
    cats = tuple(
        dataclasses.replace(c, count=-3.0, sum=-40.0) if k == 0 else c
        for k, c in enumerate(base.categories)
    )
    res = _around_with(base, categories=cats)
    first = str(res).split("\n")[1]
    assert first.startswith(f"  {CATEGORIES[0]}: about 0 ±") and "amount about 0 ±" in first
    assert "(noisy totals below 0 are shown as 0)" in str(res).split("\n")[0]
    d = res.as_dict()["categories"][0]
    assert d["count"] == -3.0 and d["display"] == {"count": 0.0, "sum": 0.0}


def test_around_near_the_edge_and_outside() -> None:
    rel = dpmap.release(_points(300, 14), region=REGION, resolution=7, epsilon=1.0)
    res = rel.around(39.19, 116.29, 3000)
    assert 0.2 < res.coverage < 0.9 and "reaches beyond the published area" in str(res)
    with pytest.raises(dpmap.SpecError, match="outside the released area"):
        rel.around(39.5, 116.1, 500)


@pytest.mark.parametrize(
    "lat,lng,radius,match",
    [
        (91.0, 116.1, 500, "lat must be in"),
        (39.1, -181.0, 500, "lng must be in"),
        (39.1, 116.1, 0, "radius_m must be > 0"),
        (39.1, 116.1, -5, "radius_m must be > 0"),
        (39.1, 116.1, float("nan"), "finite"),
        (39.1, 116.1, float("inf"), "finite"),
        (float("nan"), 116.1, 500, "finite"),
        (True, 116.1, 500, "must be a number"),
        ("39.1", 116.1, 500, "must be a number"),
    ],
)
def test_around_validates_its_input(lat: Any, lng: Any, radius: Any, match: str) -> None:
    rel = dpmap.release(_points(50, 15), region=REGION, resolution=7, epsilon=1.0)
    with pytest.raises(dpmap.SpecError, match=match):
        rel.around(lat, lng, radius)


def test_around_result_is_frozen_and_hierarchical_and_categorised() -> None:
    pts = debtors(300, 1, 8)
    rel = dpmap.release(
        pts,
        region=REGION,
        resolution=[6, 7],
        epsilon=1.0,
        person="pid",
        category="creditor",
        categories=list(CATEGORIES),
    )
    lat, lng = cell_centre(interior_cells(8)[2])
    res = rel.around(lat, lng, 2500)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.count = 0  # type: ignore[misc]
    est = _est(rel)
    fine = est[(est["resolution"] == 7) & est["cell"].isin(res.cells)]
    assert {h3.get_resolution(c) for c in res.cells} == {7}
    assert res.count == pytest.approx(fine["count"].sum())
    assert res.categories is not None and [c.category for c in res.categories] == [
        *CATEGORIES,
        "other",
    ]
    for c in res.categories:
        assert c.count == pytest.approx(fine.loc[fine["category"] == c.category, "count"].sum())
    assert sum(c.count for c in res.categories) == pytest.approx(res.count)
    assert "bank: about" in str(res)
    coarse = rel.around(lat, lng, 2500, resolution=6)
    assert {h3.get_resolution(c) for c in coarse.cells} == {6}
    json.dumps(res.as_dict())


def test_around_from_the_command_line(
    sparse_release: dpmap.Release, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.geojson"
    sparse_release.to_file(path, include_unbiased=True)
    lat, lng = cell_centre(interior_cells(2)[0])
    code = main(["around", str(path), "--lat", str(lat), "--lng", str(lng), "--radius-m", "500"])
    out = capsys.readouterr()
    assert code == 0 and out.out.startswith("about ") and "not a count within 500 m" in out.out
    code = main(["around", str(path), "--lat", str(lat), "--lng", str(lng), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["radius_m"] == 500 and data["cells"]
    assert data["count"] == pytest.approx(sparse_release.around(lat, lng).count)
    code = main(["around", str(path), "--lat", "-39.1", "--lng", str(lng)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("dpmap: error:") and err.count("\n") == 1
    assert "outside the released area" in err


def test_adaptive_release_uses_every_leaf() -> None:
    """Adaptive releases (PrivTree leaves at mixed resolutions) are added up leaf by leaf."""
    pytest.importorskip("dpmap.designs.privtree")
    rng = np.random.default_rng(16)
    pts = pd.DataFrame(
        {
            "lat": np.r_[rng.normal(39.1, 0.005, 3000), rng.uniform(39.01, 39.19, 300)],
            "lng": np.r_[rng.normal(116.15, 0.005, 3000), rng.uniform(116.01, 116.29, 300)],
        }
    )
    rel = dpmap.release(pts, region=REGION, resolution=8, epsilon=1.0, adaptive=True)
    assert rel.cells["resolution"].nunique() > 1
    est = _est(rel)
    big = gpd.GeoDataFrame({"name": ["all"]}, geometry=[shapely.box(115, 38, 117, 40)], crs=4326)
    out = rel.aggregate_to(big).iloc[0]
    assert out["cells"] == len(est)
    assert out["count"] == pytest.approx(est["count"].sum())
    assert out["count_moe"] == pytest.approx(Z95 * math.sqrt(est["count_var"].sum()))
    res = rel.around(39.1, 116.15, 300)
    disk = nearby._disk(39.1, 116.15, 300)
    cells = rel.cells
    brute = sorted(cells.loc[shapely.intersects(cells.geometry.to_numpy(), disk), "cell"])
    assert list(res.cells) == brute
    assert res.count == pytest.approx(est.set_index("cell").loc[brute, "count"].sum())
    with pytest.raises(dpmap.SpecError, match="adaptive"):
        dpmap.compare(rel, rel)
    with pytest.raises(dpmap.SpecError, match="adaptive"):
        rel.aggregate_to(big, resolution=8)


def _dense_leaf_covariance(rel: dpmap.Release) -> tuple[list[str], np.ndarray]:
    """Covariance of an adaptive release's least-squares leaf estimates, computed directly:
    (Hᵀ Σ⁻¹ H)⁻¹ with H mapping the leaves to every measured node (the leaves, and their
    H3 parents at each internal resolution whose noise the manifest lists)."""
    from dpmap._privacy.noise import noise_variance
    from dpmap.spec import Mechanism

    m = rel.manifest
    cells = rel.cells
    leaves = cells["cell"].tolist()
    res = cells["resolution"].to_numpy()
    rows, var = [], []
    stats = m["statistics"]
    for r in range(m["adaptive"]["root_resolution"], m["adaptive"]["finest_resolution"]):
        key = f"count_internal@{r}"
        if key not in stats:
            continue
        parents: dict[str, list[int]] = {}
        for j, (c, rr) in enumerate(zip(leaves, res, strict=True)):
            if rr > r:
                parents.setdefault(h3.cell_to_parent(c, r), []).append(j)
        for kids in parents.values():
            row = np.zeros(len(leaves))
            row[kids] = 1.0
            rows.append(row)
            var.append(noise_variance(Mechanism.LAPLACE, stats[key]["scale"]))
    H = np.vstack([np.eye(len(leaves)), *rows]) if rows else np.eye(len(leaves))
    v = np.array([noise_variance(Mechanism.LAPLACE, stats["count"]["scale"])] * len(leaves) + var)
    return leaves, np.linalg.inv(H.T @ (H / v[:, None]))


def test_adaptive_release_with_internal_nodes_has_exact_margins() -> None:
    """With noisy internal nodes the leaves are correlated least-squares estimates: their
    stated variances and the margins of totals equal a direct dense computation."""
    rng = np.random.default_rng(17)
    pts = pd.DataFrame(
        {
            "lat": np.r_[rng.normal(39.1, 0.005, 3000), rng.uniform(39.01, 39.19, 300)],
            "lng": np.r_[rng.normal(116.15, 0.005, 3000), rng.uniform(116.01, 116.29, 300)],
        }
    )
    rel = dpmap.release(
        pts, region=REGION, resolution=8, epsilon=1.0, adaptive=True, internal_share=0.4
    )
    leaves, cov = _dense_leaf_covariance(rel)
    est = _est(rel)
    assert est["cell"].tolist() == leaves
    np.testing.assert_allclose(est["count_var"].to_numpy(), np.diag(cov), rtol=1e-9)
    big = gpd.GeoDataFrame({"name": ["all"]}, geometry=[shapely.box(115, 38, 117, 40)], crs=4326)
    out = rel.aggregate_to(big).iloc[0]
    assert out["count"] == pytest.approx(est["count"].sum())
    assert out["count_moe"] == pytest.approx(Z95 * math.sqrt(cov.sum()), rel=1e-9)
    res = rel.around(39.1, 116.15, 300)
    w = np.isin(leaves, list(res.cells)).astype(float)
    assert w.sum() == len(res.cells) >= 1
    assert res.count_moe == pytest.approx(Z95 * math.sqrt(w @ cov @ w), rel=1e-9)


# ------------------------------------------------------------------------------ planning


@pytest.mark.parametrize(
    "kw",
    [
        dict(target_moe=5.0),
        dict(target_moe=5.0, person="pid", max_cells=3),
        dict(target_moe=800.0, statistic="sum", value="amount", bounds=(0, 100)),
        dict(target_moe=40.0, area_km2=150.0),
    ],
)
def test_plan_epsilon_is_the_smallest_epsilon_meeting_the_target(kw: dict[str, Any]) -> None:
    kw = dict(kw)
    target = kw.pop("target_moe")
    statistic = kw.pop("statistic", "count")
    area = kw.pop("area_km2", None)
    plan = dpmap.plan_epsilon(
        target_moe=target, resolution=7, statistic=statistic, area_km2=area, **kw
    )

    def margin(eps: float) -> float:  # through dpmap.explain, independently of the solver
        st = dpmap.explain(region=REGION, resolution=7, epsilon=eps, **kw).plan.statistics
        if area is None:
            return st[statistic].moe95
        return Z95 * math.sqrt(
            area / h3.average_hexagon_area(7, unit="km^2") * st[statistic].variance
        )

    assert plan.moe <= target and margin(plan.epsilon) <= target
    assert margin(plan.epsilon * (1 - 1e-4)) > target
    assert plan.moe == pytest.approx(margin(plan.epsilon))
    assert "95% margin" in str(plan) and json.dumps(plan.as_dict())


def test_plan_epsilon_gaussian_and_hierarchical() -> None:
    # rtol=1e-2: the answer is within 1% of the smallest ε, so ε·0.98 is below it
    plan = dpmap.plan_epsilon(
        target_moe=20, resolution=7, mechanism="gaussian", delta=1e-6, rtol=1e-2
    )
    kw: dict[str, Any] = dict(region=REGION, resolution=7, mechanism="gaussian", delta=1e-6)
    assert dpmap.explain(epsilon=plan.epsilon, **kw).plan.statistics["count"].moe95 <= 20
    assert dpmap.explain(epsilon=plan.epsilon * 0.98, **kw).plan.statistics["count"].moe95 > 20
    hier = dpmap.plan_epsilon(target_moe=6, resolution=[5, 6, 7], rtol=1e-3)
    st = dpmap.explain(region=REGION, resolution=[5, 6, 7], epsilon=hier.epsilon).plan.statistics
    assert st["count@7"].moe95 <= 6 and hier.resolution == (5, 6, 7)


def test_plan_resolution_picks_the_finest_that_meets_the_target() -> None:
    plan = dpmap.plan_epsilon(target_moe=50, resolution=None, epsilon=1.0, area_km2=200)
    same = dpmap.plan_resolution(target_moe=50, epsilon=1.0, area_km2=200)
    assert plan == same
    var = dpmap.explain(region=REGION, resolution=7, epsilon=1.0).plan.statistics["count"].variance

    def margin(r: int) -> float:
        return Z95 * math.sqrt(max(1.0, 200 / h3.average_hexagon_area(r, unit="km^2")) * var)

    r = plan.resolution
    assert isinstance(r, int) and margin(r) <= 50 and plan.moe == pytest.approx(margin(r))
    assert r == 9 or margin(r + 1) > 50
    with pytest.raises(dpmap.SpecError, match="raise epsilon"):
        dpmap.plan_resolution(target_moe=0.5, epsilon=0.01, area_km2=1e6)


def _disc(lat: float, lng: float, radius_km: float) -> Any:
    az = np.linspace(0.0, 360.0, 256, endpoint=False)
    lons, lats, _ = GEOD.fwd(
        np.full(256, lng), np.full(256, lat), az, np.full(256, radius_km * 1000.0)
    )
    return shapely.Polygon(np.column_stack([lons, lats]))


@pytest.mark.parametrize("radius_km,resolution", [(2.0, 7), (5.0, 7), (5.0, 8), (12.0, 6)])
def test_plan_border_share_matches_real_h3_overlays(radius_km: float, resolution: int) -> None:
    """The planner's border share (records in cells cut by an area's border per record in
    the area, from public geometry only) against real H3 cells around discs near the test
    region, measured as (cells cut by the disc's border) x their mean area / the disc's
    area (geodesic areas, independent of dpmap's projection). The planner uses the average cell (larger than cells at 39° N),
    so it may overstate the share; it must not understate it by more than 25%, nor overstate
    it by more than 2×."""
    rng = np.random.default_rng(24)
    measured = []
    for _ in range(4):
        disc = _disc(39.1 + rng.uniform(-0.05, 0.05), 116.15 + rng.uniform(-0.05, 0.05), radius_km)
        cells = list(h3.geo_to_cells(disc.buffer(0.3).__geo_interface__, resolution))
        polys = np.array([cell_polygon(c) for c in cells])
        shared = np.array([_geo_area(disc.intersection(p)) / _geo_area(p) for p in polys])
        cut = (shared > 1e-6) & (shared < 1 - 1e-6)
        mean_cell = np.mean([_geo_area(p) for p in polys])
        measured.append(cut.sum() * mean_cell / _geo_area(disc))
    area = math.pi * radius_km**2
    plan = dpmap.plan_epsilon(target_moe=1e6, resolution=resolution, area_km2=area)
    assert plan.border_share is not None and plan.perimeter_km == pytest.approx(
        2 * math.pi * radius_km
    )
    assert 0.75 * np.mean(measured) <= plan.border_share <= 2.0 * np.mean(measured)
    assert "cells cut by the area's border hold about" in str(plan)


def test_plan_resolution_weighs_noise_against_the_border_error() -> None:
    """Finer cells: more noise; coarser cells: more records in cells cut by the border.
    With a public guess of the area's total the plan targets the expected half-width of
    [count_lo, count_hi] and picks a coarser resolution than the noise alone would."""
    noise_only = dpmap.plan_resolution(target_moe=45, epsilon=1.0, area_km2=200)
    assert noise_only.expected_total is None and noise_only.resolution == 8
    plan = dpmap.plan_resolution(target_moe=45, epsilon=1.0, area_km2=200, expected_total=50)
    assert plan.resolution == 7 and plan.expected_total == 50 and plan.moe <= 45
    noise = dpmap.explain(region=REGION, resolution=7, epsilon=1.0).plan.statistics["count"]

    def halfwidth(r: int) -> float:
        return targets._interval_halfwidth(noise, 200.0, 2 * math.sqrt(math.pi * 200), r, 50)[0]

    assert plan.moe == pytest.approx(halfwidth(7)) and halfwidth(8) > 45
    shares = [targets._border_geometry(200.0, 50.13, r)[2] for r in range(4, 10)]
    assert all(a > b for a, b in itertools.pairwise(shares))  # coarser: larger
    text = str(plan)
    assert "expected 95% interval (noise and cells cut by the border)" in text
    assert "expected in cells cut by the border" in text and json.dumps(plan.as_dict())
    # a longer border (a non-compact district) cuts more cells
    long = dpmap.plan_epsilon(
        target_moe=1e4, resolution=7, area_km2=200, expected_total=50, perimeter_km=150
    )
    assert plan.border_share is not None and long.border_share is not None
    assert long.border_share > 2 * plan.border_share
    # when no resolution can do it, the error says which is closest and why
    with pytest.raises(dpmap.SpecError, match=r"narrowest expected 95% interval .* no ε helps"):
        dpmap.plan_resolution(target_moe=30, epsilon=1.0, area_km2=200, expected_total=5000)
    # plan_epsilon: the border part does not shrink with ε
    with pytest.raises(dpmap.SpecError, match="whatever ε"):
        dpmap.plan_epsilon(target_moe=60, resolution=6, area_km2=200, expected_total=1000)
    eps = dpmap.plan_epsilon(target_moe=60, resolution=8, area_km2=200, expected_total=100)
    assert eps.moe <= 60 and eps.noise_moe is not None and eps.noise_moe < eps.moe


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(target_moe=0), "target_moe must be > 0"),
        (dict(target_moe=5, epsilon=1.0), "do not pass epsilon"),
        (dict(target_moe=5, statistic="mean"), "statistic must be"),
        (dict(target_moe=5, statistic="sum"), "bounds"),
        (dict(target_moe=5, resolution=None), "needs epsilon= and area_km2="),
        (dict(target_moe=5, resolution=12), "resolution"),
        (dict(target_moe=5, area_km2=-1), "area_km2 must be > 0"),
        (dict(target_moe=5, no_such_option=1), "no_such_option"),
        (dict(target_moe=5, expected_total=100), "pass area_km2= too"),
        (dict(target_moe=5, area_km2=100, perimeter_km=1), "shorter than any shape"),
        (dict(target_moe=5, area_km2=100, expected_total=-1), "expected_total must be"),
        (
            dict(
                target_moe=500,
                area_km2=100,
                expected_total=10,
                statistic="sum",
                value="v",
                bounds=(-5, 5),
            ),
            "values ≥ 0",
        ),
    ],
)
def test_plan_epsilon_errors(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(dpmap.SpecError, match=match):
        dpmap.plan_epsilon(**kw)
