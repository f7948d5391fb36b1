"""``dpmap plot`` with several release files: small multiples (PNG) and a slider map (HTML)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dpmap
from common import REGION, import_or_skip, region_gdf
from dpmap.cli.app import main

import_or_skip("matplotlib")
import_or_skip("folium")
import_or_skip("js_lib_leaflet")


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def monthly(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three monthly flat releases over one region, and one at another resolution."""
    folder = tmp_path_factory.mktemp("monthly")
    rng = np.random.default_rng(11)
    x0, y0, x1, y1 = REGION.bounds
    files = []
    for m, resolution in enumerate((7, 7, 7, 6)):
        n = 300 + 100 * m
        pts = pd.DataFrame(
            {
                "pid": [f"p{i}" for i in range(n)],
                "lng": rng.uniform(x0, x1, n),
                "lat": rng.uniform(y0, y1, n),
            }
        )
        rel = dpmap.release(
            pts, region=region_gdf(), resolution=resolution, epsilon=1.0, person="pid"
        )
        files.append(rel.to_file(folder / f"m{m}-r{resolution}.geojson"))
    return files


def _config(text: str) -> dict[str, object]:
    start = text.index("var cfg = ") + len("var cfg = ")
    config, _ = json.JSONDecoder().raw_decode(text, start)
    return config  # type: ignore[no-any-return]


def test_plot_of_several_releases_writes_small_multiples_and_a_slider_map(
    monthly: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    periods = "2026-01,2026-02,2026-03"
    png, html = tmp_path / "months.png", tmp_path / "months.html"
    code, out, err = run(
        capsys, "plot", *monthly[:3], "--periods", periods, "--png", png, "--html", html
    )
    assert code == 0, err
    assert png.stat().st_size > 0 and f"wrote {png} and {html}" in out
    cfg = _config(html.read_text(encoding="utf-8"))
    per = cfg["periods"]
    assert isinstance(per, dict) and per["labels"] == periods.split(",")
    rels = [dpmap.read_release(f) for f in monthly[:3]]
    features = cfg["data"]["features"]  # type: ignore[index]
    for k, rel in enumerate(rels):
        published = rel.cells.set_index("cell")["count"]
        for f in features:
            value = published.loc[f["properties"]["cell"]]
            got = per["columns"]["count"][k][f["properties"]["i"]]
            assert got == (None if pd.isna(value) else pytest.approx(float(value)))


def test_plot_of_several_releases_refuses_mistakes_and_writes_nothing(
    monthly: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, html = tmp_path / "x.png", tmp_path / "x.html"
    for args, message in [
        ([*monthly[:3], "--periods", "2026-01,2026-02"], "2 periods for 3 release files"),
        ([monthly[0], monthly[3]], "release 1 has resolution"),
        ([monthly[0]] * 13, "at most 12 periods, got 13"),
        ([*monthly[:2], "--column", "nope"], "column 'nope'"),
    ]:
        code, _, err = run(capsys, "plot", *args, "--png", png, "--html", html)
        assert code == 2 and message in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_plot_of_several_categorised_releases_maps_the_total_or_one_category(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As ``dpmap plot`` of one release: the total of every category by default (with a
    note), one category with --category."""
    from dpmap.analysis.tables import category_total_cells

    rng = np.random.default_rng(12)
    x0, y0, x1, y1 = REGION.bounds
    files = []
    for m in range(2):
        n = 400
        pts = pd.DataFrame(
            {
                "pid": [f"p{i}" for i in range(n)],
                "lng": rng.uniform(x0, x1, n),
                "lat": rng.uniform(y0, y1, n),
                "creditor": rng.choice(["bank", "microloan"], n),
            }
        )
        rel = dpmap.release(
            pts,
            region=region_gdf(),
            resolution=7,
            epsilon=1.0,
            person="pid",
            category="creditor",
            categories=["bank", "microloan"],
        )
        files.append(rel.to_file(tmp_path / f"c{m}.geojson"))
    rels = [dpmap.read_release(f) for f in files]
    for extra, expected in [
        ([], [category_total_cells(r) for r in rels]),
        (["--category", "bank"], [r.cells[r.cells["category"] == "bank"] for r in rels]),
    ]:
        html = tmp_path / f"c{len(extra)}.html"
        code, _, err = run(capsys, "plot", *files, *extra, "--html", html)
        assert code == 0, err
        assert ("mapping their total" in err) == (not extra)
        text = html.read_text(encoding="utf-8")
        assert ("total of all categories" in text) == (not extra)
        cfg = _config(text)
        per = cfg["periods"]
        for k, cells in enumerate(expected):
            published = cells.set_index("cell")["count"]
            for f in cfg["data"]["features"]:  # type: ignore[index]
                value = published.loc[f["properties"]["cell"]]
                got = per["columns"]["count"][k][f["properties"]["i"]]  # type: ignore[index]
                assert got == (None if pd.isna(value) else pytest.approx(float(value)))
