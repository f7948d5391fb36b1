"""Analyses of published releases: roll-ups to other polygons, comparisons, "around a point",
and planning ε or the resolution for a target margin of error.

Everything here is **post-processing**: it reads a release's noisy outputs and public
parameters only (never raw data), so it costs no privacy budget.

Which numbers are added up
    The *unbiased* noisy estimates of every row (:attr:`Release.estimates`), suppressed
    rows included. Suppression hides small noisy counts; adding up only the displayed
    values would bias every total (the docs' methods guide, "Using a release"). A release read
    from a file written without ``include_unbiased=True`` has no such estimates: then the
    published values of unsuppressed rows are used, and a question that needs a
    suppressed row raises :class:`~dpmap.errors.SpecError` saying how many cells are hidden
    and how to get the unbiased values.

Which rows
    Flat release: every row. Hierarchical release (several resolutions): the rows of one
    level, the finest by default or the one chosen with ``resolution=`` (the levels are
    consistent, so adding up the finest cells of a parent gives the parent's estimate).
    Adaptive release (PrivTree leaves or adaptive-grid cells at mixed resolutions, a
    partition): every leaf.
    Release without a public region (cells chosen privately): the published cells only;
    cells that were not published count as zero there, which biases totals downward,
    and ``coverage`` counts published cells only. With a category breakdown every
    statistic is computed per category.

Quantiles and value bands
    A release with ``quantiles=``/``value_bands=`` keeps its noisy value histogram
    (:attr:`Release.histogram`, ``<name>.histogram.parquet``): :func:`aggregate_to` adds the
    cells' histograms with the same area weights as the counts (noise variance Σ w²·σ² per
    node) and gives every polygon the ``q…`` and ``band_…`` columns
    (:func:`dpmap.analysis.rollup.distribution_totals`). Without the histogram file a
    roll-up has no such columns and warns how to get them.

Margins of error (95%)
    :func:`aggregate_to` publishes two things per polygon: ``count_lo``/``count_hi``, a 95%
    interval for the true total that includes the error of apportioning the cells a
    border splits (see its docstring), and ``count_moe``, the margin of the noise only
    (of the area-apportioned point estimate). The rest of this paragraph is about noise.
    Normal approximation: ``1.96 · √Var``. A flat (or leaf-only adaptive) release adds
    independent noise to every row, so the variance of a weighted total is ``Σ wᵢ² varᵢ``.
    The consistent estimates of a hierarchical release, the leaves of an adaptive
    release with noisy internal nodes (``internal_share > 0``) and the cells of an
    adaptive grid (tied to their first-level cell and the total) are correlated across
    cells; their total's variance is computed **exactly**: the least-squares estimate is
    ``x = P y`` with ``P Σ = Cov(x)`` symmetric (generalised least squares), so
    ``Var(wᵀx) = wᵀ P (Σ w)``, one run of :func:`dpmap.designs.hierarchy.consistent` (or
    :func:`~dpmap.designs.hierarchy.consistent_forest` on the adaptive tree or grid forest, rebuilt
    from the leaves' H3 parents) on the vector ``Σ w`` (the weights scaled by each node's noise
    variance). For one whole cell
    of a flat release the exact margin of the discrete noise (OpenDP's accuracy) is used.
    The normal approximation is slightly optimistic for totals of very few cells with
    Laplace noise (e.g. about 93.5% coverage for one cell with ε = 1) and accurate for
    totals of many cells.
"""

from dpmap.analysis.changes import compare
from dpmap.analysis.nearby import Around, CategoryAround, around
from dpmap.analysis.rollup import aggregate_to
from dpmap.analysis.trends import series, trend

__all__ = ["Around", "CategoryAround", "aggregate_to", "around", "compare", "series", "trend"]
