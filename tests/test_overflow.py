"""No value that reaches the noise can overflow: sums are exact, then saturated.

A review found that the overflow guard looked only at the finest cells: a hierarchical
release with bounds (0, 1e12) and seven child cells of 1.5 M records each published its
parent's sum as −3.99e18 (truth 1.05e19), because the parent was summed in int64 and
wrapped. Near the wrap two neighbouring datasets differ by 2**64 in one coordinate: no
privacy at all. Now every sum — a cell's, a parent's, a tree level's, a region total — is
formed exactly and saturated to ±SUM_LIMIT (2**62) before noise. Saturation is
1-Lipschitz, so the sensitivities stay valid; a flag in the output and the manifest says
where a noisy sum sits at the limit.

The end-to-end tests lift the bound cap (10**12) to 2**50 in the test only, so that 9,000
records per cell reach the limit: the arithmetic is the same as with 10 M records at 10**12.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dpmap
from common import ADAPTIVE_REGION, REGION, RESOLUTION, cell_centre, interior_cells
from dpmap import spec as spec_module
from dpmap._privacy import noise as mechanisms
from dpmap.aggregates import SUM_LIMIT, exact_total, in_range, saturate
from dpmap.designs import hierarchy
from dpmap.grid import region_to_cells, to_region

I64_MAX, I64_MIN = 2**63 - 1, -(2**63)
BIG = 2**50  # a bound above the public cap (about 1.1e15): 8193 records overflow int64


def _clip(x: int) -> int:
    return min(max(x, -SUM_LIMIT), SUM_LIMIT)


# ------------------------------------------------------------------ the arithmetic


int64s = st.one_of(
    st.integers(I64_MIN + 1, I64_MAX),
    st.sampled_from([I64_MAX, I64_MIN + 1, SUM_LIMIT, -SUM_LIMIT, 2**62 + 1, 0, 1, -1]),
)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(int64s, min_size=1, max_size=60), seed=st.integers(0, 2**32 - 1))
def test_level_totals_are_exact_then_saturated(values: list[int], seed: int) -> None:
    """Every level equals the exact (Python-integer) sum of its finest cells, saturated;
    nothing wraps, whatever int64 values the finest level holds."""
    domain = region_to_cells(to_region(REGION), RESOLUTION)
    rng = np.random.default_rng(seed)
    finest = np.zeros(len(domain), dtype=np.int64)
    where = rng.choice(len(domain), size=min(len(values), len(domain)), replace=False)
    finest[where] = values[: len(where)]
    tree = hierarchy.build_tree(domain, (5, 6, RESOLUTION))
    levels = hierarchy.level_totals(tree, finest)
    for j, level in enumerate(levels):
        assert level.dtype == np.int64 and in_range(level)
        # exact reference: sum the finest values (Python ints) under each node, clip once
        exact = [0] * len(level)
        node = np.arange(len(domain))
        for k in range(len(levels) - 1, j, -1):
            parent = tree.parent[k]
            assert parent is not None
            node = parent[node]
        for i, v in zip(node.tolist(), finest.tolist(), strict=True):
            exact[i] += v
        assert level.tolist() == [_clip(x) for x in exact], f"level {j}"


@given(values=st.lists(int64s, max_size=40))
def test_exact_total_and_saturate(values: list[int]) -> None:
    arr = np.array(values, dtype=np.int64)
    assert exact_total(arr) == _clip(sum(values))
    assert saturate(arr).tolist() == [_clip(v) for v in values]
    assert saturate(np.array([*values, 2**70], dtype=object)).tolist()[-1] == SUM_LIMIT


def test_the_noise_step_refuses_an_out_of_range_value() -> None:
    with pytest.raises(AssertionError, match="outside"):
        mechanisms.check_noise_inputs({"sum": np.array([0, SUM_LIMIT + 1], dtype=np.int64)})
    with pytest.raises(AssertionError, match="outside"):
        mechanisms.check_noise_inputs({"tree": [np.array([-SUM_LIMIT - 1], dtype=np.int64)]})
    mechanisms.check_noise_inputs({"ok": np.array([SUM_LIMIT, -SUM_LIMIT]), "none": None})


# --------------------------------------------------- every design, through release()


def _loaded(n_cells: int = 7, per_cell: int = 9000) -> pd.DataFrame:
    """``per_cell`` persons at value 2**50 in each of ``n_cells`` interior cells: each cell's
    exact sum, 9000·2**50 ≈ 1.01e19, is beyond int64 (9.2e18), the total seven times that."""
    rows = []
    for c, cell in enumerate(interior_cells(n_cells)):
        lat, lng = cell_centre(cell)
        rows += [
            {"lat": lat, "lng": lng, "pid": f"c{c}-{i}", "amount": float(BIG)}
            for i in range(per_cell)
        ]
    return pd.DataFrame(rows)


DESIGNS: dict[str, dict[str, Any]] = {
    "flat": {},
    "categories": {"category": "kind", "categories": ["a"]},
    "discovery": {"region": None, "delta": 1e-6},
    "hierarchical": {"resolution": [5, 6, RESOLUTION]},
    "hierarchical-gaussian": {
        "resolution": [5, RESOLUTION],
        "mechanism": "gaussian",
        "delta": 1e-6,
    },
    "privtree": {"adaptive": True, "region": ADAPTIVE_REGION},
    "adaptive-grid": {"adaptive": "grid", "region": ADAPTIVE_REGION},
}


@pytest.mark.parametrize("design", list(DESIGNS))
@pytest.mark.filterwarnings("ignore::dpmap.errors.NegligibleNoiseWarning")  # ε = 100 on purpose
def test_no_value_reaching_the_noise_overflows(
    design: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spec_module, "MAX_ABS_BOUND", BIG)
    seen: list[tuple[int, int]] = []
    original = mechanisms.in_range

    def spy(values: np.ndarray) -> bool:
        a = np.asarray(values)
        if a.size:
            seen.append((int(a.min()), int(a.max())))
        return original(values)

    monkeypatch.setattr(mechanisms, "in_range", spy)
    points = _loaded().assign(kind="a")
    assert 9000 * BIG > 2**63
    params = {
        "region": REGION,
        "resolution": RESOLUTION,
        "epsilon": 100.0,  # noise ~1e14, negligible beside 2**62 ≈ 4.6e18
        "person": "pid",
        "value": "amount",
        "bounds": (0, BIG),
        "suppress_below": False,
        **DESIGNS[design],
    }
    rel = dpmap.release(points, **params)
    assert seen, "no vector reached the noise step through the checkpoint"
    assert all(lo >= -SUM_LIMIT and hi <= SUM_LIMIT for lo, hi in seen), seen
    assert max(hi for _lo, hi in seen) == SUM_LIMIT  # the loaded cells were saturated
    sums = rel.cells["sum"].astype(float)
    # never a wrapped sum (on the old code: a parent published as -3.99e18)
    assert sums.min() > -SUM_LIMIT / 4, sums.min()
    if "resolution" not in DESIGNS[design] or design == "discovery":
        assert sums.max() == pytest.approx(SUM_LIMIT, rel=0.01)
        assert sums.min() > -1e17  # the other cells hold no value: noise only
    # (a hierarchy's least squares spreads a saturated parent's shortfall over its
    # children, so there values beyond the limit and below 0 are possible and flagged)
    assert rel.cells["sum_at_limit"].any()
    flagged = rel.cells.loc[rel.cells["sum_at_limit"], "sum"].astype(float)
    assert (flagged > 0.99 * SUM_LIMIT).all()
    limit = rel.manifest["contribution_bounds"]["sum_limit"]
    assert limit["range"] == [-SUM_LIMIT, SUM_LIMIT]
    assert limit["rows_at_limit"] == int(rel.cells["sum_at_limit"].sum()) > 0


def test_no_flag_column_where_no_sum_is_near_the_limit() -> None:
    rel = dpmap.release(
        _loaded(2, 3).assign(amount=100.0),
        region=REGION,
        resolution=RESOLUTION,
        epsilon=1.0,
        person="pid",
        value="amount",
        bounds=(0, 1000),
    )
    assert "sum_at_limit" not in rel.cells
    assert rel.manifest["contribution_bounds"]["sum_limit"]["rows_at_limit"] == 0


# ------------------------------------------ the planned ε never exceeds the ε asked for


@pytest.mark.parametrize("epsilon", [0.1, 0.3, 1 / 3, 0.7, 1.1, 2.675, 1.0])
@pytest.mark.parametrize("design", ["flat", "sum", "gaussian", "discovery", "privtree", "grid"])
def test_planned_epsilon_is_at_most_the_decimal_asked_for(epsilon: float, design: str) -> None:
    """The ledger charges OpenDP's reported ε at its exact binary value and compares it with
    caps written as decimals: a float such as 0.1 sits above 1/10, so a plan calibrated to
    the float itself would make ten releases at ε = 0.1 overrun a cap of 1. Every planner
    targets ``spec.epsilon_budget`` instead; here OpenDP's ε ≤ the decimal, exactly."""
    from fractions import Fraction

    params: dict[str, Any] = {
        "flat": {},
        "sum": {"value": "amount", "bounds": (0, 1000)},
        "gaussian": {"mechanism": "gaussian", "delta": 1e-6},
        "discovery": {"region": None, "delta": 1e-6, "value": "amount", "bounds": (0, 9)},
        "privtree": {"adaptive": True, "region": ADAPTIVE_REGION},
        "grid": {"adaptive": "grid", "region": ADAPTIVE_REGION},
    }[design]
    plan = dpmap.explain(
        **{"region": REGION, "resolution": RESOLUTION, "epsilon": epsilon, **params}
    )
    planned = plan.as_dict()["epsilon"]
    assert Fraction(planned) <= Fraction(repr(epsilon)), (planned, epsilon)
    assert planned >= epsilon * (1 - 1e-9)  # and no budget is wasted
    assert 10 * Fraction(dpmap.explain(region=REGION, resolution=RESOLUTION,
                                       epsilon=0.1).as_dict()["epsilon"]) <= 1  # fmt: skip
