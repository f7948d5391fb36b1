"""Release designs: which noisy vectors a release measures and how they become estimates.

Every design follows the :class:`~dpmap.designs.base.Design` protocol, one module each:

- :mod:`~dpmap.designs.flat`: every public cell of a region at one resolution.
- :mod:`~dpmap.designs.discovery`: no public region; OpenDP's threshold chooses the cells (δ > 0).
- :mod:`~dpmap.designs.hierarchical`: several resolutions, consistent by least squares.
- :mod:`~dpmap.designs.privtree`: PrivTree's adaptive split of H3's index tree.
- :mod:`~dpmap.designs.adaptive_grid`: a two-level adaptive grid on H3's index tree.
- :mod:`~dpmap.designs.zones`: one row per public zone (district) instead of H3 cells.
- :mod:`~dpmap.designs.time_levels`: a panel with budget at coarser time levels (quarters,
  years), consistent along the time tree; over a region at one resolution or over zones.
- :mod:`~dpmap.designs.continual_release`: a panel's running totals by the tree mechanism,
  published period by period (``running_totals=True``).

:mod:`~dpmap.designs.adaptive` holds what the two adaptive designs share and
:mod:`~dpmap.designs.hierarchy` the H3 tree arithmetic (level totals, weighted least squares)
that designs and analyses share. :func:`design_for` is the one place where a release's
parameters choose its design, :func:`design_of` the one place where a manifest names it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dpmap import grid
from dpmap.designs.adaptive_grid import AdaptiveGrid
from dpmap.designs.base import Design, DesignOptions
from dpmap.designs.continual_release import ContinualRelease
from dpmap.designs.discovery import Discovery
from dpmap.designs.flat import Flat
from dpmap.designs.hierarchical import Hierarchical
from dpmap.designs.privtree import DEFAULT_INTERNAL_SHARE, PrivTree
from dpmap.designs.time_levels import TimeLevels
from dpmap.designs.zones import ZoneRelease
from dpmap.errors import ReleaseFormatError, SpecError
from dpmap.spec import ReleaseSpec

__all__ = ["DESIGNS", "Design", "DesignOptions", "check_options", "design_for", "design_of"]

#: every design, in the order in which they are asked whether parameters (or a manifest)
#: are theirs: the first that says yes is the one
DESIGNS: tuple[type[Any], ...] = (
    TimeLevels,
    ContinualRelease,
    ZoneRelease,
    AdaptiveGrid,
    PrivTree,
    Hierarchical,
    Discovery,
    Flat,
)


def adaptive_method(adaptive: Any) -> str | None:
    """``adaptive=`` as a method name: None (not adaptive), "privtree" or "grid"."""
    if adaptive is None or isinstance(adaptive, (bool, np.bool_)):
        return "privtree" if adaptive else None
    if adaptive in ("privtree", "grid"):
        return str(adaptive)
    raise SpecError(
        f'adaptive must be True/"privtree" (PrivTree split), "grid" (two-level adaptive grid) '
        f"or False, got {adaptive!r}"
    )


def check_options(spec: ReleaseSpec, options: DesignOptions) -> None:
    """Refuse options that no design could use with ``spec`` (before any ledger or data)."""
    if not spec.running_totals and (options.through is not None or options.previous is not None):
        raise SpecError(
            "through= and previous= apply to a continual release; pass running_totals=True "
            "(with time=, periods=, max_periods=) or drop them"
        )
    if options.integers and not spec.hierarchical:
        raise SpecError(
            "integers=True applies to hierarchical releases (resolution=[...]); flat releases "
            "already publish integer counts"
        )


def design_for(spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions) -> Design:
    """The planned design of a release with these public parameters (no data touched)."""
    if region is None and spec.hierarchical:
        raise SpecError(
            "a hierarchical release (several resolutions) needs a public region; pass region=..."
        )
    if options.adaptive is None:
        if options.adaptive_from is not None:
            raise SpecError("adaptive_from applies to adaptive releases; pass adaptive=True")
        internal = options.internal_share
        if internal is not None and (
            isinstance(internal, bool) or internal != DEFAULT_INTERNAL_SHARE
        ):
            raise SpecError("internal_share applies to adaptive releases; pass adaptive=True")
    design = next(d for d in DESIGNS if d.wants(spec, region, options))
    if spec.histogram and design is Discovery:
        # discovery picks its cells with δ; a histogram per picked cell would need its own
        # threshold analysis (a person's values would show in which cells are kept)
        raise SpecError(
            "quantiles and value_bands need a public set of cells, but private discovery "
            "(no region) chooses its cells from the data; pass region= (a public region) or "
            "zones="
        )
    if spec.histogram and design not in (Flat, Hierarchical, ZoneRelease, PrivTree, AdaptiveGrid):
        raise SpecError(
            "quantiles and value_bands are released over a public region (flat, hierarchical "
            "or adaptive) or over zones; pass region=... (or zones=...)"
        )
    if spec.panel and design not in (Flat, ZoneRelease, TimeLevels, ContinualRelease):
        raise SpecError(
            "a panel over time (time=, periods=) is released over a public region at one "
            "resolution, or over zones; pass region=... (or zones=...) and drop adaptive="
        )
    if spec.people and design not in (Flat, ZoneRelease):
        raise SpecError(
            "people=True is released over a public region at one resolution or over zones (a "
            "coarser cell's distinct persons are not the sum of its children's); pass one "
            "resolution with region=... (or zones=...) and drop adaptive="
        )
    return design.plan(spec, region, options)


def design_of(manifest: dict[str, Any]) -> type[Any]:
    """The design of a written release, from its manifest (this format or an older one)."""
    kind = manifest.get("design")
    for design in DESIGNS:
        if design.kind == kind or (kind is None and design.recognises(manifest)):
            return design
    raise ReleaseFormatError(
        f"the release's manifest names an unknown design {kind!r}; it was written by a newer "
        "dpmap or edited: upgrade dpmap (pip install -U dpmap) or read the publisher's copy"
    )
