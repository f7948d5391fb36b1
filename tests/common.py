"""Canonical tiny datasets and regions shared by dpmap's tests.

Everything here is deterministic and small (a few thousand rows at most), built from
public H3 geometry only, so a test can state exactly what the true (pre-noise) answer is.

Region
    ``REGION``: a 0.3° x 0.2° lon/lat box south-west of Beijing (187 H3 cells at
    resolution 7, 160 of them with their centre inside). Also available as a
    GeoDataFrame (any CRS), a GeoSeries, a GeoJSON mapping and a GeoJSON file.

Points
    :func:`debtors` builds a small debt register: persons living at the centres of a few
    interior cells, several records each (so contribution bounding cuts records), a
    whole-number amount and a creditor type of which one is *not* in the public list
    (it must go to ``"other"``). :func:`leaky_debtors` adds rows with missing coordinates
    and rows far outside the region in distinctive quantities, so that a test can search
    written files for those private numbers.

Panels
    ``MONTHS`` (six months of 2026), :func:`panel_spec` (a panel's spec over them, any field
    overridden), ``VEC_I64`` (OpenDP's vector domain of the count vectors, for privacy maps
    by hand).

Conversions
    :func:`as_polars`, :func:`as_lazy`, :func:`as_geodataframe`, :func:`write_csv`,
    :func:`write_parquet` give the same points in every supported input form.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import polars as pl
import pytest
import shapely
from shapely.geometry import mapping

# ------------------------------------------------------------------------------- region

RESOLUTION = 7
#: (min lon, min lat, max lon, max lat) in degrees
REGION_BOUNDS = (116.0, 39.0, 116.3, 39.2)
REGION = shapely.box(*REGION_BOUNDS)
#: A point that is nowhere near the region (lat, lng)
FAR_AWAY = (45.123457, 120.654321)

#: Public category list used by the category tests; "telecom" rows are not in it.
CATEGORIES = ("bank", "utility")
ALL_CREDITORS = ("bank", "utility", "telecom")


def region_gdf(crs: str | int = "EPSG:4326") -> gpd.GeoDataFrame:
    """The region as a one-row GeoDataFrame, reprojected to ``crs``."""
    return gpd.GeoDataFrame({"name": ["box"]}, geometry=[REGION], crs="EPSG:4326").to_crs(crs)


def region_geoseries() -> gpd.GeoSeries:
    return gpd.GeoSeries([REGION], crs="EPSG:4326")


def region_geojson() -> dict[str, Any]:
    """The region as a GeoJSON Feature mapping."""
    return {"type": "Feature", "properties": {"name": "box"}, "geometry": mapping(REGION)}


def write_region_geojson(folder: Path, name: str = "region.geojson") -> Path:
    path = Path(folder) / name
    fc = {"type": "FeatureCollection", "features": [region_geojson()]}
    path.write_text(json.dumps(fc), encoding="utf-8")
    return path


def overlap_cells(region: Any = REGION, resolution: int = RESOLUTION) -> list[str]:
    """The public cell set computed directly with h3 (overlap polyfill), sorted hex ids."""
    shape = h3.geo_to_h3shape(region.__geo_interface__)
    return sorted(h3.h3shape_to_cells_experimental(shape, resolution, contain="overlap"))


def centre_cells(region: Any = REGION, resolution: int = RESOLUTION) -> list[str]:
    """Cells whose centre lies inside the region (h3's default polyfill), sorted hex ids."""
    shape = h3.geo_to_h3shape(region.__geo_interface__)
    return sorted(h3.h3shape_to_cells(shape, resolution))


def cell_polygon(cell: str) -> shapely.Polygon:
    return shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(cell)])


def cell_centre(cell: str) -> tuple[float, float]:
    """(lat, lng) of a cell's centre."""
    lat, lng = h3.cell_to_latlng(cell)
    return float(lat), float(lng)


#: a box a little inside ``REGION``: points drawn in it lie in released cells
INNER = (116.005, 39.005, 116.295, 39.195)


def uniform_points(n: int, seed: int) -> pd.DataFrame:
    """``n`` points uniform in ``INNER`` with a whole ``amount`` in [0, 100]; no person column
    (each row its own person: bounded counts are plain counts)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "lat": rng.uniform(INNER[1], INNER[3], n),
            "lng": rng.uniform(INNER[0], INNER[2], n),
            "amount": rng.integers(0, 101, n),
        }
    )


def interior_cells(n: int, resolution: int = RESOLUTION) -> list[str]:
    """``n`` cells lying wholly inside the region, spread out, in a fixed order."""
    inside = [c for c in centre_cells(resolution=resolution) if REGION.contains(cell_polygon(c))]
    assert len(inside) >= n, "region too small for the requested number of interior cells"
    step = len(inside) // n
    return [inside[i * step] for i in range(n)]


@dataclass(frozen=True)
class BorderCase:
    """A cell that overlaps the region but whose centre is outside, and a point in it."""

    cell: str
    lat: float
    lng: float


def border_case(resolution: int = RESOLUTION) -> BorderCase:
    """First (sorted) border cell with a point that is inside both the region and the cell."""
    for cell in sorted(
        set(overlap_cells(resolution=resolution)) - set(centre_cells(resolution=resolution))
    ):
        part = cell_polygon(cell).intersection(REGION)
        if part.is_empty or part.area == 0:
            continue
        pt = part.representative_point()
        if REGION.contains(pt) and h3.latlng_to_cell(pt.y, pt.x, resolution) == cell:
            lat, lng = cell_centre(cell)
            assert not REGION.contains(shapely.Point(lng, lat))
            return BorderCase(cell=cell, lat=float(pt.y), lng=float(pt.x))
    raise AssertionError("no border case found")  # pragma: no cover


# ------------------------------------------------------------------------------- points


def person_id(i: int) -> str:
    return f"debtor-{i:05d}-zq"


def debtors(
    n_persons: int = 120,
    records_per_person: int = 3,
    n_cells: int = 4,
    *,
    spread: bool = True,
    first_id: int = 0,
) -> pd.DataFrame:
    """A deterministic debt register at cell centres.

    Person ``i`` lives in ``interior_cells(n_cells)[i % n_cells]``. With ``spread`` their
    j-th record is in the next cell (j cells on), so ``max_cells`` matters; otherwise all
    their records are in their home cell (so ``max_records_per_cell`` cuts them).
    ``amount`` is a whole number 10..1990 (a few are 5000, above typical bounds);
    ``creditor`` cycles through bank / utility / telecom.
    """
    cells = interior_cells(n_cells)
    rows = []
    for i in range(first_id, first_id + n_persons):
        for j in range(records_per_person):
            cell = cells[(i + (j if spread else 0)) % n_cells]
            lat, lng = cell_centre(cell)
            amount = 5000 if (i + j) % 17 == 0 else 10 * (1 + (i * 7 + j * 13) % 199)
            rows.append(
                {
                    "lat": lat,
                    "lng": lng,
                    "pid": person_id(i),
                    "amount": amount,
                    "creditor": ALL_CREDITORS[(i + j) % 3],
                }
            )
    return pd.DataFrame(rows)


#: Distinctive PRIVATE numbers of :func:`leaky_debtors` (searched for in written files).
LEAK_PERSONS = 617
LEAK_RECORDS_PER_PERSON = 5
LEAK_MISSING_COORDS = 987
LEAK_OUTSIDE = 1234
LEAK_ROWS = LEAK_PERSONS * LEAK_RECORDS_PER_PERSON + LEAK_MISSING_COORDS + LEAK_OUTSIDE  # 5306
LEAK_CUT = LEAK_PERSONS * (LEAK_RECORDS_PER_PERSON - 1)  # 2468 with max_records_per_cell=1


def leaky_debtors() -> pd.DataFrame:
    """Debtors plus rows the pipeline must drop, in distinctive numbers.

    617 persons x 5 records in their home cell (4 interior cells), 987 rows with missing
    coordinates, 1234 rows far outside the region (at odd, recognisable coordinates).
    With ``person='pid'`` and the default bounds 2468 records are cut.
    """
    inside = debtors(LEAK_PERSONS, LEAK_RECORDS_PER_PERSON, 4, spread=False)
    k = np.arange(LEAK_MISSING_COORDS)
    missing = pd.DataFrame(
        {
            "lat": np.where(k % 2 == 0, np.nan, 39.1),
            "lng": np.where(k % 2 == 0, 116.1, np.nan),
            "pid": [person_id(50_000 + int(i)) for i in k],
            "amount": 100,
            "creditor": "bank",
        }
    )
    k = np.arange(LEAK_OUTSIDE)
    outside = pd.DataFrame(
        {
            "lat": FAR_AWAY[0] + (k % 7) * 0.0101,
            "lng": FAR_AWAY[1] + (k % 5) * 0.0101,
            "pid": [person_id(70_000 + int(i)) for i in k],
            "amount": 100,
            "creditor": "utility",
        }
    )
    return pd.concat([inside, missing, outside], ignore_index=True)


# -------------------------------------------------------------------- input conversions


def as_polars(df: pd.DataFrame) -> pl.DataFrame:
    return pl.from_pandas(df)


def as_lazy(df: pd.DataFrame) -> pl.LazyFrame:
    return pl.from_pandas(df).lazy()


def as_geodataframe(
    df: pd.DataFrame, crs: str | int = "EPSG:4326", *, junk_latlng: bool = True
) -> gpd.GeoDataFrame:
    """Points as a GeoDataFrame in ``crs``.

    With ``junk_latlng`` the ``lat``/``lng`` columns are kept but overwritten with
    nonsense (strings), to show that dpmap takes coordinates from the geometry.
    """
    gdf = gpd.GeoDataFrame(
        df.copy(), geometry=gpd.points_from_xy(df["lng"], df["lat"]), crs="EPSG:4326"
    )
    gdf = gdf.to_crs(crs)
    if junk_latlng:
        gdf["lat"] = "not a latitude"
        gdf["lng"] = "not a longitude"
    else:
        gdf = gdf.drop(columns=["lat", "lng"])
    return gdf


def write_csv(df: pd.DataFrame, folder: Path, name: str = "points.csv") -> Path:
    path = Path(folder) / name
    df.to_csv(path, index=False)
    return path


def write_parquet(df: pd.DataFrame, folder: Path, name: str = "points.parquet") -> Path:
    path = Path(folder) / name
    df.to_parquet(path, index=False)
    return path


def list_folder(folder: Path) -> list[str]:
    """Every entry of a folder, hidden and temporary files included, sorted."""
    return sorted(p.name for p in Path(folder).iterdir())


#: The adaptive tests' region: about 70 × 67 km around Beijing.
ADAPTIVE_REGION = shapely.geometry.box(116.0, 39.0, 116.8, 39.6)


def cluster_points(n_dense: int = 4000, seed: int = 0) -> pd.DataFrame:
    """A dense cluster (about 1 km across) and a thin scatter of 300 over ADAPTIVE_REGION."""
    rng = np.random.default_rng(seed)
    lat = np.concatenate([rng.normal(39.3, 0.004, n_dense), rng.uniform(39.01, 39.59, 300)])
    lng = np.concatenate([rng.normal(116.4, 0.004, n_dense), rng.uniform(116.01, 116.79, 300)])
    return pd.DataFrame(
        {
            "pid": np.arange(len(lat)),
            "lat": lat,
            "lng": lng,
            "amount": rng.uniform(0, 100, len(lat)),
        }
    )


# --------------------------------------------------------------- noise of linear estimates


def dlap_moments(q: Any) -> tuple[Any, Any]:
    """Variance and fourth moment of discrete Laplace noise with q = e^{−1/scale}
    (numbers or arrays): 2q/(1−q)² and 2q(1 + 11q + 11q² + q³)/((1+q)(1−q)⁴)."""
    var = 2 * q / (1 - q) ** 2
    m4 = 2 * q * (1 + 11 * q + 11 * q**2 + q**3) / ((1 + q) * (1 - q) ** 4)
    return var, m4


def numpy_noise(mechanism: Any, scale: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Integer noise with OpenDP's distribution at ``scale``, drawn by numpy.

    Discrete Laplace: the difference of two Geometric(1 − e^(−1/s)) draws has P(k) ∝
    e^(−|k|/s) exactly. Discrete Gaussian: P(k) ∝ e^(−k²/2σ²), by inversion of its CDF on
    |k| ≤ 40σ + 10 (the mass beyond is < e^(−800)). ``mechanism``: a
    :class:`dpmap.spec.Mechanism` or its name. Checked against the exact pmf by
    tests/test_value_bands.py::test_numpy_noise_has_the_stated_distribution."""
    if str(mechanism) == "laplace":
        p = -math.expm1(-1 / scale)
        return rng.geometric(p, size) - rng.geometric(p, size)
    k = np.arange(-math.ceil(40 * scale + 10), math.ceil(40 * scale + 10) + 1)
    cdf = np.cumsum(np.exp(-(k.astype(np.float64) ** 2) / (2 * scale**2)))
    return k[np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right")]


def opendp_laplace_draws(values: np.ndarray, scale: float, ndraws: int) -> np.ndarray:
    """``ndraws`` fresh OpenDP discrete-Laplace draws around each value: shape (n, ndraws)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    meas = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale
    )
    tiled = np.repeat(np.asarray(values, dtype=np.int64), ndraws)
    return np.asarray(meas(tiled), dtype=np.float64).reshape(len(values), ndraws)


def check_linear_estimate(
    err: np.ndarray, P: np.ndarray, coef: np.ndarray, scales: list[float], ndraws: int
) -> None:
    """Estimates e = Σ_j coef_j η_j of independent discrete-Laplace noises η_j (with the given
    scales), drawn ``ndraws`` times (``err``: one row per estimate): the coefficients give
    the stated variance ``P`` exactly, and per estimate |mean(e)| ≤ 6.5·√(P/N) and
    |mean(e²) − P| ≤ 7.5·√((E[e⁴] − P²)/N), E[e⁴] = 3P² + Σ coef⁴ (E[η⁴] − 3Var²) exactly."""
    var_j, m4_j = dlap_moments(np.exp(-1.0 / np.asarray(scales, dtype=np.float64)))
    np.testing.assert_allclose(coef**2 @ var_j, P, rtol=1e-9)  # the stated variance, exactly
    m4 = 3 * P**2 + coef**4 @ (m4_j - 3 * var_j**2)
    assert np.all(np.abs(err.mean(axis=1)) <= 6.5 * np.sqrt(P / ndraws))
    assert np.all(np.abs((err**2).mean(axis=1) - P) <= 7.5 * np.sqrt((m4 - P**2) / ndraws))


# ------------------------------------------------------------- skips that CI must not take


def under_ci() -> bool:
    """Whether the environment variable ``CI`` is set (to anything but "", 0, false, no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str, *, module: bool = False) -> NoReturn:
    """Skip with ``reason`` — or, when ``CI`` is set, fail: CI installs everything the
    suite needs (``.ci/run``: Chromium, a Java runtime, the ``dev`` extra), so a test
    that would skip there is a broken CI, not an optional test. ``module=True`` at
    module level (a collection error under CI)."""
    if under_ci():
        pytest.fail(f"{reason} — CI is set, so this test must run, not skip", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


def import_or_skip(name: str, reason: str | None = None) -> ModuleType:
    """``pytest.importorskip`` at module level, but a failure when ``CI`` is set."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        skip_or_fail(reason or f"could not import {name!r}: {exc}", module=True)


def check_dlap_noise(err: Any, scale: float, what: str = "noise") -> None:
    """``err`` (noisy − true, ≥ 10,000 independent draws) is discrete Laplace noise of
    ``scale``: two-sided, |mean| ≤ 6.5·√(Var/N) and |mean(err²) − Var| ≤ 7.5·√((E[X⁴] −
    Var²)/N), with Var and E[X⁴] exact (:func:`dlap_moments`). The mean of N ≥ 1e4 i.i.d.
    draws with all moments finite is normal to high accuracy: P(|Z| > 6.5) = 8e-11; err² has
    skewness ≤ 6.6 (a Laplace), so its mean has skewness ≤ 0.066 and the Cornish–Fisher
    shift at 7.5 SE is ≤ 0.62 SE, still beyond 6.5 SE. Each call fails a correct
    implementation with probability < 2e-10.

    Power: err² has relative standard deviation √((E[X⁴] − Var²))/Var ≤ √5, so with
    N ≥ 20,000 the second-moment window is ±7.5·√(5/N) ≤ ±0.119·Var, while noise at 0.85×
    or 1.15× the scale moves Var by −28% / +32% (and noiseless output by −100%)."""
    err = np.asarray(err, dtype=np.float64).ravel()
    n = len(err)
    assert n >= 10_000, f"{what}: only {n} draws"
    var, m4 = dlap_moments(np.exp(-1.0 / scale))
    mean, m2 = float(err.mean()), float((err**2).mean())
    assert abs(mean) <= 6.5 * np.sqrt(var / n), f"{what}: mean {mean:.4g} (sd {var**0.5:.4g})"
    se = float(np.sqrt((m4 - var**2) / n))
    assert abs(m2 - var) <= 7.5 * se, (
        f"{what}: mean square {m2:.5g}, expected {var:.5g} ± {7.5 * se:.3g} "
        f"(scale {scale:.5g}; the data look like scale ≈ {scale * (m2 / var) ** 0.5:.4g})"
    )


# -------------------------------------------------------------------------------- panels

MONTHS = pd.period_range("2026-01", "2026-06", freq="M")


def panel_spec(**kw: Any) -> Any:
    """A panel's ReleaseSpec: ``MONTHS`` at ``RESOLUTION``, ε = 1, person ``pid``, time
    ``date``; ``kw`` sets or overrides any field (``max_periods``, ``periods``, ...)."""
    from dpmap.spec import ReleaseSpec

    base: dict[str, Any] = {
        "resolution": RESOLUTION,
        "epsilon": 1.0,
        "person": "pid",
        "time": "date",
        "periods": MONTHS,
    }
    return ReleaseSpec(**{**base, **kw})


def vector_i64() -> Any:
    """OpenDP's domain of integer count vectors (privacy maps by hand)."""
    import opendp.prelude as dp

    return dp.vector_domain(dp.atom_domain(T="i64"))
