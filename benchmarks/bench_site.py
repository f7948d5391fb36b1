#!/usr/bin/env python
"""Benchmark: the public website (``dpmap.publish``) at 10 k, 100 k and 500 k cells — page
weight and the browser's time to first paint — against today's offline folium map.

Run from the repository root (needs Debian's chromium + chromium-driver and selenium, the
``test`` extra)::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_site.py
    PYTHONPATH=src .venv/bin/python benchmarks/bench_site.py --cells 10000 --loads 5 --cap 60

A measurement script, not a test: it prints a table and asserts nothing. For each size it
builds a synthetic release at H3 resolution 8 over a box in northern China sized to about
that many cells (clustered synthetic points, each its own person; a flat design with the
default suppression, so most cells are hatched and some published), then, in this one run:

``site``
    ``dpmap.publish([rel], out)``: the time to write it, its bytes on disk (all files, and
    ``data/site-data.js`` alone), and, loaded ``--loads`` times from ``file://`` in headless
    Chromium (network blocked, as in the browser tests), the median time from navigation
    start to ``first-contentful-paint`` and to the page's ``dpmap-first-draw`` mark (the
    first frame of the map drawn).
``baseline``
    ``rel.to_html(path)`` (the folium/Leaflet map of the same release: one GeoJSON feature
    per cell, drawn by Leaflet on a canvas): the time to write it (in a forked child, stopped after ``--cap``
    seconds: reported as "did not finish in N s"), its bytes, and loaded the same way, the
    median time to ``first-contentful-paint`` and to the map drawn (the load event, then two
    animation frames: Leaflet draws on load), with a page-load time cap of ``--cap`` s.

The machine is shared: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pandas as pd
import shapely

import dpmap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import SiteBrowser

RESOLUTION = 8
#: centre of the synthetic region (lat, lng): the North China Plain
CENTRE = (38.5, 116.0)


def region_for(cells: int) -> Any:
    """A lon/lat box of about ``cells`` resolution-8 cells around ``CENTRE``."""
    lat = CENTRE[0]
    area = cells * h3.cell_area(h3.latlng_to_cell(*CENTRE, RESOLUTION), unit="km^2")
    side = math.sqrt(area)
    dlat = side / 110.57
    dlng = side / (111.32 * math.cos(math.radians(lat)))
    return shapely.box(CENTRE[1] - dlng / 2, lat - dlat / 2, CENTRE[1] + dlng / 2, lat + dlat / 2)


def synthetic_release(cells: int, seed: int = 0) -> dpmap.Release:
    """Clustered points (3 per cell on average, around 400 towns) over the box; ε = 1."""
    region = region_for(cells)
    x0, y0, x1, y1 = region.bounds
    rng = np.random.default_rng(seed)
    towns = np.column_stack([rng.uniform(y0, y1, 400), rng.uniform(x0, x1, 400)])
    n = 3 * cells
    which = rng.integers(0, len(towns), n)
    spread = rng.uniform(0.004, 0.03, len(towns))[which]
    lat = np.clip(towns[which, 0] + rng.normal(0, 1, n) * spread, y0 + 1e-4, y1 - 1e-4)
    lng = np.clip(towns[which, 1] + rng.normal(0, 1, n) * spread, x0 + 1e-4, x1 - 1e-4)
    points = pd.DataFrame({"lat": lat, "lng": lng, "amount": rng.integers(0, 10_001, n)})
    return dpmap.release(
        points,
        region=region,
        resolution=RESOLUTION,
        epsilon=1.0,
        value="amount",
        bounds=(0, 10_000),
        title=f"Synthetic benchmark, {cells:,} cells",
    )


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _write_html(rel: dpmap.Release, path: Path) -> None:
    rel.to_html(path)


def baseline_html(rel: dpmap.Release, path: Path, cap: float) -> float | None:
    """Seconds to write ``rel.to_html(path)``, or None when it did not finish in ``cap`` s."""
    child = multiprocessing.get_context("fork").Process(target=_write_html, args=(rel, path))
    start = time.perf_counter()
    child.start()
    child.join(cap)
    if child.is_alive():
        child.kill()
        child.join()
        return None
    return time.perf_counter() - start if child.exitcode == 0 and path.exists() else None


def load_times(browser: SiteBrowser, url: str, loads: int, *, site: bool, cap: float) -> Any:
    """Median ms to first-contentful-paint and to the map drawn, or None on timeout."""
    from selenium.common.exceptions import TimeoutException

    browser.driver.set_page_load_timeout(cap)
    fcp, drawn = [], []
    for _ in range(loads):
        browser.driver.get("about:blank")
        browser.forget()
        try:
            browser.driver.get(url)
            if site:
                browser.run_async("window.dpmapSite.ready.then(() => done(1));")
                when = "performance.getEntriesByName('dpmap-first-draw')[0].startTime"
            else:
                browser.frames(2)
                when = "performance.now()"
        except TimeoutException:
            return None
        drawn.append(browser.js(f"return {when};"))
        fcp.append(
            browser.js(
                "const e = performance.getEntriesByName('first-contentful-paint')[0];"
                "return e ? e.startTime : null;"
            )
        )
    ok = [f for f in fcp if f is not None]
    return (statistics.median(ok) if ok else math.nan), statistics.median(drawn)


def _ms(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.0f} ms"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def measure(cells: int, browser: SiteBrowser, work: Path, loads: int, cap: float) -> list[str]:
    t = time.perf_counter()
    rel = synthetic_release(cells)
    built = time.perf_counter() - t
    n = len(rel.cells)
    hidden = int(rel.cells["suppressed"].sum())
    t = time.perf_counter()
    site = Path(dpmap.publish([rel], work / f"site-{cells}", title=f"{n:,} cells"))
    publish_s = time.perf_counter() - t
    site_times = load_times(browser, (site / "index.html").as_uri(), loads, site=True, cap=cap)
    html = work / f"folium-{cells}.html"
    html_s = baseline_html(rel, html, cap)
    if html_s is None:
        base = [f"did not finish in {cap:g} s", "—", "—", "—"]
    else:
        times = load_times(browser, html.as_uri(), loads, site=False, cap=cap)
        base = [f"{html_s:.1f} s", _mb(html.stat().st_size)] + (
            [f"did not load in {cap:g} s", "—"] if times is None else [_ms(t) for t in times]
        )
    if browser.non_local():
        raise SystemExit(f"a page made network requests: {browser.non_local()}")
    print(f"  {n:,} cells ({hidden:,} suppressed), release built in {built:.1f} s", flush=True)
    return [
        f"{n:,}",
        f"{publish_s:.1f} s",
        _mb(folder_bytes(site)),
        _mb((site / "data" / "site-data.js").stat().st_size),
        *(["did not load", "—"] if site_times is None else [_ms(t) for t in site_times]),
        *base,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000, 500_000])
    parser.add_argument("--loads", type=int, default=3, help="page loads per figure (median)")
    parser.add_argument("--cap", type=float, default=120.0, help="time cap of the baseline, s")
    args = parser.parse_args()
    head = [
        "cells",
        "publish",
        "site on disk",
        "site-data.js",
        "site: first paint",
        "site: map drawn",
        "folium: write",
        "folium: on disk",
        "folium: first paint",
        "folium: map drawn",
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "profile").mkdir()
        (work / "downloads").mkdir()
        browser = SiteBrowser(work / "profile", work / "downloads")
        try:
            for cells in args.cells:
                print(f"{cells:,} cells …", flush=True)
                rows.append(measure(cells, browser, work, args.loads, args.cap))
        finally:
            browser.close()
    print(f"\nload average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"median of {args.loads} loads; headless Chromium, file://, network blocked\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
