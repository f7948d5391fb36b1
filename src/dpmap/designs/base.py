"""The shape every release design has: the :class:`Design` protocol and what it returns.

A *design* decides which noisy vectors a release measures and how they become the published
estimates. Given the spec and the public cells it plans the noise (one composed OpenDP
measurement, from :mod:`dpmap._privacy.noise`, whose privacy map is the release's ε/δ), draws
it on the engine's bounded aggregates, turns the noisy vectors into estimates with their exact
noise variances, and describes itself for ``explain`` and the manifest. After a release has been
written, the same design, recognised from the manifest, tells the analyses how the published
estimates' errors are correlated, so that :mod:`dpmap.analysis` never re-derives the kind of a
release.

The release pipeline (:func:`dpmap.release`) only talks to this protocol; a new design is one
new module in this package, registered in :data:`dpmap.designs.DESIGNS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from dpmap._privacy.noise import noise_variance
from dpmap.errors import SpecError
from dpmap.spec import Mechanism

if TYPE_CHECKING:  # pragma: no cover
    from dpmap import grid
    from dpmap._privacy.noise import NoisePlan
    from dpmap._privacy.postprocess import CountNoise, Estimates
    from dpmap.aggregates import BoundedAggregates
    from dpmap.designs.hierarchy import Tree
    from dpmap.spec import ReleaseSpec

__all__ = [
    "Correlation",
    "Design",
    "DesignOptions",
    "ForestCorrelation",
    "Measured",
    "PeriodCovariance",
    "RowsInfo",
    "TreeCorrelation",
    "manifest_noise_variance",
    "ncat",
    "one_hot_weights",
    "subrows",
]


def ncat(spec: ReleaseSpec) -> int:
    """Rows per cell (or zone): periods × categories (1 for neither). A dense vector lays
    out each cell's rows period by period, and within a period category by category."""
    return spec.rows_per_key


def subrows(spec: ReleaseSpec, rows: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The category and the period index of each row of a dense (cell × period × category)
    vector of ``rows`` rows (None where the release has no categories / no periods)."""
    k = len(spec.categories) if spec.categories else 1
    within = np.tile(np.arange(ncat(spec), dtype=np.int64), rows // max(ncat(spec), 1))
    category = within % k if spec.categories is not None else None
    period = within // k if spec.periods is not None else None
    return category, period


def manifest_noise_variance(entry: dict[str, Any]) -> float:
    """Variance of one value's noise from a manifest statistic entry (as the release computed it)."""
    gaussian = "gaussian" in str(entry["distribution"]).lower()
    return noise_variance(
        Mechanism.GAUSSIAN if gaussian else Mechanism.LAPLACE, float(entry["scale"])
    )


@dataclass(frozen=True)
class DesignOptions:
    """The parameters of :func:`dpmap.release` that choose and shape a design but are not part
    of :class:`~dpmap.ReleaseSpec` (all public)."""

    #: None (not adaptive), "privtree" or "grid"
    adaptive: str | None = None
    adaptive_from: int | None = None
    #: None: the design's default
    tree_share: float | None = None
    internal_share: Any = None
    #: hierarchical releases: publish non-negative integers that still add up
    integers: bool = False
    #: a continual release (running_totals=True): the last period published (None: the
    #: last of the horizon), the release it extends (None: a fresh start) and the ledger's
    #: dataset (part of the fingerprint a continued release must match)
    through: Any = None
    previous: Any = None
    dataset: str | None = None


@dataclass(frozen=True)
class Measured:
    """What a design publishes once its noise is drawn (all post-processing of noisy values)."""

    #: unbiased estimates with their exact noise variances and margins, one per row
    estimates: Estimates
    cells: np.ndarray  # int64 H3 index of each row
    resolutions: np.ndarray  # int64 resolution of each row
    #: index into spec.categories of each row (None: no categories)
    category: np.ndarray | None = None
    #: a panel: index into spec.periods of each row (None: not a panel)
    period: np.ndarray | None = None
    #: the values to display when they differ from the estimates (e.g. rounded integers)
    shown: Estimates | None = None
    #: what the manifest learns from the noisy values (e.g. an adaptive grid's first level)
    drawn: dict[str, Any] = field(default_factory=dict)
    #: a zone release: the public zones (``cells`` then holds zone indexes, not H3 cells)
    zones: grid.Zones | None = None
    #: quantiles and value bands: column -> one value per row (post-processing of the noisy
    #: value histogram, :mod:`dpmap.designs.distribution`)
    distribution: dict[str, np.ndarray] | None = None
    #: the noisy value histogram itself, one node vector per row (rows × nodes, or flattened):
    #: published beside the table so that roll-ups can add it up
    histogram: np.ndarray | None = None
    #: each row's per-node noise variance in ``histogram`` (None: the measured σ² for every
    #: row; a sum of k measured rows has k·σ²)
    histogram_var: np.ndarray | None = None
    #: the labels ``period`` indexes (None: the spec's periods), e.g. months then quarters
    period_labels: tuple[str, ...] | None = None
    #: a panel with time levels: the time level of each row (published as ``time_level``)
    time_level: np.ndarray | None = None


@dataclass(frozen=True)
class TreeCorrelation:
    """The exact covariance of a hierarchical release's least-squares estimates (all public)."""

    tree: Tree
    level: int  # position of the used resolution in tree.levels
    pos: np.ndarray  # position of each used cell in tree.levels[level]
    level_var: dict[str, list[float]]  # statistic -> noise variance of each level


@dataclass(frozen=True)
class ForestCorrelation:
    """The exact covariance of an adaptive release's least-squares leaves (all public)."""

    parent: list[np.ndarray | None]  # per depth: parent positions in the depth above
    depth: np.ndarray  # depth of each used cell
    pos: np.ndarray  # position of each used cell among its depth's nodes
    node_var: dict[str, list[np.ndarray]]  # statistic -> per depth noise variance per node


@dataclass(frozen=True)
class RowsInfo:
    """The published cells an analysis adds up (one level of the release), as a design needs
    them to describe their correlations."""

    ids: np.ndarray  # int64 H3 indexes, unique
    resolutions: np.ndarray  # int64, per cell
    stats: tuple[str, ...]
    resolution: int  # the level used (the finest for flat and adaptive releases)
    #: every finest-level cell the release published (hierarchical releases rebuild their tree)
    finest: np.ndarray


@dataclass(frozen=True)
class Correlation:
    """How the errors of a release's published estimates relate (for roll-ups and margins).

    Exactly one of: independent rows (``tree`` and ``forest`` None: a flat, discovery or
    leaf-only PrivTree release), a least-squares tree, or a least-squares forest.
    """

    tree: TreeCorrelation | None = None
    forest: ForestCorrelation | None = None
    #: statistic -> 95% margin of one row's noise (independent rows; OpenDP's accuracy)
    exact_moe: dict[str, float] = field(default_factory=dict)
    #: statistic -> discrete Laplace scale of each row's independent noise
    laplace_scale: dict[str, float] = field(default_factory=dict)
    #: least-squares estimates of Laplace noise (margins use the Laplace 95% factor)
    laplace_ls: bool = False
    #: independent rows whose variances differ (least squares along time): each row's own
    #: variance, from its margin when the file has no unbiased estimates
    own_variances: bool = False

    @property
    def independent(self) -> bool:
        return self.tree is None and self.forest is None


@dataclass(frozen=True)
class PeriodCovariance:
    """How the noise of one row's periods relates, in a panel whose periods share noise.

    ``labels`` are the finest periods the covariance is over; ``covariance`` maps each
    statistic to its exact ``len(labels)``-square noise covariance (the same for every row);
    ``weights(label)`` is a period's estimate as a combination of the finest periods (a
    one-hot vector for a finest period, 0/1 over its months for a coarse one such as "2026").
    """

    labels: tuple[str, ...]
    covariance: dict[str, np.ndarray]
    weights: Callable[[str], np.ndarray]

    def change_variance(self, first: str, second: str) -> dict[str, float]:
        """Statistic -> the exact noise variance of (period ``second`` − period ``first``) of
        one row: dᵀΣd with d the difference of the two periods' weights."""
        d = self.weights(str(second)) - self.weights(str(first))
        return {stat: float(d @ c @ d) for stat, c in self.covariance.items()}


def one_hot_weights(labels: tuple[str, ...]) -> Callable[[str], np.ndarray]:
    """``weights`` of :class:`PeriodCovariance` for a panel that publishes its finest periods
    only: a period is its own one-hot vector."""

    def weights(label: str) -> np.ndarray:
        if label not in labels:
            raise SpecError(f"period {label!r} is not one of the panel's periods {list(labels)}")
        return np.eye(len(labels))[labels.index(label)]

    return weights


class Design(Protocol):
    """One way of releasing a map; see the module docstring."""

    #: the name written to the manifest's ``design`` entry
    kind: ClassVar[str]
    spec: ReleaseSpec
    #: the composed OpenDP measurement: the release's ε, δ and every statistic's noise
    noise: NoisePlan
    #: the sorted public cells at the finest resolution (None: cells chosen privately)
    domain: np.ndarray | None
    #: whether the published counts and sums are whole numbers
    integer: bool

    @classmethod
    def wants(cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions) -> bool:
        """Whether these parameters ask for this design."""
        ...

    @classmethod
    def plan(cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions) -> Design:
        """Calibrate the noise for ``spec`` (no data touched); refuse options that do not apply."""
        ...

    def rows(self) -> int | None:
        """Rows the release will publish, when known before the data (None: drawn with the noise)."""
        ...

    def count_noise(self) -> CountNoise | None:
        """What the default suppression rule needs of the count noise (None: private discovery)."""
        ...

    def describe(self) -> dict[str, Any] | None:
        """The design's own planning details for ``explain`` (None: nothing beyond the noise)."""
        ...

    def explain_lines(self) -> list[str]:
        """Lines that ``explain`` prints about this design, after the statistics."""
        ...

    def measure(self, aggregates: BoundedAggregates) -> Measured:
        """Draw the noise on the PRIVATE bounded aggregates and return the estimates."""
        ...

    def manifest_entries(self, measured: Measured) -> dict[str, Any]:
        """The manifest's design-specific entries (``cell_selection``, ``hierarchy``,
        ``adaptive``, ``margins``, ...), from public parameters and ``measured``."""
        ...

    @classmethod
    def recognises(cls, manifest: dict[str, Any]) -> bool:
        """Whether a release manifest (this format or an older one) is of this design."""
        ...

    @classmethod
    def correlation(cls, manifest: dict[str, Any], rows: RowsInfo) -> Correlation:
        """How the errors of the published estimates of ``rows`` relate (see :class:`Correlation`)."""
        ...

    @classmethod
    def period_covariance(cls, manifest: dict[str, Any]) -> PeriodCovariance | None:
        """How the noise of one row's periods relates in a panel of this design (see
        :class:`PeriodCovariance`), from the public manifest; None when every period has its
        own independent noise (every design but those that share noise across periods)."""
        ...
