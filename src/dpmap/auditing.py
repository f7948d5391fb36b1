"""Empirical privacy audit: a high-confidence *lower* bound on ε, beside the claimed ε.

:func:`audit` builds two neighbouring datasets and runs a release on each many times:

* ``D``: a modest synthetic register in a tiny public region (an H3 cell and its six
  neighbours near 39.1° N, 116.15° E): in six of the seven cells live ``background``
  persons with two records each (values in the middle of the bounds); the seventh cell is
  empty in ``D``.
* ``D′ = D`` plus **one adversarial person** with the largest influence they can try to
  have: ``adversary_records`` records (default 200) in ``max_cells + 1`` cells — all but
  one of them in ``max_cells`` occupied cells, far above the per-cell bound, and one in
  the cell that is empty in ``D`` — so that both contribution bounds are exceeded, every
  value extreme (``±10^15``, on the side of the larger bound, so that clamping gives the
  full ``M = max(|lo|, |hi|)``). Concentrating the records makes the adversary's bounded
  contribution nearly fixed (random selection keeps the main cells with probability
  ≥ 1 − 1/200), which is the strongest test of the noise; without bounding, ~200 records
  in one cell separate ``D`` from ``D′`` in every run.

The adversary's rows sit at **random positions** among ``D``'s rows (``D``'s own order is
kept; ``shuffle=True`` also shuffles it), drawn once per audit from a
``numpy.random.Generator`` seeded by ``data_seed`` (fresh from the OS when ``None``; the
seed used is recorded in the report). One draw per audit rather than per run: every run
then tests the *same* neighbouring pair, and an (ε, δ) guarantee must hold for that pair
exactly; fresh positions per run would test the average over positions, a mixture whose
leakage can only be smaller than that of its worst pair (convexity), so a leak that shows
for some orders only would be diluted. Different audits (seeds) try different orders.
This is synthetic data only: the noise always comes from OpenDP inside the release.

From each run it reads what an observer of the published output sees about the
adversary's cells (the noisy counts and sums of those cells and of their H3 parents or
adaptive leaves, their minimum, maximum and total; with ``quantiles=``/``value_bands=``
their quantiles and value-band counts, in the ``count`` family; the suppression flags;
which cells are published and at what resolution). ``zones=True`` audits a zone release:
the seven cells become seven public zones, one row each. For each *family* of observations — ``count``,
``sum``, ``suppression``, ``cells``, and ``score`` — it chooses the event that best
separates ``D`` from ``D′`` (a threshold on one observation, either direction) on a
first, *selection* part of the runs (by default a fifth), and then measures that one
event on the other, *evaluation* part, so the choice cannot flatter the estimate. The
event is chosen for the bound it would get on the evaluation runs (selection hit rates
scaled to the evaluation size). ``score`` pools everything: the sum over every count and
sum observation of its log-likelihood ratio, Laplace- or Gaussian-shaped around the two
datasets' medians on the selection runs — an approximation of the most powerful
(Neyman–Pearson) test, which sees the whole ε rather than one statistic's share. With
``k₁`` of ``n`` evaluation runs in the event under the dataset that makes it likelier and
``k₀`` of ``n`` under the other,

    ε_lb = ln( (CP_lower(k₁, n) − δ) / CP_upper(k₀, n) )

with one-sided Clopper–Pearson bounds at level ``α / (2F)`` each (``F`` families,
Bonferroni), so that ``P(ε_lb > true ε) ≤ α`` for any mechanism that satisfies its claim:
an (ε, δ)-DP mechanism has ``P[M(D) ∈ E] ≤ e^ε P[M(D′) ∈ E] + δ`` for every event,
in both directions. The audit **fails** iff ``ε_lb > claimed ε``; the claim is what
:func:`dpmap.explain` plans for the same parameters (and what the manifest states).

**Power.** The report also states ``epsilon_ceiling``, the largest ``ε_lb`` these runs
could ever certify (all ``n`` evaluation runs in the event under one dataset, none under
the other: ``ln((α'^{1/n} − δ) / (1 − α'^{1/n}))`` with ``α' = α/(2F)``), and
``runs_needed``, the fewest runs whose ceiling exceeds the claim. An audit whose ceiling
is not above the claimed ε cannot detect any violation, however large; its report says
so in a WARNING line. Roughly, ``ε_lb ≤ ln(n / ln(1/α'))``: at α = 1e-6, 100 evaluation
runs cannot show more than ≈ 1.7. Even with enough runs, a claim is only tested as far as
some event separates the datasets: a Gaussian mechanism planned for (1, 1e-6) with ¼ of
its noise is (1, 0.087)-DP and needs ≈ 10⁴ runs to be flagged (``tests/test_audit.py``).

Two levels:

``level="release"`` (default)
    every run is a whole :func:`dpmap.release` (binning, bounding, noise,
    post-processing), or ``release_fn(points, **kwargs)`` if given: every mode (flat,
    Gaussian, discovery, hierarchical, adaptive).
``level="mechanism"``
    the exact bounded aggregates of ``D`` and ``D′`` are computed once by the engine and
    only the noise step runs (``noise_fn(spec)(vectors)``, by default OpenDP's composed
    measurement of :func:`dpmap._privacy.noise.plan_noise`), ``batch`` stacked copies of the
    aggregates per call — valid because that noise is independent per coordinate. Flat
    releases over a region only; thousands of runs per second, enough to see ε.

The audit is a test, not a proof: a pass means no violation was *found* with this
adversary and these events; ``ε_lb`` well below ε is normal (the bound is conservative
and the events are simple). It reads no user data: everything is synthetic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import h3
import numpy as np
import pandas as pd
import shapely

from dpmap import grid, parameters
from dpmap._privacy.noise import plan_noise
from dpmap.engines import local
from dpmap.errors import SpecError
from dpmap.parameters import AUDIT_PARAMETERS, check_keywords
from dpmap.releases import explain, pipeline

__all__ = [
    "AuditReport",
    "EventResult",
    "audit",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
]

# AUDIT_PARAMETERS (imported above from the parameter table): the release parameters an
# audit accepts; the data columns, region and ledger are its own.

#: centre of the synthetic region (lat, lng): public, arbitrary, away from the antimeridian
DEFAULT_CENTRE = (39.1, 116.15)
#: the adversary's extreme value (clamped to the bounds by a correct release)
EXTREME = 10.0**15
#: at most this many thresholds per observation when choosing events
MAX_THRESHOLDS = 256

FAMILIES = ("count", "sum", "suppression", "cells", "score")
#: audit(zones=True): the resolution of the seven cells that become the audit's seven zones
ZONE_RESOLUTION = 7
#: the observations pooled into the ``score`` family (see :func:`_score_observations`)
SCORED = ("count", "sum")


# ---------------------------------------------------------------------------------------
# Clopper–Pearson bounds (scipy when installed, else an exact binomial-tail bisection)


def clopper_pearson_lower(k: int, n: int, a: float) -> float:
    """One-sided lower confidence bound on a binomial p: P(p < bound) ≤ ``a``."""
    _check_binomial(k, n, a)
    if k == 0:
        return 0.0
    try:  # scipy is optional (not a dependency of dpmap): imported only when needed
        from scipy.stats import beta
    except ImportError:  # pragma: no cover - exercised via _cp_bisect in the tests
        return _cp_bisect(k, n, a, lower=True)
    return float(beta.ppf(a, k, n - k + 1))


def clopper_pearson_upper(k: int, n: int, a: float) -> float:
    """One-sided upper confidence bound on a binomial p: P(p > bound) ≤ ``a``."""
    _check_binomial(k, n, a)
    if k == n:
        return 1.0
    try:  # scipy is optional, as above
        from scipy.stats import beta
    except ImportError:  # pragma: no cover
        return _cp_bisect(k, n, a, lower=False)
    return float(beta.ppf(1 - a, k + 1, n - k))


def _check_binomial(k: int, n: int, a: float) -> None:
    if not (0 <= k <= n and n >= 1 and 0 < a < 1):
        raise SpecError(f"invalid binomial bound request k={k}, n={n}, a={a}")


def _cp_bisect(k: int, n: int, a: float, *, lower: bool) -> float:
    """Clopper–Pearson by bisection on the exact binomial tail (no scipy).

    lower: the p with P(X ≥ k; p) = a; upper: the p with P(X ≤ k; p) = a.
    """
    i = np.arange(n + 1)
    logfact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    logc = logfact[n] - logfact[i] - logfact[n - i]

    def tail(p: float) -> float:
        logpmf = logc + i * math.log(p) + (n - i) * math.log1p(-p)
        part = logpmf[k:] if lower else logpmf[: k + 1]
        m = part.max()
        return float(math.exp(m) * np.exp(part - m).sum())

    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        p = min(max(mid, 1e-300), 1 - 1e-16)
        # P(X ≥ k; p) increases with p; P(X ≤ k; p) decreases
        if lower:
            lo, hi = (mid, hi) if tail(p) < a else (lo, mid)
        else:
            lo, hi = (mid, hi) if tail(p) > a else (lo, mid)
    return lo if lower else hi


def _wilson(k: np.ndarray, n: int, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score bounds (vectorised): only used to *choose* events, never to report."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


# ---------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class EventResult:
    """The best event of one family of observations, measured on the evaluation runs."""

    family: str
    event: str  # human-readable description
    observation: str
    op: str  # ">=" or "<="
    threshold: float
    likelier_under: str  # "D′" (with the adversary) or "D"
    hits_likelier: int  # evaluation runs in the event under the likelier dataset
    hits_other: int
    runs: int  # evaluation runs per dataset
    p_likelier_lower: float
    p_other_upper: float
    epsilon_lb: float
    selection_epsilon: float  # the (approximate) score the event had on the selection runs

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "event": self.event,
            "observation": self.observation,
            "op": self.op,
            "threshold": _json_number(self.threshold),
            "likelier_under": self.likelier_under,
            "hits_likelier": self.hits_likelier,
            "hits_other": self.hits_other,
            "runs": self.runs,
            "p_likelier_lower": self.p_likelier_lower,
            "p_other_upper": self.p_other_upper,
            "epsilon_lb": self.epsilon_lb,
            "selection_epsilon": self.selection_epsilon,
        }


@dataclass(frozen=True)
class AuditReport:
    """What an audit found: the claimed (ε, δ) and a (1 − α)-confidence lower bound on ε."""

    mode: str
    level: str
    claimed_epsilon: float
    claimed_delta: float
    epsilon_lb: float
    alpha: float
    runs: int  # per dataset
    selection_runs: int
    evaluation_runs: int
    families: tuple[EventResult, ...]
    seconds: float
    parameters: dict[str, Any]
    adversary: str
    dataset: str
    manifest_epsilon: float | None = None
    notes: tuple[str, ...] = field(default=())
    #: the largest ε_lb these runs could ever certify (every evaluation run in an event
    #: under one dataset, none under the other, at the same levels)
    epsilon_ceiling: float = math.inf
    #: the fewest runs per dataset whose ceiling exceeds the claimed ε (same α and
    #: selection share, every family measured)
    runs_needed: int = 0

    @property
    def can_detect(self) -> bool:
        """Whether these runs could certify a violation of the claim at all."""
        return self.epsilon_ceiling > self.claimed_epsilon

    @property
    def passed(self) -> bool:
        """True iff the lower bound does not exceed the claimed ε (no violation found)."""
        return self.epsilon_lb <= self.claimed_epsilon

    @property
    def best(self) -> EventResult | None:
        if not self.families:
            return None
        return max(self.families, key=lambda f: f.epsilon_lb)

    def as_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "mode": self.mode,
            "level": self.level,
            "claimed_epsilon": self.claimed_epsilon,
            "claimed_delta": self.claimed_delta,
            "epsilon_lb": self.epsilon_lb,
            "passed": self.passed,
            "alpha": self.alpha,
            "runs": self.runs,
            "selection_runs": self.selection_runs,
            "evaluation_runs": self.evaluation_runs,
            "best_event": best.event if best else None,
            "families": [f.as_dict() for f in self.families],
            "seconds": self.seconds,
            "parameters": {k: _jsonable(v) for k, v in self.parameters.items()},
            "adversary": self.adversary,
            "dataset": self.dataset,
            "manifest_epsilon": self.manifest_epsilon,
            "notes": list(self.notes),
            "epsilon_ceiling": _json_number(self.epsilon_ceiling),
            "can_detect": self.can_detect,
            "runs_needed": self.runs_needed,
        }

    def __str__(self) -> str:
        lines = [
            f"dpmap audit — {self.mode} ({self.level} level), claimed ε = {self.claimed_epsilon:.6g}"
            + (f", δ = {self.claimed_delta:.3g}" if self.claimed_delta else ""),
            f"  {self.runs} runs on D and on D′ ({self.selection_runs} to choose events, "
            f"{self.evaluation_runs} to measure them); confidence 1 − α = 1 − {self.alpha:.3g}; "
            f"{self.seconds:.1f} s",
            f"  D: {self.dataset}",
            f"  D′: D + {self.adversary}",
            "",
            f"  {'family':<12} {'ε lower bound':>13}  {'hits D′ / D':>13}  best event",
        ]
        for f in self.families:
            d1, d0 = (
                (f.hits_likelier, f.hits_other)
                if f.likelier_under == "D′"
                else (f.hits_other, f.hits_likelier)
            )
            lines.append(f"  {f.family:<12} {f.epsilon_lb:>13.4f}  {f'{d1} / {d0}':>13}  {f.event}")
        if not self.families:
            lines.append("  (no observation varied between runs: nothing to measure)")
        verdict = (
            "PASS: no evidence that the release leaks more than it claims"
            if self.passed
            else "FAIL: the release leaks MORE than its claimed ε"
        )
        lines += [
            "",
            f"  ε lower bound {self.epsilon_lb:.4f} vs claimed ε {self.claimed_epsilon:.6g}: {verdict}",
            f"  power: the most these {self.evaluation_runs} evaluation runs could certify is "
            f"ε = {self.epsilon_ceiling:.4f} (every run in the event under one dataset, none "
            "under the other)",
        ]
        if not self.can_detect:
            lines.append(
                f"  WARNING: that is not above the claimed ε = {self.claimed_epsilon:.6g}, so this "
                "audit CANNOT detect a violation of the claim, however large; at least "
                f"{self.runs_needed} runs are needed before any violation could show (several "
                "times more to see a small one)"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _json_number(x: float) -> float | str:
    return x if math.isfinite(x) else ("-inf" if x < 0 else "inf")


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    return v


# ---------------------------------------------------------------------------------------
# the synthetic neighbours


@dataclass(frozen=True)
class _Setup:
    region: Any  # shapely polygon (or None for discovery)
    cells: list[str]  # the seven cells at the finest resolution, sorted
    targets: list[str]  # the adversary's cells (the empty cell first)
    d: pd.DataFrame
    d_prime: pd.DataFrame
    dataset: str
    adversary: str


#: the name column of the audit's own zones (audit(zones=True)); each zone is named by its cell
_ZONE_BY = "zone"

#: columns of the synthetic data (the audit's release reads person="pid", value="amount")
_COLUMNS = ["lat", "lng", "pid", "amount"]


def _neighbours(
    spec: Any,
    *,
    discovery: bool,
    threshold: int | None,
    centre: tuple[float, float],
    background: int | None,
    adversary_records: int,
    adversary_cells: int | None,
    rng: np.random.Generator,
    shuffle: bool,
) -> _Setup:
    zones = spec.zones is not None
    finest = ZONE_RESOLUTION if zones else spec.finest
    cells, region = _disk(centre, finest)
    empty, occupied = cells[-1], cells[:-1]
    n_targets = min(len(cells), adversary_cells or spec.max_cells + 1)
    # the main cells (occupied in D: visible in every mode, discovery included) first, then
    # the empty cell; the records go to the main cells, one to each cell beyond max_cells
    main = min(n_targets, spec.max_cells)
    targets = [*occupied[:main], *([empty] if n_targets > main else []), *occupied[main:]][
        :n_targets
    ]
    per_person = 2  # background records per person, all in the home cell
    kept = min(per_person, spec.max_records_per_cell)
    if background is None:
        background = 10 if not discovery else max(1, math.ceil((threshold or 10) / kept))
    d = _background(spec, occupied, background, per_person)
    if shuffle:
        d = d.iloc[rng.permutation(len(d))].reset_index(drop=True)
    if adversary_records < n_targets:
        raise SpecError(
            f"adversary_records={adversary_records} cannot cover the adversary's {n_targets} "
            f"cells; pass adversary_records ≥ {n_targets} (or fewer adversary_cells)"
        )
    adv_df, per_target, extreme = _adversary(spec, targets, main, adversary_records, rng)
    dataset = (
        f"{background} persons × {per_person} records in each of {len(occupied)} of the "
        f"{len(cells)} cells of a resolution-{finest} disk around ({centre[0]}, {centre[1]}); "
        "the seventh cell empty"
        + ("; each cell released as a zone" if zones else "")
        + ("; rows shuffled" if shuffle else "")
    )
    spread = " + ".join(str(k) for k in per_target)
    adversary = (
        f"one person with {len(adv_df)} records ({spread}) in {len(targets)} cells"
        + (" (the last one empty in D)" if n_targets > main else "")
        + f", at random positions among D's rows; the bounds keep {spec.max_cells} cell(s) × "
        f"{spec.max_records_per_cell} record(s); values {extreme:+.0e}"
    )
    return _Setup(
        region=None if discovery or zones else region,
        cells=cells,
        targets=targets,
        d=d,
        d_prime=_insert_at_random(d, adv_df, rng),
        dataset=dataset,
        adversary=adversary,
    )


def _disk(centre: tuple[float, float], finest: int) -> tuple[list[str], Any]:
    """The cell at ``centre`` and its six neighbours (sorted), and a region overlapping
    exactly these cells."""
    home = h3.latlng_to_cell(centre[0], centre[1], finest)
    cells = sorted(h3.grid_disk(home, 1))
    polys = [shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(c)]) for c in cells]
    edge_deg = h3.average_hexagon_edge_length(finest, unit="km") / 111.0
    return cells, shapely.union_all(polys).buffer(-0.01 * edge_deg)


def _background(spec: Any, occupied: list[str], background: int, per_person: int) -> pd.DataFrame:
    """D: ``background`` persons with ``per_person`` records in each occupied cell, values
    in the middle of the bounds."""
    lo, hi = spec.bounds if spec.bounds is not None else (0, 0)
    rows = []
    for ci, cell in enumerate(occupied):
        lat, lng = h3.cell_to_latlng(cell)
        for i in range(background):
            for j in range(per_person):
                v = lo + ((ci * 7 + i * 3 + j) % 5 + 3) * (hi - lo) / 10  # in [lo, hi]
                rows.append((lat, lng, f"bg-{ci}-{i}", float(round(v))))
    return pd.DataFrame(rows, columns=_COLUMNS)


def _adversary(
    spec: Any, targets: list[str], main: int, records: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, list[int], float]:
    """The adversary's rows (in a random order), records per target cell, and value.

    One record in each cell beyond the main ones (so that the L0 bound is exceeded while
    the main cells are kept with probability ≥ 1 − (extra cells)/records under random
    selection: a nearly fixed contribution, the strongest test of the noise), the rest
    spread over the main cells (far above the L∞ bound).
    """
    lo, hi = spec.bounds if spec.bounds is not None else (0, 0)
    extreme = EXTREME if abs(hi) >= abs(lo) else -EXTREME
    n_targets = len(targets)
    per_target = [0] * n_targets
    for r in range(max(records - (n_targets - main), 0)):
        per_target[r % main] += 1
    for t in range(main, n_targets):
        per_target[t] = 1
    adv = [
        (*h3.cell_to_latlng(cell), "adversary", extreme)
        for cell, k in zip(targets, per_target, strict=True)
        for _ in range(k)
    ]
    return pd.DataFrame(adv, columns=_COLUMNS).iloc[rng.permutation(len(adv))], per_target, extreme


def _insert_at_random(
    d: pd.DataFrame, adv_df: pd.DataFrame, rng: np.random.Generator
) -> pd.DataFrame:
    """D′: D's rows in the same order with the adversary's rows at random positions among
    them (one draw per audit: every run tests the same neighbouring pair)."""
    n = len(d) + len(adv_df)
    at = np.sort(rng.choice(n, size=len(adv_df), replace=False))
    mine = np.zeros(n, dtype=bool)
    mine[at] = True
    order = np.empty(n, dtype=np.int64)
    order[~mine] = np.arange(len(d))
    order[mine] = len(d) + np.arange(len(adv_df))
    return pd.concat([d, adv_df], ignore_index=True).iloc[order].reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# observations of one output


class _Observer:
    """Turns one output into named numbers about the adversary's cells."""

    def __init__(self, spec: Any, targets: list[str], mode: str, adaptive_root: int | None):
        self.spec = spec
        self.mode = mode
        self.targets = targets
        finest = ZONE_RESOLUTION if mode == "zones" else spec.finest
        self.finest = finest
        lowest = adaptive_root if adaptive_root is not None else min(spec.levels)
        lowest = finest if mode == "zones" else lowest
        self.ancestors = [
            {r: (t if r == finest else h3.cell_to_parent(t, r)) for r in range(lowest, finest + 1)}
            for t in targets
        ]
        self.levels = (
            list(range(lowest, finest + 1)) if mode in ("adaptive", "zones") else list(spec.levels)
        )

    def from_release(self, rel: Any) -> dict[str, float]:
        cells = rel.cells
        est = rel.estimates
        hexes, res = self._keys(cells)
        supp = cells["suppressed"].to_numpy(dtype=bool)
        if est is not None:
            count = est["count"].to_numpy(dtype=np.float64)
            sums = est["sum"].to_numpy(dtype=np.float64) if "sum" in est else None
        else:  # pragma: no cover - releases made by dpmap.release hold their estimates
            count = cells["count"].astype("float64").fillna(-math.inf).to_numpy()
            sums = cells["sum"].astype("float64").to_numpy() if "sum" in cells else None
        rows = {(h, int(r)): i for i, (h, r) in enumerate(zip(hexes, res, strict=True))}
        out: dict[str, float] = {"cells:rows": float(len(hexes))}
        stats = {"count": count} if sums is None else {"count": count, "sum": sums}
        if self.mode == "adaptive":
            leaf_rows: list[int | None] = []
            for anc in self.ancestors:  # the leaf holding the cell: its one published ancestor
                found = [rows[(anc[r], r)] for r in self.levels if (anc[r], r) in rows]
                leaf_rows.append(found[0] if found else None)
            for name, vec in stats.items():
                self._aggregate(
                    out,
                    f"{name}@leaf",
                    [vec[i] if i is not None else None for i in leaf_rows],
                    leaf_rows,
                )
            out["cells:leaf_resolution_min"] = float(
                min(res[i] if i is not None else -1 for i in leaf_rows)
            )
            for j, i in enumerate(leaf_rows):
                out[f"cells:leaf_resolution[{j}]"] = float(res[i]) if i is not None else -1.0
                out[f"suppression:suppressed[{j}]"] = float(supp[i]) if i is not None else 1.0
            out["suppression:suppressed_n"] = float(
                sum(supp[i] if i is not None else 1 for i in leaf_rows)
            )
            return out
        for r in self.levels:
            idx = [rows.get((anc[r], r)) for anc in self.ancestors]
            for name, vec in stats.items():
                self._aggregate(
                    out, f"{name}@r{r}", [vec[i] if i is not None else None for i in idx], idx
                )
            if r == self.finest:
                present = [i is not None for i in idx]
                for j, i in enumerate(idx):
                    out[f"suppression:suppressed[{j}]"] = float(supp[i]) if i is not None else 1.0
                    out[f"cells:present[{j}]"] = float(present[j])
                out["suppression:suppressed_n"] = float(
                    sum(supp[i] if i is not None else 1 for i in idx)
                )
                out["cells:present_n"] = float(sum(present))
                self._distribution(out, cells, idx)
        return out

    def _distribution(
        self, out: dict[str, float], cells: pd.DataFrame, idx: list[int | None]
    ) -> None:
        """The adversary's rows' quantiles and value-band counts (a release with
        ``quantiles=``/``value_bands=``), observed with the counts: they come from the
        noisy value histogram, whose share of ε the claim includes."""
        for col in cells.columns:
            band = col.startswith("band_") and not col.endswith("_moe")
            quantile = col.startswith("q") and col[1:].replace(".", "").isdigit()
            if not (band or quantile):
                continue
            vec = cells[col].astype("float64").to_numpy()
            vals = [None if i is None or not np.isfinite(vec[i]) else vec[i] for i in idx]
            self._aggregate(out, f"count@{col}", vals, idx)

    def _keys(self, cells: pd.DataFrame) -> tuple[list[str], np.ndarray]:
        """Each row's H3 cell and resolution (a zone release: its zone, named by its cell)."""
        if self.mode == "zones":
            return cells[_ZONE_BY].astype(str).tolist(), np.full(len(cells), self.finest)
        return cells["cell"].astype(str).tolist(), cells["resolution"].to_numpy()

    def from_vectors(
        self, vectors: dict[str, np.ndarray], n: int, positions: list[int]
    ) -> dict[str, np.ndarray]:
        """Observations of stacked copies of the domain's vectors (mechanism level), as
        arrays with one entry per copy."""
        out: dict[str, np.ndarray] = {}
        for name, vec in vectors.items():
            block = np.asarray(vec, dtype=np.float64).reshape(-1, n)[:, positions]
            key = f"{name}@r{self.spec.finest}"
            for j in range(len(positions)):
                out[f"{name}:{key}[{j}]"] = block[:, j]
            if len(positions) > 2:
                for j in range(len(positions)):
                    rest = np.delete(block, j, axis=1)
                    out[f"{name}:{key}:min_without[{j}]"] = rest.min(axis=1)
            out[f"{name}:{key}:min"] = block.min(axis=1)
            out[f"{name}:{key}:max"] = block.max(axis=1)
            out[f"{name}:{key}:total"] = block.sum(axis=1)
        return out

    @staticmethod
    def _aggregate(
        out: dict[str, float], key: str, vals: Sequence[float | None], ids: Sequence[Any]
    ) -> None:
        family = key.split("@")[0]
        v = [(-math.inf if x is None else float(x)) for x in vals]
        for j, x in enumerate(v):
            out[f"{family}:{key}[{j}]"] = x
        # each distinct published cell once (coarse levels: the targets share parents)
        seen: dict[Any, float] = {}
        for i, x in zip(ids, v, strict=True):
            seen[i if i is not None else ("absent", len(seen))] = x
        uniq = list(seen.values())
        if len(v) > 2:  # the adversary keeps max_cells of its cells: each subset's minimum
            for j in range(len(v)):
                out[f"{family}:{key}:min_without[{j}]"] = min(v[:j] + v[j + 1 :])
        out[f"{family}:{key}:min"] = min(uniq)
        out[f"{family}:{key}:max"] = max(uniq)
        out[f"{family}:{key}:total"] = float(sum(x for x in uniq if math.isfinite(x)))


# ---------------------------------------------------------------------------------------
# choosing and measuring events


@dataclass(frozen=True)
class _Event:
    observation: str
    op: str
    threshold: float
    numerator: int  # 1: likelier under D′, 0: likelier under D
    score: float


def _hits(x: np.ndarray, op: str, t: float) -> int:
    return int(np.count_nonzero(x >= t) if op == ">=" else np.count_nonzero(x <= t))


def _thresholds(pooled: np.ndarray) -> np.ndarray:
    """Candidate thresholds: midway between consecutive distinct values of the selection
    runs (at most :data:`MAX_THRESHOLDS`), so that a threshold separating the selection
    runs lies in the middle of the gap rather than on its edge, where about one evaluation
    run in (selection runs + 1) would fall on the wrong side. Between "absent" (−∞) and the
    smallest value seen: that value − 1."""
    uniq = np.unique(pooled)
    if len(uniq) > MAX_THRESHOLDS + 1:
        # quantiles, denser in the tails (where the likelihood ratio is largest)
        u = np.linspace(-1, 1, MAX_THRESHOLDS + 1)
        q = 0.5 + 0.5 * np.sign(u) * np.abs(u) ** 2
        uniq = np.unique(np.quantile(pooled, q, method="nearest"))
    left, right = uniq[:-1], uniq[1:]
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(left), (left + right) / 2, right - 1.0)


def _choose(
    obs0: dict[str, np.ndarray],
    obs1: dict[str, np.ndarray],
    names: list[str],
    delta: float,
    z: float,
    n_eval: int,
) -> _Event | None:
    """The event with the best predicted bound on ``n_eval`` evaluation runs: each side's
    hit rate on the selection runs (smoothed by ½ a hit, so that 0 of a few runs is not
    taken for certain) scaled to ``n_eval`` runs, then Wilson bounds at the audit's level
    — the bound the event would get if the evaluation runs behaved like the selection."""
    best: _Event | None = None
    for name in names:
        a0, a1 = np.sort(obs0[name]), np.sort(obs1[name])
        n0, n1 = len(a0), len(a1)
        pooled = np.concatenate([a0, a1])
        if pooled.min() == pooled.max():
            continue
        t = _thresholds(pooled)
        ge0 = n0 - np.searchsorted(a0, t, side="left")
        ge1 = n1 - np.searchsorted(a1, t, side="left")
        le0 = np.searchsorted(a0, t, side="right")
        le1 = np.searchsorted(a1, t, side="right")
        for op, k0, k1 in ((">=", ge0, ge1), ("<=", le0, le1)):
            for numerator, kn, kd, nn, nd in ((1, k1, k0, n1, n0), (0, k0, k1, n0, n1)):
                lo, _ = _wilson((kn + 0.5) / (nn + 1) * n_eval, n_eval, z)
                _, hi = _wilson((kd + 0.5) / (nd + 1) * n_eval, n_eval, z)
                with np.errstate(divide="ignore", invalid="ignore"):
                    score = np.where(lo > delta, np.log((lo - delta) / hi), -np.inf)
                i = _plateau_middle(score, int(np.argmax(score)))
                if best is None or score[i] > best.score:
                    best = _Event(name, op, float(t[i]), numerator, float(score[i]))
    return best


def _plateau_middle(score: np.ndarray, i: int) -> int:
    """The middle of the run of equal best scores around ``i``: when several thresholds
    separate the selection runs equally well, the one farthest from both edges is likeliest
    to separate the evaluation runs too."""
    lo = hi = i
    while lo > 0 and score[lo - 1] == score[i]:
        lo -= 1
    while hi < len(score) - 1 and score[hi + 1] == score[i]:
        hi += 1
    return (lo + hi) // 2


def _describe(ev: _Event, targets: list[str]) -> str:
    fam, rest = ev.observation.split(":", 1)
    who = "D′ (with the adversary)" if ev.numerator == 1 else "D (without)"
    if fam == "score":
        what = f"pooled {'Laplace' if rest == 'laplace' else 'Gaussian'} log-likelihood score"
    elif ":min_without[" in rest:
        base, j = rest.split(":min_without[", 1)
        what = f"min of {base} over the adversary's cells other than #{j.rstrip(']')}"
    elif "[" in rest:
        base, j = rest.rsplit("[", 1)
        j = j.rstrip("]")
        what = f"{base} of the adversary's cell #{j} ({targets[int(j)]})"
    elif rest.endswith((":min", ":max", ":total")):
        base, agg = rest.rsplit(":", 1)
        what = f"{agg} of {base} over the adversary's cells"
    else:
        what = rest
    thr = "−∞ (absent)" if ev.threshold == -math.inf else f"{ev.threshold:.6g}"
    return f"{what} {'≥' if ev.op == '>=' else '≤'} {thr}, likelier under {who}"


def _measure(
    ev: _Event,
    eval0: dict[str, np.ndarray],
    eval1: dict[str, np.ndarray],
    delta: float,
    a_side: float,
    family: str,
    targets: list[str],
) -> EventResult:
    x_num = (eval1 if ev.numerator == 1 else eval0)[ev.observation]
    x_den = (eval0 if ev.numerator == 1 else eval1)[ev.observation]
    n = len(x_num)
    k1, k0 = _hits(x_num, ev.op, ev.threshold), _hits(x_den, ev.op, ev.threshold)
    p1 = clopper_pearson_lower(k1, n, a_side)
    p0 = clopper_pearson_upper(k0, len(x_den), a_side)
    eps = math.log((p1 - delta) / p0) if p1 > delta else 0.0
    return EventResult(
        family=family,
        event=_describe(ev, targets),
        observation=ev.observation,
        op=ev.op,
        threshold=ev.threshold,
        likelier_under="D′" if ev.numerator == 1 else "D",
        hits_likelier=k1,
        hits_other=k0,
        runs=n,
        p_likelier_lower=p1,
        p_other_upper=p0,
        epsilon_lb=max(0.0, eps),
        selection_epsilon=max(0.0, ev.score) if math.isfinite(ev.score) else 0.0,
    )


def _stack(observations: list[dict[str, float]], names: list[str]) -> dict[str, np.ndarray]:
    return {
        k: np.array([o.get(k, -math.inf) for o in observations], dtype=np.float64) for k in names
    }


def _score_observations(
    obs0: dict[str, np.ndarray], obs1: dict[str, np.ndarray], names: list[str], n_sel: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two pooled observations per run: the sum over every count and sum observation of
    its log-likelihood ratio, as if it were Laplace (``score:laplace``) or Gaussian
    (``score:linear``) noise around the medians of the two datasets.

    One threshold on a single observation sees only the share of ε spent on that
    statistic (and one cell); the likelihood ratio of everything the observer sees is
    the most powerful test (Neyman–Pearson), and these sums approximate it. Their
    centres and spreads come from the *selection* runs only, so the score is a fixed
    function when the evaluation runs are measured: the guarantee is unchanged.
    Absent values (−∞) count as one below the smallest value seen.
    """
    lap = [np.zeros(len(next(iter(o.values())))) if o else np.zeros(0) for o in (obs0, obs1)]
    lin = [x.copy() for x in lap]
    used = 0
    for name in names:
        if name.split(":", 1)[0] not in SCORED:
            continue
        sel = np.concatenate([obs0[name][:n_sel], obs1[name][:n_sel]])
        finite = sel[np.isfinite(sel)]
        if finite.size == 0:
            continue
        floor = float(finite.min()) - 1.0
        y = [np.where(np.isfinite(o[name]), o[name], floor) for o in (obs0, obs1)]
        m0, m1 = float(np.median(y[0][:n_sel])), float(np.median(y[1][:n_sel]))
        if m0 == m1:
            continue
        gap = abs(m1 - m0)
        mad = (np.abs(y[0][:n_sel] - m0).mean() + np.abs(y[1][:n_sel] - m1).mean()) / 2
        var = (y[0][:n_sel].var() + y[1][:n_sel].var()) / 2
        b = max(float(mad), 1e-6 * gap)
        v = max(float(var), (1e-6 * gap) ** 2)
        for w in (0, 1):
            lap[w] += (np.abs(y[w] - m0) - np.abs(y[w] - m1)) / b
            lin[w] += (y[w] - (m0 + m1) / 2) * (m1 - m0) / v
        used += 1
    if not used:
        return {}
    return {"score:laplace": (lap[0], lap[1]), "score:linear": (lin[0], lin[1])}


def epsilon_ceiling(evaluation_runs: int, a_side: float, delta: float = 0.0) -> float:
    """The largest ε lower bound an audit can report with ``evaluation_runs`` runs per
    dataset and one-sided level ``a_side``: every run in the event under one dataset,
    none under the other, ``ln((CP_lower(n, n) − δ) / CP_upper(0, n))`` (0 if not positive)."""
    u = a_side ** (1.0 / evaluation_runs)  # CP_lower(n, n, a) = a^(1/n) = 1 − CP_upper(0, n, a)
    if u - delta <= 0 or u >= 1:
        return 0.0
    return max(0.0, math.log((u - delta) / (1.0 - u)))


def runs_needed(epsilon: float, a_side: float, delta: float, selection_fraction: float) -> int:
    """The fewest runs per dataset whose ceiling (:func:`epsilon_ceiling`) exceeds ``epsilon``,
    with the same levels and the same share of selection runs."""
    target = (math.exp(epsilon) + delta) / (1.0 + math.exp(epsilon))  # u > target
    n_eval = math.floor(math.log(a_side) / math.log(target)) + 1
    runs = max(4, math.floor(n_eval / (1 - selection_fraction)) - 2)
    while runs - _selection_runs(runs, selection_fraction) < n_eval:
        runs += 1
    return runs


def _selection_runs(runs: int, selection_fraction: float) -> int:
    return max(2, min(runs - 2, round(runs * selection_fraction)))


# ---------------------------------------------------------------------------------------
# the audit


def audit(
    *,
    runs: int = 400,
    alpha: float = 1e-6,
    level: str = "release",
    discovery: bool = False,
    zones: bool = False,
    release_fn: Callable[..., Any] | None = None,
    noise_fn: Callable[[Any], Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]]
    | None = None,
    batch: int = 64,
    selection_fraction: float = 0.2,
    background: int | None = None,
    adversary_records: int = 200,
    adversary_cells: int | None = None,
    centre: tuple[float, float] = DEFAULT_CENTRE,
    data_seed: int | None = None,
    shuffle: bool = False,
    progress: Callable[[int, int], None] | None = None,
    **params: Any,
) -> AuditReport:
    """Audit a release configuration: run it on neighbouring datasets, bound ε from below.

    Parameters
    ----------
    runs
        Runs on each of ``D`` and ``D′`` (split into selection and evaluation parts).
    alpha
        The probability that the reported ``epsilon_lb`` exceeds the true ε of a correct
        mechanism is at most ``alpha`` (Clopper–Pearson, Bonferroni over families and sides).
    level
        ``"release"``: whole releases; ``"mechanism"``: only the noise step (flat,
        region releases), on aggregates computed once.
    discovery
        Audit a release without a region (cells chosen privately; needs ``delta > 0``).
    zones
        Audit a zone release (:func:`dpmap.release` with ``zones=``/``by=``): the seven
        cells of the audit's disk (resolution :data:`ZONE_RESOLUTION`) become seven public
        zones, each released as one row; pass no ``resolution``. Your own zones need not be
        given: their shapes do not change the noise or the bounds (the sensitivities are
        the flat design's).
    release_fn
        ``release_fn(points, **kwargs) -> Release`` used instead of :func:`dpmap.release`
        (e.g. a deliberately broken one, to check that the audit catches it).
    noise_fn
        Mechanism level: ``noise_fn(spec)`` returns the function that noises a dict of
        int64 vectors (default: ``plan_noise(spec).run_dense``).
    batch
        Mechanism level: copies of the aggregates noised per call.
    selection_fraction
        Share of the runs used to choose the events (the rest measure them).
    background, adversary_records, adversary_cells, centre
        The synthetic data (see the module docstring); ``adversary_cells`` (1..7) defaults
        to ``max_cells + 1``.
    data_seed, shuffle
        Seed of the audit's own randomness (where the adversary's rows go among ``D``'s;
        ``None``: fresh from the OS, recorded in the report), and whether ``D``'s rows are
        shuffled too. Never the noise, which OpenDP draws in every release.
    **params
        Release parameters (``resolution``, ``epsilon``, ``delta``, ``mechanism``,
        ``bounds``, ``max_cells``, ``max_records_per_cell``, ``suppress_below``,
        ``adaptive``, ...: :data:`AUDIT_PARAMETERS`). A value column is audited when
        ``bounds`` is given.

    Returns
    -------
    AuditReport
        ``claimed_epsilon``, ``claimed_delta``, ``epsilon_lb``, ``passed``, the best
        event per family, the power (``epsilon_ceiling``, ``can_detect``,
        ``runs_needed``), the runs and the time taken.
    """
    t_start = time.perf_counter()
    _check_zones(zones, discovery)
    _check_params(params, zones)
    _check_settings(
        runs=runs,
        alpha=alpha,
        level=level,
        selection_fraction=selection_fraction,
        adversary_records=adversary_records,
        adversary_cells=adversary_cells,
        batch=batch,
        data_seed=data_seed,
    )
    # the synthetic data's own randomness (where the adversary's rows go): never the noise,
    # which OpenDP draws inside every release
    seeds = np.random.SeedSequence(data_seed)
    claim = _claim(params, discovery=discovery, centre=centre, level=level, zones=zones)
    spec = claim.spec
    setup = _neighbours(
        spec,
        discovery=discovery,
        threshold=claim.threshold,
        centre=centre,
        background=background,
        adversary_records=adversary_records,
        adversary_cells=adversary_cells,
        rng=np.random.default_rng(seeds),
        shuffle=bool(shuffle),
    )
    kwargs = {**claim.kwargs, "region": setup.region}
    observer = _Observer(spec, setup.targets, claim.mode, claim.adaptive_root)
    manifest_eps: float | None = None
    if level == "release":
        fn = release_fn if release_fn is not None else _default_release
        obs0, obs1, manifest_eps = _release_runs(fn, setup, kwargs, observer, runs, progress)
    else:
        obs0, obs1 = _mechanism_runs(spec, setup, observer, runs, noise_fn, batch, progress)
    n_sel = _selection_runs(runs, selection_fraction)
    results, a_side = _families(obs0, obs1, n_sel, runs - n_sel, claim.delta, alpha, setup.targets)
    public_params = {k: v for k, v in kwargs.items() if k not in ("region", "zones", "by")}
    public_params.update(discovery=discovery, data_seed=seeds.entropy, shuffle=bool(shuffle))
    if zones:
        public_params["zones"] = f"the {len(setup.cells)} cells of the audit's disk, as zones"
    return AuditReport(
        mode=claim.mode_name,
        level=level,
        claimed_epsilon=claim.epsilon,
        claimed_delta=claim.delta,
        epsilon_lb=max((r.epsilon_lb for r in results), default=0.0),
        alpha=alpha,
        runs=runs,
        selection_runs=n_sel,
        evaluation_runs=runs - n_sel,
        families=tuple(results),
        seconds=time.perf_counter() - t_start,
        parameters=public_params,
        adversary=setup.adversary,
        dataset=setup.dataset,
        manifest_epsilon=manifest_eps,
        notes=tuple(_notes(manifest_eps, claim.epsilon)),
        epsilon_ceiling=epsilon_ceiling(runs - n_sel, a_side, claim.delta),
        # at the level of every family measured: enough whichever observations vary
        runs_needed=runs_needed(
            claim.epsilon, alpha / (2 * len(FAMILIES)), claim.delta, selection_fraction
        ),
    )


def _default_release(points: Any, **kwargs: Any) -> Any:
    """:func:`dpmap.release`, looked up at each call (a test may replace it to break it)."""
    return pipeline.release(points, **kwargs)


def _check_zones(zones: Any, discovery: bool) -> None:
    if not isinstance(zones, bool):
        raise SpecError(
            f"zones must be True or False, got {type(zones).__name__}: audit(zones=True) "
            "builds its own seven zones (your zones' shapes do not change the noise)"
        )
    if zones and discovery:
        raise SpecError("a zone release publishes every zone: pass zones=True or discovery=True")


def _check_params(params: dict[str, Any], zones: bool = False) -> None:
    """The release parameters an audit takes (:data:`AUDIT_PARAMETERS`), the required ones
    given."""
    foreign = sorted(set(params) & (parameters.names("release") - AUDIT_PARAMETERS))
    if foreign:
        raise SpecError(
            f"audit does not take {foreign}: it builds its own data, columns and region; pass "
            f"only release parameters among {sorted(AUDIT_PARAMETERS)}"
        )
    check_keywords("audit", params)  # a misspelt name: "did you mean"
    if zones and "resolution" in params:
        raise SpecError(
            "an audit of a zone release publishes one row per zone, not H3 cells; drop the "
            "resolution"
        )
    for key in ("epsilon",) if zones else ("resolution", "epsilon"):
        if key not in params:
            raise SpecError(f"audit needs {key}=...; pass the parameters of the release to audit")


def _whole(value: Any, minimum: int) -> bool:
    """Whether ``value`` is a whole number (not a bool) ≥ ``minimum``."""
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


def _check_settings(
    *,
    runs: Any,
    alpha: Any,
    level: Any,
    selection_fraction: Any,
    adversary_records: Any,
    adversary_cells: Any,
    batch: Any,
    data_seed: Any,
) -> None:
    """The audit's own settings, each with a one-line error naming the fix."""
    if not _whole(runs, 4):
        raise SpecError(f"runs must be a whole number ≥ 4, got {runs!r}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise SpecError(f"alpha must be in (0, 1), got {alpha!r}; e.g. alpha=1e-6")
    if level not in ("release", "mechanism"):
        raise SpecError(f"level must be 'release' or 'mechanism', got {level!r}")
    if not 0 < selection_fraction < 1:
        raise SpecError(f"selection_fraction must be in (0, 1), got {selection_fraction!r}")
    if not _whole(adversary_records, 1):
        raise SpecError(f"adversary_records must be a whole number ≥ 1, got {adversary_records!r}")
    if adversary_cells is not None and not (_whole(adversary_cells, 1) and adversary_cells <= 7):
        raise SpecError(f"adversary_cells must be a whole number 1..7, got {adversary_cells!r}")
    if not _whole(batch, 1):
        raise SpecError(f"batch must be a whole number ≥ 1, got {batch!r}")
    if data_seed is not None and not _whole(data_seed, 0):
        raise SpecError(f"data_seed must be a whole number ≥ 0 or None (fresh), got {data_seed!r}")


@dataclass(frozen=True)
class _Claim:
    """What the audited release claims: dpmap's plan for these parameters."""

    kwargs: dict[str, Any]  # the release's keywords (without the region)
    spec: Any
    epsilon: float
    delta: float
    threshold: int | None  # private discovery's threshold
    adaptive_root: int | None
    mode: str  # flat, hierarchical, adaptive or discovery
    mode_name: str


def _claim(
    params: dict[str, Any],
    *,
    discovery: bool,
    centre: tuple[float, float],
    level: str,
    zones: bool = False,
) -> _Claim:
    """The release's keywords on the synthetic data, and what dpmap plans (and states in
    every manifest) for them, planned over a probe region near ``centre`` (or over the
    audit's own zones)."""
    kwargs = dict(params)
    if kwargs.get("bounds") is not None:
        kwargs["bounds"] = tuple(kwargs["bounds"])
        kwargs["value"] = "amount"
    kwargs["person"] = "pid"
    if zones:
        kwargs.update(zones=_audit_zones(centre), by=_ZONE_BY)
    probe_region = None
    if not discovery and not zones:
        probe_region = shapely.box(
            centre[1] - 0.01, centre[0] - 0.01, centre[1] + 0.01, centre[0] + 0.01
        )
    ex = explain(region=probe_region, **kwargs)
    spec = ex.spec
    if zones:
        mode = "zones"
    elif spec.hierarchical:
        mode = "hierarchical"
    elif bool(kwargs.get("adaptive", False)):
        mode = "adaptive"
    elif discovery:
        mode = "discovery"
    else:
        mode = "flat"
    if level == "mechanism" and mode != "flat":
        raise SpecError(
            "level='mechanism' audits the noise of flat releases over a region; use "
            "level='release' for hierarchical, adaptive and discovery releases"
        )
    return _Claim(
        kwargs=kwargs,
        spec=spec,
        epsilon=float(ex.plan.epsilon),
        delta=float(ex.plan.delta),
        threshold=ex.plan.threshold,
        adaptive_root=ex.adaptive["root_resolution"] if ex.adaptive else None,
        mode=mode,
        mode_name=f"{mode}, {spec.mechanism}" + (", count + sum" if spec.value else ", count"),
    )


def _audit_zones(centre: tuple[float, float]) -> Any:
    """The seven cells of the audit's disk as zones, each named by its cell."""
    import geopandas as gpd

    cells = sorted(h3.grid_disk(h3.latlng_to_cell(centre[0], centre[1], ZONE_RESOLUTION), 1))
    polys = [shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(c)]) for c in cells]
    return gpd.GeoDataFrame({_ZONE_BY: cells}, geometry=polys, crs="EPSG:4326")


def _release_runs(
    fn: Callable[..., Any],
    setup: _Setup,
    kwargs: dict[str, Any],
    observer: _Observer,
    runs: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float | None]:
    """Observations of ``runs`` whole releases of D and of D′, and the ε the first
    release's manifest states."""
    manifest_eps: float | None = None
    datasets = (setup.d, setup.d_prime)
    per_run: list[list[dict[str, float]]] = [[], []]
    for r in range(runs):
        for which in (0, 1):  # interleaved, so that both see the same conditions
            rel = fn(datasets[which], **kwargs)
            per_run[which].append(observer.from_release(rel))
            if manifest_eps is None:
                manifest_eps = float(rel.manifest["privacy"]["epsilon"])
        if progress is not None:
            progress(r + 1, runs)
    names = sorted(set().union(*per_run[0], *per_run[1]))
    return _stack(per_run[0], names), _stack(per_run[1], names), manifest_eps


def _families(
    obs0: dict[str, np.ndarray],
    obs1: dict[str, np.ndarray],
    n_sel: int,
    n_eval: int,
    delta: float,
    alpha: float,
    targets: list[str],
) -> tuple[list[EventResult], float]:
    """The best event of each family, chosen on the first ``n_sel`` runs and measured on
    the rest, and the one-sided level each bound is taken at."""
    names = sorted(obs0)
    for key, (s0, s1) in _score_observations(obs0, obs1, names, n_sel).items():
        obs0[key], obs1[key] = s0, s1
        names.append(key)
    sel0, sel1 = {k: v[:n_sel] for k, v in obs0.items()}, {k: v[:n_sel] for k, v in obs1.items()}
    ev0, ev1 = {k: v[n_sel:] for k, v in obs0.items()}, {k: v[n_sel:] for k, v in obs1.items()}
    # families with an observation that varies on the selection runs (decided before
    # looking at the evaluation runs, so the Bonferroni count is fixed in advance)
    fams: dict[str, list[str]] = {}
    for name in names:
        fam = name.split(":", 1)[0]
        if fam not in FAMILIES:
            continue
        pooled = np.concatenate([sel0[name], sel1[name]])
        if pooled.min() != pooled.max():
            fams.setdefault(fam, []).append(name)
    a_side = alpha / (2 * max(1, len(fams)))
    z = NormalDist().inv_cdf(1 - a_side)
    results = []
    for fam in FAMILIES:
        if fam not in fams:
            continue
        ev = _choose(sel0, sel1, fams[fam], delta, z, n_eval)
        if ev is None:  # pragma: no cover - a varying observation always yields an event
            continue
        results.append(_measure(ev, ev0, ev1, delta, a_side, fam, targets))
    return results, a_side


def _notes(manifest_eps: float | None, claimed_eps: float) -> list[str]:
    if manifest_eps is not None and not math.isclose(manifest_eps, claimed_eps, rel_tol=1e-9):
        return [
            f"the releases' manifests state ε = {manifest_eps:.6g}, but dpmap plans ε = "
            f"{claimed_eps:.6g} for these parameters (the audit holds the release to the plan)"
        ]
    return []


def _mechanism_runs(
    spec: Any,
    setup: _Setup,
    observer: _Observer,
    runs: int,
    noise_fn: Callable[[Any], Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]] | None,
    batch: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    region = grid.to_region(setup.region)
    domain = grid.region_to_cells(region, spec.finest)
    hex_domain = list(grid.cells_to_hex(domain))
    positions = [hex_domain.index(t) for t in setup.targets]
    vectors = [
        local.bound_and_aggregate(df, spec, domain).densify(domain, 1)
        for df in (setup.d, setup.d_prime)
    ]
    make = noise_fn if noise_fn is not None else (lambda s: plan_noise(s).run_dense)
    noise = make(spec)
    parts: list[list[dict[str, np.ndarray]]] = [[], []]
    done = 0
    while done < runs:
        b = min(batch, runs - done)
        for which in (0, 1):
            noisy = noise({k: np.tile(v, b) for k, v in vectors[which].items()})
            parts[which].append(observer.from_vectors(noisy, len(domain), positions))
        done += b
        if progress is not None:
            progress(done, runs)
    obs0, obs1 = (
        {k: np.concatenate([p[k] for p in parts[w]]) for k in parts[w][0]} for w in (0, 1)
    )
    return obs0, obs1
