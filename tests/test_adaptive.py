"""Adaptive (PrivTree) releases: exact accounting, a partition of the region, refinement."""

from __future__ import annotations

import math

import h3
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

import dpmap
from dpmap.adaptive import BETA, plan_adaptive, record_epsilon
from dpmap.spec import ReleaseSpec

REGION = box(116.0, 39.0, 116.8, 39.6)


def _points(n_dense: int = 4000, seed: int = 0) -> pd.DataFrame:
    """A dense cluster (about 1 km across) and a thin scatter over the region."""
    rng = np.random.default_rng(seed)
    lat = np.concatenate([rng.normal(39.3, 0.004, n_dense), rng.uniform(39.01, 39.59, 300)])
    lng = np.concatenate([rng.normal(116.4, 0.004, n_dense), rng.uniform(116.01, 116.79, 300)])
    return pd.DataFrame(
        {
            "pid": np.arange(len(lat)),
            "lat": lat,
            "lng": lng,
            "amount": rng.uniform(0, 100, len(lat)),
        }
    )


@pytest.mark.parametrize(
    "l0,linf,eps,share", [(1, 1, 1.0, 0.5), (2, 3, 0.5, 0.3), (1, 1, 2.0, 0.7)]
)
def test_adaptive_accounting_is_exact(l0: int, linf: int, eps: float, share: float) -> None:
    spec = ReleaseSpec(
        resolution=8,
        epsilon=eps,
        person="p",
        max_cells=l0,
        max_records_per_cell=linf,
        value="a",
        bounds=(0, 10),
        count_share=0.6,
    )
    plan = plan_adaptive(spec, root=None, tree_share=share)
    k = l0 * linf
    # the tree's ε per person, by the bound of docs/adaptive-privacy.md, is the tree budget
    lam = plan.lam
    per_record = (1 / lam) * (1 + math.exp(1 / lam) * BETA / (BETA - 1))
    assert k * per_record <= share * eps
    assert k * per_record == pytest.approx(share * eps, rel=1e-6)  # and λ is no larger than needed
    assert record_epsilon(lam) >= per_record
    assert lam > (2 * BETA - 1) / (BETA - 1) * k / (share * eps)  # above the continuous bound
    assert plan.bias == math.ceil(plan.lam * math.log(BETA))
    assert plan.tree_epsilon == pytest.approx(share * eps)
    leaves = (1 - share) * eps
    assert plan.epsilons["count"] == pytest.approx(0.6 * leaves, rel=1e-9)
    assert plan.epsilons["sum"] == pytest.approx(0.4 * leaves, rel=1e-9)
    assert plan.scales["count"] == pytest.approx(k / (0.6 * leaves), rel=1e-9)
    assert plan.scales["sum"] == pytest.approx(10 * k / (0.4 * leaves), rel=1e-9)
    assert plan.epsilon <= eps and plan.epsilon == pytest.approx(eps, rel=1e-9)
    assert plan.root == 4


def test_adaptive_release_partitions_the_region_and_refines_dense_areas() -> None:
    rel = dpmap.release(
        _points(),
        region=REGION,
        resolution=8,
        epsilon=1.0,
        adaptive=True,
        person="pid",
        value="amount",
        bounds=(0, 100),
        suppress_below=False,
    )
    cells = rel.cells
    m = rel.manifest
    assert m["privacy"]["epsilon"] == pytest.approx(1.0)
    assert m["adaptive"]["root_resolution"] == 4 and m["adaptive"]["finest_resolution"] == 8
    assert cells["resolution"].between(4, 8).all()
    # every public finest cell lies under exactly one leaf (the leaves partition the tree)
    shape = h3.geo_to_h3shape(REGION.__geo_interface__)
    finest = h3.h3shape_to_cells_experimental(shape, 8, contain="overlap")
    leaves = set(cells["cell"])
    for c in finest:
        ancestors = [h3.cell_to_parent(c, r) for r in range(4, 9)]
        assert sum(a in leaves for a in ancestors) == 1
    # the dense cluster (4000 people in ~1 km) is refined to the finest resolution
    centre = h3.latlng_to_cell(39.3, 116.4, 8)
    assert centre in leaves
    # and the released leaves are mostly coarse where nobody lives
    assert (cells["resolution"] < 8).sum() > 0
    # totals are unbiased estimates of the people in the region
    assert abs(cells["count"].sum() - 4300) < 6 * np.sqrt(len(cells) * 2 * 4.0**2)


def test_adaptive_refuses_what_it_cannot_do() -> None:
    pts = _points(100)
    with pytest.raises(dpmap.SpecError, match="region"):
        dpmap.release(pts, resolution=8, epsilon=1.0, delta=1e-6, adaptive=True)
    with pytest.raises(dpmap.SpecError, match="laplace"):
        dpmap.release(
            pts,
            region=REGION,
            resolution=8,
            epsilon=1.0,
            delta=1e-6,
            adaptive=True,
            mechanism="gaussian",
        )
    with pytest.raises(dpmap.SpecError, match="adaptive_from"):
        dpmap.release(pts, region=REGION, resolution=8, epsilon=1.0, adaptive=True, adaptive_from=8)
    with pytest.raises(dpmap.SpecError, match="adaptive=True"):
        dpmap.release(pts, region=REGION, resolution=8, epsilon=1.0, adaptive_from=5)
    with pytest.raises(dpmap.SpecError, match="tree_share"):
        dpmap.release(pts, region=REGION, resolution=8, epsilon=1.0, adaptive=True, tree_share=1.0)


def test_adaptive_release_round_trips_through_a_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rel = dpmap.release(
        _points(500), region=REGION, resolution=7, epsilon=1.0, adaptive=True, adaptive_from=5
    )
    rel.to_file(tmp_path / "a.parquet")
    back = dpmap.read_release(tmp_path / "a.parquet")
    assert back.manifest["adaptive"]["root_resolution"] == 5
    pd.testing.assert_frame_equal(
        back.cells.drop(columns="geometry"), rel.cells.drop(columns="geometry")
    )
