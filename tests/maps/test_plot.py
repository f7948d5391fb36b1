"""Tests of dpmap.maps.static: static maps of a published release."""

from __future__ import annotations

import sys

import h3
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Polygon

pytest.importorskip("matplotlib")
gpd = pytest.importorskip("geopandas")

import matplotlib  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import imread  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

from dpmap.errors import MissingDependencyError, SpecError  # noqa: E402
from dpmap.maps.static import plot_release  # noqa: E402

CENTER = h3.latlng_to_cell(52.52, 13.405, 7)


def _hexagon(cell: str) -> Polygon:
    # h3 gives (lat, lng) pairs; shapely wants (x=lng, y=lat)
    return Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(cell)])


def _release(categories: list[str] | None = None) -> gpd.GeoDataFrame:
    """A small made-up release: 37 cells, some suppressed, some 0, one negative."""
    rng = np.random.default_rng(7)
    cells = sorted(h3.grid_disk(CENTER, 3))
    rows = []
    for category in categories or [None]:
        for i, cell in enumerate(cells):
            distance = h3.grid_distance(CENTER, cell)
            count = round(40 * np.exp(-distance) + rng.laplace(0, 2))
            suppressed = i % 5 == 4  # every fifth cell
            if i in (0, 1):
                count = 0
            if i == 2:
                count = -3
            row = {
                "cell": cell,
                "resolution": 7,
                "count": pd.NA if suppressed else count,
                "count_moe": np.nan if suppressed else 6.0,
                "mean": np.nan if suppressed else 1000.0 + count,
                "mean_moe": np.nan if suppressed else 250.0,
                "suppressed": suppressed,
                "geometry": _hexagon(cell),
            }
            if category is not None:
                row["category"] = category
            rows.append(row)
    table = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    table["count"] = table["count"].astype("Int64")
    return table


MANIFEST = {
    "privacy": {"epsilon": 1.0, "delta": 0.0, "measure": "max_divergence"},
    "created": "2026-11-30T09:15:00+00:00",
    "resolution": 7,
    "title": "Synthetic debtors",
}


def _by_gid(ax, gid: str):
    found = [c for c in ax.collections if c.get_gid() == gid]
    assert len(found) <= 1
    return found[0] if found else None


def _hexagons(collection) -> int:
    """How many hexagons a collection draws: one per path of a PolyCollection, one per
    closed subpath of the suppressed cells' single compound path."""
    return sum(
        1 if p.codes is None else int((p.codes == MplPath.MOVETO).sum())
        for p in collection.get_paths()
    )


def _rings(collection) -> list[np.ndarray]:
    """The (lng, lat) vertices of every hexagon (subpath) a collection draws."""
    rings = []
    for path in collection.get_paths():
        starts = np.flatnonzero(path.codes == MplPath.MOVETO)
        for a, b in zip(starts, [*starts[1:], len(path.codes)], strict=True):
            keep = path.codes[a:b] != MplPath.CLOSEPOLY
            rings.append(np.unique(path.vertices[a:b][keep], axis=0))
    return rings


def _all_axes(fig: Figure) -> list:
    """Every axes of the figure, including inset colour bars."""
    return [a for ax in fig.axes for a in (ax, *ax.child_axes)]


def _caption(fig: Figure) -> str:
    texts = [t.get_text() for t in fig.texts if t.get_gid() == "dpmap-caption"]
    texts += [t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid() == "dpmap-caption"]
    assert len(texts) == 1
    return texts[0]


@pytest.fixture
def release() -> gpd.GeoDataFrame:
    return _release()


def test_writes_a_valid_png_atomically(release, tmp_path):
    out = tmp_path / "map.png"
    fig = plot_release(release, MANIFEST, out, dpi=50)
    assert isinstance(fig, Figure)
    image = imread(out)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 100 and image.shape[1] > 200  # two panels side by side
    assert [p.name for p in tmp_path.iterdir()] == ["map.png"]  # no temp file left over


def test_returns_figure_without_path_and_two_panels(release):
    fig = plot_release(release, MANIFEST)
    maps = [ax for ax in fig.axes if _by_gid(ax, "dpmap-values") is not None]
    assert len(maps) == 2
    main, uncertainty = maps
    assert main.get_position().x0 < uncertainty.get_position().x0  # uncertainty on the right
    labels = [cax.get_ylabel() for cax in _all_axes(fig) if cax not in maps]
    assert any("count" in label for label in labels)
    assert any("relative 95% margin of error" in label for label in labels)
    tick_texts = [t.get_text() for cax in _all_axes(fig) for t in cax.get_yticklabels()]
    assert "≥ 2" in tick_texts


def test_suppressed_cells_are_hatched_grey_with_legend(release):
    n_suppressed = int(release["suppressed"].sum())
    assert n_suppressed > 0
    fig = plot_release(release, MANIFEST)
    maps = [ax for ax in fig.axes if _by_gid(ax, "dpmap-values") is not None]
    for ax in maps:  # both the value and the uncertainty panel
        hatched = _by_gid(ax, "dpmap-suppressed")
        assert hatched is not None
        assert hatched.get_hatch() == "///"
        assert _hexagons(hatched) == n_suppressed
        assert len(_by_gid(ax, "dpmap-values").get_paths()) == len(release) - n_suppressed
    legend_texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "suppressed (noisy count below threshold)" in legend_texts
    handle = fig.legends[0].legend_handles[0]
    assert handle.get_hatch() == "///"


def test_zero_and_negative_cells_get_low_end_of_scale_not_grey(release):
    fig = plot_release(release, MANIFEST, show_uncertainty=False)
    ax = fig.axes[0]
    values = _by_gid(ax, "dpmap-values")
    grey = tuple(_by_gid(ax, "dpmap-suppressed").get_facecolor()[0])
    shown = release[~release["suppressed"]].reset_index(drop=True)
    faces = values.get_facecolor()
    assert len(faces) == len(shown)
    low_end = matplotlib.colormaps["YlOrRd"](0.0)
    zero_rows = np.flatnonzero(shown["count"].to_numpy() == 0)
    negative_rows = np.flatnonzero(shown["count"].to_numpy() < 0)
    assert len(zero_rows) >= 2 and len(negative_rows) >= 1
    for row in [*zero_rows, *negative_rows]:
        assert np.allclose(faces[row], low_end)
        assert not np.allclose(faces[row], grey)
        assert not np.allclose(faces[row], to_rgba("lightgrey"))
    top = int(np.argmax(shown["count"].to_numpy()))
    assert not np.allclose(faces[top], low_end)


def test_caption_states_the_privacy_guarantee(release):
    caption = _caption(plot_release(release, MANIFEST))
    assert "ε = 1," in caption
    assert "δ = 0" in caption
    assert "pure ε-DP" in caption
    assert "H3 resolution 7" in caption
    assert "2026-11-30" in caption
    assert "95% margin of error" in caption


def test_caption_formats_epsilon_and_delta():
    manifest = {
        **MANIFEST,
        "privacy": {"epsilon": 0.123456, "delta": 1e-6, "measure": "smoothed_max_divergence"},
    }
    caption = _caption(plot_release(_release(), manifest, show_uncertainty=False))
    assert "ε = 0.123," in caption
    assert "δ = 10⁻⁶" in caption
    manifest["privacy"] = {"epsilon": 2.0, "delta": 2.5e-7, "measure": "smoothed_max_divergence"}
    caption = _caption(plot_release(_release(), manifest, show_uncertainty=False))
    assert "ε = 2," in caption
    assert "δ = 2.5 × 10⁻⁷" in caption


def test_title_from_argument_or_manifest(release):
    assert plot_release(release, MANIFEST)._suptitle.get_text() == "Synthetic debtors"
    fig = plot_release(release, MANIFEST, title="Mine", show_uncertainty=False)
    assert fig._suptitle.get_text() == "Mine"


def test_category_must_be_chosen():
    table = _release(categories=["loans", "rent"])
    with pytest.raises(SpecError, match=r"category=.*'loans', 'rent'"):
        plot_release(table, MANIFEST)
    with pytest.raises(SpecError, match=r"'cars'.*'loans', 'rent'"):
        plot_release(table, MANIFEST, category="cars")
    fig = plot_release(table, MANIFEST, category="rent", show_uncertainty=False)
    n_rent = int((table["category"] == "rent").sum())
    ax = fig.axes[0]
    drawn = sum(_hexagons(c) for c in ax.collections if c.get_gid() != "dpmap-boundaries")
    assert drawn == n_rent


def test_category_without_category_column_raises(release):
    with pytest.raises(SpecError, match="no 'category' column"):
        plot_release(release, MANIFEST, category="rent")


def test_non_png_path_raises_and_writes_nothing(release, tmp_path):
    for name in ("map.pdf", "map.svg", "map"):
        with pytest.raises(SpecError, match=r"\.png"):
            plot_release(release, MANIFEST, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_boundaries_without_crs_raise(release):
    boundaries = gpd.GeoSeries([release.union_all().convex_hull])
    with pytest.raises(SpecError, match="set_crs"):
        plot_release(release, MANIFEST, boundaries=boundaries)


def test_boundaries_are_reprojected_and_drawn_on_top(release):
    hull = gpd.GeoSeries([release.union_all().convex_hull], crs="EPSG:4326")
    boundaries = gpd.GeoDataFrame({"name": ["district"]}, geometry=hull.to_crs(3857))
    fig = plot_release(release, MANIFEST, boundaries=boundaries, show_uncertainty=False)
    ax = fig.axes[0]
    lines = _by_gid(ax, "dpmap-boundaries")
    assert lines is not None
    assert lines.get_zorder() > _by_gid(ax, "dpmap-values").get_zorder()
    xy = np.concatenate(lines.get_segments())
    lng, lat = h3.cell_to_latlng(CENTER)[::-1]
    assert np.all(np.abs(xy[:, 0] - lng) < 0.2)  # back in degrees, not metres
    assert np.all(np.abs(xy[:, 1] - lat) < 0.2)


def test_draws_only_the_main_panel_into_a_given_axes(release, tmp_path):
    fig = Figure(figsize=(8, 4))
    ax, other = fig.subplots(1, 2)
    returned = plot_release(release, MANIFEST, tmp_path / "sub.png", ax=ax, dpi=40)
    assert returned is fig
    assert _by_gid(ax, "dpmap-suppressed") is not None
    assert _by_gid(other, "dpmap-values") is None
    assert sum(_by_gid(a, "dpmap-values") is not None for a in fig.axes) == 1
    assert "ε = 1" in _caption(fig)
    assert imread(tmp_path / "sub.png").ndim == 3


def test_other_statistic_column(release):
    fig = plot_release(release, MANIFEST, column="mean")
    labels = [a.get_ylabel() for a in _all_axes(fig)]
    assert any("mean" in label for label in labels)


def test_bad_column_and_missing_moe_raise(release):
    with pytest.raises(SpecError, match=r"'median'.*'count'"):
        plot_release(release, MANIFEST, column="median")
    with pytest.raises(SpecError, match="show_uncertainty=False"):
        plot_release(release.drop(columns="count_moe"), MANIFEST)
    plot_release(release.drop(columns="count_moe"), MANIFEST, show_uncertainty=False)


def test_hierarchical_levels_draw_one_level(release):
    """A hierarchical table's levels overlap: the finest is drawn, or the one asked for."""
    other = release.copy()
    other["resolution"] = 6
    table = pd.concat([other, release])
    n_shown = int((~release["suppressed"]).sum())
    fig = plot_release(table, MANIFEST, show_uncertainty=False)
    assert len(_by_gid(fig.axes[0], "dpmap-values").get_paths()) == n_shown
    fig = plot_release(table, MANIFEST, show_uncertainty=False, resolution=6)
    assert len(_by_gid(fig.axes[0], "dpmap-values").get_paths()) == n_shown
    with pytest.raises(SpecError, match="resolution=5"):
        plot_release(table, MANIFEST, resolution=5)


def test_adaptive_leaves_draw_together(release):
    other = release.copy()
    other["resolution"] = 6
    table = pd.concat([other, release])
    manifest = {**MANIFEST, "adaptive": {"root_resolution": 6}}
    fig = plot_release(table, manifest, show_uncertainty=False)
    assert len(_by_gid(fig.axes[0], "dpmap-values").get_paths()) == 2 * int(
        (~release["suppressed"]).sum()
    )
    assert "(adaptive)" in fig.texts[-1].get_text() or any(
        "(adaptive)" in t.get_text() for t in fig.texts
    )


def test_table_without_geometry_uses_h3_cells(release):
    plain = pd.DataFrame(release.drop(columns="geometry"))
    fig = plot_release(plain, MANIFEST, show_uncertainty=False)
    ax = fig.axes[0]
    assert len(_by_gid(ax, "dpmap-values").get_paths()) == int((~release["suppressed"]).sum())


def test_missing_matplotlib_names_the_extra(release, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"dpmap\[plot\]"):
        plot_release(release, MANIFEST)


def test_unsuppressed_missing_value_is_drawn_as_no_value(release):
    table = release.copy()
    table["mean"] = table["mean"].astype(float)
    table.loc[table.index[3], "mean"] = np.nan  # not suppressed, but no value published
    fig = plot_release(table, MANIFEST, column="mean", show_uncertainty=False)
    missing = _by_gid(fig.axes[0], "dpmap-missing")
    assert missing is not None and len(missing.get_paths()) == 1
    legend_texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "no published value" in legend_texts


def test_release_methods_map_the_total_of_a_categorised_release(tmp_path):
    """``rel.plot()``, ``rel.to_html()`` without a category map the total of the categories
    (as ``dpmap plot`` does) instead of refusing; ``category=`` still picks one."""
    import dpmap
    from common import REGION, debtors

    rel = dpmap.release(
        debtors(60, 2, 4), region=REGION, resolution=7, epsilon=1.0, person="pid",
        category="creditor", categories=["bank", "utility"],
    )  # fmt: skip
    cells = rel.cells.drop_duplicates("cell")
    fig = rel.plot(show_uncertainty=False)
    assert "total of all categories" in fig._suptitle.get_text()
    ax = fig.axes[0]
    drawn = sum(_hexagons(c) for c in ax.collections if c.get_gid() != "dpmap-boundaries")
    assert drawn == len(cells)  # one hexagon per cell, not per (cell, category)
    one = rel.plot(category="bank", show_uncertainty=False)
    assert "total" not in one._suptitle.get_text()
    out = rel.to_html(tmp_path / "total.html")
    assert "total of all categories" in out.read_text("utf-8")


def test_a_quantile_column_maps_its_interval_as_the_uncertainty(release):
    """q50 has no _moe column: the uncertainty panel shows half its 95% interval's width."""
    table = release.copy()
    table["q50"] = 3000.0
    table["q50_lo"], table["q50_hi"] = 2000.0, 6000.0  # half-width 2000: relative 2/3
    fig = plot_release(table, MANIFEST, column="q50")
    from matplotlib import colormaps

    from dpmap.maps.static import MOE_CMAP, REL_MOE_CAP

    expected = colormaps[MOE_CMAP]((2000 / 3000) / REL_MOE_CAP)
    panel = next(ax for ax in fig.axes if ax.get_title().startswith("uncertainty"))
    faces = np.concatenate([c.get_facecolors() for c in panel.collections if len(c.get_paths())])
    assert np.isclose(faces, expected, atol=1e-6).all(axis=1).any()


def test_drawing_hatches_exactly_the_suppressed_cells_in_both_panels_with_caption(release):
    """The fast drawing (issue 18) keeps what the map shows: in the value AND the
    uncertainty panel the hatched hexagons are exactly the suppressed cells, the rendered
    pixels inside each of them show the grey face crossed by darker hatch lines while no
    published cell has hatch lines, and the caption is there."""
    suppressed = set(release.loc[release["suppressed"], "cell"])
    shown = release.loc[~release["suppressed"], "cell"].tolist()
    fig = plot_release(release, MANIFEST)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].astype(int)
    face = np.array(to_rgba("#e3e3e3")[:3]) * 255
    hatch = np.array(to_rgba("#8c8c8c")[:3]) * 255
    maps = [ax for ax in fig.axes if _by_gid(ax, "dpmap-values") is not None]
    assert [ax.get_title() for ax in maps] == [
        "noisy count per hexagon",
        "uncertainty: relative 95% margin of error",
    ]

    def near(cell: str, ax, colour: np.ndarray) -> int:
        """Pixels within 12 px of the cell's centre that have `colour` (±12 per channel)."""
        lat, lng = h3.cell_to_latlng(cell)
        x, y = ax.transData.transform((lng, lat))
        row, col = round(pixels.shape[0] - y), round(x)
        window = pixels[row - 12 : row + 13, col - 12 : col + 13]
        return int((np.abs(window - colour).max(axis=2) <= 12).sum())

    for ax in maps:
        hatched = _by_gid(ax, "dpmap-suppressed")
        assert hatched.get_hatch() == "///"
        centres = {h3.latlng_to_cell(*ring.mean(axis=0)[::-1], 7) for ring in _rings(hatched)}
        assert centres == suppressed and _hexagons(hatched) == len(suppressed)
        for cell in suppressed:
            assert near(cell, ax, face) > 50 and near(cell, ax, hatch) > 10, cell
        assert all(near(cell, ax, hatch) == 0 for cell in shown)
    assert "Differentially private release: ε = 1" in _caption(fig)


def test_cell_rings_match_the_geometries_row_by_row():
    """``cell_rings`` (vectorised, used to draw) gives every row's outer rings as
    ``cell_polygons`` (one geometry at a time) does: a pentagon's 10-vertex ring among
    hexagons, a MultiPolygon's two rings, none for a missing or empty geometry, reprojected
    from a metric CRS; ``select`` pads short rings by repeating their last vertex only."""
    from shapely.geometry import MultiPolygon

    from dpmap.maps.layers import cell_polygons, cell_rings

    pentagon = sorted(h3.get_pentagons(7))[0]
    cells = [CENTER, pentagon, *sorted(h3.grid_ring(CENTER, 1))[:2]]
    geoms = [_hexagon(c) for c in cells]
    geoms[2] = MultiPolygon([geoms[2], geoms[3]])
    geoms[3] = None
    table = gpd.GeoDataFrame({"cell": cells}, geometry=geoms, crs="EPSG:4326")
    table = pd.concat([table, gpd.GeoDataFrame({"cell": [CENTER]}, geometry=[Polygon()], crs=4326)])
    for frame in (table, table.to_crs(3857)):
        rings = cell_rings(frame)
        expected = cell_polygons(frame)
        assert rings.rows.tolist() == [0, 1, 2, 2]
        for i, row in enumerate(rings.rows):
            ring = rings.xy[rings.starts[i] : rings.starts[i + 1]]
            nth = int((rings.rows[:i] == row).sum())
            np.testing.assert_allclose(ring, expected[row][nth][:-1], atol=1e-9)
    rings = cell_rings(table)
    assert [int(n) for n in np.diff(rings.starts)] == [6, 10, 6, 6]
    picked = rings.select(np.array([True, True, False, False, False]))
    assert picked.shape == (2, 10, 2)
    np.testing.assert_array_equal(picked[0, 6:], np.repeat(picked[:1, 5], 4, axis=0))
    np.testing.assert_array_equal(picked[1], rings.xy[6:16])
    plain = cell_rings(pd.DataFrame({"cell": [CENTER, pentagon]}))  # no geometry: from h3
    np.testing.assert_allclose(plain.xy, rings.xy[:16], atol=1e-9)
