"""Tests of dpmap.maps.interactive: the interactive (Leaflet) map of a published release.

These read the written file as text: it must be self-contained (Leaflet inlined, nothing
loaded from the network), carry one feature per row, style suppressed cells apart from
zero, state the privacy guarantee, and escape everything the user typed. The real
browser test is tests/maps/test_html_browser.py.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import h3
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Polygon

gpd = pytest.importorskip("geopandas")
folium = pytest.importorskip("folium")
pytest.importorskip("js_lib_leaflet")

import dpmap  # noqa: E402
from dpmap.cli import main  # noqa: E402
from dpmap.errors import DataFileError, MissingDependencyError, SpecError  # noqa: E402
from dpmap.maps import interactive as dhtml  # noqa: E402
from dpmap.maps.interactive import explore_release, ramp_colours, write_html  # noqa: E402

CENTER = h3.latlng_to_cell(52.52, 13.405, 7)
EVIL = "<script>alert(1)</script>"
MANIFEST: dict[str, Any] = {
    "privacy": {
        "epsilon": 1.0,
        "delta": 0.0,
        "measure": "max_divergence",
        "statement": "This map satisfies pure ε-differential privacy with ε = 1 for one row "
        "(<all> rows & more).",
    },
    "created": "2026-11-30T09:15:00+00:00",
    "resolution": 7,
    "title": "Synthetic debtors",
}


def _release(categories: list[str] | None = None, *, with_mean: bool = False) -> Any:
    """37 cells: some suppressed, two zeros, one negative; optionally a mean column."""
    rng = np.random.default_rng(7)
    rows = []
    for category in categories or [None]:
        for i, cell in enumerate(sorted(h3.grid_disk(CENTER, 3))):
            distance = h3.grid_distance(CENTER, cell)
            count = round(40 * np.exp(-distance) + rng.laplace(0, 2))
            suppressed = i % 5 == 4
            if i in (0, 1):
                count = 0
            if i == 2:
                count = -3
            row: dict[str, Any] = {"cell": cell, "resolution": 7}
            if category is not None:
                row["category"] = category
            row.update(
                {
                    "count": pd.NA if suppressed else count,
                    "count_moe": np.nan if suppressed else 6.42,
                }
            )
            if with_mean:
                row["mean"] = np.nan if suppressed or count < 1 else 1000.0 + count
                row["mean_moe"] = np.nan if suppressed or count < 1 else 250.0
            row["suppressed"] = suppressed
            row["geometry"] = Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(cell)])
            rows.append(row)
    table = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    table["count"] = table["count"].astype("Int64")
    return table


@pytest.fixture
def release() -> Any:
    return _release()


def _config(text: str) -> dict[str, Any]:
    """The JSON configuration (data, texts) embedded in the page's script."""
    start = text.index("var cfg = ") + len("var cfg = ")
    config, _ = json.JSONDecoder().raw_decode(text, start)
    return config  # type: ignore[no-any-return]


def _features(text: str) -> list[dict[str, Any]]:
    return _config(text)["data"]["features"]  # type: ignore[no-any-return]


# ------------------------------------------------------------------- self-contained


def test_writes_one_self_contained_file_atomically(release, tmp_path):
    out = write_html(release, MANIFEST, tmp_path / "map.html")
    assert out == tmp_path / "map.html"
    assert [p.name for p in tmp_path.iterdir()] == ["map.html"]  # no temp file left over
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<title>Synthetic debtors</title>" in text


def test_nothing_is_loaded_from_the_network(release, tmp_path):
    text = write_html(release, MANIFEST, tmp_path / "map.html").read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I)  # every script is inline
    assert not re.search(r"<link\b", text, re.I)  # no stylesheet links
    assert not re.search(r"@import", text, re.I)
    assert not re.search(r"<(img|iframe|source|video|audio|embed|object)\b", text, re.I)
    for target in re.findall(r"url\(\s*['\"]?([^'\")]*)", text):
        assert target.startswith(("data:", "#")), target  # Leaflet's images are inlined
    assert not re.search(r"(src|srcset|href)\s*=\s*['\"]?\s*//", text, re.I)
    # the only absolute URLs: Leaflet's attribution link, the SVG namespace in Leaflet's
    # code and comments of its licence/CSS; none of them is fetched by the page
    for url in re.findall(r"https?://[^\s\"'<>)]+", text):
        assert url.startswith(
            (
                "https://leafletjs.com",
                "http://www.w3.org/2000/svg",
                "https://bugs.chromium.org",
                "https://bugzilla.mozilla.org",
            )
        ), url
    for cdn in ("cdn.jsdelivr", "cdnjs", "code.jquery", "bootstrapcdn", "unpkg"):
        assert cdn not in text


def test_leaflet_is_inlined_with_its_licence(release, tmp_path):
    text = write_html(release, MANIFEST, tmp_path / "map.html").read_text(encoding="utf-8")
    assert re.search(r"\* Leaflet 1\.\d+\.\d+, a JS library for interactive maps", text)
    assert "(c) 2010-" in text and "Vladimir Agafonkin" in text  # the @preserve header
    assert "Redistribution and use in source and binary forms" in text  # full BSD-2 text
    assert ".leaflet-pane" in text  # the CSS
    assert "sourceMappingURL" not in text
    assert "window.L=" in text


# ----------------------------------------------------------------------- the data


def test_one_feature_per_row_with_rounded_coordinates(release, tmp_path):
    text = write_html(release, MANIFEST, tmp_path / "map.html").read_text(encoding="utf-8")
    features = _features(text)
    assert len(features) == len(release)
    assert [f["properties"]["cell"] for f in features] == release["cell"].tolist()
    for feature in features:
        ring = feature["geometry"]["coordinates"][0]
        assert feature["geometry"]["type"] == "Polygon"
        assert ring[0] == ring[-1] and len(ring) == 7
        for x, y in ring:
            assert round(x, 5) == x and round(y, 5) == y
    config = _config(text)
    (south, west), (north, east) = config["bounds"]
    assert 52.3 < south < 52.52 < north < 52.7 and 13.1 < west < 13.405 < east < 13.7


def test_suppressed_cells_have_no_numbers_and_are_hatched(release, tmp_path):
    text = write_html(release, MANIFEST, tmp_path / "map.html").read_text(encoding="utf-8")
    features = _features(text)
    flagged = [f["properties"] for f in features if f["properties"]["suppressed"]]
    assert len(flagged) == int(release["suppressed"].sum()) > 0
    for props in flagged:
        assert props["count"] is None and props["count_moe"] is None
        assert "fill" not in props  # not coloured on the scale, so never mistaken for 0
    config = _config(text)
    assert config["suppressedText"] == "suppressed (noisy count below threshold)"
    assert config["suppressed"]["face"] == "#e3e3e3"
    assert "createPattern" in text  # the /// hatching of the canvas renderer
    assert "dpmap-swatch-suppressed" in config["legendHtml"]
    assert "suppressed (noisy count below threshold)" in config["legendHtml"]


def test_zero_and_negative_get_the_low_end_of_the_scale(release, tmp_path):
    text = write_html(release, MANIFEST, tmp_path / "map.html").read_text(encoding="utf-8")
    by_cell = {f["properties"]["cell"]: f["properties"] for f in _features(text)}
    shown = release[~release["suppressed"]]
    for cell, count in zip(shown["cell"], shown["count"], strict=True):
        props = by_cell[cell]
        assert props["count"] == count and props["count_moe"] == 6.42
        if count <= 0:
            assert props["fill"] == "#ffffcc"  # the lowest YlOrRd colour, not grey
    top = shown["cell"].iloc[int(np.argmax(shown["count"].to_numpy()))]
    assert by_cell[top]["fill"] == "#800026"  # the 99th percentile and above: darkest
    legend = _config(text)["legendHtml"]
    assert "below 0: coloured as 0" in legend


def test_ramp_matches_matplotlib_ylorrd():
    matplotlib = pytest.importorskip("matplotlib")
    cmap = matplotlib.colormaps["YlOrRd"]
    values = np.linspace(0.0, 1.0, 41)
    for value, colour in zip(values, ramp_colours(values, 1.0), strict=True):
        assert colour is not None
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255.0
        assert np.allclose(rgb, cmap(value)[:3], atol=3 / 255), (value, colour)
    assert ramp_colours(np.array([-5.0, np.nan, 7.0]), 2.0) == ["#ffffcc", None, "#800026"]


def test_tooltip_data_for_every_statistic(tmp_path):
    table = _release(with_mean=True)
    out = write_html(table, MANIFEST, tmp_path / "map.html", column="mean")
    config = _config(out.read_text(encoding="utf-8"))
    assert config["column"] == "mean"
    assert config["stats"] == ["mean", "count"]  # the mapped statistic first
    props = next(f["properties"] for f in config["data"]["features"] if f["properties"].get("mean"))
    assert {"mean", "mean_moe", "count", "count_moe"} <= set(props)
    # zero counts have no mean: "no published value", white, not suppressed
    missing = [
        f["properties"]
        for f in config["data"]["features"]
        if not f["properties"]["suppressed"] and f["properties"]["mean"] is None
    ]
    assert missing and all("fill" not in p for p in missing)
    assert "no published value" in config["legendHtml"]
    assert config["missingText"] == "no published value"


# ---------------------------------------------------------------------- the texts


def test_caption_states_the_privacy_guarantee(release, tmp_path):
    config = _config(write_html(release, MANIFEST, tmp_path / "m.html").read_text("utf-8"))
    caption = config["captionHtml"]
    assert "ε = 1, δ = 0 · H3 resolution 7 · 2026-11-30" in caption
    assert "pure ε-DP" in caption
    assert "95% margin of error" in caption
    # the manifest's statement, escaped
    assert "(&lt;all&gt; rows &amp; more)" in caption
    assert "Synthetic debtors" in config["titleHtml"]
    assert "noisy count per hexagon" in config["titleHtml"]


def test_caption_formats_small_delta(release, tmp_path):
    manifest = {
        **MANIFEST,
        "privacy": {"epsilon": 0.123456, "delta": 1e-6, "measure": "smoothed_max_divergence"},
    }
    config = _config(write_html(release, manifest, tmp_path / "m.html").read_text("utf-8"))
    assert "ε = 0.123, δ = 10⁻⁶ · H3 resolution 7 · 2026-11-30" in config["captionHtml"]


def test_user_text_is_escaped(tmp_path):
    table = _release(categories=[EVIL, "{{ 7 * 7 }}"])
    manifest = {**MANIFEST, "title": f"Debts {EVIL} & {{{{ 6 * 7 }}}}"}
    out = write_html(table, manifest, tmp_path / "map.html", category=EVIL)
    text = out.read_text(encoding="utf-8")
    assert "<script>alert" not in text.lower()
    assert "</script><script>" not in text
    assert "<title>Debts &lt;script&gt;alert(1)&lt;/script&gt; &amp; {{ 6 * 7 }} — " in text
    config = _config(text)  # decodes \u003c etc. back: the HTML snippets are escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in config["titleHtml"]
    assert "{{ 6 * 7 }}" in config["titleHtml"]  # not evaluated as a template
    assert config["categoryHtml"] == " · category &lt;script&gt;alert(1)&lt;/script&gt;"
    # as many <script> elements as a harmless category gives
    plain = write_html(_release(categories=["a", "b"]), MANIFEST, tmp_path / "p.html", category="a")
    assert text.lower().count("<script") == plain.read_text("utf-8").lower().count("<script")

    template = write_html(table, MANIFEST, tmp_path / "t.html", category="{{ 7 * 7 }}")
    assert "{{ 7 * 7 }}" in _config(template.read_text("utf-8"))["categoryHtml"]


def test_manifest_is_embedded_as_json(release, tmp_path):
    text = write_html(release, MANIFEST, tmp_path / "map.html").read_text(encoding="utf-8")
    match = re.search(
        r'<script type="application/json" id="dpmap-manifest">(.*?)</script>', text, re.S
    )
    assert match is not None
    assert json.loads(match.group(1)) == MANIFEST
    odd = {**MANIFEST, "privacy": {**MANIFEST["privacy"], "rho": float("nan")}}
    text = write_html(release, odd, tmp_path / "odd.html").read_text(encoding="utf-8")
    match = re.search(r'id="dpmap-manifest">(.*?)</script>', text, re.S)
    assert match is not None
    assert json.loads(match.group(1))["privacy"]["rho"] is None  # strict JSON: no NaN


# ------------------------------------------------------------------ folium / notebook


def test_explore_returns_a_folium_map_without_cdn_links(release):
    fmap = explore_release(release, MANIFEST)
    assert isinstance(fmap, folium.Map)
    page = fmap.get_root().render()
    assert not re.search(r"<(script|link)\b[^>]*\b(src|href)=", page)
    assert "var cfg = " in page
    notebook = fmap._repr_html_()  # what Jupyter shows: an iframe with the whole page
    assert notebook.startswith("<div") and "srcdoc=" in notebook
    assert "cdn.jsdelivr" not in notebook and "Leaflet 1." in notebook


def test_explore_online_links_folium_assets_after_inlined_leaflet(release):
    """offline=False: folium's markers and popups work (jQuery etc. from CDNs)."""
    fmap = explore_release(release, MANIFEST, offline=False)
    folium.Marker([52.52, 13.405], popup="Berlin", icon=folium.Icon(icon="info-sign")).add_to(fmap)
    page = fmap.get_root().render()
    assert "cdn.jsdelivr.net/npm/leaflet@" not in page  # Leaflet itself stays inlined ...
    leaflet = page.index("Leaflet 1.")
    assert leaflet < page.index("code.jquery.com")  # ... and loads before the plugins
    assert leaflet < page.index("leaflet.awesome-markers.js")
    assert page.index("/* Leaflet CSS") < page.index("leaflet.awesome-markers.css")


def test_explore_accepts_users_layers_and_renders_twice(release):
    fmap = explore_release(release, MANIFEST, title="Mine")
    folium.LayerControl().add_to(fmap)
    first = fmap.get_root().render()
    second = fmap.get_root().render()
    assert first.count("var cfg = ") == second.count("var cfg = ") == 1
    assert second.count("Leaflet 1.") == 1
    assert "<title>Mine</title>" in second


def test_tiles_are_opt_in(release, tmp_path):
    default = write_html(release, MANIFEST, tmp_path / "a.html").read_text("utf-8")
    assert "tile.openstreetmap" not in default and "L.tileLayer" not in default
    tiled = write_html(release, MANIFEST, tmp_path / "b.html", tiles="OpenStreetMap")
    text = tiled.read_text("utf-8")
    assert "tile.openstreetmap.org" in text
    assert _config(text)["fillOpacity"] < 1  # the base map shows through


def test_boundaries_are_drawn(release, tmp_path):
    outline = gpd.GeoSeries([release.union_all().buffer(0.01)], crs="EPSG:4326").to_crs(3857)
    config = _config(
        write_html(release, MANIFEST, tmp_path / "m.html", boundaries=outline).read_text("utf-8")
    )
    assert config["boundaries"]["type"] == "MultiLineString"
    x, y = config["boundaries"]["coordinates"][0][0]
    assert 13.0 < x < 14.0 and 52.0 < y < 53.0  # reprojected to degrees
    with pytest.raises(SpecError, match="no CRS"):
        write_html(release, MANIFEST, tmp_path / "n.html", boundaries=gpd.GeoSeries([outline[0]]))


def _two_levels() -> Any:
    """Resolution 7 cells and their resolution 6 parents, as in a hierarchical release."""
    fine = _release()
    parents = sorted({h3.cell_to_parent(c, 6) for c in fine["cell"]})
    coarse = gpd.GeoDataFrame(
        {
            "cell": parents,
            "resolution": 6,
            "count": pd.array(np.arange(len(parents)) * 10, dtype="Int64"),
            "count_moe": 9.1,
            "suppressed": False,
        },
        geometry=[Polygon([(g, t) for t, g in h3.cell_to_boundary(c)]) for c in parents],
        crs="EPSG:4326",
    )
    return pd.concat([coarse, fine], ignore_index=True), len(parents), len(fine)


def test_hierarchical_release_maps_one_level(tmp_path):
    table, n_coarse, n_fine = _two_levels()
    manifest = {**MANIFEST, "resolution": [6, 7]}
    config = _config(write_html(table, manifest, tmp_path / "a.html").read_text("utf-8"))
    assert len(config["data"]["features"]) == n_fine  # default: the finest level
    assert "H3 resolution 7 ·" in config["captionHtml"]
    out = write_html(table, manifest, tmp_path / "b.html", resolution=6)
    config = _config(out.read_text("utf-8"))
    assert len(config["data"]["features"]) == n_coarse
    assert "H3 resolution 6 ·" in config["captionHtml"]
    with pytest.raises(SpecError, match=r"resolution=5 is not in this release"):
        write_html(table, manifest, tmp_path / "c.html", resolution=5)


def test_adaptive_release_maps_all_leaves(tmp_path):
    table, n_coarse, n_fine = _two_levels()
    manifest = {**MANIFEST, "adaptive": {"root_resolution": 6}}
    config = _config(write_html(table, manifest, tmp_path / "a.html").read_text("utf-8"))
    assert len(config["data"]["features"]) == n_coarse + n_fine
    assert "H3 resolution 6–7 (adaptive)" in config["captionHtml"]


# -------------------------------------------------- one shared layer, two renderings


def test_static_and_interactive_draw_the_same_layer(tmp_path):
    """Both maps take rows, colours, hidden cells, captions and title from maps.layers:
    the same hexagons are coloured (same colours), hatched or left white, and both
    captions state the same facts."""
    pytest.importorskip("matplotlib")
    from dpmap.maps.layers import caption_facts, map_layer
    from dpmap.maps.static import plot_release

    fine = _release(["loans", "rent"], with_mean=True)
    # a second level over the same cells with other values: only the finest is drawn
    coarse = fine.assign(resolution=6, mean=fine["mean"].to_numpy()[::-1])
    table = pd.concat([coarse, fine], ignore_index=True)
    manifest = {
        **MANIFEST,
        "privacy": {"epsilon": 0.5, "delta": 2.5e-7, "measure": "smoothed_max_divergence"},
        "suppression": {"rule": "threshold", "threshold": 3.25},
    }
    args = {"column": "mean", "category": "rent"}
    fig = plot_release(table, manifest, show_uncertainty=False, **args)
    text = write_html(table, manifest, tmp_path / "m.html", **args).read_text("utf-8")
    config = _config(text)
    ax = fig.axes[0]
    drawn = {c.get_gid(): c for c in ax.collections}
    features = [f["properties"] for f in config["data"]["features"]]
    layer = map_layer(table, manifest, resolution=None, title=None, **args)
    assert len(features) == len(layer.table) == int((fine["category"] == "rent").sum())
    assert [p["cell"] for p in features] == layer.table["cell"].tolist()

    fills = [p["fill"] for p in features if "fill" in p]
    faces = drawn["dpmap-values"].get_facecolor()
    assert len(fills) == len(faces) == int(layer.shown.sum()) > 0
    for face, fill in zip(faces, fills, strict=True):
        rgb = np.array([int(fill[i : i + 2], 16) for i in (1, 3, 5)]) / 255.0
        assert np.allclose(rgb, face[:3], atol=3 / 255), (fill, face)
    n_hidden = sum(p["suppressed"] for p in features)
    (hatched,) = drawn["dpmap-suppressed"].get_paths()  # one compound path, a subpath per cell
    n_hatched = int((hatched.codes == hatched.MOVETO).sum())
    assert n_hatched == n_hidden == int(layer.suppressed.sum())
    n_white = sum(not p["suppressed"] and "fill" not in p for p in features)
    assert len(drawn["dpmap-missing"].get_paths()) == n_white == int(layer.missing.sum()) > 0

    facts = caption_facts(manifest, layer)
    static_caption = next(t.get_text() for t in fig.texts if t.get_gid() == "dpmap-caption")
    html_caption = config["captionHtml"]
    for fact in (
        f"ε = {facts.epsilon}, δ = {facts.delta}",
        f"H3 resolution {facts.resolution}",
        facts.created,
        facts.scale,
        facts.hidden,
        facts.noise,
    ):
        assert fact and fact.lower() in static_caption.lower(), fact
        assert fact.lower() in html_caption.lower(), fact
    assert "ε = 0.5, δ = 2.5 × 10⁻⁷" in static_caption and "3.25" in static_caption
    assert (
        facts.guarantee.strip("()") in static_caption
        and facts.guarantee.strip("()") in html_caption
    )
    assert fig._suptitle.get_text() == layer.title == "Synthetic debtors — rent"
    assert "<title>Synthetic debtors — rent</title>" in text


def test_maps_package_shape():
    """maps/ is one package with a shared layer: no module takes another's private name,
    static and interactive both draw from layers (neither from the other), and no
    function is longer than 80 lines."""
    import ast
    from pathlib import Path

    from dpmap import maps

    folder = Path(maps.__file__).parent
    imports: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imports[path.stem] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                imports[path.stem].add(module)
                private = [a.name for a in node.names if a.name.startswith("_")]
                ours = node.level > 0 or module.startswith("dpmap")
                assert not (ours and private), (path.name, module, private)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                assert length <= 80, f"{path.name}: {node.name} is {length} lines"
    assert "dpmap.maps.layers" in imports["static"] & imports["interactive"]
    assert "dpmap.maps.static" not in imports["interactive"]
    assert "dpmap.maps.interactive" not in imports["static"]
    assert not {m for m in imports["layers"] if m.startswith("dpmap.maps")}


# ------------------------------------------------------------------------ mistakes


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"column": "nope"}, r"column 'nope' is not in the release table.*'count'"),
        ({"column": "suppressed"}, r"not numbers"),
        ({"category": "rent"}, r"no 'category' column"),
    ],
)
def test_bad_arguments_raise_and_write_nothing(release, tmp_path, kwargs, message):
    with pytest.raises(SpecError, match=message):
        write_html(release, MANIFEST, tmp_path / "map.html", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_category_must_be_chosen_and_exist(tmp_path):
    table = _release(categories=["loans", "rent"])
    with pytest.raises(SpecError, match=r"category=.*'loans', 'rent'"):
        write_html(table, MANIFEST, tmp_path / "map.html")
    with pytest.raises(SpecError, match=r"'cars'.*'loans', 'rent'"):
        write_html(table, MANIFEST, tmp_path / "map.html", category="cars")
    assert list(tmp_path.iterdir()) == []
    out = write_html(table, MANIFEST, tmp_path / "map.html", category="rent")
    assert len(_features(out.read_text("utf-8"))) == int((table["category"] == "rent").sum())


@pytest.mark.parametrize("name", ["map.png", "map", "map.html.txt", "map.geojson"])
def test_path_must_end_in_html(release, tmp_path, name):
    with pytest.raises(SpecError, match=r"ending in '\.html'"):
        write_html(release, MANIFEST, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_a_data_file_error(release, tmp_path):
    with pytest.raises(DataFileError, match="does not exist"):
        write_html(release, MANIFEST, tmp_path / "nope" / "map.html")


def test_missing_folium_or_leaflet_names_the_extra(release, monkeypatch):
    monkeypatch.setitem(sys.modules, "folium", None)
    with pytest.raises(MissingDependencyError, match=r"'folium'.*dpmap\[plot\]"):
        explore_release(release, MANIFEST)
    monkeypatch.undo()
    dhtml._leaflet_assets.cache_clear()
    monkeypatch.setitem(sys.modules, "js_lib_leaflet", None)
    try:
        with pytest.raises(MissingDependencyError, match=r"'django-js-lib-leaflet'.*dpmap\[plot\]"):
            explore_release(release, MANIFEST).get_root().render()
    finally:
        monkeypatch.undo()
        dhtml._leaflet_assets.cache_clear()


# ------------------------------------------------------------- Release and the CLI


@pytest.fixture(scope="module")
def real_release() -> dpmap.Release:
    from common import REGION, RESOLUTION, debtors

    return dpmap.release(
        debtors(),
        region=REGION,
        resolution=RESOLUTION,
        epsilon=1.0,
        person="pid",
        value="amount",
        bounds=(0, 1000),
        title="Debtors",
    )


def test_release_methods(real_release, tmp_path):
    fmap = real_release.explore(column="mean")
    assert isinstance(fmap, folium.Map)
    out = real_release.to_html(tmp_path / "map.html", column="sum")
    assert out == tmp_path / "map.html"
    config = _config(out.read_text("utf-8"))
    assert len(config["data"]["features"]) == len(real_release.cells)
    assert config["stats"] == ["sum", "count", "mean"]
    assert "H3 resolution 7" in config["captionHtml"]


def test_cli_plot_html(real_release, tmp_path, capsys):
    real_release.to_file(tmp_path / "map.geojson")
    code = main(["plot", str(tmp_path / "map.geojson"), "--html", str(tmp_path / "map.html")])
    assert code == 0, capsys.readouterr().err
    assert "var cfg = " in (tmp_path / "map.html").read_text("utf-8")

    before = sorted(p.name for p in tmp_path.iterdir())
    for args, message in [
        (["--html", str(tmp_path / "x.png")], "ending in '.html'"),
        ([], "--png PATH, --html PATH, or both"),
        (
            [
                "--png",
                str(tmp_path / "y.png"),
                "--html",
                str(tmp_path / "y.html"),
                "--column",
                "nope",
            ],
            "nope",
        ),
    ]:
        code = main(["plot", str(tmp_path / "map.geojson"), *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_file_size_per_cell_is_modest(tmp_path):
    """Big releases stay usable: a few hundred bytes per hexagon."""
    cells = sorted(h3.grid_disk(CENTER, 20))  # 1261 cells
    table = gpd.GeoDataFrame(
        {
            "cell": cells,
            "resolution": 7,
            "count": pd.array(np.arange(len(cells)) % 50, dtype="Int64"),
            "count_moe": 6.42,
            "suppressed": False,
        },
        geometry=[Polygon([(g, t) for t, g in h3.cell_to_boundary(c)]) for c in cells],
        crs="EPSG:4326",
    )
    out = write_html(table, MANIFEST, tmp_path / "big.html")
    per_cell = (out.stat().st_size - 200_000) / len(cells)  # minus Leaflet and the page
    assert per_cell < 320, per_cell
