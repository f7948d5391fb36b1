"""H3 helpers: resolution rules, int64 <-> hex, cell polygons, and the public region.

H3 indexes are ``int64`` inside dpmap and hex strings only at the edges (files, the
``cell`` column of a release). The *public cell set* of a release is every cell at the
chosen resolution that overlaps the region, so that people living near the border are
not silently lost; it depends only on the region and the resolution, never on data.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import h3
import numpy as np
import polars as pl
import polars_h3 as plh3
import shapely
from h3.api import numpy_int as h3np
from shapely.geometry.base import BaseGeometry

from dpmap.errors import DataFileError, RegionError, SpecError

__all__ = [
    "MAX_RESOLUTION",
    "DomainPolygons",
    "Region",
    "Zones",
    "cells_to_hex",
    "cells_to_polygons",
    "check_resolution",
    "hex_to_cells",
    "region_to_cells",
    "to_region",
    "to_zones",
]

#: The finest resolution dpmap publishes (res 9 cells average 0.105 km²). Finer cells are
#: not neighbourhood-level statistics: they would come close to locating households.
MAX_RESOLUTION = 9

_AVG_AREA_KM2 = {r: h3.average_hexagon_area(r, unit="km^2") for r in range(16)}


#: what parsing a malformed GeoJSON mapping into a geometry raises
_GEOJSON_ERRORS = (KeyError, TypeError, ValueError, AttributeError, shapely.errors.ShapelyError)


def check_resolution(resolution: Any) -> int:
    """Return ``resolution`` as an int in ``0..MAX_RESOLUTION`` or raise :class:`SpecError`."""
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise SpecError(
            f"resolution must be a whole number from 0 to {MAX_RESOLUTION}, got {resolution!r}; "
            "pass e.g. resolution=7 (cells of about 5 km²)"
        )
    r = int(resolution)
    if not 0 <= r <= MAX_RESOLUTION:
        raise SpecError(
            f"resolution {r} is outside 0..{MAX_RESOLUTION}; dpmap refuses cells finer than "
            f"resolution {MAX_RESOLUTION} (≈{_AVG_AREA_KM2[MAX_RESOLUTION]:.2f} km²) because they are "
            f"not neighbourhood-level; choose a resolution from 0 to {MAX_RESOLUTION}"
        )
    return r


def average_cell_area_km2(resolution: int) -> float:
    """Average area of an H3 cell at ``resolution``, in km²."""
    return _AVG_AREA_KM2[resolution]


def cells_to_hex(cells: np.ndarray) -> np.ndarray:
    """int64 H3 indexes -> array of hex strings (object dtype)."""
    s = pl.Series("c", np.asarray(cells, dtype=np.int64)).cast(pl.UInt64)
    return pl.DataFrame({"c": s}).select(plh3.int_to_str("c"))["c"].to_numpy()


def hex_to_cells(hexes: Iterable[str]) -> np.ndarray:
    """Hex strings -> int64 H3 indexes; raises :class:`SpecError` on an invalid id."""
    s = pl.Series("c", list(hexes), dtype=pl.String)
    out = pl.DataFrame({"c": s}).select(plh3.str_to_int("c"))["c"]
    if out.null_count() > s.null_count():
        bad = s.filter(out.is_null() & s.is_not_null()).head(1).to_list()
        raise SpecError(f"{bad[0]!r} is not an H3 cell id; cell ids are 15-character hex strings")
    return out.cast(pl.Int64).to_numpy()


def cells_to_polygons(cells: np.ndarray) -> np.ndarray:
    """int64 H3 indexes -> array of shapely Polygons in lon/lat (EPSG:4326), vectorised."""
    cells = np.asarray(cells, dtype=np.int64)
    if len(cells) == 0:
        return np.array([], dtype=object)
    unique, where = np.unique(cells, return_inverse=True)
    if len(unique) < len(cells):  # a breakdown repeats each cell once per category
        return _unique_cells_to_polygons(unique)[where]
    return _unique_cells_to_polygons(cells)


class DomainPolygons:
    """The polygons of a public cell set, drawn on a background thread meanwhile.

    A release knows its public cells before it reads any data, and their polygons depend on
    nothing else; drawing them while the engine bins and bounds the points takes them off
    the release's critical path (polars and shapely run without Python's lock). :meth:`of`
    takes the polygons of the cells in the set from there and draws any others itself.
    """

    def __init__(self, domain: np.ndarray) -> None:
        self.domain = np.asarray(domain, dtype=np.int64)  # sorted and unique
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpmap-polygons")
        self.pending: Future[np.ndarray] = pool.submit(cells_to_polygons, self.domain)
        pool.shutdown(wait=False)  # the thread ends when the polygons are drawn

    def of(self, cells: np.ndarray) -> np.ndarray:
        """The polygons of ``cells`` (int64 H3 indexes, any order, repeats allowed), as
        :func:`cells_to_polygons` returns them."""
        cells = np.asarray(cells, dtype=np.int64)
        if len(cells) == 0 or len(self.domain) == 0:
            return cells_to_polygons(cells)
        at = np.minimum(np.searchsorted(self.domain, cells), len(self.domain) - 1)
        known = self.domain[at] == cells
        out = np.empty(len(cells), dtype=object)
        out[known] = self.pending.result()[at[known]]
        if not known.all():
            out[~known] = cells_to_polygons(cells[~known])
        return out


def _unique_cells_to_polygons(cells: np.ndarray) -> np.ndarray:
    bnd = pl.DataFrame({"c": pl.Series(cells).cast(pl.UInt64)}).select(plh3.cell_to_boundary("c"))[
        "c"
    ]
    # flat [lat, lng, lat, lng, ...] without Python objects; a ring's vertex count varies
    # (pentagons, cells crossing icosahedron edges), so rings are indexed from the lengths
    flat = bnd.explode().explode().to_numpy().astype(np.float64)
    idx = np.repeat(np.arange(len(cells)), bnd.list.len().to_numpy())
    rings = shapely.linearrings(flat.reshape(-1, 2)[:, ::-1], indices=idx)
    return shapely.polygons(rings)


@dataclass(frozen=True)
class Region:
    """A public area, as a valid (multi)polygon in lon/lat degrees (EPSG:4326).

    The region is public knowledge (a jurisdiction's boundary); its fingerprint is
    recorded in every manifest so that readers can tell which area a release covers.
    """

    geometry: BaseGeometry
    name: str | None = None
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        geom = shapely.normalize(self.geometry)
        digest = hashlib.sha256(shapely.to_wkb(geom, output_dimension=2)).hexdigest()
        object.__setattr__(self, "fingerprint", f"sha256:{digest}")

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return tuple(float(v) for v in self.geometry.bounds)  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        """Public description for the manifest."""
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "bbox": [round(v, 6) for v in self.bounds],
        }


def to_region(obj: Any, *, name: str | None = None) -> Region:
    """Coerce a shapely geometry, GeoDataFrame/GeoSeries, GeoJSON mapping or path to a Region.

    GeoDataFrames/GeoSeries are reprojected to EPSG:4326; one without a CRS is refused.
    Raises :class:`RegionError` (or :class:`DataFileError` for files) with the fix.
    """
    if isinstance(obj, Region):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return _region_from_path(os.fspath(obj), name=name)
    if isinstance(obj, BaseGeometry):
        return _checked_region(obj, name=name, source="the region geometry")
    if isinstance(obj, dict):
        try:
            geom = _geometry_from_mapping(obj)
        except _GEOJSON_ERRORS as exc:
            raise RegionError(
                f"the region mapping is not valid GeoJSON ({exc}); pass a GeoJSON geometry, "
                "Feature or FeatureCollection"
            ) from exc
        return _checked_region(geom, name=name, source="the GeoJSON region")
    try:
        import geopandas as gpd
    except ImportError:  # pragma: no cover - geopandas is a core dependency
        gpd = None
    if gpd is not None and isinstance(obj, (gpd.GeoDataFrame, gpd.GeoSeries)):
        if len(obj) == 0:
            raise RegionError("the region GeoDataFrame is empty; pass at least one polygon")
        if obj.crs is None:
            raise RegionError(
                "the region has no CRS, so dpmap cannot tell whether it is in degrees; set it, e.g. "
                "region.set_crs('EPSG:4326') for lon/lat, or the CRS it was drawn in"
            )
        geoms = obj.to_crs("EPSG:4326")
        geoms = geoms.geometry if hasattr(geoms, "geometry") else geoms
        return _checked_region(
            shapely.union_all(np.asarray(geoms.values)), name=name, source="the region"
        )
    raise RegionError(
        f"cannot use an object of type {type(obj).__name__} as a region; pass a shapely polygon, "
        "a GeoDataFrame/GeoSeries, a GeoJSON mapping, or the path of a GeoJSON file"
    )


def _geometry_from_mapping(obj: dict[str, Any]) -> BaseGeometry:
    kind = obj.get("type")
    if kind == "FeatureCollection":
        return shapely.union_all(
            [shapely.geometry.shape(f["geometry"]) for f in obj["features"] if f.get("geometry")]
        )
    if kind == "Feature":
        return shapely.geometry.shape(obj["geometry"])
    return shapely.geometry.shape(obj)


def _region_from_path(path: str, *, name: str | None) -> Region:
    if not os.path.exists(path):
        raise DataFileError(f"region file {path!r} does not exist; check the path")
    lower = path.lower()
    if lower.endswith((".geojson", ".json")):
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise DataFileError(
                f"region file {path!r} is not readable GeoJSON ({exc}); pass a valid GeoJSON file"
            ) from exc
        crs_obj = data.get("crs") if isinstance(data, dict) else None
        props = crs_obj.get("properties") if isinstance(crs_obj, dict) else None
        crs = props.get("name", "") if isinstance(props, dict) else ""
        crs = crs if isinstance(crs, str) else ""
        if crs and not _is_wgs84_name(crs):  # another CRS: read and reproject as GeoPackages are
            return _region_with_crs(path, crs, name=name)
        if not isinstance(data, dict):
            raise DataFileError(f"region file {path!r} is not a GeoJSON object")
        try:
            geom = _geometry_from_mapping(data)
        except _GEOJSON_ERRORS as exc:
            raise DataFileError(
                f"region file {path!r} is not valid GeoJSON ({exc}); pass a GeoJSON geometry, "
                "Feature or FeatureCollection"
            ) from exc
        return _checked_region(
            geom, name=name or os.path.basename(path), source=f"region file {path!r}"
        )
    if lower.endswith((".parquet", ".gpkg", ".shp", ".fgb")):
        gdf = read_polygon_file(
            path,
            f"region file {path!r}",
            "check that it is a valid GeoParquet/GeoPackage/shapefile",
        )
        return to_region(gdf, name=name or os.path.basename(path))
    raise DataFileError(
        f"region file {path!r} has an unsupported type; use GeoJSON (.geojson), GeoParquet, "
        "GeoPackage or a shapefile"
    )


def _is_wgs84_name(crs: str) -> bool:
    """A GeoJSON ``crs`` name meaning lon/lat WGS 84 (EPSG:4326, OGC CRS84 and their URNs)."""
    tail = crs.upper().replace("::", ":").rstrip(":").rsplit(":", 1)[-1]
    return tail in ("4326", "CRS84")


def _region_with_crs(path: str, crs: str, *, name: str | None) -> Region:
    """A GeoJSON region that declares a CRS other than WGS 84 (e.g. NAD83, EPSG:4269, or
    a projected one): read with that CRS and reprojected to EPSG:4326."""
    import geopandas as gpd
    import pyproj

    try:
        pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError:
        raise RegionError(
            f"region file {path!r} declares CRS {crs!r}, which is not a known coordinate "
            'reference system; fix its "crs" member (e.g. "urn:ogc:def:crs:EPSG::4269") or '
            "remove it if the coordinates are lon/lat WGS 84"
        ) from None
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataFileError(
            f"cannot read region file {path!r}: {first}; pass a valid GeoJSON file"
        ) from exc
    if gdf.crs is None:  # pragma: no cover - GDAL reads every CRS pyproj knows
        gdf = gdf.set_crs(crs)
    return to_region(gdf, name=name or os.path.basename(path))


def _checked_region(geom: BaseGeometry, *, name: str | None, source: str) -> Region:
    if geom is None or geom.is_empty:
        raise RegionError(f"{source} is empty; pass the polygon of the area to publish")
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        polys = [
            g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")
        ]
        if not polys:
            raise RegionError(
                f"{source} is a {geom.geom_type}, not an area; pass a Polygon or MultiPolygon"
            )
        geom = shapely.union_all(polys)
    if not geom.is_valid:
        raise RegionError(
            f"{source} is not a valid polygon ({shapely.is_valid_reason(geom)}); repair it first, "
            "e.g. with shapely.make_valid(geometry)"
        )
    if geom.area == 0:
        raise RegionError(f"{source} has zero area; pass the polygon of the area to publish")
    minx, miny, maxx, maxy = geom.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise RegionError(
            f"{source} has bounds ({minx:.6g}, {miny:.6g}, {maxx:.6g}, {maxy:.6g}) that are not "
            "lon/lat degrees; reproject it to EPSG:4326 (e.g. gdf.to_crs('EPSG:4326'))"
        )
    return Region(geometry=geom, name=name)


#: the most public cells a release may have (each costs ~2 kB in the pipeline): enough for
#: a province at resolution 9 (~1.8 M) or a country at resolution 7 (~2 M), refusing
#: continent-sized fills that would exhaust memory
MAX_PUBLIC_CELLS = 5_000_000


def _check_cell_count(region: Region, resolution: int) -> None:
    """Refuse a region with more than MAX_PUBLIC_CELLS cells, before making them."""
    from pyproj import Geod

    area_km2 = abs(Geod(ellps="WGS84").geometry_area_perimeter(region.geometry)[0]) / 1e6
    n = area_km2 / _AVG_AREA_KM2[resolution]
    if n > MAX_PUBLIC_CELLS:
        coarser = next(
            (
                r
                for r in range(resolution, -1, -1)
                if area_km2 / _AVG_AREA_KM2[r] <= MAX_PUBLIC_CELLS
            ),
            0,
        )
        raise RegionError(
            f"the region covers about {n:.2g} H3 cells at resolution {resolution} (limit "
            f"{MAX_PUBLIC_CELLS:.0e}); choose a coarser resolution (resolution {coarser}: about "
            f"{area_km2 / _AVG_AREA_KM2[coarser]:.2g} cells) or a smaller region"
        )


def region_to_cells(region: Region, resolution: int) -> np.ndarray:
    """The public cell set: sorted int64 ids of every cell overlapping ``region``.

    Uses H3's ``contain="overlap"`` polyfill: a cell is included when any part of it
    touches the region. H3 skips a cell whose centre lies in a *hole* of the region even
    when the rest of the cell overlaps it, so the fill is done on the region without its
    holes and the extra cells are kept only if they really intersect the region. Depends
    only on the region and the resolution (never on data); cached per (region,
    resolution), read-only.
    """
    return _region_to_cells(region, resolution)


@functools.lru_cache(maxsize=16)
def _region_to_cells(region: Region, resolution: int) -> np.ndarray:
    def fill(geom: BaseGeometry) -> np.ndarray:
        # H3 reads each edge as the shorter great-circle arc: fill strips narrower than 180°
        # of longitude, with densified edges, so the region means what it says in lon/lat
        parts = [np.empty(0, dtype=np.uint64)]
        for x0 in (-180, -90, 0, 90):
            strip = geom.intersection(shapely.box(x0, -90, x0 + 90, 90))
            for poly in shapely.get_parts(strip):
                if poly.geom_type == "Polygon" and not poly.is_empty:
                    shape = h3.geo_to_h3shape(shapely.segmentize(poly, 1.0).__geo_interface__)
                    cells = h3np.h3shape_to_cells_experimental(shape, resolution, contain="overlap")
                    parts.append(np.asarray(cells, dtype=np.uint64))
        return np.unique(np.concatenate(parts).astype(np.int64))

    _check_cell_count(region, resolution)

    geom = region.geometry
    cells = fill(geom)
    without_holes = shapely.polygons(shapely.get_exterior_ring(shapely.get_parts(geom)))
    if any(len(p.interiors) for p in shapely.get_parts(geom)):
        extra = np.setdiff1d(fill(shapely.union_all(without_holes)), cells)
        if len(extra):
            keep = shapely.intersects(cells_to_polygons(extra), geom)
            cells = np.union1d(cells, extra[keep])
    if len(cells) == 0:  # pragma: no cover - overlap always finds at least one cell
        raise RegionError("the region covers no H3 cell; check that it is in lon/lat degrees")
    cells.setflags(write=False)
    return cells


def read_polygon_file(path: str | os.PathLike[str], what: str, fix: str) -> Any:
    """A GeoParquet file or anything GDAL reads (GeoJSON, GeoPackage, shapefile, ...) as a
    GeoDataFrame; a file that cannot be read is a one-line DataFileError naming ``what``
    (e.g. "region file 'x.gpkg'") and ``fix``."""
    import geopandas as gpd

    try:
        if str(path).lower().endswith(".parquet"):
            return gpd.read_parquet(path)
        return gpd.read_file(path)
    except Exception as exc:  # pyogrio/pyarrow raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataFileError(f"cannot read {what}: {first}; {fix}") from None


# ---------------------------------------------------------------------------------------
# zones: a public partition released directly (one row per zone)


@dataclass(frozen=True, eq=False)
class Zones:
    """Public, non-overlapping zones (districts), sorted by name, in lon/lat degrees.

    Built by :func:`to_zones`, which refuses duplicate or missing names, empty, invalid or
    non-areal geometries and overlapping zones. :meth:`assign` puts each point in the zone
    that contains it; its fingerprint (sha256 of the names and normalised WKB) goes to the
    manifest.
    """

    names: tuple[str, ...]
    geometries: np.ndarray  # shapely (Multi)Polygons, EPSG:4326, one per name
    by: str
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256()
        for name, geom in zip(self.names, self.geometries, strict=True):
            digest.update(name.encode("utf-8") + b"\0")
            digest.update(shapely.to_wkb(shapely.normalize(geom), output_dimension=2))
        object.__setattr__(self, "fingerprint", f"sha256:{digest.hexdigest()}")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def domain(self) -> np.ndarray:
        """The public key set: zone indexes 0..n-1 (int64, sorted)."""
        return np.arange(len(self.names), dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        """Public description for the manifest."""
        minx, miny, maxx, maxy = shapely.total_bounds(self.geometries)
        return {
            "by": self.by,
            "zones": len(self.names),
            "fingerprint": self.fingerprint,
            "bbox": [round(float(v), 6) for v in (minx, miny, maxx, maxy)],
        }

    def assign(self, lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
        """The zone index of each point (int64), -1 for a point outside every zone.

        Exact point-in-polygon (shapely's ``covers``, vectorised through an STRtree): a
        point in a zone's interior is in that zone; a point in a hole is not; a point on a
        border that several zones share goes to the first of them by name (the smallest
        index), so every point goes to at most one zone, whatever the row order.
        """
        lat = np.asarray(lat, dtype=np.float64)
        lng = np.asarray(lng, dtype=np.float64)
        out = np.full(len(lat), len(self.names), dtype=np.int64)
        if len(lat):
            points = shapely.points(lng, lat)
            pi, zi = _zone_tree(self).query(points, predicate="covered_by")
            np.minimum.at(out, pi, zi.astype(np.int64))
        out[out == len(self.names)] = -1
        return out


@functools.lru_cache(maxsize=8)
def _zone_tree(zones: Zones) -> shapely.STRtree:
    return shapely.STRtree(zones.geometries)


def _zones_frame(obj: Any, by: str | None) -> Any:
    """``zones=`` as a GeoDataFrame in EPSG:4326 with a ``by`` column (one-line SpecErrors)."""
    import geopandas as gpd

    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        if not os.path.exists(path):
            raise DataFileError(f"zones file {path!r} does not exist; check the path")
        obj = read_polygon_file(
            path, f"zones file {path!r}", "pass a GeoJSON, GeoParquet or GeoPackage of polygons"
        )
    if isinstance(obj, gpd.GeoSeries):
        if by is not None:
            raise SpecError(
                f"by={by!r} names a column, but the zones are a GeoSeries (no columns; its index "
                "names the zones); pass a GeoDataFrame, or drop by="
            )
        obj = gpd.GeoDataFrame({"zone": obj.index.astype(str)}, geometry=obj.values, crs=obj.crs)
        by = "zone"
    if not isinstance(obj, gpd.GeoDataFrame):
        raise SpecError(
            f"zones must be a GeoDataFrame, a GeoSeries or the path of a GeoJSON file, got "
            f"{type(obj).__name__}; e.g. zones=geopandas.read_file('districts.geojson')"
        )
    if by is None:
        raise SpecError("zones= needs by='<column naming the zones>'; pass e.g. by='name'")
    if by not in obj.columns or by == obj.geometry.name:
        have = ", ".join(repr(c) for c in obj.columns if c != obj.geometry.name)
        raise SpecError(
            f"the zones have no column {by!r} (columns: {have or 'none'}); pass by='<column>'"
        )
    if len(obj) == 0:
        raise SpecError("the zones are empty (0 rows); pass at least one zone polygon")
    if obj.crs is None:
        raise SpecError(
            "the zones have no CRS, so dpmap cannot tell whether they are in degrees; set it, "
            "e.g. zones.set_crs('EPSG:4326')"
        )
    return obj.to_crs("EPSG:4326"), by


def _checked_zone_geometries(names: list[str], geoms: np.ndarray) -> None:
    """Refuse missing, empty, non-areal, invalid or out-of-range zone geometries."""
    for name, geom in zip(names, geoms, strict=True):
        if geom is None or geom.is_empty:
            raise SpecError(f"zone {name!r} has an empty geometry; drop it or give its polygon")
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise SpecError(
                f"zone {name!r} is a {geom.geom_type}, not an area; zones must be Polygons "
                "or MultiPolygons"
            )
        if not geom.is_valid:
            raise SpecError(
                f"zone {name!r} is not a valid polygon ({shapely.is_valid_reason(geom)}); "
                "repair it first, e.g. with shapely.make_valid(geometry)"
            )
        if geom.area == 0:
            raise SpecError(f"zone {name!r} has zero area; drop it or give its polygon")
    minx, miny, maxx, maxy = shapely.total_bounds(geoms)
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise SpecError(
            f"the zones have bounds ({minx:.6g}, {miny:.6g}, {maxx:.6g}, {maxy:.6g}) that are "
            "not lon/lat degrees; set their true CRS (e.g. zones.set_crs('EPSG:3857'))"
        )


def _check_no_overlap(names: list[str], geoms: np.ndarray) -> None:
    """Refuse zones whose interiors intersect (sharing a border is fine)."""
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    left, right = left[pairs], right[pairs]
    inner = shapely.relate_pattern(geoms[left], geoms[right], "T********")
    if inner.any():
        i = int(np.flatnonzero(inner)[0])
        a, b = names[left[i]], names[right[i]]
        raise SpecError(
            f"zones {a!r} and {b!r} overlap ({int(inner.sum())} overlapping pair(s)); zones must "
            "be a partition: fix the boundaries (e.g. overlay/difference in GeoPandas)"
        )


def to_zones(obj: Any, by: str | None) -> Zones:
    """``zones=``/``by=`` of a release as :class:`Zones` (checked; any CRS → EPSG:4326).

    Raises a one-line :class:`~dpmap.SpecError` (or :class:`~dpmap.DataFileError` for an
    unreadable file) before any data is read or any budget is spent.
    """
    if isinstance(obj, Zones):
        return obj
    gdf, by = _zones_frame(obj, by)
    raw = gdf[by]
    if raw.isna().any():
        raise SpecError(f"the zones' column {by!r} has missing names; give every zone a name")
    names = [str(v) for v in raw]
    dupes = sorted(n for n, k in collections.Counter(names).items() if k > 1)
    if dupes:
        shown = ", ".join(repr(d) for d in dupes[:5]) + (", ..." if len(dupes) > 5 else "")
        raise SpecError(
            f"the zones' column {by!r} repeats the names {shown}; every zone needs its own "
            "name (dissolve repeated rows first, e.g. zones.dissolve(by))"
        )
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    _checked_zone_geometries(names, geoms)
    order = np.argsort(np.asarray(names, dtype=object), kind="stable")
    names = [names[i] for i in order]
    geoms = geoms[order]
    _check_no_overlap(names, geoms)
    return Zones(names=tuple(names), geometries=geoms, by=by)
