"""The website's "around here" arithmetic (assets/geo.js) run in Node.js, against Python:
the geodesic disk against pyproj, and whole answers against ``rel.around`` at many points
(the same cells, totals, margins and sentence; the same refusals).

Needs the ``node`` program (Node.js ≥ 16); the real-browser tests run the same code in
Chromium. Everything compared is deterministic: exact equality, except the disk's
vertices (Vincenty's direct formula against pyproj's Karney algorithm: both within 0.1 mm
of the true geodesic, so within 1e-8° of each other) and the coverage (the vertices are
rounded to the site's grid, ``unit`` degrees: the edge of the released area moves by at
most half a unit, 1e-5 of a circle's area at the worst case seen, 5 km at resolution 7).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Geod

import dpmap
from common import skip_or_fail
from dpmap.site.data import site_data
from dpmap.site.layers import SiteLayer, SitePeriod

NODE = shutil.which("node")
if NODE is None:  # .ci/run installs Node.js: a skip there would hide the site's own arithmetic
    skip_or_fail("needs Node.js (node) to run the site's JS (apt-get install nodejs)", module=True)
GEO_JS = Path(dpmap.__file__).parent / "site" / "assets" / "geo.js"
REGION = shapely.box(116.0, 39.0, 116.3, 39.2)

_HARNESS = """
const fs = require("fs");
const G = require(process.argv[2]);
const job = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
(async () => {
  let out;
  if (job.disk) {
    out = job.disk.map(([lat, lng, r]) => G.disk(lat, lng, r));
  } else {
    const D = job.site, L = D.layers[0];
    await G.prepare(L, job.period);
    const src = G.aroundSource(D, L, job.period, G.decodeShapes(L));
    out = job.points.map(([lat, lng, r]) => G.around(src, lat, lng, r));
  }
  process.stdout.write(JSON.stringify(out));
})();
"""


def _node(tmp_path: Path, job: dict[str, Any]) -> Any:
    harness, data = tmp_path / "harness.js", tmp_path / "job.json"
    harness.write_text(_HARNESS, encoding="utf-8")
    data.write_text(json.dumps(job), encoding="utf-8")
    assert NODE is not None
    done = subprocess.run(
        [NODE, str(harness), str(GEO_JS), str(data)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_disk_is_pyprojs_geodesic_64_gon(tmp_path: Path) -> None:
    cases = [
        (39.1, 116.2, 500.0),
        (-33.9, 151.2, 5000.0),
        (64.1, -21.9, 2000.0),
        (0.0, 0.0, 1000.0),
    ]
    rings = _node(tmp_path, {"disk": cases})
    geod = Geod(ellps="WGS84")
    for (lat, lng, r), ring in zip(cases, rings, strict=True):
        az = np.linspace(0.0, 360.0, 64, endpoint=False)
        lons, lats, _ = geod.fwd(
            np.full(64, lng), np.full(64, lat), az, np.full(64, r / math.cos(math.pi / 64))
        )
        got = np.asarray(ring)
        assert got.shape == (64, 2)
        assert np.abs(got[:, 0] - lons).max() < 1e-8
        assert np.abs(got[:, 1] - lats).max() < 1e-8


def _points(dense: int, sparse: int, seed: int) -> pd.DataFrame:
    """Many points in the west half (few cells suppressed), few in the east (most are)."""
    rng = np.random.default_rng(seed)
    n = dense + sparse
    return pd.DataFrame(
        {
            "lat": rng.uniform(39.005, 39.195, n),
            "lng": np.r_[rng.uniform(116.005, 116.15, dense), rng.uniform(116.15, 116.295, sparse)],
            "amount": rng.integers(0, 101, n),
        }
    )


def _python(rel: dpmap.Release, lat: float, lng: float, r: float) -> dict[str, Any]:
    try:
        return dict(rel.around(lat, lng, r, noun="debtors").as_dict())
    except dpmap.SpecError as e:
        return {"error": str(e)}


@pytest.mark.parametrize("unbiased", [False, True])
def test_around_in_js_is_rel_around(tmp_path: Path, unbiased: bool) -> None:
    """At 150 points (inside, at the edge and outside the region; every radius) the JS
    answer equals rel.around's: cells, totals and margins exactly, the same sentence or the
    same refusal. Without the unbiased estimates the suppressed cells make it refuse.

    Which cells are suppressed is random, so the floors on each kind of answer must hold
    for every draw: 30,000 west points (about 46 per cell) against the threshold 14 (count
    scale 2) leave about 42 of the 150 points answerable without the unbiased values, and
    losing 23 of them is bounded by a Chernoff bound over the cells' independent
    suppressions (their exact chances, weighted by how many of those points each cell
    touches) at 5e-35. With 15,000 the cells sat near the threshold (≈ 35 answerable,
    sd 2.7, 4 in 1e6 simulated draws gave 21): answers < 20 had a chance of about 1e-6."""
    rel = dpmap.release(
        _points(30000, 1000, 11),
        region=REGION,
        resolution=8,
        epsilon=1.0,
        value="amount",
        bounds=(0, 100),
    )
    public = rel if unbiased else dpmap.Release(rel.cells, rel.manifest)
    layer = SiteLayer("c", "C", "cells", (SitePeriod(None, rel),), unbiased=unbiased)
    site = site_data([layer], title="T", noun="debtors", tiles=None)
    rng = np.random.default_rng(3)
    pts = [
        [float(rng.uniform(38.99, 39.21)), float(rng.uniform(115.99, 116.31)), float(r)]
        for r in rng.choice([50, 500, 1000, 2000, 5000], 150)  # 50 m: often one cell
    ]
    got = _node(tmp_path, {"site": site, "period": 0, "points": pts})
    kinds = {"answer": 0, "outside": 0, "hidden": 0, "one cell": 0}
    for (lat, lng, r), js in zip(pts, got, strict=True):
        py = _python(public, lat, lng, r)
        if "error" in py:
            assert js == {"error": py["error"]}, (lat, lng, r)
            kinds["hidden" if "cannot answer" in py["error"] else "outside"] += 1
            continue
        kinds["answer"] += 1
        kinds["one cell"] += len(py["cells"]) == 1
        assert js["cells"] == py["cells"], (lat, lng, r)
        for key in ("count", "count_moe", "sum", "sum_moe"):
            assert js[key] == py[key], (key, lat, lng, r)
        assert js["area_km2"] == pytest.approx(py["area_km2"], rel=1e-6)
        assert js["coverage"] == pytest.approx(py["coverage"], abs=1e-5)
        assert js["text"] == py["statement"]
    assert kinds["answer"] >= 20 and kinds["outside"] >= 5 and kinds["one cell"] >= 3
    assert (kinds["hidden"] >= 5) is not unbiased


def test_around_in_js_follows_the_period(tmp_path: Path) -> None:
    """Period 2 of a layer releases only the east half: its answers are those of that
    period's release (a west point is outside it), not of the union of cells."""
    pts = _points(15000, 15000, 12)
    full = dpmap.release(pts, region=REGION, resolution=8, epsilon=1.0)
    east = shapely.box(116.15, 39.0, 116.3, 39.2)
    half = dpmap.release(pts, region=east, resolution=8, epsilon=1.0)
    periods = (SitePeriod("2026-01", full), SitePeriod("2026-02", half))
    site = site_data(
        [SiteLayer("c", "C", "cells", periods, unbiased=True)],
        title="T",
        noun="debtors",
        tiles=None,
    )
    rng = np.random.default_rng(4)
    pts_ll = [
        [float(rng.uniform(39.01, 39.19)), float(rng.uniform(116.01, 116.29)), float(r)]
        for r in rng.choice([500, 1000, 2000], 60)
    ]
    for k, rel in enumerate((full, half)):
        got = _node(tmp_path, {"site": site, "period": k, "points": pts_ll})
        outside = 0
        for (lat, lng, r), js in zip(pts_ll, got, strict=True):
            py = _python(rel, lat, lng, r)
            if "error" in py:
                assert js == {"error": py["error"]}
                outside += 1
            else:
                assert (js["cells"], js["count"], js["count_moe"], js["text"]) == (
                    py["cells"],
                    py["count"],
                    py["count_moe"],
                    py["statement"],
                ), (k, lat, lng, r)
        assert (outside >= 15) is (k == 1)


@pytest.mark.parametrize("unbiased", [False, True])
def test_around_in_js_with_categories_is_rel_around(tmp_path: Path, unbiased: bool) -> None:
    """With categories: totals over the categories (margin from the summed variances), one
    line per category (the exact margin for one cell), the same sentence or refusal."""
    pts = _points(20000, 2000, 13)
    pts["creditor"] = np.where(np.arange(len(pts)) % 3 == 0, "bank", "utility")
    rel = dpmap.release(
        pts,
        region=REGION,
        resolution=8,
        epsilon=1.0,
        value="amount",
        bounds=(0, 100),
        category="creditor",
        categories=["bank", "utility"],
    )
    public = rel if unbiased else dpmap.Release(rel.cells, rel.manifest)
    layer = SiteLayer("c", "C", "cells", (SitePeriod(None, rel),), unbiased=unbiased)
    site = site_data([layer], title="T", noun="debtors", tiles=None)
    rng = np.random.default_rng(5)
    pts_ll = [
        [float(rng.uniform(39.0, 39.2)), float(rng.uniform(116.0, 116.3)), float(r)]
        for r in rng.choice([50, 500, 1000, 2000], 80)
    ]
    got = _node(tmp_path, {"site": site, "period": 0, "points": pts_ll})
    answers = one = refused = 0
    for (lat, lng, r), js in zip(pts_ll, got, strict=True):
        py = _python(public, lat, lng, r)
        if "error" in py:
            assert js == {"error": py["error"]}, (lat, lng, r)
            refused += "cannot answer" in py["error"]
            continue
        answers += 1
        one += len(py["cells"]) == 1
        assert (js["cells"], js["count"], js["count_moe"], js["sum"], js["sum_moe"]) == (
            py["cells"],
            py["count"],
            py["count_moe"],
            py["sum"],
            py["sum_moe"],
        ), (lat, lng, r)
        keys = ("category", "count", "count_moe", "sum", "sum_moe")
        assert [[c[k] for k in keys] for c in js["categories"]] == [
            [c[k] for k in keys] for c in py["categories"]
        ]
        assert js["text"] == py["statement"]
    if unbiased:
        assert answers >= 15 and one >= 2
    else:  # the category "other" holds nobody: its rows are hidden everywhere
        assert refused >= 15
