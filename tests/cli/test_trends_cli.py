"""``dpmap series`` and ``dpmap trend`` over release files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely

import dpmap
from common import REGION, region_gdf
from dpmap.cli.app import main


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def monthly(tmp_path: Path) -> list[Path]:
    """Three monthly flat releases (unbiased estimates included) and a zones file."""
    rng = np.random.default_rng(5)
    x0, y0, x1, y1 = REGION.bounds
    files = []
    for m in range(3):
        n = 300 + 100 * m
        pts = pd.DataFrame(
            {
                "pid": [f"p{i}" for i in range(n)],
                "lng": rng.uniform(x0, x1, n),
                "lat": rng.uniform(y0, y1, n),
            }
        )
        rel = dpmap.release(pts, region=region_gdf(), resolution=7, epsilon=1.0, person="pid")
        files.append(rel.to_file(tmp_path / f"2026-0{m + 1}.geojson", include_unbiased=True))
    xm = (x0 + x1) / 2
    zones = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": name},
                "geometry": json.loads(shapely.to_geojson(shapely.box(a, y0, b, y1))),
            }
            for name, a, b in (("west", x0, xm), ("east", xm, x1))
        ],
    }
    (tmp_path / "zones.geojson").write_text(json.dumps(zones))
    return files


def test_series_and_trend_write_tables_with_manifests(
    monthly: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    w = monthly[0].parent
    zones = w / "zones.geojson"
    periods = "2026-01,2026-02,2026-03"
    code, out, err = run(
        capsys, "series", *monthly, "--zones", zones, "--periods", periods, "--out", w / "s.csv"
    )
    assert code == 0, err
    s = pd.read_csv(w / "s.csv")
    assert list(s.columns) == ["name", "period", "count", "count_moe"] and len(s) == 6
    assert s["period"].tolist()[:3] == ["2026-01", "2026-02", "2026-03"]
    meta = json.loads((w / "s.manifest.json").read_text())
    assert meta["dpmap_series"] == 1 and len(meta["releases"]) == 3
    code, out, err = run(capsys, "trend", *monthly, "--zones", zones, "--out", w / "t.csv")
    assert code == 0, err
    t = pd.read_csv(w / "t.csv")
    assert {"name", "slope", "slope_moe", "p_value", "significant"} <= set(t.columns)
    assert "significant at a false-discovery rate of 0.05" in out
    both = dpmap.trend([dpmap.read_release(f) for f in monthly], _zones(zones), "name")
    assert t["slope"].to_numpy() == pytest.approx(both["slope"].to_numpy())
    code, out, err = run(
        capsys, "trend", *monthly, "--out", w / "cells.geojson", "--png", w / "cells.png"
    )
    assert code == 0, err
    assert (w / "cells.png").read_bytes()[:4] == b"\x89PNG"
    assert "Benjamini" in json.loads((w / "cells.manifest.json").read_text())["method"]


def _zones(path: Path) -> object:
    import geopandas as gpd

    return gpd.read_file(path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--periods", "2026-01,2026-02"), "names 2 periods for 3 release files"),
        (("--periods", "2026-03,2026-02,2026-01"), "not in order"),
        (("--fdr", "0.2"), "fdr must be"),
        (("--statistic", "sum"), "no statistic 'sum'"),
        (("--png", "t.pdf"), "must end in .png"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    monthly: list[Path], capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], message: str
) -> None:
    w = monthly[0].parent
    code, _, err = run(capsys, "trend", *monthly, *extra, "--out", w / "t.csv")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (w / "t.csv").exists() and not (w / "t.manifest.json").exists()


def test_series_is_a_csv_and_needs_unbiased_estimates(
    monthly: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = monthly[0].parent
    code, _, err = run(capsys, "series", *monthly, "--out", w / "s.geojson")
    assert code == 2 and "write it as .csv" in err
    plain = [dpmap.read_release(f).to_file(tmp_path / f"plain-{f.name}") for f in monthly]
    code, _, err = run(capsys, "series", *plain, "--out", w / "s.csv")
    assert code == 2 and "--include-unbiased" in err and not (w / "s.csv").exists()
