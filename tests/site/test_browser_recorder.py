"""The browser harness itself (:mod:`browser`): it sees what a page requests, and the network
is really blocked — the positive controls behind every "no request left file:" assertion
of the website's browser tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from browser import SiteBrowser, pixels_near, require_browser

require_browser()

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<script src="https://cdn.example.org/leaflet.js"></script></head><body>
<img src="http://tiles.example.net/1/2/3.png">
<canvas id="c" width="200" height="100"></canvas>
<script>
const g = document.getElementById('c').getContext('2d');
g.fillStyle = '#1f77b4'; g.fillRect(0, 0, 200, 100);
fetch('data:text/plain,local').then(r => r.text()).then(t => { window.local = t; });
window.dpmapSite = {ready: new Promise(r => setTimeout(r, 20))};
function download() {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob(['id,count\\nx,1\\n'], {type: 'text/csv'}));
  a.download = 't.csv'; document.body.appendChild(a); a.click();
}
</script></body></html>"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    b = SiteBrowser(tmp_path_factory.mktemp("profile"), tmp_path_factory.mktemp("downloads"))
    try:
        yield b
    finally:
        b.close()


def test_recorder_sees_network_requests_and_they_fail(browser, tmp_path):
    page = tmp_path / "page.html"
    page.write_text(PAGE, encoding="utf-8")
    browser.load(page.as_uri())
    assert page.as_uri() in browser.requested_urls()
    away = sorted(browser.non_local())
    assert away == ["http://tiles.example.net/1/2/3.png", "https://cdn.example.org/leaflet.js"]
    # blocked for real: no answer came back, and the browser says why
    answered = [
        e["params"]["response"]["url"]
        for e in browser.events
        if e["method"] == "Network.responseReceived"
    ]
    assert not [u for u in answered if u.startswith("http")]
    errors = " ".join(browser.errors())
    assert "cdn.example.org" in errors and "tiles.example.net" in errors
    # local schemes are allowed; the canvas was drawn; a blob download lands in the folder
    assert browser.js("return window.local;") == "local"
    assert pixels_near(browser.screenshot(), ["#1f77b4"]) == 200 * 100
    browser.js("download();")
    assert browser.wait_download("t.csv").read_text() == "id,count\nx,1\n"
    assert [u for u in browser.non_local() if "example" not in u] == []


def test_a_page_without_requests_passes(browser, tmp_path):
    page = tmp_path / "quiet.html"
    page.write_text("<p>quiet</p><script>window.dpmapSite = {ready: 1};</script>")
    browser.load(page.as_uri())
    assert browser.non_local() == [] and browser.errors() == []
    assert Path(browser.downloads).is_dir()
