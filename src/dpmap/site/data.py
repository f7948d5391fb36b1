"""The website's data: every layer's shapes and published numbers, compactly encoded.

:func:`site_data` returns the ``window.DPMAP_SITE`` object (JSON-ready) that
``assets/site.js`` reads. Typed arrays (the field names below say their type) are
little-endian bytes, gzipped, then base64-encoded (``"encoding": "gzip+base64"``): decode
them with :func:`unpack` (``unpack(s, "<f4")``), the ids with :func:`unpack_text`; the page
inflates them with the browser's DecompressionStream (no network). Everything written is
a published noisy number or public geometry: no data is read and no budget is spent.

Format 1::

    {"format": 1, "encoding": "gzip+base64", "title", "noun", "generated": "YYYY-MM-DD",
     "dpmap_version",
     "tiles": null | {"url", "attribution"},
     "z95": 1.959963984540054,         # the normal 97.5% quantile around() uses
     "layers": [{
       "key", "name", "kind": "cells" | "zones", "resolution": int | null,
       "periods": [label, ...]          # [null] for one release that is not a series
       "shapes": {
         "n": N, "ids": text            # N lines: H3 cell ids or zone names, the union
                                        # over periods (unpack_text)
         "centre": Int32 (2N)           # lng, lat of each shape's bbox centre, in 1e-7 degrees
                                        # (a multiple of 2^k)
         "unit": float                  # degrees per offset unit (1e-7 · 2^k, the smallest
                                        # such that every offset fits an Int16)
         "offsets": Int16 (2V)          # dlng, dlat of every vertex from its shape's centre:
                                        # vertex = (centre + offset · 2^k) · 1e-7 degrees
         "ring_start": Uint32 (R+1)     # vertices of ring r: ring_start[r] .. ring_start[r+1]
         "shape_start": Uint32 (N+1)    # rings of shape i: shape_start[i] .. shape_start[i+1]
         "area_km2": Float32 (N)},      # h3.cell_area (cells) or the equal-area area (zones)
       "bbox": [minLng, minLat, maxLng, maxLat],
       "statistics": [{"key", "stat", "category", "label", "digits", "vmax"}],
                                        # count, sum, mean, median, q..: those with a
                                        # published margin ("<stat>_moe"); with categories
                                        # one per (stat, category), key "count:bank"
                                        # (category null without);
                                        # vmax: top of the colour scale, the 99th
                                        # percentile of the published values of all periods
       "values": [per period: {stat: {"value": Float32, "moe": Float32, "state": Uint8}}],
                                        # state 0 published, 1 suppressed, 2 not in this
                                        # period's release; value and moe NaN unless state 0
       "around": null | {
         "value": str | null, "value_bounds": [lo, hi] | null, "unbiased": bool,
         "categories": [str] | null,
         "periods": [per period: {stat ("count"[, "sum"]): {"est": Float64, "var": Float64,
                      "single_moe": float | null, "hidden": Uint8}}]},
                                        # est, var, hidden: N × C, row-major (C categories,
                                        # 1 without)
       "around_note": str,              # why around is off, or which estimates it adds up
       "trend": null | {"slope": Float32, "moe": Float32, "significant": Uint8,
                        "label": str, "method": str, "vmax": float},  # NaN slope: no trend
                                        # for that shape; vmax: 99th percentile of |slope|
       "caption": str}]}

Vertex rings exclude the closing vertex; a shape's rings are its polygons' exterior and
interior rings (draw with the even-odd rule). The vertices are rounded to a grid of
``unit`` degrees (at most half a unit off: about 2 cm at resolution 8, 20 cm at resolution
6), the same grid for every shape, so that neighbouring cells share their vertices exactly;
decode as ``(centre + offset * 2^k) * 1e-7`` (integers first, then one multiplication).

"Around here" uses, per period, exactly the rows :func:`dpmap.analysis.totals.rows_of`
gives ``rel.around``: ``est`` is the value added up (the unbiased estimate when the layer
is ``unbiased`` and the release carries estimates; otherwise the published value, and 0
for a hidden row), ``var`` its noise variance, ``hidden`` 1 where a suppressed row has no
value to add (then around refuses, as :func:`dpmap.analysis.totals.hidden_for_public`),
``single_moe`` the exact margin of one whole cell (``rows.corr.exact_moe``). A shape not
in a period's release (state 2) is not a candidate of that period. Around is off (null,
with ``around_note``) for zones (``rel.around`` refuses zone releases), and where the
design's rows are not independent (hierarchical, adaptive: their exact variances need the
whole tree). When the layer is not ``unbiased`` nothing from ``rel.estimates`` is written:
the around rows are those of the release without its estimates, as the public file.

The page (``assets/geo.js``) repeats ``rel.around`` on these numbers: the same disk, the
same cells (lon/lat polygons intersecting it), the same sums in the same order, the same
margins and sentence; its answers equal Python's exactly (tests/site/test_site_js.py). Two
known, tiny differences: "is the point in a released cell" is a planar point-in-polygon
test on the cells' lon/lat outlines where Python asks H3 (they differ only within about
0.2 m of the released area's outer edge at resolution 6), and the coverage is measured on
vertices rounded to ``unit`` (within 1e-5 of Python's; the sentence only uses it to two
digits, below 99.5%).

Releases with categories: each (statistic, category) is a choice of the statistic
switcher; "around here" answers as ``rel.around`` does (totals over the categories, and
one line per category).
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
from collections.abc import Mapping, Sequence
from typing import Any

import h3
import numpy as np
import pandas as pd
import shapely

from dpmap._privacy.postprocess import Z95
from dpmap._version import __version__
from dpmap.analysis.totals import rows_of
from dpmap.analysis.zones import equal_area
from dpmap.designs import design_of
from dpmap.designs.zones import zone_column
from dpmap.errors import SpecError
from dpmap.maps.layers import (
    COLOR_PERCENTILE,
    created_date,
    grid_text,
    privacy_terms,
    resolution_text,
)
from dpmap.site.layers import SiteLayer

FORMAT = 1
#: statistics shown first, in this order; any other ``<key>_moe`` column follows
_STAT_ORDER = ("count", "sum", "mean", "median")
_AROUND_STATS = ("count", "sum")
#: columns of the unbiased estimates a file may carry (never written unless ``unbiased``)
_UNBIASED = ("count_unbiased", "count_var", "sum_unbiased", "sum_var", "people_unbiased")


def pack(array: np.ndarray, dtype: str) -> str:
    """A typed array as base64 of the gzip of its little-endian bytes."""
    raw = np.ascontiguousarray(array, dtype=dtype).tobytes()
    return base64.b64encode(gzip.compress(raw, 6, mtime=0)).decode("ascii")


def pack_text(lines: Sequence[str]) -> str:
    """Lines of text (no newline in any) as base64 of the gzip of their UTF-8, one per line."""
    raw = "\n".join(lines).encode("utf-8")
    return base64.b64encode(gzip.compress(raw, 6, mtime=0)).decode("ascii")


def unpack(text: str, dtype: str) -> np.ndarray:
    """The typed array of :func:`pack` (for tests and readers of the site's data)."""
    return np.frombuffer(gzip.decompress(base64.b64decode(text)), dtype=dtype)


def unpack_text(text: str) -> list[str]:
    """The lines of :func:`pack_text`."""
    raw = gzip.decompress(base64.b64decode(text)).decode("utf-8")
    return raw.split("\n") if raw else []


def site_data(
    layers: Sequence[SiteLayer], *, title: str, noun: str, tiles: Any = None
) -> dict[str, Any]:
    """The ``window.DPMAP_SITE`` object of a website of ``layers`` (see the module docstring).

    ``tiles``: None (no base map, the default), a tile URL template
    (``"https://tile.example.org/{z}/{x}/{y}.png"``), or ``{"url": ..., "attribution": ...}``.
    """
    if not isinstance(title, str) or not title.strip():
        raise SpecError(f"title must be a non-empty text, got {title!r}; e.g. title='Debt 2026'")
    if not isinstance(noun, str) or not noun.strip():
        raise SpecError(f"noun must be a non-empty word such as 'debtors', got {noun!r}")
    if not layers:
        raise SpecError("a website needs at least one layer of releases; pass some releases")
    return {
        "format": FORMAT,
        "encoding": "gzip+base64",
        "title": title.strip(),
        "noun": noun.strip(),
        "generated": dt.datetime.now(dt.UTC).date().isoformat(),
        "dpmap_version": __version__,
        "tiles": _tiles(tiles),
        "z95": Z95,
        "layers": [layer_data(layer) for layer in layers],
    }


def _tiles(tiles: Any) -> dict[str, str] | None:
    if tiles is None:
        return None
    if isinstance(tiles, str):
        url, attribution = tiles, ""
    elif isinstance(tiles, Mapping) and isinstance(tiles.get("url"), str):
        url, attribution = tiles["url"], str(tiles.get("attribution") or "")
    else:
        raise SpecError(
            f"tiles must be a tile URL template or {{'url': ..., 'attribution': ...}}, got "
            f"{tiles!r}; e.g. tiles='https://tile.openstreetmap.org/{{z}}/{{x}}/{{y}}.png'"
        )
    if not url.startswith(("https://", "http://")) or not all(
        k in url for k in ("{z}", "{x}", "{y}")
    ):
        raise SpecError(
            f"tiles must be an http(s) URL template with {{z}}, {{x}} and {{y}}, got {url!r}; "
            "e.g. 'https://tile.openstreetmap.org/{z}/{x}/{y}.png'"
        )
    return {"url": url, "attribution": attribution or f"map tiles: {url.split('/')[2]}"}


def _rows_shown(rel: Any) -> pd.DataFrame:
    """The release's rows the map shows: the finest level of a several-level design."""
    table = rel.cells
    if design_of(rel.manifest).several_levels and "resolution" in table.columns:
        table = table[table["resolution"].to_numpy() == table["resolution"].max()]
    return table.drop(columns=[c for c in _UNBIASED if c in table.columns])


def _key_column(rel: Any) -> str:
    return zone_column(rel.manifest) or "cell"


def layer_data(layer: SiteLayer) -> dict[str, Any]:
    """One layer of DPMAP_SITE (see the module docstring)."""
    if not layer.periods:
        raise SpecError(f"layer {layer.key!r} has no periods; give it at least one release")
    tables = [_rows_shown(p.release) for p in layer.periods]
    keys = [
        t[_key_column(p.release)].astype(str).to_numpy()
        for t, p in zip(tables, layer.periods, strict=True)
    ]
    ids, first = np.unique(np.concatenate(keys), return_index=True)
    order = np.argsort(first, kind="stable")  # first appearance: the first period's order
    ids = ids[order]
    geoms = np.concatenate([np.asarray(t.geometry.to_numpy(), dtype=object) for t in tables])
    geoms = geoms[first[order]]
    index = pd.Index(ids)
    value = (layer.periods[-1].release.manifest.get("contribution_bounds") or {}).get("value")
    cats = layer.periods[-1].release.manifest.get("categories")
    stats = _statistics(tables, layer.kind, value, [str(c) for c in cats] if cats else None)
    areas = (
        np.array([h3.cell_area(c, unit="km^2") for c in ids])
        if layer.kind == "cells"
        else equal_area(geoms) / 1e6
    )
    shapes = {"n": len(ids), "ids": pack_text(ids.tolist()), **encode_shapes(geoms)}
    shapes["area_km2"] = pack(areas, "<f4")
    res = sorted({int(r) for t in tables if "resolution" in t for r in t["resolution"].dropna()})
    around, note = _around(layer, index)
    rel0 = layer.periods[-1].release
    xmin, ymin, xmax, ymax = shapely.total_bounds(geoms)
    return {
        "key": layer.key,
        "name": layer.name,
        "kind": layer.kind,
        "resolution": res[0] if len(res) == 1 and layer.kind == "cells" else None,
        "periods": [p.label for p in layer.periods],
        "shapes": shapes,
        "bbox": [float(xmin), float(ymin), float(xmax), float(ymax)],
        "statistics": stats,
        "values": [
            _period_values(t, p.release, index, stats)
            for t, p in zip(tables, layer.periods, strict=True)
        ],
        "around": around,
        "around_note": note,
        "trend": _trend(layer.trend, index),
        "caption": _caption(rel0.manifest, tables[-1]),
    }


def encode_shapes(geoms: np.ndarray) -> dict[str, Any]:
    """Rings of every shape as centre (Int32, 1e-7°) + Int16 vertex offsets (module docstring)."""
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    ring_shape = part_of[ring_part]
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    per_ring = np.bincount(coord_ring, minlength=len(rings))
    last = np.cumsum(per_ring) - 1  # the closing vertex of every ring
    keep = np.ones(len(coords), dtype=bool)
    keep[last] = False
    coords, coord_ring = coords[keep], coord_ring[keep]
    n = len(geoms)
    bounds = shapely.bounds(geoms)
    centre = np.column_stack([bounds[:, 0] + bounds[:, 2], bounds[:, 1] + bounds[:, 3]]) / 2 * 1e7
    k = 0
    biggest = float(np.abs(coords * 1e7 - centre[ring_shape[coord_ring]]).max()) if n else 0.0
    while biggest / 2**k > 32766:  # (± 1 of rounding)
        k += 1
    # every vertex and centre on one grid of 2^k · 1e-7°: a vertex shared by two shapes
    # decodes to the same numbers in both (no slivers between neighbouring cells)
    grid_centre = np.rint(centre / 2**k)
    unit_offsets = np.rint(coords * 1e7 / 2**k) - grid_centre[ring_shape[coord_ring]]
    centre = grid_centre * 2**k
    ring_start = np.concatenate([[0], np.cumsum(per_ring - 1)])
    shape_start = np.concatenate([[0], np.cumsum(np.bincount(ring_shape, minlength=n))])
    return {
        "centre": pack(centre, "<i4"),
        "unit": 1e-7 * 2**k,
        "offsets": pack(unit_offsets, "<i2"),
        "ring_start": pack(ring_start, "<u4"),
        "shape_start": pack(shape_start, "<u4"),
    }


def _statistics(
    tables: list[pd.DataFrame], kind: str, value: str | None, categories: list[str] | None
) -> list[dict[str, Any]]:
    """The published statistics (count first), per category when the releases have
    categories ("count:bank"), with their labels, digits and colour-scale top."""
    keys: list[str] = []
    for t in tables:
        for c in t.columns:
            if f"{c}_moe" in t.columns and c not in keys:
                keys.append(c)
    keys.sort(key=lambda c: (_STAT_ORDER.index(c) if c in _STAT_ORDER else len(_STAT_ORDER), c))
    unit = "hexagon" if kind == "cells" else "zone"
    out = []
    for c in keys:
        choices: list[str | None] = list(categories) if categories else [None]
        for cat in choices:
            v = np.concatenate(
                [
                    pd.array(_of_category(t, cat)[c], dtype="Float64").to_numpy(
                        np.float64, na_value=np.nan
                    )
                    for t in tables
                    if c in t
                ]
            )
            v = v[np.isfinite(v)]
            top = float(np.percentile(v, COLOR_PERCENTILE)) if len(v) else 1.0
            what = (
                c
                if value is None or c == "count"
                else f"{c} of {value}"
                if c == "sum"
                else f"{c} {value}"
            )
            out.append(
                {
                    "key": c if cat is None else f"{c}:{cat}",
                    "stat": c,
                    "category": cat,
                    "label": f"noisy {what} per {unit}" + ("" if cat is None else f" — {cat}"),
                    "digits": 0 if (v == np.round(v)).all() else 2,
                    "vmax": top if top > 0 else 1.0,
                }
            )
    return out


def _of_category(table: pd.DataFrame, category: str | None) -> pd.DataFrame:
    if category is None:
        return table
    return table[table["category"].astype(str).to_numpy() == category]


def _period_values(
    table: pd.DataFrame, rel: Any, index: pd.Index, stats: list[dict[str, Any]]
) -> dict[str, dict[str, str]]:
    out = {}
    for s in stats:
        key, rows = s["stat"], _of_category(table, s["category"])
        at = index.get_indexer(rows[_key_column(rel)].astype(str))
        supp = rows["suppressed"].to_numpy(dtype=bool)
        value = np.full(len(index), np.nan)
        moe = np.full(len(index), np.nan)
        state = np.full(len(index), 2, dtype=np.uint8)
        state[at] = np.where(supp, 1, 0)
        if key in rows:
            v = pd.array(rows[key], dtype="Float64").to_numpy(np.float64, na_value=np.nan)
            m = pd.array(rows[f"{key}_moe"], dtype="Float64").to_numpy(np.float64, na_value=np.nan)
            value[at] = np.where(supp, np.nan, v)  # a suppressed row's number is never written
            moe[at] = np.where(supp, np.nan, m)
        out[s["key"]] = {
            "value": pack(value, "<f4"),
            "moe": pack(moe, "<f4"),
            "state": pack(state, "u1"),
        }
    return out


def _public(rel: Any, unbiased: bool) -> Any:
    """The release as the site may use it: without its estimates unless ``unbiased``."""
    if unbiased or rel.estimates is None:
        return rel
    cells = rel.cells
    manifest = {k: v for k, v in rel.manifest.items() if k != "unbiased_columns"}
    return type(rel)(cells.drop(columns=[c for c in _UNBIASED if c in cells.columns]), manifest)


def _around(layer: SiteLayer, index: pd.Index) -> tuple[dict[str, Any] | None, str]:
    """The rows ``rel.around`` adds up, per period, or None and why around is off."""
    if layer.kind == "zones":
        return None, (
            "“Around here” is not available on this layer: its numbers are whole zones, so "
            "they cannot be added up around a point; use the cell layer or the table."
        )
    periods, uses = [], set()
    for p in layer.periods:
        rows = rows_of(_public(p.release, layer.unbiased))
        corr = rows.corr
        if not corr.independent or corr.tree is not None or corr.forest is not None:
            return None, (
                "“Around here” is not available on this layer: the noise of its cells is "
                "shared between levels, so their margins cannot be added up cell by cell."
            )
        at = index.get_indexer(rows.cells.astype(str))
        out = {}
        shape = (len(index), rows.ncat)  # (cell, category), row-major
        for s in rows.stats:
            est, var = np.zeros(shape), np.zeros(shape)
            hidden = np.zeros(shape, dtype=np.uint8)
            est[at], var[at] = rows.values[s], rows.variances[s]
            hidden[at] = rows.hidden
            exact = corr.exact_moe.get(s)
            out[s] = {
                "est": pack(est, "<f8"),
                "var": pack(var, "<f8"),
                "single_moe": None if exact is None else float(exact),
                "hidden": pack(hidden, "u1"),
            }
        periods.append(out)
        uses.add(rows.unbiased)
    if uses == {True}:
        note = (
            "It adds up the unbiased noisy estimates of every cell it needs, hidden "
            "(suppressed) cells included, so the total is not biased by what is hidden."
        )
    else:
        note = (
            "It adds up the published numbers of the cells it needs; where a needed cell "
            "is hidden (suppressed), it cannot answer."
        )
    value = rows.value_name
    return {
        "value": value,
        "value_bounds": None if rows.value_bounds is None else list(rows.value_bounds),
        "categories": None if rows.categories is None else list(rows.categories),
        "unbiased": uses == {True},
        "periods": periods,
    }, note


def _trend(trend: Any, index: pd.Index) -> dict[str, Any] | None:
    if trend is None:
        return None
    key = "cell" if "cell" in trend.columns else str(trend.columns[0])
    at = index.get_indexer(trend[key].astype(str))
    ok = at >= 0
    slope, moe = np.full(len(index), np.nan), np.full(len(index), np.nan)
    sig = np.zeros(len(index), dtype=np.uint8)
    slope[at[ok]] = trend["slope"].to_numpy(np.float64)[ok]
    moe[at[ok]] = trend["slope_moe"].to_numpy(np.float64)[ok]
    sig[at[ok]] = trend["significant"].to_numpy(bool)[ok]
    shown = np.abs(slope[np.isfinite(slope)])
    top = float(np.percentile(shown, COLOR_PERCENTILE)) if len(shown) else 1.0
    return {
        "slope": pack(slope, "<f4"),
        "moe": pack(moe, "<f4"),
        "significant": pack(sig, "u1"),
        "label": "trend: change per period",
        "method": str(trend.attrs.get("method", "")),
        "vmax": top if top > 0 else 1.0,
    }


def _caption(manifest: dict[str, Any], table: pd.DataFrame) -> str:
    eps, delta, phrase = privacy_terms(manifest)
    grid = grid_text(manifest, resolution_text(table, manifest))
    date = created_date(manifest.get("created", ""))
    return f"ε = {eps}, δ = {delta} {phrase}; {grid}; released {date}"
