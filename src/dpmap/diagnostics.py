"""PRIVATE diagnostics for the data owner — never part of a release.

Numbers such as "rows outside the region" or "records cut by bounding" are computed
from the raw data without noise. They help an agency check its input, but publishing
them would break the privacy guarantee. dpmap therefore keeps them in a separate object
that the caller passes in and reads; a :class:`~dpmap.Release` never holds one, and
nothing that writes a release (files, manifest, plots) can see it.

>>> diag = dpmap.Diagnostics()
>>> rel = dpmap.release(points, region=..., epsilon=1, resolution=7, diagnostics=diag)
>>> print(diag)          # PRIVATE: for the data owner only
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["Diagnostics"]


@dataclass
class Diagnostics:
    """PRIVATE counts about the raw input of one release (exact, not noised).

    Pass an instance as ``diagnostics=`` to :func:`dpmap.release`; it is filled in place.
    Do not publish these numbers.
    """

    rows_read: int = 0
    rows_missing_coordinates: int = 0
    rows_outside_region: int = 0
    rows_missing_person: int = 0
    rows_missing_value: int = 0
    rows_other_category: int = 0
    #: panels: rows without a time, and rows whose time lies outside every public period
    rows_missing_time: int = 0
    rows_outside_periods: int = 0
    values_clamped: int = 0
    records_cut_by_bounding: int = 0
    records_used: int = 0
    #: cells whose exact sum lay beyond ±2**62 and was saturated before noise
    sums_saturated: int = 0
    persons: int | None = None
    #: what the data owner should know, e.g. "the points are empty: the release is all noise"
    private_notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __str__(self) -> str:
        lines = ["PRIVATE diagnostics (exact counts from the raw data; do not publish):"]
        lines += [
            f"  {k.replace('_', ' ')}: {v}"
            for k, v in self.as_dict().items()
            if v is not None and k != "private_notes"
        ]
        lines += [f"  note: {n}" for n in self.private_notes]
        return "\n".join(lines)
