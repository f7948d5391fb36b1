"""Errors raised by dpmap.

Every error dpmap raises on purpose is a :class:`DpmapError`. Concrete errors also
subclass the matching builtin, so ``except ValueError`` keeps working::

    DpmapError (Exception)
    ├── SpecError (ValueError)            a parameter is invalid (epsilon, bounds, resolution, ...)
    ├── InputError (ValueError)           the points are unusable (missing column, bad coordinates, empty)
    ├── RegionError (ValueError)          the public region is unusable (empty, invalid, not in degrees)
    ├── DataFileError (OSError)           a file is missing, unreadable, or of an unsupported type
    ├── ReleaseFormatError (ValueError)   a file is not a dpmap release (or its manifest is missing)
    ├── BudgetError (RuntimeError)        the privacy-budget ledger refused or is unusable
    │   └── BudgetExceededError           a release would exceed the dataset's cap
    ├── MechanismError (RuntimeError)     OpenDP refused to build or run a measurement
    └── MissingDependencyError (ImportError)  an optional extra is not installed

Messages follow one recipe: what happened, the values involved, and the next step.
"""

from __future__ import annotations

__all__ = [
    "BudgetError",
    "BudgetExceededError",
    "DataFileError",
    "DpmapError",
    "InputError",
    "MechanismError",
    "MissingDependencyError",
    "RegionError",
    "ReleaseFormatError",
    "SpecError",
]


class DpmapError(Exception):
    """Base class of every error dpmap raises on purpose."""


class SpecError(DpmapError, ValueError):
    """A release parameter is invalid."""


class InputError(DpmapError, ValueError):
    """The input points cannot be used as given."""


class RegionError(DpmapError, ValueError):
    """The public region cannot be used as given."""


class DataFileError(DpmapError, OSError):
    """A file is missing, unreadable, or of an unsupported type."""

    def __str__(self) -> str:  # OSError's str() would show errno tuples
        return str(self.args[0]) if self.args else ""


class ReleaseFormatError(DpmapError, ValueError):
    """A file is not a readable dpmap release."""


class BudgetError(DpmapError, RuntimeError):
    """The privacy-budget ledger refused a request or cannot be used."""


class BudgetExceededError(BudgetError):
    """A release would spend more privacy budget than the dataset has left.

    ``requested`` and ``remaining`` hold the exact amounts (set by the ledger).
    """

    requested: object = None
    remaining: object = None


class MechanismError(DpmapError, RuntimeError):
    """OpenDP refused to build or run a measurement."""


class MissingDependencyError(DpmapError, ImportError):
    """An optional dependency is not installed."""


def missing_extra(package: str, extra: str) -> MissingDependencyError:
    """The one standard message for a missing optional dependency."""
    return MissingDependencyError(
        f"this feature needs the optional package {package!r}, which is not installed; "
        f"install it with: pip install 'dpmap[{extra}]'"
    )
