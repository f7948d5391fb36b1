"""What a website shows: layers (one grid or zone set each) made of periods (one release each)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    from dpmap.releases import Release


@dataclass(frozen=True)
class SitePeriod:
    """One period of a layer: an ordinary (non-panel) release.

    ``label`` is the period's label ("2026-03"), or None when the layer has one release
    that is not part of a series. A panel contributes one SitePeriod per period
    (``panel.at(label)``); a sequence of monthly releases one per release.
    """

    label: str | None
    release: Release


@dataclass(frozen=True)
class SiteLayer:
    """One map layer of the website: releases of the same design on the same cells or zones.

    ``key`` is a short identifier safe in file names and HTML ids ("cells-r7",
    "zones-districts"); ``name`` is what the layer switcher shows ("H3 cells, resolution
    7", "Districts"). ``periods`` are in time order. ``unbiased`` says whether the site may
    carry the unbiased noisy estimates of suppressed rows (so that "around here" can add
    them up without bias); without them an answer that needs a suppressed cell is refused,
    as :meth:`Release.around` refuses it for a file written without them. ``trend`` is the
    table of :func:`dpmap.trend` for this layer when the agency computed one (else None).
    """

    key: str
    name: str
    kind: Literal["cells", "zones"]
    periods: tuple[SitePeriod, ...]
    unbiased: bool = False
    trend: Any = None
