"""Static maps of a published dpmap release, drawn with matplotlib.

:func:`plot_release` turns the published cell table of a release into a choropleth of
one statistic per H3 hexagon: colours clipped at 0 (published noisy values may be
negative when suppression is off) on a scale that stops at the 99th percentile of the
published values (so a single large cell does not wash out the map; the colour bar
shows arrows when values fall outside it), 0 drawn as the low end of the scale and
suppressed cells light grey with ``///`` hatching, so that hidden is never confused with
zero; an optional second panel with the relative margin of error; and a caption that
states the privacy guarantee. What is drawn (rows, column, suppressed mask, colour
scale, caption facts, titles, boundaries) comes from :mod:`dpmap.maps.layers`, shared
with the interactive map; this file only lays it out with matplotlib and saves the PNG.

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dpmap.errors import DataFileError, SpecError, missing_extra
from dpmap.io import atomic_write
from dpmap.maps.layers import (
    BOUNDARY_COLOR,
    MISSING_EDGE,
    MISSING_FACE,
    MISSING_LABEL,
    SUPPRESSED_EDGE,
    SUPPRESSED_FACE,
    SUPPRESSED_LABEL,
    VALUE_CMAP,
    CaptionFacts,
    CellRings,
    MapLayer,
    boundary_lines,
    caption_facts,
    cell_rings,
    map_layer,
    numeric_column,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap, Normalize
    from matplotlib.figure import Figure

__all__ = ["plot_periods_figure", "plot_release"]

#: Colormap of the relative margin of error (sequential, different hue from the values).
MOE_CMAP = "PuBu"
#: Upper clip of the relative margin of error panel.
REL_MOE_CAP = 2.0

SUPPRESSED_HATCH = "///"

# gids of the artists, so callers (and tests) can find them on the axes
GID_VALUES = "dpmap-values"
GID_SUPPRESSED = "dpmap-suppressed"
GID_MISSING = "dpmap-missing"
GID_BOUNDARIES = "dpmap-boundaries"
GID_CAPTION = "dpmap-caption"


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
    resolution : int, optional
        For a hierarchical release, the level to draw (default the finest). An adaptive
        release's mixed-resolution leaves are drawn together.

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
    """
    _require_matplotlib()
    out_path = _check_path(path)
    layer = map_layer(
        cells, manifest, column=column, category=category, resolution=resolution, title=title
    )
    moe = _moe_values(layer) if show_uncertainty and ax is None else None
    shapes = _shapes(layer.table, boundaries)
    if ax is None:
        fig = _draw_figure(layer, moe, shapes, manifest, dpi)
    else:
        fig = _draw_into_axes(ax, layer, shapes, manifest, title)
    root = getattr(fig, "figure", fig)  # a SubFigure's .figure is the root Figure
    if out_path is not None:
        _save_png(root, out_path, dpi)
    return root


# --------------------------------------------------------------------------- checks


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise missing_extra("matplotlib", "plot") from None


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


def _moe_values(layer: MapLayer) -> np.ndarray:
    """The margin of error of the mapped column, for the uncertainty panel: its ``_moe``
    column, or half the width of its 95% interval (``_lo``, ``_hi``: a quantile)."""
    moe_column = f"{layer.column}_moe"
    lo, hi = f"{layer.column}_lo", f"{layer.column}_hi"
    if moe_column not in layer.table.columns and {lo, hi} <= set(layer.table.columns):
        return (numeric_column(layer.table, hi) - numeric_column(layer.table, lo)) / 2
    if moe_column not in layer.table.columns:
        raise SpecError(
            f"show_uncertainty=True needs the margin-of-error column {moe_column!r}, "
            f"which the release table does not have; pass show_uncertainty=False"
        )
    return numeric_column(layer.table, moe_column)


# ---------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Shapes:
    """Where a panel draws: the hexagons' rings, the boundary lines, the axes extent."""

    rings: CellRings
    boundary_lines: list[np.ndarray] | None
    extent: tuple[float, float, float, float]


def _shapes(table: pd.DataFrame, boundaries: Any) -> _Shapes:
    rings = cell_rings(table)
    lines = boundary_lines(boundaries) if boundaries is not None else None
    return _Shapes(rings=rings, boundary_lines=lines, extent=_extent([rings.xy]))


def _extent(vertices: Sequence[np.ndarray]) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) of the hexagons' (n, 2) `vertices` arrays with a 3% margin."""
    xy = np.concatenate([np.asarray(v, dtype=float).reshape(-1, 2) for v in vertices])
    if not len(xy):
        raise SpecError("the release table has no cell geometries to plot")
    x0, y0 = np.nanmin(xy, axis=0)
    x1, y1 = np.nanmax(xy, axis=0)
    pad_x = max((x1 - x0) * 0.03, 1e-4)
    pad_y = max((y1 - y0) * 0.03, 1e-4)
    return x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y


# ------------------------------------------------------------------------ figures


def _draw_figure(
    layer: MapLayer,
    moe: np.ndarray | None,
    shapes: _Shapes,
    manifest: Mapping[str, Any],
    dpi: int,
) -> Figure:
    """A new figure: the value panel, the uncertainty panel (if `moe` is given), the
    legend, the caption and the title."""
    layout = _new_figure(shapes.extent, moe is not None, dpi)
    _draw_value_panel(layout.fig, layout.ax, layer, shapes, inset=True)
    if moe is not None:
        _draw_uncertainty_panel(layout.fig, layout.moe_ax, layer, moe, shapes)
    _add_figure_texts(layout, layer, manifest)
    return layout.fig


def _draw_into_axes(
    ax: Axes, layer: MapLayer, shapes: _Shapes, manifest: Mapping[str, Any], title: str | None
) -> Any:
    """The value panel in the caller's axes, with legend and caption under it."""
    fig = ax.figure  # the axes' (sub)figure; the root figure is saved and returned
    _draw_value_panel(fig, ax, layer, shapes, inset=False)
    _add_axes_texts(ax, fig, layer, manifest, title)
    return fig


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


# ------------------------------------------------------------------------- panels


def _panel_label(layer: MapLayer) -> str:
    """The value panel's colour-bar label: the statistic, and the category if any."""
    if layer.category is not None:
        return f"{layer.stat_label}\ncategory: {layer.category}"
    return layer.stat_label


def _draw_value_panel(fig: Any, ax: Any, layer: MapLayer, shapes: _Shapes, *, inset: bool) -> None:
    """The mapped statistic on the shared colour scale, with its colour bar and title."""
    from matplotlib.colors import Normalize

    norm = Normalize(vmin=0.0, vmax=layer.vmax)
    _draw_panel(ax, shapes, layer.colour_values, layer.suppressed, layer.shown, VALUE_CMAP, norm)
    extend = _extend(below=layer.below, above=layer.above)
    cbar = _colorbar(fig, ax, _mappable(VALUE_CMAP, norm), extend, inset=inset)
    label = _panel_label(layer)
    cbar.set_label(label, fontsize=9)
    ax.set_title(label.replace("\n", " · "), fontsize=10)


def _draw_uncertainty_panel(
    fig: Any, ax: Any, layer: MapLayer, moe: np.ndarray, shapes: _Shapes
) -> None:
    """The relative 95% margin of error, ``moe / max(|value|, 1)``, clipped to [0, 2]."""
    from matplotlib.colors import Normalize

    rel = moe / np.maximum(np.abs(layer.values), 1.0)
    rel_shown = layer.shown & np.isfinite(rel)
    norm = Normalize(vmin=0.0, vmax=REL_MOE_CAP)
    clipped = np.clip(rel, 0.0, REL_MOE_CAP)
    _draw_panel(ax, shapes, clipped, layer.suppressed, rel_shown, MOE_CMAP, norm)
    ax.tick_params(labelleft=False)
    extend = "max" if bool((rel[rel_shown] > REL_MOE_CAP).any()) else "neither"
    cbar = _colorbar(fig, ax, _mappable(MOE_CMAP, norm), extend, inset=True)
    ticks = np.linspace(0.0, REL_MOE_CAP, 5)
    cbar.set_ticks(ticks)
    cbar.set_ticklabels([f"{t:g}" for t in ticks[:-1]] + [f"≥ {REL_MOE_CAP:g}"])
    cbar.set_label("relative 95% margin of error\n(margin of error / max(|value|, 1))", fontsize=9)
    ax.set_title("uncertainty: relative 95% margin of error", fontsize=10)


def _draw_panel(
    ax: Any,
    shapes: _Shapes,
    colour_values: np.ndarray,
    suppressed: np.ndarray,
    shown: np.ndarray,
    cmap_name: str,
    norm: Normalize,
) -> None:
    """One map panel: the hexagons, the boundaries on top, and the axes' look."""
    _add_cells(ax, shapes.rings, colour_values, suppressed, shown, cmap_name, norm)
    if shapes.boundary_lines:
        _add_boundaries(ax, shapes.boundary_lines)
    _style_axes(ax, shapes.extent)


def _add_cells(
    ax: Any,
    rings: CellRings,
    colour_values: np.ndarray,
    suppressed: np.ndarray,
    shown: np.ndarray,
    cmap_name: str,
    norm: Normalize,
) -> None:
    """Shown hexagons in colour, suppressed ones hatched grey, the rest white.

    Speed (issue 18): the rings go to matplotlib as (n, vertices, 2) arrays, which it turns
    into paths without checking each one; the suppressed hexagons are ONE compound path, so
    that Agg renders the hatch pattern once instead of once per hexagon (that was >90% of
    the time of a map with thousands of suppressed cells)."""
    import matplotlib
    from matplotlib.collections import PolyCollection

    cmap: Colormap = matplotlib.colormaps[cmap_name]
    rows = rings.rows[np.asarray(shown, dtype=bool)[rings.rows]]
    faces = cmap(norm(colour_values[rows])) if len(rows) else np.zeros((0, 4))
    # an (n, vertices, 2) array is matplotlib's fast path (its stubs only say Sequence)
    shown_rings: Any = rings.select(shown)
    ax.add_collection(
        PolyCollection(
            shown_rings,
            facecolors=faces,
            edgecolors="white",
            linewidths=0.3,
            zorder=1,
            gid=GID_VALUES,
        ),
        autolim=False,
    )
    hidden = rings.select(suppressed)
    if len(hidden):
        ax.add_collection(_hatched(hidden), autolim=False)
    missing: Any = rings.select(~shown & ~suppressed)
    if len(missing):
        ax.add_collection(
            PolyCollection(
                missing,
                facecolors=MISSING_FACE,
                edgecolors=MISSING_EDGE,
                linewidths=0.4,
                zorder=2,
                gid=GID_MISSING,
                label=MISSING_LABEL,
            ),
            autolim=False,
        )


def _compound_path(rings: np.ndarray) -> Any:
    """One matplotlib Path of all the (rings, vertices, 2) `rings`, each a closed subpath."""
    from matplotlib.path import Path as MplPath

    n, m = rings.shape[0], rings.shape[1]
    closed = np.concatenate([rings, rings[:, :1]], axis=1)  # CLOSEPOLY's vertex
    codes = np.full(m + 1, MplPath.LINETO, dtype=MplPath.code_type)
    codes[0], codes[-1] = MplPath.MOVETO, MplPath.CLOSEPOLY
    return MplPath(closed.reshape(n * (m + 1), 2), np.tile(codes, n))


def _hatched(rings: np.ndarray) -> Any:
    """Suppressed hexagons: light grey with ``///`` hatching, as one compound path (the
    hatch pattern is rendered once; each hexagon is a closed subpath of it)."""
    from matplotlib.collections import PathCollection

    hatched = PathCollection(
        [_compound_path(rings)],
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
    return hatched


def _add_boundaries(ax: Any, lines: list[np.ndarray]) -> None:
    from matplotlib.collections import LineCollection

    ax.add_collection(
        LineCollection(lines, colors=BOUNDARY_COLOR, linewidths=0.7, zorder=3, gid=GID_BOUNDARIES),
        autolim=False,
    )


def _style_axes(ax: Any, extent: tuple[float, float, float, float]) -> None:
    """Limits, a ground-true aspect ratio, degree tick labels and light spines."""
    from matplotlib.ticker import MaxNLocator

    x0, x1, y0, y1 = extent
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    mid_lat = math.radians((y0 + y1) / 2.0)
    # one degree of longitude is cos(latitude) degrees of latitude on the ground
    ax.set_aspect(1.0 / max(math.cos(mid_lat), 0.05), adjustable="box")
    ax.tick_params(labelsize=7, color="#888888", labelcolor="#555555", length=2)
    ax.xaxis.set_major_formatter(_degree_formatter("E", "W"))
    ax.yaxis.set_major_formatter(_degree_formatter("N", "S"))
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.yaxis.set_major_locator(MaxNLocator(5))
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


def _legend_handles(layer: MapLayer) -> list[Any]:
    from matplotlib.patches import Patch

    handles = []
    if layer.suppressed.any():
        handles.append(
            Patch(
                facecolor=SUPPRESSED_FACE,
                edgecolor=SUPPRESSED_EDGE,
                hatch=SUPPRESSED_HATCH,
                linewidth=0.6,
                label=SUPPRESSED_LABEL,
            )
        )
    if layer.missing.any():
        handles.append(
            Patch(
                facecolor=MISSING_FACE, edgecolor=MISSING_EDGE, linewidth=0.6, label=MISSING_LABEL
            )
        )
    return handles


# ------------------------------------------------------------------------- texts


def _add_figure_texts(layout: _Layout, layer: MapLayer, manifest: Mapping[str, Any]) -> None:
    """Legend and caption under the panels, title above them."""
    _figure_texts(layout, layer, caption_facts(manifest, layer), layer.title)


def _figure_texts(layout: _Layout, legend: MapLayer, facts: CaptionFacts, title: str) -> None:
    """Legend (of ``legend``'s styles) and caption (``facts``) under the panels, ``title``
    above them: one map, or the small multiples of several periods."""
    fig = layout.fig
    handles = _legend_handles(legend)
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
        _caption(facts, layout.caption_chars),
        ha="left",
        va="top",
        fontsize=8,
        color="#333333",
        linespacing=1.4,
        gid=GID_CAPTION,
    )
    fig.suptitle(
        title,
        fontsize=13,
        ha="left",
        x=layout.caption_anchor[0],
        y=layout.title_y,
        va="top",
    )


def _add_axes_texts(
    ax: Any, fig: Any, layer: MapLayer, manifest: Mapping[str, Any], title: str | None
) -> None:
    """Legend and caption below a given axes, at fixed distances in points (so it works
    for any axes size); the axes' title only if one was given."""
    from matplotlib.transforms import ScaledTranslation

    below = ax.transAxes + ScaledTranslation(0.0, -24 / 72, fig.dpi_scale_trans)
    handles = _legend_handles(layer)
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
        _caption(caption_facts(manifest, layer), 100),
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


def _caption(facts: CaptionFacts, width: int) -> str:
    """The privacy statement and reading notes, wrapped at separators to `width` chars."""
    statement = [
        f"Differentially private release: ε = {facts.epsilon}, δ = {facts.delta} {facts.guarantee}",
        facts.grid or f"H3 resolution {facts.resolution}",
        facts.created,
        "each value ± its 95% margin of error",
    ]
    notes = [facts.scale or "No hexagon has a published value"]
    notes += [note for note in (facts.negative, facts.hidden) if note]
    notes.append(f"{facts.noise}.")
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


# -------------------------------------------------------------------------- saving


def _save_png(fig: Any, out: Path, dpi: int) -> None:

    try:
        with atomic_write([out]) as (tmp,):
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.15)
    except OSError as exc:
        if isinstance(exc, DataFileError):
            raise
        raise DataFileError(f"cannot save the map to {str(out)!r}: {exc}") from exc


# ------------------------------------------------------------- periods: small multiples

#: Width of one small-multiple panel, in inches.
PERIOD_PANEL_WIDTH = 3.0
#: Panels per row of the small multiples.
PERIOD_COLUMNS = 4


def plot_periods_figure(
    layers: Sequence[MapLayer],
    legend: MapLayer,
    labels: Sequence[str],
    facts: CaptionFacts,
    path: str | os.PathLike[str] | None = None,
    *,
    boundaries: Any = None,
    title: str | None = None,
    dpi: int = 150,
) -> Figure:
    """Small multiples: one panel per period (titled with its label), all on the colour
    scale of `legend` (the layers share its top: :func:`dpmap.maps.layers.shared_scale`),
    with ONE colour bar, one legend and one caption. Each panel is drawn as the value panel
    of :func:`plot_release` (suppressed cells hatched grey, missing ones white).
    ``path``: also save as PNG (atomically)."""
    from matplotlib.colors import Normalize

    _require_matplotlib()
    out_path = _check_path(path)
    lines = boundary_lines(boundaries) if boundaries is not None else None
    rings = [cell_rings(layer.table) for layer in layers]
    extent = _extent([per.xy for per in rings])
    layout, axes = _periods_layout(extent, len(layers), dpi)
    norm = Normalize(vmin=0.0, vmax=legend.vmax)
    for ax, layer, per, label in zip(axes, layers, rings, labels, strict=True):
        shapes = _Shapes(rings=per, boundary_lines=lines, extent=extent)
        _draw_panel(
            ax, shapes, layer.colour_values, layer.suppressed, layer.shown, VALUE_CMAP, norm
        )
        ax.tick_params(labelleft=False, labelbottom=False, length=0)
        ax.set_title(str(label), fontsize=10)
    extend = _extend(below=legend.below, above=legend.above)
    cbar = layout.fig.colorbar(
        _mappable(VALUE_CMAP, norm), cax=layout.moe_ax, extend=extend, extendfrac=0.04
    )
    cbar.ax.tick_params(labelsize=8)
    cbar.set_label(_panel_label(legend), fontsize=9)
    _periods_texts(layout, legend, facts, title)
    if out_path is not None:
        _save_png(layout.fig, out_path, dpi)
    fig: Figure = layout.fig
    return fig


def _periods_layout(
    extent: tuple[float, float, float, float], n: int, dpi: int
) -> tuple[_Layout, list[Any]]:
    """A figure with `n` map panels in rows of :data:`PERIOD_COLUMNS` and one colour bar
    (in the layout's ``moe_ax`` slot) beside them, as tall as the panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x0, x1, y0, y1 = extent
    ground_width = (x1 - x0) * math.cos(math.radians((y0 + y1) / 2.0))
    ratio = min(max((y1 - y0) / max(ground_width, 1e-9), 0.45), 2.2)
    ncol = min(PERIOD_COLUMNS, n)
    nrow = -(-n // ncol)
    pw, ph = PERIOD_PANEL_WIDTH, PERIOD_PANEL_WIDTH * ratio
    left, gap_x, gap_y, cbar_room, right = 0.3, 0.2, 0.45, 1.3, 0.1
    top, bottom = 0.75, 1.45
    width = left + ncol * pw + (ncol - 1) * gap_x + 0.25 + cbar_room + right
    height = top + nrow * ph + (nrow - 1) * gap_y + bottom
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = []
    for i in range(n):
        row, col = divmod(i, ncol)
        x = left + col * (pw + gap_x)
        y = height - top - (row + 1) * ph - row * gap_y
        axes.append(fig.add_axes((x / width, y / height, pw / width, ph / height)))
    cbar_x = left + ncol * pw + (ncol - 1) * gap_x + 0.25
    panels_h = nrow * ph + (nrow - 1) * gap_y
    cax = fig.add_axes(
        (cbar_x / width, (height - top - panels_h) / height, 0.17 / width, panels_h / height)
    )
    layout = _Layout(
        fig=fig,
        ax=axes[0],
        moe_ax=cax,
        legend_anchor=(left / width, (bottom - 0.35) / height),
        caption_anchor=(0.25 / width, (bottom - 0.75) / height),
        title_y=1.0 - 0.12 / height,
        caption_chars=int((width - 0.5) * 72 / (8 * 0.56)),
    )
    return layout, axes


def _periods_texts(
    layout: _Layout, legend: MapLayer, facts: CaptionFacts, title: str | None
) -> None:
    """Legend, caption (the periods' privacy facts) and title of the small multiples."""
    _figure_texts(layout, legend, facts, title or legend.title)
