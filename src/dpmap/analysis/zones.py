"""Zones against cells: equal-area overlay of H3 cells with public polygons."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dpmap.errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    pass


#: columns produced by aggregate_to that are not keys
RESULT_COLUMNS = {
    "category",
    "count",
    "count_moe",
    "count_lo",
    "count_hi",
    "sum",
    "sum_moe",
    "sum_lo",
    "sum_hi",
    "coverage",
    "cells",
}


#: Equal-area projection used for the areas of cell pieces and polygons
#: (WGS 84 / NSIDC EASE-Grid 2.0 Global, a Lambert cylindrical equal-area projection).
EQUAL_AREA_CRS = "EPSG:6933"


#: polygons are densified to this edge length (degrees) before their area is measured
SEGMENT_DEG = 0.05


#: shares of a cell below this (or above 1 minus this) are floating-point slivers of a shared edge
_SNAP = 1e-6


def _transformer() -> Any:
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", EQUAL_AREA_CRS, always_xy=True)


def equal_area(geoms: np.ndarray) -> np.ndarray:
    """Areas (m²) of lon/lat geometries, measured in the equal-area projection."""
    import shapely

    if len(geoms) == 0:
        return np.zeros(0)
    tr = _transformer()

    def project(coords: np.ndarray) -> np.ndarray:
        x, y = tr.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return np.asarray(shapely.area(shapely.transform(geoms, project)), dtype=np.float64)


def overlay(
    cells: np.ndarray, polys: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (cell, polygon) that share area: (cell index, polygon index, weight, area m²).

    weight = area(cell ∩ polygon) / area(cell). Cells wholly inside a polygon (found with
    a prepared ``contains_properly`` query) get weight 1 without computing an intersection;
    weights within 1e-6 of 0 or 1 (slivers along shared edges) are snapped to 0 or 1.
    """
    import shapely

    tree = shapely.STRtree(cells)
    pj, pi = tree.query(polys, predicate="intersects")
    ij, ii = tree.query(polys, predicate="contains_properly")
    n = np.int64(len(cells))
    inside = np.isin(pj.astype(np.int64) * n + pi, ij.astype(np.int64) * n + ii)
    used = np.unique(pi)
    cell_area = np.zeros(len(cells))
    cell_area[used] = equal_area(cells[used])
    area = cell_area[pi].copy()
    border = ~inside
    if border.any():
        pieces = shapely.intersection(cells[pi[border]], polys[pj[border]])
        area[border] = np.minimum(equal_area(pieces), cell_area[pi[border]])
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = np.where(cell_area[pi] > 0, area / cell_area[pi], 0.0)
    # shared edges computed twice in floating point leave slivers: snap them
    weight = np.where(weight < _SNAP, 0.0, np.where(weight > 1 - _SNAP, 1.0, weight))
    area = weight * cell_area[pi]
    keep = weight > 0
    return pi[keep], pj[keep], weight[keep], area[keep]


def zone_polygons(polygons: Any, by: str | None) -> tuple[np.ndarray, pd.Series, str]:
    """User polygons -> (EPSG:4326 polygons, key values, key column name)."""
    import geopandas as gpd
    import shapely

    if isinstance(polygons, gpd.GeoSeries):
        polygons = gpd.GeoDataFrame(geometry=polygons)
    if not isinstance(polygons, gpd.GeoDataFrame):
        raise SpecError(
            f"polygons must be a GeoDataFrame (or GeoSeries), got {type(polygons).__name__}; "
            "read them with geopandas.read_file(...)"
        )
    if len(polygons) == 0:
        raise SpecError("polygons is empty; pass at least one polygon")
    if polygons.crs is None:
        raise SpecError(
            "the polygons have no CRS, so dpmap cannot tell whether they are in degrees; set it, "
            "e.g. polygons.set_crs('EPSG:4326') for lon/lat, or the CRS they were drawn in"
        )
    if by is None:
        name = polygons.index.name or "polygon"
        keys = pd.Series(polygons.index.to_numpy(), name=name)
    else:
        if by not in polygons.columns or by == polygons.geometry.name:
            cols = [c for c in polygons.columns if c != polygons.geometry.name]
            raise SpecError(
                f"the polygons have no column {by!r}; pass by=<the column naming each polygon> "
                f"(one of {cols}) or by=None to use the index"
            )
        name = by
        keys = pd.Series(polygons[by].to_numpy(), name=name)
    if name in RESULT_COLUMNS or name == "geometry":
        raise SpecError(
            f"the polygons' key column is called {name!r}, a name the result uses for a statistic; "
            "rename it (e.g. polygons.rename(columns={...}))"
        )
    if keys.isna().any():
        raise SpecError(f"the key column {name!r} has missing values; name every polygon")
    dup = keys[keys.duplicated()]
    if len(dup):
        raise SpecError(
            f"the key column {name!r} repeats {dup.iloc[0]!r}; each polygon needs its own key, or "
            f"merge the parts first with polygons.dissolve(by={name!r})"
        )
    geoms = np.asarray(polygons.to_crs("EPSG:4326").geometry.to_numpy(), dtype=object)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if missing.any():
        raise SpecError(
            f"polygon {keys[missing].iloc[0]!r} has no geometry; drop it or give it its shape"
        )
    kinds = shapely.get_type_id(geoms)
    if not np.isin(kinds, (3, 6)).all():  # Polygon, MultiPolygon
        bad = int(np.flatnonzero(~np.isin(kinds, (3, 6)))[0])
        raise SpecError(
            f"polygon {keys.iloc[bad]!r} is a {geoms[bad].geom_type}, not an area; pass Polygons "
            "or MultiPolygons"
        )
    valid = shapely.is_valid(geoms)
    if not valid.all():
        bad = int(np.flatnonzero(~valid)[0])
        raise SpecError(
            f"polygon {keys.iloc[bad]!r} is not valid ({shapely.is_valid_reason(geoms[bad])}); "
            "repair it first, e.g. polygons.geometry = polygons.make_valid()"
        )
    return geoms, keys, name
