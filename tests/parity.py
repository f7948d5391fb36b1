"""Datasets and helpers shared by the engine-parity tests (Spark, streaming).

Each engine's internal ``bound_and_aggregate`` must return *identical* PRIVATE aggregates
to the local engine's on these datasets with ``selection="hash"`` and a fixed seed, and
refuse the ``BAD`` inputs with the same error, and return the same empty aggregates and
diagnostics for the ``NOTHING_USABLE`` inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from common import CATEGORIES, FAR_AWAY, REGION_BOUNDS, RESOLUTION, debtors, leaky_debtors
from dpmap.spec import ReleaseSpec


def spec_of(**kw: Any) -> ReleaseSpec:
    base: dict[str, Any] = {
        "resolution": RESOLUTION,
        "epsilon": 1.0,
        "selection": "hash",
        "seed": 20240611,
    }
    return ReleaseSpec(**{**base, **kw})


def assert_same(a: Any, b: Any) -> None:
    for name in ("cells", "category", "count", "sum", "people"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None:
            assert y is None, name
            continue
        assert x.dtype == y.dtype == np.int64, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert (a.hist is None) == (b.hist is None)
    if a.hist is not None:  # the value histogram, per (cell[, category], leaf), in any order
        np.testing.assert_array_equal(histogram_rows(a), histogram_rows(b), err_msg="hist")


def histogram_rows(agg: Any) -> np.ndarray:
    """The histogram as sorted rows (cell, category, leaf, count) (category 0 without)."""
    cells, leaf, count = agg.hist
    cat = agg.hist_category if agg.hist_category is not None else np.zeros_like(cells)
    rows = np.column_stack([cells, cat, leaf, count]).astype(np.int64)
    return rows[np.lexsort(rows.T[::-1])]


def random_points(n: int = 3000, seed: int = 1) -> pd.DataFrame:
    """Uniform points over the region and a margin around it; 600 persons with int ids."""
    rng = np.random.default_rng(seed)
    lng0, lat0, lng1, lat1 = REGION_BOUNDS
    return pd.DataFrame(
        {
            "lat": rng.uniform(lat0 - 0.02, lat1 + 0.02, n),
            "lng": rng.uniform(lng0 - 0.02, lng1 + 0.02, n),
            "pid": rng.integers(0, 600, n),
            "amount": rng.normal(500, 400, n).round(2),
        }
    )


def heavy_person(n_heavy: int = 5000) -> pd.DataFrame:
    """One person with thousands of records across many cells, among ordinary ones."""
    rng = np.random.default_rng(7)
    lng0, lat0, lng1, lat1 = REGION_BOUNDS
    heavy = pd.DataFrame(
        {
            "lat": rng.uniform(lat0, lat1, n_heavy),
            "lng": rng.uniform(lng0, lng1, n_heavy),
            "pid": "the-heavy-one",
            "amount": rng.integers(-50, 3000, n_heavy).astype(float),
            "creditor": rng.choice(["bank", "utility", "telecom"], n_heavy),
        }
    )
    others = debtors(200, 4, 6)
    return pd.concat([heavy, others], ignore_index=True)


def clustered() -> pd.DataFrame:
    """Persons with several records in their home cell (people < count there) and persons
    spread over several cells, three creditors."""
    home = debtors(150, 5, 6, spread=False)
    spread = debtors(60, 3, 6, first_id=1000)
    return pd.concat([home, spread, home.iloc[::7]], ignore_index=True)


def with_missing() -> pl.DataFrame:
    """Leaky debtors plus missing ids, missing and NaN values, NaN and null coordinates."""
    df = pl.from_pandas(leaky_debtors())
    n = df.height
    idx = pl.int_range(n, eager=True)
    return df.with_columns(
        pl.when(idx % 11 == 0).then(None).otherwise(pl.col("pid")).alias("pid"),
        pl.when(idx % 13 == 0)
        .then(None)
        .when(idx % 17 == 0)
        .then(float("nan"))
        .otherwise(pl.col("amount").cast(pl.Float64))
        .alias("amount"),
        pl.when(idx % 19 == 0).then(None).otherwise(pl.col("lat")).alias("lat"),
    )


#: the public periods of the panel cases: January to June 2026, by month
PERIODS = pd.period_range("2026-01", "2026-06", freq="M")


def dated(make: Any, *, text: bool = False, seed: int = 3) -> Any:
    """``make``'s points with a ``date``: days from December 2025 to July 2026 (so some lie
    outside the periods), every 23rd missing; as ISO text (mixed date and date-time forms)
    with ``text=True``."""

    def build() -> pd.DataFrame:
        df = make()
        df = df.to_pandas() if isinstance(df, pl.DataFrame) else df.copy()
        rng = np.random.default_rng(seed)
        minutes = rng.integers(0, 230 * 24 * 60, len(df))
        dates = pd.Timestamp("2025-12-01") + pd.to_timedelta(minutes, unit="min")
        dates = pd.Series(dates).where(np.arange(len(df)) % 23 != 0)
        if text:
            iso = dates.dt.strftime("%Y-%m-%dT%H:%M:%S")
            short = dates.dt.strftime("%Y-%m-%d")
            dates = iso.where(np.arange(len(df)) % 2 == 0, short)
        df["date"] = dates.to_numpy()
        return df

    return build


PANEL = {"time": "date", "periods": PERIODS}

PARITY = {
    "random-rows": (random_points, {}),
    "random-persons": (random_points, {"person": "pid"}),
    "random-values-bounds>1": (
        random_points,
        {"person": "pid", "value": "amount", "bounds": (0, 1000), "max_cells": 3,
         "max_records_per_cell": 2},
    ),
    "categories-other": (
        lambda: leaky_debtors(),
        {"person": "pid", "value": "amount", "bounds": (0, 2000), "category": "creditor",
         "categories": CATEGORIES, "max_records_per_cell": 2},
    ),
    "heavy-person": (
        heavy_person,
        {"person": "pid", "value": "amount", "bounds": (0, 2500), "max_cells": 5,
         "max_records_per_cell": 3, "category": "creditor", "categories": CATEGORIES},
    ),
    "missing-everything": (
        with_missing,
        {"person": "pid", "value": "amount", "bounds": (-10, 1500), "max_cells": 2,
         "max_records_per_cell": 2},
    ),
    "people": (
        clustered,
        {"person": "pid", "value": "amount", "bounds": (0, 1000), "max_cells": 3,
         "max_records_per_cell": 2, "people": True},
    ),
    "people-categories": (
        clustered,
        {"person": "pid", "value": "amount", "bounds": (0, 2000), "max_cells": 2,
         "max_records_per_cell": 3, "category": "creditor", "categories": CATEGORIES,
         "people": True},
    ),
    "people-random": (
        random_points,
        {"person": "pid", "max_cells": 3, "max_records_per_cell": 2, "people": True},
    ),
    "quantiles-categories": (
        clustered,
        {"person": "pid", "value": "amount", "bounds": (0, 2000), "max_cells": 2,
         "max_records_per_cell": 3, "category": "creditor", "categories": CATEGORIES,
         "quantiles": (0.5,), "people": True},
    ),
    "people-categories-heavy": (
        heavy_person,
        {"person": "pid", "max_cells": 5, "max_records_per_cell": 3, "category": "creditor",
         "categories": CATEGORIES, "people": True},
    ),
    "panel-rows": (dated(random_points), PANEL),
    "panel-persons": (
        dated(random_points),
        {**PANEL, "person": "pid", "max_periods": 3, "max_cells": 2, "max_records_per_cell": 2},
    ),
    "panel-text-dates-values": (
        dated(random_points, text=True),
        {**PANEL, "person": "pid", "max_periods": 2, "value": "amount", "bounds": (0, 1000)},
    ),
    "panel-heavy-everything": (
        dated(heavy_person),
        {**PANEL, "person": "pid", "max_periods": 4, "max_cells": 3, "max_records_per_cell": 2,
         "value": "amount", "bounds": (0, 2500), "category": "creditor",
         "categories": CATEGORIES, "people": True, "quantiles": (0.5,)},
    ),
    # a continual release: each person keeps their EARLIEST max_periods periods
    "panel-earliest-periods": (
        dated(heavy_person),
        {**PANEL, "person": "pid", "max_periods": 2, "max_cells": 3, "max_records_per_cell": 2,
         "value": "amount", "bounds": (0, 2500), "category": "creditor",
         "categories": CATEGORIES, "running_totals": True},
    ),
    "panel-earliest-rows-persons": (
        dated(random_points),
        {**PANEL, "person": "pid", "max_periods": 1, "running_totals": True},
    ),
}  # fmt: skip


def base(**over: Any) -> pd.DataFrame:
    df = debtors(12, 1, 2)
    for k, v in over.items():
        df[k] = v
    return df


#: inputs with no usable point: not refused (that would be a free answer about the data) but
#: empty aggregates, with the same PRIVATE diagnostics on every engine
NOTHING_USABLE = {
    "empty": (lambda: base().iloc[:0], {}),
    "all-coordinates-missing": (lambda: base(lat=np.nan), {}),
    "outside-region": (lambda: base(lat=FAR_AWAY[0], lng=FAR_AWAY[1]), {}),
    "no-usable-row": (lambda: base(pid=None).astype({"pid": "string"}), {"person": "pid"}),
}  # fmt: skip

BAD = {
    "missing-column": (lambda: base().drop(columns=["lat"]), {}),
    "missing-person-column": (lambda: base(), {"person": "who"}),
    "text-latitude": (lambda: base(lat="39.1"), {}),
    "text-value": (lambda: base(amount="12"), {"value": "amount", "bounds": (0, 10)}),
    "projected": (lambda: base(lat=4_400_000.0, lng=450_000.0), {}),
    "swapped": (lambda: base().rename(columns={"lat": "lng", "lng": "lat"}), {}),
    "longitude-out-of-range": (lambda: base(lng=200.0), {}),
    "infinite-latitude": (lambda: base().assign(lat=lambda d: d.lat.where(d.index > 0, np.inf)), {}),
    "time-not-a-date": (
        lambda: base(date="2026-01-15").assign(date=lambda d: d.date.where(d.index > 3, "soon")),
        {**PANEL, "person": "pid", "max_periods": 2},
    ),
    "time-a-number": (lambda: base(date=20260115), {**PANEL, "person": "pid", "max_periods": 2}),
}  # fmt: skip


# ---------------------------------------------------------------------------------------
# zones (a zone release): the same rule on every engine


def parity_zones() -> Any:
    """Four zones over the region: a 2×2 split with shared borders (lng 116.15, lat 39.1),
    the south-west one with a square hole, and a fifth zone filling part of that hole; the
    region's margin lies outside every zone."""
    import geopandas as gpd
    from shapely.geometry import Polygon, box

    hole = [(116.05, 39.03), (116.10, 39.03), (116.10, 39.07), (116.05, 39.07)]
    sw = Polygon([(116.0, 39.0), (116.15, 39.0), (116.15, 39.1), (116.0, 39.1)], [hole])
    geoms = [
        sw,
        box(116.15, 39.0, 116.3, 39.1),
        box(116.0, 39.1, 116.15, 39.2),
        box(116.15, 39.1, 116.3, 39.2),
        box(116.06, 39.04, 116.09, 39.06),
    ]
    names = ["south-west", "south-east", "north-west", "north-east", "island"]
    return gpd.GeoDataFrame({"name": names}, geometry=geoms, crs="EPSG:4326")


def zone_points(n: int = 3000, seed: int = 3) -> pd.DataFrame:
    """:func:`random_points` plus rows exactly on the shared borders, on the hole's rim and
    inside the hole (not on the island)."""
    df = random_points(n, seed)
    special = pd.DataFrame(
        {
            "lat": [39.05, 39.1, 39.1, 39.15, 39.03, 39.065, 39.035],
            "lng": [116.15, 116.05, 116.15, 116.15, 116.07, 116.075, 116.055],
            "pid": [1, 2, 3, 4, 5, 6, 7],
            "amount": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0],
        }
    )
    out = pd.concat([special, df, special], ignore_index=True)
    out["creditor"] = np.array(["bank", "utility", "telecom"])[np.arange(len(out)) % 3]
    return out


def zone_spec_of(**kw: Any) -> ReleaseSpec:
    from dpmap.grid import to_zones

    base: dict[str, Any] = {
        "zones": to_zones(parity_zones(), "name"),
        "epsilon": 1.0,
        "selection": "hash",
        "seed": 20240611,
    }
    return ReleaseSpec(**{**base, **kw})


ZONE_PARITY = {
    "zones-rows": {},
    "zones-persons": {"person": "pid"},
    "zones-values-bounds>1": {"person": "pid", "value": "amount", "bounds": (0, 1000),
                              "max_cells": 2, "max_records_per_cell": 3},
    "zones-people": {"person": "pid", "max_cells": 2, "max_records_per_cell": 3,
                     "people": True},
    "zones-quantiles-categories": {"person": "pid", "value": "amount", "bounds": (0, 1000),
                                   "max_records_per_cell": 2, "category": "creditor",
                                   "categories": ("bank",), "value_bands": (0, 500, 1000)},
}  # fmt: skip
