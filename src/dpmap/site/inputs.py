"""The releases a website shows, checked and grouped into layers of periods.

:func:`site_layers` reads release files (or takes :class:`~dpmap.Release` objects), turns a
panel into one period per public period (``rel.at(p)``), orders a sequence of monthly
releases by their manifests' ``period`` labels, and groups them: by default every release
of H3 cells forms one layer and every set of public zones another (the demo case,
``2026-*.geojson districts-2026.geojson``: a cells layer of 12 periods and a districts
layer). A group must be one series: the same design, resolution, region, statistics and
unit of count, one release per period, every period labelled. Anything else is refused
with one line naming the files, the difference and the fix (``layers={"Hebei": [...],
"Beijing": [...]}``, on the command line ``--layer NAME=FILE,...``).

Nothing here reads private data or spends budget: the releases are already published.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dpmap.designs.zones import zone_column
from dpmap.errors import DataFileError, ReleaseFormatError, SpecError
from dpmap.io import manifest_path
from dpmap.site.layers import SiteLayer, SitePeriod

__all__ = ["site_layers"]

_FIX = (
    "pass them as separate layers (layers={'NAME': [...], ...}; on the command line "
    "--layer NAME=FILE,FILE)"
)


@dataclass(frozen=True)
class Source:
    """One input: where it came from (a file name or "release 3") and the release."""

    name: str
    release: Any


def site_layers(
    releases: Any,
    *,
    layers: Mapping[str, Sequence[Any]] | None = None,
    include_unbiased: bool = False,
    trends: Any = None,
) -> list[SiteLayer]:
    """The layers of a website: the releases checked, grouped and their periods in order.

    Parameters
    ----------
    releases
        Releases (:class:`~dpmap.Release` objects) or release files (GeoJSON, GeoParquet or
        CSV, each with its ``.manifest.json`` beside it), one or a list. Grouped
        automatically: all releases of H3 cells form one layer, each set of public zones
        another. Empty (or None) when ``layers`` names them.
    layers
        ``{"layer name": [releases or files], ...}``: the grouping, said explicitly (for
        releases of several regions, resolutions or designs).
    include_unbiased
        Let the site carry the unbiased noisy estimates of every row, suppressed ones
        included (as :meth:`Release.to_file` does with ``include_unbiased=True``), so that
        "around here" adds them up without the bias of suppression. A layer gets them only
        when every one of its releases holds them (``SiteLayer.unbiased`` says which).
    trends
        The table of :func:`dpmap.trend` (a DataFrame) or a file written by ``dpmap
        trend``, or a list of them: each is matched to the layer whose cells or zones it
        covers.

    Returns
    -------
    list of :class:`~dpmap.site.layers.SiteLayer`, in the order of the inputs.
    """
    groups = _groups(releases, layers)
    out = []
    used: set[str] = set()
    for name, sources in groups:
        periods = _periods(sources)
        _check_group(sources)
        manifest = periods[0].release.manifest
        kind: Literal["cells", "zones"] = "zones" if zone_column(manifest) else "cells"
        key = _unique(_slug(name or _default_key(manifest)), used)
        unbiased = include_unbiased and all(p.release.estimates is not None for p in periods)
        layer_name = name or _default_name(manifest)
        out.append(SiteLayer(key, layer_name, kind, tuple(periods), unbiased))
    return _with_trends(out, trends)


# ----------------------------------------------------------------------- reading, grouping


def _groups(releases: Any, layers: Mapping[str, Sequence[Any]] | None) -> list[tuple[str, list]]:
    """(layer name or "" for an automatic layer, its sources), in input order."""
    given = _as_list(releases)
    if layers is not None:
        if given:
            raise SpecError(
                f"got {len(given)} release(s) and layers= naming layers; pass every release in "
                "layers={'NAME': [...]} (on the command line: only --layer NAME=FILE,...)"
            )
        if not isinstance(layers, Mapping) or not layers:
            raise SpecError(
                f"layers must map layer names to releases, got {layers!r}; e.g. "
                "layers={'Hebei': ['2026-01.geojson', '2026-02.geojson']}"
            )
        out = []
        for name, items in layers.items():
            if not isinstance(name, str) or not name.strip():
                raise SpecError(f"layer name {name!r} is empty; give every layer a name")
            sources = [_source(x, i) for i, x in enumerate(_as_list(items))]
            if not sources:
                raise SpecError(f"layer {name!r} has no releases; give it at least one file")
            out.append((name.strip(), sources))
        return out
    if not given:
        raise SpecError("no releases to publish; pass release files (or Release objects)")
    grouped: dict[Any, list[Source]] = {}
    for i, item in enumerate(given):
        src = _source(item, i)
        m = src.release.manifest
        by = zone_column(m)
        key = (
            ("cells",)
            if by is None
            else ("zones", (m.get("cell_selection") or {}).get("fingerprint"))
        )
        grouped.setdefault(key, []).append(src)
    return [("", sources) for sources in grouped.values()]


def _as_list(items: Any) -> list[Any]:
    if items is None:
        return []
    if isinstance(items, str | Path) or hasattr(items, "manifest"):
        return [items]
    return list(items)


def _source(item: Any, index: int) -> Source:
    """A release from a Release object or a file (with its manifest beside it)."""
    from dpmap.releases import read_release

    if hasattr(item, "manifest") and hasattr(item, "cells"):
        title = item.manifest.get("title")
        return Source(f"release {index}" + (f" ({title!r})" if title else ""), item)
    if not isinstance(item, str | Path):
        raise SpecError(
            f"item {index} is a {type(item).__name__}, not a release; pass Release objects "
            "or release files"
        )
    path = Path(item)
    if not path.is_file():
        raise DataFileError(f"release file {str(path)!r} does not exist; check the path")
    mpath = manifest_path(path)
    if not mpath.is_file():
        raise ReleaseFormatError(
            f"no manifest {str(mpath)!r} beside {str(path)!r}: a site publishes every "
            "release's manifest; put the .manifest.json written with the release beside it"
        )
    return Source(path.name, read_release(path))


def _periods(sources: list[Source]) -> list[SitePeriod]:
    """The periods of one group, oldest first: a panel's periods, monthly releases by label."""
    periods: list[tuple[SitePeriod, str]] = []
    for src in sources:
        rel = src.release
        if rel.periods is not None:
            periods += [(SitePeriod(p, rel.at(p)), src.name) for p in rel.periods]
        else:
            label = rel.manifest.get("period")
            periods.append((SitePeriod(None if label is None else str(label), rel), src.name))
    if len(periods) > 1:
        unlabelled = [name for p, name in periods if p.label is None]
        if unlabelled:
            raise SpecError(
                f"{unlabelled[0]} has no period label but is one of {len(periods)} releases "
                "of one layer; release each period with period='2026-01', or "
                f"{_FIX}"
            )
        seen: dict[str, str] = {}
        for p, name in periods:
            if p.label in seen:
                raise SpecError(
                    f"{seen[p.label]} and {name} are both period {p.label!r} of one layer; "
                    f"publish one release per period, or {_FIX}"
                )
            seen[str(p.label)] = name
    return [p for p, _ in sorted(periods, key=lambda pn: _period_order(pn[0].label))]


def _period_order(label: str | None) -> tuple[Any, ...]:
    """Periods sort in time when pandas reads them all (months, quarters, years), else as text."""
    import pandas as pd

    if label is None:
        return (2,)
    try:
        period = pd.Period(label)
    except (ValueError, TypeError):
        return (1, str(label))
    if pd.isna(period):
        return (1, str(label))
    return (0, period.start_time, period.end_time, str(label))


def _shape(m: dict[str, Any]) -> dict[str, Any]:
    """What must agree between the releases of one layer, in words for the error."""
    selection = m.get("cell_selection") or {}
    region = (selection.get("region") or {}).get("fingerprint") if selection else None
    bounds = m.get("contribution_bounds") or {}
    return {
        "kind (cells or zones)": "zones" if zone_column(m) else "H3 cells",
        "design": m.get("design"),
        "resolution": m.get("resolution"),
        "region": region if zone_column(m) is None else selection.get("fingerprint"),
        "statistics": sorted(m.get("statistics") or {}),
        "value column": bounds.get("value"),
        "categories": m.get("categories"),
        "unit counted": bounds.get("count_counts"),
    }


def _check_group(sources: list[Source]) -> None:
    """Refuse releases in one layer that are not one series (the first difference named)."""
    first = _shape(sources[0].release.manifest)
    for src in sources[1:]:
        other = _shape(src.release.manifest)
        for what, value in first.items():
            if other[what] != value:
                raise SpecError(
                    f"{sources[0].name} and {src.name} differ in {what} ({value!r} and "
                    f"{other[what]!r}) and cannot be one map layer; {_FIX}"
                )


def _default_key(m: dict[str, Any]) -> str:
    by = zone_column(m)
    if by is not None:
        return f"zones-{by}"
    res = m.get("resolution")
    return f"cells-r{res}" if isinstance(res, int) else "cells"


def _default_name(m: dict[str, Any]) -> str:
    by = zone_column(m)
    if by is not None:
        n = (m.get("cell_selection") or {}).get("zones")
        return f"{n} zones (by {by})" if n is not None else f"Zones (by {by})"
    res = m.get("resolution")
    if isinstance(res, list):
        return f"H3 cells, resolutions {', '.join(map(str, res))}"
    return f"H3 cells, resolution {res}"


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:40] or "layer"


def _unique(key: str, used: set[str]) -> str:
    out, n = key, 2
    while out in used:
        out, n = f"{key}-{n}", n + 1
    used.add(out)
    return out


# ------------------------------------------------------------------------------ trends


def _with_trends(layers: list[SiteLayer], trends: Any) -> list[SiteLayer]:
    """The layers, each with the trend table that covers its cells or zones (if any)."""
    from dataclasses import replace

    tables = _trend_tables(trends)
    out = list(layers)
    for name, table in tables:
        matches = [i for i, layer in enumerate(out) if _covers(table, layer)]
        if len(matches) != 1:
            found = "no layer" if not matches else f"{len(matches)} layers"
            raise SpecError(
                f"the trend {name} matches {found} of the site (by its cells or zones); "
                "compute it with dpmap trend over the same releases as one layer"
            )
        i = matches[0]
        if out[i].trend is not None:
            raise SpecError(f"layer {out[i].name!r} was given two trends; pass one trend per layer")
        _check_trend_periods(name, table, out[i])
        out[i] = replace(out[i], trend=table)
    return out


def _trend_tables(trends: Any) -> list[tuple[str, Any]]:
    import pandas as pd

    if trends is None:
        return []
    items = [trends] if isinstance(trends, str | Path | pd.DataFrame) else list(trends)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, pd.DataFrame):
            out.append((f"table {i}", item))
        elif isinstance(item, str | Path):
            out.append((Path(item).name, read_trend(Path(item))))
        else:
            raise SpecError(
                f"trend {i} is a {type(item).__name__}; pass the table of dpmap.trend or a "
                "file written by dpmap trend"
            )
    for name, table in out:
        missing = {"slope", "slope_moe", "significant"} - set(table.columns)
        if missing:
            raise SpecError(
                f"the trend {name} lacks the columns {sorted(missing)}; pass the table of "
                "dpmap.trend (or a file written by dpmap trend)"
            )
        cats = table["category"].dropna().unique() if "category" in table.columns else []
        if len(cats) > 1:  # one trend per cell on the map: rows of two categories would clash
            raise SpecError(
                f"the trend {name} has a row per cell and category ({len(cats)} categories); "
                "the site shows one trend per cell or zone: pass the rows of one category, "
                f"e.g. table[table['category'] == {str(cats[0])!r}]"
            )
    return out


def read_trend(path: Path) -> Any:
    """A trend table written by ``dpmap trend`` (its manifest says ``dpmap_trend``)."""
    import json

    import pandas as pd

    mpath = manifest_path(path)
    if not path.is_file():
        raise DataFileError(f"trend file {str(path)!r} does not exist; check the path")
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReleaseFormatError(
            f"no readable manifest {str(mpath)!r} beside the trend {str(path)!r} ({exc}); "
            "pass a file written by dpmap trend, with its manifest"
        ) from None
    if not isinstance(meta, dict) or "dpmap_trend" not in meta:
        raise ReleaseFormatError(
            f"{str(path)!r} is not a trend written by dpmap trend (its manifest has no "
            "'dpmap_trend'); compute one with dpmap trend"
        )
    key = meta.get("by") if meta.get("zones") else "cell"
    try:
        if path.suffix.lower() == ".csv":
            table = pd.read_csv(path, dtype={str(key): str, "category": str})
        elif path.suffix.lower() == ".parquet":
            table = pd.read_parquet(path)
        else:
            import geopandas as gpd

            table = pd.DataFrame(gpd.read_file(path))
    except Exception as exc:
        raise DataFileError(f"cannot read the trend {str(path)!r} ({exc})") from None
    table = table.drop(columns=[c for c in ("geometry",) if c in table.columns])
    table.attrs["periods"] = meta.get("periods")
    return table


def _covers(table: Any, layer: SiteLayer) -> bool:
    """Whether a trend table's rows are the cells or zones of ``layer``."""
    m = layer.periods[0].release.manifest
    key = zone_column(m) or "cell"
    if key not in table.columns:
        return False
    ids = set(layer.periods[0].release.cells[key].astype(str))
    mine = set(table[key].astype(str))
    return bool(mine) and mine <= ids


def _check_trend_periods(name: str, table: Any, layer: SiteLayer) -> None:
    labels = table.attrs.get("periods")
    shown = [p.label for p in layer.periods]
    if labels and None not in shown and [str(x) for x in labels] != shown:
        raise SpecError(
            f"the trend {name} covers the periods {labels[0]} to {labels[-1]} "
            f"({len(labels)}) but layer {layer.name!r} shows {shown[0]} to {shown[-1]} "
            f"({len(shown)}); compute the trend over the releases of the layer"
        )
