#!/usr/bin/env python
"""The README's screenshot of the public website: publish the demo, screenshot it headless.

Run from the repository root (needs Debian's chromium + chromium-driver and selenium)::

    PYTHONPATH=src .venv/bin/python benchmarks/site_screenshot.py            # docs/img/site.png

It releases the demo (as ``dpmap demo``: 200,000 SYNTHETIC debtors in Hebei, H3 resolution
6, ε = 1), publishes it with ``dpmap.publish`` into a temporary folder, opens it from
``file://`` in headless Chromium (network blocked, as in the browser tests), asks "around
here" at the busiest published cell with the 5 km radius, and saves a screenshot 1280 px wide,
from the top of the page to the end of the around answer.
Nothing in it is real data.
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import tempfile
from pathlib import Path

import dpmap
from dpmap.demo import hebei_region, synthetic_debtors

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from browser import SiteBrowser  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "site.png")
    args = parser.parse_args()
    rel = dpmap.release(
        synthetic_debtors(200_000, seed=0),
        region=hebei_region(),
        resolution=6,
        epsilon=1.0,
        person="debtor_id",
        value="amount",
        bounds=(0, 50_000),
        title="Synthetic debtors in Hebei (dpmap demo)",
    )
    cells = rel.cells[~rel.cells["suppressed"].astype(bool)].sort_values("count")
    import h3

    lat, lng = h3.cell_to_latlng(cells["cell"].iloc[-1])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        site = dpmap.publish(
            [rel],
            work / "site",
            title="Household debt in Hebei (synthetic demo)",
            noun="debtors",
            include_unbiased=True,
        )
        (work / "profile").mkdir()
        (work / "downloads").mkdir()
        browser = SiteBrowser(work / "profile", work / "downloads", width=1280, height=800)
        try:
            browser.load((Path(site) / "index.html").as_uri())
            browser.js(
                "const r = document.getElementById('around-radius'); r.value = '5000';"
                "r.dispatchEvent(new Event('change', {bubbles: true}));"
                "const lat = document.getElementById('around-lat');"
                "const lng = document.getElementById('around-lng');"
                "lat.value = arguments[0]; lng.value = arguments[1];"
                "document.getElementById('around-go').click();",
                f"{lat:.5f}",
                f"{lng:.5f}",
            )
            browser.js(
                "const m = window.dpmapSite.map;"
                "m.setView([arguments[0], arguments[1]], m.getZoom() + 2, {animate: false});",
                lat,
                lng,
            )
            browser.frames(3)
            # the page from its top to the end of the around answer
            bottom = browser.js(
                "return document.getElementById('around-answer').getBoundingClientRect().bottom"
                " + window.scrollY + 12;"
            )
            png = browser.cdp(
                "Page.captureScreenshot",
                format="png",
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": 1280, "height": bottom, "scale": 1},
            )["data"]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            # 256 colours: the page has few (flat fills, grey hatch, text), a third the bytes
            from PIL import Image

            image = Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB")
            image.quantize(colors=256).save(args.out, optimize=True)
            away = browser.non_local()
        finally:
            browser.close()
    if away:
        raise SystemExit(f"the site made network requests: {away}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
