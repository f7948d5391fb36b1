"""Press-ready tables (dpmap.analysis.tables, Release.table): rounding, non-negative display values,
reliability flags, hidden rows that are never zero, totals across categories, and the
privacy statement and manifest written beside the table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from scipy.stats import binom

import dpmap
from common import REGION, debtors
from dpmap._privacy.postprocess import Z95, Estimates, publish
from dpmap.aggregates import SUM_LIMIT
from dpmap.analysis.tables import HIDDEN, PressTable, press_table, reliability
from dpmap.errors import SpecError

CATS = ["bank", "utility"]


def _release(**kw: object) -> dpmap.Release:
    params: dict[str, object] = {
        "region": REGION,
        "resolution": 7,
        "epsilon": 1.0,
        "person": "pid",
        "value": "amount",
        "bounds": (0, 2000),
        "category": "creditor",
        "categories": CATS,
    }
    params.update(kw)
    return dpmap.release(debtors(600, 3, 4), **params)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def rel() -> dpmap.Release:
    return _release()


def _zones() -> gpd.GeoDataFrame:
    west = shapely.box(116.0, 39.0, 116.15, 39.2)
    east = shapely.box(116.15, 39.0, 116.3, 39.2)
    return gpd.GeoDataFrame({"name": ["west", "east"]}, geometry=[west, east], crs="EPSG:4326")


def test_display_values_are_rounded_non_negative_or_hidden(rel: dpmap.Release) -> None:
    t = rel.table().table
    rows = t[t["category"] != "total"].reset_index(drop=True)
    cells = rel.cells.reset_index(drop=True)
    assert len(rows) == len(cells)
    hidden = cells["suppressed"].to_numpy()
    assert hidden.any() and (~hidden).any()
    for col in ("count_display", "count_moe_display", "sum_display", "mean_display"):
        assert (rows.loc[hidden, col] == HIDDEN).all(), col  # hidden, never a zero
    assert (rows.loc[hidden, "count_reliability"] == HIDDEN).all()
    shown = rows.loc[~hidden]
    counts = shown["count_display"].to_numpy()
    assert all(isinstance(v, int) and v >= 0 for v in counts)
    # whole records, rounded from the published noisy count; margins rounded up
    published = cells.loc[~hidden, "count"].astype(float).to_numpy()
    assert np.array_equal(counts.astype(float), np.maximum(np.floor(published + 0.5), 0))
    moe = cells.loc[~hidden, "count_moe"].to_numpy()
    assert np.array_equal(shown["count_moe_display"].to_numpy().astype(float), np.ceil(moe))
    # sums: three significant figures of the larger of value and margin, never negative
    for v, m, d in zip(
        cells.loc[~hidden, "sum"].astype(float),
        cells.loc[~hidden, "sum_moe"],
        shown["sum_display"],
        strict=True,
    ):
        unit = 10 ** (math.floor(math.log10(max(abs(v), m))) - 2)
        assert d == max(0, round(v / unit) * unit) or d == max(0, math.floor(v / unit + 0.5) * unit)
        assert d >= 0
    # the unbiased values stay beside them, unrounded (and may be negative)
    assert np.allclose(shown["count_unbiased"].to_numpy(), published)


def test_rounding_rules_and_units() -> None:
    from dpmap.analysis.tables import _display

    values = np.array([123_456.0, -5_000.0, 12.0, 0.4])
    moes = np.array([23_966.0, 23_966.0, 23_966.0, 3.2])
    no = np.zeros(4, dtype=bool)
    shown, margin = _display(values, moes, no, no, kind="sum", unit=None, floor_zero=True)
    assert list(shown) == [123_000, 0, 0, 0]
    assert list(margin) == [24_000, 24_000, 24_000, 4]
    shown, margin = _display(values, moes, no, no, kind="sum", unit=1000, floor_zero=True)
    assert list(shown) == [123_000, 0, 0, 0]
    assert list(margin) == [24_000, 24_000, 24_000, 1000]
    shown, margin = _display(
        np.array([45.678, 1234.5]),
        np.array([1.234, 10.0]),
        no[:2],
        no[:2],
        kind="mean",
        unit=None,
        floor_zero=False,
    )
    assert list(shown) == [45.7, 1230]
    assert list(margin) == [1.3, 10]
    shown, margin = _display(
        np.array([2.5, -0.4, 7.49]),
        np.array([6.43, 6.43, 6.43]),
        no[:3],
        no[:3],
        kind="count",
        unit=None,
        floor_zero=True,
    )
    assert list(shown) == [3, 0, 7] and list(margin) == [7, 7, 7]


def test_reliability_bands_follow_the_coefficient_of_variation() -> None:
    est = np.array([100.0, 100.0, 100.0, 100.0, 0.0, -3.0, np.nan])
    moe = Z95 * np.array([14.9, 15.0, 30.0, 30.1, 1.0, 1.0, 1.0])
    cv, label = reliability(est, moe)
    assert list(label) == [
        "reliable",
        "use with caution",
        "use with caution",
        "unreliable",
        "unreliable",
        "unreliable",
        "",
    ]
    assert cv[0] == pytest.approx(0.149)
    _, label = reliability(est[:4], moe[:4], (0.10, 0.20))
    assert list(label) == ["use with caution", "use with caution", "unreliable", "unreliable"]
    with pytest.raises(SpecError, match="cv_bands"):
        reliability(est, moe, (0.3, 0.1))


def test_a_total_row_per_cell_adds_up_the_categories(rel: dpmap.Release) -> None:
    t = rel.table().table
    est = rel.estimates
    assert est is not None
    tot = t[t["category"] == "total"].set_index("cell")
    assert len(tot) == rel.cells["cell"].nunique()
    sums = est.groupby("cell")[["count", "count_var", "sum", "sum_var"]].sum()
    assert np.allclose(tot["count_unbiased"], sums.loc[tot.index, "count"])
    assert np.allclose(tot["count_moe"], Z95 * np.sqrt(sums.loc[tot.index, "count_var"]))
    assert np.allclose(tot["sum_unbiased"], sums.loc[tot.index, "sum"])
    # the default suppression rule, applied to the totals: at most about one truly empty
    # total per table shows by chance (Laplace: α = min(2.5%, 1/rows), factor ln(1/2α)/√2)
    alpha = min(0.025, 1 / len(tot))
    factor = math.log(1 / (2 * alpha)) / math.sqrt(2)
    hidden = tot["count_unbiased"] < factor * tot["count_moe"] / Z95
    assert (tot["suppressed"] == hidden).all()
    assert (tot.loc[hidden, "count_display"] == HIDDEN).all()
    assert (tot.loc[~hidden, "count_display"] != HIDDEN).all()
    # every total row comes right after its cell's categories
    assert list(t["category"].iloc[:4]) == [*CATS, "other", "total"]


@pytest.mark.slow
def test_total_margins_cover_the_true_totals_at_their_exact_rate() -> None:
    """The 95% margin of a total, 1.96·√(Σ var), covers the true total at the rate the
    noise's exact distribution gives it (two-sided check).

    Count-only releases with every row a person (L1 = 1, ε = 1: discrete Laplace of scale
    1 per (cell, category)), three categories, 187 cells, R = 10 releases: N = 1,870
    independent cell totals, each true total known (the rows in the cell). The total's
    noise is the sum of three independent discrete Laplace variables; its exact coverage
    p of the margin is computed by convolution (0.9387: the normal margin is a little
    optimistic for three integer terms). The observed share is Binomial(N, p)/N; the
    test accepts it between the binomial quantiles at 1e-9 and 1 − 1e-9, so a correct
    release fails with probability < 2e-9 ([0.903, 0.969]). A margin that ignored the
    other categories (one category's, 1.96·√var) covers 0.751; the sum of the categories'
    margins covers more than 0.999: both fall outside.
    """
    pts = debtors(120, 3, 4)
    truth = {}
    import h3

    for la, ln in zip(pts["lat"], pts["lng"], strict=True):
        c = h3.latlng_to_cell(la, ln, 7)
        truth[c] = truth.get(c, 0) + 1
    inside = []
    scale = None
    for _ in range(10):
        r = dpmap.release(
            pts, region=REGION, resolution=7, epsilon=1.0, category="creditor", categories=CATS
        )
        scale = r.manifest["statistics"]["count"]["scale"]
        t = r.table().table
        tot = t[t["category"] == "total"]
        true = np.array([truth.get(c, 0) for c in tot["cell"]], dtype=float)
        inside.append(
            np.abs(tot["count_unbiased"].to_numpy() - true) <= tot["count_moe"].to_numpy()
        )
    hits = np.concatenate(inside)
    n = len(hits)
    assert n == 1870
    a = math.exp(-1 / scale)
    k = np.arange(-400, 401)
    pmf = (1 - a) / (1 + a) * a ** np.abs(k)
    var = float((pmf * k * k).sum())
    pmf3 = np.convolve(np.convolve(pmf, pmf), pmf)
    k3 = np.arange(-1200, 1201)
    p = float(pmf3[np.abs(k3) <= Z95 * math.sqrt(3 * var)].sum())
    lo, hi = binom.ppf(1e-9, n, p), binom.isf(1e-9, n, p)
    assert lo <= hits.sum() <= hi, (hits.mean(), p, lo / n, hi / n)


def test_a_file_without_unbiased_estimates_hides_totals_it_cannot_form(
    rel: dpmap.Release, tmp_path: Path
) -> None:
    rel.to_file(tmp_path / "plain.geojson")
    back = dpmap.read_release(tmp_path / "plain.geojson")
    assert back.estimates is None
    t = back.table().table
    tot = t[t["category"] == "total"].set_index("cell")
    any_hidden = back.cells.groupby("cell")["suppressed"].any()
    assert (tot["suppressed"] == any_hidden.loc[tot.index]).all()
    assert (tot.loc[any_hidden.loc[tot.index].to_numpy(), "count_display"] == HIDDEN).all()
    shown = ~any_hidden.loc[tot.index].to_numpy()
    assert shown.any()
    published = back.cells.groupby("cell")["count"].sum().astype(float)
    assert np.allclose(tot.loc[shown, "count_unbiased"], published.loc[tot.index[shown]])
    # written with the unbiased values, the same totals are all formed
    rel.to_file(tmp_path / "full.geojson", include_unbiased=True)
    full = dpmap.read_release(tmp_path / "full.geojson").table().table
    expected = rel.table().table
    a = full[full["category"] == "total"]["count_unbiased"].to_numpy()
    b = expected[expected["category"] == "total"]["count_unbiased"].to_numpy()
    assert np.allclose(a, b)


def test_roll_up_tables_total_each_zone(rel: dpmap.Release) -> None:
    rollup = rel.aggregate_to(_zones(), by="name")
    t = press_table(rollup, release=rel).table
    assert list(t["name"]) == ["west"] * 4 + ["east"] * 4
    for zone in ("west", "east"):
        part = rollup[rollup["name"] == zone]
        tot = t[(t["name"] == zone) & (t["category"] == "total")].iloc[0]
        assert tot["count_unbiased"] == pytest.approx(part["count"].sum())
        # the noise of the sum, or the half-width of the total's 95% interval (border
        # included, test_roll_up_tables_show_the_honest_interval), whichever is larger
        for s in ("count", "sum"):
            noise = math.sqrt((part[f"{s}_moe"] ** 2).sum())
            est = part[s].sum()
            half = max(est - part[f"{s}_lo"].sum(), part[f"{s}_hi"].sum() - est)
            assert tot[f"{s}_moe"] == pytest.approx(max(noise, half))
    assert not t["suppressed"].any()  # zones are flagged, never hidden
    assert all(isinstance(v, int) and v >= 0 for v in t["count_display"])
    # the same through the Release method
    same = rel.table(_zones(), by="name").table
    pd.testing.assert_frame_equal(same, t)


def test_roll_up_tables_show_the_honest_interval(rel: dpmap.Release) -> None:
    """A roll-up's 95% interval (count_lo..count_hi) covers the cells cut by a zone's border
    as well as the noise; the press table shows it (widened outwards when rounded), and the
    margin it prints and judges reliability by is the interval's larger half-width — never
    the noise-only count_moe, which can be far narrower."""
    rollup = rel.aggregate_to(_zones(), by="name")
    assert {"count_lo", "count_hi"} <= set(rollup.columns)
    t = press_table(rollup, release=rel, totals=False).table
    half = np.fmax(rollup["count"] - rollup["count_lo"], rollup["count_hi"] - rollup["count"])
    assert (half > rollup["count_moe"]).any()  # the border matters for these zones
    np.testing.assert_allclose(t["count_moe"], np.fmax(half, rollup["count_moe"]))
    assert np.allclose(t["count_lo"], rollup["count_lo"])
    assert np.allclose(t["count_hi"], rollup["count_hi"])
    assert (t["count_moe_display"].astype(float) >= t["count_moe"] - 1e-9).all()
    assert (t["count_lo_display"].astype(float) <= np.maximum(rollup["count_lo"], 0)).all()
    assert (t["count_hi_display"].astype(float) >= rollup["count_hi"]).all()
    _cv, label = reliability(t["count_unbiased"], t["count_moe"])
    assert list(t["count_reliability"]) == list(label)
    assert "total" not in set(t["category"])
    made = press_table(rollup, release=rel)
    assert "border" in made.manifest["rules"]["intervals"] and "border" in made.notes
    # a zone's total across categories: the sums of the categories' interval ends
    # (conservative), and a margin that covers them
    tot = made.table[made.table["category"] == "total"].set_index("name")
    for zone, part in rollup.groupby("name"):
        assert tot.loc[zone, "count_lo"] == pytest.approx(part["count_lo"].sum())
        assert tot.loc[zone, "count_hi"] == pytest.approx(part["count_hi"].sum())
        assert tot.loc[zone, "count_moe"] >= part["count_hi"].sum() - part["count"].sum() - 1e-9


def test_a_roll_up_needs_its_release() -> None:
    with pytest.raises(SpecError, match="release="):
        press_table(pd.DataFrame({"name": ["a"], "count": [1.0], "count_moe": [2.0]}))
    with pytest.raises(SpecError, match="Release or a roll-up"):
        press_table(42)


def test_written_beside_the_table_privacy_statement_and_manifest(
    rel: dpmap.Release, tmp_path: Path
) -> None:
    pt = rel.table(sum_unit=1000)
    assert isinstance(pt, PressTable)
    written = pt.to_file(tmp_path / "press.csv")
    assert [p.name for p in written] == ["press.csv", "press.manifest.json", "press.notes.txt"]
    back = pd.read_csv(tmp_path / "press.csv", dtype=str)
    assert (back.loc[back["suppressed"] == "True", "count_display"] == HIDDEN).all()
    manifest = json.loads((tmp_path / "press.manifest.json").read_text())
    assert manifest["privacy_statement"] == rel.privacy_statement
    assert manifest["release_manifest"]["privacy"]["epsilon"] == rel.epsilon
    assert manifest["source"]["release_fingerprint"] == rel.fingerprint
    assert "American Community Survey" in manifest["rules"]["reliability"]
    assert "nearest 1000" in manifest["rules"]["sum"]
    notes = (tmp_path / "press.notes.txt").read_text()
    assert rel.privacy_statement in notes
    assert "never 0" in notes
    with pytest.raises(dpmap.errors.DataFileError, match=r"\.csv"):
        pt.to_file(tmp_path / "press.xlsx")


def test_the_notes_say_when_counts_are_records_not_people() -> None:
    many = _release(max_records_per_cell=3).table().notes
    assert "not a number of people" in many and "3 record(s) per cell" in many
    one = _release(category=None, categories=None).table().notes
    assert "Counts count people" in one


def test_a_release_without_categories_has_no_total_rows() -> None:
    r = _release(category=None, categories=None)
    t = r.table().table
    assert "category" not in t.columns
    assert len(t) == len(r.cells)


def test_hierarchical_release_totals_every_level() -> None:
    r = _release(resolution=[6, 7])
    t = r.table().table
    tot = t[t["category"] == "total"]
    assert set(tot["resolution"]) == {6, 7}
    assert len(tot) == r.cells[["cell", "resolution"]].drop_duplicates().shape[0]
    est = r.estimates
    assert est is not None
    s = est.groupby(["cell", "resolution"])["count"].sum()
    got = tot.set_index(["cell", "resolution"])["count_unbiased"]
    assert np.allclose(got, s.loc[got.index])


# ---------------------------------------------------------------------------------------
# the published cell table every press table starts from (postprocess.publish)


def test_publish_nulls_every_number_of_a_hidden_row_and_flags_only_shown_sums() -> None:
    """A fixed threshold hides exactly the rows whose noisy count is below it; a hidden row
    has no number at all (count, sum, mean and their margins are null) and is never flagged
    as a sum at the saturation limit, whatever its noisy sum; shown rows keep every number.
    Deterministic: publish reads only the noisy values given here."""
    limit = float(SUM_LIMIT)
    count = np.array([-3.0, 0.0, 1.0, 2.0, 5.0, 40.0])
    total = np.array([limit, -limit, 10.0, limit, 7.0, -limit])
    est = Estimates(
        count=count, count_moe=2.0, count_moe975=2.5, sum=total, sum_moe=3.0, sum_moe975=4.0
    )
    pub = publish(est, (0, 10), 2.0)
    hidden = pub.columns["suppressed"]
    assert hidden.tolist() == [True, True, True, False, False, False]
    assert pub.threshold == 2.0
    for col in ("count", "count_moe", "sum", "sum_moe", "mean", "mean_moe"):
        values = pub.columns[col]
        assert np.isnan(values[hidden]).all(), col
        assert not np.isnan(values[~hidden]).any(), col
    assert np.array_equal(pub.columns["count"][~hidden], count[~hidden])
    assert np.array_equal(pub.columns["sum"][~hidden], total[~hidden])
    # rows 0, 1 and 3, 5 have sums at ±SUM_LIMIT; only the shown ones (3, 5) are flagged
    assert pub.columns["sum_at_limit"].tolist() == [False, False, False, True, False, True]
    assert pub.sums_at_limit == 2
    # suppress_below=False publishes every noisy value, negative ones included
    every = publish(est, (0, 10), False)
    assert not every.columns["suppressed"].any()
    assert np.array_equal(every.columns["count"], count)
    assert every.sums_at_limit == 4


def test_press_tables_carry_quantiles_and_value_bands() -> None:
    """A zone release's press table (and a roll-up's) shows the quantiles with their 95%
    intervals widened outwards and the value bands in whole records; hidden rows stay
    'hidden' and category totals leave them empty."""
    import geopandas as gpd
    import shapely

    from common import REGION

    rng = np.random.default_rng(4)
    n = 4000
    x0, y0, x1, y1 = REGION.bounds
    pts = pd.DataFrame(
        {
            "lng": rng.uniform(x0, x1, n),
            "lat": rng.uniform(y0, y1, n),
            "pid": [f"p{i}" for i in range(n)],
            "amount": rng.lognormal(8, 1.5, n),
            "creditor": rng.choice(["bank", "utility"], n),
        }
    )
    mid = (x0 + x1) / 2
    zones = gpd.GeoDataFrame(
        {"name": ["w", "e"]},
        geometry=[shapely.box(x0, y0, mid, y1), shapely.box(mid, y0, x1, y1)],
        crs="EPSG:4326",
    )
    kw = dict(epsilon=1.0, person="pid", value="amount", bounds=(0, 50_000))
    kw |= dict(quantiles=[0.5], value_bands=[0, 1000, 50_000])
    rel = dpmap.release(
        pts, zones=zones, by="name", category="creditor", categories=["bank", "utility"], **kw
    )
    t = rel.table().table
    shown = t[(t["category"] != "total") & ~t["suppressed"]]
    assert len(shown) >= 2
    assert (shown["q50_lo_display"].astype(float) <= shown["q50_lo"] + 1e-9).all()
    assert (shown["q50_hi_display"].astype(float) >= shown["q50_hi"] - 1e-9).all()
    q = shown["q50_display"].astype(float)
    assert ((shown["q50_lo_display"].astype(float) <= q) & (q <= shown["q50_hi_display"])).all()
    assert (shown["band_0_1000_display"].astype(float) % 1 == 0).all()
    assert (t.loc[t["suppressed"], "q50_display"] == "hidden").all()
    assert (t.loc[t["category"] == "total", "q50_display"] == "").all()
    assert "q50 is the median" in rel.table().notes
    rollup = dpmap.release(pts, region=REGION, resolution=7, **kw)
    r = rollup.table(zones, by="name").table
    assert {"q50_display", "band_0_1000_lo_display", "band_0_1000_hi_display"} <= set(r.columns)
    assert (r["band_0_1000_lo_display"].astype(float) <= r["band_0_1000_hi_display"]).all()
