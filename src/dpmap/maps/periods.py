"""Maps of several periods: small multiples (:func:`plot_periods`) and an interactive map with
a period slider (:func:`explore_periods`).

Both take a sequence of releases of one design, one release per period (e.g. monthly
releases charged to one ledger entry, or the per-period views of a panel release), lined up
as :func:`dpmap.series` lines them up (same design, resolution, categories and statistics;
period labels from ``periods=``, else each manifest's ``period`` entry, else 0, 1, …).
Every period is drawn on ONE colour scale — from 0 to the 99th percentile of all periods'
published values (:func:`dpmap.maps.layers.shared_scale`) — so that the same colour means
the same value in every period; suppressed cells are hatched grey as on a single map.

Drawing is post-processing of the published tables: no budget is spent, no raw data read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dpmap.analysis.totals import is_release
from dpmap.analysis.trends import line_up, panel_views
from dpmap.errors import SpecError
from dpmap.maps.interactive import check_html_path, explore_layers, offline_document, save_html
from dpmap.maps.layers import CaptionFacts, MapLayer, map_layer, periods_caption_facts, shared_scale
from dpmap.maps.static import plot_periods_figure
from dpmap.maps.trends import MAX_PANELS

if TYPE_CHECKING:  # pragma: no cover
    import folium
    from matplotlib.figure import Figure

    from dpmap.releases import Release

__all__ = ["explore_periods", "plot_periods"]


def plot_periods(
    releases: Sequence[Release] | Release,
    periods: Sequence[Any] | None = None,
    statistic: str = "count",
    path: str | os.PathLike[str] | None = None,
    *,
    category: str | None = None,
    resolution: int | None = None,
    boundaries: Any = None,
    title: str | None = None,
    dpi: int = 150,
) -> Figure:
    """Small multiples: one map per period, titled with its label, on ONE colour scale.

    Parameters
    ----------
    releases
        One release per period, oldest first, of one design (as for :func:`dpmap.series`);
        at most :data:`dpmap.maps.trends.MAX_PANELS`.
    periods
        The periods' labels in the releases' order; default the manifests' ``period``
        entries if they all have one, else 0, 1, …
    statistic
        The column to map (``"count"``, ``"sum"``, ``"mean"``).
    path
        Also save the figure as PNG (written completely or not at all).
    category, resolution, boundaries, title, dpi
        As for :func:`dpmap.maps.static.plot_release`.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per period, one shared colour bar, legend and caption (ε and δ of each
        period's release).
    """
    layers, legend, labels, facts = _periods_layers(
        releases, periods, statistic, category, resolution, title, maximum=MAX_PANELS
    )
    return plot_periods_figure(
        layers, legend, labels, facts, path, boundaries=boundaries, title=title, dpi=dpi
    )


def explore_periods(
    releases: Sequence[Release] | Release,
    periods: Sequence[Any] | None = None,
    statistic: str = "count",
    path: str | os.PathLike[str] | None = None,
    *,
    category: str | None = None,
    resolution: int | None = None,
    boundaries: Any = None,
    title: str | None = None,
    tiles: Any = None,
    attr: str | None = None,
) -> folium.Map:
    """An interactive map with a period slider: one period shown at a time, on ONE colour
    scale and legend; tooltips with the period's value ± its 95% margin.

    ``path``: also save it as ONE self-contained HTML file that works offline (Leaflet
    inlined; the hexagons once, the values per period), written completely or not at all.
    Other arguments as for :func:`plot_periods` and :func:`dpmap.maps.interactive.explore_release`.
    Returns the :class:`folium.Map`.
    """
    if path is not None:
        check_html_path(path)
    views, periods = panel_views(releases, periods)
    layers, legend, labels, facts = _periods_layers(
        views, periods, statistic, category, resolution, title, maximum=None
    )
    manifests = [r.manifest for r in views]
    fmap = explore_layers(
        layers, legend, labels, manifests, facts, boundaries=boundaries, tiles=tiles, attr=attr
    )
    if path is not None:
        save_html(offline_document(fmap), path)
    return fmap


def _periods_layers(
    releases: Any,
    periods: Sequence[Any] | None,
    statistic: str,
    category: str | None,
    resolution: int | None,
    title: str | None,
    *,
    maximum: int | None,
) -> tuple[list[MapLayer], MapLayer, list[str], CaptionFacts]:
    """The releases checked and lined up, each period's layer on the shared scale, the
    legend layer, the labels and the caption facts. A panel release stands for its periods."""
    releases, periods = panel_views(releases, periods)
    if is_release(releases):
        raise SpecError(
            "a map of periods needs a sequence of releases (one per period), got one release; "
            "pass a list, e.g. [rel_jan, rel_feb, ...], or draw one release with plot_release"
        )
    if isinstance(releases, (str, bytes)) or not hasattr(releases, "__len__"):
        raise SpecError(
            f"releases must be a list of dpmap Releases (one per period), got "
            f"{type(releases).__name__}; read files with dpmap.read_release(path) first"
        )
    if len(releases) == 0:
        raise SpecError("the sequence of releases is empty; pass one release per period")
    if maximum is not None and len(releases) > maximum:
        raise SpecError(
            f"small multiples draw at most {maximum} periods, got {len(releases)}; pass at most "
            f"{maximum} (e.g. releases[-{maximum}:] with their periods), or use "
            "explore_periods for a slider over all of them"
        )
    rels, labels = line_up(releases, periods, minimum=1)
    per = []
    for i, rel in enumerate(rels):
        try:
            layer = map_layer(
                rel.cells,
                rel.manifest,
                column=statistic,
                category=category,
                resolution=resolution,
                title=title,
            )
        except SpecError as exc:
            raise SpecError(f"period {labels[i]!r} (release {i}): {exc}") from None
        per.append(layer)
    layers, legend = shared_scale(per)
    facts = periods_caption_facts([r.manifest for r in rels], labels, legend)
    return layers, legend, labels, facts
