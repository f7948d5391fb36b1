"""Public periods of a panel release: the time keys, fixed before any data is read.

A panel release (``time=``, ``periods=``, ``max_periods=``) publishes one row per (cell,
period). Its periods are a *parameter*, never read from the data: a month in which nobody
appears still gets its (noisy) row, and a record whose time lies outside every period is
dropped (and counted in the PRIVATE diagnostics). :class:`Periods` holds them as half-open
intervals ``[start, end)`` of wall-clock time (no time zone), either

* periods of one fixed frequency (a :class:`pandas.PeriodIndex` such as
  ``pd.period_range("2026-01", "2026-12", freq="M")``: days, weeks, months, quarters,
  years), labelled ``"2026-01"`` etc., or
* explicit edges ``[e0, e1, …, en]`` (n periods ``[e_i, e_{i+1})``), labelled by their
  start dates.

Periods must be sorted and must not overlap; gaps are allowed (a record in a gap is outside
every period). Times are compared as microseconds since 1970-01-01, exactly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpmap.errors import SpecError

__all__ = ["MAX_PERIODS", "Periods", "check_periods"]

#: most periods a panel holds (ten years of days; a map per period beyond that is all noise)
MAX_PERIODS = 4000

_US = "datetime64[us]"


@dataclass(frozen=True, eq=False)
class Periods:
    """Sorted, non-overlapping public periods ``[starts[i], ends[i])`` with their labels."""

    labels: tuple[str, ...]
    starts: np.ndarray  # int64 microseconds since 1970-01-01 (wall-clock time)
    ends: np.ndarray  # int64, ends[i] <= starts[i + 1]
    #: the pandas frequency ("M", "Q-DEC", ...) of fixed-frequency periods, else None
    freq: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Periods) and self.describe() == other.describe()

    def __hash__(self) -> int:
        return hash((self.labels, self.freq))

    def index_of(self, micros: np.ndarray) -> np.ndarray:
        """The period of each time (int64 µs), or -1 outside every period."""
        t = np.asarray(micros, dtype=np.int64)
        i = np.searchsorted(self.starts, t, side="right") - 1
        inside = (i >= 0) & (t < self.ends[np.clip(i, 0, len(self) - 1)])
        return np.where(inside, i, -1).astype(np.int64)

    def position(self, label: Any) -> int:
        """The index of a period given by its label (or a pandas Period / date string)."""
        text = str(label)
        if text in self.labels:
            return self.labels.index(text)
        shown = ", ".join(self.labels[:4]) + (", ..." if len(self) > 4 else "")
        raise SpecError(f"period {text!r} is not one of the release's periods ({shown})")

    def pandas(self) -> list[Any]:
        """The periods as pandas Periods (fixed frequency) or their labels (explicit edges)."""
        if self.freq is None:
            return list(self.labels)
        import pandas as pd

        return [pd.Period(label, freq=self.freq) for label in self.labels]

    def describe(self) -> dict[str, Any]:
        """The manifest's ``periods`` entry (public)."""
        return {
            "frequency": self.freq,
            "labels": list(self.labels),
            "starts": [str(np.datetime64(int(s), "us")) for s in self.starts],
            "ends": [str(np.datetime64(int(e), "us")) for e in self.ends],
        }

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> Periods:
        starts = np.array([np.datetime64(s, "us") for s in entry["starts"]]).astype(np.int64)
        ends = np.array([np.datetime64(e, "us") for e in entry["ends"]]).astype(np.int64)
        return cls(tuple(entry["labels"]), starts, ends, entry.get("frequency"))


def _from_period_index(index: Any) -> Periods:
    import pandas as pd

    freqs = {p.freqstr for p in index}
    if len(freqs) > 1:
        raise SpecError(f"periods mix frequencies {sorted(freqs)}; use periods of one frequency")
    starts = np.array([p.start_time.to_datetime64() for p in index]).astype(_US).astype(np.int64)
    ends = np.array([(p + 1).start_time.to_datetime64() for p in index])
    freq = index[0].freqstr if isinstance(index[0], pd.Period) else None
    return Periods(tuple(str(p) for p in index), starts, ends.astype(_US).astype(np.int64), freq)


def _from_edges(edges: Any) -> Periods:
    try:
        times = np.array([np.datetime64(_as_timestamp(e), "us") for e in edges]).astype(np.int64)
    except (TypeError, ValueError) as exc:
        raise SpecError(
            f"periods: cannot read the edges as dates ({exc}); pass ISO dates such as "
            "['2026-01-01', '2026-04-01', '2026-07-01'] or a pd.period_range(...)"
        ) from None
    if len(times) < 2:
        raise SpecError(
            f"periods as edges need at least two dates (one period), got {len(times)}; "
            "e.g. ['2026-01-01', '2026-07-01', '2027-01-01']"
        )
    labels = tuple(str(np.datetime64(int(t), "us").astype("datetime64[D]")) for t in times[:-1])
    return Periods(labels, times[:-1].copy(), times[1:].copy(), None)


def _as_timestamp(value: Any) -> Any:
    import pandas as pd

    if isinstance(value, pd.Period):
        raise TypeError("a pandas Period is a whole period, not an edge")
    out = pd.Timestamp(value)
    if out is pd.NaT:
        raise ValueError(f"{value!r} is not a date")
    if out.tzinfo is not None:
        out = out.tz_localize(None)
    return out.to_datetime64()


def check_periods(periods: Any) -> Periods:
    """Public periods from what the user passed: a pandas PeriodIndex (or a list of pandas
    Periods of one frequency), explicit edges (dates), or :class:`Periods`."""
    import pandas as pd

    if isinstance(periods, Periods):
        out = periods
    elif isinstance(periods, str) or not hasattr(periods, "__iter__"):
        raise SpecError(
            f"periods must be a list of periods, got {periods!r}; pass e.g. "
            "pd.period_range('2026-01', '2026-12', freq='M') or edges ['2026-01-01', '2026-07-01', "
            "'2027-01-01']"
        )
    else:
        items = list(periods)
        if not items:
            raise SpecError(
                "periods is empty; pass e.g. pd.period_range('2026-01', '2026-12', freq='M')"
            )
        if all(isinstance(p, pd.Period) for p in items):
            out = _from_period_index(items)
        else:
            out = _from_edges(items)
    _check_order(out)
    return out


def _check_order(p: Periods) -> None:
    if len(p) > MAX_PERIODS:
        raise SpecError(
            f"periods list {len(p)} periods, more than the {MAX_PERIODS} a panel holds; use a "
            "coarser frequency (e.g. weeks or months instead of days)"
        )
    empty = np.flatnonzero(p.ends <= p.starts)
    if empty.size:
        raise SpecError(
            f"periods are not sorted: period {p.labels[int(empty[0])]!r} ends before it starts; "
            "pass edges in increasing order, oldest first"
        )
    if len(set(p.labels)) != len(p.labels):
        dup = next(x for x in p.labels if p.labels.count(x) > 1)
        raise SpecError(f"period {dup!r} appears twice in periods; list each period once")
    for a, b in itertools.pairwise(range(len(p))):
        if p.starts[b] <= p.starts[a]:
            raise SpecError(
                f"periods are not sorted: {p.labels[b]!r} comes after {p.labels[a]!r}; pass them "
                "oldest first"
            )
        if p.starts[b] < p.ends[a]:
            raise SpecError(
                f"periods overlap: {p.labels[a]!r} and {p.labels[b]!r}; pass periods that do "
                "not overlap (each record belongs to at most one)"
            )
