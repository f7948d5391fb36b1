"""Private quantiles and value bands: the value histogram's accounting, its sensitivity, the
engines' histogram aggregates, the coverage of the quantile intervals, and bad input.

See :mod:`dpmap.designs.distribution` for the method and :func:`dpmap._privacy.bounding.
histogram_sensitivity` for the sensitivity that these tests check against the engines.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

import dpmap
from common import (
    REGION,
    RESOLUTION,
    cell_centre,
    import_or_skip,
    interior_cells,
    numpy_noise,
    skip_or_fail,
)
from dpmap._privacy.bounding import histogram_sensitivity
from dpmap._privacy.noise import plan_noise
from dpmap.aggregates import BoundedAggregates
from dpmap.designs.distribution import distribution_columns, interval_z
from dpmap.engines import frames, local, streaming
from dpmap.errors import SpecError
from dpmap.grid import region_to_cells, to_region
from dpmap.spec import ReleaseSpec
from dpmap.valuetree import ValueTree

DOMAIN = region_to_cells(to_region(REGION), RESOLUTION)
CELLS = interior_cells(6)
BOUNDS = (0, 50_000)


def spec_with(**kw: Any) -> ReleaseSpec:
    base: dict[str, Any] = {
        "resolution": RESOLUTION,
        "epsilon": 1.0,
        "person": "pid",
        "value": "amount",
        "bounds": BOUNDS,
        "quantiles": (0.25, 0.5, 0.75),
    }
    return ReleaseSpec(**{**base, **kw})


# --------------------------------------------------------------------- the privacy map


@pytest.mark.parametrize(("l0", "linf"), [(1, 1), (2, 3), (5, 2)])
def test_laplace_histogram_privacy_map_is_exact(l0: int, linf: int) -> None:
    """L1 = L0·L∞·D (D = 3 measured levels), scale = L1 / (share·ε), and OpenDP's map of
    the composed measurement gives exactly the ε asked for, the histogram its share."""
    spec = spec_with(max_cells=l0, max_records_per_cell=linf, histogram_share=0.5)
    plan = plan_noise(spec)
    hist = plan.statistics["hist"]
    assert hist.sensitivity.l1 == l0 * linf * 3
    assert hist.sensitivity.linf == linf
    assert hist.sensitivity.l2 == pytest.approx(math.sqrt(l0 * 3 * linf**2), rel=1e-15)
    assert hist.sensitivity.l2**2 >= l0 * 3 * linf**2  # rounded up, never down
    assert hist.scale == pytest.approx(l0 * linf * 3 / 0.5, rel=1e-12)
    assert hist.epsilon == pytest.approx(0.5, rel=1e-12)
    assert plan.statistics["count"].epsilon == pytest.approx(0.25, rel=1e-12)
    assert plan.statistics["sum"].epsilon == pytest.approx(0.25, rel=1e-12)
    assert plan.epsilon <= 1.0
    assert plan.epsilon == pytest.approx(1.0, rel=1e-12)


def test_gaussian_histogram_scale_follows_its_rho_share() -> None:
    spec = spec_with(mechanism="gaussian", delta=1e-6, max_cells=2, histogram_share=0.3)
    plan = plan_noise(spec)
    hist, count = plan.statistics["hist"], plan.statistics["count"]
    assert hist.sensitivity.l2 == pytest.approx(math.sqrt(2 * 3), rel=1e-15)
    # each vector's ρ = Δ2² / (2σ²) is its share of the total ρ
    assert hist.rho == pytest.approx(0.3 * plan.rho, rel=1e-9)
    assert count.rho == pytest.approx(0.7 * 0.5 * plan.rho, rel=1e-9)
    assert hist.rho == pytest.approx(hist.sensitivity.l2**2 / (2 * hist.scale**2), rel=1e-9)
    assert plan.epsilon <= 1.0


def test_the_manifest_states_the_split_and_the_sensitivity() -> None:
    rel = dpmap.release(points(200), region=REGION, resolution=RESOLUTION, **release_kw())
    m = rel.manifest
    assert m["statistics"]["hist"]["sensitivity"]["l1"] == 3
    assert m["statistics"]["hist"]["budget_share"] == pytest.approx(0.5)
    vd = m["value_distribution"]
    assert vd["budget_share"] == 0.5 and vd["sensitivity"]["l1"] == 3
    assert vd["tree"]["leaves"] == 1000 and "coverage" in vd and "method" in vd
    assert m["parameters"]["quantiles"] == [0.25, 0.5, 0.75]


# ------------------------------------------------------------------ the sensitivity


def points(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cells = [CELLS[i] for i in rng.integers(0, len(CELLS), n)]
    lat, lng = zip(*(cell_centre(c) for c in cells), strict=True)
    return pd.DataFrame(
        {
            "lat": lat,
            "lng": lng,
            "pid": [f"p{i}" for i in rng.integers(0, max(1, n // 2), n)],
            "amount": rng.lognormal(8, 1.5, n),
        }
    )


def release_kw(**kw: Any) -> dict[str, Any]:
    return {
        "epsilon": 1.0,
        "person": "pid",
        "value": "amount",
        "bounds": BOUNDS,
        "quantiles": [0.25, 0.5, 0.75],
        **kw,
    }


def nodes(agg: BoundedAggregates, spec: ReleaseSpec) -> np.ndarray:
    row, leaf, count = agg.histogram_leaves(DOMAIN)
    return spec.value_tree.node_vectors(row, leaf, count, len(DOMAIN)).reshape(-1)


def insert(base: pd.DataFrame, extra: pd.DataFrame, place: str) -> pd.DataFrame:
    if place == "first":
        out = pd.concat([extra, base])
    elif place == "last":
        out = pd.concat([base, extra])
    else:
        half = len(base) // 2 + 1
        out = pd.concat([base.iloc[:half], extra, base.iloc[half:]])
    return out.reset_index(drop=True)


VALUES = st.one_of(
    st.floats(-1e15, 1e15, allow_nan=False), st.sampled_from([-1.0, 0.0, 49_999.6, 5e4, 6e4])
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    extra=st.lists(st.tuples(st.integers(0, len(CELLS) - 1), VALUES), min_size=1, max_size=14),
    place=st.sampled_from(["first", "middle", "last"]),
    l0=st.integers(1, 3),
    linf=st.integers(1, 3),
    streamed=st.booleans(),
)
def test_one_person_moves_the_histogram_by_at_most_its_sensitivity(
    extra: list[tuple[int, float]], place: str, l0: int, linf: int, streamed: bool
) -> None:
    """One extra person (records in up to 6 cells, any values, beyond every bound) inserted
    first, in the middle or last: the node vector moves by at most the claimed L1, L2 and
    L∞, and nobody else's records move (hash selection: exact)."""
    spec = spec_with(max_cells=l0, max_records_per_cell=linf, selection="hash", seed=7)
    base = points(300, seed=3)
    rows = []
    for cell, value in extra:
        lat, lng = cell_centre(CELLS[cell])
        rows.append({"lat": lat, "lng": lng, "pid": "extra", "amount": value})
    person = pd.DataFrame(rows)

    def run(df: pd.DataFrame) -> BoundedAggregates:
        if streamed:
            return streaming.bound_and_aggregate(df, spec, DOMAIN, batch_rows=97, part_bytes=4096)
        return local.bound_and_aggregate(df, spec, DOMAIN)

    before, after = nodes(run(base), spec), nodes(run(insert(base, person, place)), spec)
    alone = nodes(run(person), spec)
    diff = after - before
    assert np.array_equal(diff, alone)  # only the extra person's own records moved
    sens = histogram_sensitivity(spec)
    assert np.abs(diff).sum() <= sens.l1
    assert float(np.sqrt((diff.astype(float) ** 2).sum())) <= sens.l2
    assert np.abs(diff).max() <= sens.linf
    assert np.count_nonzero(diff) <= sens.l0
    # the histogram and the counts agree: every kept record is in one node per level
    agg = run(insert(base, person, place))
    assert int(agg.hist[2].sum()) == int(agg.count.sum())


def test_values_beyond_the_bounds_land_in_the_end_bands() -> None:
    """Clamping happens before the histogram: −5 is in the first band, 1e12 in the last."""
    spec = spec_with()
    lat, lng = cell_centre(CELLS[0])
    df = pd.DataFrame(
        {"lat": [lat] * 3, "lng": [lng] * 3, "pid": ["a", "b", "c"], "amount": [-5.0, 1e12, 50.0]}
    )
    agg = local.bound_and_aggregate(df, spec, DOMAIN)
    _cells, leaf, count = agg.hist
    assert dict(zip(leaf.tolist(), count.tolist(), strict=True)) == {0: 1, 1: 1, 999: 1}


def test_the_leaf_rule_is_the_value_trees() -> None:
    tree = ValueTree(0, 50_000)
    v = np.array([0, 49, 50, 999, 1000, 49_999, 50_000])
    assert tree.leaf_of(v).tolist() == [0, 0, 1, 19, 20, 999, 999]
    spec = spec_with()
    got = pl.DataFrame({frames.VALUE: v}).select(frames.leaf_expr(spec))
    assert got.to_series().to_list() == tree.leaf_of(v).tolist()


# --------------------------------------------------------------------------- engines


def test_local_and_streaming_give_the_same_histogram() -> None:
    spec = spec_with(max_cells=2, max_records_per_cell=2, selection="hash", seed=3)
    df = points(3000, seed=5)
    a = local.bound_and_aggregate(df, spec, DOMAIN)
    b = streaming.bound_and_aggregate(df, spec, DOMAIN, batch_rows=501, part_bytes=4096)
    assert np.array_equal(nodes(a, spec), nodes(b, spec))
    assert np.array_equal(a.count, b.count) and np.array_equal(a.sum, b.sum)


@pytest.mark.slow
def test_spark_gives_the_local_histogram() -> None:
    import_or_skip("pyspark", "pyspark is not installed (pip install 'dpmap[spark]')")
    home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (home and os.path.exists(f"{home}/bin/java")):
        skip_or_fail("Java is not installed; the Spark engine needs a JVM")
    from dpmap.engines import spark as spark_engine

    spec = spec_with(max_cells=2, max_records_per_cell=2, selection="hash", seed=3)
    df = points(2000, seed=6)
    a = local.bound_and_aggregate(df, spec, DOMAIN)
    table = pl.from_pandas(df).to_arrow(compat_level=pl.CompatLevel.oldest())
    sdf = spark_engine.get_session().createDataFrame(table).repartition(3)
    b = spark_engine.bound_and_aggregate(sdf, spec, DOMAIN)
    assert np.array_equal(nodes(a, spec), nodes(b, spec))
    assert np.array_equal(a.count, b.count) and np.array_equal(a.sum, b.sum)


# ------------------------------------------------------------------------- coverage

#: rows (independent trials) of the coverage simulation, and people per row
ROWS, PEOPLE = 2000, 400


def true_quantile(values: np.ndarray, p: float) -> float:
    """The smallest value v with #{values ≤ v} ≥ p·N (values already clamped and whole)."""
    s = np.sort(values)
    return float(s[math.ceil(p * len(s) - 1e-9) - 1])


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_quantile_intervals_cover_at_least_95_percent(mechanism: str) -> None:
    """Coverage of [q_lo, q_hi] over ROWS independent rows: Gaussian through the real
    OpenDP noise (the one statistical test of OpenDP's Gaussian histogram noise), Laplace
    with numpy's exact discrete Laplace at the plan's scale (:func:`common.numpy_noise`;
    OpenDP's Laplace histogram noise is tested by
    ``test_the_histogram_noise_has_the_planned_variance``), ≈ 30 s faster.

    The method claims coverage ≥ 95% per row and quantile (a lower bound, not a nominal
    value: the band holds for every leaf at once and whole leaves only widen the interval;
    measured ≈ 99.9%), so the check is one-sided. Rows are independent (independent noise, independent data), so the misses
    of one quantile are Binomial(ROWS, π) with π ≤ 0.05. The test fails if the misses of any
    of the 3 quantiles exceed k = the smallest k with P(Bin(ROWS, 0.05) > k) < 1e-8 / 3:
    with a correct method the false-failure probability per run is < 1e-8 (union over the
    3 quantiles). With ROWS = 2000, k ≈ 160 (8% misses), while a margin of ¼ of the noise
    misses far more often.
    """
    kw = {"delta": 1e-6} if mechanism == "gaussian" else {}
    spec = spec_with(mechanism=mechanism, epsilon=0.5, **kw)
    tree = spec.value_tree
    rng = np.random.default_rng(12345)
    values = np.clip(np.floor(rng.lognormal(8.5, 1.0, (ROWS, PEOPLE)) + 0.5), *BOUNDS)
    values = values.astype(np.int64)
    leaves = tree.leaf_of(values)
    row = np.repeat(np.arange(ROWS), PEOPLE)
    exact = tree.node_vectors(row, leaves.reshape(-1), np.ones(row.size, np.int64), ROWS)
    plan = plan_noise(spec)
    if mechanism == "gaussian":
        zeros = np.zeros(ROWS, dtype=np.int64)
        noisy = plan.run_dense({"count": zeros, "sum": zeros, "hist": exact.reshape(-1)})["hist"]
    else:
        hist = plan.statistics["hist"]
        assert hist.distribution == "discrete Laplace"
        noise = numpy_noise(mechanism, hist.scale, exact.size, np.random.default_rng())
        noisy = exact.reshape(-1) + noise
    cols = distribution_columns(spec, plan, noisy)
    limit = int(stats.binom.isf(1e-8 / 3, ROWS, 0.05))
    assert 140 < limit < 180
    for p in spec.quantiles:
        name = f"q{p * 100:g}"
        truth = np.array([true_quantile(v, p) for v in values])
        misses = int(((cols[f"{name}_lo"] > truth) | (cols[f"{name}_hi"] < truth)).sum())
        assert misses <= limit, f"{name}: {misses} of {ROWS} intervals miss (limit {limit})"
        # the point estimate sits where the truth is, give or take the interval
        assert np.median(np.abs(cols[name] - truth)) < np.median(
            cols[f"{name}_hi"] - cols[f"{name}_lo"]
        )


def test_the_histogram_noise_has_the_planned_variance() -> None:
    """Noise of the hist vector (n = 2000 × 1110 draws): sample variance against the planned
    one, two-sided. The sample variance of n i.i.d. draws has sd √((μ4 − σ⁴)/n); for a
    (discrete) Laplace μ4 ≤ 6σ⁴, so sd ≤ σ²·√(5/n) ≈ 0.0015σ². The tolerance is 6 of those
    (a normal tail of 2e-9 at this n, where the CLT applies): false failure < 1e-8.
    ¼ of the noise makes the variance 16× smaller."""
    spec = spec_with()
    plan = plan_noise(spec)
    n_rows = 2000
    vec = np.zeros(n_rows * spec.value_tree.nodes, dtype=np.int64)
    zeros = np.zeros(n_rows, dtype=np.int64)
    noisy = plan.run_dense({"count": zeros, "sum": zeros, "hist": vec})["hist"]
    var = plan.statistics["hist"].variance
    tol = 6 * var * math.sqrt(5 / vec.size)
    assert abs(float(np.mean(noisy.astype(float) ** 2)) - var) < tol


def test_suppressed_rows_hide_their_quantiles_and_bands() -> None:
    """Hidden rows have no quantiles or bands; shown rows have them all.

    A shown row's median is undefined (NaN) when its noisy histogram holds nothing (every
    consistent cumulative count ≤ 0): about 5e-6 for a truly empty row (simulated, 200,000
    draws of the histogram's noise at scale 6). Under the default rule about one empty row
    per map shows, so the former release (400 points) failed with chance ≈ 5e-6. Here the
    6 occupied cells hold 127–152 people and the threshold is 60: an empty row shows with
    chance 181 · P(X ≥ 60) ≈ 3e-5 (count scale 4), and then lacks a median with chance
    5e-6 (< 2e-10 in all); an occupied row shows its values on every run."""
    rel = dpmap.release(
        points(2000),
        region=REGION,
        resolution=RESOLUTION,
        **release_kw(value_bands=[0, 1000, 5000, 50_000], suppress_below=60),
    )
    t = rel.cells
    hidden = t["suppressed"].to_numpy(bool)
    assert hidden.any() and (~hidden).any()
    for col in ("q50", "q50_lo", "q50_hi", "band_1000_5000", "band_1000_5000_moe"):
        assert t.loc[hidden, col].isna().all()
        assert t.loc[~hidden, col].notna().all()


def test_value_bands_add_up_and_match_the_margins_method() -> None:
    spec = spec_with(value_bands=(0, 1000, 5000, 50_000), quantiles=None)
    plan = plan_noise(spec)
    y = np.random.default_rng(2).integers(-20, 50, (30, spec.value_tree.nodes))
    cols = distribution_columns(spec, plan, y.reshape(-1))
    whole = spec_with(value_bands=(0, 50_000), quantiles=None)
    total = distribution_columns(whole, plan, y.reshape(-1))["band_0_50000"]
    parts = cols["band_0_1000"] + cols["band_1000_5000"] + cols["band_5000_50000"]
    np.testing.assert_allclose(parts, total, rtol=1e-9, atol=1e-6)
    assert interval_z(spec.mechanism) == pytest.approx(math.log(20) / math.sqrt(2))


def test_a_zone_release_has_quantiles() -> None:
    import geopandas as gpd

    x0, y0, x1, y1 = REGION.bounds
    mid = (x0 + x1) / 2
    zones = gpd.GeoDataFrame(
        {"name": ["west", "east"]},
        geometry=[shapely.box(x0, y0, mid, y1), shapely.box(mid, y0, x1, y1)],
        crs="EPSG:4326",
    )
    t = dpmap.release(
        points(600), zones=zones, by="name", **release_kw(value_bands=[0, 1000, 50_000])
    )
    assert {"q25", "q50_lo", "q75_hi", "band_0_1000"} <= set(t.cells.columns)
    assert len(t.cells) == 2


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"quantiles": [0.5, 1.0]}, "strictly between 0 and 1"),
        ({"quantiles": [0.0]}, "strictly between 0 and 1"),
        ({"quantiles": []}, "lists no probability"),
        ({"quantiles": [0.5, 0.5]}, "duplicates"),
        ({"quantiles": "0.5"}, "list of probabilities"),
        ({"quantiles": [float("nan")]}, "finite"),
        ({"value_bands": [0, 5000, 1000]}, "strictly increasing"),
        ({"value_bands": [0]}, "strictly increasing"),
        ({"value_bands": [-100, 1000]}, "leave the bounds"),
        ({"value_bands": [0, 1234]}, "use 1200 or 1250"),
        ({"quantiles": [0.5], "value": None, "bounds": None}, "need a value column"),
        ({"quantiles": [0.5], "bounds": (7, 7)}, "lo < hi"),
        ({"quantiles": [0.5], "histogram_share": 1.0}, "histogram_share"),
    ],
)
def test_bad_distribution_parameters_are_refused(kw: dict[str, Any], words: str) -> None:
    base = release_kw()
    base.pop("quantiles")
    with pytest.raises(SpecError, match=words) as err:
        dpmap.explain(region=REGION, resolution=kw.pop("resolution", RESOLUTION), **{**base, **kw})
    assert "\n" not in str(err.value)


def test_quantiles_need_a_public_region_or_zones() -> None:
    with pytest.raises(SpecError, match=r"private discovery.*public region"):
        dpmap.explain(resolution=RESOLUTION, delta=1e-6, **release_kw())
    # adaptive releases have them per leaf (tests/designs/test_adaptive_quantiles.py)
    assert "value histogram per published leaf" in str(
        dpmap.explain(region=REGION, resolution=RESOLUTION, adaptive=True, **release_kw())
    )


def test_quantiles_with_categories_are_planned() -> None:
    """One histogram per (cell, category): see tests/test_category_quantiles.py."""
    plan = dpmap.explain(
        region=REGION,
        resolution=RESOLUTION,
        category="c",
        categories=["a"],
        **release_kw(),
    )
    assert "hist" in plan.plan.statistics


def test_cli_refuses_bad_quantiles_without_traceback(tmp_path: Path) -> None:
    pts = tmp_path / "pts.csv"
    points(50).to_csv(pts, index=False)
    region = tmp_path / "region.geojson"
    region.write_text(json.dumps(shapely.geometry.mapping(REGION)))
    out = tmp_path / "out.csv"
    args = [sys.executable, "-m", "dpmap.cli", "release", str(pts), "--region", str(region)]
    args += ["--resolution", str(RESOLUTION), "--epsilon", "1", "--person", "pid"]
    args += ["--value", "amount", "--bounds", "0", "50000", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(dpmap.__file__).parents[1])}
    bad = subprocess.run([*args, "--quantiles", "0.5,x"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--quantiles takes numbers" in bad.stderr and not out.exists()
    ok = subprocess.run(
        [*args, "--quantiles", "0.5", "--value-bands", "0,1000,50000"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    header = out.read_text().splitlines()[0].split(",")
    assert {"q50", "q50_lo", "q50_hi", "band_0_1000", "band_1000_50000_moe"} <= set(header)


def test_a_histogram_too_large_for_memory_is_refused_before_any_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dpmap.designs import distribution

    monkeypatch.setattr(distribution, "MAX_HISTOGRAM_VALUES", 10 * 1110)
    with pytest.raises(SpecError, match="coarser resolution"):
        dpmap.explain(region=REGION, resolution=RESOLUTION, **release_kw())


def test_a_quantile_is_never_published_outside_its_own_interval() -> None:
    """The point estimate (where the monotone noisy CDF crosses p·total) and the interval (the
    band of the raw noisy CDF against its own total) are computed differently, and heavy noise
    can put the point outside the interval (the district example once published a median of
    19,138 with the interval 19,550–…). The published point is kept inside its interval."""
    from dpmap.designs.distribution import histogram_columns
    from dpmap.spec import Mechanism
    from dpmap.valuetree import ValueTree

    tree = ValueTree(0, 1000, 4, 4)
    rng = np.random.default_rng(7)
    truth = rng.poisson(2.0, size=(20_000, tree.leaves)).astype(np.float64)
    nodes = truth @ tree.node_matrix().T
    scale = 3.0
    y = nodes + rng.laplace(0.0, scale, nodes.shape)  # heavy noise for few records
    var = np.full(len(y), 2 * scale**2)
    cols = histogram_columns(tree, Mechanism.LAPLACE, scale, [0.25, 0.5, 0.75], None, y, var)
    for name in ("q25", "q50", "q75"):
        q, lo, hi = cols[name], cols[f"{name}_lo"], cols[f"{name}_hi"]
        ok = np.isnan(q) | ((lo <= q) & (q <= hi))
        assert ok.all(), (name, int((~ok).sum()))
