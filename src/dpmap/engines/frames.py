"""What the engines share: validation, row preparation and record priorities.

The local engine runs these functions once on the whole (polars) frame; the Spark engine
runs the very same functions on each Arrow batch inside a vectorised UDF and merges the
per-batch :class:`RowCounts`. So both engines

* refuse the same inputs with the same :class:`~dpmap.errors.InputError` messages
  (:func:`check_columns`, :func:`record_and_check`),
* drop the same rows, bin with the same H3 call and clamp/round the same way
  (:func:`prepare_rows`), and
* give each record the same priority for ``selection="hash"`` (:func:`priorities`:
  polars' keyed hash of the record's own fields, which is computed row by row and does
  not depend on how the rows are split into batches or ordered — tests check that), and
  fresh operating-system randomness per record for ``selection="random"``.

Everything here works on PRIVATE rows; none of it imports OpenDP.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import polars as pl
import polars_h3 as plh3

from dpmap.aggregates import SUM_LIMIT, BoundedAggregates
from dpmap.diagnostics import Diagnostics
from dpmap.errors import InputError
from dpmap.io import safe_message
from dpmap.spec import OTHER_CATEGORY, ReleaseSpec, Selection

# internal column names (never clash with user columns: they are renamed on entry)
LAT, LNG, PERSON, VALUE, CAT, CELL, PRIO = (
    "__lat",
    "__lng",
    "__person",
    "__value",
    "__cat",
    "__cell",
    "__prio",
)

#: a panel's time (as given, then µs since 1970) and the index of its public period
TIME, PERIOD = "__time", "__period"

#: the text formats a time column may use (ISO dates and date-times, wall-clock time)
TIME_FORMATS = (
    "%Y-%m-%d",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S%.fZ",
)

#: the leaf of the public value tree of a record's clamped value (quantiles, value bands)
LEAF = "__leaf"

#: coordinates beyond this magnitude are metres (or feet) of a projected CRS, not degrees
PROJECTED_MAGNITUDE = 1_000.0

# Notes for the PRIVATE diagnostics. These situations are NOT refused: refusing would be a
# free, exact answer about the data (e.g. "does anyone live in this 50 m disc?"); the
# release goes on as an ordinary all-noise map, charged like any other.
EMPTY = "the points are empty (0 rows): the release is all noise"
NO_USABLE_COORDINATES = (
    "no row has usable coordinates (all are missing): the release is all noise; check the "
    "lat/lng columns"
)
NO_POINT_IN_REGION = (
    "no point lies inside the region: the release is all noise; check that the region covers "
    "the data and that lat/lng are not swapped"
)
NO_USABLE_ROW = (
    "no usable row is left after dropping rows with missing values: the release is all noise"
)


def is_numeric(dtype: pl.DataType) -> bool:
    return bool(dtype.is_numeric())


#: usual names of the coordinate columns, for "did you mean" (compared case-insensitively)
_USUAL_NAMES = {
    "lat": ("lat", "latitude", "lat_deg", "y"),
    "lng": ("lng", "lon", "long", "longitude", "lng_deg", "lon_deg", "x"),
}


def _did_you_mean(role: str, wanted: str, columns: list[str]) -> str | None:
    """The column the user most likely meant: a usual name of the role (``latitude`` for
    lat, ``lon``/``long``/``longitude`` for lng, ``y``/``x``), else the closest spelling."""
    import difflib

    by_lower: dict[str, str] = {}
    for c in columns:
        by_lower.setdefault(str(c).lower(), str(c))
    if wanted.lower() in by_lower:  # the same name in another case
        return by_lower[wanted.lower()]
    for usual in _USUAL_NAMES.get(role, ()):
        if usual in by_lower:
            return by_lower[usual]
    close = difflib.get_close_matches(wanted.lower(), list(by_lower), n=1, cutoff=0.75)
    return by_lower[close[0]] if close else None


def check_columns(
    schema: Mapping[str, pl.DataType], spec: ReleaseSpec, is_empty: Callable[[], bool]
) -> None:
    """Raise if a named column is missing or a numeric one is not numeric.

    ``schema`` maps column names to polars dtypes (the Spark engine converts its schema
    through Arrow); ``is_empty`` is asked only when a numeric column has a text dtype,
    which is what a header-only CSV file has.
    """
    roles = [
        ("lat", spec.lat),
        ("lng", spec.lng),
        ("person", spec.person),
        ("value", spec.value),
        ("category", spec.category),
        ("time", spec.time),
    ]
    for role, col in roles:
        if col is not None and col not in schema:
            have = ", ".join(repr(c) for c in list(schema)[:12]) + (
                ", ..." if len(schema) > 12 else ""
            )
            guess = _did_you_mean(role, col, list(schema))
            hint = (
                f"did you mean {guess!r}? pass {role}={guess!r}"
                if guess is not None
                else f"pass {role}='<column>'"
            )
            raise InputError(
                f"the {role} column {col!r} is not in the points (columns: {have}); {hint}"
            )
    for role, col in (("person", spec.person), ("category", spec.category)):
        if col is not None and schema[col] == pl.Object:
            raise InputError(
                f"the {role} column {col!r} holds Python objects (dtype Object); convert them to "
                "strings or integers first, e.g. df[col].astype(str)"
            )
    if spec.time is not None:
        _check_time_dtype(spec.time, schema[spec.time])
    for role, col in (("lat", spec.lat), ("lng", spec.lng), ("value", spec.value)):
        if col is not None and not is_numeric(schema[col]):
            if schema[col] in (pl.String, pl.Null) and is_empty():  # a header-only file
                continue
            raise InputError(
                f"the {role} column {col!r} is not numeric (dtype {schema[col]}); convert it to numbers "
                "first, e.g. pd.to_numeric(df[col], errors='coerce')"
            )


def _check_time_dtype(col: str, dtype: pl.DataType) -> None:
    """A time column holds dates, date-times or ISO text (parsed row by row later)."""
    if dtype in (pl.Date, pl.String, pl.Null) or isinstance(dtype, pl.Datetime):
        return
    raise InputError(
        f"the time column {col!r} is not a date (dtype {dtype}); convert it first, e.g. "
        "pd.to_datetime(df[col]) (or unit='s' for seconds since 1970)"
    )


@dataclass
class RowCounts:
    """PRIVATE counts from :func:`prepare_rows`; batches merge with :meth:`merge`.

    ``lat_lo`` … ``lng_hi`` are the extremes of the non-missing coordinates (±inf when
    there are none), from which :func:`record_and_check` judges the coordinate ranges.
    """

    rows: int = 0
    missing_coordinates: int = 0
    lat_lo: float = math.inf
    lat_hi: float = -math.inf
    lng_lo: float = math.inf
    lng_hi: float = -math.inf
    outside_region: int = 0
    missing_person: int = 0
    missing_value: int = 0
    values_clamped: int = 0
    other_category: int = 0
    missing_time: int = 0
    bad_time: int = 0
    outside_periods: int = 0
    rows_left: int = 0

    def merge(self, other: RowCounts) -> RowCounts:
        out = RowCounts()
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name.endswith("_lo"):
                v: Any = min(a, b)
            elif f.name.endswith("_hi"):
                v = max(a, b)
            else:
                v = a + b
            setattr(out, f.name, v)
        return out

    def as_floats(self) -> list[float]:
        """As floats (exact for counts below 2**53), for shipping through a Spark column."""
        return [float(getattr(self, f.name)) for f in fields(self)]

    @classmethod
    def from_floats(cls, values: Iterable[float]) -> RowCounts:
        out = cls()
        for f, v in zip(fields(cls), values, strict=True):
            setattr(out, f.name, float(v) if f.type == "float" else int(v))
        return out


def as_float(x: Any) -> float:
    """A polars aggregate (typed as any scalar) as a float."""
    return float(x)


def inside_domain(cells: pl.Series, domain: np.ndarray) -> pl.Series:
    """Mask of ``cells`` (Int64) that belong to the public cell set ``domain``.

    A hash lookup (polars ``is_in``): about 0.03 s CPU at 10 M rows, against 1.0 s for a
    binary search into ~50 k cells (measured by benchmarks/bench_release.py).
    """
    return cells.is_in(pl.Series(domain, dtype=pl.Int64).implode())


def bin_points(df: pl.DataFrame, spec: ReleaseSpec) -> pl.Series:
    """The key of each row (``CELL``, Int64): its H3 cell at the finest resolution, or in a
    zone release the index of the zone that contains it (-1 outside every zone: such rows
    then fall outside the public key set and are dropped like points outside a region)."""
    if spec.zones is not None:
        zone = spec.zones.assign(df[LAT].to_numpy(), df[LNG].to_numpy())
        return pl.Series(CELL, zone, dtype=pl.Int64)
    # polars runs the binning on all its threads (2 M points: 0.41 s on two cores, 0.79 s CPU)
    cells = df.select(plh3.latlng_to_cell(LAT, LNG, spec.finest, return_dtype=pl.UInt64))
    return cells.to_series().cast(pl.Int64).alias(CELL)


def prepare_rows(
    df: pl.DataFrame, spec: ReleaseSpec, domain: np.ndarray | None
) -> tuple[pl.DataFrame, RowCounts]:
    """Drop unusable rows, bin to H3 (int64) or zones (:func:`bin_points`), clamp and round values, index categories.

    ``df`` has the internal columns (``LAT``, ``LNG`` as Float64, ``PERSON``, ``VALUE``
    as Float64, ``CAT`` as String, as present); the result has ``PERSON``, ``CELL``,
    ``CAT`` (Int64 index into the public categories) and ``VALUE`` (Int64), as present.
    Each decision looks at one row only, so running this on batches and concatenating
    gives the same rows as running it once. It never raises on bad data: rows with
    impossible coordinates are left out here and :func:`record_and_check` refuses the
    input from the counts.
    """
    c = RowCounts(rows=df.height)
    lat, lng = df[LAT], df[LNG]
    missing = (
        lat.is_null() | lng.is_null() | lat.is_nan().fill_null(True) | lng.is_nan().fill_null(True)
    )
    c.missing_coordinates = int(missing.sum())
    if c.missing_coordinates:
        df = df.filter(~missing)
    if df.height:
        c.lat_lo, c.lat_hi = as_float(df[LAT].min()), as_float(df[LAT].max())
        c.lng_lo, c.lng_hi = as_float(df[LNG].min()), as_float(df[LNG].max())
        if not (c.lat_lo >= -90 and c.lat_hi <= 90 and c.lng_lo >= -180 and c.lng_hi <= 180):
            # the input is refused from the counts; keep these rows away from binning
            df = df.filter(pl.col(LAT).is_between(-90, 90) & pl.col(LNG).is_between(-180, 180))

    df = df.with_columns(bin_points(df, spec)).drop(LAT, LNG)
    if domain is not None:
        inside = inside_domain(df[CELL], domain)
        c.outside_region = int((~inside).sum())
        if c.outside_region:
            df = df.filter(inside)
    if spec.person is not None:
        miss = df[PERSON].is_null()
        c.missing_person = int(miss.sum())
        if c.missing_person:
            df = df.filter(~miss)
    if spec.value is not None:
        v = df[VALUE]
        miss = v.is_null() | v.is_nan().fill_null(True)
        c.missing_value = int(miss.sum())
        if c.missing_value:
            df = df.filter(~miss)
        lo, hi = spec.bounds  # type: ignore[misc]
        c.values_clamped = int(((df[VALUE] < lo) | (df[VALUE] > hi)).sum())
        # clamp, then round half up to whole units: exact integer sums, exact sensitivity
        df = df.with_columns((pl.col(VALUE).clip(lo, hi) + 0.5).floor().cast(pl.Int64).alias(VALUE))
    if spec.time is not None:
        df = _assign_periods(df, spec, c)
    if spec.category is not None:
        cats = list(spec.categories)  # type: ignore[arg-type]
        other = cats.index(OTHER_CATEGORY)
        mapping = {cat: i for i, cat in enumerate(cats)}
        df = df.with_columns(
            pl.col(CAT).replace_strict(mapping, default=other, return_dtype=pl.Int64).alias(CAT)
        )
        c.other_category = int((df[CAT] == other).sum())
    c.rows_left = df.height
    return df, c


def time_micros(series: pl.Series) -> pl.Series:
    """A time column as wall-clock µs since 1970 (Int64; null where missing or unreadable):
    dates, date-times (a time zone's wall clock) or ISO text (:data:`TIME_FORMATS`)."""
    dtype = series.dtype
    frame = pl.DataFrame({"t": series})
    if dtype == pl.String:
        parsed = pl.coalesce(
            [pl.col("t").str.strptime(pl.Datetime("us"), f, strict=False) for f in TIME_FORMATS]
        )
    elif isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        parsed = pl.col("t").dt.replace_time_zone(None).cast(pl.Datetime("us"))
    else:
        parsed = pl.col("t").cast(pl.Datetime("us"))
    return frame.select(parsed.cast(pl.Int64)).to_series().alias(TIME)


def _assign_periods(df: pl.DataFrame, spec: ReleaseSpec, c: RowCounts) -> pl.DataFrame:
    """Replace ``TIME`` by ``PERIOD`` (the index of its public period); drop rows without a
    time or outside every period (counted in ``c``; unreadable times are counted as bad)."""
    assert spec.periods is not None
    raw = df[TIME]
    micros = time_micros(raw)
    missing = raw.is_null()
    bad = micros.is_null() & ~missing
    c.missing_time, c.bad_time = int(missing.sum()), int(bad.sum())
    period = spec.periods.index_of(micros.fill_null(0).to_numpy())
    period = np.where(micros.is_null().to_numpy(), -1, period)
    df = df.with_columns(pl.Series(PERIOD, period, dtype=pl.Int64)).drop(TIME)
    c.outside_periods = int((period < 0).sum()) - c.missing_time - c.bad_time
    return df.filter(pl.col(PERIOD) >= 0)


def record_and_check(c: RowCounts, diag: Diagnostics, spec: ReleaseSpec, has_domain: bool) -> None:
    """Fill the PRIVATE diagnostics from the counts; refuse impossible coordinates.

    An empty input, no usable coordinates, no point in the region or no row left are
    NOT refused (the release is then all noise, see :data:`EMPTY`); a note goes to the
    diagnostics. The one refusal that depends on the data is coordinates outside the
    degree ranges (projected? swapped?): a map made from them would be wrong. It looks at
    no location inside the valid range, happens before any budget is reserved, and
    publishes nothing (the privacy promise lists it).
    """
    diag.rows_read = c.rows
    lat_lo, lat_hi, lng_lo, lng_hi = c.lat_lo, c.lat_hi, c.lng_lo, c.lng_hi
    usable = c.rows > c.missing_coordinates
    bad_lat = usable and not (lat_lo >= -90 and lat_hi <= 90)  # also catches ±inf
    bad_lng = usable and not (lng_lo >= -180 and lng_hi <= 180)
    if bad_lat or bad_lng:
        worst = max(abs(lat_lo), abs(lat_hi), abs(lng_lo), abs(lng_hi))
        if np.isfinite(worst) and worst > PROJECTED_MAGNITUDE:
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
    if c.bad_time:
        raise InputError(
            f"{c.bad_time} value(s) of the time column {spec.time!r} are not dates; write them as "
            "ISO dates (2026-01-31 or 2026-01-31T12:00:00) or pass a datetime column, e.g. "
            "pd.to_datetime(df[col], format=...)"
        )
    diag.rows_missing_coordinates = c.missing_coordinates
    if has_domain:
        diag.rows_outside_region = c.outside_region
    if spec.person is not None:
        diag.rows_missing_person = c.missing_person
    if spec.value is not None:
        diag.rows_missing_value = c.missing_value
        diag.values_clamped = c.values_clamped
    if spec.category is not None:
        diag.rows_other_category = c.other_category
    if spec.time is not None:
        diag.rows_missing_time = c.missing_time
        diag.rows_outside_periods = c.outside_periods
    if c.rows == 0:
        diag.private_notes.append(EMPTY)
    elif not usable:
        diag.private_notes.append(NO_USABLE_COORDINATES)
    elif has_domain and c.rows - c.missing_coordinates - c.outside_region == 0:
        diag.private_notes.append(NO_POINT_IN_REGION)
    elif c.rows_left == 0:
        diag.private_notes.append(NO_USABLE_ROW)


def hash_key(spec: ReleaseSpec) -> int:
    """The key of the priority hash for ``selection="hash"``: the seed, else 0."""
    return spec.seed if spec.seed is not None else 0


def priorities(df: pl.DataFrame, spec: ReleaseSpec) -> pl.Series:
    """Priority of each record of ``df`` (UInt64): smaller is kept first.

    ``hash``: polars' hash, keyed with :func:`hash_key`, of the record's own fields
    (person, cell, category index, rounded value — those of them in ``df``), so it is the
    same on every engine, in every batch and in any row order. ``random``: fresh
    randomness for every record, read from the operating system (``os.urandom``) at each
    call, so the priorities are independent and uniform whatever the rows are and wherever
    they sit. Neither depends on any other person's data, nor on the row's position: an
    extra person inserted anywhere in the file leaves everyone else's kept records as
    they were (``hash``) or as likely as they were (``random``).
    """
    if spec.selection is Selection.HASH:
        present = set(df.columns)
        fields = [c for c in (PERSON, CELL, PERIOD, CAT, VALUE) if c in present]
        return df.select(pl.struct(fields).hash(seed=hash_key(spec)).alias(PRIO)).to_series()
    fresh = np.frombuffer(os.urandom(8 * df.height), dtype=np.uint64)
    return pl.Series(PRIO, fresh, dtype=pl.UInt64)


def keys_of(spec: ReleaseSpec) -> list[str]:
    """The grouping keys of the aggregates: the cell, a panel's period and the category
    index, as present."""
    return (
        [CELL]
        + ([PERIOD] if spec.periods is not None else [])
        + ([CAT] if spec.category is not None else [])
    )


def subrow(frame: pl.DataFrame, spec: ReleaseSpec) -> np.ndarray | None:
    """The row of each key within its cell: period × categories + category (None for a
    release with neither), as the designs lay out their dense vectors."""
    if spec.periods is None and spec.category is None:
        return None
    k = len(spec.categories) if spec.categories else 1
    period = frame[PERIOD].to_numpy() if spec.periods is not None else 0
    cat = frame[CAT].to_numpy() if spec.category is not None else 0
    return np.asarray(period * k + cat, dtype=np.int64)


def group_keys(spec: ReleaseSpec) -> list[str]:
    """The keys partial aggregates are grouped by: :func:`keys_of`, and the value tree's
    leaf when the release measures a value histogram (per-key totals are added up from the
    per-leaf rows in :func:`finish`)."""
    return keys_of(spec) + ([LEAF] if spec.histogram else [])


def leaf_expr(spec: ReleaseSpec) -> pl.Expr:
    """The value tree's leaf of each clamped whole ``VALUE`` (exact integer arithmetic, as
    :meth:`dpmap.valuetree.ValueTree.leaf_of`)."""
    tree = spec.value_tree
    leaf = (pl.col(VALUE) - tree.lo) * tree.leaves // (tree.hi - tree.lo)
    return leaf.clip(upper_bound=tree.leaves - 1).cast(pl.Int64).alias(LEAF)


def split_histogram(g: pl.DataFrame, spec: ReleaseSpec) -> tuple[pl.DataFrame, Any, Any]:
    """Per-(key, leaf) rows → per-key totals, the histogram ``(cells, leaf, count)`` and the
    category index of each histogram entry (``None`` without categories)."""
    if not spec.histogram:
        return g, None, None
    hist = (g[CELL].to_numpy(), g[LEAF].to_numpy(), g["count"].to_numpy())
    hist_category = subrow(g, spec)
    totals = g.group_by(keys_of(spec)).agg(
        pl.col("count").sum(),
        pl.col("sum").cast(pl.Int128).sum(),
        *([pl.col("people").sum()] if spec.people else []),
    )
    return totals, hist, hist_category


def finish(g: pl.DataFrame, spec: ReleaseSpec, diag: Diagnostics) -> BoundedAggregates:
    """Per-key ``count`` (and ``sum``) rows, sorted, as :class:`BoundedAggregates`, with
    sums saturated to ±SUM_LIMIT (see :mod:`dpmap.aggregates`); how many were saturated
    goes to the PRIVATE diagnostics. With a value histogram ``g`` has a row per
    (key, leaf) (:func:`group_keys`)."""
    g, hist, hist_category = split_histogram(g, spec)
    g = g.sort(keys_of(spec))
    sums = None
    if spec.value is not None:
        wide = g["sum"].cast(pl.Int128)
        diag.sums_saturated = int((wide.abs() > SUM_LIMIT).sum())
        sums = wide.clip(-SUM_LIMIT, SUM_LIMIT).cast(pl.Int64).to_numpy()
    return BoundedAggregates(
        cells=g[CELL].to_numpy(),
        category=subrow(g, spec),
        count=g["count"].to_numpy(),
        sum=sums,
        hist=hist,
        people=g["people"].cast(pl.Int64).to_numpy() if spec.people else None,
        hist_category=hist_category,
    )


def project(lf: pl.LazyFrame, spec: ReleaseSpec) -> pl.LazyFrame:
    """Check the columns and select them under internal names."""
    try:
        schema = lf.collect_schema()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the points: {safe_message(exc)}") from exc

    def is_empty() -> bool:
        try:
            return lf.head(1).collect().height == 0
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise InputError(f"cannot read the points: {safe_message(exc)}") from exc

    check_columns(schema, spec, is_empty)
    cols = [
        pl.col(spec.lat).cast(pl.Float64).alias(LAT),
        pl.col(spec.lng).cast(pl.Float64).alias(LNG),
    ]
    if spec.person is not None:
        cols.append(pl.col(spec.person).alias(PERSON))
    if spec.value is not None:
        cols.append(pl.col(spec.value).cast(pl.Float64).alias(VALUE))
    if spec.category is not None:
        cols.append(pl.col(spec.category).cast(pl.String).alias(CAT))
    if spec.time is not None:
        cols.append(pl.col(spec.time).alias(TIME))
    return lf.select(cols)
