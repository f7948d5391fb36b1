"""Release files written before the redesign (format 1, no ``design`` entry) still read, name
their design, and give the same analyses.

``tests/data/format1-*.geojson`` were written by dpmap at commit eca9567 (before the
package was reorganised into designs) from synthetic debtors, one file per design, with the
unbiased estimates; ``format1-analyses.json`` holds what that version computed from them: a
roll-up to one zone and "around" one point. The current code must read the same files and
compute the same numbers (to floating-point rounding).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import shapely

import dpmap
from dpmap.designs import design_of

DATA = Path(__file__).resolve().parents[1] / "data"
KINDS = ["flat", "hierarchical", "privtree", "grid", "discovery"]
EXPECTED: dict[str, Any] = json.loads((DATA / "format1-analyses.json").read_text())


@pytest.mark.parametrize("kind", KINDS)
def test_a_format1_file_reads_and_analyses_as_before(kind: str) -> None:
    rel = dpmap.read_release(DATA / f"format1-{kind}.geojson")
    assert "design" not in rel.manifest  # written before the entry existed
    assert design_of(rel.manifest).kind == kind
    zone = gpd.GeoDataFrame(
        {"name": ["z"]}, geometry=[shapely.box(116.02, 39.01, 116.09, 39.06)], crs="EPSG:4326"
    )
    rolled = rel.aggregate_to(zone)
    for column, value in EXPECTED[kind]["rollup"].items():
        assert float(rolled[column].iloc[0]) == pytest.approx(
            value, rel=1e-9, abs=1e-9, nan_ok=True
        ), column
    expected = EXPECTED[kind]["around"]
    if "error" in expected:
        with pytest.raises(dpmap.SpecError) as info:
            rel.around(39.04, 116.05, 1500.0)
        assert str(info.value) == expected["error"]
    else:
        near = rel.around(39.04, 116.05, 1500.0)
        assert near.count == pytest.approx(expected["count"], rel=1e-9, abs=1e-9)
        assert near.count_moe == pytest.approx(expected["count_moe"], rel=1e-9)
        assert len(near.cells) == expected["cells"]
