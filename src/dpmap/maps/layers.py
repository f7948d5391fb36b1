"""What a map of a release draws, shared by the static and the interactive map.

Both :mod:`dpmap.maps.static` (matplotlib) and :mod:`dpmap.maps.interactive` (folium)
draw the same thing, and take it from here: :func:`map_layer` picks the rows (one
category, one level of a hierarchical release or all leaves of an adaptive one), the
mapped column, the suppressed mask and the colour scale (clipped at 0, topped at the
99th percentile of the published values, :func:`ramp_colours` for hex colours);
:func:`cell_polygons` and :func:`boundary_lines` give the hexagons and boundaries as
(lng, lat) arrays (:func:`cell_rings`: the hexagons as flat arrays, built without a
Python loop over the rows, for drawing tens of thousands of them); :func:`caption_facts`
gives the caption's facts (ε, δ, the kind of privacy, H3 resolution, date, colour-scale
and suppression notes) that each map words in its own layout; the shared colours and labels of suppressed and missing cells are
constants here. Nothing here imports matplotlib or folium, spends privacy budget or
looks at anything but the published cell table and manifest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from dpmap.designs.zones import zone_column
from dpmap.errors import SpecError

__all__ = [
    "BOUNDARY_COLOR",
    "COLOR_PERCENTILE",
    "MISSING_EDGE",
    "MISSING_FACE",
    "MISSING_LABEL",
    "SUPPRESSED_EDGE",
    "SUPPRESSED_FACE",
    "SUPPRESSED_LABEL",
    "VALUE_CMAP",
    "YLORRD",
    "CaptionFacts",
    "CellRings",
    "MapLayer",
    "boundary_lines",
    "caption_facts",
    "cell_bounds",
    "cell_polygons",
    "cell_rings",
    "colour_scale",
    "created_date",
    "format_number",
    "grid_text",
    "in_units",
    "map_layer",
    "map_title",
    "numeric_column",
    "periods_caption_facts",
    "privacy_terms",
    "ramp_colours",
    "resolution_text",
    "select_rows",
    "shared_scale",
    "stat_label",
    "suppressed_mask",
    "suppression_note",
]

# ------------------------------------------------------------------ colours and labels

#: Colormap of the mapped statistic (sequential, light = low), by its matplotlib name.
VALUE_CMAP = "YlOrRd"
#: ColorBrewer YlOrRd (9 classes): the stops of matplotlib's "YlOrRd" (:data:`VALUE_CMAP`);
#: colours are interpolated linearly in RGB between them, as matplotlib does.
YLORRD = (
    "#ffffcc",
    "#ffeda0",
    "#fed976",
    "#feb24c",
    "#fd8d3c",
    "#fc4e2a",
    "#e31a1c",
    "#bd0026",
    "#800026",
)
#: Percentile of the published values used as the top of the colour scale.
COLOR_PERCENTILE = 99.0

SUPPRESSED_FACE = "#e3e3e3"
SUPPRESSED_EDGE = "#8c8c8c"
SUPPRESSED_LABEL = "suppressed (noisy count below threshold)"
MISSING_FACE = "white"
MISSING_EDGE = "#b0b0b0"
MISSING_LABEL = "no published value"
BOUNDARY_COLOR = "#1f1f1f"

_STAT_LABELS = {
    "count": "noisy count per hexagon",
    "sum": "noisy sum per hexagon",
    "mean": "noisy mean per hexagon",
}
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


# ----------------------------------------------------------------------- the layer


@dataclass(frozen=True)
class MapLayer:
    """The rows a map draws, the mapped values and their colour scale, and its labels."""

    #: the rows drawn (one category; one level, or all leaves of an adaptive release)
    table: pd.DataFrame
    column: str
    category: str | None
    #: the mapped column as floats (NaN: no published value)
    values: np.ndarray
    suppressed: np.ndarray
    #: rows coloured on the scale: a finite value and not suppressed
    shown: np.ndarray
    #: `values` clipped at 0, the values the colours stand for
    colour_values: np.ndarray
    #: the top of the colour scale
    vmax: float
    #: some shown value is below 0 / above `vmax`
    below: bool
    above: bool
    #: "7", "5–9 (adaptive)", ...
    resolution_text: str
    #: the map's title (the argument, else the manifest's, else a generic one)
    title: str
    #: "noisy count per hexagon", ...
    stat_label: str

    @property
    def missing(self) -> np.ndarray:
        """Rows with no published value that are not suppressed (drawn as "no value")."""
        return ~self.shown & ~self.suppressed

    @property
    def any_shown(self) -> bool:
        return bool(self.shown.any())


def map_layer(
    cells: pd.DataFrame,
    manifest: Mapping[str, Any],
    *,
    column: str,
    category: str | None,
    resolution: int | None,
    title: str | None,
) -> MapLayer:
    """What a map of `column` draws: the rows, values, suppressed mask and colour scale.

    Raises a SpecError naming the fix if `cells`, `category`, `resolution` or `column`
    cannot be used. Geometry (:func:`cell_polygons`) is not built here.
    """
    table = select_rows(
        cells, category, resolution=resolution, mixed=bool(manifest.get("adaptive"))
    )
    values = numeric_column(table, column)
    suppressed = suppressed_mask(table)
    shown, colour_values, vmax, below, above = colour_scale(values, suppressed)
    return MapLayer(
        table=table,
        column=column,
        category=category,
        values=values,
        suppressed=suppressed,
        shown=shown,
        colour_values=colour_values,
        vmax=vmax,
        below=below,
        above=above,
        resolution_text=resolution_text(table, manifest),
        title=in_units(map_title(title, manifest, column, category), manifest),
        stat_label=in_units(stat_label(column), manifest),
    )


def in_units(text: str, manifest: Mapping[str, Any]) -> str:
    """``text`` about hexagons reworded for what the release publishes (zones or hexagons)."""
    if zone_column(dict(manifest)) is None:
        return text
    return text.replace("H3 hexagon", "zone").replace("hexagon", "zone")


def grid_text(manifest: Mapping[str, Any], resolution: str) -> str:
    """What the map's rows are, for a caption: ``"H3 resolution 7"`` or the zones."""
    by = zone_column(dict(manifest))
    if by is None:
        return f"H3 resolution {resolution}"
    zones = (manifest.get("cell_selection") or {}).get("zones")
    return f"{zones} public zones (by {by!r})"


def select_rows(
    cells: pd.DataFrame,
    category: str | None,
    *,
    resolution: int | None = None,
    mixed: bool = False,
) -> pd.DataFrame:
    """Rows to draw: one category; one level of a hierarchical release (``resolution``,
    default the finest); all leaves of an adaptive release (``mixed``: they do not overlap)."""
    if not isinstance(cells, pd.DataFrame):
        raise SpecError(
            f"cells must be the release's cell table (a GeoDataFrame), not {type(cells).__name__}"
        )
    table = _one_category(cells, category)
    if len(table) == 0:
        raise SpecError("the release table has no cells to plot")
    if "resolution" in table.columns:
        resolutions = sorted({int(r) for r in table["resolution"].dropna().unique()})
        if resolution is not None:
            if int(resolution) not in resolutions:
                raise SpecError(
                    f"resolution={resolution!r} is not in this release (it has {resolutions}); "
                    f"pass one of them"
                )
            table = table[table["resolution"] == int(resolution)]
        elif len(resolutions) > 1 and not mixed:
            # a hierarchical release: its levels overlap, show the finest by default
            table = table[table["resolution"] == resolutions[-1]]
    return table


def _one_category(table: pd.DataFrame, category: str | None) -> pd.DataFrame:
    """The rows of `category`; an error if the table has categories and none is picked."""
    if "category" not in table.columns:
        if category is not None:
            raise SpecError(
                f"category={category!r} was given, but the release has no 'category' column; "
                f"drop the category argument"
            )
        return table
    valid = sorted({str(c) for c in table["category"].dropna().unique()})
    if category is None:
        raise SpecError(
            f"the release has one row per (cell, category); pick one with category=..., "
            f"one of: {', '.join(repr(c) for c in valid)}"
        )
    if str(category) not in valid:
        raise SpecError(
            f"category {category!r} is not in the release; valid categories are: "
            f"{', '.join(repr(c) for c in valid)}"
        )
    return table[table["category"].astype(str) == str(category)]


def numeric_column(table: pd.DataFrame, column: str) -> np.ndarray:
    """`column` as floats (NaN where nothing is published); a SpecError if not numbers."""
    if column not in table.columns:
        numeric = [
            c
            for c in table.columns
            if c not in {"resolution", "suppressed"} and _is_numeric(table[c])
        ]
        raise SpecError(
            f"column {column!r} is not in the release table; plottable columns are: "
            f"{', '.join(repr(c) for c in numeric) or '(none)'}"
        )
    series = table[column]
    if not _is_numeric(series):
        # an all-null column may come back as dtype object (e.g. everything suppressed)
        if pd.api.types.is_bool_dtype(series.dtype) or series.notna().any():
            raise SpecError(
                f"column {column!r} has dtype {series.dtype}, not numbers; pick a statistic "
                f"such as 'count'"
            )
        return np.full(len(series), np.nan)
    return pd.to_numeric(series).to_numpy(dtype=float, na_value=np.nan)


def _is_numeric(series: pd.Series) -> bool:
    return bool(
        pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)
    )


def suppressed_mask(table: pd.DataFrame) -> np.ndarray:
    """True for the rows flagged ``suppressed`` (a missing flag counts as not suppressed)."""
    if "suppressed" not in table.columns:
        return np.zeros(len(table), dtype=bool)
    flags = table["suppressed"].astype("boolean")
    return flags.to_numpy(dtype=bool, na_value=False)


# -------------------------------------------------------------------- colour scale


def colour_scale(
    values: np.ndarray, suppressed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float, bool, bool]:
    """The shared colour scale of the static and interactive maps.

    Values are clipped at 0 for colour and the top of the scale is the 99th percentile
    of the published values. Returns (shown mask, colour values, top, any value below
    0, any value above the top).
    """
    shown = np.isfinite(values) & ~suppressed
    colour_values = np.clip(values, 0.0, None)
    vmax = 1.0
    if shown.any():
        vmax = float(np.percentile(colour_values[shown], COLOR_PERCENTILE))
        if not vmax > 0:
            vmax = float(max(colour_values[shown].max(), 1.0))
    below = bool((values[shown] < 0).any())
    above = bool((colour_values[shown] > vmax).any())
    return shown, colour_values, vmax, below, above


def ramp_colours(values: np.ndarray, vmax: float) -> list[str | None]:
    """Hex colours of `values` on the YlOrRd ramp from 0 to `vmax` (NaN → None).

    Values below 0 get the lowest colour, values above `vmax` the highest.
    """
    stops = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in YLORRD], dtype=float)
    values = np.asarray(values, dtype=float)
    t = np.clip(np.nan_to_num(values / vmax, nan=0.0), 0.0, 1.0) * (len(stops) - 1)
    lower = np.minimum(np.floor(t).astype(int), len(stops) - 2)
    frac = (t - lower)[:, None]
    rgb = np.rint(stops[lower] * (1.0 - frac) + stops[lower + 1] * frac).astype(int)
    out: list[str | None] = []
    for ok, (r, g, b) in zip(np.isfinite(values).tolist(), rgb.tolist(), strict=True):
        out.append(f"#{r:02x}{g:02x}{b:02x}" if ok else None)
    return out


# ------------------------------------------------------------------------ geometry


def cell_polygons(table: pd.DataFrame) -> list[list[np.ndarray]]:
    """One list of (lng, lat) rings per row (several for a MultiPolygon)."""
    if "geometry" in table.columns:
        geoms = table["geometry"]
        crs = getattr(table, "crs", None)
        if crs is not None and not _is_wgs84(crs):
            geoms = table.to_crs(4326).geometry
        out = []
        for geom in geoms:
            out.append(_exterior_rings(geom))
        return out
    if "cell" not in table.columns:
        raise SpecError("the release table has neither a 'geometry' nor a 'cell' column")
    import h3

    return [
        [np.array([(lng, lat) for lat, lng in h3.cell_to_boundary(str(c))])] for c in table["cell"]
    ]


@dataclass(frozen=True)
class CellRings:
    """The outer rings of a table's cell geometries as flat arrays: ring ``i`` is
    ``xy[starts[i]:starts[i + 1]]`` ((lng, lat) vertices, the first one NOT repeated at the
    end) and belongs to the table's row ``rows[i]`` (a MultiPolygon row has several rings,
    an empty or missing geometry none)."""

    xy: np.ndarray
    starts: np.ndarray
    rows: np.ndarray

    def select(self, mask: np.ndarray) -> np.ndarray:
        """The rings of the rows where the boolean row `mask` is true, as one
        (rings, vertices, 2) array; a ring with fewer vertices than the longest repeats
        its last vertex (zero-length edges: drawn exactly like the shorter ring)."""
        picked = np.flatnonzero(np.asarray(mask, dtype=bool)[self.rows])
        if not len(picked):
            return np.zeros((0, 3, 2))
        first = self.starts[picked]
        length = self.starts[picked + 1] - first
        step = np.minimum(np.arange(int(length.max())), length[:, None] - 1)
        out: np.ndarray = self.xy[first[:, None] + step]
        return out


def cell_rings(table: pd.DataFrame) -> CellRings:
    """The outer rings of every row's hexagon (several for a MultiPolygon), vectorised:
    from the ``geometry`` column (reprojected to EPSG:4326 if needed) with shapely 2's
    array functions, else rebuilt from ``cell`` with h3."""
    if "geometry" in table.columns:
        geoms = table["geometry"]
        crs = getattr(table, "crs", None)
        if crs is not None and not _is_wgs84(crs):
            geoms = table.to_crs(4326).geometry
        return _rings_of_geometries(np.asarray(geoms, dtype=object))
    if "cell" not in table.columns:
        raise SpecError("the release table has neither a 'geometry' nor a 'cell' column")
    import h3

    rings = [np.asarray(h3.cell_to_boundary(str(c)), dtype=float)[:, ::-1] for c in table["cell"]]
    lengths = np.array([len(r) for r in rings], dtype=np.int64)
    xy = np.concatenate(rings) if rings else np.zeros((0, 2))
    starts = np.concatenate([[0], np.cumsum(lengths)])
    return CellRings(xy=xy, starts=starts, rows=np.arange(len(rings)))


def _rings_of_geometries(geoms: np.ndarray) -> CellRings:
    """Polygons' exterior rings (of nested multi-parts too), without the closing vertex."""
    import shapely

    rows = np.arange(len(geoms))
    parts = geoms
    multi = (4, 5, 6, 7)  # Multi*, GeometryCollection: look inside
    while len(parts) and np.isin(shapely.get_type_id(parts), multi).any():
        parts, index = shapely.get_parts(parts, return_index=True)
        rows = rows[index]
    polygon = shapely.get_type_id(parts) == 3
    parts, rows = parts[polygon], rows[polygon]
    coords, ring = shapely.get_coordinates(shapely.get_exterior_ring(parts), return_index=True)
    counts = np.bincount(ring, minlength=len(parts))
    keep_ring = counts > 1
    ends = np.cumsum(counts)
    closing = np.zeros(len(coords), dtype=bool)
    closing[ends[keep_ring] - 1] = True  # shapely repeats the first vertex at the end
    xy = coords[~closing & keep_ring[ring]]
    lengths = counts[keep_ring] - 1
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return CellRings(xy=xy, starts=starts, rows=rows[keep_ring])


def _exterior_rings(geom: Any) -> list[np.ndarray]:
    if geom is None or getattr(geom, "is_empty", True):
        return []
    if geom.geom_type == "Polygon":
        return [np.asarray(geom.exterior.coords)[:, :2]]
    if geom.geom_type in {"MultiPolygon", "GeometryCollection"}:
        rings: list[np.ndarray] = []
        for part in geom.geoms:
            rings.extend(_exterior_rings(part))
        return rings
    return []


def _all_rings(geom: Any) -> list[np.ndarray]:
    """Every boundary line of a (multi)polygon or (multi)line, as (x, y) arrays."""
    if geom is None or getattr(geom, "is_empty", True):
        return []
    kind = geom.geom_type
    if kind == "Polygon":
        return [np.asarray(geom.exterior.coords)[:, :2]] + [
            np.asarray(r.coords)[:, :2] for r in geom.interiors
        ]
    if kind in {"LineString", "LinearRing"}:
        return [np.asarray(geom.coords)[:, :2]]
    if kind.startswith("Multi") or kind == "GeometryCollection":
        lines: list[np.ndarray] = []
        for part in geom.geoms:
            lines.extend(_all_rings(part))
        return lines
    return []


def _is_wgs84(crs: Any) -> bool:
    try:
        return bool(crs.to_epsg() == 4326)
    except Exception:  # pragma: no cover - exotic CRS objects
        return False


def boundary_lines(boundaries: Any) -> list[np.ndarray]:
    """Every outline of a GeoDataFrame/GeoSeries as (lng, lat) arrays (reprojected)."""
    import geopandas as gpd

    if isinstance(boundaries, gpd.GeoDataFrame):
        series = boundaries.geometry
    elif isinstance(boundaries, gpd.GeoSeries):
        series = boundaries
    else:
        raise SpecError(
            f"boundaries must be a GeoDataFrame or GeoSeries, not {type(boundaries).__name__}"
        )
    if series.crs is None:
        raise SpecError(
            "the boundaries have no CRS, so they cannot be placed on the map; set it first, "
            "e.g. boundaries.set_crs('EPSG:4326') if the coordinates are longitude/latitude "
            "degrees (or the CRS of the file they came from)"
        )
    if not _is_wgs84(series.crs):
        series = series.to_crs(4326)
    lines: list[np.ndarray] = []
    for geom in series:
        lines.extend(_all_rings(geom))
    return lines


def cell_bounds(polygons: Sequence[Sequence[np.ndarray]]) -> tuple[float, float, float, float]:
    """(west, south, east, north) of all rings; the caller checks that there are some."""
    xy = np.concatenate([r for rings in polygons for r in rings])
    west, south = np.nanmin(xy, axis=0)
    east, north = np.nanmax(xy, axis=0)
    return float(west), float(south), float(east), float(north)


# ---------------------------------------------------------------------------- texts


def stat_label(column: str) -> str:
    """What a value of `column` is, e.g. "noisy count per hexagon"."""
    return _STAT_LABELS.get(column, f"noisy {column} per hexagon")


def map_title(
    title: str | None, manifest: Mapping[str, Any], column: str, category: str | None
) -> str:
    """`title`, else the manifest's title (with the category), else a generic title."""
    if title is not None:
        return title
    base = manifest.get("title") or f"dpmap release: {column} per H3 hexagon"
    return f"{base} — {category}" if category is not None else str(base)


def format_number(x: float, *, compact: bool = False) -> str:
    """A number on a map: integers with thousands separators, else 3 significant digits.

    ``compact``: 250k, 1.5M, 2G from 100,000 on (for tick labels).
    """
    if x == 0:
        return "0"
    if compact and abs(x) >= 1e5:
        for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(x) >= factor:
                return f"{x / factor:.3g}{suffix}"
    if abs(x) >= 1000 or float(x).is_integer():
        return f"{round(x):,}"
    return f"{x:.3g}"


def resolution_text(table: pd.DataFrame, manifest: Mapping[str, Any]) -> str:
    """The H3 resolution(s) drawn, e.g. ``"7"`` or ``"5–9 (adaptive)"``."""
    if "resolution" in table.columns and table["resolution"].notna().any():
        levels = sorted({int(r) for r in table["resolution"].dropna()})
        if len(levels) > 1:
            return f"{levels[0]}–{levels[-1]} (adaptive)"
        return str(levels[0])
    res = manifest.get("resolution")
    if isinstance(res, (list, tuple)):
        return ", ".join(str(int(r)) for r in res)
    return "?" if res is None else str(res)


def created_date(created: Any) -> str:
    """The date (YYYY-MM-DD) of the manifest's ``created`` timestamp."""
    text = str(created)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date().isoformat()
    except ValueError:
        return text[:10]


def _format_epsilon(epsilon: float) -> str:
    """ε with up to 3 significant digits (``1``, ``0.5``, ``1.23``)."""
    eps = float(epsilon)
    if math.isinf(eps):
        return "∞"
    if eps != 0 and (abs(eps) >= 1e4 or abs(eps) < 1e-3):
        return _scientific(eps)
    return f"{eps:.3g}"


def _format_delta(delta: float) -> str:
    """δ as ``0`` or in scientific notation (``10⁻⁶``, ``2.5 × 10⁻⁷``)."""
    d = float(delta)
    if d == 0:
        return "0"
    return _scientific(d)


def _scientific(x: float) -> str:
    exponent = math.floor(math.log10(abs(x)))
    mantissa = x / 10**exponent
    if round(mantissa, 2) >= 10:  # 9.999e-7 → 1 × 10⁻⁶
        mantissa /= 10
        exponent += 1
    power = "10" + str(exponent).translate(_SUPERSCRIPT)
    if f"{mantissa:.3g}" == "1":
        return power
    return f"{mantissa:.3g} × {power}"


def _privacy_phrase(measure: str, delta: float) -> str:
    name = measure.lower()
    if "zero_concentrated" in name or "zcdp" in name:
        return "(zCDP, stated as (ε, δ)-DP)"
    if delta == 0:
        return "(pure ε-DP)"
    return "(approximate (ε, δ)-DP)"


def privacy_terms(manifest: Mapping[str, Any]) -> tuple[str, str, str]:
    """ε and δ as shown on a map, and the bracketed phrase naming the kind of privacy."""
    privacy = manifest.get("privacy", {}) or {}
    eps = privacy.get("epsilon")
    delta = float(privacy.get("delta", 0.0) or 0.0)
    eps_text = "?" if eps is None else _format_epsilon(eps)
    return eps_text, _format_delta(delta), _privacy_phrase(str(privacy.get("measure", "")), delta)


def suppression_note(manifest: Mapping[str, Any]) -> str | None:
    """How hidden hexagons were chosen, in words for a map caption (None: nothing hidden)."""
    sup = manifest.get("suppression", {}) or {}
    threshold, phantoms = sup.get("threshold"), sup.get("expected_phantom_rows")
    if "none" in str(sup.get("rule", "")).split(":")[0]:
        return None
    if sup.get("default") and phantoms is not None:
        below = (
            f"a noisy count below {threshold:.4g}"
            if threshold is not None
            else "an estimate within a map-wide multiple of its noise"
        )
        return (
            f"hexagons with {below} are hidden (at most about 1 truly empty hexagon per map "
            "is expected to show by chance); a hidden hexagon is not a zero"
        )
    if threshold is not None:
        return f"hexagons with a noisy count below {threshold:.4g} are hidden (not zero)"
    return "hexagons whose noisy count is below its own margin of error are hidden (not zero)"


@dataclass(frozen=True)
class CaptionFacts:
    """What every map's caption states; each map words and lays it out its own way."""

    #: ε and δ as shown ("1", "10⁻⁶"), and the kind of privacy in brackets
    epsilon: str
    delta: str
    guarantee: str
    resolution: str
    #: the release date, YYYY-MM-DD
    created: str
    #: "Colour scale from 0 to … (the 99th percentile)"; None when no hexagon has a value
    scale: str | None
    #: a note that negative noisy values are coloured as 0 (None if there are none shown)
    negative: str | None
    #: how suppressed hexagons were chosen (None if nothing is hidden)
    hidden: str | None
    noise: str = "differences between single hexagons may be noise"
    #: what the rows are: "H3 resolution 7", or a zone release's zones
    grid: str = ""


def caption_facts(manifest: Mapping[str, Any], layer: MapLayer) -> CaptionFacts:
    """The facts a caption of `layer` states, from the manifest and the colour scale."""
    eps_text, delta_text, phrase = privacy_terms(manifest)
    hidden = suppression_note(manifest)
    scale = None
    if layer.any_shown:
        scale = (
            f"Colour scale from 0 to {format_number(layer.vmax)} "
            f"(the {COLOR_PERCENTILE:g}th percentile)"
        )
    return CaptionFacts(
        epsilon=eps_text,
        delta=delta_text,
        guarantee=phrase,
        resolution=layer.resolution_text,
        created=created_date(manifest.get("created", "")),
        scale=scale,
        negative="negative noisy values are coloured as 0" if layer.below else None,
        hidden=None if hidden is None else in_units(hidden, manifest),
        noise=in_units(CaptionFacts.noise, manifest),
        grid=grid_text(manifest, layer.resolution_text),
    )


# ------------------------------------------------------------ periods: one shared scale


def shared_scale(layers: Sequence[MapLayer]) -> tuple[list[MapLayer], MapLayer]:
    """The layers of several periods on ONE colour scale, and a layer for the legend.

    The top of the scale is the 99th percentile of every period's shown values together
    (as :func:`colour_scale` does for one map), so the same colour means the same value in
    every period. Each returned layer has that top, with its own below/above flags; the
    legend layer has the flags of all periods.
    """
    values = np.concatenate([layer.values for layer in layers])
    suppressed = np.concatenate([layer.suppressed for layer in layers])
    _, _, vmax, below, above = colour_scale(values, suppressed)
    out = []
    for layer in layers:
        shown = layer.colour_values[layer.shown]
        out.append(
            replace(layer, vmax=vmax, above=bool((shown > vmax).any()))  # below is per value
        )
    legend = replace(
        layers[0],
        vmax=vmax,
        below=below,
        above=above,
        values=values,
        suppressed=suppressed,
        shown=np.concatenate([layer.shown for layer in layers]),
        colour_values=np.concatenate([layer.colour_values for layer in layers]),
    )
    return out, legend


def periods_caption_facts(
    manifests: Sequence[Mapping[str, Any]], labels: Sequence[str], legend: MapLayer
) -> CaptionFacts:
    """The caption facts of a map of several periods: ε and δ of each period's release
    (one value when they agree), the shared colour scale, any period's hidden cells."""
    facts = caption_facts(manifests[0], legend)
    terms = [privacy_terms(m)[:2] for m in manifests]
    panels = {(m.get("panel") or {}).get("fingerprint") for m in manifests}
    if len(set(terms)) == 1 and len(panels) == 1 and None not in panels:
        # the periods of one panel release: one measurement, one guarantee for all of them
        eps, delta = terms[0]
        delta = f"{delta} for all {len(manifests)} periods together (one panel release)"
    elif len(set(terms)) == 1:
        eps, delta = terms[0]
        delta = f"{delta} per period" if len(manifests) > 1 else delta
    else:
        eps = ", ".join(f"{e} ({lab})" for (e, _), lab in zip(terms, labels, strict=True))
        delta = ", ".join(f"{d} ({lab})" for (_, d), lab in zip(terms, labels, strict=True))
    hidden = next((h for h in map(suppression_note, manifests) if h is not None), None)
    scale = facts.scale and facts.scale.replace("percentile)", "percentile of all periods)")
    return replace(
        facts,
        epsilon=eps,
        delta=delta,
        scale=scale,
        hidden=None if hidden is None else in_units(hidden, manifests[0]),
    )
