"""Frozen, keyword-only release parameters that validate themselves.

A :class:`ReleaseSpec` holds everything about a release except the data and the region:
resolution, privacy parameters, column names, contribution bounds, statistics,
mechanism and suppression rule. It can be planned and explained without data
(:func:`dpmap.explain`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import Any

import numpy as np

from dpmap.errors import SpecError
from dpmap.grid import Zones, check_resolution
from dpmap.periods import Periods, check_periods
from dpmap.valuetree import ValueTree

__all__ = [
    "OTHER_CATEGORY",
    "ZONE_LEVEL",
    "Mechanism",
    "ReleaseSpec",
    "Selection",
    "band_name",
    "quantile_name",
]

#: The bucket that receives rows whose category is not in the public ``categories`` list.
OTHER_CATEGORY = "other"

#: Most categories (``"other"`` included) a release accepts: a (cell, category) key packs
#: the category index into the 18 low bits of the H3 index (see mechanisms.encode_keys),
#: so at most 2**18 indices exist; the cap stays well below that, and a map with more
#: categories than this would be all noise anyway.
MAX_CATEGORIES = 10_000

#: The one level of a zone release (not an H3 resolution: zones are not cells). Sensitivities
#: of a level depend only on its distance to the finest level, which is 0 here.
ZONE_LEVEL = -1

#: Largest |bound| accepted for a value column: sums stay exact in int64 for any
#: realistic number of records per cell.
MAX_ABS_BOUND = 10**12


def quantile_name(p: float) -> str:
    """The column of quantile ``p``: ``q50`` for 0.5, ``q2.5`` for 0.025."""
    return f"q{p * 100:g}"


def band_name(a: float, b: float) -> str:
    """The column of the value band [a, b): ``band_1000_5000``."""
    return f"band_{a:g}_{b:g}"


def _time_level_pairs(levels: Any) -> tuple[tuple[str, float], ...]:
    """``{"Q": 0.2, "Y": 0.2}`` as ``(("Q-DEC", 0.2), ("Y-DEC", 0.2))``: pandas' names of the
    frequencies, each share in (0, 1), no level twice."""
    import pandas as pd

    if isinstance(levels, tuple) and all(isinstance(x, tuple) and len(x) == 2 for x in levels):
        levels = dict(levels)  # already normalised (a spec rebuilt from another)
    if not isinstance(levels, dict):
        raise SpecError(
            f"time_levels must map coarser frequencies to budget shares, got {levels!r}; e.g. "
            "time_levels={'Y': 0.5} (half of each statistic's budget on the yearly totals)"
        )
    out: dict[str, float] = {}
    for freq, share in levels.items():
        try:
            name = pd.Period("2000-01-01", freq=str(freq)).freqstr
        except (ValueError, TypeError, AttributeError):
            raise SpecError(
                f"time_levels: {freq!r} is not a pandas period frequency; use e.g. 'Q' "
                "(quarters), 'Y' (years) or 'M' (months)"
            ) from None
        value = _finite_number(share, f"the time_levels share of {freq!r}")
        if not 0 < value < 1:
            raise SpecError(
                f"the time_levels share of {freq!r} must be strictly between 0 and 1, got "
                f"{share!r}; e.g. 0.2"
            )
        if name in out:
            raise SpecError(f"time_levels name the level {name} twice; list each level once")
        out[name] = value
    return tuple(out.items())


def _check_quantiles(values: Any) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise SpecError(f"quantiles must be a list of probabilities, got {values!r}; e.g. [0.5]")
    ps = [_finite_number(p, "a quantile") for p in values]
    if not ps:
        raise SpecError("quantiles=[] lists no probability; pass e.g. quantiles=[0.25, 0.5, 0.75]")
    for p in ps:
        if not 0 < p < 1:
            raise SpecError(
                f"quantiles must lie strictly between 0 and 1, got {p!r}; e.g. 0.5 for the median"
            )
    names = [quantile_name(p) for p in ps]
    if len(set(names)) != len(names):
        raise SpecError(f"quantiles contain duplicates: {ps!r}; list each probability once")
    return tuple(sorted(ps))


def _check_bands(values: Any, tree: ValueTree) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise SpecError(f"value_bands must be a list of band edges, got {values!r}")
    edges = [_finite_number(v, "a value band edge") for v in values]
    if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
        raise SpecError(
            f"value_bands must be at least two strictly increasing edges, got {edges!r}; "
            "e.g. [0, 1000, 5000, 20000, 50000]"
        )
    if edges[0] < tree.lo or edges[-1] > tree.hi:
        raise SpecError(
            f"value_bands {edges!r} leave the bounds ({tree.lo}, {tree.hi}); keep every edge "
            "inside the bounds"
        )
    for e in edges:
        if tree.edge_position(e) is None:
            below, above = tree.nearest_edges(e)
            raise SpecError(
                f"value band edge {e:g} is not an edge of the public value tree (bands of width "
                f"{(tree.hi - tree.lo) / tree.leaves:g} from {tree.lo}); use {below:g} or {above:g}"
            )
    return tuple(edges)


class _StrEnum(StrEnum):
    @classmethod
    def parse(cls, value: Any, what: str) -> Any:
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            choices = ", ".join(repr(m.value) for m in cls)
            raise SpecError(f"{what} must be one of {choices}, got {value!r}") from None


class Mechanism(_StrEnum):
    """Noise distribution: discrete Laplace (pure ε-DP) or discrete Gaussian (zCDP → (ε, δ))."""

    LAPLACE = "laplace"
    GAUSSIAN = "gaussian"


class Selection(_StrEnum):
    """How a person's kept records are chosen when they exceed the contribution bounds.

    ``random``: a fresh random priority for every record, drawn from the operating
    system's randomness at each release (the default). It cannot be seeded: a seeded
    "random" order would be a function of where rows sit in the file, and one extra person
    inserted before the others could then move which records everyone else keeps.
    ``hash``: a keyed hash of the record's own content (person, cell, category, value),
    reproducible for a given ``seed`` (the same records are kept on every engine, every
    run and in any row order).
    Either way the choice depends only on that person's own records.
    """

    RANDOM = "random"
    HASH = "hash"


def _finite_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SpecError(f"{what} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise SpecError(f"{what} must be a finite number, got {value!r}; pass e.g. 1.0")
    return out


def _whole(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SpecError(f"{what} must be a whole number ≥ {minimum}, got {value!r}")
    if int(value) < minimum:
        raise SpecError(f"{what} must be ≥ {minimum}, got {value!r}")
    return int(value)


def _column(value: Any, what: str, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or value == "":
        raise SpecError(f"{what} must be a column name (a non-empty string), got {value!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class ReleaseSpec:
    """Everything about a release except the data and the public region.

    Parameters
    ----------
    resolution
        H3 resolution, 0..9; or several (e.g. ``[5, 6, 7]``) for a hierarchical release
        whose levels are made consistent along H3's index hierarchy.
    epsilon, delta
        Total privacy budget of the release. ``delta > 0`` is needed for the Gaussian
        mechanism and for releases without a public region (private cell discovery).
    lat, lng
        Coordinate column names (degrees, WGS84).
    person
        Column identifying the privacy unit (one person). ``None``: every row is a person.
    value, bounds
        Optional value column and its public clamping bounds ``(lo, hi)`` in whole units.
    max_cells, max_records_per_cell
        Contribution bounds per person: L0 (cells) and L∞ (records per cell).
    category, categories
        Optional breakdown column and its public list of categories; rows with another
        category are counted under ``"other"``.
    mechanism
        ``"laplace"`` or ``"gaussian"``.
    suppress_below
        Noisy-count threshold below which a cell's numbers are hidden. ``None``: the
        count's own 95% margin of error. ``False``: publish every noisy value.
    count_share
        Share of the budget spent on counts when a value column is used (the rest on sums).
    selection, seed
        How kept records are chosen (see :class:`Selection`) and the key for ``"hash"``.
    level_split
        Hierarchical releases only: how each statistic's budget is split across levels.
        ``"geometric"`` (default): level r gets a share ∝ 7^(r/6), finer levels more (the
        optimum for range queries on a 7-ary tree, after Cormode et al. 2012);
        ``"even"``; or one weight per level (coarse to fine), normalised to sum to 1.
    zones
        A zone release: the public, non-overlapping zones (:class:`dpmap.grid.Zones`, from
        :func:`dpmap.grid.to_zones`), one published row each, instead of H3 cells.
    quantiles, value_bands, histogram_share
        Public probabilities in (0, 1) (e.g. ``(0.25, 0.5, 0.75)``) and public band edges
        (increasing, inside ``bounds``, edges of :class:`dpmap.valuetree.ValueTree`): each row
        also gets a noisy hierarchical histogram of its clamped values, which gets
        ``histogram_share`` of ε (counts and sums share the rest as ``count_share`` says).
    people, people_share
        Also publish, per row, the number of distinct persons with at least one kept record
        in it (``people``, beside the record ``count``; PipelineDP's "privacy id count"),
        noised with ``people_share`` of the ε left after the histogram (count and sum share
        the rest). Needs ``person`` and ``max_records_per_cell > 1`` (otherwise it equals
        the count).
    time, periods, max_periods
        A panel release: the date column, the PUBLIC periods (:mod:`dpmap.periods`: a pandas
        PeriodIndex or explicit edges, never read from the data) and the most periods one
        person may count in. One row per (cell, period); each person keeps at most
        ``max_periods`` periods, ``max_cells`` cells in each and ``max_records_per_cell``
        records per (cell, period).
    time_levels
        A panel with budget at coarser time levels: coarser calendar frequency -> share of
        each statistic's budget (e.g. ``{"Y": 0.5}``; the panel's own periods get the rest). Needs periods of one frequency that nest in each level; not with
        ``people``, ``quantiles`` or ``value_bands`` (see :meth:`_check_time_levels`).
        Normalised to ``((freq, share), ...)`` with pandas' frequency names (``"Q-DEC"``).
    running_totals
        A panel released continually (:mod:`dpmap.designs.continual_release`): running
        totals by the binary-tree mechanism, published period by period. Each person then
        keeps their EARLIEST ``max_periods`` periods (:attr:`earliest_periods`), a choice
        that later periods cannot change.
    """

    resolution: Any = None
    epsilon: float
    delta: float = 0.0
    lat: str = "lat"
    lng: str = "lng"
    person: str | None = None
    value: str | None = None
    bounds: tuple[int, int] | None = None
    max_cells: int = 1
    max_records_per_cell: int = 1
    category: str | None = None
    categories: tuple[str, ...] | None = None
    mechanism: Mechanism = Mechanism.LAPLACE
    suppress_below: float | bool | None = None
    count_share: float = 0.5
    selection: Selection = Selection.RANDOM
    seed: int | None = field(default=None, repr=False)
    level_split: str | tuple[float, ...] = "geometric"
    #: a zone release: the public partition (:class:`dpmap.grid.Zones`) instead of H3 cells
    zones: Zones | None = field(default=None, repr=False)
    quantiles: tuple[float, ...] | None = None
    value_bands: tuple[float, ...] | None = None
    histogram_share: float = 0.5
    people: bool = False
    people_share: float = 0.5
    time: str | None = None
    periods: Periods | None = field(default=None, repr=False)
    max_periods: int | None = None
    time_levels: Any = None
    running_totals: bool = False

    def __post_init__(self) -> None:
        # one checker per group of parameters, in this order (the first problem is reported)
        self._check_resolutions()
        self._check_privacy()
        self._check_columns()
        self._check_value()
        self._set("max_cells", _whole(self.max_cells, "max_cells", 1))
        self._set(
            "max_records_per_cell", _whole(self.max_records_per_cell, "max_records_per_cell", 1)
        )
        self._check_breakdown()
        self._check_suppression()
        self._check_count_share()
        self._check_distribution()
        self._check_people()
        self._check_panel()
        self._check_time_levels()
        self._check_running_totals()
        self._check_selection()
        self._check_distinct_columns()

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # a frozen dataclass normalises its own fields

    def _check_resolutions(self) -> None:
        """One resolution, or several (sorted, duplicates dropped); and the level split.

        A zone release has no resolution (its one level is :data:`ZONE_LEVEL`)."""
        if self.zones is not None:
            if self.resolution is not None:
                raise SpecError(
                    f"zones= and resolution={self.resolution!r} exclude each other: a zone "
                    "release publishes one row per zone, not H3 cells; drop the resolution"
                )
            if not isinstance(self.zones, Zones):
                raise SpecError(
                    "zones must be checked first: pass them to dpmap.release(zones=...)"
                )
            self._set("level_split", self._check_level_split(self.level_split, 1))
            return
        if self.resolution is None:
            raise SpecError(
                "resolution is missing; pass resolution=<H3 resolution 0..9> (e.g. 7), or "
                "zones=<GeoDataFrame> with by='<name column>' for one row per zone"
            )
        if isinstance(self.resolution, (list, tuple, np.ndarray)):
            levels = sorted({check_resolution(r) for r in self.resolution})
            if not levels:
                raise SpecError("resolution=[] lists no resolution; pass e.g. resolution=[5, 6, 7]")
            self._set("resolution", tuple(levels) if len(levels) > 1 else levels[0])
        else:
            self._set("resolution", check_resolution(self.resolution))
        self._set("level_split", self._check_level_split(self.level_split, len(self.levels)))

    def _check_privacy(self) -> None:
        """ε > 0, 0 ≤ δ < 1, and a mechanism that the δ allows."""
        eps = _finite_number(self.epsilon, "epsilon")
        if eps <= 0:
            raise SpecError(f"epsilon must be > 0, got {self.epsilon!r}; e.g. epsilon=1.0")
        self._set("epsilon", eps)
        delta = _finite_number(self.delta, "delta")
        if not 0 <= delta < 1:
            raise SpecError(
                f"delta must be in [0, 1), got {self.delta!r}; use delta=0 for pure ε-DP or a "
                "small value such as 1e-6"
            )
        self._set("delta", delta)
        mech = Mechanism.parse(self.mechanism, "mechanism")
        self._set("mechanism", mech)
        if mech is Mechanism.GAUSSIAN and delta == 0:
            raise SpecError(
                "mechanism='gaussian' needs delta > 0 (it gives (ε, δ)-DP); pass e.g. delta=1e-6, "
                "or use mechanism='laplace' for pure ε-DP"
            )

    def _check_columns(self) -> None:
        self._set("lat", _column(self.lat, "lat", optional=False))
        self._set("lng", _column(self.lng, "lng", optional=False))
        self._set("person", _column(self.person, "person", optional=True))
        self._set("value", _column(self.value, "value", optional=True))
        self._set("category", _column(self.category, "category", optional=True))

    def _check_value(self) -> None:
        """A value column comes with public bounds, and bounds with a value column."""
        if self.value is not None and self.bounds is None:
            raise SpecError(
                f"value={self.value!r} needs public bounds to clamp it; pass bounds=(lo, hi), e.g. "
                "bounds=(0, 50_000)"
            )
        if self.bounds is not None:
            if self.value is None:
                raise SpecError("bounds were given without a value column; pass value='<column>'")
            self._set("bounds", self._check_bounds(self.bounds))

    def _check_breakdown(self) -> None:
        """A category column comes with the public list of categories, and vice versa."""
        if self.category is not None:
            if self.categories is None:
                raise SpecError(
                    f"category={self.category!r} needs the public list of categories (never read "
                    "from the data); pass categories=['a', 'b', ...]"
                )
            self._set("categories", self._check_categories(self.categories))
        elif self.categories is not None:
            raise SpecError(
                "categories were given without a category column; pass category='<column>'"
            )

    def _check_suppression(self) -> None:
        sb = self.suppress_below
        if sb is True:
            self._set("suppress_below", None)
        elif sb is not None and sb is not False:
            self._set("suppress_below", _finite_number(sb, "suppress_below"))

    def _check_count_share(self) -> None:
        share = _finite_number(self.count_share, "count_share")
        if not 0 < share < 1:
            raise SpecError(
                f"count_share must be strictly between 0 and 1, got {self.count_share!r}"
            )
        self._set("count_share", share)

    def _check_distribution(self) -> None:
        """Quantiles and value bands: public lists, with a value column and bounds."""
        if self.quantiles is None and self.value_bands is None:
            return
        what = "quantiles" if self.quantiles is not None else "value_bands"
        if self.value is None or self.bounds is None:
            raise SpecError(
                f"{what} need a value column and its bounds; pass value='<column>' and "
                "bounds=(lo, hi), e.g. value='amount', bounds=(0, 50_000)"
            )
        if self.bounds[0] == self.bounds[1]:
            raise SpecError(
                f"{what} need bounds with lo < hi, got {self.bounds!r}: every value would be "
                "the same; widen the bounds"
            )
        if self.hierarchical and self.categories is not None:
            raise SpecError(
                f"{what} with a category breakdown are released for one resolution (or zones); "
                f"pass one resolution, e.g. resolution={self.levels[-1]}, or drop category="
            )
        if self.quantiles is not None:
            self._set("quantiles", _check_quantiles(self.quantiles))
        if self.value_bands is not None:
            self._set("value_bands", _check_bands(self.value_bands, self.value_tree))
        share = _finite_number(self.histogram_share, "histogram_share")
        if not 0 < share < 1:
            raise SpecError(
                f"histogram_share must be strictly between 0 and 1, got {self.histogram_share!r}"
            )
        self._set("histogram_share", share)

    def _check_people(self) -> None:
        """``people``: a flag that needs a person column and more than one record per cell."""
        if not isinstance(self.people, (bool, np.bool_)):
            raise SpecError(f"people must be True or False, got {self.people!r}")
        self._set("people", bool(self.people))
        share = _finite_number(self.people_share, "people_share")
        if not 0 < share < 1:
            raise SpecError(
                f"people_share must be strictly between 0 and 1, got {self.people_share!r}"
            )
        self._set("people_share", share)
        if not self.people:
            return
        if self.person is None:
            raise SpecError(
                "people=True counts distinct persons and needs the person column; pass "
                "person='<column>' (without it every row is a person and people equals count)"
            )
        if self.max_records_per_cell == 1:
            raise SpecError(
                "people=True with max_records_per_cell=1 would spend budget on the record count "
                "again (one record per person and cell: people equals count); pass "
                "max_records_per_cell > 1 (e.g. 5) to count debts beside debtors, or drop "
                "people=True"
            )

    def _check_panel(self) -> None:
        """A panel: a time column with its public periods and, per person, ``max_periods``."""
        self._set("time", _column(self.time, "time", optional=True))
        if self.time is None:
            for name in ("periods", "max_periods"):
                if getattr(self, name) is not None:
                    raise SpecError(
                        f"{name}= applies to a panel release over time; pass time='<date column>' "
                        f"with periods= and max_periods=, or drop {name}="
                    )
            return
        if self.periods is None:
            raise SpecError(
                f"time={self.time!r} needs the PUBLIC periods (never read from the data); pass "
                "periods=pd.period_range('2026-01', '2026-12', freq='M') or edges"
            )
        self._set("periods", check_periods(self.periods))
        if self.max_periods is None:
            if self.person is not None:
                raise SpecError(
                    f"a panel over {len(self.periods)} periods needs max_periods, the most periods "
                    f"one person may count in; pass e.g. max_periods={len(self.periods)} (every "
                    "period) or fewer for less noise"
                )
        else:
            self._set("max_periods", _whole(self.max_periods, "max_periods", 1))
        if self.hierarchical:
            raise SpecError(
                f"a panel (time=) is released at one resolution or over zones, got "
                f"resolution={list(self.levels)!r}; pass one resolution, e.g. "
                f"resolution={self.levels[-1]}"
            )

    def _check_time_levels(self) -> None:
        """``time_levels``: coarser calendar frequencies of a panel, each with a budget share.

        Refused with quantiles/value bands (their histogram is per period; a coarse level
        would need its own histogram mechanism) and with ``people`` (a quarter's distinct
        persons are not the sum of its months'). Whether each level nests above the periods
        is checked by the design (:func:`dpmap.designs.timeline.time_tree`)."""
        levels = self.time_levels
        if levels is None or (isinstance(levels, dict | tuple | list) and len(levels) == 0):
            self._set("time_levels", None)
            return
        if self.periods is None:
            raise SpecError(
                f"time_levels={levels!r} applies to a panel release; pass time='<date column>', "
                "periods= and max_periods= as well, or drop time_levels="
            )
        if self.periods.freq is None:
            raise SpecError(
                "time_levels need periods of one calendar frequency (a pd.period_range), but "
                "the periods are explicit edges; pass e.g. periods=pd.period_range('2026-01', "
                "'2026-12', freq='M'), or drop time_levels="
            )
        for flag, what in ((self.people, "people=True"), (self.histogram, "quantiles/value_bands")):
            if flag:
                raise SpecError(
                    f"time_levels do not combine with {what}: a coarser period's distinct "
                    "persons or value histogram is not the sum of its periods'; drop one of them"
                )
        pairs = _time_level_pairs(levels)
        total = sum(share for _f, share in pairs)
        if not total < 1:
            raise SpecError(
                f"the time_levels shares add up to {total:g}, but the panel's own periods need "
                f"the rest of the budget; pass shares that add up to less than 1, e.g. "
                "{'Q': 0.2, 'Y': 0.2}"
            )
        self._set("time_levels", pairs)

    def time_level_shares(self) -> dict[str, float]:
        """Share of each statistic's budget per time level: the coarse frequencies of
        ``time_levels``, then ``""`` for the panel's own periods (what they leave)."""
        pairs = self.time_levels or ()
        return {**dict(pairs), "": 1.0 - sum(share for _f, share in pairs)}

    def _check_running_totals(self) -> None:
        """``running_totals=True``: a panel of counts and sums (the tree's noise plan)."""
        if not isinstance(self.running_totals, (bool, np.bool_)):
            raise SpecError(f"running_totals must be True or False, got {self.running_totals!r}")
        self._set("running_totals", bool(self.running_totals))
        if not self.running_totals:
            return
        if self.time_levels:
            raise SpecError(
                "running_totals=True and time_levels= are two ways of releasing a panel; pass "
                "one of them"
            )
        if not self.panel:
            raise SpecError(
                "running_totals=True releases a panel continually; pass time='<date column>', "
                "periods=... and max_periods=..., or drop running_totals="
            )
        if self.histogram or self.people:
            raise SpecError(
                "running_totals=True publishes counts and sums only; drop quantiles=, "
                "value_bands= and people=True"
            )

    def _check_selection(self) -> None:
        """The selection rule, and a seed only for ``"hash"`` selection."""
        self._set("selection", Selection.parse(self.selection, "selection"))
        if self.seed is not None:
            self._set("seed", _whole(self.seed, "seed", 0))
            if self.seed >= 2**64:
                raise SpecError(f"seed must be < 2**64, got {self.seed!r}")
            if self.selection is not Selection.HASH:
                raise SpecError(
                    f"seed={self.seed!r} applies to selection='hash' only: 'random' selection draws "
                    "fresh randomness for every record and cannot be seeded; pass selection='hash' "
                    "with the seed for reproducible bounding, or drop the seed"
                )

    def _check_distinct_columns(self) -> None:
        names = [
            c for c in (self.lat, self.lng, self.person, self.value, self.category, self.time) if c
        ]
        if len(set(names)) != len(names):
            raise SpecError(
                f"the same column is used for two roles: {names!r}; pass distinct columns"
            )

    @staticmethod
    def _check_level_split(split: Any, n: int) -> str | tuple[float, ...]:
        if isinstance(split, str):
            if split not in ("geometric", "even"):
                raise SpecError(
                    f"level_split must be 'geometric', 'even' or a list of weights, got {split!r}"
                )
            return split
        try:
            weights = tuple(_finite_number(w, "a level_split weight") for w in split)
        except TypeError:
            raise SpecError(
                f"level_split must be 'geometric', 'even' or a list of weights, got {split!r}"
            ) from None
        if len(weights) != n or any(w <= 0 for w in weights):
            raise SpecError(
                f"level_split needs one positive weight per resolution ({n}), got {list(weights)!r}"
            )
        return weights

    @staticmethod
    def _check_bounds(bounds: Any) -> tuple[int, int]:
        if not isinstance(bounds, Sequence) or isinstance(bounds, str) or len(bounds) != 2:
            raise SpecError(f"bounds must be a pair (lo, hi), got {bounds!r}")
        lo = _finite_number(bounds[0], "the lower bound")
        hi = _finite_number(bounds[1], "the upper bound")
        if lo > hi:
            raise SpecError(
                f"bounds must satisfy lo ≤ hi, got ({bounds[0]!r}, {bounds[1]!r}); swap them"
            )
        if lo != int(lo) or hi != int(hi):
            raise SpecError(
                f"bounds must be whole units, got ({bounds[0]!r}, {bounds[1]!r}); values are summed as "
                "integers for exact sensitivity: express the column in a smaller unit (e.g. cents)"
            )
        if lo == hi == 0:
            raise SpecError(
                "bounds (0, 0) clamp every value to 0, so the sum would always be 0; pass bounds "
                "that contain the values, e.g. (0, 50_000)"
            )
        if max(abs(lo), abs(hi)) > MAX_ABS_BOUND:
            raise SpecError(
                f"bounds ({bounds[0]!r}, {bounds[1]!r}) exceed ±{MAX_ABS_BOUND:.0e}; sums must stay exact "
                "in 64-bit integers: use a larger unit (e.g. thousands)"
            )
        return int(lo), int(hi)

    @staticmethod
    def _check_categories(categories: Any) -> tuple[str, ...]:
        if isinstance(categories, str):
            categories = [c.strip() for c in categories.split(",")]
        try:
            cats = [str(c) for c in categories]
        except TypeError:
            raise SpecError(f"categories must be a list of names, got {categories!r}") from None
        if not cats or any(c == "" for c in cats):
            raise SpecError(
                f"categories must be a non-empty list of non-empty names, got {categories!r}"
            )
        if len(set(cats)) != len(cats):
            raise SpecError(f"categories contain duplicates: {cats!r}; list each category once")
        if OTHER_CATEGORY not in cats:
            cats.append(OTHER_CATEGORY)
        if len(cats) > MAX_CATEGORIES:
            raise SpecError(
                f"categories list {len(cats)} names (with {OTHER_CATEGORY!r}), more than the "
                f"{MAX_CATEGORIES} a release can hold; group rare categories into fewer, coarser ones"
            )
        return tuple(cats)

    # -- derived, public quantities -------------------------------------------------------
    @property
    def levels(self) -> tuple[int, ...]:
        """The released resolutions, coarse to fine (one for a flat release;
        :data:`ZONE_LEVEL` for a zone release)."""
        if self.zones is not None:
            return (ZONE_LEVEL,)
        r = self.resolution
        return tuple(r) if isinstance(r, tuple) else (r,)

    @property
    def finest(self) -> int:
        """The resolution points are binned at."""
        return self.levels[-1]

    @property
    def hierarchical(self) -> bool:
        return len(self.levels) > 1

    def level_shares(self) -> dict[int, float]:
        """Share of each statistic's budget spent at each level."""
        if isinstance(self.level_split, tuple):
            w = list(self.level_split)
        elif self.level_split == "even":
            w = [1.0] * len(self.levels)
        else:
            w = [7 ** (r / 6) for r in self.levels]
        total = sum(w)
        return {r: wi / total for r, wi in zip(self.levels, w, strict=True)}

    def queries(self) -> dict[str, tuple[str, int, float]]:
        """Every noised vector: key -> (statistic, resolution, budget share).

        Keys are the statistic names for a flat release, ``"count@6"`` etc. otherwise.
        """
        out = {}
        for stat, share in self.shares().items():
            if self.time_levels:  # the finest periods keep the statistic's name
                for freq, tshare in self.time_level_shares().items():
                    out[f"{stat}@{freq}" if freq else stat] = (stat, self.finest, share * tshare)
                continue
            if stat == "hist" and self.hierarchical:  # the finest level only, its own share
                out["hist"] = ("hist", self.finest, share)
                continue
            for r, lshare in self.level_shares().items():
                key = f"{stat}@{r}" if self.hierarchical else stat
                out[key] = (stat, r, share * lshare)
        return out

    @property
    def l0(self) -> int:
        """Keys one person may touch: cells, or (cell, period) pairs of a panel (1 when each
        row is a person)."""
        return 1 if self.person is None else self.max_cells * self.periods_per_person

    @property
    def periods_per_person(self) -> int:
        """Periods one person may count in: ``max_periods`` (at most the number of periods),
        1 without a panel or when each row is a person."""
        if self.periods is None or self.person is None or self.max_periods is None:
            return 1
        return min(self.max_periods, len(self.periods))

    @property
    def earliest_periods(self) -> bool:
        """Whether each person keeps their earliest ``max_periods`` periods (a continual
        release: the choice may not change as periods arrive) rather than the periods whose
        best record has the smallest priority."""
        return self.running_totals and self.panel

    @property
    def panel(self) -> bool:
        """Whether this is a panel release (one row per cell and period)."""
        return self.periods is not None

    @property
    def rows_per_key(self) -> int:
        """Published rows per cell (or zone): periods × categories (1 for neither)."""
        periods = len(self.periods) if self.periods is not None else 1
        return periods * (len(self.categories) if self.categories else 1)

    @property
    def linf(self) -> int:
        """Records one person may contribute to one cell (1 when each row is a person)."""
        return 1 if self.person is None else self.max_records_per_cell

    @property
    def statistics(self) -> tuple[str, ...]:
        return ("count", "sum") if self.value is not None else ("count",)

    @property
    def value_magnitude(self) -> int:
        """M = max(|lo|, |hi|): the most one clamped value can move a sum."""
        assert self.bounds is not None
        return max(abs(self.bounds[0]), abs(self.bounds[1]))

    @property
    def epsilon_budget(self) -> float:
        """The ε every planner calibrates to: at most the decimal the user wrote.

        ``epsilon`` is read as the shortest decimal that rounds to it (``repr``: ``0.1`` is
        1/10), which the ledger charges against its cap. A float such as 0.1 lies slightly
        *above* that decimal (0.1000000000000000055...), so the target is the largest float
        not above the decimal (0.09999999999999999 for 0.1; 1.0 and 0.25 stay as they are):
        OpenDP's reported ε — whose exact binary value the ledger records — never exceeds
        what the user asked for, and ten releases at ε = 0.1 fit a cap of 1.
        """
        decimal = Fraction(repr(self.epsilon))
        below = self.epsilon
        while Fraction(below) > decimal:
            below = math.nextafter(below, 0.0)
        return below

    @property
    def epsilon_parts_budget(self) -> float:
        """:attr:`epsilon_budget` less a relative 1e-12, for plans whose parts are fitted one
        by one and then composed: OpenDP rounds the composed sum up by an ulp or two."""
        return self.epsilon_budget * (1 - 1e-12)

    def shares(self) -> dict[str, float]:
        """Budget share of each noised statistic (``people``: distinct persons; ``hist``: the
        value histogram, if any).

        The histogram takes ``histogram_share`` of ε, the people count ``people_share`` of
        what is left, and count and sum split the rest by ``count_share``.
        """
        hist = self.histogram_share if self.histogram else 0.0
        people = self.people_share * (1.0 - hist) if self.people else 0.0
        rest = 1.0 - hist - people
        out = {"count": rest}
        if self.value is not None:
            out = {"count": self.count_share * rest, "sum": (1.0 - self.count_share) * rest}
        if self.people:
            out["people"] = people
        if self.histogram:
            out["hist"] = hist
        return out

    @property
    def histogram(self) -> bool:
        """Whether the release measures a value histogram (quantiles or value bands)."""
        return self.quantiles is not None or self.value_bands is not None

    @property
    def value_tree(self) -> ValueTree:
        """The public tree of value bands over the bounds."""
        assert self.bounds is not None
        return ValueTree(self.bounds[0], self.bounds[1])

    def public_dict(self) -> dict[str, Any]:
        """The parameters as they appear in a manifest (no seed: it is not needed to read a release)."""
        out = self._public_parameters()
        if self.zones is not None:
            out["zones"] = self.zones.describe()
        if self.periods is not None:
            out["time"] = self.time
            out["periods"] = self.periods.describe()
            out["max_periods"] = self.max_periods
            if self.running_totals:  # only when used: other manifests stay as they were
                out["running_totals"] = True
        if self.time_levels:
            out["time_levels"] = dict(self.time_levels)
        return out

    def _public_parameters(self) -> dict[str, Any]:
        return {
            "resolution": list(self.levels) if self.hierarchical else self.resolution,
            "level_split": (
                {str(r): v for r, v in self.level_shares().items()} if self.hierarchical else None
            ),
            "epsilon": self.epsilon,
            "delta": self.delta,
            "person": self.person,
            "value": self.value,
            "bounds": list(self.bounds) if self.bounds else None,
            "max_cells": self.max_cells,
            "max_records_per_cell": self.max_records_per_cell,
            "category": self.category,
            "categories": list(self.categories) if self.categories else None,
            "mechanism": str(self.mechanism),
            "count_share": self.count_share if self.value else None,
            "selection": str(self.selection),
            "quantiles": list(self.quantiles) if self.quantiles else None,
            "value_bands": list(self.value_bands) if self.value_bands else None,
            "histogram_share": self.histogram_share if self.histogram else None,
            # only when used: the manifests of releases without it stay as they were
            **({"people": True, "people_share": self.people_share} if self.people else {}),
        }
