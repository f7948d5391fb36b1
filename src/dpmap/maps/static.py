"""Static maps of a published dpmap release, drawn with matplotlib.

:func:`plot_release` turns the published cell table of a release into a choropleth
of one statistic per H3 hexagon, with suppressed cells drawn visibly differently from
zero, an optional second panel with the relative margin of error, and a caption that
states the privacy guarantee.

The functions here only ever look at the *published* table and manifest: plotting a
release spends no privacy budget and never touches the raw points.

matplotlib is an optional dependency (``pip install 'dpmap[plot]'``); it is imported
lazily, and the figure is built with :class:`matplotlib.figure.Figure` and the Agg
canvas directly, so no pyplot global state is created or changed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dpmap.errors import DataFileError, SpecError, missing_extra

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap, Normalize
    from matplotlib.figure import Figure

__all__ = ["plot_release"]

#: Colormap of the main statistic (sequential, light = low).
VALUE_CMAP = "YlOrRd"
#: Colormap of the relative margin of error (sequential, different hue from the values).
MOE_CMAP = "PuBu"
#: Upper clip of the relative margin of error panel.
REL_MOE_CAP = 2.0
#: Percentile of the published values used as the top of the colour scale.
COLOR_PERCENTILE = 99.0

SUPPRESSED_FACE = "#e3e3e3"
SUPPRESSED_EDGE = "#8c8c8c"
SUPPRESSED_HATCH = "///"
SUPPRESSED_LABEL = "suppressed (noisy count below threshold)"
MISSING_FACE = "white"
MISSING_EDGE = "#b0b0b0"
MISSING_LABEL = "no published value"
BOUNDARY_COLOR = "#1f1f1f"

# gids of the artists, so callers (and tests) can find them on the axes
GID_VALUES = "dpmap-values"
GID_SUPPRESSED = "dpmap-suppressed"
GID_MISSING = "dpmap-missing"
GID_BOUNDARIES = "dpmap-boundaries"
GID_CAPTION = "dpmap-caption"

_STAT_LABELS = {
    "count": "noisy count per hexagon",
    "sum": "noisy sum per hexagon",
    "mean": "noisy mean per hexagon",
}
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def plot_release(
    cells: pd.DataFrame,
    manifest: Mapping[str, Any],
    path: str | os.PathLike[str] | None = None,
    *,
    column: str = "count",
    category: str | None = None,
    boundaries: Any = None,
    title: str | None = None,
    show_uncertainty: bool = True,
    ax: Axes | None = None,
    dpi: int = 150,
    resolution: int | None = None,
) -> Figure:
    """Draw a static map of one published statistic of a release.

    For a hierarchical release, one level is drawn (``resolution``; default the finest);
    an adaptive release's mixed-resolution leaves are drawn together.

    Parameters
    ----------
    cells : geopandas.GeoDataFrame
        The published cell table (EPSG:4326): ``cell``, ``resolution``, the statistic
        columns (``count``, ``count_moe``, optionally ``sum``/``mean`` and their
        ``*_moe``), optionally ``category``, ``suppressed`` and ``geometry``. A plain
        DataFrame without ``geometry`` also works: the hexagons are rebuilt from ``cell``.
    manifest : mapping
        The release manifest. Only ``privacy.epsilon``, ``privacy.delta``,
        ``privacy.measure``, ``created``, ``resolution`` and ``title`` are read.
    path : str or os.PathLike, optional
        If given, the figure is also saved there as a PNG (atomically: a temporary file
        in the same folder is written, then renamed). The suffix must be ``.png``.
    column : str, default "count"
        The statistic to map (``"count"``, ``"sum"``, ``"mean"``, ...).
    category : str, optional
        Required when the table has a ``category`` column: the category to map.
    boundaries : geopandas.GeoDataFrame or geopandas.GeoSeries, optional
        Administrative boundaries drawn as thin dark outlines on top of the hexagons.
        They must have a CRS; they are reprojected to EPSG:4326 if needed.
    title : str, optional
        Figure title. Defaults to ``manifest["title"]``, else a generic title.
    show_uncertainty : bool, default True
        Add a second panel with the relative 95% margin of error,
        ``moe / max(|value|, 1)``, clipped to [0, 2]. Ignored when `ax` is given.
    ax : matplotlib.axes.Axes, optional
        Draw only the main panel into this existing axes (its figure is returned and
        nothing is closed). The caption is then placed under this axes.
    dpi : int, default 150
        Resolution of the saved PNG (and of a figure created here).

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the map (``ax.figure`` when `ax` is given).

    Raises
    ------
    dpmap.errors.SpecError
        If `column`, `category`, `path`, `boundaries` or the table cannot be used.
    dpmap.errors.MissingDependencyError
        If matplotlib is not installed.
    dpmap.errors.DataFileError
        If the folder of `path` does not exist or the PNG cannot be written.

    Notes
    -----
    Colours are clipped at 0 (published noisy values may be negative when suppression
    is off) and the colour scale stops at the 99th percentile of the published values,
    so a single large cell does not wash out the map; the colour bar shows arrows when
    values fall outside the scale. Cells with a published value of 0 get the low end of
    the colour scale; suppressed cells are light grey with ``///`` hatching.

    Examples
    --------
    >>> fig = plot_release(cells, manifest, "debtors.png")  # doctest: +SKIP
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise missing_extra("matplotlib", "plot") from None

    out_path = _check_path(path)
    if ax is not None:
        show_uncertainty = False

    table = _select_rows(
        cells, category, resolution=resolution, mixed=bool(manifest.get("adaptive"))
    )
    values = _numeric_column(table, column)
    suppressed = _suppressed_mask(table)
    moe: np.ndarray | None = None
    if show_uncertainty:
        moe_column = f"{column}_moe"
        if moe_column not in table.columns:
            raise SpecError(
                f"show_uncertainty=True needs the margin-of-error column {moe_column!r}, "
                f"which the release table does not have; pass show_uncertainty=False"
            )
        moe = _numeric_column(table, moe_column)
    polygons = _cell_polygons(table)
    boundary_lines = _boundary_lines(boundaries) if boundaries is not None else None
    resolution_text = _resolution_text(table, manifest)
    stat_label = _STAT_LABELS.get(column, f"noisy {column} per hexagon")
    if category is not None:
        stat_label = f"{stat_label}\ncategory: {category}"

    from matplotlib.colors import Normalize

    shown, colour_values, vmax, any_below, any_above = colour_scale(values, suppressed)
    extend = _extend(below=any_below, above=any_above)
    value_norm = Normalize(vmin=0.0, vmax=vmax)

    extent = _extent(polygons)
    own_figure = ax is None
    layout: _Layout | None = None
    if ax is None:
        layout = _new_figure(extent, show_uncertainty, dpi)
        fig, ax, moe_ax = layout.fig, layout.ax, layout.moe_ax
    else:
        fig = ax.figure  # the axes' (sub)figure; the root figure is saved and returned
        moe_ax = None

    _draw_panel(
        ax,
        polygons,
        colour_values,
        suppressed,
        shown,
        VALUE_CMAP,
        value_norm,
        boundary_lines,
        extent,
        adjustable="box",
    )
    cbar = _colorbar(fig, ax, _mappable(VALUE_CMAP, value_norm), extend, inset=own_figure)
    cbar.set_label(stat_label, fontsize=9)
    ax.set_title(stat_label.replace("\n", " · "), fontsize=10)

    if show_uncertainty and moe is not None and moe_ax is not None:
        rel = moe / np.maximum(np.abs(values), 1.0)
        rel_shown = shown & np.isfinite(rel)
        rel_norm = Normalize(vmin=0.0, vmax=REL_MOE_CAP)
        _draw_panel(
            moe_ax,
            polygons,
            np.clip(rel, 0.0, REL_MOE_CAP),
            suppressed,
            rel_shown,
            MOE_CMAP,
            rel_norm,
            boundary_lines,
            extent,
            adjustable="box",
        )
        moe_ax.tick_params(labelleft=False)
        moe_cbar = _colorbar(
            fig,
            moe_ax,
            _mappable(MOE_CMAP, rel_norm),
            "max" if bool((rel[rel_shown] > REL_MOE_CAP).any()) else "neither",
            inset=True,
        )
        ticks = np.linspace(0.0, REL_MOE_CAP, 5)
        moe_cbar.set_ticks(ticks)
        moe_cbar.set_ticklabels([f"{t:g}" for t in ticks[:-1]] + [f"≥ {REL_MOE_CAP:g}"])
        moe_cbar.set_label(
            "relative 95% margin of error\n(margin of error / max(|value|, 1))", fontsize=9
        )
        moe_ax.set_title("uncertainty: relative 95% margin of error", fontsize=10)

    handles = _legend_handles(suppressed, shown)
    if layout is not None:
        if handles:
            fig.legend(
                handles=handles,
                loc="upper left",
                bbox_to_anchor=layout.legend_anchor,
                frameon=False,
                fontsize=8,
                handlelength=2.2,
                handleheight=1.4,
                borderaxespad=0.0,
                ncols=len(handles),
            )
        fig.text(
            *layout.caption_anchor,
            _caption(
                manifest,
                resolution_text,
                vmax,
                extend,
                layout.caption_chars,
                any_shown=bool(shown.any()),
            ),
            ha="left",
            va="top",
            fontsize=8,
            color="#333333",
            linespacing=1.4,
            gid=GID_CAPTION,
        )
        fig.suptitle(
            _title(title, manifest, column, category),
            fontsize=13,
            ha="left",
            x=layout.caption_anchor[0],
            y=layout.title_y,
            va="top",
        )
    else:
        # below the axes, at fixed distances in points so it works for any axes size
        from matplotlib.transforms import ScaledTranslation

        below = ax.transAxes + ScaledTranslation(0.0, -24 / 72, fig.dpi_scale_trans)
        if handles:
            ax.legend(
                handles=handles,
                loc="upper left",
                bbox_to_anchor=(0.0, 0.0),
                bbox_transform=below,
                frameon=False,
                fontsize=8,
                handlelength=2.2,
                handleheight=1.4,
                borderaxespad=0.0,
            )
        ax.annotate(
            _caption(manifest, resolution_text, vmax, extend, 100, any_shown=bool(shown.any())),
            xy=(0.0, 0.0),
            xycoords="axes fraction",
            xytext=(0.0, -52.0 if handles else -26.0),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=7,
            color="#333333",
            gid=GID_CAPTION,
            annotation_clip=False,
        )
        if title is not None:
            ax.set_title(title)

    root = getattr(fig, "figure", fig)  # a SubFigure's .figure is the root Figure
    if out_path is not None:
        _save_png(root, out_path, dpi)
    return root


# --------------------------------------------------------------------------- checks


def _check_path(path: str | os.PathLike[str] | None) -> Path | None:
    if path is None:
        return None
    out = Path(os.fspath(path))
    if out.suffix.lower() != ".png":
        raise SpecError(
            f"plot_release saves PNG images only, but the path {str(out)!r} has the suffix "
            f"{out.suffix or '(none)'!r}; use a path ending in '.png'"
        )
    return out


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


def _select_rows(
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
    table = cells
    if "category" in table.columns:
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
        table = table[table["category"].astype(str) == str(category)]
    elif category is not None:
        raise SpecError(
            f"category={category!r} was given, but the release has no 'category' column; "
            f"drop the category argument"
        )
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


def _numeric_column(table: pd.DataFrame, column: str) -> np.ndarray:
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


def _suppressed_mask(table: pd.DataFrame) -> np.ndarray:
    if "suppressed" not in table.columns:
        return np.zeros(len(table), dtype=bool)
    flags = table["suppressed"].astype("boolean")
    return flags.to_numpy(dtype=bool, na_value=False)


# ---------------------------------------------------------------------- geometry


def _cell_polygons(table: pd.DataFrame) -> list[list[np.ndarray]]:
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


def _boundary_lines(boundaries: Any) -> list[np.ndarray]:
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


def _extent(polygons: Sequence[Sequence[np.ndarray]]) -> tuple[float, float, float, float]:
    rings = [r for rings in polygons for r in rings]
    if not rings:
        raise SpecError("the release table has no cell geometries to plot")
    xy = np.concatenate(rings)
    x0, y0 = np.nanmin(xy, axis=0)
    x1, y1 = np.nanmax(xy, axis=0)
    pad_x = max((x1 - x0) * 0.03, 1e-4)
    pad_y = max((y1 - y0) * 0.03, 1e-4)
    return float(x0 - pad_x), float(x1 + pad_x), float(y0 - pad_y), float(y1 + pad_y)


# ------------------------------------------------------------------------ drawing


@dataclass
class _Layout:
    """A figure built here, with where its legend, caption and title go."""

    fig: Any
    ax: Any
    moe_ax: Any
    legend_anchor: tuple[float, float]
    caption_anchor: tuple[float, float]
    title_y: float
    caption_chars: int


def _new_figure(
    extent: tuple[float, float, float, float], show_uncertainty: bool, dpi: int
) -> _Layout:
    """A figure whose map panels have the shape of the mapped area (sizes in inches)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x0, x1, y0, y1 = extent
    ground_width = (x1 - x0) * math.cos(math.radians((y0 + y1) / 2.0))
    ratio = min(max((y1 - y0) / max(ground_width, 1e-9), 0.45), 2.2)
    panel_w = 5.2 if show_uncertainty else 6.0
    panel_h = panel_w * ratio
    left, cbar_room, gap, right = 0.8, 1.35, 0.3, 0.15
    top, title_room, bottom = 0.35, 0.3, 1.35
    width = left + panel_w + cbar_room + right
    if show_uncertainty:
        width += gap + panel_w + cbar_room
    height = top + title_room + panel_h + bottom

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    panel_bottom = bottom / height
    ax = fig.add_axes((left / width, panel_bottom, panel_w / width, panel_h / height))
    moe_ax = None
    if show_uncertainty:
        x = left + panel_w + cbar_room + gap
        moe_ax = fig.add_axes((x / width, panel_bottom, panel_w / width, panel_h / height))
    text_x = 0.25 / width
    return _Layout(
        fig=fig,
        ax=ax,
        moe_ax=moe_ax,
        legend_anchor=(left / width, (bottom - 0.35) / height),
        caption_anchor=(text_x, (bottom - 0.75) / height),
        title_y=1.0 - 0.12 / height,
        caption_chars=int((width - 0.5) * 72 / (8 * 0.56)),
    )


def _colorbar(fig: Any, ax: Any, mappable: Any, extend: str, *, inset: bool) -> Any:
    """A colour bar as tall as the map panel (inset) or stealing room from `ax`."""
    if inset:
        width_in = ax.get_position().width * fig.get_figwidth()
        cax = ax.inset_axes((1.0 + 0.15 / width_in, 0.0, 0.17 / width_in, 1.0))
        cbar = fig.colorbar(mappable, cax=cax, extend=extend, extendfrac=0.04)
    else:
        cbar = fig.colorbar(mappable, ax=ax, extend=extend, shrink=0.8, extendfrac=0.04)
    cbar.ax.tick_params(labelsize=8)
    cbar.outline.set_linewidth(0.5)
    return cbar


def _draw_panel(
    ax: Any,
    polygons: Sequence[Sequence[np.ndarray]],
    colour_values: np.ndarray,
    suppressed: np.ndarray,
    shown: np.ndarray,
    cmap_name: str,
    norm: Normalize,
    boundary_lines: list[np.ndarray] | None,
    extent: tuple[float, float, float, float],
    *,
    adjustable: str = "box",
) -> None:
    import matplotlib
    from matplotlib.collections import LineCollection, PolyCollection

    cmap: Colormap = matplotlib.colormaps[cmap_name]
    missing = ~shown & ~suppressed

    def rings_of(mask: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
        rings: list[np.ndarray] = []
        rows: list[int] = []
        for i in np.flatnonzero(mask):
            for ring in polygons[int(i)]:
                rings.append(ring)
                rows.append(int(i))
        return rings, rows

    rings, rows = rings_of(shown)
    faces = cmap(norm(colour_values[rows])) if rows else np.zeros((0, 4))
    ax.add_collection(
        PolyCollection(
            rings,
            facecolors=faces,
            edgecolors="white",
            linewidths=0.3,
            zorder=1,
            gid=GID_VALUES,
        ),
        autolim=False,
    )
    rings, _ = rings_of(suppressed)
    if rings:
        hatched = PolyCollection(
            rings,
            facecolors=SUPPRESSED_FACE,
            edgecolors=SUPPRESSED_EDGE,
            linewidths=0.3,
            hatch=SUPPRESSED_HATCH,
            zorder=2,
            gid=GID_SUPPRESSED,
            label=SUPPRESSED_LABEL,
        )
        if hasattr(hatched, "set_hatchcolor"):  # matplotlib >= 3.10
            hatched.set_hatchcolor(SUPPRESSED_EDGE)
        if hasattr(hatched, "set_hatch_linewidth"):
            hatched.set_hatch_linewidth(0.6)
        ax.add_collection(hatched, autolim=False)
    rings, _ = rings_of(missing)
    if rings:
        ax.add_collection(
            PolyCollection(
                rings,
                facecolors=MISSING_FACE,
                edgecolors=MISSING_EDGE,
                linewidths=0.4,
                zorder=2,
                gid=GID_MISSING,
                label=MISSING_LABEL,
            ),
            autolim=False,
        )
    if boundary_lines:
        ax.add_collection(
            LineCollection(
                boundary_lines,
                colors=BOUNDARY_COLOR,
                linewidths=0.7,
                zorder=3,
                gid=GID_BOUNDARIES,
            ),
            autolim=False,
        )

    x0, x1, y0, y1 = extent
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    mid_lat = math.radians((y0 + y1) / 2.0)
    # one degree of longitude is cos(latitude) degrees of latitude on the ground
    ax.set_aspect(1.0 / max(math.cos(mid_lat), 0.05), adjustable=adjustable)
    ax.tick_params(labelsize=7, color="#888888", labelcolor="#555555", length=2)
    ax.xaxis.set_major_formatter(_degree_formatter("E", "W"))
    ax.yaxis.set_major_formatter(_degree_formatter("N", "S"))
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
    for spine in ax.spines.values():
        spine.set_color("#bbbbbb")
        spine.set_linewidth(0.6)


def _degree_formatter(positive: str, negative: str) -> Any:
    """Tick labels like ``13.35°E``, with as many decimals as the ticks need."""
    from matplotlib.ticker import Formatter

    class DegreeFormatter(Formatter):
        tick_values: np.ndarray = np.zeros(0)

        def set_locs(self, locs: Any) -> None:
            self.tick_values = np.asarray(locs, dtype=float)

        def __call__(self, x: float, pos: int | None = None) -> str:
            locs = self.tick_values
            decimals = 0
            if len(locs) > 1:
                step = float(np.min(np.diff(np.sort(locs))))
                while decimals < 6 and not np.allclose(
                    np.round(locs, decimals), locs, rtol=0.0, atol=step * 1e-3
                ):
                    decimals += 1
            else:
                decimals = 4
            text = f"{abs(x):.{decimals}f}"
            return f"{text}°{positive if x >= 0 else negative}" if float(text) else "0°"

    return DegreeFormatter()


def _mappable(cmap_name: str, norm: Normalize) -> Any:
    import matplotlib
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=matplotlib.colormaps[cmap_name])


def _extend(*, below: bool, above: bool) -> str:
    if below and above:
        return "both"
    return "min" if below else "max" if above else "neither"


def _legend_handles(suppressed: np.ndarray, shown: np.ndarray) -> list[Any]:
    from matplotlib.patches import Patch

    handles = []
    if suppressed.any():
        handles.append(
            Patch(
                facecolor=SUPPRESSED_FACE,
                edgecolor=SUPPRESSED_EDGE,
                hatch=SUPPRESSED_HATCH,
                linewidth=0.6,
                label=SUPPRESSED_LABEL,
            )
        )
    if (~shown & ~suppressed).any():
        handles.append(
            Patch(
                facecolor=MISSING_FACE, edgecolor=MISSING_EDGE, linewidth=0.6, label=MISSING_LABEL
            )
        )
    return handles


# ------------------------------------------------------------------------- texts


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


def _resolution_text(table: pd.DataFrame, manifest: Mapping[str, Any]) -> str:
    if "resolution" in table.columns and table["resolution"].notna().any():
        levels = sorted({int(r) for r in table["resolution"].dropna()})
        if len(levels) > 1:
            return f"{levels[0]}–{levels[-1]} (adaptive)"
        return str(levels[0])
    res = manifest.get("resolution")
    if isinstance(res, (list, tuple)):
        return ", ".join(str(int(r)) for r in res)
    return "?" if res is None else str(res)


def _created_date(created: Any) -> str:
    text = str(created)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date().isoformat()
    except ValueError:
        return text[:10]


def _privacy_terms(manifest: Mapping[str, Any]) -> tuple[str, str, str]:
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


def _caption(
    manifest: Mapping[str, Any],
    resolution: str,
    vmax: float,
    extend: str,
    width: int,
    *,
    any_shown: bool = True,
) -> str:
    """The privacy statement and reading notes, wrapped at separators to `width` chars."""
    eps_text, delta_text, phrase = _privacy_terms(manifest)
    statement = [
        f"Differentially private release: ε = {eps_text}, δ = {delta_text} {phrase}",
        f"H3 resolution {resolution}",
        _created_date(manifest.get("created", "")),
        "each value ± its 95% margin of error",
    ]
    if any_shown:
        top = f"{round(vmax):,}" if vmax >= 1000 else f"{vmax:.3g}"
        notes = [f"Colour scale from 0 to {top} (the {COLOR_PERCENTILE:g}th percentile)"]
    else:
        notes = ["No hexagon has a published value"]
    if extend in {"min", "both"}:
        notes.append("negative noisy values are coloured as 0")
    hidden = suppression_note(manifest)
    if hidden:
        notes.append(hidden)
    notes.append("differences between single hexagons may be noise.")
    return "\n".join(_join_wrapped(statement, " · ", width) + _join_wrapped(notes, "; ", width))


def _join_wrapped(parts: Sequence[str], sep: str, width: int) -> list[str]:
    """Join `parts` with `sep`, starting a new line before a part that would not fit."""
    lines: list[str] = []
    current = ""
    for part in parts:
        candidate = f"{current}{sep}{part}" if current else part
        if current and len(candidate) > width:
            lines.append(current + sep.rstrip())
            current = part
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def _title(
    title: str | None, manifest: Mapping[str, Any], column: str, category: str | None
) -> str:
    if title is not None:
        return title
    base = manifest.get("title") or f"dpmap release: {column} per H3 hexagon"
    return f"{base} — {category}" if category is not None else str(base)


# -------------------------------------------------------------------------- saving


def _save_png(fig: Any, out: Path, dpi: int) -> None:
    from dpmap.io import atomic_write

    try:
        with atomic_write([out]) as (tmp,):
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.15)
    except OSError as exc:
        if isinstance(exc, DataFileError):
            raise
        raise DataFileError(f"cannot save the map to {str(out)!r}: {exc}") from exc
