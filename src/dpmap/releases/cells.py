"""The published cell table and the unbiased estimates beside it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dpmap import grid
from dpmap._privacy.postprocess import (
    Estimates,
)
from dpmap.designs.base import Measured
from dpmap.designs.distribution import node_names
from dpmap.spec import ReleaseSpec

_STAT_COLUMNS = (
    "count",
    "count_moe",
    "sum",
    "sum_moe",
    "mean",
    "mean_moe",
    "people",
    "people_moe",
)


KEY_COLUMNS = ("cell", "resolution", "period", "category")


#: columns of the unbiased estimates (written to files only on request)
UNBIASED_COLUMNS = {
    "count": "count_unbiased",
    "count_var": "count_var",
    "sum": "sum_unbiased",
    "sum_var": "sum_var",
    "people": "people_unbiased",
    "people_var": "people_var",
}


def estimates_frame(table: Any, est: Estimates, zone_column: str | None = None) -> pd.DataFrame:
    """Unbiased noisy estimates and their noise variances for every row (suppressed included);
    a zone release's rows are keyed by ``zone_column`` (the zones' name column)."""
    n = len(table)
    keys = ((zone_column,) if zone_column else ()) + KEY_COLUMNS
    out = pd.DataFrame({c: table[c].to_numpy() for c in keys if c in table})
    out["count"] = np.asarray(est.count, dtype=np.float64)
    out["count_var"] = np.broadcast_to(np.asarray(est.count_var, dtype=np.float64), (n,))
    if est.sum is not None:
        out["sum"] = np.asarray(est.sum, dtype=np.float64)
        out["sum_var"] = np.broadcast_to(np.asarray(est.sum_var, dtype=np.float64), (n,))
    if est.people is not None:
        out["people"] = np.asarray(est.people, dtype=np.float64)
        out["people_var"] = np.broadcast_to(np.asarray(est.people_var, dtype=np.float64), (n,))
    return out


def histogram_frame(
    spec: ReleaseSpec,
    table: Any,
    measured: Measured,
    variance: float,
    zone_column: str | None = None,
) -> pd.DataFrame | None:
    """The noisy value histogram of every row (suppressed included), keyed as
    :func:`estimates_frame`: ``hist_var`` (each row's per-node noise variance) and one
    ``node_a_b`` column per node of the public value tree (None without a histogram)."""
    if measured.histogram is None:
        return None
    tree = spec.value_tree
    y = np.asarray(measured.histogram).reshape(-1, tree.nodes)
    if len(y) != len(table):  # pragma: no cover - a histogram per cell of a category table
        return None  # kept only when it has one node vector per published row
    keys = ((zone_column,) if zone_column else ()) + KEY_COLUMNS
    out = pd.DataFrame({c: table[c].to_numpy() for c in keys if c in table})
    hv = measured.histogram_var
    out["hist_var"] = np.full(len(y), variance) if hv is None else np.asarray(hv, np.float64)
    nodes = pd.DataFrame(y, columns=node_names(tree))
    return pd.concat([out, nodes], axis=1)


def cell_table(
    spec: ReleaseSpec,
    measured: Measured,
    pub: Any,
    *,
    integer: bool,
    polygons: grid.DomainPolygons | None = None,
) -> Any:
    """The published table: one row per cell (× category) with the published values.

    ``polygons``: the public cells' polygons, drawn while the data was read (else drawn here).
    """
    import geopandas as gpd

    cells, res, cat_idx = measured.cells, measured.resolutions, measured.category
    if measured.zones is not None:  # a zone release: the zone's name and polygon
        names = np.asarray(measured.zones.names, dtype=object)
        data: dict[str, Any] = {measured.zones.by: names[cells]}
        geometry = measured.zones.geometries[cells]
    else:
        data = {
            "cell": grid.cells_to_hex(cells).astype(object),
            "resolution": np.asarray(res, dtype=np.int64),
        }
        geometry = grid.cells_to_polygons(cells) if polygons is None else polygons.of(cells)
    if spec.periods is not None:
        period_names = measured.period_labels or spec.periods.labels  # coarse ones, if any
        labels = np.asarray(period_names, dtype=object)
        data["period"] = labels[measured.period] if len(cells) else np.array([], dtype=object)
    if measured.time_level is not None:
        data["time_level"] = measured.time_level
    if spec.categories is not None:
        cats = np.asarray(spec.categories, dtype=object)
        data["category"] = cats[cat_idx] if len(cells) else np.array([], dtype=object)
    for col in (*_STAT_COLUMNS, "sum_at_limit"):
        if col in pub.columns:
            data[col] = pub.columns[col]
    data["suppressed"] = pub.columns["suppressed"]
    for col, values in (measured.distribution or {}).items():
        # a suppressed row hides its quantiles and bands too
        data[col] = np.where(np.asarray(data["suppressed"], dtype=bool), np.nan, values)
    df = normalise_dtypes(pd.DataFrame(data), integer=integer)
    return gpd.GeoDataFrame(df, geometry=np.asarray(geometry), crs="EPSG:4326")


def normalise_dtypes(df: pd.DataFrame, *, integer: bool = True) -> pd.DataFrame:
    """The schema's dtypes: integer counts/sums (nullable; float for the least-squares
    estimates of a hierarchical release), float margins/means, bool flags."""
    for col in ("count", "sum", "people"):
        if col in df:
            values = df[col].astype("float64")
            df[col] = (
                pd.array(np.round(values), dtype="Float64").astype("Int64")
                if integer
                else pd.array(values, dtype="Float64")
            )
    for col in ("count_moe", "sum_moe", "mean", "mean_moe", "people_moe"):
        if col in df:
            df[col] = df[col].astype("float64")
    if "resolution" in df:
        df["resolution"] = df["resolution"].astype("int64")
    for col in ("suppressed", "sum_at_limit"):
        if col in df:
            df[col] = df[col].astype(bool)
    for col in ("cell", "period", "time_level", "category"):
        if col in df:
            df[col] = df[col].astype(object)
    return df
