"""Hostile inputs: every case ends in a valid release or a ``DpmapError``.

Never another exception (a warning counts: the suite turns warnings into errors), never a
hang (each call runs under a watchdog), never a partial output file (the CLI's output
folder is listed before and after every run). ``tests/test_bad_input.py`` checks the
*wording* of the errors for a fixed table of mistakes; this file throws much more at the
API and the CLI and checks only the outcome:

* property-based DataFrames (hypothesis): NaN/±inf/±1e300/out-of-range coordinates,
  object columns mixing numbers, strings, bytes and None, duplicate and null ids, unicode
  and 5 000-character column names, enormous values, one person with many rows, as
  pandas / polars / lazy frames / CSV / Parquet, with random release parameters;
* byte-level fuzzing of CSV and Parquet files (truncation at every offset, flipped and
  inserted bytes), ragged rows, bad encodings, NUL bytes, empty and header-only files;
* regions: zero-area, self-intersecting, NaN/inf vertices, holes, 3-D, collections,
  across the antimeridian, around both poles, around H3 pentagons (flat, hierarchical,
  adaptive PrivTree and grid), wider than 180° of longitude, and huge regions at fine resolutions;
* parameter extremes (ε from 1e-300 to 1e6, bounds of 10^18 records, seeds ≥ 2^64);
* the CLI, in process, with generated files and flags (exit status 0 or 2, one line on
  stderr, nothing left behind), including config files with wrong types;
* 2 million rows of one person (time and memory).

Inputs a user would expect to work are *asserted* to work, with exact numbers (near-
noiseless releases at ε = 40, compared with counts computed from the input): CSV files
with LF, CRLF and CR-only line endings, float32 coordinates, categorical person ids and
category columns (pandas, polars, lazy, Parquet), regions around both poles and around H3
pentagons (flat, hierarchical, adaptive PrivTree and grid).

Tests named ``test_bug_*`` pin bugs found by this battery: they fail until the fix named
in their docstring is made in ``src/``.

``DPMAP_FUZZ=1`` runs the property-based tests with fresh random seeds and ten times the
examples; by default they are derandomized so CI is reproducible.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import polars as pl
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dpmap
from common import (
    FAR_AWAY,
    REGION,
    cell_centre,
    debtors,
    interior_cells,
    list_folder,
    overlap_cells,
    write_region_geojson,
)
from dpmap import DpmapError
from dpmap.cli import main

NAN, INF = float("nan"), float("inf")
RES = 7
REGION_CELLS = overlap_cells()
#: a call that takes longer than this has hung (the slowest legitimate case here is < 5 s)
TIMEOUT = 60.0

_FUZZ = bool(os.environ.get("DPMAP_FUZZ"))


def fuzz(n: int) -> Any:
    return settings(
        max_examples=n * (10 if _FUZZ else 1),
        deadline=None,
        derandomize=not _FUZZ,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
            HealthCheck.filter_too_much,
        ],
        database=None,
    )


# ---------------------------------------------------------------------------------------
# the watchdog and the outcome checks


class Hang(AssertionError):
    pass


def call(fn: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """Run ``fn`` in a daemon thread; return its result, re-raise its exception, or fail
    with :class:`Hang` after ``timeout`` seconds."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise Hang(f"no result after {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("result")


def outcome(points: Any, **params: Any) -> dpmap.Release | DpmapError:
    """A release or a DpmapError; anything else (or a warning, or a hang) fails the test."""
    try:
        return call(lambda: dpmap.release(points, **params))
    except DpmapError as exc:
        msg = str(exc)
        assert msg.strip(), f"{type(exc).__name__} with an empty message"
        return exc


def check_release(rel: dpmap.Release, *, region_cells: list[str] | None = None) -> None:
    """A release that was produced is well formed."""
    cells = rel.cells
    assert {"cell", "resolution", "count", "count_moe", "suppressed", "geometry"} <= set(cells)
    assert cells["suppressed"].dtype == bool
    shown = ~cells["suppressed"].to_numpy()
    assert cells["count"][shown].notna().all()
    assert cells["count"][~shown].isna().all()
    moe = cells["count_moe"].to_numpy(dtype=float)[shown]
    assert np.isfinite(moe).all() and (moe >= 0).all(), "margins must be finite and ≥ 0"
    if "sum" in cells:
        assert np.isfinite(cells["sum_moe"].to_numpy(dtype=float)[shown]).all()
    keys = ["cell", "resolution"] + (["category"] if "category" in cells else [])
    assert not cells.duplicated(subset=keys).any()
    json.dumps(rel.manifest, allow_nan=False)  # strict JSON (no NaN / Infinity)
    assert 0 < rel.epsilon < math.inf
    if region_cells is not None:
        finest = cells["resolution"] == cells["resolution"].max()
        assert set(cells.loc[finest, "cell"]) == set(region_cells)


def ok_or_error(points: Any, **params: Any) -> dpmap.Release | DpmapError:
    result = outcome(points, **params)
    if isinstance(result, dpmap.Release):
        check_release(result)
    return result


def base_params(**over: Any) -> dict[str, Any]:
    return {"region": REGION, "resolution": RES, "epsilon": 1.0, **over}


# ---------------------------------------------------------------------------------------
# property-based DataFrames

ODD_FLOATS = [NAN, INF, -INF, 1e300, -1e300, 0.0, -0.0, 5e-324, 90.0, -90.0, 180.0, -180.0, 1e3]
_CENTRES = [cell_centre(c) for c in interior_cells(4)]


def _coordinate(lo: float, hi: float) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.floats(lo, hi),
        st.floats(lo, hi),
        st.sampled_from(ODD_FLOATS),
        st.floats(allow_nan=True, allow_infinity=True),
        st.none(),
    )


_ANY_SCALAR = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=4),
    st.booleans(),
)
_IDS = st.one_of(
    st.sampled_from(["LEAK-1", "LEAK-2", "ü-β-∂", "", " ", "a" * 300]),
    st.integers(min_value=-3, max_value=3),
    st.none(),
    st.floats(allow_nan=True),
    st.text(max_size=8),
)
_VALUES = st.one_of(
    st.integers(min_value=-10_000, max_value=10_000),
    st.sampled_from([1e300, -1e300, INF, -INF, NAN, 2**63 - 1, -(2**63), 1e18]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
)
_NAMES = st.one_of(
    st.sampled_from(["lat", "lng", "pid", "amount"]),
    st.text(min_size=1, max_size=30),
    st.just("ü" * 5000),
    st.just('a,b\n"c'),
)


@st.composite
def hostile_frames(draw: st.DrawFn) -> tuple[Any, dict[str, Any], str]:
    n = draw(st.integers(1, 30))
    lat = [draw(_coordinate(39.0, 39.2)) for _ in range(n)]
    lng = [draw(_coordinate(116.0, 116.3)) for _ in range(n)]
    if draw(st.booleans()):  # snap some rows to real cell centres (non-empty cells)
        for i in range(n):
            if draw(st.booleans()):
                lat[i], lng[i] = _CENTRES[i % 4]
    pid = [draw(_IDS) for _ in range(n)]
    amount = [draw(_VALUES) for _ in range(n)]
    # mixed types: sprinkle arbitrary scalars into some columns (object columns)
    for col in (lat, lng, pid, amount):
        if draw(st.integers(0, 4)) == 0:
            col[draw(st.integers(0, n - 1))] = draw(_ANY_SCALAR)
    many = draw(st.sampled_from([0, 0, 0, 500, 5000]))  # one person with many rows
    names = draw(st.lists(_NAMES, min_size=4, max_size=4, unique=True))
    data = {names[0]: lat, names[1]: lng, names[2]: pid, names[3]: amount}
    df = pd.DataFrame(data)
    if many:
        first = df.iloc[[0]]
        df = pd.concat([df, first.loc[first.index.repeat(many)]], ignore_index=True)
    form = draw(st.sampled_from(["pandas", "polars", "lazy", "csv", "parquet"]))
    params: dict[str, Any] = {"lat": names[0], "lng": names[1]}
    if draw(st.booleans()):
        params["person"] = names[2]
        params["max_cells"] = draw(st.integers(1, 3))
        params["max_records_per_cell"] = draw(st.integers(1, 3))
        params["selection"] = draw(st.sampled_from(["random", "hash"]))
    if draw(st.booleans()):
        lo = draw(st.integers(-1000, 1000))
        params["value"] = names[3]
        params["bounds"] = (lo, lo + draw(st.integers(0, 10**6)))
    params["suppress_below"] = draw(st.sampled_from([None, False, 2.5]))
    params["epsilon"] = draw(st.sampled_from([0.1, 1.0, 7.5]))
    kind = draw(
        st.sampled_from(["flat", "flat", "flat", "hierarchical", "adaptive", "grid", "discovery"])
    )
    if kind == "hierarchical":
        params["resolution"] = [6, 7]
    elif kind in ("adaptive", "grid"):
        params["adaptive"] = True if kind == "adaptive" else "grid"
    elif kind == "discovery":
        params["region"] = None
        params["delta"] = 1e-6
    return df, params, form


def _as_form(df: pd.DataFrame, form: str, folder: Path) -> Any:
    """The frame in the requested form; forms that cannot hold these columns fall back."""
    if form in ("polars", "lazy"):
        try:
            frame = pl.from_pandas(df)
        except Exception:  # mixed object columns: pyarrow refuses them
            return df
        return frame.lazy() if form == "lazy" else frame
    if form == "csv":
        path = folder / "points.csv"
        df.to_csv(path, index=False)
        return path
    if form == "parquet":
        path = folder / "points.parquet"
        try:
            df.to_parquet(path, index=False)
        except Exception:
            return df
        return path
    return df


@fuzz(120)
@given(case=hostile_frames())
def test_hostile_dataframes_end_in_a_release_or_a_dpmap_error(
    case: tuple[Any, dict[str, Any], str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    df, params, form = case
    folder = tmp_path_factory.mktemp("frames")
    points = _as_form(df, form, folder)
    before = list_folder(folder)
    result = outcome(points, **base_params(**params))
    if isinstance(result, dpmap.Release):
        check_release(
            result,
            region_cells=REGION_CELLS
            if params.get("region", REGION) is not None and not params.get("adaptive")
            else None,
        )
    assert list_folder(folder) == before  # a release never writes beside its input


@fuzz(60)
@given(
    params=st.fixed_dictionaries(
        {
            "epsilon": st.one_of(st.floats(1e-3, 50), st.sampled_from([1e-3, 0.01, 50.0, 100.0])),
            "max_cells": st.integers(1, 10**6),
            "max_records_per_cell": st.integers(1, 10**6),
            "count_share": st.floats(0.001, 0.999),
            "bounds": st.tuples(st.integers(-(10**12), 0), st.integers(1, 10**12)),
            "suppress_below": st.one_of(st.none(), st.just(False), st.floats(-1e9, 1e9)),
            "selection": st.sampled_from(["random", "hash"]),
            "seed": st.one_of(st.none(), st.integers(0, 2**63 - 1)),
        }
    )
)
def test_parameter_ranges_that_are_accepted_give_valid_releases(params: dict[str, Any]) -> None:
    """Within each parameter's accepted range (extreme but sane values), a release or a
    DpmapError — never an arithmetic error deep in the planner. (Fails today through the
    noise_variance bug pinned by test_bug_extreme_parameters_end_in_a_dpmap_error_or_a_release:
    e.g. ε = 0.001, 212 cells × 469 records, bounds (0, 2.3e7) give a sum scale of 1.8e16.)"""
    with warnings.catch_warnings():
        # ε up to 100 with one record per person: the "negligible noise" warning is right,
        # and beside the point here (this test is about errors, not warnings)
        warnings.simplefilter("ignore", dpmap.errors.NegligibleNoiseWarning)
        result = ok_or_error(
            debtors(30, 3, 4), **base_params(person="pid", value="amount", **params)
        )
    if params["seed"] is not None and params["selection"] == "random":
        # a seeded "random" order would depend on row positions: refused, naming the fix
        assert isinstance(result, dpmap.SpecError), result
        assert "selection='hash'" in str(result), str(result)
    elif isinstance(result, DpmapError):
        # sums saturate instead of overflowing: only a planner refusal (noise too large)
        assert isinstance(result, dpmap.MechanismError), str(result)


_DESIGNS = {
    "flat": {},
    "categories": {"category": "creditor", "categories": ["bank", "utility"]},
    "hierarchical": {"resolution": [RES - 1, RES]},
    "privtree": {"adaptive": True},
    "grid": {"adaptive": "grid"},
    "discovery": {"region": None, "delta": 1e-6},
}


@fuzz(40)
@given(
    design=st.sampled_from(list(_DESIGNS)),
    keep=st.sampled_from(["none", "outside-region", "no-person", "no-value", "one"]),
    value=st.sampled_from([0.0, 1e12, -1e12, 2.0**63, -(2.0**63), NAN, INF]),
    selection=st.sampled_from([{"selection": "random"}, {"selection": "hash", "seed": 2**63}]),
)
def test_empty_inputs_empty_regions_and_extreme_sums_are_releases(
    design: str, keep: str, value: float, selection: dict[str, Any]
) -> None:
    """No data-dependent refusal: whatever is (or is not) left of the rows, every design
    gives an ordinary release over its public cells; values at the limits of float64 and
    int64 are clamped and sums saturate (never an overflow refusal)."""
    df = debtors(30, 3, 4).assign(amount=value)
    if keep == "none":
        df = df.iloc[:0]
    elif keep == "outside-region":
        df = df.assign(lat=FAR_AWAY[0], lng=FAR_AWAY[1])
    elif keep == "no-person":
        df = df.assign(pid=None)
    elif keep == "no-value":
        df = df.assign(amount=NAN)
    elif keep == "one":
        df = df.iloc[:1]
    params = base_params(
        person="pid", value="amount", bounds=(-(10**12), 10**12), **selection, **_DESIGNS[design]
    )
    result = ok_or_error(df, **params)
    assert isinstance(result, dpmap.Release), f"{design}/{keep}: {result}"
    if params.get("region") is not None and not params.get("adaptive"):
        assert set(REGION_CELLS) <= set(result.cells["cell"])


# ---------------------------------------------------------------------------------------
# GeoDataFrames of points


def _gdf(geoms: list[Any], crs: Any = "EPSG:4326") -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"pid": [f"p{i}" for i in range(len(geoms))]}, geometry=geoms, crs=crs)


_C = _CENTRES[0]
GEO_CASES = {
    "none-and-empty-geometries": _gdf([None, shapely.Point(), shapely.Point(_C[1], _C[0])]),
    "polygon-among-points": _gdf([shapely.Point(_C[1], _C[0]), REGION]),
    "points-with-z": _gdf([shapely.Point(_C[1], _C[0], 1e300)] * 3),
    "nan-point": _gdf([shapely.Point(NAN, NAN), shapely.Point(_C[1], _C[0])]),
    "inf-point-projected": _gdf(
        [shapely.Point(INF, 0.0), shapely.Point(1.29e7, 4.7e6)], "EPSG:3857"
    ),
    "multipoint": _gdf([shapely.MultiPoint([(_C[1], _C[0]), (_C[1], _C[0])])]),
    "all-empty": _gdf([shapely.Point(), shapely.Point()]),
    "geographic-non-wgs84": _gdf([shapely.Point(_C[1], _C[0])], "EPSG:4269"),
}


@pytest.mark.parametrize("case", list(GEO_CASES))
def test_hostile_geodataframes(case: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shapely warns while *building* NaN/inf inputs
        gdf = GEO_CASES[case]
    ok_or_error(gdf, **base_params(person="pid"))


# ---------------------------------------------------------------------------------------
# files: byte-level fuzzing, encodings, ragged rows

_GOOD = debtors(60, 2, 4)
_GOOD_CSV = _GOOD.to_csv(index=False).encode()


@functools.cache
def _good_parquet() -> bytes:
    buf = io.BytesIO()
    _GOOD.to_parquet(buf, index=False)
    return buf.getvalue()


@pytest.fixture(scope="module")
def good_parquet() -> bytes:
    return _good_parquet()


def _write(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


FILE_CASES: dict[str, tuple[str, bytes]] = {
    "empty-csv": ("p.csv", b""),
    "blank-lines": ("p.csv", b"\n\n\n"),
    "whitespace-only": ("p.csv", b"   \n \t "),
    "header-only-no-newline": ("p.csv", b"lat,lng"),
    "ragged-short-row": ("p.csv", _GOOD_CSV + b"39.1,116.1\n"),
    "ragged-long-row": ("p.csv", _GOOD_CSV + b"39.1,116.1,x,1,bank,extra,extra\n"),
    "ragged-first-row": ("p.csv", b"lat,lng,pid\n39.1\n" + b"39.1,116.1,a\n" * 5),
    "latin1-bytes": ("p.csv", _GOOD_CSV + "39.1,116.1,d\xe9biteur,1,bank\n".encode("latin-1")),
    "latin1-header": ("p.csv", "lat,lng,p\xe9rson\n39.1,116.1,a\n".encode("latin-1")),
    "utf16-bom": ("p.csv", _GOOD_CSV.decode().encode("utf-16")),
    "utf8-bom": ("p.csv", b"\xef\xbb\xbf" + _GOOD_CSV),
    "nul-in-field": ("p.csv", _GOOD_CSV.replace(b"bank", b"ba\x00nk")),
    "only-nul": ("p.csv", b"\x00" * 1000),
    "unbalanced-quote": ("p.csv", _GOOD_CSV + b'39.1,116.1,"abc,1,bank\n'),
    "crlf": ("p.csv", _GOOD_CSV.replace(b"\n", b"\r\n")),
    "semicolons": ("p.csv", _GOOD.to_csv(index=False, sep=";").encode()),
    "inf-nan-text": ("p.csv", b"lat,lng,pid\ninf,116.1,a\nnan,116.1,b\n39.1,116.1,c\n"),
    "1e400-values": ("p.csv", b"lat,lng,pid,amount\n39.1,116.1,a,1e400\n39.1,116.1,b,-1e400\n"),
    "1e308-latitude": ("p.csv", b"lat,lng,pid\n1e308,116.1,a\n"),
    "10-MB-field": ("p.csv", b"lat,lng,pid\n39.1,116.1," + b"a" * 10_000_000 + b"\n"),
    "20000-columns": (
        "p.csv",
        (
            ",".join(["lat", "lng", "pid"] + [f"c{i}" for i in range(20_000)])
            + "\n"
            + ",".join(["39.1", "116.1", "a"] + ["1"] * 20_000)
            + "\n"
        ).encode(),
    ),
    "duplicate-header": ("p.csv", b"lat,lat,lng,pid\n39.1,39.2,116.1,a\n"),
    "empty-header-name": ("p.csv", b",lat,lng,pid\n1,39.1,116.1,a\n"),
    "random-bytes-csv": ("p.csv", np.random.default_rng(1).bytes(5000)),
    "csv-named-parquet": ("p.parquet", _GOOD_CSV),
    "empty-parquet": ("p.parquet", b""),
    "parquet-magic-only": ("p.parquet", b"PAR1PAR1"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_hostile_files(case: str, tmp_path: Path) -> None:
    name, content = FILE_CASES[case]
    path = _write(tmp_path, name, content)
    for params in ({"person": "pid"}, {"person": "pid", "value": "amount", "bounds": (0, 100)}, {}):
        ok_or_error(path, **base_params(**params))


def test_bug_ragged_csv_with_text_in_a_coordinate_column(tmp_path: Path) -> None:
    """BUG: polars.exceptions.ComputeError escapes ("found more fields than defined in
    'Schema'"). Fix: src/dpmap/engines/local.py, _project — the ``is_empty`` callback
    ``lambda: lf.head(1).collect().height == 0`` passed to ``frames.check_columns`` runs
    outside any try; wrap it so that ``pl.exceptions.PolarsError`` / ``OSError`` become
    ``InputError(f"cannot read the points: {first line}")`` (as ``collect()`` already does
    in bound_and_aggregate)."""
    path = _write(tmp_path, "p.csv", b"lat,lng\n39.1,116.1\nabc\n39.1,116.1,9\n")
    assert isinstance(outcome(path, **base_params()), DpmapError)


@fuzz(60)
@given(cut=st.integers(0, 10**6), kind=st.sampled_from(["csv", "parquet"]))
def test_truncated_files(cut: int, kind: str, tmp_path_factory: Any) -> None:
    content = _GOOD_CSV if kind == "csv" else _good_parquet()
    folder = tmp_path_factory.mktemp("cut")
    path = _write(folder, f"p.{kind}", content[: cut % (len(content) + 1)])
    ok_or_error(path, **base_params(person="pid", value="amount", bounds=(0, 2000)))


def test_parquet_truncated_at_every_offset_near_the_footer(
    good_parquet: bytes, tmp_path: Path
) -> None:
    """The footer (metadata, length, magic) is where a truncated download breaks a file."""
    n = len(good_parquet)
    for cut in sorted({*range(max(0, n - 200), n), *range(0, 64), n // 2}):
        path = _write(tmp_path, f"cut{cut}.parquet", good_parquet[:cut])
        ok_or_error(path, **base_params(person="pid"))


@fuzz(80)
@given(
    edits=st.lists(
        st.tuples(
            st.floats(0, 1, exclude_max=True),
            st.integers(0, 255),
            st.sampled_from(["set", "insert", "delete"]),
        ),
        min_size=1,
        max_size=8,
    ),
    kind=st.sampled_from(["csv", "parquet"]),
)
def test_mutated_files(
    edits: list[tuple[float, int, str]], kind: str, tmp_path_factory: Any
) -> None:
    """Flipped, inserted and deleted bytes. (Fails today: one latin-1 byte in a
    coordinate column reaches the ``is_empty`` bug of
    test_bug_ragged_csv_with_text_in_a_coordinate_column.)"""
    data = bytearray(_GOOD_CSV if kind == "csv" else _good_parquet())
    for where, byte, op in edits:
        i = int(where * len(data))
        if op == "set":
            data[i] = byte
        elif op == "insert":
            data[i:i] = bytes([byte])
        elif len(data) > 1:
            del data[i]
    path = _write(tmp_path_factory.mktemp("mut"), f"p.{kind}", bytes(data))
    ok_or_error(path, **base_params(person="pid", value="amount", bounds=(0, 2000)))


def test_odd_parquet_column_types(tmp_path: Path) -> None:
    frames = {
        "string-lat": pl.DataFrame({"lat": ["39.1"] * 3, "lng": [116.1] * 3, "pid": ["a"] * 3}),
        "list-lat": pl.DataFrame({"lat": [[39.1]] * 3, "lng": [116.1] * 3, "pid": ["a"] * 3}),
        "struct-pid": pl.DataFrame({"lat": [_C[0]] * 3, "lng": [_C[1]] * 3, "pid": [{"a": 1}] * 3}),
        "list-pid": pl.DataFrame({"lat": [_C[0]] * 3, "lng": [_C[1]] * 3, "pid": [[1, 2]] * 3}),
        "null-pid": pl.DataFrame({"lat": [_C[0]] * 3, "lng": [_C[1]] * 3, "pid": [None] * 3}),
        "null-lat": pl.DataFrame(
            {"lat": pl.Series([None] * 3, dtype=pl.Null), "lng": [116.1] * 3, "pid": ["a"] * 3}
        ),
        "zero-rows": pl.DataFrame({"lat": [39.1], "lng": [116.1], "pid": ["a"]}).head(0),
        "decimal-lat": pl.DataFrame(
            {
                "lat": pl.Series([_C[0]] * 3).cast(pl.Decimal(20, 10)),
                "lng": [_C[1]] * 3,
                "pid": ["a"] * 3,
            }
        ),
        "uint64-value": pl.DataFrame(
            {
                "lat": [_C[0]] * 3,
                "lng": [_C[1]] * 3,
                "pid": ["a", "b", "c"],
                "amount": pl.Series([2**64 - 1] * 3, dtype=pl.UInt64),
            }
        ),
        "categorical-pid": pl.DataFrame(
            {
                "lat": [_C[0]] * 3,
                "lng": [_C[1]] * 3,
                "pid": pl.Series(["a", "b", "a"], dtype=pl.Categorical),
            }
        ),
    }
    for name, frame in frames.items():
        path = tmp_path / f"{name}.parquet"
        frame.write_parquet(path)
        params = {"person": "pid"}
        if "amount" in frame.columns:
            params.update(value="amount", bounds=(0, 10))
        for points in (path, frame, frame.lazy()):
            ok_or_error(points, **base_params(**params))


def test_paths_that_are_not_files(tmp_path: Path) -> None:
    (tmp_path / "folder.csv").mkdir()
    for points in (
        tmp_path / "folder.csv",
        str(tmp_path / "a\x00b.csv"),
        str(tmp_path / "*.csv"),
        "https://example.invalid/points.csv",
        str(tmp_path / ("x" * 300 + ".csv")),
        b"/tmp/points.csv",
        123,
        None,
        [[39.1, 116.1]],
        {"lat": [39.1], "lng": [116.1]},
    ):
        assert isinstance(outcome(points, **base_params()), DpmapError), repr(points)


# ---------------------------------------------------------------------------------------
# inputs a user would expect to work: asserted to give the right numbers

#: At ε = 40 (count-only releases: the count gets all of ε, L1 = 1) a published count's
#: noise is discrete Laplace of scale 1/40, which is 0 except with probability
#: 2q/(1 + q) < 1e-17 (q = e^{−40}): < 1e-14 over every value of these releases. So the
#: published counts are the exact bounded counts, and can be compared with the input.
#: (dpmap warns about such an ε, NegligibleNoiseWarning: the tests using EXACT ignore it.)
EXACT = {"epsilon": 40.0, "suppress_below": False}


def exact_counts(points: Any, **params: Any) -> dict[Any, float]:
    """The non-zero published counts of a near-noiseless release, by cell (and category)."""
    rel = call(lambda: dpmap.release(points, **{**base_params(), **EXACT, **params}))
    check_release(rel)
    cells = rel.cells
    keys = (
        list(zip(cells["cell"], cells["category"], strict=True))
        if "category" in cells
        else list(cells["cell"])
    )
    values = cells["count"].to_numpy(dtype=float)
    return {k: float(v) for k, v in zip(keys, values, strict=True) if abs(v) > 1e-6}


def true_counts(df: pd.DataFrame, *, person: bool, by: str | None = None) -> dict[Any, float]:
    """Exact counts from the frame itself: rows per cell (and ``by``), or, with ``person``,
    persons per cell (L0 = L∞ = 1; every person here has all their rows in one cell)."""
    cells = [
        h3.latlng_to_cell(float(a), float(b), RES) for a, b in zip(df.lat, df.lng, strict=True)
    ]
    keys = cells if by is None else list(zip(cells, df[by].astype(str), strict=True))
    frame = pd.DataFrame({"key": keys, "pid": df["pid"].astype(str)})
    counts = frame.groupby("key")["pid"].nunique() if person else frame.groupby("key").size()
    return {k: float(v) for k, v in counts.items()}


#: 60 persons × 2 records, all of a person's records in their home cell (4 cells)
_HOME = debtors(60, 2, 4, spread=False)


@pytest.mark.filterwarnings("ignore::dpmap.errors.NegligibleNoiseWarning")  # EXACT
@pytest.mark.parametrize("ending", ["lf", "crlf", "cr-only"])
def test_csv_line_endings_all_read_correctly(ending: str, tmp_path: Path) -> None:
    """A CSV saved with old-Mac (CR-only) line endings used to read as one header line and
    "0 rows" (polars splits lines on \\n only); io.csv_line_ending now detects it from
    the first MiB and scans with eol_char="\\r" (one pass over the file)."""
    text = _HOME.to_csv(index=False).encode()
    text = {
        "lf": text,
        "crlf": text.replace(b"\n", b"\r\n"),
        "cr-only": text.replace(b"\n", b"\r"),
    }[ending]
    path = _write(tmp_path, "p.csv", text)
    assert exact_counts(path, person="pid") == true_counts(_HOME, person=True)
    assert exact_counts(path) == true_counts(_HOME, person=False)
    assert sorted(true_counts(_HOME, person=True).values()) == [15.0] * 4  # 60 persons


def _forms(df: pd.DataFrame, tmp_path: Path) -> dict[str, Any]:
    """The same frame as pandas, polars, a lazy frame and a Parquet file."""
    frame = pl.from_pandas(df)
    path = tmp_path / "p.parquet"
    frame.write_parquet(path)
    return {"pandas": df, "polars": frame, "lazy": frame.lazy(), "parquet": path}


@pytest.mark.filterwarnings("ignore::dpmap.errors.NegligibleNoiseWarning")  # EXACT
def test_float32_coordinates(tmp_path: Path) -> None:
    """float32 latitude/longitude (about 0.4 m of precision here) count in the cells the
    float32 values lie in — at cell centres, the same cells as the float64 ones."""
    df = _HOME.copy()
    df["lat"], df["lng"] = df["lat"].astype("float32"), df["lng"].astype("float32")
    want = true_counts(df, person=True)
    assert want == true_counts(_HOME, person=True)
    for form, points in _forms(df, tmp_path).items():
        assert exact_counts(points, person="pid") == want, form


@pytest.mark.filterwarnings("ignore::dpmap.errors.NegligibleNoiseWarning")  # EXACT
def test_categorical_person_ids(tmp_path: Path) -> None:
    """Person ids of a categorical dtype (pandas "category", polars Categorical, Parquet
    dictionary columns) identify persons like the strings: with L∞ = 1 each of the 60
    persons counts once (a row-per-person reading would give 2 per person)."""
    df = _HOME.copy()
    df["pid"] = df["pid"].astype("category")
    want = true_counts(_HOME, person=True)
    for form, points in _forms(df, tmp_path).items():
        assert exact_counts(points, person="pid") == want, form
    frame = pl.from_pandas(_HOME).with_columns(pl.col("pid").cast(pl.Categorical))
    assert exact_counts(frame, person="pid") == want


@pytest.mark.filterwarnings("ignore::dpmap.errors.NegligibleNoiseWarning")  # EXACT
def test_categorical_category_column(tmp_path: Path) -> None:
    """A category column of a categorical dtype: counts per public category, and the rows
    of categories outside the public list under "other"."""
    df = _HOME.copy()
    df["creditor"] = df["creditor"].astype("category")
    plain = _HOME.copy()
    plain["creditor"] = plain["creditor"].where(
        plain["creditor"].isin(["bank", "utility"]), "other"
    )
    want = true_counts(plain, person=False, by="creditor")
    assert {cat for _, cat in want} == {"bank", "utility", "other"}
    for form, points in _forms(df, tmp_path).items():
        got = exact_counts(points, category="creditor", categories=["bank", "utility"])
        assert got == want, form


# ---------------------------------------------------------------------------------------
# mixed and exotic column types (pandas, polars)


def _mixed(**cols: Any) -> pd.DataFrame:
    df = debtors(40, 2, 4)
    for k, v in cols.items():
        df[k] = v(df) if callable(v) else v
    return df


COLUMN_CASES = {
    "ids-int-and-str": _mixed(pid=lambda d: [i if i % 2 else f"s{i}" for i in range(len(d))]),
    "ids-all-null": _mixed(pid=None),
    "ids-some-null": _mixed(pid=lambda d: [None if i % 3 else "a" for i in range(len(d))]),
    "ids-nan": _mixed(pid=lambda d: [NAN if i % 3 else 1.0 for i in range(len(d))]),
    "ids-duplicate-everywhere": _mixed(pid="same-person"),
    "ids-tuples": _mixed(pid=lambda d: [(i % 5, "x") for i in range(len(d))]),
    "ids-lists": _mixed(pid=lambda d: [[i % 5] for i in range(len(d))]),
    "ids-dicts": _mixed(pid=lambda d: [{"a": i % 5} for i in range(len(d))]),
    "ids-bytes": _mixed(pid=lambda d: [b"\x00\xff" + bytes([i % 5]) for i in range(len(d))]),
    "lat-object-with-string": _mixed(lat=lambda d: [*d["lat"][:-1], "x"]),
    "lat-bool": _mixed(lat=lambda d: d["lat"] > 0),
    "lat-datetime": _mixed(lat=pd.Timestamp(0)),
    "lat-categorical": _mixed(lat=lambda d: d["lat"].astype("category")),
    "lat-nullable-with-NA": _mixed(lat=lambda d: pd.array([pd.NA, *d["lat"][1:]], dtype="Float64")),
    "lng-string-dtype": _mixed(lng=lambda d: d["lng"].astype("string")),
    "value-object-with-string": _mixed(amount=lambda d: [*d["amount"][:-1], "lots"]),
    "value-extremes": _mixed(amount=lambda d: ([1e300, -1e300, INF, -INF, NAN] * len(d))[: len(d)]),
    "value-int64-max": _mixed(amount=2**63 - 1),
    "value-uint64-max": _mixed(amount=np.uint64(2**64 - 1)),
    "category-mixed": _mixed(creditor=lambda d: ([1, "a", None, 2.5] * len(d))[: len(d)]),
}


@pytest.mark.parametrize("case", list(COLUMN_CASES))
def test_mixed_and_exotic_columns(case: str) -> None:
    df = COLUMN_CASES[case]
    for params in (
        {"person": "pid"},
        {"person": "pid", "value": "amount", "bounds": (0, 2000), "max_cells": 2},
        {"category": "creditor", "categories": ["bank", "1"]},
    ):
        for points in (df, _polars_or_none(df)):
            if points is not None:
                ok_or_error(points, **base_params(**params))


def _polars_or_none(df: pd.DataFrame) -> pl.DataFrame | None:
    try:
        return pl.from_pandas(df)
    except Exception:
        return None


def test_bug_polars_object_ids() -> None:
    """BUG: a polars column of Python objects (dtype Object) as the person column raises
    polars.exceptions.InvalidOperationError ("`arg_unique`/`n_unique` operation not
    supported for dtype `object`"). Fix: src/dpmap/engines/frames.py, check_columns —
    refuse ``schema[spec.person]`` (and ``schema[spec.category]``) of dtype ``pl.Object``
    with ``InputError("the person column 'pid' holds Python objects (dtype Object);
    convert the ids to strings or integers first, e.g. df[col].astype(str)")``."""
    df = debtors(20, 1, 2)
    frame = pl.DataFrame(
        {
            "lat": df["lat"],
            "lng": df["lng"],
            "pid": pl.Series([object() for _ in range(len(df))], dtype=pl.Object),
        }
    )
    assert isinstance(outcome(frame, **base_params(person="pid")), DpmapError)


def test_unicode_long_and_odd_column_names() -> None:
    df = debtors(40, 2, 4)
    for name in ("ü" * 5000, "\x00\n\t ;DROP TABLE", "名前", "lat ", "__person", "__lat"):
        renamed = df.rename(columns={"pid": name})
        ok_or_error(renamed, **base_params(person=name))
    both = df.rename(columns={"lat": "__lng", "lng": "__lat"})  # internal names, swapped
    result = ok_or_error(both, **base_params(lat="__lng", lng="__lat"))
    assert isinstance(result, dpmap.Release)
    dup = df.copy()
    dup.columns = ["lat", "lat", "pid", "amount", "creditor"]
    ok_or_error(dup, **base_params())
    ints = df.copy()
    ints.columns = [1, 2, 3, 4, 5]
    ok_or_error(ints, **base_params())


# ---------------------------------------------------------------------------------------
# parameter extremes


EXTREME_PARAMS = {
    "epsilon-1e-300": {"epsilon": 1e-300},
    "epsilon-1e-12": {"epsilon": 1e-12},
    "max-cells-1e18": {"person": "pid", "max_cells": 10**18},
    "max-records-1e18": {"person": "pid", "max_records_per_cell": 10**18},
    "count-share-1e-300": {"value": "amount", "bounds": (0, 100), "count_share": 1e-300},
    "bounds-0-0": {"value": "amount", "bounds": (0, 0)},
    "seed-2-to-the-70": {"person": "pid", "selection": "hash", "seed": 2**70},
    "seed-2-to-the-64": {"person": "pid", "selection": "hash", "seed": 2**64},
}


@pytest.mark.parametrize("case", list(EXTREME_PARAMS))
def test_bug_extreme_parameters_end_in_a_dpmap_error_or_a_release(case: str) -> None:
    """BUGs:

    * ε ≲ 1e-15, max_cells or max_records_per_cell ~1e18, count_share ~1e-300 (and, found
      by the property test below, ε = 0.001 with 212 cells × 469 records and bounds
      (0, 2.3e7)): the noise scale exceeds ~9e15, ``q = exp(-1/scale)`` rounds to 1.0 and
      src/dpmap/_privacy/noise.py, noise_variance divides by ``(1 − q)² = 0``
      (ZeroDivisionError). Fix: refuse absurd plans — in src/dpmap/_privacy/noise.py,
      statistic_noise (every plan, adaptive included, goes through it), before building the
      StatisticNoise: ``if not scale <= 2.0**52: raise MechanismError(f"the {key} noise
      would have scale {scale:.3g}, more than 4.5e15 per cell: epsilon is too small (or
      the bounds too large) to publish anything useful; raise epsilon or tighten the
      contribution bounds")``. (Optional, for accuracy: ``1 − q`` cancels for large
      scales — ``-math.expm1(-1.0 / scale)`` is exact — but then
      tests/test_noise_statistics.py::dlap, which uses the same naive formula at
      rel=1e-12, must use expm1 too.)
    * bounds=(0, 0): the sum's sensitivity is 0, so scale 0 and ``-1.0 / scale`` divides
      by zero. Fix: src/dpmap/spec.py, ReleaseSpec._check_bounds — refuse lo == hi == 0
      with SpecError("bounds (0, 0) clamp every value to 0, so the sum would always be 0;
      pass bounds that contain the values, e.g. (0, 50_000)").
    * seed ≥ 2**64: polars' ``hash(seed=...)`` takes a u64 (OverflowError "int too big to
      convert"). Fix: src/dpmap/spec.py, ReleaseSpec.__post_init__ — after
      ``_whole(self.seed, "seed", 0)`` refuse seeds ≥ 2**64 with SpecError("seed must be
      < 2**64").

    (All checked by applying the fixes to a copy of the tree: these cases then pass.)
    """
    ok_or_error(debtors(30, 2, 4), **base_params(**EXTREME_PARAMS[case]))


@pytest.mark.parametrize("epsilon", [1e3, 1e4, 1e6])
@pytest.mark.filterwarnings("ignore::dpmap.errors.NegligibleNoiseWarning")  # huge ε on purpose
def test_bug_huge_epsilon_gives_finite_margins_and_strict_json(
    epsilon: float, tmp_path: Path
) -> None:
    """BUG: for ε ≳ 1000 (scale ≲ 1e-3) OpenDP's discrete_laplacian_scale_to_accuracy
    returns -inf, so count_moe = -inf: numpy warns in postprocess.publish (np.ptp of
    infinities), the suppression threshold is -inf, and the manifest and GeoJSON contain
    ``-Infinity``, which is not JSON (JSON.parse in a browser rejects the file). Fix:
    src/dpmap/_privacy/noise.py, accuracy — when the result is not finite or is < 0, use the
    closed form for the discrete Laplace, P(|X| ≥ t) = 2qᵗ/(1+q) with q = e^{-1/s}:
    ``t = max(1, math.ceil(scale * (math.log(2 / (1 + q)) - math.log(alpha))))``; and
    make the manifest strict: ``json.dumps(manifest, allow_nan=False)`` in
    Release.__init__ and Release.to_file so that a NaN or infinity can never be written."""
    result = ok_or_error(debtors(30, 2, 4), **base_params(epsilon=epsilon))
    assert isinstance(result, dpmap.Release)
    path = result.to_file(tmp_path / "m.geojson")
    for p in (path, tmp_path / "m.manifest.json"):
        json.loads(p.read_text(encoding="utf-8"), parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def test_level_split_and_suppression_extremes() -> None:
    df = debtors(30, 2, 4)
    for params in (
        {"resolution": [6, 7], "level_split": [1, 1e308]},
        {"resolution": [6, 7], "level_split": [1, 1e-308]},
        {"resolution": [5, 6, 7], "level_split": "even", "integers": True},
        {"suppress_below": 1e308},
        {"suppress_below": -1e308},
        {"delta": 0.999, "region": None},
        {"delta": 1e-300, "region": None},
        {"mechanism": "gaussian", "delta": 1e-300},
    ):
        ok_or_error(df, **base_params(**params))


# ---------------------------------------------------------------------------------------
# regions


def _pts(latlngs: list[tuple[float, float]], k: int = 3) -> pd.DataFrame:
    rows = [(la, ln, f"p{i}-{j}") for i, (la, ln) in enumerate(latlngs) for j in range(k)]
    return pd.DataFrame(rows, columns=["lat", "lng", "pid"])


def _ring_region(cell: str) -> shapely.Geometry | None:
    """The cell and its neighbours as one lon/lat polygon (None where that is not possible:
    rings that straddle the antimeridian)."""
    polys = [
        shapely.Polygon([(b, a) for a, b in h3.cell_to_boundary(c)]) for c in h3.grid_disk(cell, 1)
    ]
    if any(p.bounds[2] - p.bounds[0] > 180 or not p.is_valid for p in polys):
        return None
    region = shapely.union_all(polys)
    return region if region.is_valid and region.bounds[2] - region.bounds[0] < 180 else None


def test_region_across_the_antimeridian() -> None:
    am = shapely.MultiPolygon(
        [shapely.box(179.8, 10, 180, 10.2), shapely.box(-180, 10, -179.8, 10.2)]
    )
    points = _pts([(10.1, 179.9), (10.1, -179.9), (10.1, 180.0), (10.1, -180.0)])
    for res in (5, 7):
        diag = dpmap.Diagnostics()
        rel = outcome(points, region=am, resolution=res, epsilon=1.0, diagnostics=diag)
        assert isinstance(rel, dpmap.Release), rel
        check_release(rel)
        assert diag.rows_outside_region == 0
        lngs = [h3.cell_to_latlng(c)[1] for c in rel.cells["cell"]]
        assert min(lngs) < -179 and max(lngs) > 179  # cells on both sides
    # the same area as one polygon with longitudes beyond 180 is refused, not misread
    assert isinstance(
        outcome(points, region=shapely.box(179.8, 10, 180.2, 10.2), resolution=7, epsilon=1.0),
        dpmap.RegionError,
    )


def _cell_truth(latlngs: list[tuple[float, float]], res: int, k: int = 3) -> dict[str, float]:
    """Exact counts per cell at ``res`` of :func:`_pts` (each of its rows its own person)."""
    out: dict[str, float] = {}
    for la, ln in latlngs:
        cell = h3.latlng_to_cell(la, ln, res)
        out[cell] = out.get(cell, 0.0) + k
    return out


def _leaf_truth(latlngs: list[tuple[float, float]], cells: pd.Series, k: int = 3) -> list[float]:
    """Exact counts under each of the (mixed-resolution) ``cells`` of :func:`_pts`."""
    return [
        float(
            k
            * sum(
                h3.cell_to_parent(h3.latlng_to_cell(la, ln, 15), h3.get_resolution(c)) == c
                for la, ln in latlngs
            )
        )
        for c in cells
    ]


@pytest.mark.filterwarnings("ignore::dpmap.errors.NegligibleNoiseWarning")  # EXACT
def test_regions_around_the_poles() -> None:
    """Caps around both poles (the pole itself among the points): every point counts, in
    its own cell, exactly (near-noiseless releases, see EXACT)."""
    cap_n = shapely.Polygon(
        [(lng, 88.0) for lng in np.linspace(-180, 180, 73)] + [(180, 90), (-180, 90)]
    )
    cap_s = shapely.Polygon(
        [(lng, -88.0) for lng in np.linspace(180, -180, 73)] + [(-180, -90), (180, -90)]
    )
    for region, pts in (
        (cap_n, [(89.0, 45.0), (88.5, -120.0), (90.0, 0.0)]),
        (cap_s, [(-89.0, 10.0), (-90.0, 0.0), (-88.5, 170.0)]),
    ):
        for res in (2, 4):
            diag = dpmap.Diagnostics()
            got = exact_counts(_pts(pts), region=region, resolution=res, diagnostics=diag)
            assert diag.rows_outside_region == 0
            assert got == _cell_truth(pts, res), (res, got)


@pytest.mark.filterwarnings("ignore::dpmap.errors.NegligibleNoiseWarning")  # EXACT
@pytest.mark.parametrize("res", [0, 1, 3, 5, 7, 9])
def test_regions_around_pentagons(res: int) -> None:
    """A pentagon and its five neighbours as the region, a point at each centre: flat,
    hierarchical, adaptive (PrivTree and grid) releases give the exact counts (near-
    noiseless, see EXACT), with the pentagon among the published cells; an adaptive release
    at resolution 0 is refused with its one-line reason."""
    tried = 0
    for pentagon in sorted(h3.get_pentagons(res))[:3]:
        region = _ring_region(pentagon)
        if region is None:
            continue
        tried += 1
        latlngs = [h3.cell_to_latlng(c) for c in h3.grid_disk(pentagon, 1)]
        points = _pts(latlngs)
        want = _cell_truth(latlngs, res)
        assert len(want) == 6 and want[pentagon] == 3.0
        diag = dpmap.Diagnostics()
        assert exact_counts(points, region=region, resolution=res, diagnostics=diag) == want
        assert diag.rows_outside_region == 0
        # hierarchical: every level's cells hold exactly the points under them. At ε = 40
        # the coarse level's count has scale 0.073 (q = e^{-13.7}): a nonzero draw, 2q/(1 + q)
        # = 2.2e-6 per coarse cell, moves every leaf under it by more than atol. At ε = 120
        # the scales are a third (coarse 0.024, q = e^{-41}; leaves 0.013, q = e^{-79}):
        # < 3e-18 per value, < 1e-15 over the ~60 values of the three pentagons.
        coarse = max(0, res - 2)
        rel = call(
            functools.partial(
                dpmap.release,
                points,
                region=region,
                resolution=[coarse, res],
                **{**EXACT, "epsilon": 120.0},
            )
        )
        check_release(rel)
        cells = rel.cells
        np.testing.assert_allclose(
            cells["count"].to_numpy(dtype=float), _leaf_truth(latlngs, cells["cell"]), atol=1e-6
        )
        assert pentagon in set(cells["cell"])
        for method in (True, "grid"):
            if res == 0:
                with pytest.raises(dpmap.SpecError, match="needs a resolution of 1 or more"):
                    dpmap.release(points, region=region, resolution=res, adaptive=method, **EXACT)
                continue
            rel = call(
                functools.partial(
                    dpmap.release, points, region=region, resolution=res, adaptive=method, **EXACT
                )
            )
            check_release(rel)
            cells = rel.cells
            np.testing.assert_allclose(
                cells["count"].to_numpy(dtype=float),
                _leaf_truth(latlngs, cells["cell"]),
                atol=1e-6,
                err_msg=f"adaptive={method!r}",
            )
            assert float(cells["count"].sum()) == pytest.approx(18.0)
        ok_or_error(points, resolution=res, epsilon=1.0, delta=1e-6)  # discovery
    assert tried >= 1


def _bad_geometry(build: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shapely warns while building NaN/inf geometries
        return build()


REGION_CASES = {
    "collinear-zero-area": lambda: shapely.Polygon([(116, 39), (116.1, 39.1), (116.2, 39.2)]),
    "exactly-zero-area": lambda: shapely.Polygon([(116, 39), (116.2, 39), (116.1, 39)]),
    "tiny-area": lambda: shapely.box(116.1, 39.1, 116.1 + 1e-12, 39.1 + 1e-12),
    "bowtie": lambda: shapely.Polygon([(116, 39), (116.3, 39.2), (116.3, 39), (116, 39.2)]),
    "self-touching-ring": lambda: shapely.Polygon(
        [(116, 39), (116.3, 39), (116.15, 39.1), (116.3, 39.2), (116, 39.2), (116.15, 39.1)]
    ),
    "nan-vertex": lambda: shapely.Polygon([(116, 39), (NAN, 39.1), (116.2, 39.2)]),
    "inf-vertex": lambda: shapely.Polygon([(116, 39), (INF, 39.1), (116.2, 39.2)]),
    "huge-coordinates": lambda: shapely.box(-1e300, -1e300, 1e300, 1e300),
    "with-a-hole": lambda: shapely.box(115, 38, 117, 40).difference(
        shapely.box(115.9, 38.9, 116.4, 39.3)
    ),
    "geometry-collection": lambda: shapely.GeometryCollection(
        [REGION, shapely.LineString([(0, 0), (1, 1)])]
    ),
    "3d": lambda: shapely.Polygon([(116, 39, 5), (116.3, 39, 5), (116.3, 39.2, 5), (116, 39.2, 5)]),
    "multipolygon-overlapping": lambda: shapely.MultiPolygon(
        [REGION, shapely.box(116.1, 39.1, 116.4, 39.3)]
    ),
    "geojson-antimeridian-ring": lambda: {
        "type": "Polygon",
        "coordinates": [[[179.8, 10], [-179.8, 10], [-179.8, 10.2], [179.8, 10.2], [179.8, 10]]],
    },
    "geojson-bad-nesting": lambda: {"type": "Polygon", "coordinates": [[[[1, 2]]]]},
    "geojson-empty-collection": lambda: {"type": "FeatureCollection", "features": []},
    "geojson-string-coordinates": lambda: {"type": "Point", "coordinates": "ab"},
    "geojson-features-not-a-list": lambda: {"type": "FeatureCollection", "features": 5},
    "geojson-nan-coordinates": lambda: {
        "type": "Polygon",
        "coordinates": [[[NAN, 0], [1, 0], [1, 1], [NAN, 0]]],
    },
    "empty-geoseries": lambda: gpd.GeoSeries([], crs="EPSG:4326"),
    "geoseries-of-nones": lambda: gpd.GeoSeries([None, None], crs="EPSG:4326"),
}


@pytest.mark.parametrize("case", list(REGION_CASES))
def test_hostile_regions(case: str) -> None:
    region = _bad_geometry(REGION_CASES[case])
    ok_or_error(debtors(30, 2, 4), region=region, resolution=RES, epsilon=1.0, person="pid")


REGION_FILE_CASES: dict[str, bytes] = {
    "empty": b"",
    "not-json": b"{{{",
    "json-array": b"[1, 2, 3]",
    "json-number": b"5",
    "json-null": b"null",
    "utf16": json.dumps(
        {"type": "Polygon", "coordinates": [[[116, 39], [116.3, 39], [116.3, 39.2], [116, 39]]]}
    ).encode("utf-16"),
    "crs-metres": json.dumps(
        {
            "type": "FeatureCollection",
            "crs": {"type": "name", "properties": {"name": "EPSG:3857"}},
            "features": [],
        }
    ).encode(),
    "feature-without-geometry-key": json.dumps(
        {"type": "FeatureCollection", "features": [{"type": "Feature"}]}
    ).encode(),
    "feature-with-null-geometry": b'{"type": "Feature", "geometry": null, "properties": {}}',
}


@pytest.mark.parametrize("case", list(REGION_FILE_CASES))
def test_hostile_region_files(case: str, tmp_path: Path) -> None:
    path = _write(tmp_path, "region.geojson", REGION_FILE_CASES[case])
    ok_or_error(debtors(20, 1, 2), region=path, resolution=RES, epsilon=1.0)
    ok_or_error(debtors(20, 1, 2), region=str(path), resolution=RES, epsilon=1.0)


REGION_BUGS: dict[str, Any] = {
    "mapping-feature-with-null-geometry": {"type": "Feature", "geometry": None},
    "mapping-unknown-geometry-type": {"type": "Banana", "coordinates": []},
    "mapping-without-type": {"coordinates": []},
    "file-unknown-geometry-type": b'{"type": "Banana", "coordinates": []}',
    "file-crs-not-an-object": json.dumps({"type": "Polygon", "crs": 5, "coordinates": []}).encode(),
    "file-deeply-nested": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("case", list(REGION_BUGS))
def test_bug_region_geojson_that_shapely_cannot_read(case: str, tmp_path: Path) -> None:
    """BUG: malformed GeoJSON regions escape as non-dpmap exceptions. Fixes, all in
    src/dpmap/grid.py:

    * to_region, the ``dict`` branch: add ``AttributeError`` (shapely's ``shape()`` on a
      null geometry or a mapping without "type") and ``shapely.errors.ShapelyError``
      (``GeometryTypeError: Unknown geometry type``) to the caught exceptions;
    * _region_from_path: add ``shapely.errors.ShapelyError`` to the caught exceptions
      around ``_geometry_from_mapping``; add ``RecursionError`` to those around
      ``json.load`` (a deeply nested file); and read the CRS only from a dict:
      ``crs = data.get("crs"); props = crs.get("properties") if isinstance(crs, dict)
      else None; name = props.get("name", "") if isinstance(props, dict) else ""``
      (``"crs": 5`` raises AttributeError outside any try today)."""
    region = REGION_BUGS[case]
    if isinstance(region, bytes):
        region = _write(tmp_path, "region.geojson", region)
    assert isinstance(
        outcome(debtors(20, 1, 2), region=region, resolution=RES, epsilon=1.0), DpmapError
    )


WIDE_REGIONS = {
    "world-res-1": (
        shapely.box(-180, -90, 180, 90),
        1,
        [(0.0, 0.0), (45.0, 100.0), (-30.0, -60.0)],
    ),
    "equatorial-band-358-degrees": (shapely.box(-179, -10, 179, 10), 2, [(5.0, 0.0), (-5.0, 90.0)]),
    "north-cap-as-a-box": (shapely.box(-180, 89.5, 180, 90), 4, [(89.9, 0.0), (89.7, 120.0)]),
    "latitude-sliver-340-degrees": (
        shapely.box(-170, 40, 170, 40.5),
        4,
        [(40.2, 0.0), (40.3, -100.0)],
    ),
}


@pytest.mark.parametrize("case", list(WIDE_REGIONS))
def test_bug_regions_wider_than_180_degrees_keep_their_points(case: str) -> None:
    """BUG: a region whose edges span more than 180° of longitude (a world box, a band
    around the globe, a polar cap drawn as a lon/lat box) is read by H3 as crossing the
    antimeridian the *other* way (H3 takes the shorter arc), so the public cell set is a
    sliver elsewhere: 93–99.7% of the region's points are silently dropped as "outside
    the region" (or the release fails with "no point lies inside the region"). Fix:
    src/dpmap/grid.py, region_to_cells — polyfill the region in longitude strips narrower
    than 180° and with densified edges, then take the union::

        parts = []
        for x0 in (-180, -90, 0, 90):
            part = region.geometry.intersection(shapely.box(x0, -90, x0 + 90, 90))
            for poly in getattr(part, "geoms", [part]):
                if poly.geom_type in ("Polygon", "MultiPolygon") and not poly.is_empty:
                    poly = shapely.segmentize(poly, 1.0)  # lon/lat edges, not great circles
                    shape = h3.geo_to_h3shape(poly.__geo_interface__)
                    parts.append(h3np.h3shape_to_cells_experimental(shape, resolution, contain="overlap"))
        out = np.unique(np.concatenate(parts).astype(np.uint64).astype(np.int64))

    (checked: every one of 3 000 random points of each region below is then in a public
    cell, and the cell set of small regions such as the tests' REGION is unchanged.)"""
    region, res, points = WIDE_REGIONS[case]
    diag = dpmap.Diagnostics()
    rel = outcome(_pts(points), region=region, resolution=res, epsilon=1.0, diagnostics=diag)
    assert isinstance(rel, dpmap.Release), rel
    assert diag.rows_outside_region == 0, f"{diag.rows_outside_region} points of the region lost"


_BIG_REGION_SCRIPT = textwrap.dedent(
    """
    import resource, sys, shapely, pandas as pd, dpmap
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))
    try:
        dpmap.release(pd.DataFrame({"lat": [35.0], "lng": [-80.0]}),
                      region=shapely.box(-100, 20, -60, 50), resolution=9, epsilon=1.0)
        print("RELEASED")
    except dpmap.DpmapError as exc:
        print("DPMAP_ERROR", str(exc)[:300])
    """
)


@pytest.mark.slow
def test_bug_huge_region_at_a_fine_resolution_is_refused_quickly() -> None:
    """BUG: a 40° × 30° region at resolution 9 has ≈ 1.2e8 public cells; dpmap tries to
    build them all (and a GeoDataFrame of their hexagons: ~2 kB per cell), so the process
    runs out of memory or takes minutes (resolution 6 alone: 357 000 cells, 5.5 s, 750 MB).
    Fix: src/dpmap/grid.py, region_to_cells — before the polyfill estimate the count,
    ``n ≈ geodesic_area(region) / h3.average_hexagon_area(resolution, "km^2")`` (pyproj's
    ``Geod(ellps="WGS84").geometry_area_perimeter``), and raise RegionError when it exceeds
    a documented limit such as MAX_PUBLIC_CELLS = 1_000_000: "the region covers about
    1.2e+08 H3 cells at resolution 9 (limit 1e+06); choose a coarser resolution
    (resolution 6: about 3.5e+05 cells) or a smaller region"."""
    try:
        run = subprocess.run(
            [sys.executable, "-c", _BIG_REGION_SCRIPT], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a huge region at resolution 9 ran for more than 60 s")
    assert run.stdout.startswith("DPMAP_ERROR"), (run.stdout[-500:], run.stderr[-500:])


# ---------------------------------------------------------------------------------------
# one person with millions of records


_TWO_MILLION_SCRIPT = textwrap.dedent(
    """
    import resource, sys, time
    sys.path.insert(0, {tests!r})
    import numpy as np, pandas as pd, dpmap
    from common import REGION, cell_centre, interior_cells
    n = 2_000_000
    cen = np.array([cell_centre(c) for c in interior_cells(8)])
    i = np.arange(n) % 8
    df = pd.DataFrame({{"lat": cen[i, 0], "lng": cen[i, 1], "pid": "LEAKME-the-one",
                        "amount": np.full(n, 1e300)}})
    others = pd.DataFrame({{"lat": cen[:, 0], "lng": cen[:, 1],
                            "pid": [f"other-{{k}}" for k in range(8)], "amount": 1.0}})
    df = pd.concat([df, others], ignore_index=True)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    diag = dpmap.Diagnostics()
    rel = dpmap.release(df, region=REGION, resolution=7, epsilon=1.0, person="pid",
                        value="amount", bounds=(0, 1000), max_cells=2, max_records_per_cell=3,
                        selection={selection!r}, diagnostics=diag)
    dt = time.perf_counter() - t
    grow = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    print(f"{{dt:.2f}} {{grow:.0f}} {{diag.records_used}} {{len(rel.cells)}}")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("selection", ["random", "hash"])
def test_two_million_records_of_one_person(selection: str) -> None:
    """2 M rows of one person (plus 8 others): bounded to 2 cells × 3 records, in seconds
    and a few hundred MB (measured: ≈ 3 s and ≈ 300 MB above the imports)."""
    script = _TWO_MILLION_SCRIPT.format(tests=str(Path(__file__).parent), selection=selection)
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr[-2000:]
    seconds, grow_mb, used, rows = run.stdout.split()
    assert int(used) == 6 + 8  # the one person keeps 2 cells × 3 records
    assert int(rows) == len(REGION_CELLS)
    assert float(seconds) < 30, f"{seconds} s for 2 M rows"
    assert float(grow_mb) < 1500, f"{grow_mb} MB for 2 M rows"


# ---------------------------------------------------------------------------------------
# the CLI (in process): exit status 0 or 2, one line on stderr, nothing left behind


def run_cli(argv: list[str], cwd: Path, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()

    def go() -> int:
        old = Path.cwd()
        os.chdir(cwd)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                return main(argv)
        finally:
            os.chdir(old)

    code = call(go, timeout)
    return code, out.getvalue(), err.getvalue()


_cli_lock = threading.Lock()


def check_cli(argv: list[str], folder: Path, produced: set[str]) -> int:
    """Run the CLI; check the exit status, stderr, and that the output folder has either
    nothing new or exactly ``produced``."""
    out_dir = folder / "out"
    out_dir.mkdir(exist_ok=True)
    before = set(list_folder(out_dir))
    with _cli_lock:  # os.chdir is process-wide
        code, _stdout, stderr = run_cli(argv, folder)
    after = set(list_folder(out_dir))
    assert code in (0, 2), (code, stderr[-2000:])
    if code == 2:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("dpmap: error:"), stderr
        assert after == before, f"a failed run left {sorted(after - before)}"
    else:
        assert after - before == produced, f"expected {produced}, got {sorted(after - before)}"
    for name in after - before:  # whatever was written is complete
        path = out_dir / name
        if name.endswith(".json") or name.endswith(".geojson"):
            json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    for name in after:
        (out_dir / name).unlink()
    return code


@pytest.fixture(scope="module")
def cli_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    write_region_geojson(folder)
    debtors(60, 2, 4).to_csv(folder / "good.csv", index=False)
    return folder


_FLAG_SETS = st.lists(
    st.sampled_from(
        [
            ["--person", "pid"],
            ["--value", "amount", "--bounds", "0", "2000"],
            ["--value", "amount"],
            ["--max-cells", "2"],
            ["--max-records-per-cell", "0"],
            ["--no-suppress"],
            ["--suppress-below", "nan"],
            ["--category", "creditor", "--categories", "bank,utility"],
            ["--resolution", "6,7"],
            ["--adaptive"],
            ["--adaptive-method", "grid"],
            ["--mechanism", "gaussian"],
            ["--delta", "1e-6"],
            ["--selection", "hash", "--seed", "5"],
            ["--lat", "ü" * 300],
            ["--epsilon", "-1"],
            ["--title", "\x00\n" + "t" * 1000],
            ["--diagnostics"],
            ["--quiet"],
        ]
    ),
    max_size=4,
)


@fuzz(60)
@given(
    content=st.one_of(
        st.just(_GOOD_CSV),
        st.binary(max_size=300),
        st.builds(lambda cut: _GOOD_CSV[:cut], st.integers(0, len(_GOOD_CSV))),
        st.builds(
            lambda junk, at: _GOOD_CSV[:at] + junk + _GOOD_CSV[at:],
            st.binary(min_size=1, max_size=20),
            st.integers(0, len(_GOOD_CSV)),
        ),
    ),
    flags=_FLAG_SETS,
    suffix=st.sampled_from([".geojson", ".parquet", ".csv"]),
    region=st.booleans(),
)
def test_cli_fuzz(
    content: bytes, flags: list[list[str]], suffix: str, region: bool, cli_folder: Path
) -> None:
    """Generated files and flags through ``dpmap release``. (Fails today through the same
    ``is_empty`` bug as test_mutated_files.)"""
    (cli_folder / "points.csv").write_bytes(content)
    argv = [
        "release",
        "points.csv",
        "--resolution",
        "7",
        "--epsilon",
        "1",
        "--out",
        f"out/m{suffix}",
    ]
    if region:
        argv += ["--region", "region.geojson"]
    for flag in flags:
        argv += flag
    check_cli(argv, cli_folder, {f"m{suffix}", "m.manifest.json"})


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        (
            "explain",
            ["explain", "--region", "region.geojson", "--resolution", "7", "--epsilon", "1e-9"],
        ),
        (
            "explain-json",
            ["explain", "--resolution", "7", "--epsilon", "1", "--delta", "1e-9", "--json"],
        ),
        ("plot-of-points", ["plot", "good.csv", "--png", "out/x.png"]),
        ("plot-of-region", ["plot", "region.geojson", "--html", "out/x.html"]),
        ("around-missing", ["around", "out/none.geojson", "--lat", "nan", "--lng", "1"]),
        ("budget-show-junk", ["budget", "show", "good.csv"]),
        ("audit-tiny", ["audit", "--resolution", "7", "--epsilon", "1", "--runs", "4"]),
        (
            "audit-bad-mechanism",
            ["audit", "--resolution", "7", "--epsilon", "1", "--mechanism", "x"],
        ),
    ],
)
def test_other_commands_with_hostile_arguments(
    name: str, argv: list[str], cli_folder: Path
) -> None:
    check_cli(argv, cli_folder, set())


def test_release_written_by_the_cli_can_be_read_back(cli_folder: Path) -> None:
    argv = [
        "release",
        "good.csv",
        "--region",
        "region.geojson",
        "--resolution",
        "7",
        "--epsilon",
        "1",
        "--person",
        "pid",
        "--out",
        "out/m.parquet",
    ]
    out_dir = cli_folder / "out"
    out_dir.mkdir(exist_ok=True)
    with _cli_lock:
        code, _, err = run_cli(argv, cli_folder)
    assert code == 0, err
    rel = dpmap.read_release(out_dir / "m.parquet")
    check_release(rel, region_cells=REGION_CELLS)
    for p in out_dir.iterdir():
        p.unlink()


CLI_BUGS = {
    "out-name-too-long": (
        lambda: ["--out", "out/" + "m" * 250 + ".geojson"],
        "src/dpmap/io.py, atomic_write: ``p.is_dir()`` (pathlib re-raises ENAMETOOLONG) and "
        "tempfile.mkstemp (the temporary name adds ~14 characters) raise OSError outside the "
        "DataFileError translation; wrap both the target checks and the mkstemp loop in "
        '``except OSError as exc: raise DataFileError(f"cannot write {str(p)!r} '
        '({exc.strerror or exc}); choose another path") from exc``',
    ),
    "out-in-unwritable-folder": (
        lambda: ["--out", "/proc/m.geojson"],
        "same place: mkstemp raises FileNotFoundError/PermissionError in a folder that "
        "cannot hold files; the same wrapping turns it into a DataFileError",
    ),
    "png-in-missing-folder": (
        lambda: ["--out", "out/m.geojson", "--png", "out/nowhere/m.png"],
        "src/dpmap/cli.py, release_cmd: the release is written, THEN the PNG fails, so the "
        "command exits 2 and leaves out/m.geojson + manifest (and spends budget). Check "
        "every output folder before releasing: ``for p in (out, png): if p is not None and "
        'not p.parent.is_dir(): raise DataFileError(f"folder {str(p.parent)!r} does not '
        'exist; create it or choose another path")`` next to ``_kind_of(out)``',
    ),
}


@pytest.mark.parametrize("case", list(CLI_BUGS))
def test_bug_cli_output_paths(case: str, cli_folder: Path) -> None:
    """BUGs in writing the CLI's outputs; the fix is in CLI_BUGS[case][1]."""
    extra, _fix = CLI_BUGS[case]
    argv = [
        "release",
        "good.csv",
        "--region",
        "region.geojson",
        "--resolution",
        "7",
        "--epsilon",
        "1",
        *extra(),
    ]
    assert check_cli(argv, cli_folder, set()) == 2


def test_bug_cli_missing_out_folder_spends_no_budget(cli_folder: Path) -> None:
    """BUG: ``--out missing/m.geojson --ledger ... --dataset ...`` charges the ledger (the
    release is computed) and only then fails to write (exit 2, nothing written, ε spent).
    Fix: src/dpmap/cli.py, release_cmd — check ``out.parent.is_dir()`` (and the PNG's
    folder) before calling release(), as in CLI_BUGS["png-in-missing-folder"]."""
    ledger = cli_folder / "budget.db"
    if not ledger.exists():
        with _cli_lock:
            code, _, err = run_cli(
                ["budget", "init", "budget.db", "--dataset", "d", "--epsilon", "10"], cli_folder
            )
        assert code == 0, err
    spent = dpmap.Ledger(ledger).spent("d")
    argv = [
        "release",
        "good.csv",
        "--region",
        "region.geojson",
        "--resolution",
        "7",
        "--epsilon",
        "1",
        "--out",
        "missing/m.geojson",
        "--ledger",
        "budget.db",
        "--dataset",
        "d",
    ]
    assert check_cli(argv, cli_folder, set()) == 2
    assert dpmap.Ledger(ledger).spent("d") == spent, "a failed write spent privacy budget"


CONFIG_CASES = {
    "points-is-a-number": 'resolution = 7\nepsilon = 1\npoints = 5\nout = "out/m.geojson"\nregion = "region.geojson"\n',
    "region-is-a-number": 'resolution = 7\nepsilon = 1\npoints = "good.csv"\nout = "out/m.geojson"\nregion = 5\n',
    "out-is-a-list": 'resolution = 7\nepsilon = 1\npoints = "good.csv"\nout = ["a"]\nregion = "region.geojson"\n',
    "release-is-not-a-table": "release = 5\n",
    "no-suppress-is-a-string": 'resolution = 7\nepsilon = 1\npoints = "good.csv"\nout = "out/m.geojson"\nregion = "region.geojson"\nno_suppress = "no"\n',
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bug_config_values_of_the_wrong_type(case: str, cli_folder: Path) -> None:
    """BUG: src/dpmap/cli.py, _merge_config does not check the types of TOML values:
    ``points = 5`` / ``region = 5`` / ``out = ["a"]`` reach ``Path(value)`` (TypeError),
    ``release = 5`` reaches ``.items()`` (AttributeError), and ``no_suppress = "no"`` is
    truthy, so it turns suppression OFF. Fix: after ``data.get("release", data)`` refuse a
    non-dict with SpecError("config file ... : [release] must be a table"); for the path
    keys require ``isinstance(value, str)``; for the flags (no_suppress, integers,
    adaptive, quiet, diagnostics) require ``isinstance(value, bool)``; else
    SpecError(f"config setting {key!r} must be a string/boolean, got {value!r}")."""
    (cli_folder / "c.toml").write_text(CONFIG_CASES[case], encoding="utf-8")
    assert check_cli(["release", "--config", "c.toml"], cli_folder, set()) == 2


def test_timing_of_the_whole_battery_is_bounded() -> None:
    """A canary: a trivial release stays fast (the watchdog's 60 s is far above it)."""
    t = time.perf_counter()
    ok_or_error(debtors(10, 1, 2), **base_params())
    assert time.perf_counter() - t < 10
