"""The trend map and the series plot (dpmap.plot_trend, dpmap.plot_series)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

import dpmap
from dpmap.errors import SpecError
from dpmap.maps.trends import MAX_PANELS, NOT_SIGNIFICANT_ALPHA, NOT_SIGNIFICANT_HATCH

pytest.importorskip("matplotlib")
from matplotlib.path import Path as MplPath


def _trend_table(significant: list[bool]) -> gpd.GeoDataFrame:
    n = len(significant)
    t = gpd.GeoDataFrame(
        {
            "name": [f"z{i}" for i in range(n)],
            "slope": np.linspace(-3, 3, n),
            "significant": significant,
        },
        geometry=[shapely.box(i, 0, i + 1, 1) for i in range(n)],
        crs="EPSG:4326",
    )
    t.attrs["method"] = "weighted least squares; Benjamini–Hochberg at 0.05 over 5 rows"
    t.attrs["periods"] = ["2026-01", "2026-06"]
    return t


def test_trend_map_hatches_exactly_the_rows_that_are_not_significant(tmp_path: Path) -> None:
    sig = [True, False, False, True, False]
    fig = dpmap.plot_trend(_trend_table(sig), tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 0
    ax = fig.axes[0]
    hatched = [c for c in ax.collections if c.get_hatch() == NOT_SIGNIFICANT_HATCH]
    plain = [c for c in ax.collections if not c.get_hatch()]
    # one compound path hatches every row that is not significant, each as one closed ring
    assert len(hatched) == 1 and len(hatched[0].get_paths()) == 1
    codes = hatched[0].get_paths()[0].codes
    assert int((codes == MplPath.MOVETO).sum()) == sig.count(False)
    # the fills: significant rows in full colour, the others pale (alpha) under the hatching
    assert [len(c.get_paths()) for c in plain] == [sig.count(True), sig.count(False)]
    assert plain[0].get_alpha() is None and plain[1].get_alpha() == NOT_SIGNIFICANT_ALPHA
    assert "2 of 5 significant" in ax.get_title() and "2026-01 to 2026-06" in ax.get_title()
    assert any("Benjamini" in t.get_text() for t in fig.texts)
    # a diverging scale centred on 0: slopes -3 and 3 sit at its two ends
    norm = plain[0].norm
    assert norm.vmin == -norm.vmax


def test_series_plot_draws_one_panel_per_row_with_its_band(tmp_path: Path) -> None:
    periods = [str(p) for p in pd.period_range("2026-01", periods=4, freq="M")]
    s = pd.DataFrame(
        {
            "name": np.repeat(["a", "b"], 4),
            "period": periods * 2,
            "count": [1.0, 2, 3, 4, 5, 5, 5, 5],
            "count_moe": [2.0] * 8,
        }
    )
    fig = dpmap.plot_series(s, tmp_path / "s.png")
    drawn = [ax for ax in fig.axes if ax.lines]
    assert [ax.get_title() for ax in drawn] == ["a", "b"]
    band = drawn[0].collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(-1.0) and band[:, 1].max() == pytest.approx(6.0)
    many = pd.concat([s.assign(name=f"{k}{i}") for i in range(8) for k in "a"], ignore_index=True)
    fig = dpmap.plot_series(many)
    assert len([ax for ax in fig.axes if ax.lines]) == min(MAX_PANELS, 8)
    assert len([ax for ax in dpmap.plot_series(s, keys=["b"]).axes if ax.lines]) == 1


def test_bad_plot_input_is_one_clear_error(tmp_path: Path) -> None:
    t = _trend_table([True, False])
    with pytest.raises(SpecError, match=r"ending in '\.png'"):
        dpmap.plot_trend(t, tmp_path / "t.pdf")
    with pytest.raises(SpecError, match=r"dpmap\.trend"):
        dpmap.plot_trend(pd.DataFrame({"x": [1]}))
    s = pd.DataFrame({"name": ["a"], "period": ["0"], "count": [1.0], "count_moe": [1.0]})
    with pytest.raises(SpecError, match="no column 'sum'"):
        dpmap.plot_series(s, statistic="sum")
    with pytest.raises(SpecError, match="not in the series"):
        dpmap.plot_series(s, keys=["zz"])
    assert not list(tmp_path.iterdir())
