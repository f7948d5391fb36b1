"""The interactive HTML map in a real browser: headless Chromium, network blocked.

Chromium is driven over its DevTools protocol through a pipe (``--remote-debugging-pipe``:
NUL-separated JSON on file descriptors 3 and 4), so the test needs nothing but the
standard library and opens no port. The network is blocked for real (all traffic goes
to a closed proxy port, every host name resolves to nothing), and every request the
page makes is recorded from ``Network.requestWillBeSent``: the map must make none but
``file:`` and ``data:`` ones. A page with a base map (``tiles=``) serves as the positive
control that the recording sees network requests.

The screenshot is decoded and must show the hexagons' colours (the YlOrRd fills of the
published cells and the grey of the hatched suppressed cells) in many pixels; the
tooltip text is read back after moving the mouse over a published and a suppressed cell.

Skipped when Chromium is not installed (``apt-get install chromium``) — but failed when the
environment variable ``CI`` is set: ``.ci/run`` installs Chromium, so a skip there is a bug.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Polygon

from common import import_or_skip, skip_or_fail

gpd = import_or_skip("geopandas")
import_or_skip("folium")
import_or_skip("js_lib_leaflet")
mpl_image = import_or_skip("matplotlib.image")

from dpmap.maps.interactive import write_html  # noqa: E402

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
if CHROMIUM is None:
    skip_or_fail(
        "headless Chromium is not installed (apt-get install chromium chromium-driver)",
        module=True,
    )

WIDTH, HEIGHT = 1200, 900
CENTER = h3.latlng_to_cell(52.52, 13.405, 7)
MANIFEST = {
    "privacy": {
        "epsilon": 1.0,
        "delta": 0.0,
        "measure": "max_divergence",
        "statement": "This map satisfies pure ε-differential privacy with ε = 1 for one row.",
    },
    "created": "2026-11-30T09:15:00+00:00",
    "resolution": 7,
    "title": "Synthetic debtors",
}
EVIL = "<script>alert(1)</script>"


def _release(categories: list[str] | None = None) -> gpd.GeoDataFrame:
    """127 cells around Berlin: a peak in the middle, every fifth cell suppressed."""
    rng = np.random.default_rng(3)
    rows = []
    for category in categories or [None]:
        for i, cell in enumerate(sorted(h3.grid_disk(CENTER, 6))):
            distance = h3.grid_distance(CENTER, cell)
            count = round(60 * np.exp(-distance / 2) + rng.laplace(0, 2))
            suppressed = i % 5 == 4 and cell != CENTER
            rows.append(
                {
                    "cell": cell,
                    "resolution": 7,
                    **({"category": category} if category is not None else {}),
                    "count": pd.NA if suppressed else count,
                    "count_moe": np.nan if suppressed else 6.42,
                    "suppressed": suppressed,
                    "geometry": Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(cell)]),
                }
            )
    table = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    table["count"] = table["count"].astype("Int64")
    return table


# ------------------------------------------------------------------ a tiny CDP client


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4)."""

    def __init__(self, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
            # the network, blocked for real: a closed proxy port and no name resolution
            "--proxy-server=127.0.0.1:9",
            "--proxy-bypass-list=<-loopback>",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # bash moves our pipe ends to the fds Chromium expects (3: in, 4: out); the pipes
        # are made in this order, so the write end is never fd 3 (dash can't: fds > 9)
        script = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}'
        self._proc = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", script, str(CHROMIUM), *args],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""

    # -- protocol --
    def call(self, method: str, timeout: float = 15.0, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(deadline)
            if msg is None:
                raise TimeoutError(f"no answer to {method} within {timeout} s")
            if msg.get("id") == self._next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 15.0) -> dict[str, Any]:
        for msg in self.events:
            if msg["method"] == event:
                return msg
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(deadline)
            if msg is None:
                raise TimeoutError(f"no {event} within {timeout} s")
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == event:
                    return msg

    def _read(self, deadline: float) -> dict[str, Any] | None:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                return None
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe (did it crash?)")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)  # type: ignore[no-any-return]

    # -- pages --
    def open_page(self) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable")
        self.call("Network.enable")
        self.call("Runtime.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )

    def load(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        # two animation frames: Leaflet's canvas renderer draws on the next frame
        self.evaluate(
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(1))))"
        )

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> np.ndarray:
        import base64

        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return np.asarray(mpl_image.imread(path))[..., :3]

    def hover(self, x: float, y: float) -> None:
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        self.evaluate("new Promise(r => setTimeout(() => r(1), 50))")

    def requested_urls(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e["method"] == "Network.requestWillBeSent"
        ]

    def close(self) -> None:
        try:
            self.session = ""
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        b.open_page()
        yield b
    finally:
        b.close()


# ------------------------------------------------------------------------- helpers


def _hex_rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=float) / 255.0


def _pixels_near(image: np.ndarray, colours: list[str], tol: float = 3 / 255) -> int:
    """How many pixels are within `tol` (per channel) of one of `colours`."""
    hit = np.zeros(image.shape[:2], dtype=bool)
    for colour in colours:
        hit |= np.all(np.abs(image - _hex_rgb(colour)) <= tol, axis=-1)
    return int(hit.sum())


def _features(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    start = text.index('{"type":"FeatureCollection"')
    data, _ = json.JSONDecoder().raw_decode(text, start)
    return data["features"]  # type: ignore[no-any-return]


def _non_local(urls: list[str]) -> list[str]:
    return [u for u in urls if not u.startswith(("file:", "data:", "about:"))]


# --------------------------------------------------------------------------- tests


def test_offline_map_draws_hexagons_and_makes_no_network_request(browser, tmp_path):
    out = write_html(_release(), MANIFEST, tmp_path / "map.html")
    browser.load(out.as_uri())

    urls = browser.requested_urls()
    assert out.as_uri() in urls  # the recording works: it saw the page itself
    assert _non_local(urls) == []
    failed = [e for e in browser.events if e["method"] == "Network.loadingFailed"]
    assert failed == []
    errors = [
        e
        for e in browser.events
        if e["method"] == "Runtime.exceptionThrown"
        or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
    ]
    assert errors == []

    image = browser.screenshot(tmp_path / "map.png")
    assert image.shape[:2] == (HEIGHT, WIDTH)
    features = _features(out)
    fills = sorted({f["properties"]["fill"] for f in features if "fill" in f["properties"]})
    # the hexagons cover a good part of the map: many pixels of the published colours ...
    assert _pixels_near(image, fills) > 20_000
    # ... the darkest colour of the peak, and the grey of the hatched suppressed cells
    assert _pixels_near(image, [max(fills, key=lambda c: -_hex_rgb(c).sum())]) > 50
    assert _pixels_near(image, ["#e3e3e3"]) > 2_000
    assert _pixels_near(image, ["#8c8c8c"], tol=40 / 255) > 500  # the hatch lines

    drawn = browser.evaluate(
        "(() => { let n = 0; document.querySelectorAll('.leaflet-overlay-pane canvas')"
        ".forEach(c => n += 1); return n; })()"
    )
    assert drawn == 1
    texts = browser.evaluate("document.querySelector('.dpmap-caption').innerText")
    assert "ε = 1, δ = 0 · H3 resolution 7 · 2026-11-30" in texts
    assert "This map satisfies pure ε-differential privacy" in texts
    assert browser.evaluate("document.querySelector('.dpmap-statement').open") is True
    legend = browser.evaluate("document.querySelector('.dpmap-legend').innerText")
    assert "suppressed (noisy count below threshold)" in legend


def test_tooltips_show_value_with_margin_or_suppressed(browser, tmp_path):
    table = _release()
    out = write_html(table, MANIFEST, tmp_path / "map.html")
    browser.load(out.as_uri())
    centre_count = int(table.loc[table["cell"] == CENTER, "count"].iloc[0])
    suppressed_cell = table.loc[table["suppressed"], "cell"].iloc[0]

    def tooltip_at(cell: str) -> str:
        lat, lng = h3.cell_to_latlng(cell)
        x, y = browser.evaluate(
            "(() => { const m = Object.values(window).find(v => v instanceof L.Map);"
            f" const p = m.latLngToContainerPoint([{lat}, {lng}]); return [p.x, p.y]; }})()"
        )
        browser.hover(x, y)
        return str(
            browser.evaluate(
                "(document.querySelector('.dpmap-tooltip') || {innerText: ''}).innerText"
            )
        )

    assert f"count: {centre_count} ± 6.4\n" in tooltip_at(CENTER)
    assert CENTER in tooltip_at(CENTER)
    text = tooltip_at(suppressed_cell)
    assert "suppressed (noisy count below threshold)" in text
    assert suppressed_cell in text


def test_escaped_category_runs_no_script(browser, tmp_path):
    table = _release(categories=[EVIL, "rent"])
    out = write_html(table, {**MANIFEST, "title": EVIL}, tmp_path / "map.html", category=EVIL)
    browser.load(out.as_uri())
    assert not [e for e in browser.events if e["method"] == "Page.javascriptDialogOpening"]
    title = browser.evaluate("document.querySelector('.dpmap-title').innerText")
    assert EVIL in title  # shown as text, not run
    assert browser.evaluate("document.title") == f"{EVIL} — {EVIL}"  # title — category


def test_recording_sees_requests_of_a_map_with_tiles(browser, tmp_path):
    """Positive control: a base map's tile requests are seen (and blocked)."""
    out = write_html(_release(), MANIFEST, tmp_path / "tiles.html", tiles="OpenStreetMap")
    browser.load(out.as_uri())
    browser.evaluate("new Promise(r => setTimeout(() => r(1), 300))")
    urls = _non_local(browser.requested_urls())
    assert urls and all(u.startswith("https://") and "openstreetmap" in u for u in urls)
    # and the network is really blocked: no tile got an answer
    answered = [
        e["params"]["response"]["url"]
        for e in browser.events
        if e["method"] == "Network.responseReceived"
    ]
    assert _non_local(answered) == []


def test_period_slider_switches_the_shown_period(browser, tmp_path):
    """The slider map (dpmap.explore_periods): offline, no script error; moving the slider
    relabels it, recolours the hexagons with that period's colours (read from the embedded
    data) and the tooltip shows that period's value ± margin and its label."""
    from dpmap import explore_periods
    from dpmap.releases import Release

    base = _release()
    labels = ["2026-01", "2026-02", "2026-03"]
    rels = []
    for k, label in enumerate(labels):
        table = base.copy()
        table["count"] = table["count"] * (k + 1)
        rels.append(Release(table, {**MANIFEST, "period": label}))
    out = tmp_path / "slider.html"
    explore_periods(rels, path=out)
    browser.load(out.as_uri())
    assert _non_local(browser.requested_urls()) == []
    assert not [e for e in browser.events if e["method"] == "Runtime.exceptionThrown"]
    text = out.read_text(encoding="utf-8")
    start = text.index("var cfg = ") + len("var cfg = ")
    cfg, _ = json.JSONDecoder().raw_decode(text, start)
    centre = next(f for f in cfg["data"]["features"] if f["properties"]["cell"] == CENTER)
    i = centre["properties"]["i"]
    count0 = int(base.loc[base["cell"] == CENTER, "count"].iloc[0])

    def state() -> tuple[str, str, str]:
        lat, lng = h3.cell_to_latlng(CENTER)
        x, y = browser.evaluate(
            "(() => { const m = Object.values(window).find(v => v instanceof L.Map);"
            f" const p = m.latLngToContainerPoint([{lat}, {lng}]); return [p.x, p.y]; }})()"
        )
        browser.hover(5, HEIGHT / 2)  # off the hexagons, so the tooltip opens anew
        browser.hover(x, y)
        tip = browser.evaluate("document.querySelector('.dpmap-tooltip').innerText")
        label = browser.evaluate("document.querySelector('.dpmap-period-label').textContent")
        fill = browser.evaluate(
            "(() => { let c = null; Object.values(window).find(v => v instanceof L.Map)"
            ".eachLayer(l => { if (l.feature && l.feature.properties.cell === "
            f"{json.dumps(CENTER)}) c = l.options.fillColor; }}); return c; }})()"
        )
        return str(tip), str(label), str(fill)

    tip, label, fill = state()
    assert label == "2026-01" and fill == cfg["periods"]["fill"][0][i]
    assert f"count: {count0} ± 6.4\n" in tip and "period 2026-01" in tip
    browser.evaluate(
        "(() => { const s = document.querySelector('.dpmap-period-slider'); s.value = 2;"
        " s.dispatchEvent(new Event('input')); return 1; })()"
    )
    tip, label, fill = state()
    assert label == "2026-03" and fill == cfg["periods"]["fill"][2][i]
    assert fill != cfg["periods"]["fill"][0][i]
    assert f"count: {3 * count0} ± 6.4\n" in tip and "period 2026-03" in tip
    image = browser.screenshot(tmp_path / "slider.png")
    shown = {c for c in cfg["periods"]["fill"][2] if c} - {c for c in cfg["periods"]["fill"][0]}
    assert _pixels_near(image, sorted(shown)) > 2_000  # period 2026-03's own colours drawn
