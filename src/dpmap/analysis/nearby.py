""" "How much is around here?": whole published cells near a point, never a location."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import h3
import numpy as np
import pandas as pd
import shapely

from dpmap._privacy.postprocess import Z95
from dpmap.analysis.totals import Rows, hidden_for_public, rows_of, total_margins, weighted_totals
from dpmap.analysis.zones import equal_area
from dpmap.errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    from dpmap.releases import Release


@dataclass(frozen=True)
class CategoryAround:
    """One category's totals in the cells around a point."""

    category: str
    count: float
    count_moe: float
    sum: float | None = None
    sum_moe: float | None = None


@dataclass(frozen=True)
class Around:
    """What a release says about the whole H3 cells overlapping a circle around a point.

    ``count``/``sum`` are unbiased noisy totals over ``cells`` (every released cell that
    overlaps the geodesic disk of ``radius_m`` around (``lat``, ``lng``)), with 95%
    margins. They are totals over those **whole cells** (``area_km2`` in all, usually much
    more than the circle): not counts within ``radius_m``, which dpmap never publishes.
    ``coverage`` is the share of the circle's area that released cells cover (below 1
    near the edge of the published area). ``categories`` holds per-category totals for
    a release with a category breakdown (``count`` is then the total over categories).

    Display rule (one for every number of the answer): the sentence (``str``) shows each
    total within the range its true value can take — counts, and sums of a value whose
    public lower bound is ≥ 0, are shown as 0 when their noisy value is negative (a sum
    of values ≤ 0 is shown as 0 when positive; a sum of values of both signs as it is).
    The sentence says so whenever it moved a number. The fields and :meth:`as_dict`
    keep the unbiased values (which may be negative: that is what adding up needs);
    ``as_dict()["display"]`` holds the shown values and ``display_rule`` the rule.
    """

    lat: float
    lng: float
    radius_m: float
    count: float
    count_moe: float
    cells: tuple[str, ...]
    area_km2: float
    coverage: float
    resolution: int | None
    sum: float | None = None
    sum_moe: float | None = None
    value: str | None = None
    categories: tuple[CategoryAround, ...] | None = None
    noun: str = "records"
    value_bounds: tuple[float, float] | None = None

    @property
    def display_rule(self) -> str:
        """The display rule, in words (the same for every number of the answer)."""
        lo, hi = self.value_bounds or (0.0, math.inf)
        if self.sum is None or lo >= 0:
            return "noisy totals below 0 are shown as 0"
        if hi <= 0:
            return "noisy counts below 0, and noisy sums above 0, are shown as 0"
        return (
            "noisy counts below 0 are shown as 0 (sums can be negative and are shown as they are)"
        )

    def _show_count(self, x: float) -> float:
        return max(x, 0.0)

    def _show_sum(self, x: float) -> float:
        lo, hi = self.value_bounds or (0.0, math.inf)
        return max(x, 0.0) if lo >= 0 else min(x, 0.0) if hi <= 0 else x

    def _shown(self) -> list[tuple[float, float]]:
        """(unbiased, shown) for every number the sentence prints."""
        pairs = [(self.count, self._show_count(self.count))]
        if self.sum is not None:
            pairs.append((self.sum, self._show_sum(self.sum)))
        for c in self.categories or ():
            pairs.append((c.count, self._show_count(c.count)))
            if c.sum is not None:
                pairs.append((c.sum, self._show_sum(c.sum)))
        return pairs

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cells"] = list(self.cells)
        if self.value_bounds is not None:
            out["value_bounds"] = list(self.value_bounds)
        out["display"] = {"count": self._show_count(self.count)}
        if self.sum is not None:
            out["display"]["sum"] = self._show_sum(self.sum)
        if self.categories is not None:
            out["categories"] = [
                {
                    **asdict(c),
                    "display": {"count": self._show_count(c.count)}
                    | ({"sum": self._show_sum(c.sum)} if c.sum is not None else {}),
                }
                for c in self.categories
            ]
        out["display_rule"] = self.display_rule
        out["statement"] = str(self)
        return out

    def __str__(self) -> str:
        n = len(self.cells)
        digits = 0 if self.count_moe >= 1 else 1
        cells = "the one whole H3 cell" if n == 1 else f"the {n} whole H3 cells"
        verb = "overlaps" if n == 1 else "overlap"
        radius = _fmt_distance(self.radius_m)
        text = (
            f"about {_fmt(self._show_count(self.count), digits)} ± {_fmt(self.count_moe, digits)} "
            f"{self.noun} in {cells} ({format_area(self.area_km2)} km²) that {verb} the {radius} "
            f"circle — not a count within {radius}"
        )
        if self.sum is not None and self.sum_moe is not None:
            d = 0 if self.sum_moe >= 1 else 1
            text += (
                f"; their {self.value or 'value'} adds up to about "
                f"{_fmt(self._show_sum(self.sum), d)} ± {_fmt(self.sum_moe, d)}"
            )
        if self.coverage < 0.995:
            text += (
                f" (the circle reaches beyond the published area: released cells cover "
                f"{self.coverage:.0%} of it)"
            )
        if any(shown != raw for raw, shown in self._shown()):
            text += f" ({self.display_rule})"
        for c in self.categories or ():
            d = 0 if c.count_moe >= 1 else 1
            text += (
                f"\n  {c.category}: about {_fmt(self._show_count(c.count), d)} ± "
                f"{_fmt(c.count_moe, d)}"
            )
            if c.sum is not None and c.sum_moe is not None:
                ds = 0 if c.sum_moe >= 1 else 1
                text += (
                    f", {self.value or 'value'} about {_fmt(self._show_sum(c.sum), ds)} ± "
                    f"{_fmt(c.sum_moe, ds)}"
                )
        return text


def _fmt(x: float, digits: int) -> str:
    s = f"{x:,.{digits}f}"
    return "0" if s in ("-0", "-0.0") else s


def format_area(km2: float) -> str:
    return f"{km2:,.0f}" if km2 >= 100 else f"{km2:.3g}"


def _fmt_distance(m: float) -> str:
    return f"{m:g} m" if m < 1000 else f"{m / 1000:g} km"


def finite_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SpecError(f"{what} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise SpecError(f"{what} must be a finite number, got {value!r}")
    return v


def _disk(lat: float, lng: float, radius_m: float, n: int = 64) -> Any:
    """A lon/lat polygon around the geodesic disk: n vertices at radius / cos(π/n), so its
    straight edges stay outside the circle (every cell overlapping the disk overlaps it)."""
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    az = np.linspace(0.0, 360.0, n, endpoint=False)
    lons, lats, _ = geod.fwd(
        np.full(n, lng), np.full(n, lat), az, np.full(n, radius_m / math.cos(math.pi / n))
    )
    lons = np.asarray(lons)
    if lons.max() - lons.min() > 180 or abs(lat) + radius_m / 111_000 >= 89.9:
        raise SpecError(
            "the circle crosses the antimeridian or reaches a pole, which around() does not "
            "support; use a smaller radius_m"
        )
    return shapely.Polygon(np.column_stack([lons, lats]))


def _candidate_cells(
    rows: Rows, index: pd.Index, present: list[int], lat: float, lng: float, radius_m: float
) -> list[int]:
    """Rows of every cell that may overlap the disk (a superset, cheap to find): the H3 rings
    around the point's cell at each resolution present, or every cell when that is fewer."""
    candidates: list[int] = []
    for r in present:
        centre = h3.latlng_to_cell(lat, lng, r)
        edge = min(h3.edge_length(e, unit="m") for e in h3.origin_to_directed_edges(centre))
        # a cell overlapping the disk has its centre within radius + 2 edges of the centre
        # cell's centre; k rings reach at least 1.5·k edges (0.8: edges vary between cells)
        k = math.ceil((radius_m + 2 * edge) / (1.5 * edge * 0.8)) + 1
        level = np.flatnonzero(rows.resolutions == r)
        if 3 * k * (k + 1) + 1 >= len(level):
            candidates.extend(level.tolist())
        else:
            pos = index.get_indexer(list(h3.grid_disk(centre, k)))
            candidates.extend(int(p) for p in pos if p >= 0)
    return candidates


def _around_of(
    rows: Rows,
    cand: np.ndarray,
    where: tuple[float, float, float],
    coverage: float,
    present: list[int],
    noun: str,
) -> Around:
    """The totals of the cells ``cand`` (rows of ``rows``) with their margins, as an Around."""
    lat, lng, radius_m = where
    ones = np.ones(len(cand))
    group = np.zeros(len(cand), dtype=np.int64)
    single = np.array([len(cand) == 1])
    totals: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for stat in rows.stats:
        est, var = weighted_totals(rows, stat, cand, group, ones, 1)
        totals[stat] = (est[0], var[0])
    count, count_var = totals["count"]
    moe_c = total_margins(rows, "count", count_var[None, :], single)[0]
    cats = None
    has_sum = "sum" in totals
    if has_sum:
        moe_s = total_margins(rows, "sum", totals["sum"][1][None, :], single)[0]
    if rows.categories is not None:
        cats = tuple(
            CategoryAround(
                category=c,
                count=float(count[k]),
                count_moe=float(moe_c[k]),
                sum=float(totals["sum"][0][k]) if has_sum else None,
                sum_moe=float(moe_s[k]) if has_sum else None,
            )
            for k, c in enumerate(rows.categories)
        )
    one = rows.ncat == 1
    return Around(
        lat=lat,
        lng=lng,
        radius_m=radius_m,
        count=float(count.sum()),
        count_moe=float(moe_c[0]) if one else float(Z95 * math.sqrt(count_var.sum())),
        cells=tuple(str(c) for c in rows.cells[cand]),
        area_km2=float(sum(h3.cell_area(str(c), unit="km^2") for c in rows.cells[cand])),
        coverage=coverage,
        resolution=present[0] if len(present) == 1 else None,
        sum=float(totals["sum"][0].sum()) if has_sum else None,
        sum_moe=(
            (float(moe_s[0]) if one else float(Z95 * math.sqrt(totals["sum"][1].sum())))
            if has_sum
            else None
        ),
        value=rows.value_name,
        categories=cats,
        noun=noun.strip(),
        value_bounds=rows.value_bounds if has_sum else None,
    )


def around(
    rel: Release,
    lat: float,
    lng: float,
    radius_m: float = 500.0,
    *,
    resolution: int | None = None,
    noun: str = "records",
) -> Around:
    """Totals of the released cells that overlap a circle around a point.

    Answers "how much is around here?" honestly: the result adds up every released cell
    that overlaps the geodesic disk of ``radius_m`` metres around (``lat``, ``lng``), and
    says so — it is a total over those whole cells (see :class:`Around`), never a count
    within ``radius_m``. Unbiased noisy estimates are used (suppressed cells included);
    margins as in :func:`aggregate_to` (exact for a single cell of a flat release, exact
    variance for a hierarchical one, normal approximation otherwise).

    Parameters
    ----------
    lat, lng
        The point, in degrees. It must lie in a released cell (else :class:`SpecError`).
    radius_m
        Radius of the circle in metres (> 0).
    resolution
        Hierarchical releases only: the level to use (default: the finest).
    noun
        What the count counts, for the sentence (e.g. ``"debts"``).

    Privacy
    -------
    Post-processing of the release's noisy values: no data read, no budget spent.
    """

    lat = finite_number(lat, "lat")
    lng = finite_number(lng, "lng")
    radius_m = finite_number(radius_m, "radius_m")
    if not -90 <= lat <= 90:
        raise SpecError(f"lat must be in [-90, 90] degrees, got {lat!r}")
    if not -180 <= lng <= 180:
        raise SpecError(f"lng must be in [-180, 180] degrees, got {lng!r}")
    if radius_m <= 0:
        raise SpecError(f"radius_m must be > 0 metres, got {radius_m!r}; e.g. radius_m=500")
    if not isinstance(noun, str) or not noun.strip():
        raise SpecError(f"noun must be a non-empty word such as 'debts', got {noun!r}")
    rows = rows_of(rel, resolution)
    index = pd.Index(rows.cells)
    present = sorted({int(r) for r in np.unique(rows.resolutions)})
    finest = h3.latlng_to_cell(lat, lng, present[-1])
    own = {h3.latlng_to_cell(lat, lng, r) for r in present}  # geometric containment
    own |= {h3.cell_to_parent(finest, r) for r in present}  # and along the index tree
    if not (index.get_indexer(sorted(own)) >= 0).any():
        raise SpecError(
            f"the point ({lat:.6g}, {lng:.6g}) is outside the released area (it lies in no released "
            "H3 cell); pick a point inside the release's region"
        )
    disk = _disk(lat, lng, radius_m)
    candidates = _candidate_cells(rows, index, present, lat, lng, radius_m)
    cand = np.unique(np.asarray(candidates, dtype=np.int64))
    cand = cand[shapely.intersects(rows.geometry[cand], disk)]
    cand = cand[np.argsort(rows.cells[cand])]
    if not rows.unbiased and rows.hidden[cand].any():
        raise hidden_for_public(rows.hidden[cand])
    pieces = shapely.intersection(rows.geometry[cand], disk)
    coverage = float(
        min(
            1.0,
            equal_area(pieces).sum() / equal_area(np.array([shapely.segmentize(disk, 0.01)]))[0],
        )
    )
    return _around_of(rows, cand, (lat, lng, radius_m), coverage, present, noun)
