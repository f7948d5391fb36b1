"""Pictures of series and trends (matplotlib): a trend map and time series with 95% bands.

Both draw published post-processing only — the tables :func:`dpmap.trend` and
:func:`dpmap.series` return — so drawing spends no budget and reads no raw data.

- :func:`plot_trend`: a choropleth of the slope per period on a diverging, colour-blind-safe
  scale centred on 0 (purple falls, orange rises), rows whose slope is **not significant**
  at the false-discovery rate used drawn pale and hatched (``///``), so that a map of
  "rises" shows only what the test supports; the method in a caption.
- :func:`plot_series`: small multiples, one panel per zone (or cell), the estimate per
  period with its 95% band (estimate ± margin of the noise).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dpmap.errors import DataFileError, SpecError, missing_extra
from dpmap.io import atomic_write

__all__ = ["plot_series", "plot_trend"]

#: diverging and colour-blind safe (ColorBrewer PuOr, reversed: orange = rising)
TREND_CMAP = "PuOr_r"
NOT_SIGNIFICANT_HATCH = "///"
NOT_SIGNIFICANT_ALPHA = 0.3
#: the most panels :func:`plot_series` draws unless ``keys=`` names them
MAX_PANELS = 12


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise missing_extra("matplotlib", "plot") from None
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png_path(path: str | os.PathLike[str] | None) -> Path | None:
    if path is None:
        return None
    out = Path(os.fspath(path))
    if out.suffix.lower() != ".png":
        raise SpecError(
            f"the path {str(out)!r} has the suffix {out.suffix or '(none)'!r}, but plots are "
            "saved as PNG images; use a path ending in '.png'"
        )
    return out


def _save(fig: Any, out: Path | None, dpi: int) -> None:
    if out is None:
        return
    try:
        with atomic_write([out]) as (tmp,):
            fig.savefig(tmp, format="png", dpi=dpi)
    except OSError as exc:
        if isinstance(exc, DataFileError):
            raise
        raise DataFileError(f"cannot save the plot to {str(out)!r}: {exc}") from exc


def plot_trend(
    trend: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
    dpi: int = 150,
) -> Any:
    """A map of the slopes in a :func:`dpmap.trend` table; returns the matplotlib Figure.

    Rows whose slope is not significant (at the table's false-discovery rate) are drawn
    pale and hatched; the colour scale is symmetric around 0 and stops at the 99th
    percentile of the absolute slopes (arrows on the colour bar show values beyond it).
    ``path``: save as PNG too (written completely or not at all).
    """
    import geopandas as gpd

    out = _png_path(path)
    if not isinstance(trend, gpd.GeoDataFrame) or "slope" not in trend.columns:
        raise SpecError(
            "plot_trend draws the table dpmap.trend(...) returns (a GeoDataFrame with a slope "
            f"column), got {type(trend).__name__}; pass dpmap.trend(releases, ...)"
        )
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch

    slope = trend["slope"].to_numpy(dtype=np.float64)
    finite = np.abs(slope[np.isfinite(slope)])
    vmax = float(np.quantile(finite, 0.99)) if len(finite) else 1.0
    norm = Normalize(-(vmax or 1.0), vmax or 1.0)
    sig = trend["significant"].to_numpy(dtype=bool)
    fig = _figure(8.0, 7.0)
    ax = fig.add_subplot()
    if sig.any():
        trend[sig].plot(ax=ax, column="slope", cmap=TREND_CMAP, norm=norm, edgecolor="0.4", lw=0.3)
    if (~sig).any():
        _draw_not_significant(ax, trend[~sig], norm)
    from matplotlib.cm import ScalarMappable

    extend = "both" if len(finite) and finite.max() > vmax else "neither"
    fig.colorbar(
        ScalarMappable(norm=norm, cmap=TREND_CMAP),
        ax=ax,
        shrink=0.7,
        extend=extend,
        label="change per period (orange: rising, purple: falling)",
    )
    ax.legend(
        handles=[
            Patch(
                facecolor="white",
                edgecolor="0.55",
                hatch=NOT_SIGNIFICANT_HATCH,
                label="not significant",
            ),
        ],
        loc="lower right",
        fontsize=8,
    )
    ax.set_axis_off()
    periods = trend.attrs.get("periods") or []
    span = f" ({periods[0]} to {periods[-1]})" if periods else ""
    ax.set_title(title or f"Trend per period{span}: {int(sig.sum())} of {len(trend)} significant")
    method = str(trend.attrs.get("method", ""))
    fig.text(0.01, 0.0, "\n".join(textwrap.wrap(method, 120)), fontsize=7, va="bottom")
    _save(fig, out, dpi)
    return fig


def _draw_not_significant(ax: Any, rest: Any, norm: Any) -> None:
    """Rows whose slope is not significant: pale fills, hatched on top."""
    rest.plot(
        ax=ax,
        column="slope",
        cmap=TREND_CMAP,
        norm=norm,
        alpha=NOT_SIGNIFICANT_ALPHA,
        edgecolor="0.55",
        lw=0.3,
        missing_kwds={"color": "0.9", "edgecolor": "0.6"},
    )
    # the hatching on top, one compound path per pattern: Agg renders a hatch pattern
    # once per path, so hatching every polygon separately made big maps slow
    nan = ~np.isfinite(rest["slope"].to_numpy(dtype=np.float64))
    for rows, hatch, colour in ((~nan, NOT_SIGNIFICANT_HATCH, "0.6"), (nan, "..", "0.6")):
        if rows.any():
            ax.add_collection(_hatch_overlay(rest.geometry[rows], hatch, colour))


def _hatch_overlay(geometry: Any, hatch: str, colour: str) -> Any:
    """Hatching without fill over ``geometry`` (polygons or multipolygons), as ONE compound
    path whose closed subpaths are every ring."""
    import shapely
    from matplotlib.collections import PathCollection
    from matplotlib.path import Path as MplPath

    rings = shapely.get_rings(shapely.get_parts(np.asarray(geometry, dtype=object)))
    coords, ring = shapely.get_coordinates(rings, return_index=True)
    codes = np.full(len(coords), MplPath.LINETO, dtype=MplPath.code_type)
    starts = np.flatnonzero(np.r_[True, np.diff(ring) != 0])
    codes[starts] = MplPath.MOVETO
    codes[np.r_[starts[1:] - 1, len(coords) - 1]] = MplPath.CLOSEPOLY  # rings repeat their start
    overlay = PathCollection(
        [MplPath(coords, codes)], facecolors="none", edgecolors=colour, linewidths=0.0, hatch=hatch
    )
    if hasattr(overlay, "set_hatchcolor"):  # matplotlib >= 3.10
        overlay.set_hatchcolor(colour)
    if hasattr(overlay, "set_hatch_linewidth"):  # thin, so the pale colours still show
        overlay.set_hatch_linewidth(0.5)
    return overlay


def plot_series(
    series: pd.DataFrame,
    path: str | os.PathLike[str] | None = None,
    *,
    statistic: str = "count",
    keys: list[Any] | None = None,
    title: str | None = None,
    dpi: int = 150,
) -> Any:
    """Small multiples of a :func:`dpmap.series` table: one panel per zone (or cell), the
    estimate per period with its 95% band. At most :data:`MAX_PANELS` panels unless ``keys``
    names the rows to draw. Returns the matplotlib Figure; ``path``: save as PNG too."""
    out = _png_path(path)
    if not isinstance(series, pd.DataFrame) or "period" not in series.columns:
        raise SpecError(
            "plot_series draws the table dpmap.series(...) returns (with a period column), got "
            f"{type(series).__name__}; pass dpmap.series(releases, ...)"
        )
    if statistic not in series.columns:
        raise SpecError(f"the series has no column {statistic!r}; use 'count' or 'sum'")
    key = series.columns[0]
    shown = _panels(series, key, keys)
    ncol = min(4, len(shown))
    nrow = -(-len(shown) // ncol)
    fig = _figure(3.2 * ncol, 2.4 * nrow + 0.6)
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True)
    for ax, k in zip(axes.flat, shown, strict=False):
        part = series[series[key] == k]
        x = np.arange(len(part))
        y = part[statistic].to_numpy(dtype=np.float64)
        moe = part[f"{statistic}_moe"].to_numpy(dtype=np.float64)
        ax.fill_between(x, y - moe, y + moe, color="#f1a340", alpha=0.35, lw=0, label="95%")
        ax.plot(x, y, color="#b35806", marker="o", ms=3, lw=1.2)
        ax.set_title(str(k), fontsize=9)
        ax.set_xticks(x, part["period"].astype(str), rotation=60, fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_axis_off()
    total = series[key].nunique()
    more = f" (first {len(shown)} of {total}; pass keys= to choose)" if len(shown) < total else ""
    fig.suptitle(title or f"{statistic} per period with 95% bands{more}", fontsize=11)
    _save(fig, out, dpi)
    return fig


def _panels(series: pd.DataFrame, key: str, keys: list[Any] | None) -> list[Any]:
    present = list(pd.unique(series[key]))
    if keys is None:
        return present[:MAX_PANELS]
    missing = [k for k in keys if k not in set(present)]
    if missing:
        raise SpecError(
            f"keys names {missing[0]!r}, which is not in the series' {key!r} column; use values "
            f"of that column, e.g. {present[:3]}"
        )
    if not keys:
        raise SpecError("keys=[] names no row to draw; name at least one, or pass keys=None")
    return list(keys)
