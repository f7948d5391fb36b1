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
    │   ├── BudgetExceededError           a release would exceed the dataset's cap
    │   └── ClaimTakenError               a one-time step (a claim) was already recorded
    ├── MechanismError (RuntimeError)     OpenDP refused to build or run a measurement
    └── MissingDependencyError (ImportError)  an optional extra is not installed

Messages follow one recipe: what happened, the values involved, and the next step.

Warnings (the release goes ahead; the command line prints them as ``dpmap: warning: ...``)::

    DpmapWarning (UserWarning)
    └── NegligibleNoiseWarning           ε so large that the noise is negligible
"""

from __future__ import annotations

import math
import warnings
from typing import Any

__all__ = [
    "BudgetError",
    "BudgetExceededError",
    "ClaimTakenError",
    "DataFileError",
    "DpmapError",
    "DpmapWarning",
    "InputError",
    "MechanismError",
    "MissingDependencyError",
    "NegligibleNoiseWarning",
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


class ClaimTakenError(BudgetError):
    """A reservation's claim is already held by an entry that counts (see
    :meth:`dpmap.Ledger.reserve`): that step was already taken.

    ``claim`` is the claim and ``entry_id`` the entry holding it (set by the ledger).
    """

    claim: str | None = None
    entry_id: int | None = None


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


class DpmapWarning(UserWarning):
    """Base class of every warning dpmap issues on purpose."""


class NegligibleNoiseWarning(DpmapWarning):
    """ε is so large that the noise is negligible: the map shows essentially exact counts.

    Issued when ε > :data:`NEGLIGIBLE_EPSILON` *and* the noise of every cell count has a
    95% margin (1.96 standard deviations) below :data:`NEGLIGIBLE_MARGIN`, half a record:
    the noise then rounds away, and nearly every published count is the true (bounded) count.
    """


#: above this total ε, a release whose counts have negligible noise is warned about
NEGLIGIBLE_EPSILON = 10.0
#: a count noise's 95% margin (1.96 standard deviations) below this, half a record, is negligible
NEGLIGIBLE_MARGIN = 0.5
_Z95 = 1.959963984540054


def warn_negligible_noise(plan: Any, stacklevel: int = 3) -> None:
    """Warn (:class:`NegligibleNoiseWarning`) when a release's noise plan is essentially exact.

    ``plan`` is a :class:`dpmap._privacy.noise.NoisePlan`: its total ``epsilon`` and the noise
    variances of its cell counts (statistics ``count`` and ``count@<resolution>``) are read.
    The margin is 1.96 standard deviations: OpenDP's exact margin of integer noise is
    reported as at least one record, so it cannot show that the noise vanishes.
    """
    eps = float(plan.epsilon)
    margins = [
        _Z95 * math.sqrt(max(float(s.variance), 0.0))
        for k, s in plan.statistics.items()
        if k == "count" or k.startswith("count@")
    ]
    if not margins or eps <= NEGLIGIBLE_EPSILON or max(margins) >= NEGLIGIBLE_MARGIN:
        return
    warnings.warn(
        f"ε = {eps:g} gives a 95% margin of ±{max(margins):.2f} per cell on the counts: the map "
        f"is essentially the exact counts; for a privacy guarantee that means something use "
        f"ε ≤ {NEGLIGIBLE_EPSILON:g} (common: 0.1–2)",
        NegligibleNoiseWarning,
        stacklevel=stacklevel,
    )
