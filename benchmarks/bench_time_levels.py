#!/usr/bin/env python
"""Study: when does spending budget at the year level of a monthly panel win?

Run from the repository root::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_time_levels.py
    PYTHONPATH=src .venv/bin/python benchmarks/bench_time_levels.py --epsilon 0.5 --rho 0.1

A calculation, not a simulation: every number is an exact variance from
:func:`dpmap.designs.timeline.split_variances` (the noise variance of each level from its
sensitivity, then the variance after least squares along months → quarters → year). No
data is read and nothing is asserted.

For a panel of twelve months, one person bounded to ``max_periods`` ∈ {1, 3, 12} months
(one cell per month, one record per (cell, month); the ratios do not depend on these), and
the share of the budget spent on the yearly totals ∈ {0, 0.25, 0.5} (the rest on the months,
none on quarters), it prints the variance of one month's estimate and of the yearly total:

``vs panel``
    relative to the same panel with the whole budget on the months (share 0: the yearly
    total is the sum of twelve noisy months);
``vs 12 releases``
    relative to twelve independent monthly releases at ε/12 (Laplace) or ρ/12 (Gaussian,
    zCDP) each, one period per release (the yearly total again the sum of the months).

Laplace splits ε (basic composition), Gaussian splits ρ. What it does not show: a panel
with ``max_periods`` < 12 drops the records of a person's further months (a bias, not a
variance), which separate monthly releases do not.

What it printed (ε = 1, ρ = 0.5; the ratios barely move with the budget):

* Against twelve monthly releases at ε/12, the panel's gain comes from the bounding, not
  from the year level: with ``max_periods`` = 12 the panel's months are exactly as noisy as
  the separate releases' (ratio 1), with 3 about 0.06 (Laplace) / 0.25 (Gaussian), with 1
  about 1/144 / 1/12.
* Laplace: a year level's L1 sensitivity equals the months' (P·L0·L∞), so a year share
  always helps the yearly total (×0.76–0.81 at share 0.25, ×0.31–0.33 at 0.5, for every
  ``max_periods``) and always costs the months (×1.7–1.8, ×3.7–3.9).
* Gaussian: a year's L2² is min(P, 12)² against P for the months, so the year level helps
  the yearly total only when P < 12 (×0.27 at share 0.25 with P = 1, ×0.57 with P = 3) and
  not at all with P = 12 (ratio exactly 1: the year then costs as much budget per unit of
  precision as the twelve months it sums), while the months lose ×1.2–1.9.
* So: spend at the year level when the yearly totals matter more than the months, under
  Laplace noise, or under Gaussian noise with few periods per person.
"""

from __future__ import annotations

import argparse

import pandas as pd

from dpmap._privacy.noise import noise_variance
from dpmap.designs.timeline import split_variances, time_tree
from dpmap.spec import Mechanism

MONTHS = pd.period_range("2026-01", periods=12, freq="M")


def independent(mechanism: Mechanism, budget: float) -> float:
    """Noise variance of one month released alone at budget/12 (sensitivity 1 in L1 and L2)."""
    if mechanism is Mechanism.LAPLACE:
        return noise_variance(mechanism, 1.0 / (budget / 12))
    return noise_variance(mechanism, 1.0 / (2 * budget / 12) ** 0.5)


def table(mechanism: Mechanism, budget: float) -> pd.DataFrame:
    tree = time_tree(MONTHS)
    alone = independent(mechanism, budget)
    rows = []
    for periods in (1, 3, 12):
        plain = None
        for share in (0.0, 0.25, 0.5):
            split = split_variances(
                tree, (share, 0.0, 1.0 - share), mechanism=mechanism, budget=budget,
                max_periods=periods,
            )  # fmt: skip
            month, year = float(split.fitted[-1][0]), float(split.fitted[0][0])
            plain = plain or (month, year)
            rows.append(
                {
                    "max_periods": periods,
                    "year share": share,
                    "month var": month,
                    "month vs panel": month / plain[0],
                    "month vs 12 releases": month / alone,
                    "year var": year,
                    "year vs panel": year / plain[1],
                    "year vs 12 releases": year / (12 * alone),
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--epsilon", type=float, default=1.0, help="Laplace: total ε")
    parser.add_argument("--rho", type=float, default=0.5, help="Gaussian: total ρ (zCDP)")
    args = parser.parse_args()
    pd.set_option("display.width", 140)
    for mechanism, budget, name in (
        (Mechanism.LAPLACE, args.epsilon, f"discrete Laplace, ε = {args.epsilon:g}"),
        (Mechanism.GAUSSIAN, args.rho, f"discrete Gaussian, ρ = {args.rho:g}"),
    ):
        print(f"\n{name} (twelve months; variances after least squares; ratios < 1 win)")
        print(table(mechanism, budget).to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
