"""A panel released continually: running totals by the binary-tree mechanism, month by month.

``dpmap.release(..., time=, periods=, max_periods=, running_totals=True, through="2026-03")``
plans the tree of :mod:`dpmap.designs.continual` over the WHOLE horizon (the public
periods), charges the ledger once for it, noises the nodes complete by ``through`` and
publishes one row per (cell or zone, period ≤ through[, category]): ``count`` (the period's
own estimate) and ``count_to_date`` (the running total), and with a value ``sum`` and
``sum_to_date``, each with its honest 95% margin. The next month,
``release(points, ..., through="2026-04", previous=march)`` takes the published nodes from
the March release's manifest (public outputs), checks that it is the same horizon, parameters,
area and ledger dataset (a fingerprint), charges nothing more, noises only the nodes completed
since and publishes: the values published for earlier periods never change.

Bounding: each person keeps their EARLIEST ``max_periods`` periods (``spec.earliest_periods``,
:mod:`dpmap.engines.bounding`), so a month that arrives later never changes the periods a
person counts in. Cells and records within a period are chosen by priority in each release;
the node sensitivities (:func:`dpmap.designs.continual.tree_factors`) hold for any choice per
node, since each node's bound assumes the worst alignment of the person's periods anyway.

Each node must be noised once: extending the same ``previous`` twice would draw the new nodes
twice, and averaging the two draws would spend budget nobody charged. So a continuation needs
the ledger that charged the horizon (``ledger=``, ``dataset=``: the dataset is part of the
fingerprint, and the charging entry must be in that ledger) and records there, before any
noise, an entry of ε = 0 with the unique claim ``"continual:<charging entry>:from:<previous
through>"`` (:meth:`ContinualRelease.continuation`; :meth:`dpmap.Ledger.reserve`). The chain is
linear, so a second continuation of the same release finds the claim taken and is refused
before any noise: continue from the latest release. A correction is a new horizon, charged
again.

Margins
-------
Every estimate is Σₙ wₙ·Zₙ over a few independent node noises Zₙ (discrete Laplace or
discrete Gaussian of the plan's scale). ``sd × normal factor`` under-covers these small
discrete sums (see :class:`dpmap.designs.continual.ContinualEstimates`), so the margins are:

* exact when every weight is ±1 (the prefix estimator: running totals and per-period values):
  the distribution of the sum of k such nodes is the k-fold convolution of the node's
  distribution (truncated where the tail is below e⁻⁴⁰, by FFT), and the margin is the
  smallest whole m with P(|Σ| ≤ m) ≥ 95%;
* otherwise (least-squares weights, or scales too large to convolve) a Chernoff bound, which
  is rigorous but conservative: for discrete Laplace P(Σ wₙZₙ > m) ≤ e^{−sm}·Πₙ M(s|wₙ|) with
  M(t) = (1−q)²/((1−qeᵗ)(1−qe⁻ᵗ)), q = e^{−1/b}, minimised over a grid of s; for the discrete
  Gaussian (σ-subgaussian) m = σ‖w‖·√(2 ln 40).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dpmap import grid
from dpmap._privacy.noise import NoisePlan
from dpmap._privacy.postprocess import CountNoise, Estimates
from dpmap.aggregates import BoundedAggregates
from dpmap.designs.base import (
    Correlation,
    DesignOptions,
    Measured,
    PeriodCovariance,
    RowsInfo,
    manifest_noise_variance,
    one_hot_weights,
)
from dpmap.designs.continual import (
    ContinualPlan,
    estimator_weights,
    measure_continual,
    plan_continual,
)
from dpmap.designs.flat import Flat
from dpmap.designs.zones import ZoneRelease
from dpmap.errors import SpecError
from dpmap.io import manifest_path, read_manifest
from dpmap.spec import ZONE_LEVEL, ReleaseSpec

__all__ = [
    "ContinualRelease",
    "chernoff_margin",
    "exact_margin",
    "period_margins",
    "weighted_margin",
]

#: the tails of a node's distribution left out of the exact convolution: below e⁻⁴⁰ each side
_TAIL = 40.0
#: the most lattice points the exact convolution handles (beyond: the Chernoff bound)
_MAX_LATTICE = 1 << 22


def _node_pmf(mechanism: str, scale: float) -> np.ndarray | None:
    """The pmf of one node's noise on -K..K (None when K is too large to convolve)."""
    if mechanism == "laplace":
        k = int(np.ceil(_TAIL * scale)) + 1
    else:
        k = int(np.ceil(np.sqrt(2 * _TAIL) * scale)) + 1
    if 2 * k + 1 > _MAX_LATTICE:
        return None
    x = np.arange(-k, k + 1, dtype=np.float64)
    logp = -np.abs(x) / scale if mechanism == "laplace" else -(x * x) / (2 * scale * scale)
    p = np.exp(logp - logp.max())
    return p / p.sum()


@lru_cache(maxsize=256)
def exact_margin(mechanism: str, scale: float, k: int, level: float = 0.95) -> float | None:
    """Smallest whole m with P(|Z₁ + … + Z_k| ≤ m) ≥ ``level`` for k independent node noises
    (discrete Laplace of scale b or discrete Gaussian of scale σ); None when too large."""
    if k == 0 or scale == 0:
        return 0.0
    pmf = _node_pmf(mechanism, scale)
    if pmf is None or k * len(pmf) > _MAX_LATTICE:
        return None
    n = k * (len(pmf) - 1) + 1
    size = 1 << (n - 1).bit_length()
    dist = np.fft.irfft(np.fft.rfft(pmf, size) ** k, size)[:n]
    dist = np.clip(dist, 0.0, None)
    centre = n // 2  # the sum's support is symmetric: -kK..kK
    inside = dist[centre] + 2 * np.cumsum(dist[centre + 1 :])  # P(|S| ≤ m), m = 1, 2, ...
    cover = np.concatenate([[dist[centre]], inside]) / dist.sum()
    # 1e-9: above the FFT's rounding, so a margin is never chosen on rounding noise
    return float(np.argmax(cover >= level + 1e-9))


def chernoff_margin(
    mechanism: str, scale: float, weights: np.ndarray, level: float = 0.95
) -> float:
    """A margin m with P(|Σ wₙZₙ| > m) ≤ 1 − ``level`` for independent node noises, by the
    Chernoff bound (rigorous, conservative; see the module docstring)."""
    a = np.abs(np.asarray(weights, dtype=np.float64))
    a = a[a > 0]
    if not len(a) or scale == 0:
        return 0.0
    log_tail = np.log(2.0 / (1.0 - level))  # two-sided: each side ≤ (1 − level)/2
    if mechanism == "gaussian":
        return float(scale * np.sqrt((a * a).sum()) * np.sqrt(2 * log_tail))
    q = np.exp(-1.0 / scale)
    s = np.linspace(0, 1.0 / (scale * a.max()), 4002)[1:-1]  # the MGF is finite for s·a < 1/b
    t = np.outer(s, a)
    log_mgf = 2 * np.log1p(-q) - np.log1p(-q * np.exp(t)) - np.log1p(-q * np.exp(-t))
    return float(((log_mgf.sum(axis=1) + log_tail) / s).min())


def weighted_margin(
    mechanism: str, scale: float, weights: np.ndarray, level: float = 0.95
) -> float:
    """The 95% (``level``) margin of Σ wₙZₙ: exact when every weight is ±1, else Chernoff."""
    w = np.asarray(weights, dtype=np.float64)
    nz = w[np.abs(w) > 1e-12]
    if np.allclose(np.abs(nz), 1.0, rtol=0, atol=1e-9):
        exact = exact_margin(mechanism, float(scale), len(nz), level)
        if exact is not None:
            return exact
    return chernoff_margin(mechanism, scale, nz, level)


def period_margins(plan: ContinualPlan, stat: str, upto: int) -> dict[str, np.ndarray]:
    """Per period 0..upto-1: the 95% and 97.5% margins of the value and of the running total."""
    w = estimator_weights(plan.periods, plan.tree, plan.estimator)
    d = np.diff(w, axis=0, prepend=np.zeros((1, w.shape[1])))
    mech, scale = str(plan.spec.mechanism), plan.noise.statistics[stat].scale
    out = {}
    for name, m in (("value", d), ("total", w)):
        for level in (0.95, 0.975):
            out[f"{name}{level}"] = np.array(
                [weighted_margin(mech, scale, m[t], level) for t in range(upto)]
            )
    return out


# ---------------------------------------------------------------------------------------
# the design


def _flat_spec(spec: ReleaseSpec) -> ReleaseSpec:
    """The spec without its periods: what one period's vector of cells is bounded to (the
    tree's sensitivities multiply it by the tree factors of ``max_periods`` periods)."""
    return dataclasses.replace(
        spec, time=None, periods=None, max_periods=None, running_totals=False
    )


def _through(spec: ReleaseSpec, through: Any) -> int:
    assert spec.periods is not None
    if through is None:
        return len(spec.periods) - 1
    try:
        return spec.periods.position(through)
    except SpecError:
        raise SpecError(
            f"through={str(through)!r} is not one of the periods ({spec.periods.labels[0]} .. "
            f"{spec.periods.labels[-1]}); pass the last period with data, e.g. "
            f"through={spec.periods.labels[0]!r}"
        ) from None


class ContinualRelease:
    """A panel's running totals by the tree mechanism (see the module docstring)."""

    kind: ClassVar[str] = "continual"
    several_levels: ClassVar[bool] = False
    mixed_resolutions: ClassVar[bool] = False

    def __init__(
        self, spec: ReleaseSpec, base: Any, plan: ContinualPlan, through: int, key: str
    ) -> None:
        self.spec, self.base, self.through, self.key = spec, base, through, key
        self.tree_plan = plan
        self.noise: NoisePlan = plan.noise
        self.domain: np.ndarray | None = base.domain
        self.integer = plan.estimator == "prefix"  # sums and differences of whole nodes
        self.previous: dict[str, np.ndarray] | None = None
        #: a continued release: the ledger entry of the release that charged the horizon
        self.charged_in: dict[str, Any] | None = None
        #: a continued release: the ``through`` label of the release it extends
        self.extends: str | None = None

    @classmethod
    def wants(cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions) -> bool:
        return spec.running_totals

    @classmethod
    def plan(
        cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions
    ) -> ContinualRelease:
        if options.adaptive is not None:
            raise SpecError(
                "running_totals=True is released over a region or zones; drop adaptive="
            )
        if region is None and spec.zones is None:
            raise SpecError(
                "running_totals=True needs a public region (or zones): pass region=... or zones=..."
            )
        flat = _flat_spec(spec)
        base_design = ZoneRelease if spec.zones is not None else Flat
        base = base_design.plan(flat, region, DesignOptions())  # the public cells or zones
        assert spec.periods is not None
        plan = plan_continual(flat, len(spec.periods), spec.periods_per_person)
        where = region.describe() if region is not None else None
        key = _fingerprint(spec, where, plan, options.dataset)
        design = cls(spec, base, plan, _through(spec, options.through), key)
        if options.previous is not None:
            manifest = _previous_manifest(options.previous)
            if cls.recognises(manifest):  # no ledger: say so before the fingerprint does
                design.charged_in = _charged_in(manifest)
            design.previous = design.previous_nodes(manifest)
            design.extends = str(manifest["continual"]["through"])
        return design

    def continuation(self) -> dict[str, Any] | None:
        """A continued release: the claim it records in the ledger (ε = 0) and the entry's
        details; ``None`` for a release that starts the horizon (and is charged for it).

        The claim ``"continual:<charging entry id>:from:<previous through>"`` is unique in
        the ledger, so the same earlier release can be extended only once (its new nodes
        noised once); the chain is linear, so this also refuses skipping ahead from an
        earlier release after a later one was published.
        """
        if self.charged_in is None:
            return None
        assert self.spec.periods is not None
        entry_id = int(self.charged_in["entry_id"])
        return {
            "claim": f"continual:{entry_id}:from:{self.extends}",
            "charged_in": entry_id,
            "dataset": self.charged_in["dataset"],
            "from": self.extends,
            "through": self.spec.periods.labels[self.through],
        }

    def latest_through(self, claims: list[dict[str, Any]]) -> str:
        """The latest ``through`` among the ``details`` of this horizon's continuation
        entries that count (for the message that names the release to continue from)."""
        assert self.spec.periods is not None
        labels = [str(d["through"]) for d in claims if d.get("through") in self.spec.periods.labels]
        return max(labels, key=self.spec.periods.position, default=str(self.extends))

    def previous_nodes(self, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
        """The published nodes of an earlier release of this horizon (checked)."""
        entry = manifest.get("continual")
        if not isinstance(entry, dict):
            raise SpecError(
                "previous= must be an earlier release of this panel with running_totals=True "
                "(a dpmap Release or its file), got one without; or drop previous= to start "
                "afresh (charges the whole horizon again)"
            )
        if entry.get("fingerprint") != self.key:
            raise SpecError(
                "previous= is a release of other parameters, periods, area or ledger dataset "
                f"(fingerprint {str(entry.get('fingerprint'))[:12]}… ≠ {self.key[:12]}…); pass "
                "the release of this horizon, or drop previous= to start afresh (charged again)"
            )
        before = int(entry["through_index"])
        if before > self.through:
            raise SpecError(
                f"through={self.spec.periods.labels[self.through]!r} is before the previous "  # type: ignore[union-attr]
                f"release's through={entry['through']!r}; pass a later period"
            )
        rows = len(self.base.domain) * (len(self.spec.categories) if self.spec.categories else 1)
        done = self.tree_plan.completed_by(before)
        nodes = {s: np.asarray(v, dtype=np.int64) for s, v in entry["nodes"].items()}
        if any(v.shape != (rows, done) for v in nodes.values()) or set(nodes) != set(
            self.noise.statistics
        ):
            raise SpecError(
                "previous= has damaged node values in its manifest; use the publisher's copy"
            )
        return nodes

    def rows(self) -> int | None:
        k = len(self.spec.categories) if self.spec.categories else 1
        return len(self.base.domain) * (self.through + 1) * k

    def count_noise(self) -> CountNoise | None:
        # each row its own variance (a sum of a few node noises): the default rule hides rows
        # below a map-wide multiple of their own sd, as for least-squares estimates
        return CountNoise(str(self.spec.mechanism), None)

    def describe(self) -> dict[str, Any] | None:
        return {"continual": self._public_entry()}

    def explain_lines(self) -> list[str]:
        p = self.tree_plan
        var = ", ".join(f"{s} {p.node_var(s):.4g}" for s in self.noise.statistics)
        return [
            f"  continual release: a {p.tree} tree of {len(p.nodes)} nodes over "
            f"{p.periods} periods ({p.estimator} estimator), node noise variance {var}; "
            "the whole horizon is charged once, each node is noised once"
        ]

    def measure(self, aggregates: BoundedAggregates) -> Measured:
        spec, domain = self.spec, self.base.domain
        assert spec.periods is not None and domain is not None
        k = len(spec.categories) if spec.categories else 1
        n_t, upto = len(spec.periods), self.through + 1
        dense = aggregates.densify(domain, n_t * k)
        stats = tuple(self.noise.statistics)
        mats = {
            s: dense[s].reshape(len(domain), n_t, k).transpose(0, 2, 1).reshape(-1, n_t)[:, :upto]
            for s in stats
        }
        est = measure_continual(self.tree_plan, mats, self.previous)

        def rows(a: np.ndarray) -> np.ndarray:  # (cell × category) × period -> cell, period, cat
            return a.reshape(len(domain), k, upto).transpose(0, 2, 1).reshape(-1)

        def per_row(a: np.ndarray) -> np.ndarray:  # one value per period, to every row
            return np.tile(np.repeat(a, k), len(domain))

        cols: dict[str, Any] = {}
        extra: dict[str, np.ndarray] = {}
        for s in stats:
            m = period_margins(self.tree_plan, s, upto)
            cols[s] = rows(est[s].values)
            cols[f"{s}_moe"], cols[f"{s}_moe975"] = (
                per_row(m["value0.95"]),
                per_row(m["value0.975"]),
            )
            cols[f"{s}_var"] = per_row(est[s].values_var)
            extra[f"{s}_to_date"] = rows(est[s].totals)
            extra[f"{s}_to_date_moe"] = per_row(m["total0.95"])
        n = len(cols["count"])
        return Measured(
            estimates=Estimates(**cols),
            cells=np.repeat(domain, upto * k),
            resolutions=np.full(n, ZONE_LEVEL if spec.zones is not None else spec.finest),
            category=np.tile(np.arange(k), n // k) if spec.categories else None,
            period=np.tile(np.repeat(np.arange(upto), k), len(domain)),
            zones=spec.zones,
            distribution=extra,
            drawn={"nodes": {s: est[s].nodes.tolist() for s in stats}},
        )

    def _public_entry(self) -> dict[str, Any]:
        p, spec = self.tree_plan, self.spec
        assert spec.periods is not None
        return {
            "tree": p.tree,
            "estimator": p.estimator,
            "horizon": p.periods,
            "max_periods": p.max_periods,
            "through": spec.periods.labels[self.through],
            "through_index": self.through,
            "node_intervals": [list(n) for n in p.nodes],
            "node_scale": {s: self.noise.statistics[s].scale for s in self.noise.statistics},
            "fingerprint": self.key,
            "continued": self.previous is not None,
            "margins": (
                "95% margins of weighted sums of node noises: exact (convolution) when every "
                "weight is ±1, else a Chernoff bound (conservative)"
            ),
        }

    def manifest_entries(self, measured: Measured) -> dict[str, Any]:
        entry = {**self._public_entry(), "nodes": measured.drawn["nodes"]}
        margins = (
            "95% margins of each period's value (count_moe, sum_moe) and of its running total "
            "(count_to_date_moe, sum_to_date_moe): weighted sums of a few node noises, exact "
            "by convolution when every weight is ±1, else a conservative Chernoff bound"
        )
        base = self.base.manifest_entries(measured)
        return {**base, "continual": entry, "margins": margins, "ledger": self.charged_in}

    @classmethod
    def recognises(cls, manifest: dict[str, Any]) -> bool:
        return isinstance(manifest.get("continual"), dict)

    @classmethod
    def correlation(cls, manifest: dict[str, Any], rows: RowsInfo) -> Correlation:
        # rows of one period are independent across cells (each cell has its own nodes);
        # each row has its own variance (from its margin when a file has no estimates)
        return Correlation(own_variances=True)

    @classmethod
    def period_covariance(cls, manifest: dict[str, Any]) -> PeriodCovariance | None:
        """A row's published periods share the tree's nodes: their exact covariance (see the
        module function :func:`period_covariance`); each period is its own one-hot vector."""
        cov = period_covariance(manifest)
        labels = manifest.get("periods")
        if cov is None or not isinstance(labels, list):
            return None
        through = int(manifest["continual"]["through_index"])  # published up to `through`
        names = tuple(str(x) for x in labels[: through + 1])
        return PeriodCovariance(names, cov, one_hot_weights(names))


def period_covariance(manifest: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """Statistic -> the exact noise covariance of one row's published period values (the
    periods up to ``through``) of a continual release, None for any other release.

    A period's value is the difference of two running totals, each a weighted sum of the
    row's noisy nodes (:func:`dpmap.designs.continual.estimator_weights`), so the values of
    one row share nodes: covariance σ²·D Dᵀ with D the differenced weights and σ² one
    node's noise variance (public)."""
    entry = manifest.get("continual")
    if not isinstance(entry, dict):
        return None
    w = estimator_weights(int(entry["horizon"]), str(entry["tree"]), str(entry["estimator"]))
    d = np.diff(w, axis=0, prepend=np.zeros((1, w.shape[1])))[: int(entry["through_index"]) + 1]
    out = {}
    for stat, scale in entry["node_scale"].items():
        node = {**manifest["statistics"][stat], "scale": scale}
        out[stat] = manifest_noise_variance(node) * (d @ d.T)
    return out


def _previous_manifest(previous: Any) -> dict[str, Any]:
    """The manifest of ``previous=``: a Release, or the path of a release file."""
    if isinstance(previous, (str, os.PathLike)):
        return read_manifest(manifest_path(Path(previous)))
    manifest = getattr(previous, "manifest", None)
    if not isinstance(manifest, dict):
        raise SpecError(
            "previous= must be an earlier release of this panel with running_totals=True (a "
            f"dpmap Release or its file), got {type(previous).__name__}; or drop previous= to "
            "start afresh (charges the whole horizon again)"
        )
    return manifest


def _charged_in(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ledger entry that charged the horizon, from the manifest of ``previous=``."""
    ledger = manifest.get("ledger")
    if not (
        isinstance(ledger, dict)
        and isinstance(ledger.get("entry_id"), int)
        and isinstance(ledger.get("dataset"), str)
    ):
        raise SpecError(
            "previous= was released without a ledger, so nothing records which periods were "
            "published; a continual release is continued only through the ledger that charged "
            "its horizon: start it afresh with ledger= and dataset= (charges the whole horizon)"
        )
    return {"dataset": ledger["dataset"], "entry_id": ledger["entry_id"]}


def _fingerprint(spec: ReleaseSpec, where: Any, plan: ContinualPlan, dataset: Any) -> str:
    """What a continued release must share with the one it extends (all public)."""
    text = json.dumps(
        {
            "parameters": spec.public_dict(),
            "region": where,
            "tree": plan.tree,
            "estimator": plan.estimator,
            "dataset": dataset,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()
