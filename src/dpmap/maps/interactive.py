"""Interactive HTML maps of a published dpmap release (Leaflet, built with folium).

:func:`explore_release` returns a :class:`folium.Map` of one statistic per H3 hexagon:
hexagons coloured on the same sequential scale as the static map (YlOrRd from 0 to the
99th percentile of the published values, negative noisy values coloured as 0), a
tooltip with each value ± its 95% margin of error, suppressed cells grey with ``///``
hatching (never confused with 0), a legend, and a caption with the privacy guarantee
(ε, δ, H3 resolution, date and the manifest's privacy statement). What is drawn (rows,
column, suppressed mask, colour scale, caption facts, titles, boundaries) comes from
:mod:`dpmap.maps.layers`, shared with the static map; this file turns it into GeoJSON,
escaped HTML snippets and the page's script.

:func:`write_html` saves that map as ONE self-contained HTML file that works offline:
Leaflet's JavaScript and CSS (with its images as ``data:`` URIs) are inlined, there is
no base map by default, and the page makes no network request at all. A base map can
be asked for with ``tiles=`` (e.g. ``"OpenStreetMap"``), knowing that the tiles are then
fetched from the internet by whoever opens the file.

Everything here only reads the *published* cell table and manifest: it spends no
privacy budget and never touches the raw points. Text that comes from the user (title,
category names) is HTML-escaped, and all data is embedded with :func:`json.dumps`, with
``<``, ``>`` and ``&`` escaped so that nothing can close the ``<script>`` element.

folium and the Leaflet files (package ``django-js-lib-leaflet``, a plain copy of
Leaflet's ``dist/`` folder; nothing of Django is imported) are optional dependencies
(``pip install 'dpmap[plot]'``), imported lazily.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dpmap.designs.zones import zone_column
from dpmap.errors import DataFileError, SpecError, missing_extra
from dpmap.io import atomic_write
from dpmap.maps.layers import (
    BOUNDARY_COLOR,
    MISSING_EDGE,
    MISSING_FACE,
    MISSING_LABEL,
    SUPPRESSED_FACE,
    SUPPRESSED_LABEL,
    YLORRD,
    CaptionFacts,
    MapLayer,
    boundary_lines,
    caption_facts,
    cell_bounds,
    cell_polygons,
    format_number,
    map_layer,
    numeric_column,
    ramp_colours,
)

if TYPE_CHECKING:
    import folium

__all__ = [
    "explore_layers",
    "explore_release",
    "html_document",
    "offline_document",
    "ramp_colours",
    "save_html",
    "script_json",
    "write_html",
]

#: Background of the map where there is no hexagon (there is no base map by default).
BACKGROUND = "#eef0f2"
#: Suppressed cells: the static map's light grey, with "///" hatching a little lighter
#: than the static map's (on screen, small hexagons of dark hatching look like data).
SUPPRESSED_HATCH = "#a3a3a3"
#: Ramp and swatch outlines in the legend.
LEGEND_EDGE = "#9a9a9a"
#: Coordinates are rounded to this many decimals (1e-5° ≈ 1.1 m): small files, no gaps,
#: since neighbouring hexagons share their rounded vertices.
COORD_DECIMALS = 5
#: The package that ships Leaflet's dist/ files, and where they are inside it.
LEAFLET_PACKAGE = "django-js-lib-leaflet"
_LEAFLET_MODULE = "js_lib_leaflet"
_LEAFLET_DIR = "static/js_lib_leaflet"

_STAT_NAMES = ("count", "sum", "mean")
_HTML_SUFFIXES = (".html", ".htm")


# ------------------------------------------------------------------------- public API


def explore_release(
    cells: pd.DataFrame,
    manifest: Mapping[str, Any],
    *,
    column: str = "count",
    category: str | None = None,
    tiles: Any = None,
    attr: str | None = None,
    title: str | None = None,
    boundaries: Any = None,
    width: str | int = "100%",
    height: str | int = "100%",
    offline: bool = True,
    resolution: int | None = None,
) -> folium.Map:
    """An interactive map (a :class:`folium.Map`) of one published statistic of a release.

    Parameters
    ----------
    cells : geopandas.GeoDataFrame
        The published cell table (EPSG:4326), as for :func:`dpmap.maps.static.plot_release`.
    manifest : mapping
        The release manifest. ``privacy.epsilon``, ``privacy.delta``, ``privacy.measure``,
        ``privacy.statement``, ``created``, ``resolution`` and ``title`` are read.
    column : str, default "count"
        The statistic to colour the hexagons by (``"count"``, ``"sum"``, ``"mean"``, ...).
    category : str, optional
        Required when the table has a ``category`` column: the category to map.
    tiles : str or folium.TileLayer, optional
        A base map (any ``tiles`` accepted by :class:`folium.Map`, e.g.
        ``"OpenStreetMap"``). Default: none, so the map needs no network at all; with
        tiles, whoever opens the map fetches them from the internet.
    attr : str, optional
        Attribution of custom ``tiles`` (a URL template needs one).
    title : str, optional
        Title shown on the map. Defaults to ``manifest["title"]``, else a generic title.
    boundaries : geopandas.GeoDataFrame or geopandas.GeoSeries, optional
        Outlines (e.g. the public region or administrative areas) drawn on top of the
        hexagons. They must have a CRS.
    width, height : str or int, default "100%"
        Size of the map element (as for :class:`folium.Map`).
    resolution : int, optional
        For a hierarchical release (several H3 resolutions), the level to map; default
        the finest. An adaptive release's leaves are mapped together.
    offline : bool, default True
        Leaflet is always inlined, and by default nothing else is linked: the page
        makes no network request (unless `tiles` are given). folium's own markers,
        popups and plugins need the assets folium normally links from CDNs (jQuery,
        Bootstrap, Font Awesome, ...): pass ``offline=False`` to link them as folium
        does, if you add such elements to the returned map. :func:`write_html` is
        always offline.

    Returns
    -------
    folium.Map
        Displays inline in a notebook; :func:`write_html` writes the offline page.

    Raises
    ------
    dpmap.errors.SpecError
        If `column`, `category`, `boundaries`, `tiles` or the table cannot be used.
    dpmap.errors.MissingDependencyError
        If folium or the Leaflet files are not installed.
    """
    _import_folium()  # a clear error before any work when folium is missing
    page = _prepare(
        cells, manifest, column, category, title, boundaries, tiles is not None, resolution
    )
    return _page_map(page, tiles, attr, width, height, offline)


def _page_map(
    page: dict[str, Any], tiles: Any, attr: Any, width: Any, height: Any, offline: bool
) -> folium.Map:
    """The folium map of a prepared page (one release, or several periods)."""
    folium_mod = _import_folium()
    fmap = _new_map(folium_mod, page["config"]["bounds"], tiles, attr, width, height)
    _keep_leaflet_only(fmap, offline)
    root: Any = fmap.get_root()
    root.title = html.escape(page["title"])
    fmap.add_child(_element_classes()[1](page, fmap.get_name()), name="dpmap_release")
    return fmap


def _new_map(
    folium_mod: Any,
    bounds: list[list[float]],
    tiles: Any,
    attr: str | None,
    width: str | int,
    height: str | int,
) -> folium.Map:
    """A folium.Map centred on `bounds` [[south, west], [north, east]], zoomed to show them."""
    (south, west), (north, east) = bounds
    span = max(east - west, (north - south) / max(math.cos(math.radians(north)), 0.05), 1e-6)
    try:
        return folium_mod.Map(
            location=[(south + north) / 2.0, (west + east) / 2.0],
            zoom_start=int(min(max(math.log2(360.0 / span), 1), 18)),
            tiles=tiles,
            attr=attr,
            width=width,
            height=height,
            zoom_control=False,  # added by our script, top right (away from the title)
            zoom_snap=0.25 if tiles is not None else 0.1,
            zoom_delta=0.5,
        )
    except (ValueError, TypeError) as exc:
        raise SpecError(f"cannot make the map with tiles={tiles!r}: {exc}") from None


def _keep_leaflet_only(fmap: folium.Map, offline: bool) -> None:
    """Offline: drop folium's CDN links but Leaflet's, which are replaced by inlined files.

    Leaflet comes inlined from an installed package, in place of folium's CDN links
    (kept here by name only); folium's other assets are not used by anything drawn here.
    """
    keep_js, keep_css = ({"leaflet"}, {"leaflet_css"}) if offline else (None, None)
    fmap.default_js = [(n, u) for n, u in fmap.default_js if keep_js is None or n in keep_js]
    fmap.default_css = [(n, u) for n, u in fmap.default_css if keep_css is None or n in keep_css]


def html_document(
    cells: pd.DataFrame,
    manifest: Mapping[str, Any],
    *,
    column: str = "count",
    category: str | None = None,
    tiles: Any = None,
    attr: str | None = None,
    title: str | None = None,
    boundaries: Any = None,
    resolution: int | None = None,
) -> str:
    """The self-contained HTML page of :func:`explore_release`, as a string."""
    fmap = explore_release(
        cells,
        manifest,
        column=column,
        category=category,
        tiles=tiles,
        attr=attr,
        title=title,
        boundaries=boundaries,
        offline=True,
        resolution=resolution,
    )
    return offline_document(fmap)


def offline_document(fmap: folium.Map) -> str:
    """The page of a map made here with ``offline=True``, as a string; an error if it would
    link any external file."""
    text = str(fmap.get_root().render())
    if re.search(r"<(script|link)\b[^>]*\b(src|href)=", text):  # pragma: no cover
        raise SpecError("the interactive map would link an external file; please report this")
    return text


def save_html(document: str, path: str | os.PathLike[str]) -> Path:
    """Write an HTML `document` to `path` (``.html``/``.htm``) atomically."""

    out = check_html_path(path)
    try:
        with atomic_write([out]) as (tmp,):
            tmp.write_text(document, encoding="utf-8")
    except OSError as exc:
        if isinstance(exc, DataFileError):
            raise
        raise DataFileError(f"cannot save the map to {str(out)!r}: {exc}") from exc
    return out


def write_html(
    cells: pd.DataFrame,
    manifest: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    column: str = "count",
    category: str | None = None,
    tiles: Any = None,
    attr: str | None = None,
    title: str | None = None,
    boundaries: Any = None,
    resolution: int | None = None,
) -> Path:
    """Save the interactive map as one self-contained HTML file (works offline).

    The file is written to a temporary name beside `path` and renamed when complete;
    on any error nothing is written. Arguments as for :func:`explore_release`.

    Raises
    ------
    dpmap.errors.SpecError
        If `path` does not end in ``.html`` (or ``.htm``), or an argument is unusable.
    dpmap.errors.DataFileError
        If the folder of `path` does not exist or the file cannot be written.
    """
    check_html_path(path)
    document = html_document(
        cells,
        manifest,
        column=column,
        category=category,
        tiles=tiles,
        attr=attr,
        title=title,
        boundaries=boundaries,
        resolution=resolution,
    )
    return save_html(document, path)


def check_html_path(path: str | os.PathLike[str]) -> Path:
    """`path` as a Path, or a SpecError if it does not end in .html / .htm."""
    out = Path(os.fspath(path))
    if out.suffix.lower() not in _HTML_SUFFIXES:
        raise SpecError(
            f"the interactive map is saved as HTML only, but the path {str(out)!r} has the "
            f"suffix {out.suffix or '(none)'!r}; use a path ending in '.html'"
        )
    return out


def explore_layers(
    layers: Sequence[MapLayer],
    legend: MapLayer,
    labels: Sequence[str],
    manifests: Sequence[Mapping[str, Any]],
    facts: CaptionFacts,
    *,
    boundaries: Any = None,
    tiles: Any = None,
    attr: str | None = None,
    width: str | int = "100%",
    height: str | int = "100%",
    offline: bool = True,
) -> folium.Map:
    """An interactive map of several periods with a period slider (a :class:`folium.Map`).

    The hexagons of every period (their union) are embedded once; each period's values,
    margins, suppressed flags and colours (on the shared scale of `legend`, see
    :func:`dpmap.maps.layers.shared_scale`) are embedded per period, and the slider in the
    title box switches which period is shown. Tooltips show the period's value ± its 95%
    margin; a hexagon a period does not publish is drawn as "no published value".
    """
    _import_folium()  # a clear error before any work when folium is missing
    page = _prepare_periods(layers, legend, labels, manifests, facts, boundaries, tiles)
    return _page_map(page, tiles, attr, width, height, offline)


# ------------------------------------------------------------------- dependencies


def _import_folium() -> Any:
    try:
        import folium
    except ImportError:
        raise missing_extra("folium", "plot") from None
    return folium


@functools.cache
def _element_classes() -> tuple[type, type]:
    """branca elements that insert text verbatim (never re-parsed as Jinja templates)."""
    from branca.element import Element, MacroElement

    class RawHTML(Element):
        def __init__(self, text: str) -> None:
            super().__init__()
            self._text = text

        def render(self, **kwargs: Any) -> str:
            return self._text

    class ReleaseLayer(MacroElement):
        """The hexagons, legend and caption; adds inlined Leaflet to the page head."""

        def __init__(self, page: dict[str, Any], map_name: str) -> None:
            super().__init__()
            self._name = "DpmapRelease"
            self._head = _head_html(map_name)
            self._body = _body_html(page)
            self._script = _script_js(page, map_name)

        def render(self, **kwargs: Any) -> str:
            figure: Any = self.get_root()
            # under the keys of folium's Leaflet links (<script src=CDN>, <link href=CDN>):
            # they are replaced in place, so Leaflet still loads before folium's plugins
            js, css = _leaflet_assets()
            figure.header.add_child(RawHTML(js), name="leaflet")
            figure.header.add_child(RawHTML(css), name="leaflet_css")
            figure.header.add_child(RawHTML(self._head), name=self.get_name() + "_head")
            figure.html.add_child(RawHTML(self._body), name=self.get_name())
            figure.script.add_child(RawHTML(self._script), name=self.get_name())
            return ""

    return RawHTML, ReleaseLayer


@functools.cache
def _leaflet_assets() -> tuple[str, str]:
    """Leaflet's JS with its licence, and its CSS (images as data: URIs), inline."""
    from importlib import metadata, resources

    try:
        folder = resources.files(_LEAFLET_MODULE).joinpath(_LEAFLET_DIR)
        js = folder.joinpath("leaflet.js").read_text(encoding="utf-8")
        css = folder.joinpath("leaflet.css").read_text(encoding="utf-8")
    except (ImportError, OSError):
        raise missing_extra(LEAFLET_PACKAGE, "plot") from None

    def inline_image(match: re.Match[str]) -> str:
        name = match.group(1)
        data = folder.joinpath("images", name).read_bytes()
        return f"url(data:image/png;base64,{base64.b64encode(data).decode('ascii')})"

    css = re.sub(r"url\(images/([\w.-]+\.png)\)", inline_image, css)
    # the source map is not shipped with the page (and browsers would try to fetch it)
    js = re.sub(r"\n//# sourceMappingURL=\S+\s*$", "\n", js)
    try:
        licence = metadata.distribution(LEAFLET_PACKAGE).read_text("LICENSE") or ""
    except metadata.PackageNotFoundError:  # pragma: no cover - files found, metadata not
        licence = ""
    licence = licence.replace("*/", "* /").strip()
    for text, closing in ((js, "</script"), (css, "</style")):
        if closing in text.lower():  # pragma: no cover - would break the page
            raise SpecError(f"the installed Leaflet files contain {closing!r}; cannot inline them")
    return (
        f"<script>\n/* Leaflet, inlined from the {LEAFLET_PACKAGE} package. Licence:\n\n"
        f"{licence}\n*/\n{js}\n</script>\n",
        f"<style>\n/* Leaflet CSS, inlined from the {LEAFLET_PACKAGE} package */\n{css}\n</style>\n",
    )


# ------------------------------------------------------------------------- the data


def _prepare(
    cells: pd.DataFrame,
    manifest: Mapping[str, Any],
    column: str,
    category: str | None,
    title: str | None,
    boundaries: Any,
    with_tiles: bool,
    resolution: int | None,
) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data and escaped HTML snippets."""
    # the same rows, values and colour scale as the static map (dpmap.maps.layers)
    layer = map_layer(
        cells, manifest, column=column, category=category, resolution=resolution, title=title
    )
    polygons = cell_polygons(layer.table)
    if not any(len(rings) for rings in polygons):
        raise SpecError("the release table has no cell geometries to map")
    lines = boundary_lines(boundaries) if boundaries is not None else None
    stats = _stats_of(layer)
    zone = zone_column(dict(manifest))
    features = _features(layer, polygons, _tooltip_columns(layer.table, stats), zone or "cell")
    config = _base_config(features, polygons, lines, layer, zone, with_tiles)
    return {
        "config": config,
        "title": layer.title,
        "title_html": _title_html(layer.title, layer.stat_label, category),
        "legend_html": _legend_html(layer),
        "caption_html": _caption_html(caption_facts(manifest, layer), manifest),
        "manifest": _finite(dict(manifest)),
    }


def _prepare_periods(
    layers: Sequence[MapLayer],
    legend: MapLayer,
    labels: Sequence[str],
    manifests: Sequence[Mapping[str, Any]],
    facts: CaptionFacts,
    boundaries: Any,
    tiles: Any,
) -> dict[str, Any]:
    """The page of several periods: the union of their hexagons once, values per period."""
    zone = zone_column(dict(manifests[0]))
    key = zone or "cell"
    keys: dict[str, int] = {}
    polygons: list[list[np.ndarray]] = []
    for layer in layers:
        for k, rings in zip(_keys_of(layer, key), cell_polygons(layer.table), strict=True):
            if k not in keys:
                keys[k] = len(keys)
                polygons.append(rings)
    if not any(len(rings) for rings in polygons):
        raise SpecError("the release tables have no cell geometries to map")
    features = [
        {"type": "Feature", "geometry": _geometry(rings), "properties": {"cell": k, "i": i}}
        for (k, i), rings in zip(keys.items(), polygons, strict=True)
    ]
    lines = boundary_lines(boundaries) if boundaries is not None else None
    config = _base_config(features, polygons, lines, legend, zone, tiles is not None)
    config["periods"] = _period_columns(layers, labels, keys, key)
    absent = any(-1 in per for per in config["periods"].pop("rows"))
    legend_html = _legend_html(legend)
    if absent and not legend.missing.any():
        legend_html += (
            '<div class="dpmap-legend-row"><span class="dpmap-swatch dpmap-swatch-missing">'
            f"</span>{html.escape(MISSING_LABEL)}</div>"
        )
    title = legend.title
    return {
        "config": config,
        "title": title,
        "title_html": _title_html(title, legend.stat_label, legend.category) + _slider_html(labels),
        "legend_html": legend_html,
        "caption_html": _caption_html(facts, manifests[0]),
        "manifest": {"periods": list(labels), "manifests": [_finite(dict(m)) for m in manifests]},
    }


def _keys_of(layer: MapLayer, key: str) -> list[str]:
    table = layer.table
    return table[key].astype(str).tolist() if key in table.columns else [""] * len(table)


def _period_columns(
    layers: Sequence[MapLayer], labels: Sequence[str], keys: dict[str, int], key: str
) -> dict[str, Any]:
    """Per period, aligned to the features (`keys`): the tooltip numbers (None where
    suppressed or not published), the suppressed flags (0/1) and the fill colours."""
    n = len(keys)
    stats = _stats_of(layers[0])
    columns: dict[str, list[list[Any]]] = {}
    suppressed, fills, rows = [], [], []
    for layer in layers:
        where = np.full(n, -1, dtype=np.int64)  # the layer's row of each feature
        where[[keys[k] for k in _keys_of(layer, key)]] = np.arange(len(layer.table))
        values = _tooltip_columns(layer.table, stats)
        for name, col in values.items():
            columns.setdefault(name, []).append(
                [None if r < 0 or layer.suppressed[r] else col[r] for r in where.tolist()]
            )
        colours = ramp_colours(np.where(layer.shown, layer.colour_values, np.nan), layer.vmax)
        suppressed.append([int(r >= 0 and bool(layer.suppressed[r])) for r in where.tolist()])
        fills.append([None if r < 0 else colours[r] for r in where.tolist()])
        rows.append(where.tolist())
    return {
        "labels": [str(lab) for lab in labels],
        "columns": columns,
        "suppressed": suppressed,
        "fill": fills,
        "rows": rows,
    }


def _slider_html(labels: Sequence[str]) -> str:
    """The period slider and its label, under the title."""
    first = html.escape(str(labels[0]))
    return (
        '<div class="dpmap-period"><label for="dpmap-period">period</label>'
        f'<input type="range" class="dpmap-period-slider" id="dpmap-period" min="0" '
        f'max="{len(labels) - 1}" step="1" value="0" aria-valuetext="{first}">'
        f'<output class="dpmap-period-label" for="dpmap-period">{first}</output></div>'
    )


def _stats_of(layer: MapLayer) -> list[str]:
    """The statistics a tooltip shows: the mapped column first."""
    column = layer.column
    return [column] + [s for s in _STAT_NAMES if s in layer.table.columns and s != column]


def _base_config(
    features: list[dict[str, Any]],
    polygons: list[list[np.ndarray]],
    lines: list[np.ndarray] | None,
    layer: MapLayer,
    zone: str | None,
    with_tiles: bool,
) -> dict[str, Any]:
    """The page's script configuration: the hexagons, the boundaries and the texts."""
    west, south, east, north = cell_bounds(polygons)
    category = layer.category
    return {
        "data": {"type": "FeatureCollection", "features": features},
        "boundaries": _boundaries_geojson(lines) if lines else None,
        "bounds": [[south, west], [north, east]],
        "column": layer.column,
        "stats": _stats_of(layer),
        "fillOpacity": 0.75 if with_tiles else 1.0,
        "suppressed": {"face": SUPPRESSED_FACE, "hatch": SUPPRESSED_HATCH},
        "missing": {"face": MISSING_FACE, "edge": MISSING_EDGE},
        "boundaryColor": BOUNDARY_COLOR,
        "suppressedText": SUPPRESSED_LABEL,
        "missingText": MISSING_LABEL,
        "placeLabel": "zone" if zone is not None else "H3 cell",
        "categoryHtml": (
            f" · category {html.escape(str(category))}" if category is not None else ""
        ),
        "periods": None,
    }


def _tooltip_columns(table: pd.DataFrame, stats: list[str]) -> dict[str, list[Any]]:
    """The statistics and their margins of error shown in the tooltips, JSON-ready."""
    numeric = {}
    for name in stats:
        numeric[name] = numeric_column(table, name)
        moe = f"{name}_moe"
        if moe in table.columns and moe != stats[0]:
            numeric[moe] = numeric_column(table, moe)
    return {name: [_json_number(v) for v in arr.tolist()] for name, arr in numeric.items()}


def _features(
    layer: MapLayer,
    polygons: list[list[np.ndarray]],
    columns: dict[str, list[Any]],
    key: str = "cell",
) -> list[dict[str, Any]]:
    """One GeoJSON feature per row: its cell (or zone name: ``key``), numbers (none if
    suppressed) and colour."""
    table, suppressed = layer.table, layer.suppressed
    fills = ramp_colours(np.where(layer.shown, layer.colour_values, np.nan), layer.vmax)
    cell_ids = table[key].astype(str).tolist() if key in table.columns else [""] * len(table)
    features = []
    for i, rings in enumerate(polygons):
        props: dict[str, Any] = {"cell": cell_ids[i]}
        for name, col in columns.items():
            props[name] = None if suppressed[i] else col[i]  # a suppressed cell shows no number
        props["suppressed"] = bool(suppressed[i])
        if fills[i] is not None:
            props["fill"] = fills[i]
        features.append({"type": "Feature", "geometry": _geometry(rings), "properties": props})
    return features


def _finite(obj: Any) -> Any:
    """`obj` with NaN and infinite floats as None (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_number(v: float) -> float | int | None:
    if not math.isfinite(v):
        return None
    if v == int(v) and abs(v) < 2**53:
        return int(v)
    return float(f"{v:.6g}")


def _ring(ring: np.ndarray) -> list[list[float]]:
    coords = np.round(np.asarray(ring, dtype=float)[:, :2], COORD_DECIMALS)
    if len(coords) and not np.array_equal(coords[0], coords[-1]):
        coords = np.vstack([coords, coords[:1]])  # GeoJSON rings are closed
    rows: list[list[float]] = coords.tolist()
    return rows


def _geometry(rings: list[np.ndarray]) -> dict[str, Any]:
    if len(rings) == 1:
        return {"type": "Polygon", "coordinates": [_ring(rings[0])]}
    return {"type": "MultiPolygon", "coordinates": [[_ring(r)] for r in rings]}


def _boundaries_geojson(lines: list[np.ndarray]) -> dict[str, Any]:
    coords = [np.round(np.asarray(line)[:, :2], COORD_DECIMALS).tolist() for line in lines]
    return {"type": "MultiLineString", "coordinates": coords}


# -------------------------------------------------------------------------- texts


#: The legend's colour ramp: x offset (room for the "below 0" arrow) and width, in px.
_RAMP_X = 9
_RAMP_WIDTH = 210


def _ramp_svg(*, below: bool, above: bool) -> str:
    """The colour ramp as inline SVG, with arrows for values beyond the scale."""
    x0, x1, h = _RAMP_X, _RAMP_X + _RAMP_WIDTH, 14
    stops = "".join(
        f'<stop offset="{i / (len(YLORRD) - 1):.4f}" stop-color="{c}"/>'
        for i, c in enumerate(YLORRD)
    )
    arrows = ""
    if below:
        arrows += (
            f'<polygon points="{x0},0.5 0.5,{h / 2} {x0},{h - 0.5}" fill="{YLORRD[0]}" '
            f'stroke="{LEGEND_EDGE}"/>'
        )
    if above:
        arrows += (
            f'<polygon points="{x1},0.5 {x1 + x0 - 0.5},{h / 2} {x1},{h - 0.5}" '
            f'fill="{YLORRD[-1]}" stroke="{LEGEND_EDGE}"/>'
        )
    return (
        f'<svg class="dpmap-ramp" width="{x1 + x0}" height="{h}" role="img" '
        f'aria-label="colour scale">'
        f'<defs><linearGradient id="dpmap-ramp-gradient">{stops}</linearGradient></defs>'
        f'<rect x="{x0}" y="0.5" width="{_RAMP_WIDTH}" height="{h - 1}" '
        f'fill="url(#dpmap-ramp-gradient)" stroke="{LEGEND_EDGE}"/>{arrows}</svg>'
    )


def _nice_ticks(vmax: float) -> list[float]:
    raw = vmax / 4.0
    exponent = math.floor(math.log10(raw))
    step = 10.0**exponent * min(
        (m for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * 10.0**exponent >= raw * 0.999),
        default=10.0,
    )
    count = math.floor(vmax / step * (1 + 1e-9))
    return [round(i * step, 12) for i in range(count + 1)]


def _title_html(title: str, stat_label: str, category: str | None) -> str:
    sub = stat_label
    if category is not None:
        sub = f"{sub} · category: {category}"
    return (
        f'<div class="dpmap-title-main">{html.escape(title)}</div>'
        f'<div class="dpmap-title-sub">{html.escape(sub)}</div>'
    )


def _legend_html(layer: MapLayer) -> str:
    """The colour ramp with ticks, notes on clipped values, and the grey swatches."""
    vmax = layer.vmax
    parts = [f'<div class="dpmap-legend-title">{html.escape(layer.stat_label)}</div>']
    if layer.any_shown:
        parts.append(_ramp_svg(below=layer.below, above=layer.above))
        ticks = "".join(
            f'<span style="left:{_RAMP_X + _RAMP_WIDTH * t / vmax:.1f}px">'
            f"{html.escape(format_number(t, compact=True))}</span>"
            for t in _nice_ticks(vmax)
        )
        parts.append(f'<div class="dpmap-ticks">{ticks}</div>')
        notes = []
        if layer.below:
            notes.append("below 0: coloured as 0")
        if layer.above:
            notes.append(f"above {format_number(vmax)}: darkest colour")
        if notes:
            parts.append(f'<div class="dpmap-legend-note">{html.escape("; ".join(notes))}</div>')
    else:
        parts.append('<div class="dpmap-legend-note">no hexagon has a published value</div>')
    if layer.suppressed.any():
        parts.append(
            '<div class="dpmap-legend-row"><span class="dpmap-swatch dpmap-swatch-suppressed">'
            f"</span>{html.escape(SUPPRESSED_LABEL)}</div>"
        )
    if layer.missing.any():
        parts.append(
            '<div class="dpmap-legend-row"><span class="dpmap-swatch dpmap-swatch-missing">'
            f"</span>{html.escape(MISSING_LABEL)}</div>"
        )
    return "".join(parts)


def _caption_html(facts: CaptionFacts, manifest: Mapping[str, Any]) -> str:
    """The privacy guarantee, reading notes and the manifest's privacy statement."""
    phrase = facts.guarantee.strip("()")
    grid = facts.grid or f"H3 resolution {facts.resolution}"
    headline = f"ε = {facts.epsilon}, δ = {facts.delta} · {grid} · "
    headline += facts.created
    notes = ["Each value is shown ± its 95% margin of error."]
    if facts.scale:
        notes.append(facts.scale + (f"; {facts.negative}." if facts.negative else "."))
    if facts.hidden:
        notes.append(facts.hidden[0].upper() + facts.hidden[1:] + ".")
    notes.append(facts.noise[0].upper() + facts.noise[1:] + ".")
    statement = str((manifest.get("privacy", {}) or {}).get("statement") or "").strip()
    out = [
        f'<div class="dpmap-caption-head">Differentially private release ({html.escape(phrase)}):'
        f" {html.escape(headline)}</div>",
        f'<div class="dpmap-notes">{html.escape(" ".join(notes))}</div>',
    ]
    if statement:  # open on large maps (and in print), a click away on small ones
        out.append(
            '<details class="dpmap-statement" open><summary>Privacy statement</summary>'
            f"<div>{html.escape(statement)}</div></details>"
        )
    return "".join(out)


# ------------------------------------------------------------------------- the page


def script_json(obj: Any) -> str:
    """JSON that is safe inside <script>: nothing in it can end the element."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _head_html(map_name: str) -> str:
    replacements = {
        "__MAP__": map_name,
        "__BG__": BACKGROUND,
        "__RAMP_TOTAL__": str(_RAMP_X + _RAMP_WIDTH + _RAMP_X),
        "__SUPPRESSED_FACE__": SUPPRESSED_FACE,
        "__SUPPRESSED_HATCH__": SUPPRESSED_HATCH,
        "__LEGEND_EDGE__": LEGEND_EDGE,
        "__MISSING_FACE__": MISSING_FACE,
        "__MISSING_EDGE__": MISSING_EDGE,
    }
    text = _HEAD_TEMPLATE
    for key, value in replacements.items():
        text = text.replace(key, value)
    return text


def _body_html(page: dict[str, Any]) -> str:
    return (
        '<noscript><p style="padding:1em">This interactive map needs JavaScript.</p></noscript>\n'
        '<script type="application/json" id="dpmap-manifest">'
        f"{script_json(page['manifest'])}</script>\n"
    )


def _script_js(page: dict[str, Any], map_name: str) -> str:
    config = dict(page["config"])
    config["titleHtml"] = page["title_html"]
    config["legendHtml"] = page["legend_html"]
    config["captionHtml"] = page["caption_html"]
    # the map's variable name is set by folium (map_<hex>), never from user input
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", map_name):  # pragma: no cover
        raise SpecError(f"unexpected folium map name {map_name!r}")
    return _SCRIPT_TEMPLATE.replace("__MAP__", map_name).replace("__CONFIG__", script_json(config))


_HEAD_TEMPLATE = """<style>
#__MAP__.leaflet-container { background: __BG__; font-size: 0.75rem; }
#__MAP__ .dpmap-box {
  background: rgba(255, 255, 255, 0.95); color: #222; border-radius: 4px;
  box-shadow: 0 1px 4px rgba(0, 0, 0, 0.3); padding: 8px 11px;
  font: 12px/1.45 "Helvetica Neue", Arial, "Liberation Sans", "DejaVu Sans", sans-serif;
}
#__MAP__ .dpmap-title { max-width: 560px; }
#__MAP__ .dpmap-title-main { font-size: 17px; font-weight: 600; line-height: 1.3; }
#__MAP__ .dpmap-title-sub { color: #555; margin-top: 1px; }
#__MAP__ .dpmap-legend { width: 250px; }
#__MAP__ .dpmap-legend-title { font-weight: 600; margin-bottom: 5px; }
#__MAP__ .dpmap-ramp { display: block; }
#__MAP__ .dpmap-ticks { position: relative; height: 17px; width: __RAMP_TOTAL__px;
  font-size: 11px; color: #333; }
#__MAP__ .dpmap-ticks span { position: absolute; top: 0; transform: translateX(-50%);
  white-space: nowrap; }
#__MAP__ .dpmap-legend-note { color: #555; font-size: 11px; margin-top: 2px; }
#__MAP__ .dpmap-legend-row { margin-top: 6px; white-space: nowrap; }
#__MAP__ .dpmap-swatch { display: inline-block; width: 22px; height: 13px;
  vertical-align: -2px; margin-right: 7px; box-sizing: border-box; }
#__MAP__ .dpmap-swatch-suppressed { border: 1px solid __LEGEND_EDGE__;
  background: repeating-linear-gradient(135deg, __SUPPRESSED_FACE__ 0 3.6px,
    __SUPPRESSED_HATCH__ 3.6px 4.8px); }
#__MAP__ .dpmap-swatch-missing { border: 1px solid __MISSING_EDGE__;
  background: __MISSING_FACE__; }
#__MAP__ .dpmap-caption { max-width: 600px; font-size: 11px; color: #333; }
#__MAP__ .dpmap-caption-head { font-weight: 600; color: #222; margin-bottom: 3px; }
#__MAP__ .dpmap-notes { margin-bottom: 2px; }
#__MAP__ .dpmap-statement summary { cursor: pointer; color: #333; }
#__MAP__ .dpmap-statement div { margin-top: 2px; }
#__MAP__ .dpmap-notes { color: #555; }
#__MAP__ .dpmap-tooltip { font: 12px/1.5 "Helvetica Neue", Arial, "Liberation Sans",
  "DejaVu Sans", sans-serif; }
#__MAP__ .dpmap-tooltip .dpmap-cell { color: #666; font-size: 11px; }
#__MAP__ .dpmap-tooltip .dpmap-suppressed { color: #444; }
#__MAP__ .dpmap-period { margin-top: 6px; display: flex; align-items: center; gap: 8px; }
#__MAP__ .dpmap-period-slider { flex: 1; min-width: 180px; }
#__MAP__ .dpmap-period-label { font-weight: 600; min-width: 4.5em; }
@media print { #__MAP__ .leaflet-control-zoom { display: none; } }
</style>
"""

_SCRIPT_TEMPLATE = """
(function () {
  "use strict";
  var map = __MAP__;
  var cfg = __CONFIG__;

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }
  function fmt(x) {
    if (x === 0) return "0";
    if (Math.abs(x) >= 1000 || Number.isInteger(x)) return Math.round(x).toLocaleString("en-US");
    return String(Number(x.toPrecision(3)));
  }
  function fmtMoe(x) {  // margins of error: 2 significant digits (whole numbers from 100)
    if (Math.abs(x) >= 100) return Math.round(x).toLocaleString("en-US");
    return x === 0 ? "0" : String(Number(x.toPrecision(2)));
  }

  // suppressed cells: light grey with "///" hatching, drawn with a canvas pattern
  function hatchPattern() {
    var ratio = window.devicePixelRatio || 1, size = Math.round(7 * ratio);
    var tile = document.createElement("canvas");
    tile.width = tile.height = size;
    var g = tile.getContext("2d");
    g.fillStyle = cfg.suppressed.face;
    g.fillRect(0, 0, size, size);
    g.strokeStyle = cfg.suppressed.hatch;
    g.lineWidth = Math.max(1, ratio);
    g.beginPath();
    g.moveTo(0, size); g.lineTo(size, 0);
    g.moveTo(-size / 2, size / 2); g.lineTo(size / 2, -size / 2);
    g.moveTo(size / 2, size * 1.5); g.lineTo(size * 1.5, size / 2);
    g.stroke();
    var pattern = g.createPattern(tile, "repeat");
    if (pattern && pattern.setTransform && window.DOMMatrix) {
      pattern.setTransform(new DOMMatrix().scaleSelf(1 / ratio, 1 / ratio));
    }
    return pattern || cfg.suppressed.face;
  }
  var hatch = hatchPattern();

  function style(feature) {
    var p = feature.properties;
    if (p.suppressed) {
      return {fillColor: hatch, fillOpacity: 1, color: "#ffffff", weight: 0.5, opacity: 0.9};
    }
    if (!p.fill) {
      return {fillColor: cfg.missing.face, fillOpacity: 1, color: cfg.missing.edge, weight: 0.6, opacity: 1};
    }
    return {fillColor: p.fill, fillOpacity: cfg.fillOpacity, color: "#ffffff", weight: 0.5, opacity: 0.9};
  }

  function tooltip(layer) {
    var p = layer.feature.properties, lines = [];
    if (p.suppressed) {
      lines.push('<span class="dpmap-suppressed">' + esc(cfg.suppressedText) + "</span>");
    } else {
      cfg.stats.forEach(function (s) {
        var v = p[s], m = p[s + "_moe"];
        var text = esc(s) + ": " + (v == null ? esc(cfg.missingText)
          : fmt(v) + (m == null ? "" : " \\u00b1 " + fmtMoe(m)));
        lines.push(s === cfg.column ? "<b>" + text + "</b>" : text);
      });
    }
    lines.push('<span class="dpmap-cell">' + esc(cfg.placeLabel) + " " + esc(p.cell) + cfg.categoryHtml +
               (p.period == null ? "" : " \u00b7 period " + esc(p.period)) + "</span>");
    return lines.join("<br>");
  }

  var renderer = L.canvas({padding: 0.5});
  var hexagons = L.geoJSON(cfg.data, {renderer: renderer, style: style});
  hexagons.bindTooltip(tooltip, {sticky: true, direction: "top", offset: [0, -12],
                                 className: "dpmap-tooltip"});
  hexagons.on("mouseover", function (e) {
    e.layer.setStyle({color: "#1a1a1a", weight: 2, opacity: 1});
    e.layer.bringToFront();
  });
  hexagons.on("mouseout", function (e) { hexagons.resetStyle(e.layer); });
  hexagons.addTo(map);

  if (cfg.boundaries) {
    var pane = map.createPane("dpmapBoundaries");
    pane.style.zIndex = 450;
    pane.style.pointerEvents = "none";
    L.geoJSON(cfg.boundaries, {pane: "dpmapBoundaries", interactive: false,
      style: {color: cfg.boundaryColor, weight: 1.2, opacity: 0.9, fill: false}}).addTo(map);
  }

  // several periods: the slider in the title box shows one period's values at a time
  function periodSlider(per) {
    var slider = title.querySelector("input.dpmap-period-slider");
    var label = title.querySelector(".dpmap-period-label");
    function show(k) {
      hexagons.eachLayer(function (layer) {
        var p = layer.feature.properties, i = p.i;
        Object.keys(per.columns).forEach(function (name) { p[name] = per.columns[name][k][i]; });
        p.suppressed = per.suppressed[k][i] === 1;
        p.fill = per.fill[k][i];
        p.period = per.labels[k];
        hexagons.resetStyle(layer);
      });
      label.textContent = per.labels[k];
      slider.setAttribute("aria-valuetext", per.labels[k]);
      map.getContainer().setAttribute("data-dpmap-period", per.labels[k]);
    }
    slider.addEventListener("input", function () { show(Number(slider.value)); });
    show(Number(slider.value));
  }

  function box(position, className, content) {
    var control = L.control({position: position});
    control.onAdd = function () {
      var div = L.DomUtil.create("div", "dpmap-box " + className);
      div.innerHTML = content;
      L.DomEvent.disableClickPropagation(div);
      L.DomEvent.disableScrollPropagation(div);
      return div;
    };
    return control.addTo(map);
  }
  var title = box("topleft", "dpmap-title", cfg.titleHtml).getContainer();
  L.control.zoom({position: "topright"}).addTo(map);
  var caption = box("bottomleft", "dpmap-caption", cfg.captionHtml).getContainer();
  L.control.scale({position: "bottomleft", imperial: false}).addTo(map);
  var legend = box("bottomright", "dpmap-legend", cfg.legendHtml);
  if (cfg.periods) periodSlider(cfg.periods);
  map.attributionControl.addAttribution("dpmap \\u00b7 H3");

  // small maps (a notebook cell, a phone): the legend goes under the zoom buttons and
  // the privacy statement starts folded; large ones show everything
  function isNarrow() { return map.getSize().x < 720; }
  function layout() {
    var width = map.getSize().x, narrow = isNarrow();
    var position = narrow ? "topright" : "bottomright";
    if (legend.getPosition() !== position) legend.setPosition(position);
    title.style.maxWidth = Math.max(160, Math.min(560, width - (narrow ? 70 : 120))) + "px";
    caption.style.maxWidth = Math.max(180, Math.min(600, width - (narrow ? 40 : 320))) + "px";
  }
  layout();
  map.on("resize", layout);
  var statement = caption.querySelector("details");
  if (statement) {
    var size = map.getSize();
    statement.open = size.x >= 900 && size.y >= 650;
    window.addEventListener("beforeprint", function () { statement.open = true; });
  }

  // fit the hexagons in the part of the map not covered by the title, legend and caption
  function fit() {
    var size = map.getSize(), legendBox = legend.getContainer();
    var top = title.offsetHeight + 20, bottom = caption.offsetHeight + 30;
    if (isNarrow()) top = Math.max(top, legendBox.offsetHeight + 90);  // under the zoom buttons
    else bottom = Math.max(bottom, legendBox.offsetHeight + 30);
    if (size.y - top - bottom < 160) { top = 10; bottom = 10; }
    map.fitBounds(cfg.bounds, {paddingTopLeft: [20, top], paddingBottomRight: [20, bottom],
                               animate: false});
  }
  fit();
  map.setMaxZoom(Math.max(18, Math.ceil(map.getZoom())));
})();
"""
