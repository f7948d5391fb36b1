"""A new design costs one class (one file) and one entry in ``designs.DESIGNS``.

The toy design below is the flat design at the finest resolution with every count doubled
after the noise (post-processing, so still DP), under its own ``kind``. Registered by
monkeypatching ``DESIGNS`` only — no other module is touched — it is planned by ``explain``,
released, written, read back and analysed (roll-up, compare, around) through the protocol,
which shows that nothing outside ``designs/`` tells designs apart.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import geopandas as gpd
import numpy as np
import pytest

import dpmap
import dpmap.designs
from common import REGION, RESOLUTION, cell_centre, cell_polygon, debtors, interior_cells
from dpmap.aggregates import BoundedAggregates
from dpmap.designs.base import Correlation, DesignOptions, Measured, RowsInfo
from dpmap.designs.flat import Flat


class Doubled(Flat):
    """Flat, with every published count and its margin doubled (post-processing)."""

    kind: ClassVar[str] = "doubled"

    @classmethod
    def wants(cls, spec: Any, region: Any, options: DesignOptions) -> bool:
        return super().wants(spec, region, options) and spec.value is None

    def measure(self, aggregates: BoundedAggregates) -> Measured:
        m = super().measure(aggregates)
        e = m.estimates
        doubled = dataclasses.replace(
            e,
            count=2 * np.asarray(e.count),
            count_moe=2 * np.asarray(e.count_moe),
            count_moe975=2 * np.asarray(e.count_moe975),
            count_var=4 * np.asarray(e.count_var),
        )
        return dataclasses.replace(m, estimates=doubled)

    @classmethod
    def recognises(cls, manifest: dict[str, Any]) -> bool:
        return manifest.get("design") == cls.kind

    @classmethod
    def correlation(cls, manifest: dict[str, Any], rows: RowsInfo) -> Correlation:
        flat = super().correlation(manifest, rows)
        return Correlation(exact_moe={s: 2 * v for s, v in flat.exact_moe.items()})


@pytest.fixture
def doubled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dpmap.designs, "DESIGNS", (Doubled, *dpmap.designs.DESIGNS))


PARAMS: dict[str, Any] = dict(region=REGION, resolution=RESOLUTION, epsilon=1.0, person="pid")


def test_a_registered_design_runs_end_to_end(doubled: None, tmp_path: Path) -> None:
    plan = dpmap.explain(**PARAMS)
    assert isinstance(plan.design, Doubled)
    assert "doubled" not in str(plan)  # explain prints what the design says: nothing extra
    rel = dpmap.release(debtors(80, 2, 4), **PARAMS)
    assert rel.manifest["design"] == "doubled"
    noise_moe = plan.plan.statistics["count"].moe95
    shown = ~rel.cells["suppressed"].to_numpy()
    assert shown.any()
    assert rel.cells["count_moe"].to_numpy()[shown] == pytest.approx(2 * noise_moe)
    variance = plan.plan.statistics["count"].variance
    assert rel.estimates["count_var"].to_numpy() == pytest.approx(4 * variance)
    path = rel.to_file(tmp_path / "doubled.geojson", include_unbiased=True)
    back = dpmap.read_release(path)
    assert dpmap.designs.design_of(back.manifest) is Doubled
    (cell,) = interior_cells(1)
    zones = gpd.GeoDataFrame({"name": ["a"]}, geometry=[cell_polygon(cell)], crs="EPSG:4326")
    rolled = back.aggregate_to(zones)
    est = back.estimates.set_index("cell")["count"]
    assert rolled["count"].iloc[0] == pytest.approx(est[cell])
    assert rolled["count_moe"].iloc[0] == pytest.approx(2 * noise_moe)  # the design's margin
    assert len(dpmap.compare(back, back)) == len(back.cells)
    lat, lng = cell_centre(cell)
    near = back.around(lat, lng, 100.0)
    assert near.count_moe == pytest.approx(2 * noise_moe)  # one whole cell: the exact margin


def test_without_registration_the_flat_design_answers(tmp_path: Path) -> None:
    plan = dpmap.explain(**PARAMS)
    assert type(plan.design) is Flat
    rel = dpmap.release(debtors(80, 2, 4), **PARAMS)
    assert rel.manifest["design"] == "flat"


def test_every_design_says_how_its_periods_share_noise() -> None:
    """``period_covariance`` is part of the protocol: every registered design answers it, and
    only the designs that share noise across periods answer with a covariance."""
    sharing = {"time levels", "continual"}
    for design in dpmap.designs.DESIGNS:
        assert callable(getattr(design, "period_covariance", None)), design.__name__
        if design.kind not in sharing:
            assert design.period_covariance({"periods": ["2026-01", "2026-02"]}) is None
