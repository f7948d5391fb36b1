"""Value distributions: private quantiles and value bands from one noisy value histogram.

A release with ``quantiles=`` or ``value_bands=`` measures, for every row (cell or zone),
the counts of the clamped values in every node of the public value tree
(:class:`dpmap.valuetree.ValueTree`, fixed by the bounds), as one more noisy vector
``hist`` (rows × nodes) of the release's one composed OpenDP measurement, with its own share
of ε (``histogram_share``) and the sensitivity of
:func:`dpmap._privacy.bounding.histogram_sensitivity`. Everything here is post-processing of
that noisy vector:

1. **Consistent counts.** Every node has the same noise variance σ², so the least-squares
   leaf counts are x̂ = P·y with P = (AᵀA)⁻¹Aᵀ (A adds leaves into nodes): unbiased, and the
   sums of x̂ over any node equal that node's consistent count.
2. **CDF.** F̂_j = Σ_{k≤j} x̂_k (the count up to the right edge of leaf j) is linear in y, so
   its exact noise variance is σ²·‖R_j‖² with R_j = Σ_{k≤j} P_k. The published CDF is the
   running maximum of F̂, at least 0 (monotone).
3. **Quantile.** q_p is where that CDF crosses p·T̂ (T̂: its last value), interpolated
   linearly inside the leaf; a row whose T̂ ≤ 0 has no quantile (NaN).
4. **Interval.** With D̂_j = F̂_j − p·F̂_last and the true D_j = F_j − p·N (nondecreasing
   in j), the leaf j* that holds the true quantile is the one with D_{j*−1} < 0 ≤ D_{j*}.
   A *simultaneous* band |D̂_j − D_j| ≤ z_p·sd_j for every leaf j at once (sd_j exact:
   σ·‖R_j − p·R_last‖) gives, by monotonicity, j* > every j with D̂_j + z_p·sd_j < 0 and
   j* ≤ every j with D̂_j − z_p·sd_j ≥ 0: [q_lo, q_hi] runs from the left edge of the leaf
   after the last of the former to the right edge of the first of the latter. The factor
   z_p is the 96.5% quantile of max_j |D̂_j − D_j| / sd_j, which depends on public
   parameters only (the tree, the mechanism, the noise scale and p) and is computed by
   simulating :data:`SIMULATIONS` draws of the same noise (seeded, no data): with that many
   draws the simulated quantile lies below the true 95% one with probability < 1e-4 (4.4
   binomial standard deviations), so the interval covers the true quantile with probability
   **at least 95%**, for every row and quantile. (A pointwise 95% margin at each leaf would be
   narrower near the quantile but lets far-away leaves through by chance: measured, its hull
   was up to 3.4 times wider for the median, in tests/test_quantiles.py's setting.)
5. **Value bands.** A band [a, b) (edges are tree edges) is F̂ at b less F̂ at a, with the
   same exact variance and a 95% margin of z·sd.
6. **Sums of rows** (roll-ups to zones, the coarser cells of a hierarchical release). The
   noisy node vector of a sum y_Z = Σ_c w_c·y_c has, at every node, the noise variance
   σ²·Σ_c w_c²·m_c (m_c: how many measured rows' noise row c already holds, 1 for a measured
   row): again the same for every node, so steps 1–5 apply with that variance
   (:func:`histogram_columns` takes one variance per row). The band factor z_p stays the
   one simulated for one row's noise: a sum of several independent noise vectors has
   lighter tails than one (it tends to the normal), so that factor is **conservative for
   sums**; tests/test_quantiles.py checks the coverage of sums of 1, 2 and many rows by
   simulation.
7. **Borders** (roll-ups to polygons that split cells). Steps 1–6 on the area-apportioned
   sum give the point estimate, but its interval would assume the records of a split cell
   are spread evenly — values included — which nothing guarantees. The interval holds
   whatever share of a split cell's records lies inside: with I the cells wholly inside
   and B the split cells (whole), the polygon's true F_Z(v) − p·N_Z lies between
   U = F_I − p·N_I − p·(N_B − F_B) and L = F_I − p·N_I + (1 − p)·F_B at every leaf edge
   (both are linear in the noisy histograms). The quantile's leaf is surely after j when
   L̂_j plus its band is < 0, and surely at or before j when Û_j less its band is ≥ 0. The
   band adds a simultaneous band of the inside part (factor z_p at 97.5%) and one of the
   split cells' counts at or below and above every edge (factor :func:`cdf_band_z`, at
   97.5%): both hold with probability ≥ 95% (union bound), and then the interval covers.
   Value bands likewise: ``band_a_b_lo`` = inside − margin, ``band_a_b_hi`` = inside + the
   whole split cells + margin (one-sided 97.5% margins), as ``count_lo``/``count_hi``.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dpmap._privacy.noise import NoisePlan, noise_variance
from dpmap.aggregates import BoundedAggregates
from dpmap.errors import SpecError
from dpmap.spec import Mechanism, ReleaseSpec, band_name, quantile_name
from dpmap.valuetree import ValueTree

__all__ = [
    "MAX_HISTOGRAM_VALUES",
    "METHOD",
    "SIMULATIONS",
    "band_z",
    "border_intervals",
    "cdf_band_z",
    "check_histogram_size",
    "distribution_columns",
    "distribution_manifest",
    "expected_quantile_error",
    "explain_distribution",
    "histogram_columns",
    "interval_z",
    "manifest_border_intervals",
    "manifest_histogram_columns",
    "measure_dense",
    "node_names",
    "with_histogram",
]

#: the method as the manifest states it
METHOD = (
    "least-squares consistent counts of a public value tree; quantile where the monotone noisy "
    "CDF crosses p·total (linear inside the leaf); interval: the leaves a simultaneous band of "
    "the noisy CDF at p·total (factor from a seeded simulation of the noise) cannot exclude, "
    "coverage at least 95%; value bands: consistent counts with the Laplace-tail (or normal) "
    "95% margin"
)


#: most noisy histogram values a release draws (rows × tree nodes, int64 in memory)
MAX_HISTOGRAM_VALUES = 50_000_000


def check_histogram_size(spec: ReleaseSpec, rows: int) -> None:
    """Refuse, before any data or budget, a histogram too large to hold in memory."""
    if spec.histogram and rows * spec.value_tree.nodes > MAX_HISTOGRAM_VALUES:
        raise SpecError(
            f"quantiles/value_bands over {rows:,} rows need {rows * spec.value_tree.nodes:,} "
            f"noisy histogram values, more than {MAX_HISTOGRAM_VALUES:,}; use a coarser "
            "resolution, a smaller region or zones"
        )


#: simulated noise draws that calibrate the simultaneous band of the CDF
SIMULATIONS = 4000
#: the quantile of the simulated maximum used (95% plus 4.4 binomial sds of the simulation)
BAND_LEVEL = 0.965
#: the simulation's fixed seed: the band factor is a public function of public parameters
BAND_SEED = 20_261_206


@functools.lru_cache(maxsize=64)
def band_z(
    branching: int, depth: int, mechanism: str, scale: float, p: float, level: float = BAND_LEVEL
) -> float:
    """z_p: the ``level`` quantile (default :data:`BAND_LEVEL`) of max_j |D̂_j − D_j| / sd_j
    under the release's own noise (discrete Laplace as a difference of two geometric
    variables, or Gaussian), from :data:`SIMULATIONS` seeded draws. Public: no data is
    involved."""
    _p, r = projection(branching, depth)
    return _simulated_band(r - p * r[-1], mechanism, scale, level, BAND_SEED)


#: each of the two simultaneous bands of a border-aware roll-up interval holds with
#: probability 97.5%; the simulated quantile used adds 4.4 binomial sds of the simulation
HALF_BAND_LEVEL = 0.986


@functools.lru_cache(maxsize=16)
def cdf_band_z(branching: int, depth: int, mechanism: str, scale: float) -> float:
    """The :data:`HALF_BAND_LEVEL` quantile of the largest standardised error, over every
    leaf edge, of the noisy count at or below the edge and of the count above it: one
    simultaneous band for both (used for the cells a roll-up's border splits)."""
    _p, r = projection(branching, depth)
    family = np.vstack([r, r[-1] - r[:-1]])  # at or below each edge; above each inner edge
    return _simulated_band(family, mechanism, scale, HALF_BAND_LEVEL, BAND_SEED + 1)


def _simulated_band(
    family: np.ndarray, mechanism: str, scale: float, level: float, seed: int
) -> float:
    """The ``level`` quantile of max_j |family_j·η| / sd_j over :data:`SIMULATIONS` seeded
    draws η of one row's noise."""
    laplace = mechanism == str(Mechanism.LAPLACE)
    variance = noise_variance(Mechanism(mechanism), scale)
    sd = np.sqrt(variance * np.einsum("ij,ij->i", family, family))
    rng = np.random.default_rng(seed)
    worst = []
    for _ in range(SIMULATIONS // 500):
        shape = (500, family.shape[1])
        if laplace:
            q = 1.0 - math.exp(-1.0 / scale)
            noise = (rng.geometric(q, shape) - rng.geometric(q, shape)).astype(np.float64)
        else:
            noise = rng.normal(0.0, scale, shape)
        worst.append(np.max(np.abs(noise @ family.T) / sd, axis=1))
    return float(np.quantile(np.concatenate(worst), level))


def interval_z(mechanism: Mechanism) -> float:
    """The one-sided 97.5% factor: the Laplace tail ln(20)/√2 for Laplace noise, 1.96 for
    Gaussian (a two-sided 95% margin of one band uses the same factor)."""
    return math.log(20) / math.sqrt(2) if mechanism is Mechanism.LAPLACE else 1.959963984540054


@functools.lru_cache(maxsize=4)
def projection(branching: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """(P, R): the least-squares leaves P = (AᵀA)⁻¹Aᵀ (leaves × nodes) and the cumulative
    rows R_j = Σ_{k≤j} P_k, for a tree whose nodes all have the same noise variance."""
    a = ValueTree(0, 1, branching, depth).node_matrix()
    p = np.linalg.solve(a.T @ a, a.T)
    return p, np.cumsum(p, axis=0)


def with_histogram(
    spec: ReleaseSpec,
    vectors: dict[str, np.ndarray],
    aggregates: BoundedAggregates,
    domain: np.ndarray,
) -> dict[str, np.ndarray]:
    """The dense vectors to noise plus the histogram's (rows × nodes, flattened), when the
    release measures one (the order of :meth:`ReleaseSpec.queries`)."""
    if not spec.histogram:
        return vectors
    tree = spec.value_tree
    cats = spec.rows_per_key  # one histogram per row: (cell or zone) × period × category
    row, leaf, count = aggregates.histogram_leaves(domain, cats)
    nodes = tree.node_vectors(row, leaf, count, len(domain) * cats)
    return {**vectors, "hist": nodes.reshape(-1)}


def _cdf(tree: ValueTree, noisy: np.ndarray) -> np.ndarray:
    """F̂ (rows × leaves): the consistent count up to each leaf's right edge."""
    _p, r = projection(tree.branching, tree.depth)
    y = np.asarray(noisy, dtype=np.float64).reshape(-1, tree.nodes)
    return y @ r.T


def _point(tree: ValueTree, cdf: np.ndarray, p: float) -> np.ndarray:
    """Where the monotone CDF crosses p·total, linear inside the leaf (NaN: total ≤ 0)."""
    g = np.maximum(np.maximum.accumulate(cdf, axis=1), 0.0)
    total = g[:, -1]
    t = p * total
    j = np.argmax(g >= t[:, None], axis=1)
    rows = np.arange(len(g))
    prev = np.where(j > 0, g[rows, np.maximum(j - 1, 0)], 0.0)
    step = g[rows, j] - prev
    frac = np.where(step > 0, (t - prev) / np.where(step > 0, step, 1.0), 0.0)
    edges = tree.edges()
    q = edges[j] + np.clip(frac, 0.0, 1.0) * (edges[j + 1] - edges[j])
    return np.where(total > 0, q, np.nan)


def _interval(
    tree: ValueTree, cdf: np.ndarray, p: float, variance: np.ndarray, z: float
) -> tuple[np.ndarray, np.ndarray]:
    """[q_lo, q_hi] from the simultaneous band of D̂ (see the module docstring); ``variance``:
    each row's per-node noise variance."""
    _p, r = projection(tree.branching, tree.depth)
    u = r - p * r[-1]
    half = z * np.sqrt(np.asarray(variance)[:, None] * np.einsum("ij,ij->i", u, u)[None, :])
    d = cdf - p * cdf[:, -1:]
    return _bracket(tree, d + half < 0, d - half >= 0)


def _bracket(
    tree: ValueTree, below: np.ndarray, reached: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """[q_lo, q_hi]: from the left edge of the leaf after the last one surely ``below`` the
    quantile's leaf to the right edge of the first one surely ``reached`` (at or after it);
    the whole range when the two contradict each other (the band itself failed)."""
    leaves = below.shape[1]
    last_below = np.where(below.any(axis=1), leaves - 1 - np.argmax(below[:, ::-1], axis=1), -1)
    first_reached = np.where(reached.any(axis=1), np.argmax(reached, axis=1), leaves - 1)
    edges = tree.edges()
    ok = last_below + 1 <= first_reached  # else the band itself failed: say nothing
    lo = np.where(ok, edges[last_below + 1], edges[0])
    hi = np.where(ok, edges[np.minimum(first_reached + 1, leaves)], edges[-1])
    return lo, hi


def border_intervals(
    tree: ValueTree,
    mechanism: Mechanism,
    scale: float,
    quantiles: Sequence[float] | None,
    value_bands: Sequence[float] | None,
    inside: tuple[np.ndarray, np.ndarray],
    border: tuple[np.ndarray, np.ndarray],
) -> dict[str, np.ndarray]:
    """Intervals for polygons whose border splits cells (roll-ups; module docstring, step 7):
    ``q50_lo``/``q50_hi`` and ``band_a_b_lo``/``band_a_b_hi`` per polygon, from ``inside``,
    the summed noisy node vectors of the cells wholly inside and their per-node variance,
    and ``border``, the same for the cells the border splits (whole cells, unweighted)."""
    (y_in, var_in), (y_b, var_b) = inside, border
    _p, r = projection(tree.branching, tree.depth)
    cdf_in, cdf_b = np.asarray(y_in) @ r.T, np.asarray(y_b) @ r.T
    var_in1, var_b1 = np.asarray(var_in, np.float64), np.asarray(var_b, np.float64)
    vi, vb = var_in1[:, None], var_b1[:, None]
    norm = lambda a: np.einsum("ij,ij->i", a, a)[None, :]  # noqa: E731
    zf = cdf_band_z(tree.branching, tree.depth, str(mechanism), scale)
    sd_f, sd_a = np.sqrt(vb * norm(r)), np.sqrt(vb * norm(r[-1] - r))
    out: dict[str, np.ndarray] = {}
    for p in quantiles or ():
        u = r - p * r[-1]
        d_in = cdf_in - p * cdf_in[:, -1:]
        upper = d_in + (1 - p) * cdf_b  # ≥ D_j whatever share of the border's records is in
        lower = d_in - p * (cdf_b[:, -1:] - cdf_b)  # ≤ D_j
        zi = band_z(tree.branching, tree.depth, str(mechanism), scale, p, HALF_BAND_LEVEL)
        half_i = zi * np.sqrt(vi * norm(u))
        below = upper + half_i + (1 - p) * zf * sd_f < 0
        reached = lower - half_i - p * zf * sd_a >= 0
        name = quantile_name(p)
        out[f"{name}_lo"], out[f"{name}_hi"] = _bracket(tree, below, reached)
    z = interval_z(mechanism)  # one-sided 97.5% at each end
    pad = np.zeros((len(cdf_in), 1))
    f_in, f_b = np.hstack([pad, cdf_in]), np.hstack([pad, cdf_b])
    rpad = np.vstack([np.zeros((1, r.shape[1])), r])
    for a, b in itertools.pairwise(value_bands or ()):
        ka, kb = tree.edge_position(a), tree.edge_position(b)
        assert ka is not None and kb is not None
        w = float((rpad[kb] - rpad[ka]) @ (rpad[kb] - rpad[ka]))
        n_in = f_in[:, kb] - f_in[:, ka]
        n_b = f_b[:, kb] - f_b[:, ka]
        name = band_name(a, b)
        out[f"{name}_lo"] = np.maximum(n_in - z * np.sqrt(var_in1 * w), 0.0)
        out[f"{name}_hi"] = np.maximum(n_in + n_b + z * np.sqrt((var_in1 + var_b1) * w), 0.0)
    return out


def quantile_z(spec: ReleaseSpec, noise: NoisePlan, p: float) -> float:
    """The simultaneous band factor z_p of this release's histogram noise."""
    tree = spec.value_tree
    scale = noise.statistics["hist"].scale
    return band_z(tree.branching, tree.depth, str(spec.mechanism), scale, p)


def distribution_columns(
    spec: ReleaseSpec, noise: NoisePlan, noisy: np.ndarray, variance: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The published columns (``q50``, ``q50_lo``, ``q50_hi``, ``band_a_b``, ``band_a_b_moe``,
    …) of every row, from the noisy histogram only (``variance``: each row's per-node noise
    variance; default: the measured one, σ²)."""
    hist = noise.statistics["hist"]
    y = np.asarray(noisy).reshape(-1, spec.value_tree.nodes)
    var = np.full(len(y), hist.variance) if variance is None else np.asarray(variance)
    return histogram_columns(
        spec.value_tree, spec.mechanism, hist.scale, spec.quantiles, spec.value_bands, y, var
    )


def histogram_columns(
    tree: ValueTree,
    mechanism: Mechanism,
    scale: float,
    quantiles: Sequence[float] | None,
    value_bands: Sequence[float] | None,
    y: np.ndarray,
    variance: np.ndarray,
) -> dict[str, np.ndarray]:
    """The distribution columns of noisy node vectors ``y`` (rows × nodes) that may be sums
    of measured rows: ``variance`` is each row's per-node noise variance (σ²·Σw² for a
    weighted sum), ``scale`` the measured noise's scale (the band factor is the one-row
    factor, conservative for sums: module docstring, step 6)."""
    variance = np.asarray(variance, dtype=np.float64)
    z = interval_z(mechanism)
    cdf = _cdf(tree, y)
    out: dict[str, np.ndarray] = {}
    for p in quantiles or ():
        name = quantile_name(p)
        zp = band_z(tree.branching, tree.depth, str(mechanism), scale, p)
        lo, hi = _interval(tree, cdf, p, variance, zp)
        # the point (where the monotone CDF crosses p·total) and the band (the raw CDF against
        # its own total) can disagree by noise: a median is never published outside its own
        # 95% interval (post-processing of the same noisy values)
        out[name] = np.clip(_point(tree, cdf, p), lo, hi)
        out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
    if value_bands:
        _p, r = projection(tree.branching, tree.depth)
        padded = np.concatenate([np.zeros((len(cdf), 1)), cdf], axis=1)
        rpad = np.vstack([np.zeros((1, r.shape[1])), r])
        for a, b in itertools.pairwise(value_bands):
            ka, kb = tree.edge_position(a), tree.edge_position(b)
            assert ka is not None and kb is not None
            name = band_name(a, b)
            out[name] = padded[:, kb] - padded[:, ka]
            w = rpad[kb] - rpad[ka]
            out[f"{name}_moe"] = z * np.sqrt(variance * float(w @ w))
    return out


def node_names(tree: ValueTree) -> list[str]:
    """The columns of a written histogram: ``node_a_b`` for the node holding values in
    [a, b), level by level (the order of :meth:`ValueTree.node_matrix`)."""
    edges = tree.edges()
    names = []
    for level in range(1, tree.depth + 1):
        step = tree.branching ** (tree.depth - level)
        names += [f"node_{edges[k]:g}_{edges[k + step]:g}" for k in range(0, tree.leaves, step)]
    return names


def manifest_histogram_columns(
    manifest: dict[str, Any], y: np.ndarray, variance: np.ndarray
) -> dict[str, np.ndarray]:
    """:func:`histogram_columns` with the public parameters a release's manifest states
    (its ``value_distribution`` entry): for roll-ups of a written or in-memory release."""
    tree, mechanism, vd = _manifest_tree(manifest)
    return histogram_columns(
        tree, mechanism, float(vd["scale"]), vd.get("quantiles"), vd.get("value_bands"), y, variance
    )


def manifest_border_intervals(
    manifest: dict[str, Any],
    inside: tuple[np.ndarray, np.ndarray],
    border: tuple[np.ndarray, np.ndarray],
) -> dict[str, np.ndarray]:
    """:func:`border_intervals` with the public parameters a release's manifest states."""
    tree, mechanism, vd = _manifest_tree(manifest)
    return border_intervals(
        tree, mechanism, float(vd["scale"]), vd.get("quantiles"), vd.get("value_bands"),
        inside, border,
    )  # fmt: skip


def _manifest_tree(manifest: dict[str, Any]) -> tuple[ValueTree, Mechanism, dict[str, Any]]:
    vd = manifest["value_distribution"]
    t = vd["tree"]
    tree = ValueTree(t["lo"], t["hi"], int(t["branching"]), int(t["depth"]))
    mechanism = Mechanism(vd.get("mechanism") or manifest["parameters"]["mechanism"])
    return tree, mechanism, vd


def expected_quantile_error(spec: ReleaseSpec, noise: NoisePlan) -> dict[str, float]:
    """Before any data: the noise's standard deviation on the CDF at the median (in people),
    the width of one leaf (in value units) and the interval factor z, for ``explain``."""
    tree = spec.value_tree
    _p, r = projection(tree.branching, tree.depth)
    mid = tree.leaves // 2 - 1
    u = r[mid] - 0.5 * r[-1]
    variance = noise.statistics["hist"].variance
    return {
        "cdf_sd_at_median": math.sqrt(variance * float(u @ u)),
        "leaf_width": (tree.hi - tree.lo) / tree.leaves,
        "z": quantile_z(spec, noise, 0.5),
    }


def distribution_manifest(spec: ReleaseSpec, noise: NoisePlan) -> dict[str, Any]:
    """The manifest's ``value_distribution`` entry (public parameters only; empty without
    a value histogram)."""
    if not spec.histogram:
        return {}
    hist = noise.statistics["hist"]
    return {
        "value_distribution": {
            "tree": spec.value_tree.describe(),
            "quantiles": list(spec.quantiles) if spec.quantiles else None,
            "value_bands": list(spec.value_bands) if spec.value_bands else None,
            "budget_share": spec.histogram_share,
            "sensitivity": {
                "l1": hist.sensitivity.l1,
                "l2": hist.sensitivity.l2,
                "linf": hist.sensitivity.linf,
            },
            "scale": hist.scale,
            "mechanism": str(spec.mechanism),
            "method": METHOD,
            "band_z": {quantile_name(p): quantile_z(spec, noise, p) for p in spec.quantiles or ()},
            "band_simulations": SIMULATIONS,
            "band_margin_z": interval_z(spec.mechanism),
            "coverage": "at least 95% per quantile and row (simultaneous band over the CDF)",
        }
    }


def measure_dense(
    spec: ReleaseSpec,
    noise: NoisePlan,
    aggregates: BoundedAggregates,
    domain: np.ndarray,
    cats: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Noise a dense design's vectors (and the value histogram, if any). Draws noise.

    Returns the noisy vectors and the distribution columns (None without a histogram)."""
    vectors = with_histogram(spec, aggregates.densify(domain, cats), aggregates, domain)
    noisy = noise.run_dense(vectors)
    if not spec.histogram:
        return noisy, None
    return noisy, distribution_columns(spec, noise, noisy["hist"])


def explain_distribution(spec: ReleaseSpec, noise: NoisePlan) -> list[str]:
    """The lines ``explain`` prints about quantiles and value bands (no data touched)."""
    if not spec.histogram:
        return []
    e = expected_quantile_error(spec, noise)
    tree, hist = spec.value_tree, noise.statistics["hist"]
    margin = e["z"] * e["cdf_sd_at_median"]
    lines = [
        f"  value histogram: {tree.leaves} bands of width {e['leaf_width']:.6g} over "
        f"[{tree.lo}, {tree.hi}] ({tree.depth} levels of {tree.branching}), noise scale "
        f"{hist.scale:.6g} per band, share {spec.histogram_share:.3g} of ε",
    ]
    if spec.quantiles:
        ranks = ", ".join(f"±{margin / n:.2g} with {n:,} records" for n in (100, 1_000, 10_000))
        lines.append(
            f"  quantiles {', '.join(map(quantile_name, spec.quantiles))}: the noisy CDF is "
            f"off by about ±{margin:.3g} records (sd {e['cdf_sd_at_median']:.3g}) at the "
            f"median, so the interval of q50 spans the true quantiles at ranks 0.5 {ranks} "
            f"in one row, plus one band of width {e['leaf_width']:.6g}; coverage at least 95%"
        )
    if spec.value_bands:
        lines.append(
            f"  value bands: {len(spec.value_bands) - 1} bands, each count within a 95% margin "
            "that depends on the band (see the band_*_moe columns)"
        )
    return lines
