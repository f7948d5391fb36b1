"""The website's data (dpmap.site.data): the encoding round-trips, nothing hidden leaks, and
"around here" gets exactly the rows ``rel.around`` adds up.

All checks are exact (or within the documented rounding of the vertices, half an offset
unit): no statistics, nothing random beyond the fixed-seed releases.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

import dpmap
from common import REGION
from common import uniform_points as _points
from dpmap.analysis.totals import rows_of
from dpmap.site.data import site_data, unpack, unpack_text
from dpmap.site.layers import SiteLayer, SitePeriod
from dpmap.site.page import write_front_end


def _arr(s: str, dtype: str) -> np.ndarray:
    return unpack(s, dtype)


@pytest.fixture(scope="module")
def rels() -> list[dpmap.Release]:
    """Two periods of a sparse release (about 2 points per cell: many suppressed), the second
    covering only the eastern half, so the union has cells missing from one period."""
    a = dpmap.release(
        _points(400, 7), region=REGION, resolution=7, epsilon=1.0, value="amount", bounds=(0, 100)
    )
    east = _points(300, 8)
    east["lng"] = 116.15 + (east["lng"] - 116.0) / 2
    half = shapely.box(116.15, 39.0, 116.3, 39.2)
    b = dpmap.release(east, region=half, resolution=7, epsilon=1.0, value="amount", bounds=(0, 100))
    return [a, b]


def _layer(rels: list[dpmap.Release], unbiased: bool) -> SiteLayer:
    periods = tuple(SitePeriod(f"2026-0{i + 1}", r) for i, r in enumerate(rels))
    return SiteLayer("cells-r7", "H3 cells, resolution 7", "cells", periods, unbiased=unbiased)


def _decode_shapes(shapes: dict[str, Any]) -> list[list[np.ndarray]]:
    centre = _arr(shapes["centre"], "<i4").reshape(-1, 2).astype(np.int64)
    scale = round(shapes["unit"] / 1e-7)
    off = _arr(shapes["offsets"], "<i2").reshape(-1, 2).astype(np.int64) * scale
    rs, ss = _arr(shapes["ring_start"], "<u4"), _arr(shapes["shape_start"], "<u4")
    out = []
    for i in range(shapes["n"]):
        out.append([(centre[i] + off[rs[r] : rs[r + 1]]) * 1e-7 for r in range(ss[i], ss[i + 1])])
    return out


def test_shapes_and_values_round_trip(rels: list[dpmap.Release]) -> None:
    data = site_data([_layer(rels, False)], title="T", noun="debtors", tiles=None)
    json.dumps(data, allow_nan=False)  # JSON-ready, no NaN outside the typed arrays
    layer = data["layers"][0]
    shapes = layer["shapes"]
    ids = unpack_text(shapes["ids"])
    assert len(set(ids)) == len(ids) == shapes["n"]
    assert set(ids) == set(rels[0].cells["cell"]) | set(rels[1].cells["cell"])
    rings = _decode_shapes(shapes)
    geom = {}
    for r in rels:
        geom.update(zip(r.cells["cell"], r.cells.geometry, strict=True))
    for cid, shape in zip(ids, rings, strict=True):
        want = shapely.get_coordinates(geom[cid])[:-1]
        assert len(shape) == 1 and shape[0].shape == want.shape
        assert np.abs(shape[0] - want).max() <= shapes["unit"] / 2 + 1e-7
    assert layer["periods"] == ["2026-01", "2026-02"]
    assert [s["key"] for s in layer["statistics"]] == ["count", "sum", "mean"]
    index = pd.Index(ids)
    for rel, values in zip(rels, layer["values"], strict=True):
        t = rel.cells
        at = index.get_indexer(t["cell"])
        for stat in ("count", "sum", "mean"):
            v = _arr(values[stat]["value"], "<f4")
            m = _arr(values[stat]["moe"], "<f4")
            state = _arr(values[stat]["state"], "u1")
            supp = t["suppressed"].to_numpy(bool)
            assert (state[at] == np.where(supp, 1, 0)).all()
            missing = np.setdiff1d(np.arange(len(ids)), at)
            assert (state[missing] == 2).all() and (len(missing) > 0) == (rel is rels[1])
            assert np.isnan(v[missing]).all() and np.isnan(v[at[supp]]).all()
            pub = pd.array(t[stat], dtype="Float64").to_numpy(np.float64, na_value=np.nan)
            np.testing.assert_array_equal(v[at[~supp]], pub[~supp].astype(np.float32))
            moe = t[f"{stat}_moe"].to_numpy(np.float64)
            np.testing.assert_array_equal(m[at[~supp]], moe[~supp].astype(np.float32))


def _around_rows(layer: dict[str, Any], rel: dpmap.Release, period: int, unbiased: bool) -> None:
    """The around arrays of ``period`` equal rows_of's of the release as the site may use it."""
    view = rel if unbiased else dpmap.Release(rel.cells, rel.manifest)
    rows = rows_of(view)
    at = pd.Index(unpack_text(layer["shapes"]["ids"])).get_indexer(rows.cells.astype(str))
    assert (at >= 0).all()
    per = layer["around"]["periods"][period]
    assert sorted(per) == ["count", "sum"]
    for stat in ("count", "sum"):
        est, var = _arr(per[stat]["est"], "<f8"), _arr(per[stat]["var"], "<f8")
        hidden = _arr(per[stat]["hidden"], "u1")
        np.testing.assert_array_equal(est[at], rows.values[stat][:, 0])
        np.testing.assert_array_equal(var[at], rows.variances[stat][:, 0])
        np.testing.assert_array_equal(hidden[at], rows.hidden[:, 0])
        others = np.setdiff1d(np.arange(len(est)), at)
        assert (est[others] == 0).all() and (hidden[others] == 0).all()
        assert per[stat]["single_moe"] == rows.corr.exact_moe[stat]


@pytest.mark.parametrize("unbiased", [False, True])
def test_around_inputs_are_rows_of(rels: list[dpmap.Release], unbiased: bool) -> None:
    data = site_data([_layer(rels, unbiased)], title="T", noun="debtors", tiles=None)
    layer = data["layers"][0]
    assert layer["around"]["unbiased"] is unbiased
    assert ("unbiased noisy estimates" in layer["around_note"]) is unbiased
    assert layer["around"]["value"] == "amount"
    for k, rel in enumerate(rels):
        _around_rows(layer, rel, k, unbiased)
    if unbiased:  # the estimates of hidden cells are there to add up: nothing is hidden
        hidden = _arr(layer["around"]["periods"][0]["count"]["hidden"], "u1")
        assert not hidden.any()


#: the float arrays of the format (data.py's docstring), by field name; the others hold
#: integers of the geometry and the states (a float's bytes read as Int16 pairs would
#: match round numbers by chance, so they are not searched)
FLOAT_FIELDS = {"value": "<f4", "moe": "<f4", "area_km2": "<f4", "slope": "<f4"}
FLOAT_FIELDS |= {"est": "<f8", "var": "<f8"}


def _numbers(data: Any) -> tuple[set[float], set[float]]:
    """The plain JSON numbers of the data (its structure: sizes, bounds, margins of one cell),
    and every number of its float arrays."""
    plain: set[float] = set()
    arrays: set[float] = set()

    def walk(x: Any, key: str = "") -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, k)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            plain.add(float(x))
        elif (
            isinstance(x, str) and key in FLOAT_FIELDS and x != data["layers"][0]["around"]["value"]
        ):
            arrays.update(unpack(x, FLOAT_FIELDS[key]).astype(np.float64).tolist())

    walk(data)
    return plain, arrays


def test_no_value_of_a_suppressed_row_is_written_unless_unbiased(
    rels: list[dpmap.Release],
) -> None:
    """The unbiased estimates of suppressed rows (noisy outputs the public file does not
    carry) appear nowhere in the bytes unless the layer is ``unbiased``; the check finds them
    when it is (so it can fail)."""
    est = rels[0].estimates
    supp = rels[0].cells["suppressed"].to_numpy(bool)
    # numbers the site shows anyway (a published value that happens to equal a hidden
    # estimate is not a leak): every published number of both releases
    public = {
        float(v)
        for r in rels
        for c in ("count", "sum", "mean", "count_moe", "sum_moe", "mean_moe")
        for v in pd.array(r.cells[c], dtype="Float64").dropna().to_numpy(np.float64)
    }
    secret = {
        v
        for s in ("count", "sum")
        for v in est[s].to_numpy(np.float64)[supp]
        if np.isfinite(v) and v not in public and float(np.float32(v)) not in public
    }
    plain = site_data([_layer(rels, False)], title="T", noun="n", tiles=None)
    structure, arrays = _numbers(plain)
    secret -= structure | {0.0}  # 0: what a hidden row holds (a hidden 0 cannot be told)
    secret32 = {float(np.float32(v)) for v in secret}
    assert len(secret) > 20
    leaked = sorted((secret | secret32) & arrays)
    assert not leaked, leaked[:10]
    full = site_data([_layer(rels, True)], title="T", noun="n", tiles=None)
    assert secret <= _numbers(full)[1]


def test_zones_and_correlated_designs_have_no_around(rels: list[dpmap.Release]) -> None:
    hier = dpmap.release(_points(300, 5), region=REGION, resolution=[6, 7], epsilon=1.0)
    layer = SiteLayer("h", "Hierarchical", "cells", (SitePeriod(None, hier),))
    out = site_data([layer], title="T", noun="n", tiles=None)["layers"][0]
    assert out["around"] is None and "not available" in out["around_note"]
    # the map shows the finest level, the level around() would add up
    assert set(unpack_text(out["shapes"]["ids"])) == set(rows_of(hier).cells)
    assert out["periods"] == [None]
    zones = gpd.GeoDataFrame(
        {"name": ["west", "east"]},
        geometry=[shapely.box(116.0, 39.0, 116.15, 39.2), shapely.box(116.15, 39.0, 116.3, 39.2)],
        crs="EPSG:4326",
    )
    zrel = dpmap.release(_points(300, 6), zones=zones, by="name", epsilon=1.0)
    with pytest.raises(dpmap.SpecError, match="one row per zone"):
        zrel.around(39.1, 116.1)  # what the site mirrors
    layer = SiteLayer("z", "Zones", "zones", (SitePeriod(None, zrel),))
    out = site_data([layer], title="T", noun="n", tiles=None)["layers"][0]
    assert out["around"] is None and "whole zones" in out["around_note"]
    assert sorted(unpack_text(out["shapes"]["ids"])) == ["east", "west"]
    assert out["kind"] == "zones" and out["resolution"] is None
    rings = _decode_shapes(out["shapes"])
    for name, shape in zip(unpack_text(out["shapes"]["ids"]), rings, strict=True):
        want = zones.set_index("name").geometry[name]
        got = shapely.Polygon(shape[0])
        assert got.symmetric_difference(want).area < 1e-6 * want.area


def test_bad_inputs_are_one_line_errors(rels: list[dpmap.Release]) -> None:
    layer = _layer(rels[:1], False)
    for kwargs, match in (
        ({"title": " "}, "title must be a non-empty text"),
        ({"noun": ""}, "noun must be a non-empty word"),
        ({"tiles": "tiles.example.org"}, "tiles must be an http"),
        ({"tiles": 3}, "tiles must be a tile URL template"),
    ):
        args = {"title": "T", "noun": "n", "tiles": None} | kwargs
        with pytest.raises(dpmap.SpecError, match=match) as info:
            site_data([layer], **args)
        assert "\n" not in str(info.value)
    with pytest.raises(dpmap.SpecError, match="at least one layer"):
        site_data([], title="T", noun="n", tiles=None)
    tiles = site_data([layer], title="T", noun="n", tiles="https://t.example.org/{z}/{x}/{y}.png")
    assert tiles["tiles"]["url"] == "https://t.example.org/{z}/{x}/{y}.png"


@pytest.mark.parametrize("unbiased", [False, True])
def test_categories_are_choices_and_around_rows_per_category(unbiased: bool) -> None:
    pts = _points(600, 9)
    pts["creditor"] = np.where(np.arange(len(pts)) % 3 == 0, "bank", "utility")
    rel = dpmap.release(
        pts,
        region=REGION,
        resolution=7,
        epsilon=1.0,
        value="amount",
        bounds=(0, 100),
        category="creditor",
        categories=["bank", "utility"],
    )
    layer = SiteLayer("c", "C", "cells", (SitePeriod(None, rel),), unbiased=unbiased)
    out = site_data([layer], title="T", noun="n", tiles=None)["layers"][0]
    keys = [s["key"] for s in out["statistics"]]
    cats = [str(c) for c in rel.manifest["categories"]]
    assert len(cats) >= 2 and keys[: len(cats)] == [f"count:{c}" for c in cats]
    assert keys[len(cats)] == f"sum:{cats[0]}"
    index = pd.Index(unpack_text(out["shapes"]["ids"]))
    t = rel.cells
    for cat in ("bank", "utility"):
        rows = t[t["category"] == cat]
        at = index.get_indexer(rows["cell"])
        supp = rows["suppressed"].to_numpy(bool)
        got = unpack(out["values"][0][f"count:{cat}"]["value"], "<f4")
        state = unpack(out["values"][0][f"count:{cat}"]["state"], "u1")
        assert (state[at] == np.where(supp, 1, 0)).all()
        want = pd.array(rows["count"], dtype="Float64").to_numpy(np.float64, na_value=np.nan)
        np.testing.assert_array_equal(got[at[~supp]], want[~supp].astype(np.float32))
        assert np.isnan(got[at[supp]]).all()
    around = out["around"]
    assert around["categories"] == cats
    rows = rows_of(rel if unbiased else dpmap.Release(rel.cells, rel.manifest))
    at = index.get_indexer(rows.cells.astype(str))
    for stat in ("count", "sum"):
        per = around["periods"][0][stat]
        est = unpack(per["est"], "<f8").reshape(-1, len(cats))
        np.testing.assert_array_equal(est[at], rows.values[stat])
        np.testing.assert_array_equal(
            unpack(per["var"], "<f8").reshape(-1, len(cats))[at], rows.variances[stat]
        )
        np.testing.assert_array_equal(
            unpack(per["hidden"], "u1").reshape(-1, len(cats))[at], rows.hidden
        )


def test_front_end_is_self_contained(rels: list[dpmap.Release], tmp_path: Path) -> None:
    """write_front_end writes the page, Leaflet, the scripts and the data; nothing refers to
    another host, and a title or name cannot end the data's <script>."""
    title = "Debt </script><script>alert(1)</script> & co"
    data = site_data([_layer(rels, False)], title=title, noun="debtors", tiles=None)
    write_front_end(tmp_path, data, title=title)
    names = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    for name in ("index.html", "assets/leaflet.js", "assets/leaflet.css", "assets/site.js"):
        assert name in names
    assert {"assets/geo.js", "assets/site.css", "data/site-data.js"} <= names
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "<script>alert" not in page and "&lt;/script&gt;" in page
    assert 'href="method.html"' in page
    for src in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert not re.match(r"^[a-z]+:", src) or src.startswith("#"), src
    js = (tmp_path / "data" / "site-data.js").read_text(encoding="utf-8")
    assert js.startswith("window.DPMAP_SITE = {") and "</script" not in js.lower()
    assert "sourceMappingURL" not in (tmp_path / "assets" / "leaflet.js").read_text("utf-8")
    for name in ("index.html", "assets/site.js", "assets/geo.js", "assets/site.css"):
        assert not re.search(r"https?://", (tmp_path / name).read_text(encoding="utf-8")), name
    css = (tmp_path / "assets" / "leaflet.css").read_text(encoding="utf-8")
    urls = [u for u in re.findall(r"url\(([^)]+)\)", css) if not u.startswith("#")]
    assert urls and all((tmp_path / "assets" / u.strip("'\"")).is_file() for u in urls), urls
