"""Maps of several periods: small multiples (dpmap.plot_periods) and the interactive map with a
period slider (dpmap.explore_periods). The browser check of the slider is in
test_html_browser.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Polygon

from common import import_or_skip

gpd = import_or_skip("geopandas")
import_or_skip("matplotlib")
import_or_skip("folium")
import_or_skip("js_lib_leaflet")

import matplotlib  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

import dpmap  # noqa: E402
from dpmap.errors import SpecError  # noqa: E402
from dpmap.maps.layers import COLOR_PERCENTILE, ramp_colours  # noqa: E402
from dpmap.maps.static import GID_SUPPRESSED, GID_VALUES  # noqa: E402
from dpmap.maps.trends import MAX_PANELS  # noqa: E402
from dpmap.releases import Release  # noqa: E402

CENTER = h3.latlng_to_cell(52.52, 13.405, 7)
CELLS = sorted(h3.grid_disk(CENTER, 3))  # 37 cells
MANIFEST: dict[str, Any] = {
    "privacy": {
        "epsilon": 1.0,
        "delta": 0.0,
        "measure": "max_divergence",
        "statement": "Pure ε-differential privacy with ε = 1 per month.",
    },
    "created": "2026-11-30T09:15:00+00:00",
    "design": "flat",
    "resolution": 7,
    "statistics": {"count": {}},
    "title": "Synthetic debtors",
}
LABELS = ["2026-01", "2026-02", "2026-03"]


def _release(
    k: int, *, cells: list[str] = CELLS, period: str | None = None, **manifest: Any
) -> Release:
    """Period ``k``: cell i has count (k + 1)·(10 + i) (so cell i in period 1 has the count of
    cell 2i + 10 in period 0), every fifth cell suppressed, margin 6.42 + k."""
    rows = []
    for i, cell in enumerate(cells):
        suppressed = i % 5 == 4
        rows.append(
            {
                "cell": cell,
                "resolution": manifest.get("resolution", 7),
                "count": pd.NA if suppressed else (k + 1) * (10 + i),
                "count_moe": np.nan if suppressed else 6.42 + k,
                "suppressed": suppressed,
                "geometry": Polygon([(g, a) for a, g in h3.cell_to_boundary(cell)]),
            }
        )
    table = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    table["count"] = table["count"].astype("Int64")
    extra = {"period": period} if period is not None else {}
    return Release(table, {**MANIFEST, **manifest, **extra})


def _releases(n: int = 3, *, labelled: bool = True) -> list[Release]:
    return [_release(k, period=LABELS[k] if labelled else None) for k in range(n)]


def _panels(fig: Any) -> list[Any]:
    """The map panels (axes holding the hexagons), in drawing order."""
    return [ax for ax in fig.axes if any(c.get_gid() == GID_VALUES for c in ax.collections)]


def _collection(ax: Any, gid: str) -> Any:
    return next(c for c in ax.collections if c.get_gid() == gid)


def _shared_top(rels: list[Release]) -> float:
    """The 99th percentile of every period's published (unsuppressed) counts, pooled."""
    values = np.concatenate(
        [r.cells["count"].dropna().to_numpy(dtype=float).clip(0, None) for r in rels]
    )
    return float(np.percentile(values, COLOR_PERCENTILE))


# ------------------------------------------------------------------- small multiples


def test_small_multiples_share_one_colour_scale(tmp_path: Path) -> None:
    """Every panel's hexagons are coloured on ONE scale, 0 to the 99th percentile of all
    periods' values: a value has the same colour in every period, and the one colour bar
    shows that scale. Broken on purpose (each panel on its own scale, as plot_release
    would draw it): period 1's colours equal period 0's (its values are doubled, and so is
    its own 99th percentile), and this test fails."""
    rels = _releases()
    fig = dpmap.plot_periods(rels, path=tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
    panels = _panels(fig)
    assert len(panels) == 3
    top = _shared_top(rels)
    norm = Normalize(0.0, top)
    cmap = matplotlib.colormaps["YlOrRd"]
    for ax, rel in zip(panels, rels, strict=True):
        shown = rel.cells.loc[~rel.cells["suppressed"], "count"].to_numpy(dtype=float)
        faces = _collection(ax, GID_VALUES).get_facecolors()
        assert faces == pytest.approx(cmap(norm(shown)), abs=1e-12)
    # cell 0 in period 1 (count 20) has the colour of cell 10 in period 0 (count 20)
    faces0 = _collection(panels[0], GID_VALUES).get_facecolors()
    faces1 = _collection(panels[1], GID_VALUES).get_facecolors()
    shown0 = np.flatnonzero(~rels[0].cells["suppressed"].to_numpy())
    assert faces1[0] == pytest.approx(faces0[list(shown0).index(10)])
    colour_bars = [ax for ax in fig.axes if ax not in panels]
    assert len(colour_bars) == 1
    ylim = colour_bars[0].get_ylim()
    assert ylim == pytest.approx((0.0, top))


def test_panels_are_titled_with_the_periods_and_hatch_suppressed_cells() -> None:
    rels = _releases()
    titles = [ax.get_title() for ax in _panels(dpmap.plot_periods(rels))]
    assert titles == LABELS  # from the manifests' "period"
    given = pd.period_range("2025-10", periods=3, freq="M")
    fig = dpmap.plot_periods(rels, periods=given)
    assert [ax.get_title() for ax in _panels(fig)] == ["2025-10", "2025-11", "2025-12"]
    unlabelled = _releases(labelled=False)
    fig = dpmap.plot_periods(unlabelled)
    assert [ax.get_title() for ax in _panels(fig)] == ["0", "1", "2"]  # as dpmap.series
    for ax, rel in zip(_panels(fig), rels, strict=True):
        hatched = _collection(ax, GID_SUPPRESSED)
        assert hatched.get_hatch() == "///"
        # one compound path: each suppressed hexagon is a closed subpath (MOVETO ... CLOSEPOLY)
        assert (hatched.get_paths()[0].codes == MplPath.MOVETO).sum() == int(
            rel.cells["suppressed"].sum()
        )
    caption = " ".join(t.get_text() for t in fig.texts)
    assert "ε = 1, δ = 0 per period" in caption
    assert "percentile of all periods" in caption


def test_caption_names_each_periods_epsilon_when_they_differ() -> None:
    rels = [_release(0, period="2026-01")]
    rels.append(_release(1, period="2026-02", privacy={**MANIFEST["privacy"], "epsilon": 0.5}))
    caption = " ".join(t.get_text() for t in dpmap.plot_periods(rels).texts)
    assert "ε = 1 (2026-01), 0.5 (2026-02)" in caption


# ------------------------------------------------------------------------ the slider


def _config(text: str) -> dict[str, Any]:
    start = text.index("var cfg = ") + len("var cfg = ")
    config, _ = json.JSONDecoder().raw_decode(text, start)
    return config  # type: ignore[no-any-return]


def test_slider_values_are_each_releases_published_values(tmp_path: Path) -> None:
    """The page embeds the hexagons once and, per period, exactly the values, margins,
    suppressed flags and colours (on the shared scale) that period's release publishes."""
    rels = _releases()
    out = tmp_path / "slider.html"
    dpmap.explore_periods(rels, path=out)
    text = out.read_text(encoding="utf-8")
    cfg = _config(text)
    features = cfg["data"]["features"]
    assert len(features) == len(CELLS)  # geometry once, not once per period
    per = cfg["periods"]
    assert per["labels"] == LABELS
    top = _shared_top(rels)
    for k, rel in enumerate(rels):
        table = rel.cells.set_index("cell")
        for f in features:
            i, cell = f["properties"]["i"], f["properties"]["cell"]
            row = table.loc[cell]
            if row["suppressed"]:
                assert per["columns"]["count"][k][i] is None
                assert per["columns"]["count_moe"][k][i] is None
                assert per["suppressed"][k][i] == 1
            else:
                assert per["columns"]["count"][k][i] == int(row["count"])
                assert per["columns"]["count_moe"][k][i] == pytest.approx(row["count_moe"])
                assert per["suppressed"][k][i] == 0
                assert per["fill"][k][i] == ramp_colours(np.array([row["count"]]), top)[0]
    slider = cfg["titleHtml"]
    assert '<input type="range" class="dpmap-period-slider"' in slider
    assert 'max="2"' in slider and ">2026-01</output>" in slider
    assert "the 99th percentile of all periods" in text
    manifest = text.split('id="dpmap-manifest">', 1)[1].split("</script>", 1)[0]
    assert json.loads(manifest)["periods"] == LABELS


def test_slider_file_grows_by_values_only(tmp_path: Path) -> None:
    """Twelve periods cost little more than one: ~the numbers, a flag and a colour per
    hexagon and period (< 60 bytes), not the geometry again."""
    dpmap.explore_periods([_release(0)], path=tmp_path / "one.html")
    twelve = [_release(k) for k in range(12)]
    dpmap.explore_periods(twelve, path=tmp_path / "twelve.html")
    extra = (tmp_path / "twelve.html").stat().st_size - (tmp_path / "one.html").stat().st_size
    assert extra / (11 * len(CELLS)) < 60


def test_a_cell_missing_from_a_period_is_shown_as_no_value(tmp_path: Path) -> None:
    rels = [_release(0, period="2026-01"), _release(1, cells=CELLS[1:], period="2026-02")]
    dpmap.explore_periods(rels, path=tmp_path / "m.html")
    cfg = _config((tmp_path / "m.html").read_text(encoding="utf-8"))
    first = next(f for f in cfg["data"]["features"] if f["properties"]["cell"] == CELLS[0])
    i = first["properties"]["i"]
    per = cfg["periods"]
    assert per["columns"]["count"][0][i] == 10 and per["fill"][0][i] is not None
    assert per["columns"]["count"][1][i] is None and per["fill"][1][i] is None
    assert per["suppressed"][1][i] == 0
    assert "no published value" in cfg["legendHtml"]


# --------------------------------------------------------------------------- mistakes


@pytest.mark.parametrize("draw", ["plot", "explore"])
def test_sequences_that_cannot_be_drawn_are_refused_and_nothing_is_written(
    tmp_path: Path, draw: str
) -> None:
    func, out = (
        (dpmap.plot_periods, tmp_path / "p.png")
        if draw == "plot"
        else (dpmap.explore_periods, tmp_path / "p.html")
    )
    rels = _releases()
    cases: list[tuple[Any, dict[str, Any], str]] = [
        ([], {}, "is empty"),
        (rels[0], {}, "got one release"),
        ([rels[0], _release(1, design="zones")], {}, "release 1 has design"),
        ([rels[0], _release(1, resolution=8)], {}, "release 1 has resolution"),
        ([rels[0], "feb.geojson"], {}, "not a dpmap Release"),
        (rels, {"periods": ["a", "b"]}, "2 periods for 3"),
        (rels, {"statistic": "sum"}, r"period '2026-01' \(release 0\): column 'sum'"),
    ]
    if draw == "plot":
        many = [_release(0) for _ in range(MAX_PANELS + 1)]
        cases.append((many, {}, f"at most {MAX_PANELS} periods, got {MAX_PANELS + 1}"))
    for releases, kwargs, message in cases:
        with pytest.raises(SpecError, match=message):
            func(releases, path=out, **kwargs)
    wrong = tmp_path / ("p.pdf" if draw == "plot" else "p.png")
    with pytest.raises(SpecError, match="ending in"):
        func(rels, path=wrong)
    assert list(tmp_path.iterdir()) == []


def test_the_slider_map_has_no_panel_limit(tmp_path: Path) -> None:
    many = [_release(k % 3) for k in range(MAX_PANELS + 1)]
    dpmap.explore_periods(many, path=tmp_path / "all.html")
    cfg = _config((tmp_path / "all.html").read_text(encoding="utf-8"))
    assert len(cfg["periods"]["labels"]) == MAX_PANELS + 1


def test_zone_releases_are_drawn_per_zone(tmp_path: Path) -> None:
    """Releases of public zones: one feature per zone (by its name), each period's values."""
    import shapely

    from common import REGION

    x0, y0, x1, y1 = REGION.bounds
    xm = (x0 + x1) / 2
    zones = gpd.GeoDataFrame(
        {"name": ["west", "east"]},
        geometry=[shapely.box(x0, y0, xm, y1), shapely.box(xm, y0, x1, y1)],
        crs="EPSG:4326",
    )
    rng = np.random.default_rng(4)
    rels = []
    for m in range(3):
        n = 200 + 100 * m
        pts = pd.DataFrame(
            {
                "pid": [f"p{i}" for i in range(n)],
                "lng": rng.uniform(x0, x1, n),
                "lat": rng.uniform(y0, y1, n),
            }
        )
        rels.append(dpmap.release(pts, zones=zones, by="name", epsilon=1.0, person="pid"))
    fig = dpmap.plot_periods(rels, periods=LABELS)
    assert [ax.get_title() for ax in _panels(fig)] == LABELS
    dpmap.explore_periods(rels, periods=LABELS, path=tmp_path / "zones.html")
    cfg = _config((tmp_path / "zones.html").read_text(encoding="utf-8"))
    assert cfg["placeLabel"] == "zone"
    features = {f["properties"]["cell"]: f["properties"]["i"] for f in cfg["data"]["features"]}
    assert set(features) == {"west", "east"}
    for k, rel in enumerate(rels):
        for name, count in rel.cells[["name", "count"]].itertuples(index=False):
            assert cfg["periods"]["columns"]["count"][k][features[name]] == count
