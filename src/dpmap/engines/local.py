"""The local engine: validate, bin, bound and aggregate on one machine with polars.

This is the exact, noise-free data plane. It never imports OpenDP and never publishes
anything: it returns PRIVATE :class:`~dpmap.aggregates.BoundedAggregates` and fills the
PRIVATE :class:`~dpmap.Diagnostics`.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
import polars as pl
import polars_h3 as plh3

from ..aggregates import BoundedAggregates
from ..diagnostics import Diagnostics
from ..errors import InputError
from ..io import read_points
from ..spec import OTHER_CATEGORY, ReleaseSpec, Selection

__all__ = ["bound_and_aggregate"]

# internal column names (never clash with user columns: they are renamed on entry)
_LAT, _LNG, _PERSON, _VALUE, _CAT, _CELL, _PRIO = (
    "__lat",
    "__lng",
    "__person",
    "__value",
    "__cat",
    "__cell",
    "__prio",
)

#: coordinates beyond this magnitude are metres (or feet) of a projected CRS, not degrees
_PROJECTED_MAGNITUDE = 1_000.0


def _numeric(dtype: pl.DataType) -> bool:
    return bool(dtype.is_numeric())


def _project(lf: pl.LazyFrame, spec: ReleaseSpec) -> pl.LazyFrame:
    """Check the columns and select them under internal names."""
    try:
        schema = lf.collect_schema()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the points: {str(exc).splitlines()[0]}") from exc
    roles = [
        ("lat", spec.lat),
        ("lng", spec.lng),
        ("person", spec.person),
        ("value", spec.value),
        ("category", spec.category),
    ]
    for role, col in roles:
        if col is not None and col not in schema:
            have = ", ".join(repr(c) for c in list(schema)[:12]) + (
                ", ..." if len(schema) > 12 else ""
            )
            raise InputError(
                f"the {role} column {col!r} is not in the points (columns: {have}); pass {role}='<column>'"
            )
    for role, col in (("lat", spec.lat), ("lng", spec.lng), ("value", spec.value)):
        if col is not None and not _numeric(schema[col]):
            if lf.head(1).collect().height == 0:  # a header-only file has text dtypes
                raise InputError("the points are empty (0 rows); pass data with at least one row")
            raise InputError(
                f"the {role} column {col!r} is not numeric (dtype {schema[col]}); convert it to numbers "
                "first, e.g. pd.to_numeric(df[col], errors='coerce')"
            )
    cols = [
        pl.col(spec.lat).cast(pl.Float64).alias(_LAT),
        pl.col(spec.lng).cast(pl.Float64).alias(_LNG),
    ]
    if spec.person is not None:
        cols.append(pl.col(spec.person).alias(_PERSON))
    if spec.value is not None:
        cols.append(pl.col(spec.value).cast(pl.Float64).alias(_VALUE))
    if spec.category is not None:
        cols.append(pl.col(spec.category).cast(pl.String).alias(_CAT))
    return lf.select(cols)


def _scalar(x: Any) -> float:
    """A polars aggregate (typed as any scalar) as a float."""
    return float(x)


def _check_coordinates(df: pl.DataFrame) -> pl.Series:
    """Raise on impossible coordinates; return the mask of rows with usable ones."""
    lat, lng = df[_LAT], df[_LNG]
    missing = (
        lat.is_null() | lng.is_null() | lat.is_nan().fill_null(True) | lng.is_nan().fill_null(True)
    )
    ok = ~missing
    if not ok.any():
        raise InputError(
            "no row has usable coordinates (all are missing); check the lat/lng columns"
        )
    vlat, vlng = lat.filter(ok), lng.filter(ok)
    lat_lo, lat_hi = _scalar(vlat.min()), _scalar(vlat.max())
    lng_lo, lng_hi = _scalar(vlng.min()), _scalar(vlng.max())
    bad_lat = not (lat_lo >= -90 and lat_hi <= 90)  # also catches ±inf
    bad_lng = not (lng_lo >= -180 and lng_hi <= 180)
    if bad_lat or bad_lng:
        worst = max(abs(lat_lo), abs(lat_hi), abs(lng_lo), abs(lng_hi))
        if np.isfinite(worst) and worst > _PROJECTED_MAGNITUDE:
            raise InputError(
                f"coordinates look projected (values up to {worst:.6g}, e.g. metres), not degrees; "
                "reproject the points to EPSG:4326 (lon/lat) first, e.g. with geopandas .to_crs(4326)"
            )
        if bad_lat:
            swapped = lat_lo >= -180 and lat_hi <= 180 and lng_lo >= -90 and lng_hi <= 90
            hint = " (are lat and lng swapped?)" if swapped else ""
            raise InputError(
                f"latitudes must be within [-90, 90], found values from {lat_lo:.6g} to {lat_hi:.6g}"
                f"{hint}; fix or drop those rows"
            )
        raise InputError(
            f"longitudes must be within [-180, 180], found values from {lng_lo:.6g} to {lng_hi:.6g}; "
            "fix or drop those rows"
        )
    return ok


def bound_and_aggregate(
    points: Any,
    spec: ReleaseSpec,
    domain: np.ndarray | None,
    diagnostics: Diagnostics | None = None,
) -> BoundedAggregates:
    """PRIVATE exact aggregates of the bounded data (see :mod:`dpmap.bounding`).

    ``domain``: the sorted public cell set (int64), or ``None`` for private discovery.
    """
    diag = diagnostics if diagnostics is not None else Diagnostics()
    lf = _project(read_points(points, spec), spec)
    try:
        df = lf.collect()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the points: {str(exc).splitlines()[0]}") from exc
    except OSError as exc:
        raise InputError(f"cannot read the points: {exc}") from exc
    diag.rows_read = df.height
    if df.height == 0:
        raise InputError("the points are empty (0 rows); pass data with at least one row")
    ok = _check_coordinates(df)
    diag.rows_missing_coordinates = int((~ok).sum())
    if diag.rows_missing_coordinates:
        df = df.filter(ok)

    df = df.with_columns(
        plh3.latlng_to_cell(_LAT, _LNG, spec.finest, return_dtype=pl.UInt64)
        .cast(pl.Int64)
        .alias(_CELL)
    ).drop(_LAT, _LNG)
    if domain is not None:
        cells = df[_CELL].to_numpy()
        pos = np.minimum(np.searchsorted(domain, cells), len(domain) - 1)
        inside = pl.Series(domain[pos] == cells)
        diag.rows_outside_region = int((~inside).sum())
        if diag.rows_outside_region:
            df = df.filter(inside)
        if df.height == 0:
            raise InputError(
                "no point lies inside the region; check that the region covers the data and that "
                "lat/lng are not swapped"
            )
    if spec.person is not None:
        missing = df[_PERSON].is_null()
        diag.rows_missing_person = int(missing.sum())
        if diag.rows_missing_person:
            df = df.filter(~missing)
    if spec.value is not None:
        v = df[_VALUE]
        missing = v.is_null() | v.is_nan().fill_null(True)
        diag.rows_missing_value = int(missing.sum())
        if diag.rows_missing_value:
            df = df.filter(~missing)
        lo, hi = spec.bounds  # type: ignore[misc]
        diag.values_clamped = int(((df[_VALUE] < lo) | (df[_VALUE] > hi)).sum())
        # clamp, then round half up to whole units: exact integer sums, exact sensitivity
        df = df.with_columns(
            (pl.col(_VALUE).clip(lo, hi) + 0.5).floor().cast(pl.Int64).alias(_VALUE)
        )
    if spec.category is not None:
        cats = list(spec.categories)  # type: ignore[arg-type]
        other = cats.index(OTHER_CATEGORY)
        mapping = {c: i for i, c in enumerate(cats)}
        df = df.with_columns(
            pl.col(_CAT).replace_strict(mapping, default=other, return_dtype=pl.Int64).alias(_CAT)
        )
        diag.rows_other_category = int((df[_CAT] == other).sum())
    if df.height == 0:
        raise InputError("no usable row is left after dropping rows with missing values")

    before = df.height
    if spec.person is not None:
        df = _bound(df, spec)
        diag.persons = int(df[_PERSON].n_unique())
    diag.records_cut_by_bounding = before - df.height
    diag.records_used = df.height
    return _aggregate(df, spec)


def _bound(df: pl.DataFrame, spec: ReleaseSpec) -> pl.DataFrame:
    """Keep ≤ L∞ records per (person, cell) and ≤ L0 cells per person (see dpmap.bounding)."""
    fields = [_PERSON, _CELL] + [c for c in (_CAT, _VALUE) if c in df.columns]
    lf = df.lazy().select(fields).with_columns(_priority_for(df, spec).alias(_PRIO))
    l0, linf = spec.max_cells, spec.max_records_per_cell
    if l0 == 1 and linf == 1:
        # each person keeps exactly one record: their record of smallest priority
        lf = lf.sort(_PRIO).unique(subset=[_PERSON], keep="first", maintain_order=False)
    else:
        lf = lf.filter(pl.col(_PRIO).rank("ordinal").over([_PERSON, _CELL]) <= linf)
        cells = (
            lf.group_by([_PERSON, _CELL])
            .agg(pl.col(_PRIO).min().alias("__cp"))
            .filter(pl.col("__cp").rank("ordinal").over(_PERSON) <= l0)
            .select(_PERSON, _CELL)
        )
        lf = lf.join(cells, on=[_PERSON, _CELL], how="semi")
    out = lf.drop(_PRIO).collect()
    _assert_bounded(out, spec)
    return out


def _priority_for(df: pl.DataFrame, spec: ReleaseSpec) -> pl.Expr:
    """Priority of each record: smaller is kept first.

    ``hash``: a keyed hash of the record's own fields (person, cell, category, value);
    ``random``: a keyed hash of the row number under a fresh secret key, i.e. an
    independent random order of the rows. Either depends on no other person's data.
    """
    if spec.selection is Selection.HASH:
        key = spec.seed if spec.seed is not None else 0
        return pl.struct([c for c in (_PERSON, _CELL, _CAT, _VALUE) if c in df.columns]).hash(
            seed=key
        )
    key = spec.seed if spec.seed is not None else secrets.randbits(63)
    return pl.int_range(pl.len(), dtype=pl.UInt64).hash(seed=key)


def _assert_bounded(df: pl.DataFrame, spec: ReleaseSpec) -> None:
    """The sensitivity the noise assumes, checked against the bounded data itself."""
    per_cell = df.group_by([_PERSON, _CELL]).len()
    worst_records = int(_scalar(per_cell["len"].max() or 0))
    worst_cells = int(_scalar(per_cell.group_by(_PERSON).len()["len"].max() or 0))
    if worst_records > spec.max_records_per_cell or worst_cells > spec.max_cells:
        raise AssertionError(
            f"bounding failed: a person has {worst_cells} cells / {worst_records} records in a cell, "
            f"bounds are {spec.max_cells} / {spec.max_records_per_cell}"
        )
    if _VALUE in df.columns and df.height:
        lo, hi = spec.bounds  # type: ignore[misc]
        if _scalar(df[_VALUE].min()) < lo or _scalar(df[_VALUE].max()) > hi:
            raise AssertionError("clamping failed: a value lies outside the bounds")


def _aggregate(df: pl.DataFrame, spec: ReleaseSpec) -> BoundedAggregates:
    keys = [_CELL] + ([_CAT] if spec.category is not None else [])
    aggs = [pl.len().cast(pl.Int64).alias("count")]
    if spec.value is not None:
        aggs.append(pl.col(_VALUE).sum().cast(pl.Int64).alias("sum"))
    g = df.group_by(keys).agg(aggs).sort(keys)
    if spec.value is not None and _scalar(g["count"].max()) * spec.value_magnitude >= 2**62:
        raise InputError(
            "a cell's sum could overflow 64-bit integers with these bounds; express the value column in "
            "a larger unit (e.g. thousands) and scale the bounds to match"
        )
    return BoundedAggregates(
        cells=g[_CELL].to_numpy(),
        category=g[_CAT].to_numpy() if spec.category is not None else None,
        count=g["count"].to_numpy(),
        sum=g["sum"].to_numpy() if spec.value is not None else None,
    )
