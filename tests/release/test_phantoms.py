"""No phantom hot spots: the default suppression shows about one truly empty row per map.

A user trial found that the old default (hide a cell when its noisy count is below its own
95% margin) showed about 2.5% of truly empty cells — and most cells of a region are empty:
at resolution 7, ε = 1, 5,000 people over a country, 152 of the 590 cells shown (26%) were
truly empty; with categories and ``max_records_per_cell=3``, 43 of 73 "bank" cells shown were
empty. On a map about debtors a phantom cell says "debtors live here" where nobody does.

The default now hides a row when its noisy count is below the smallest k with
P(noise ≥ k) ≤ min(2.5%, 1/rows) (exact discrete tails), so the expected number of truly
empty rows shown is at most one per map. These tests measure it by simulation: many
releases of data whose truly empty rows are known, and the number of them shown is checked
two-sided against its exact distribution (a binomial), so a threshold that is too lax *or*
needlessly strict fails.
"""

from __future__ import annotations

from typing import Any

import h3
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import dpmap
from common import REGION, cell_centre
from dpmap._privacy.postprocess import discrete_tail
from dpmap.engines import local
from dpmap.grid import region_to_cells, to_region
from dpmap.spec import ReleaseSpec

RES = 8  # about 1,300 public cells over the test region: almost all empty
DOMAIN = region_to_cells(to_region(REGION), RES)
OCCUPIED = [f"{int(c):x}" for c in DOMAIN[:: len(DOMAIN) // 10][:10]]
TAIL = 1e-9  # each side of the two-sided acceptance region


def people(n: int = 300, *, records: int = 1) -> pd.DataFrame:
    rows = []
    for i in range(n):
        lat, lng = cell_centre(OCCUPIED[i % len(OCCUPIED)])
        for j in range(records):
            rows.append(
                {"lat": lat, "lng": lng, "pid": f"p{i}", "kind": ["bank", "utility"][(i + j) % 2]}
            )
    return pd.DataFrame(rows)


def truly_empty(points: pd.DataFrame, params: dict[str, Any]) -> np.ndarray:
    """Mask over the release's rows (cell-major, categories inside): zero bounded count."""
    spec = ReleaseSpec(**{k: v for k, v in params.items() if k != "region"})
    agg = local.bound_and_aggregate(points, spec, DOMAIN)
    ncat = len(spec.categories) if spec.categories else 1
    return agg.densify(DOMAIN, ncat)["count"] == 0


def shown_empty(points: pd.DataFrame, params: dict[str, Any], runs: int) -> tuple[int, Any]:
    empty = truly_empty(points, params)
    total = 0
    rel = None
    for _ in range(runs):
        rel = dpmap.release(points, **params)
        shown = ~rel.cells["suppressed"].to_numpy()
        total += int((shown & empty).sum())
    return total, rel


@pytest.mark.parametrize(
    ("extra", "points"),
    [
        ({}, people()),
        (  # the trial's case: categories and several records per person and cell
            {"category": "kind", "categories": ["bank", "utility"], "max_records_per_cell": 3,
             "selection": "hash"},
            people(records=3),
        ),
        ({"mechanism": "gaussian", "delta": 1e-6}, people()),
    ],
    ids=["flat", "categories-linf-3", "gaussian"],
)  # fmt: skip
def test_truly_empty_rows_shown_match_the_rule(extra: dict[str, Any], points: Any) -> None:
    params = {"region": REGION, "resolution": RES, "epsilon": 1.0, "person": "pid", **extra}
    runs = 40
    total, rel = shown_empty(points, params, runs)
    m = rel.manifest
    k = m["suppression"]["threshold"]
    kind = "laplace" if m["statistics"]["count"]["distribution"].endswith("Laplace") else "gaussian"
    p = float(discrete_tail(kind, m["statistics"]["count"]["scale"], np.array([k]))[0])
    n_empty = int(truly_empty(points, params).sum())
    assert n_empty > 0.95 * len(rel.cells)  # a map where nearly every row is empty
    assert p <= min(0.025, 1 / len(rel.cells))
    # shown empty rows over all runs ~ Binomial(runs·n_empty, p), exactly
    lo, hi = stats.binom.ppf([TAIL, 1 - TAIL], runs * n_empty, p)
    assert lo <= total <= hi, (total, lo, hi, runs * n_empty * p)
    # about one per map at most: within what Binomial(runs·n_empty, 1/rows), a mean of at
    # most one per map, allows at its 1e-9 upper tail (≈ 2 per map here). The former
    # `total / runs <= 1.5` failed a correct release with chance up to 5e-4 (categories:
    # mean 38.5 over 40 maps, P(total > 60) = 4.9e-4; flat and Gaussian: 1.6e-6, 2e-6).
    assert total <= stats.binom.ppf(1 - TAIL, runs * n_empty, 1 / len(rel.cells))
    # the old rule (below its own 95% margin) would show ~20 times as many
    moe = m["statistics"]["count"]["moe_95"]
    old = float(discrete_tail(kind, m["statistics"]["count"]["scale"], np.array([np.ceil(moe)]))[0])
    assert runs * n_empty * old > 5 * hi


@pytest.mark.parametrize(
    "extra",
    [{"resolution": [6, 7, RES]}, {"resolution": [7, RES], "mechanism": "gaussian", "delta": 1e-6}],
    ids=["hierarchical", "hierarchical-gaussian"],
)
def test_least_squares_rows_show_at_most_one_empty_row_per_map(extra: dict[str, Any]) -> None:
    """Least-squares estimates carry one variance per row; the rule hides a row below a
    multiple of its own standard deviation chosen for a chance ≤ 1/rows (a bound for
    Laplace-based combinations): over 30 maps the empty rows shown stay within what a mean
    of one per map allows (Poisson(30) upper tail at 1e-9: 69)."""
    params = {"region": REGION, "epsilon": 1.0, "person": "pid", **extra}
    points = people()
    rel = dpmap.release(points, **params)
    rows = len(rel.cells)
    occupied = {h3.cell_to_parent(c, r) for c in OCCUPIED for r in params["resolution"]}
    empty = ~rel.cells["cell"].isin(occupied).to_numpy()
    assert empty.sum() > 0.9 * rows
    total = 0
    for _ in range(30):
        rel = dpmap.release(points, **params)
        total += int((~rel.cells["suppressed"].to_numpy() & empty).sum())
    assert total <= stats.poisson.ppf(1 - TAIL, 30)
    assert rel.manifest["suppression"]["expected_phantom_rows"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kind", "scale", "rows"),
    [("laplace", 1.0, 12_849), ("laplace", 3e12, 10**6), ("gaussian", 3.0, 10_000),
     ("gaussian", 9e3, 100), ("gaussian", 5e9, 10**6), ("laplace", 0.05, 1)],
)  # fmt: skip
def test_phantom_threshold_is_the_smallest_count_within_the_chance(
    kind: str, scale: float, rows: int
) -> None:
    """Any scale the planner accepts (a table of the noise would not fit in memory at 3e12):
    P(X ≥ k) ≤ min(2.5%, 1/rows) < P(X ≥ k − 1), and the expected phantoms follow."""
    from dpmap._privacy.postprocess import CountNoise, phantom_threshold

    k, expected = phantom_threshold(CountNoise(kind, scale), rows)
    alpha = min(0.025, 1 / rows)
    tail = discrete_tail(kind, scale, np.array([k - 1, k]))
    assert k >= 1 and tail[1] <= alpha and (k == 1 or tail[0] > alpha)
    assert expected == pytest.approx(rows * tail[1])
