"""The public website (``dpmap.publish``) in a real browser: headless Chromium, network blocked.

Selenium 4 drives Debian's chromium through chromedriver (:mod:`browser`): the network
is blocked for real (a closed proxy, no name resolution) and every request is recorded,
so each test ends by asserting that nothing left ``file:``, ``data:`` or ``blob:``; a
site built with ``tiles=`` is the positive control that the recording sees requests.

Two sites are built once per module: the demo (synthetic debtors in Hebei, H3
resolution 6, ~6.9k cells, mostly suppressed) and a twelve-month series of synthetic
points (a panel over 12 months, and the same months as 12 separate releases). The tests
click the map and type coordinates and compare the page's "around here" answer (cells,
count, margin, sum) with :meth:`Release.around` for the same point, radius and period;
move the period slider with the mouse-free keyboard; switch the statistic; search and
sort the table; download the CSV and compare it with the table and the release; open the
method page and its manifests; check the phone width and the keyboard focus order.

Skipped where Chromium, chromedriver or selenium are missing, failed under ``CI``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pandas as pd
import pytest

from browser import SiteBrowser, pixels_near, require_browser
from common import import_or_skip

require_browser()
import_or_skip("geopandas")
import_or_skip("js_lib_leaflet")
import_or_skip("dpmap.site.build", "the website builder (dpmap.site.build) is not there yet")

import dpmap  # noqa: E402
from dpmap.errors import SpecError  # noqa: E402

NOUN = "debts"
MONTHS = [f"2026-{m:02d}" for m in range(1, 13)]
#: the series' public region: a box south-west of Beijing (H3 resolution 7: ~430 cells)
BOX = (116.0, 39.0, 116.3, 39.2)
#: exact arithmetic in the browser (Float64 sums in another order): relative tolerance
REL = 1e-9


# ------------------------------------------------------------------------- the sites


def _demo_release() -> dpmap.Release:
    from dpmap.demo import hebei_region, synthetic_debtors

    return dpmap.release(
        synthetic_debtors(200_000, seed=0),
        region=hebei_region(),
        resolution=6,
        epsilon=1.0,
        person="debtor_id",
        value="amount",
        bounds=(0, 50_000),
        title="Synthetic debtors in Hebei (dpmap demo)",
    )


def _series_points(n: int = 150_000, seed: int = 5) -> pd.DataFrame:
    """Each row its own person; dense in the north-west of the box, thin in the south-east
    (so some cells are suppressed), more points as the year goes on."""
    rng = np.random.default_rng(seed)
    u = rng.beta(1.3, 2.2, n)
    v = rng.beta(1.3, 2.2, n)
    month = np.minimum(11, (rng.beta(1.4, 1.0, n) * 12).astype(int))
    day = rng.integers(1, 29, n)
    return pd.DataFrame(
        {
            "lat": BOX[3] - 0.001 - v * (BOX[3] - BOX[1] - 0.002),
            "lng": BOX[0] + 0.001 + u * (BOX[2] - BOX[0] - 0.002),
            "amount": rng.integers(0, 5_001, n),
            "date": pd.to_datetime({"year": np.full(n, 2026), "month": month + 1, "day": day}),
        }
    )


def _series_kwargs() -> dict[str, Any]:
    import shapely

    return {
        "region": shapely.box(*BOX),
        "resolution": 7,
        "epsilon": 1.0,
        "value": "amount",
        "bounds": (0, 5_000),
    }


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    b = SiteBrowser(
        tmp_path_factory.mktemp("chromium-profile"), tmp_path_factory.mktemp("downloads")
    )
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    rel = _demo_release()
    root = tmp_path_factory.mktemp("demo")
    site = dpmap.publish(
        [rel], root / "site", title="Synthetic debts, Hebei", noun=NOUN, include_unbiased=True
    )
    public = dpmap.publish([rel], root / "public", title="Synthetic debts, Hebei", noun=NOUN)
    # what the public site's data amount to: the release as written without unbiased estimates
    plain = dpmap.read_release(rel.to_file(root / "plain.geojson"))
    return {"rel": rel, "site": Path(site), "public": Path(public), "plain": plain}


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    points = _series_points()
    kw = _series_kwargs()
    panel = dpmap.release(
        points, time="date", periods=pd.period_range("2026-01", "2026-12", freq="M"), **kw
    )
    monthly = [
        dpmap.release(points[points["date"].dt.month == k + 1], period=label, **kw)
        for k, label in enumerate(MONTHS)
    ]
    root = tmp_path_factory.mktemp("series")
    return {
        "panel": panel,
        "monthly": monthly,
        "panel_site": Path(
            dpmap.publish(
                [panel], root / "panel", title="Debts 2026", noun=NOUN, include_unbiased=True
            )
        ),
        "monthly_site": Path(
            dpmap.publish(
                monthly, root / "monthly", title="Debts 2026", noun=NOUN, include_unbiased=True
            )
        ),
    }


# ------------------------------------------------------------------------- helpers


def _open(browser: SiteBrowser, site: Path) -> None:
    browser.load((site / "index.html").as_uri())
    assert browser.errors() == []


def _published_cells(rel: dpmap.Release, *, inner: bool = True) -> pd.DataFrame:
    """Published cells whose six neighbours are all released (away from the edge), most
    counted first."""
    cells = rel.cells
    released = set(cells["cell"])
    shown = cells[~cells["suppressed"].astype(bool)]
    if inner:
        keep = [all(n in released for n in h3.grid_disk(c, 1)) for c in shown["cell"]]
        shown = shown[keep]
    return shown.sort_values("count", ascending=False)


def _near_vertex(cell: str, share: float = 0.15) -> tuple[float, float]:
    """A point inside ``cell``, ``share`` of the way from its first vertex to its centre
    (circles around it cross into the neighbours)."""
    clat, clng = h3.cell_to_latlng(cell)
    vlat, vlng = h3.cell_to_boundary(cell)[0]
    return vlat + share * (clat - vlat), vlng + share * (clng - vlng)


def _check_answer(page: dict[str, Any], expected: Any) -> None:
    """The page's around answer equals :meth:`Release.around`: the same whole cells, the
    same unbiased totals and margins (Float64 sums in another order: ``REL``)."""
    assert "error" not in page, page.get("error")
    assert list(page["cells"]) == list(expected.cells)
    assert page["count"] == pytest.approx(expected.count, rel=REL, abs=1e-9)
    assert page["count_moe"] == pytest.approx(expected.count_moe, rel=REL)
    if expected.sum is not None:
        assert page["sum"] == pytest.approx(expected.sum, rel=REL, abs=1e-6)
        assert page["sum_moe"] == pytest.approx(expected.sum_moe, rel=REL)
    assert page["area_km2"] == pytest.approx(expected.area_km2, rel=1e-6)
    assert page["text"] == str(expected)  # Around.__str__, word for word


def _shown_answer(browser: SiteBrowser) -> dict[str, Any]:
    """What ``#around-answer`` shows (its data attributes and text)."""
    return browser.js(  # type: ignore[no-any-return]
        "const a = document.getElementById('around-answer');"
        "return {cells: (a.dataset.cells || '').split(',').filter(Boolean),"
        " count: a.dataset.count === undefined ? null : Number(a.dataset.count),"
        " count_moe: a.dataset.countMoe === undefined ? null : Number(a.dataset.countMoe),"
        " text: a.innerText};"
    )


def _page_around(browser: SiteBrowser, lat: float, lng: float, radius: float) -> dict[str, Any]:
    return browser.js(  # type: ignore[no-any-return]
        "return window.dpmapSite.around(arguments[0], arguments[1], arguments[2]);",
        lat,
        lng,
        radius,
    )


def _click_map_at(browser: SiteBrowser, lat: float, lng: float) -> None:
    """Centre the map on the point (zoomed in), then click it with the mouse."""
    x, y = browser.js(
        "document.getElementById('map').scrollIntoView({block: 'center'});"
        "const m = window.dpmapSite.map; m.setView([arguments[0], arguments[1]], 12,"
        " {animate: false});"
        "const p = m.latLngToContainerPoint([arguments[0], arguments[1]]);"
        "const r = document.getElementById('map').getBoundingClientRect();"
        "return [r.left + p.x, r.top + p.y];",
        lat,
        lng,
    )
    browser.frames()
    browser.js("document.getElementById('around-answer').textContent = '';")
    browser.click_at(x, y)
    browser.wait_for("document.getElementById('around-answer').innerText !== ''")


def _select(browser: SiteBrowser, css: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(browser.driver.find_element("css selector", css)).select_by_value(value)


def _typed(browser: SiteBrowser, lat: float, lng: float, radius: int) -> dict[str, Any]:
    find = browser.driver.find_element
    _select(browser, "#around-radius", str(radius))
    for css, value in (("#around-lat", lat), ("#around-lng", lng)):
        box = find("css selector", css)
        box.clear()
        box.send_keys(repr(value))
    browser.js("document.getElementById('around-answer').textContent = '';")
    find("css selector", "#around-go").click()
    browser.wait_for("document.getElementById('around-answer').innerText !== ''")
    return _shown_answer(browser)


def _state(browser: SiteBrowser) -> dict[str, Any]:
    return browser.js("return Object.assign({}, window.dpmapSite.state);")  # type: ignore[no-any-return]


def _table(browser: SiteBrowser) -> tuple[list[str], list[str], list[list[str]]]:
    """The table as shown: header texts, the visible rows' ids and their cell texts."""
    return tuple(  # type: ignore[return-value]
        browser.js(
            "const t = document.getElementById('data-table');"
            "const head = [...t.querySelectorAll('thead th')].map(h => h.innerText.trim());"
            "const rows = [...t.querySelectorAll('tbody tr[data-id]')]"
            "  .filter(r => r.offsetParent !== null && !r.hidden);"
            "return [head, rows.map(r => r.dataset.id),"
            " rows.map(r => [...r.cells].map(c => c.innerText.trim()))];"
        )
    )


def _value_column(browser: SiteBrowser) -> int:
    """Index of the table's value column (the shown statistic)."""
    return int(
        browser.js(
            "return [...document.querySelectorAll('#data-table thead th')]"
            ".findIndex(h => h.dataset.key === 'value');"
        )
    )


def _number(text: str) -> float:
    """A shown number ("1,234", "−3.5", "12.0 ± 4") → float; NaN for anything else."""
    head = text.replace("\u2212", "-").replace(",", "").split("±")[0].strip()
    try:
        return float(head)
    except ValueError:
        return math.nan


# --------------------------------------------------------------------------- tests


def test_demo_site_loads_offline_and_draws_palette_and_hatch(browser, demo, tmp_path):
    site = demo["site"]
    _open(browser, site)
    urls = browser.requested_urls()
    assert (site / "index.html").as_uri() in urls  # the recording sees the page itself
    assert any(u.endswith("data/site-data.js") for u in urls)
    assert browser.non_local() == []
    assert browser.js("return performance.getEntriesByName('dpmap-first-draw').length") >= 1
    # the map is drawn: the hatch of a suppressed cell and the fill of published ones
    rel = demo["rel"]
    shown = _published_cells(rel)
    hidden = rel.cells[rel.cells["suppressed"].astype(bool)]
    around_hidden = set(hidden["cell"])
    hidden = hidden[[set(h3.grid_disk(c, 1)) <= around_hidden for c in hidden["cell"]]]
    assert len(shown) and len(hidden)

    def pixels_in(cell: str, zoom: int = 11) -> np.ndarray:
        lat, lng = h3.cell_to_latlng(cell)
        browser.js(
            "window.dpmapSite.map.setView([arguments[0], arguments[1]], arguments[2],"
            " {animate: false});",
            lat,
            lng,
            zoom,
        )
        browser.frames(3)
        x, y = browser.js(
            "const p = window.dpmapSite.map.latLngToContainerPoint([arguments[0], arguments[1]]);"
            "const r = document.getElementById('map').getBoundingClientRect();"
            "return [Math.round(r.left + p.x), Math.round(r.top + p.y)];",
            lat,
            lng,
        )
        image = browser.screenshot(tmp_path / f"{cell}.png")
        return image[y - 25 : y + 25, x - 25 : x + 25].reshape(-1, 3)

    def colours(patch: np.ndarray) -> dict[tuple[int, ...], int]:
        keys, counts = np.unique(np.round(patch * 255).astype(int), axis=0, return_counts=True)
        return {tuple(k): int(c) for k, c in zip(keys, counts, strict=True)}

    # a published cell: one flat fill from the legend's palette
    fill = colours(pixels_in(shown["cell"].iloc[0]))
    top = max(fill, key=fill.__getitem__)
    assert fill[top] > 0.9 * 2500, f"a published cell is not one flat colour: {fill}"
    # the legend's colour scale (its role=img bar): every colour of its background
    legend = browser.js(
        "return [...document.querySelectorAll('#legend [role=img]')].map(e =>"
        " getComputedStyle(e).backgroundColor + ' ' + getComputedStyle(e).backgroundImage)"
        ".join(' ');"
    )
    palette = {
        tuple(int(v) for v in m.split(",")) for m in re.findall(r"rgb\((\d+, \d+, \d+)\)", legend)
    }
    assert len(palette) >= 3
    assert min(sum(abs(a - b) for a, b in zip(top, p, strict=True)) for p in palette) <= 6
    # a suppressed cell: hatched, i.e. a light ground crossed by darker lines (grey, in
    # no palette colour): the most common colour is the ground, and at least 8% of the
    # pixels are lines, 40+ levels darker
    patch = pixels_in(hidden["cell"].iloc[len(hidden) // 2])
    hatch = colours(patch)
    ground = np.array(max(hatch, key=hatch.__getitem__)) / 255
    assert hatch[max(hatch, key=hatch.__getitem__)] > 0.4 * len(patch), f"no ground: {hatch}"
    lines = patch.mean(axis=1) < ground.mean() - 40 / 255
    assert lines.mean() > 0.08, f"no hatch lines: {hatch}"
    grey = np.ptp(patch, axis=1) <= 3 / 255
    assert grey.all(), "the hatch is not grey"
    # zoomed out (resolution-6 cells a few pixels wide: the page draws them as pixels, not
    # paths), the map still shows the palette and the hatch's ground and lines
    browser.js(
        "const m = window.dpmapSite.map; m.setView([39.0, 116.0], 7, {animate: false});"
        "document.getElementById('map').scrollIntoView();"
    )
    browser.frames(3)
    box = browser.js(
        "const r = document.getElementById('map').getBoundingClientRect();"
        "return [Math.round(r.left), Math.round(r.top), Math.round(r.right), Math.round(r.bottom)];"
    )
    image = browser.screenshot(tmp_path / "zoom7.png")[box[1] : box[3], box[0] : box[2]]
    hexes = ["#" + "".join(f"{v:02x}" for v in p) for p in palette]
    assert pixels_near(image, ["#e3e3e3"]) > 0.05 * image[..., 0].size
    assert pixels_near(image, ["#8c8c8c"], tol=20 / 255) > 0.01 * image[..., 0].size
    assert pixels_near(image, hexes) > 300
    assert min(sum(abs(a - b) for a, b in zip(top, p, strict=True)) for p in palette) <= 6
    assert browser.non_local() == []


def test_recording_sees_the_tile_requests_of_a_site_with_tiles(browser, demo, tmp_path):
    """Positive control: the recorder sees (and the proxy blocks) network requests."""
    site = dpmap.publish(
        [demo["rel"]],
        tmp_path / "tiles",
        title="With tiles",
        noun=NOUN,
        tiles="https://tile.example.org/{z}/{x}/{y}.png",
    )
    browser.load((Path(site) / "index.html").as_uri())
    browser.run_async("setTimeout(() => done(1), 300);")
    away = browser.non_local()
    assert away and all(u.startswith("https://tile.example.org/") for u in away)
    answered = [
        e["params"]["response"]["url"]
        for e in browser.events
        if e["method"] == "Network.responseReceived"
    ]
    assert [u for u in answered if u.startswith("https:")] == []  # and blocked for real


def test_click_and_typed_coordinate_match_release_around(browser, demo):
    rel, site = demo["rel"], demo["site"]
    _open(browser, site)
    cell = _published_cells(rel)["cell"].iloc[0]
    lat, lng = h3.cell_to_latlng(cell)
    # default radius 500 m: a click at the centre of a resolution-6 cell is one whole cell,
    # whose margin is the exact single-cell margin
    _click_map_at(browser, lat, lng)
    expected = rel.around(lat, lng, 500, noun=NOUN)
    assert expected.cells == (cell,)
    shown = _shown_answer(browser)
    assert shown["cells"] == [cell]
    assert shown["count"] == pytest.approx(expected.count, rel=REL, abs=1e-9)
    assert shown["count_moe"] == pytest.approx(expected.count_moe, rel=REL)
    assert "not a count within 500 m" in shown["text"]
    # the click answered for the clicked point (not the centre of its cell): same numbers
    page = _page_around(browser, lat, lng, 500)
    _check_answer(page, expected)
    # 1 km near a vertex: several cells (the normal-approximation margin)
    vlat, vlng = _near_vertex(cell)
    _select(browser, "#around-radius", "1000")
    _click_map_at(browser, vlat, vlng)
    expected = rel.around(vlat, vlng, 1000, noun=NOUN)
    assert len(expected.cells) >= 2
    shown = _shown_answer(browser)
    assert shown["cells"] == list(expected.cells)
    assert shown["count"] == pytest.approx(expected.count, rel=REL, abs=1e-9)
    assert shown["count_moe"] == pytest.approx(expected.count_moe, rel=REL)
    _check_answer(_page_around(browser, vlat, vlng, 1000), expected)
    assert "not a count within 1 km" in shown["text"]
    # a typed coordinate, 2 km
    tlat, tlng = round(vlat + 0.004, 6), round(vlng - 0.003, 6)
    shown = _typed(browser, tlat, tlng, 2000)
    expected = rel.around(tlat, tlng, 2000, noun=NOUN)
    assert shown["cells"] == list(expected.cells)
    assert shown["count"] == pytest.approx(expected.count, rel=REL, abs=1e-9)
    assert shown["count_moe"] == pytest.approx(expected.count_moe, rel=REL)
    _check_answer(_page_around(browser, tlat, tlng, 2000), expected)
    assert browser.errors() == []
    assert browser.non_local() == []


def test_around_refusals_are_the_releases_refusals(browser, demo):
    # a point outside the released area: the same refusal as Release.around
    _open(browser, demo["site"])
    lat, lng = 45.123457, 120.654321
    with pytest.raises(SpecError) as outside:
        demo["rel"].around(lat, lng, 500)
    page = _page_around(browser, lat, lng, 500)
    assert page.get("error") == str(outside.value)
    shown = _typed(browser, lat, lng, 500)
    assert str(outside.value) in shown["text"]
    assert shown["cells"] == [] and shown["count"] is None
    # the public site (no unbiased estimates) where a suppressed cell is needed
    _open(browser, demo["public"])
    rel = demo["plain"]
    hidden = rel.cells[rel.cells["suppressed"].astype(bool)]["cell"]
    released = set(rel.cells["cell"])
    inner = [c for c in hidden if set(h3.grid_disk(c, 1)) <= released]
    hlat, hlng = h3.cell_to_latlng(inner[0])
    with pytest.raises(SpecError) as refused:
        rel.around(hlat, hlng, 500, noun=NOUN)
    assert "this map cannot answer for this place" in str(refused.value)
    assert _page_around(browser, hlat, hlng, 500).get("error") == str(refused.value)
    _click_map_at(browser, hlat, hlng)
    shown = _shown_answer(browser)
    assert str(refused.value) in shown["text"] and shown["cells"] == []
    # a published cell still answers on the public site, from the published values
    cell = _published_cells(rel)["cell"].iloc[0]
    clat, clng = h3.cell_to_latlng(cell)
    _check_answer(_page_around(browser, clat, clng, 500), rel.around(clat, clng, 500, noun=NOUN))
    assert browser.non_local() == []


def _most_changed(rel: dpmap.Release, start: int, nxt: int) -> str:
    """The published inner cell of ``rel`` whose 1 km answer near its vertex (3 cells) has
    the largest true change between months ``start`` and ``nxt``, which is asserted ≥ 80.

    The two months' noisy answers must differ on every run. Each is the sum of 3 cells'
    counts with discrete Laplace noise of scale 2, so their difference's noise is a sum of 6
    such draws: it cancels a true change of 80 with chance < 1e-13 (by convolution: 4e-15
    at 85, the largest December–November change; 2e-4 at 25, which the most counted cell,
    the former choice, could give)."""
    points = _series_points()
    month = points["date"].dt.month.to_numpy()
    ll = zip(points["lat"], points["lng"], strict=True)
    where = np.array([h3.latlng_to_cell(a, b, 7) for a, b in ll])

    def change(cell: str) -> int:
        lat, lng = _near_vertex(cell, 0.3)
        inside = np.isin(where, rel.around(lat, lng, 1000).as_dict()["cells"])
        return abs(int((inside & (month == nxt + 1)).sum() - (inside & (month == start + 1)).sum()))

    best = max(_published_cells(rel)["cell"], key=change)
    assert change(best) >= 80, (start, nxt, change(best))
    return str(best)


@pytest.mark.parametrize("kind", ["panel", "monthly"])
def test_period_slider_by_keyboard_changes_label_values_and_around(browser, series, kind):
    site = series[f"{kind}_site"]
    at = (
        (lambda k: series["panel"].at(MONTHS[k]))
        if kind == "panel"
        else (lambda k: series["monthly"][k])
    )
    _open(browser, site)
    slider = browser.driver.find_element("css selector", "#period-slider")
    label = browser.driver.find_element("css selector", "#period-label")
    assert slider.get_attribute("type") == "range"
    assert label.text.strip() == MONTHS[-1] or label.text.strip() == MONTHS[0]
    start = MONTHS.index(label.text.strip())
    nxt = start - 1 if start == len(MONTHS) - 1 else start + 1
    rel0 = at(start)
    cell = _most_changed(rel0, start, nxt)
    lat, lng = _near_vertex(cell, 0.3)
    _check_answer(_page_around(browser, lat, lng, 1000), rel0.around(lat, lng, 1000, noun=NOUN))

    from selenium.webdriver.common.keys import Keys

    step = Keys.ARROW_LEFT if start == len(MONTHS) - 1 else Keys.ARROW_RIGHT
    slider.send_keys(step)
    browser.wait_for(
        f"document.getElementById('period-label').innerText.trim() === '{MONTHS[nxt]}'"
    )
    assert _state(browser)["period"] in (nxt, MONTHS[nxt])
    rel1 = at(nxt)
    expected = rel1.around(lat, lng, 1000, noun=NOUN)
    assert expected.count != rel0.around(lat, lng, 1000).count
    _check_answer(_page_around(browser, lat, lng, 1000), expected)
    # the table shows the new period's values
    _, ids, rows = _table(browser)
    col = _value_column(browser)
    assert _state(browser)["stat"] == "count"
    values = rel1.cells.set_index("cell")["count"]
    checked = 0
    for cid, row in zip(ids, rows, strict=True):
        if not pd.isna(values[cid]):
            assert _number(row[col]) == float(values[cid])  # integer counts, shown exactly
            checked += 1
    assert checked >= 10
    # Home/End reach the ends
    slider.send_keys(Keys.HOME)
    browser.wait_for(f"document.getElementById('period-label').innerText.trim() === '{MONTHS[0]}'")
    slider.send_keys(Keys.END)
    browser.wait_for(f"document.getElementById('period-label').innerText.trim() === '{MONTHS[-1]}'")
    _check_answer(_page_around(browser, lat, lng, 1000), at(11).around(lat, lng, 1000, noun=NOUN))
    # and with the mouse: a click near the slider's left end picks the first period
    from selenium.webdriver.common.action_chains import ActionChains

    width = slider.size["width"]
    ActionChains(browser.driver).move_to_element_with_offset(
        slider, -width // 2 + 3, 0
    ).click().perform()
    browser.wait_for(f"document.getElementById('period-label').innerText.trim() === '{MONTHS[0]}'")
    _check_answer(_page_around(browser, lat, lng, 1000), at(0).around(lat, lng, 1000, noun=NOUN))
    assert browser.errors() == []
    assert browser.non_local() == []


def test_statistic_switcher_table_search_sort_and_csv(browser, demo):
    rel = demo["rel"]
    _open(browser, demo["site"])
    options = browser.js(
        "return [...document.querySelectorAll('#stat-select option')].map(o => o.value);"
    )
    assert {"count", "sum", "mean"} <= set(options)
    legend0 = browser.js("return document.getElementById('legend').innerText;")
    # every published row of the demo has its count: the legend lists no "no published value"
    counts = rel.cells.loc[~rel.cells["suppressed"].astype(bool), "count"]
    assert counts.notna().all() and "no published value" not in legend0
    _select(browser, "#stat-select", "mean")
    browser.wait_for("window.dpmapSite.state.stat === 'mean'")
    assert browser.js("return document.getElementById('legend').innerText;") != legend0
    col = _value_column(browser)
    digits = browser.js(
        "return window.DPMAP_SITE.layers[0].statistics.find(s => s.key === 'mean').digits;"
    )
    means = rel.cells.set_index("cell")["mean"].astype(float)
    hidden = rel.cells.set_index("cell")["suppressed"].astype(bool)

    def check_value(cid: str, text: str) -> None:
        """A shown mean is the release's, rounded to ``digits`` (Float32 on the way)."""
        if hidden[cid]:
            assert text == ""
        else:
            tol = 0.5 * 10.0**-digits + abs(means[cid]) * 2.0**-23
            assert abs(_number(text) - means[cid]) <= tol, (cid, text, means[cid])

    _, ids, rows = _table(browser)
    assert len(ids) > 10
    for cid, row in zip(ids, rows, strict=True):
        check_value(cid, row[col])

    # search: one cell id -> that row only
    cell = _published_cells(rel)["cell"].iloc[3]
    search = browser.driver.find_element("css selector", "#table-search")
    search.clear()
    search.send_keys(cell)
    browser.wait_for("document.querySelectorAll('#data-table tbody tr[data-id]').length === 1")
    assert _table(browser)[1] == [cell]
    # a prefix: only ids that contain it
    prefix = cell[:5]
    search.clear()
    search.send_keys(prefix)
    browser.frames()
    _, ids, _ = _table(browser)
    assert len(ids) > 1 and all(prefix in i for i in ids)
    # sort by the value column, one way and the other
    button = browser.driver.find_elements("css selector", "#data-table thead th button")[col]
    orders = []
    for _ in range(2):
        button.click()
        browser.frames()
        orders.append([_number(r[col]) for r in _table(browser)[2]])
    numbers = [[x for x in order if not math.isnan(x)] for order in orders]
    assert max(map(len, numbers)) > 1 and orders[0] != orders[1]
    up = [nums == sorted(nums) for nums in numbers]
    down = [nums == sorted(nums, reverse=True) for nums in numbers]
    assert (up[0] and down[1]) or (down[0] and up[1])

    # the CSV: the table's columns and its filtered, sorted rows (every page), same text
    head, ids, rows = _table(browser)
    total = int(browser.js("return document.getElementById('table-page').innerText;").split()[-1])
    browser.driver.find_element("css selector", "#csv-download").click()
    layer = browser.js("return window.DPMAP_SITE.layers[0].key;")
    path = browser.wait_download(f"{layer}-all-mean.csv")
    csv = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert len(csv.columns) == len(head) and len(csv) == total >= len(ids)
    assert list(csv.iloc[: len(ids), 0]) == ids
    assert csv.iloc[: len(ids)].values.tolist() == rows
    assert all(prefix in i for i in csv.iloc[:, 0])
    nums = [x for x in map(_number, csv.iloc[:, col]) if not math.isnan(x)]
    assert len(nums) > 10 and nums == sorted(nums, reverse=not up[1])  # the table's order
    state = csv.columns[-1]
    for cid, text, st in zip(csv.iloc[:, 0], csv.iloc[:, col], csv[state], strict=True):
        check_value(cid, text)
        assert (st == "suppressed") == hidden[cid]
    assert browser.errors() == []
    assert browser.non_local() == []


@pytest.mark.parametrize("which", ["demo", "monthly"])
def test_method_page_links_every_manifest(browser, demo, series, which):
    """One link per published period, each to that release's own manifest, word for word."""
    if which == "demo":
        site, releases = demo["site"], [demo["rel"]]
    else:
        site, releases = series["monthly_site"], series["monthly"]
    browser.load((site / "method.html").as_uri(), ready=None)
    assert browser.errors() == []
    links = browser.js(
        "return [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'));"
    )
    manifests = sorted({h for h in links if h.endswith(".manifest.json")})
    assert len(manifests) == len(releases)
    for href, rel in zip(manifests, releases, strict=True):  # file names sort by period
        assert href.startswith("downloads/manifests/")
        written = json.loads((site / href).read_text(encoding="utf-8"))
        assert written == json.loads(json.dumps(rel.manifest))
    text = browser.js("return document.body.innerText;")
    eps = releases[0].manifest["privacy"]["epsilon"]
    assert f"{eps:g}" in text and "index.html" in links
    assert browser.non_local() == []
    # and the map page links the method page
    _open(browser, site)
    assert browser.js("return !!document.querySelector('a[href=\"method.html\"]');")


def test_phone_width_and_keyboard_focus(browser, series):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    site = series["panel_site"]
    try:
        browser.viewport(375, 740, mobile=True)
        _open(browser, site)
        # a phone's browser widens the layout viewport to fit wide content (innerWidth
        # grows), so the page is compared with the device's 375 px, not with innerWidth
        over = browser.js(
            "return [document.documentElement.scrollWidth, document.body.scrollWidth,"
            " window.innerWidth];"
        )
        assert max(over) <= 375, f"horizontal overflow at 375 px: {over}"
    finally:
        browser.viewport(1200, 900)
    _open(browser, site)
    browser.js("document.activeElement && document.activeElement.blur(); window.focus();")
    reached = []
    for _ in range(80):
        ActionChains(browser.driver).send_keys(Keys.TAB).perform()
        reached.append(browser.js("return document.activeElement.id || '';"))
    wanted = {
        "stat-select",
        "period-slider",
        "around-radius",
        "around-lat",
        "around-lng",
        "around-go",
        "table-search",
        "csv-download",
    }
    assert wanted <= set(reached), f"not reached by Tab: {sorted(wanted - set(reached))}"
    assert browser.non_local() == []
