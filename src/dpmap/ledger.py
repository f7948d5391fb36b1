"""A persistent, concurrency-safe privacy-budget ledger.

The ledger is one SQLite file that holds, for every *dataset* (a body of sensitive data
that releases are computed from), a privacy-loss cap ``(ε, δ)`` and an append-only list
of the releases charged against it::

    ledger = Ledger.init("budget.db", "hebei-debt-2026", epsilon=3.0, delta=1e-6)
    ledger = Ledger("budget.db")                      # later: open it (never created here)
    with ledger.reserve("hebei-debt-2026", epsilon=0.5, accounting="pure-dp",
                        mechanism="laplace", statistics=["count"], resolution=7,
                        label="debtors, January 2026") as r:
        ...                                           # build the measurement
        r.mark_noise_drawn()                          # from here on the spend stands
        ...                                           # draw noise, write the output
        r.finalize(fingerprint="sha256:...")
    ledger.remaining("hebei-debt-2026")               # Budget(epsilon=Fraction(5, 2), ...)

Privacy
-------
The ledger is the part of dpmap that keeps the promise "this dataset will never lose more
than ``(ε, δ)`` in total". It is built to fail safe:

* **Reserve first, then draw noise.** :meth:`Ledger.reserve` checks the cap and records
  the release in one ``BEGIN IMMEDIATE`` transaction, so two processes can never both
  see the same remaining budget. A reservation counts against the cap from that moment.
* **Give back only what was provably not used.** Leaving the ``with`` block by an
  exception *before* :meth:`Reservation.mark_noise_drawn` marks the entry ``"cancelled"``
  (kept for the audit trail, not counted). After ``mark_noise_drawn`` the spend stands,
  whatever happens. A process that dies (even by ``SIGKILL``) leaves a ``"reserved"``
  entry, which counts: the ledger cannot know whether noise was drawn, so it assumes so.
* **Exact arithmetic, never rounded in the user's favour.** Budgets are stored as exact
  strings (a decimal, or ``p/q``) and summed as :class:`fractions.Fraction`; nothing is
  ever summed in floating point. The two kinds of amount read a float differently:

  - A **spend** (:meth:`Ledger.reserve`: ``epsilon``, ``delta``, ``rho``) is a privacy
    loss that OpenDP computed and reported as a float. It is charged at the float's
    *exact binary value*, ``Fraction(x)``, never at the shorter decimal ``repr(x)``,
    which can lie below it (the float ``0.1`` is ``1/10`` plus about ``5.6e-18``; ten
    spends of that float exceed a cap of ``1``, and the ledger says so). Pass a string
    (``"0.1"``), a :class:`~decimal.Decimal` or a :class:`~fractions.Fraction` to
    charge a decimal exactly. :func:`dpmap.release` calibrates its noise so that
    OpenDP's reported ε is at most the decimal ε the user asked for.
  - A **cap** (:meth:`Ledger.create`, :meth:`Ledger.init`, ``dpmap budget init``) is a
    policy number written by a person, so a float is read as the decimal the person
    wrote, ``repr(x)``: ``epsilon=1.0`` is exactly ``1`` and ``epsilon=0.3`` is exactly
    ``3/10``.
* **Never created by accident.** ``Ledger(path)`` opens an existing ledger and never
  creates a file (a mistyped path must not give the same data a second, fresh budget);
  only ``Ledger(path, create=True)``, :meth:`Ledger.init` or ``dpmap budget init``
  create one. Likewise a release never creates a dataset: an unknown name is refused,
  with the existing names and a "did you mean" suggestion.
* **No data.** The ledger stores only what the caller passes: parameters, statistic
  names, an output fingerprint and a small JSON ``details`` object. It never sees points
  or true counts; do not put them into ``details``.

Accounting
----------
Every entry records which accounting produced its guarantee, in ``accounting``:

``"pure-dp"``
    ``ε``-DP; the entry's ``δ`` must be 0.
``"approx-dp"``
    ``(ε, δ)``-DP as reported by OpenDP's privacy map.
``"zcdp"``
    ``ρ``-zCDP. The caller passes ``ρ`` *and* the ``(ε, δ)`` that OpenDP's zCDP → approx-DP
    conversion reported for this release alone (``δ > 0``). Both are recorded.

The cap is an ``(ε, δ)`` pair and :meth:`Ledger.spent` / :meth:`Ledger.remaining` use
**basic sequential composition of the recorded (ε, δ)**: the spent budget is
``(Σ ε_i, Σ δ_i)`` over every entry that counts (status ``"reserved"`` or ``"spent"``).
This is valid for any mixture of pure-DP, approximate-DP and zCDP releases, because each
release is in particular ``(ε_i, δ_i)``-DP. It is conservative for zCDP releases: ρ-zCDP
composes by adding ``ρ``, and converting the ``ρ`` total once would give a smaller ``ε``.
The ledger does not use that tighter bound (it would need OpenDP's conversion inside the
ledger, and a cap expressed in ``ρ``); it reports the ``ρ`` total in
``spent(...).rho`` for information only.

Storage
-------
The file uses SQLite's default *rollback journal* (``journal_mode=DELETE``) with
``synchronous=FULL``, not WAL. Writes are rare (a few per release) so WAL's
reader/writer concurrency buys nothing, while the rollback journal keeps the ledger a
single self-contained file between transactions (no ``-wal``/``-shm`` side files to lose
when the ledger is copied, archived or backed up), needs no shared-memory file, and
works on any file system with working POSIX locks. Concurrent writers wait on the lock
for up to ``timeout`` seconds (SQLite's busy handler) rather than fail.

The file is marked with ``PRAGMA application_id`` (``0x64706D70``, "dpmp"),
``PRAGMA user_version`` and a ``dpmap_schema`` table. A file that is not SQLite, an SQLite
database of another application, a ledger from a newer dpmap, or a damaged ledger is
refused with a :class:`~dpmap.errors.BudgetError` and never written to.

**PostgreSQL.** ``Ledger("postgresql://user@host/db")`` keeps the same tables in a
PostgreSQL database, for a team releasing from several machines (an SQLite file on a
network share is not safe: file locking over network file systems is unreliable). Writes
are SERIALIZABLE transactions, run again after a serialization failure; see
:mod:`dpmap.ledger_postgres`. The ledger's logic is shared: only the storage differs
(``_SqliteStore`` here, ``PostgresStore`` there).

Schema 2 added an optional ``label`` to each entry (which release it was, e.g. "debtors,
January 2026"). A schema-1 ledger is read as it is (its entries have no label); the
first write to it (a new dataset or a reservation) upgrades it to schema 2 inside the
same transaction, after which older dpmap versions refuse it as "from a newer dpmap".

Schema 3 added an optional ``claim`` to each entry: a text that at most one entry that
counts may hold (a UNIQUE index over the entries that are not cancelled). A reservation
with a claim is refused with a :class:`~dpmap.errors.ClaimTakenError` when an entry that
counts already holds it, inside the same write transaction as the cap check; a cancelled
reservation frees its claim. Such an entry may charge ``ε = 0``: a continued continual
release (:mod:`dpmap.designs.continual_release`) spends nothing more, but claims
"continual:<charging entry>:from:<previous through>" so that the same earlier release can
never be extended twice (which would draw the same tree nodes twice). Schema-1 and
schema-2 ledgers are read as they are and upgraded to schema 3 on the first write, as
above.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import numbers
import os
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation, localcontext
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

from dpmap._version import __version__
from dpmap.errors import (
    BudgetError,
    BudgetExceededError,
    ClaimTakenError,
    DataFileError,
    SpecError,
)

__all__ = [
    "ACCOUNTING_MODES",
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "Budget",
    "Ledger",
    "LedgerEntry",
    "Reservation",
    "check_label",
    "format_amount",
]

#: ``PRAGMA application_id`` of a dpmap ledger: the ASCII bytes "dpmp".
APPLICATION_ID = 0x64706D70
#: Version of the ledger's SQL schema (``PRAGMA user_version`` and table ``dpmap_schema``).
SCHEMA_VERSION = 3
#: Older schemas this dpmap still reads (and upgrades on the first write).
_READABLE_SCHEMAS = (1, 2, 3)
#: The accounting kinds an entry can record.
ACCOUNTING_MODES: tuple[str, ...] = ("pure-dp", "approx-dp", "zcdp")

Accounting = Literal["pure-dp", "approx-dp", "zcdp"]
Status = Literal["reserved", "spent", "cancelled"]
#: A number the ledger accepts, converted exactly (floats: see the module docstring).
Amount = int | float | Fraction | Decimal | str

_COUNTING = ("reserved", "spent")
_T = TypeVar("_T")
_MAX_DETAILS_BYTES = 64 * 1024
_MAX_NAME = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: The SELECT list of an entry, without the schema-2 ``label`` and the schema-3 ``claim``.
_ENTRY_COLUMNS = (
    "id, dataset, created_at, status, epsilon, delta, rho, accounting, mechanism, statistics, "
    "resolution, fingerprint, dpmap_version, details, noise_drawn_at, finalized_at"
)

#: At most one entry that counts holds a claim (schema 3; the same SQL for PostgreSQL).
CLAIM_INDEX = (
    "CREATE UNIQUE INDEX IF NOT EXISTS entries_by_claim ON entries (claim) "
    "WHERE claim IS NOT NULL AND status <> 'cancelled'"
)

_SCHEMA = (
    """
    CREATE TABLE dpmap_schema (
        version        INTEGER NOT NULL,
        created_at     TEXT    NOT NULL,
        dpmap_version  TEXT    NOT NULL
    )
    """,
    """
    CREATE TABLE datasets (
        name           TEXT PRIMARY KEY NOT NULL,
        epsilon        TEXT NOT NULL,
        delta          TEXT NOT NULL,
        created_at     TEXT NOT NULL,
        dpmap_version  TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE entries (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        dataset         TEXT NOT NULL REFERENCES datasets(name),
        created_at      TEXT NOT NULL,
        status          TEXT NOT NULL CHECK (status IN ('reserved', 'spent', 'cancelled')),
        noise_drawn_at  TEXT,
        finalized_at    TEXT,
        epsilon         TEXT NOT NULL,
        delta           TEXT NOT NULL,
        rho             TEXT,
        accounting      TEXT NOT NULL CHECK (accounting IN ('pure-dp', 'approx-dp', 'zcdp')),
        mechanism       TEXT NOT NULL,
        statistics      TEXT NOT NULL,
        resolution      INTEGER,
        fingerprint     TEXT,
        dpmap_version   TEXT NOT NULL,
        details         TEXT NOT NULL,
        label           TEXT,
        claim           TEXT
    )
    """,
    "CREATE INDEX entries_by_dataset ON entries (dataset, status)",
    CLAIM_INDEX,
)


# --------------------------------------------------------------------------- numbers


def _exact(value: object, name: str, *, floats: Literal["decimal", "binary"]) -> Fraction:
    """Convert a user-supplied number to an exact :class:`~fractions.Fraction`.

    ``floats="binary"`` (spends) reads a float as its exact binary value ``Fraction(x)``;
    ``floats="decimal"`` (caps) as its shortest round-tripping decimal ``repr(x)``. Strings
    are read as decimals or ``"p/q"``. Booleans, NaN and infinities are refused with a
    SpecError.
    """
    if isinstance(value, bool):
        raise SpecError(f"{name} must be a number, got the boolean {value!r}")
    try:
        if isinstance(value, Fraction):
            return value
        if isinstance(value, numbers.Integral):
            return Fraction(int(value))
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise SpecError(f"{name} must be finite, got {value}")
            return Fraction(value)
        if isinstance(value, str):
            text = value.strip()
            if text.lower().lstrip("+-") in {"nan", "inf", "infinity", "snan"}:
                raise SpecError(f"{name} must be finite, got {value!r}")
            return Fraction(text)
        if isinstance(value, numbers.Real):  # float, numpy.float64, numpy.float32, ...
            as_float = float(value)
            if not math.isfinite(as_float):
                raise SpecError(f"{name} must be finite, got {value!r}")
            if floats == "binary":
                return Fraction(as_float)  # exact: never below the float that was reported
            # float.__repr__ also for subclasses (numpy.float64's repr is 'np.float64(…)')
            return Fraction(float.__repr__(as_float))
    except (ValueError, ZeroDivisionError, InvalidOperation) as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError(f"{name} must be a number, got {value!r}") from None
    raise SpecError(f"{name} must be a number, got {type(value).__name__} {value!r}")


def _store(x: Fraction) -> str:
    """Exact, canonical text for storage: a plain decimal when one exists, else ``p/q``."""
    n, d = x.numerator, x.denominator
    rest, twos, fives = d, 0, 0
    while rest % 2 == 0:
        rest //= 2
        twos += 1
    while rest % 5 == 0:
        rest //= 5
        fives += 1
    if rest != 1:
        return f"{n}/{d}"
    k = max(twos, fives)
    # Decimal from a (sign, digits, exponent) tuple is exact; Decimal arithmetic such as
    # scaleb would round to the context's 28 digits (a float spend has up to ~55).
    digits = n * (10**k // d)
    text = format(Decimal((int(digits < 0), tuple(map(int, str(abs(digits)))), -k)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in {"-0", ""} else text


def _load(text: str | None) -> Fraction | None:
    return None if text is None else Fraction(text)


def _pretty_decimal(dec: Decimal) -> str:
    if dec == dec.to_integral_value():
        return str(int(dec))
    with localcontext() as ctx:  # normalize() rounds to the context: keep every digit
        ctx.prec = max(28, len(dec.as_tuple().digits) + 2)
        return format(dec.normalize(), "g").replace("E", "e")


def format_amount(
    x: Fraction, rounding: Literal["exact", "up", "down"] = "exact", digits: int = 6
) -> str:
    """Format a budget amount for people.

    Parameters
    ----------
    x
        The exact amount.
    rounding
        ``"exact"`` shows the exact value (a decimal, or ``p/q`` if it has no finite
        decimal expansion). ``"up"`` / ``"down"`` round to ``digits`` significant digits
        towards +∞ / −∞: use ``"up"`` for amounts spent and ``"down"`` for amounts left,
        so that a rounded display never overstates what is left.
    digits
        Significant digits for ``"up"`` / ``"down"``.
    """
    if rounding == "exact":
        text = _store(x)
        if "/" in text:
            return text
        return _pretty_decimal(Decimal(text))
    if x == 0:
        return "0"
    with localcontext() as ctx:
        ctx.prec = digits
        ctx.rounding = ROUND_CEILING if rounding == "up" else ROUND_FLOOR
        dec = Decimal(x.numerator) / Decimal(x.denominator)
    return _pretty_decimal(dec)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Budget:
    """An exact amount of privacy loss.

    Attributes
    ----------
    epsilon, delta
        Exact ``(ε, δ)``.
    rho
        The total ``ρ`` of the zCDP releases included (``spent`` only), for information;
        ``None`` when there are none or when not applicable (``cap``, ``remaining``).
    """

    epsilon: Fraction
    delta: Fraction
    rho: Fraction | None = None

    def __str__(self) -> str:
        text = f"ε = {format_amount(self.epsilon)}, δ = {format_amount(self.delta)}"
        if self.rho is not None:
            text += f", ρ = {format_amount(self.rho)}"
        return text


@dataclass(frozen=True)
class LedgerEntry:
    """One release recorded in the ledger (read-only; see :meth:`Ledger.history`).

    Attributes
    ----------
    id
        Entry number, increasing in the order of reservation.
    dataset
        The dataset charged.
    time
        When the release was reserved (UTC, ISO 8601).
    status
        ``"reserved"`` (reserved; noise may or may not have been drawn — counts),
        ``"spent"`` (noise drawn — counts) or ``"cancelled"`` (given back before any noise
        was drawn — does not count).
    epsilon, delta, rho
        The privacy loss charged; ``rho`` only for ``accounting == "zcdp"``.
    accounting
        ``"pure-dp"``, ``"approx-dp"`` or ``"zcdp"`` (see the module docstring).
    mechanism, statistics, resolution
        What was released.
    fingerprint
        The output fingerprint recorded by :meth:`Reservation.finalize`, if any.
    dpmap_version
        The dpmap version that made the reservation.
    details
        Free-form JSON object passed by the caller.
    noise_drawn_at, finalized_at
        When :meth:`Reservation.mark_noise_drawn` / :meth:`Reservation.finalize` ran.
    label
        What the release was, in the caller's words (e.g. ``"debtors, January 2026"``;
        :func:`dpmap.release` passes its ``title``), or ``None``.
    claim
        The one-time step this entry took (see :meth:`Ledger.reserve`), or ``None``.
    """

    id: int
    dataset: str
    time: str
    status: Status
    epsilon: Fraction
    delta: Fraction
    rho: Fraction | None
    accounting: Accounting
    mechanism: str
    statistics: tuple[str, ...]
    resolution: int | None
    fingerprint: str | None
    dpmap_version: str
    details: dict[str, Any] = field(hash=False)
    noise_drawn_at: str | None = None
    finalized_at: str | None = None
    label: str | None = None
    claim: str | None = None

    @property
    def counts(self) -> bool:
        """Whether this entry counts against the cap (status reserved or spent)."""
        return self.status in _COUNTING

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; amounts as exact strings."""
        return {
            "id": self.id,
            "label": self.label,
            "claim": self.claim,
            "dataset": self.dataset,
            "time": self.time,
            "status": self.status,
            "epsilon": _store(self.epsilon),
            "delta": _store(self.delta),
            "rho": None if self.rho is None else _store(self.rho),
            "accounting": self.accounting,
            "mechanism": self.mechanism,
            "statistics": list(self.statistics),
            "resolution": self.resolution,
            "fingerprint": self.fingerprint,
            "dpmap_version": self.dpmap_version,
            "details": self.details,
            "noise_drawn_at": self.noise_drawn_at,
            "finalized_at": self.finalized_at,
        }


# --------------------------------------------------------------------------- validation


def _check_name(dataset: object) -> str:
    if not isinstance(dataset, str) or not dataset.strip():
        raise SpecError(f"dataset name must be a non-empty string, got {dataset!r}")
    if dataset != dataset.strip() or _CONTROL.search(dataset) or len(dataset) > _MAX_NAME:
        raise SpecError(
            f"dataset name {dataset!r} is not usable: use at most {_MAX_NAME} characters, "
            "no control characters and no leading or trailing spaces (e.g. 'hebei-debt-2026')"
        )
    return dataset


def _check_epsilon(
    value: object, name: str = "epsilon", *, floats: Literal["decimal", "binary"]
) -> Fraction:
    eps = _exact(value, name, floats=floats)
    if eps <= 0:
        raise SpecError(f"{name} must be > 0, got {format_amount(eps)}")
    return eps


def _check_delta(
    value: object, name: str = "delta", *, floats: Literal["decimal", "binary"]
) -> Fraction:
    delta = _exact(value, name, floats=floats)
    if not 0 <= delta < 1:
        raise SpecError(f"{name} must satisfy 0 <= {name} < 1, got {format_amount(delta)}")
    return delta


def _check_text(value: object, name: str, limit: int = _MAX_NAME) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise SpecError(
            f"{name} must be a non-empty string of at most {limit} characters, got {value!r}"
        )
    return value


def check_label(label: object) -> str | None:
    """A ledger entry's label, normalised to one line (runs of white space become one
    space); ``None`` stays ``None``. SpecError if it is not text, is empty, is longer than
    200 characters or holds other control characters."""
    if label is None:
        return None
    if not isinstance(label, str):
        raise SpecError(f"label (the release title) must be text, got {type(label).__name__}")
    text = " ".join(label.split())
    if not text or len(text) > _MAX_NAME or _CONTROL.search(text):
        raise SpecError(
            f"label (the release title) must be 1 to {_MAX_NAME} characters of text without "
            f"control characters, got {label[:60]!r}{'…' if len(label) > 60 else ''}"
        )
    return text


def _check_details(details: Mapping[str, Any] | None) -> str:
    if details is None:
        return "{}"
    if not isinstance(details, Mapping) or not all(isinstance(k, str) for k in details):
        raise SpecError("details must be a mapping with string keys (a JSON object)")
    try:
        text = json.dumps(dict(details), sort_keys=True, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise SpecError(
            f"details must be JSON-serialisable without NaN or infinity: {exc}"
        ) from None
    if len(text.encode("utf-8")) > _MAX_DETAILS_BYTES:
        raise SpecError(
            f"details is larger than {_MAX_DETAILS_BYTES // 1024} KiB; the ledger records release "
            "parameters, never data — pass a summary or a fingerprint instead"
        )
    return text


# --------------------------------------------------------------------------- ledger


@dataclass(frozen=True)
class _Record:
    """The audit-trail fields of a reservation, checked (public parameters only)."""

    mechanism: str
    statistics: tuple[str, ...]
    resolution: int | None
    details_json: str
    label: str | None


def _check_spend(
    accounting: Accounting,
    epsilon: Amount,
    delta: Amount,
    rho: Amount | None,
    *,
    claimed: bool = False,
) -> Budget:
    """The spend a reservation asks for, checked against its accounting mode.

    A spend is what OpenDP reported: a float is charged at its exact binary value. Only a
    reservation with a claim (``claimed``) may charge ``ε = 0`` (a pure-dp entry that
    records a step, not a spend).
    """
    if accounting not in ACCOUNTING_MODES:
        raise SpecError(
            f"accounting must be one of {', '.join(ACCOUNTING_MODES)}; got {accounting!r}"
        )
    if claimed and accounting == "pure-dp" and _exact(epsilon, "epsilon", floats="binary") == 0:
        _check_delta(delta, floats="binary")
        if rho is not None:
            raise SpecError(f"rho is only recorded for accounting='zcdp', not {accounting!r}")
        if _exact(delta, "delta", floats="binary") != 0:
            raise SpecError("a claim with epsilon = 0 has delta = 0; pass delta=0")
        return Budget(Fraction(0), Fraction(0))
    eps = _check_epsilon(epsilon, floats="binary")
    dlt = _check_delta(delta, floats="binary")
    rho_q: Fraction | None = None
    if accounting == "zcdp":
        if rho is None:
            raise SpecError(
                "a zcdp release must pass rho (and the (epsilon, delta) OpenDP converted it to)"
            )
        rho_q = _exact(rho, "rho", floats="binary")
        if rho_q <= 0:
            raise SpecError(f"rho must be > 0, got {format_amount(rho_q)}")
        if dlt == 0:
            raise SpecError(
                "a zcdp release needs delta > 0: pass the (epsilon, delta) that OpenDP's "
                "zCDP-to-approx-DP conversion reported for this rho"
            )
    elif rho is not None:
        raise SpecError(f"rho is only recorded for accounting='zcdp', not {accounting!r}")
    if accounting == "pure-dp" and dlt != 0:
        raise SpecError(
            f"a pure-dp release has delta = 0, got delta = {format_amount(dlt)}; "
            "use accounting='approx-dp'"
        )
    return Budget(eps, dlt, rho_q)


def _check_record(
    mechanism: str,
    statistics: Sequence[str],
    resolution: int | None,
    details: Mapping[str, Any] | None,
    label: str | None,
) -> _Record:
    """The audit-trail fields of a reservation, checked."""
    mech = _check_text(mechanism, "mechanism")
    if isinstance(statistics, str) or not isinstance(statistics, Sequence) or not statistics:
        raise SpecError(f"statistics must be a non-empty list of names, got {statistics!r}")
    stats = tuple(_check_text(s, "each statistic name") for s in statistics)
    if resolution is not None and (
        isinstance(resolution, bool)
        or not isinstance(resolution, numbers.Integral)
        or not 0 <= resolution <= 15
    ):
        raise SpecError(f"resolution must be an H3 resolution 0..15 or None, got {resolution!r}")
    res = None if resolution is None else int(resolution)
    return _Record(mech, stats, res, _check_details(details), check_label(label))


def _check_claim(claim: object) -> str | None:
    if claim is None:
        return None
    if not isinstance(claim, str) or not claim.strip() or _CONTROL.search(claim):
        raise SpecError(f"claim must be one line of text or None, got {claim!r}")
    return _check_text(claim, "claim", limit=512)


def _claim_holder(conn: Any, claim: str) -> int | None:
    """The id of the entry that counts and holds ``claim`` (None if it is free)."""
    row = conn.execute(
        "SELECT id FROM entries WHERE claim = ? AND status IN ('reserved', 'spent') "
        "ORDER BY id LIMIT 1",
        (claim,),
    ).fetchone()
    return None if row is None else int(row[0])


def _claim_taken(claim: str, holder: int, where: str) -> ClaimTakenError:
    err = ClaimTakenError(
        f"reservation refused: claim {claim!r} is already held by entry {holder} of ledger "
        f"{where}; this step was already taken and cannot be taken twice. Nothing was "
        f"recorded. See the entry with: dpmap budget show {where}"
    )
    err.claim = claim
    err.entry_id = holder
    return err


def _insert_reserved(
    conn: Any, name: str, requested: Budget, accounting: str, record: _Record, claim: str | None
) -> int:
    """Record the release with status ``"reserved"``; returns the new entry's id."""
    row = conn.execute(
        "INSERT INTO entries (dataset, created_at, status, epsilon, delta, rho, "
        "accounting, mechanism, statistics, resolution, fingerprint, dpmap_version, "
        f"details, label{', claim' if claim is not None else ''}) "
        "VALUES (?, ?, 'reserved', ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?"
        f"{', ?' if claim is not None else ''}) RETURNING id",
        (
            name,
            _now(),
            _store(requested.epsilon),
            _store(requested.delta),
            None if requested.rho is None else _store(requested.rho),
            accounting,
            record.mechanism,
            json.dumps(list(record.statistics), ensure_ascii=False),
            record.resolution,
            __version__,
            record.details_json,
            record.label,
            *(() if claim is None else (claim,)),
        ),
    ).fetchone()
    return int(row[0])


def _nearby_ledger(path: Path) -> Path | None:
    """The dpmap ledger in ``path``'s folder whose name is closest to ``path``'s, if any is
    close (for "did you mean"). Reads 72 bytes of at most 200 files; never writes."""
    folder = path.parent
    try:
        names = sorted(p.name for p in folder.iterdir())[:200]
    except OSError:
        return None
    for name in difflib.get_close_matches(path.name, names, n=3, cutoff=0.75):
        try:
            with open(folder / name, "rb") as fh:
                header = fh.read(72)
        except OSError:
            continue
        mark = int.from_bytes(header[68:72], "big") if len(header) == 72 else 0
        if header.startswith(b"SQLite format 3\x00") and mark == APPLICATION_ID:
            return folder / name
    return None


class _SqliteStore:
    """The SQLite storage of a ledger: one file, one connection per transaction
    (``BEGIN IMMEDIATE`` for writes: the file's write lock serialises them).

    The storage interface the :class:`Ledger` uses (:mod:`dpmap.ledger_postgres` has the
    PostgreSQL one): ``where`` (the ledger as shown in messages), ``path``,
    ``transaction(write=...)`` (a context manager yielding a connection whose
    ``execute(sql, params)`` takes ``?`` placeholders), ``write(body)`` (run
    ``body(conn)`` in one write transaction, retried where the backend needs it) and
    ``entry_columns(conn)``.
    """

    def __init__(self, path: Path, *, timeout: float, create: bool) -> None:
        self.path: Path | None = path
        self._path = path
        self._timeout = timeout
        if self._path.is_dir():
            raise DataFileError(
                f"ledger path {self._path} is a directory; pass a file name such as budget.db"
            )
        if not self._path.exists():
            if not create:
                near = _nearby_ledger(self._path)
                hint = f"; did you mean {str(near)!r}?" if near is not None else ""
                raise DataFileError(
                    f"ledger {self._path} does not exist{hint} (check the path: dpmap never "
                    "creates a ledger on the way, so that a typo cannot start a fresh budget); "
                    f"to start a new ledger: dpmap budget init {self._path} --dataset NAME "
                    "--epsilon E"
                )
            if not self._path.parent.exists():
                raise DataFileError(
                    f"cannot create ledger {self._path}: folder {self._path.parent} does not exist"
                )
        size = self._path.stat().st_size if self._path.exists() else 0
        if size == 0:
            if not create:
                raise BudgetError(
                    f"{self._path} is an empty file, not a dpmap ledger yet; create it with: "
                    f"dpmap budget init {self._path} --dataset NAME --epsilon E"
                )
            self._initialise()
        else:
            self._verify()

    @property
    def where(self) -> str:
        """The ledger as shown in messages: the file's path."""
        return str(self._path)

    def write(self, body: Callable[[Any], _T]) -> _T:
        """``body(conn)`` in one write transaction (the write lock makes it exclusive)."""
        with self.transaction(write=True) as conn:
            return body(conn)

    def entry_columns(self, conn: sqlite3.Connection) -> str:
        """The SELECT list of an entry; a schema-1 ledger (read, not upgraded) has no label,
        a schema-1 or 2 one no claim."""
        columns = {r[1] for r in conn.execute("PRAGMA table_info(entries)")}
        return (
            _ENTRY_COLUMNS
            + (", label" if "label" in columns else ", NULL")
            + (", claim" if "claim" in columns else ", NULL")
        )

    def _not_a_ledger(self, reason: str) -> BudgetError:
        return BudgetError(
            f"{self._path} is not a dpmap ledger ({reason}); dpmap refuses to use or overwrite it. "
            "Check the path, or restore the ledger from a backup"
        )

    def _translate(self, exc: sqlite3.Error) -> Exception:
        msg = str(exc)
        low = msg.lower()
        if "locked" in low or "busy" in low:
            return BudgetError(
                f"ledger {self._path} is busy: another process held it for more than "
                f"{self._timeout:g} s; try again"
            )
        if "not a database" in low:
            return self._not_a_ledger("not an SQLite database")
        if "malformed" in low or "corrupt" in low:
            return self._not_a_ledger(f"the database is damaged: {msg}")
        if "unable to open" in low or "readonly" in low or "read-only" in low or "disk i/o" in low:
            return DataFileError(f"cannot use ledger {self._path}: {msg}")
        return BudgetError(f"ledger {self._path} cannot be used: {msg}")

    def _connect(self, *, create: bool = False) -> sqlite3.Connection:
        # mode=rw: SQLite never creates the file (a ledger deleted or moved after it was
        # opened is an error, not a fresh, empty budget); only _initialise passes rwc.
        uri = f"{self._path.absolute().as_uri()}?mode={'rwc' if create else 'rw'}"
        try:
            conn = sqlite3.connect(uri, timeout=self._timeout, isolation_level=None, uri=True)
        except sqlite3.Error as exc:
            if not create and not self._path.exists():
                raise DataFileError(
                    f"ledger {self._path} does not exist (any more); check the path, or create "
                    f"a ledger with: dpmap budget init {self._path} --dataset NAME --epsilon E"
                ) from exc
            raise self._translate(exc) from exc
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            conn.close()
            raise self._translate(exc) from exc
        return conn

    @contextlib.contextmanager
    def transaction(self, *, write: bool, initialise: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction on a fresh connection; sqlite errors become dpmap errors."""
        conn = self._connect()
        try:
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                self._check_identity(conn, initialise=initialise, write=write)
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        finally:
            conn.close()

    def _check_identity(self, conn: sqlite3.Connection, *, initialise: bool, write: bool) -> None:
        # Under BEGIN IMMEDIATE nobody else can write, so an empty file stays empty. (SQLite's
        # page_count is 1 inside a write transaction on an empty file, hence the file size.)
        if self._path.stat().st_size == 0:
            if not initialise:
                raise BudgetError(
                    f"{self._path} is an empty file, not a dpmap ledger yet; create it with: "
                    f"dpmap budget init {self._path} --dataset NAME --epsilon E"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO dpmap_schema (version, created_at, dpmap_version) VALUES (?, ?, ?)",
                (SCHEMA_VERSION, _now(), __version__),
            )
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise self._not_a_ledger(
                "an SQLite database of another application"
                if app_id
                else "an SQLite database without the dpmap ledger mark"
            )
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise BudgetError(
                f"ledger {self._path} was written by a newer dpmap (ledger schema {version}; this "
                f"dpmap {__version__} reads schema {SCHEMA_VERSION}); upgrade dpmap to use it"
            )
        try:
            rows = conn.execute("SELECT version FROM dpmap_schema").fetchall()
        except sqlite3.OperationalError:
            rows = []
        if version not in _READABLE_SCHEMAS or rows != [(version,)]:
            raise self._not_a_ledger(
                f"it carries the dpmap mark but its schema is unrecognised (version {version})"
            )
        if version < SCHEMA_VERSION and write:
            # schema 1 → 2: entries gain a label; 2 → 3: a claim, unique among the entries
            # that count. Inside this write transaction, so the upgrade and the write that
            # needed it commit (or roll back) together.
            if version == 1:
                conn.execute("ALTER TABLE entries ADD COLUMN label TEXT")
            conn.execute("ALTER TABLE entries ADD COLUMN claim TEXT")
            conn.execute(CLAIM_INDEX)
            conn.execute("UPDATE dpmap_schema SET version = ?", (SCHEMA_VERSION,))
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _initialise(self) -> None:
        # An empty or missing file: make it a ledger. The page count is checked again under
        # the write lock, so two processes creating the same ledger at once are fine.
        conn = self._connect(create=True)
        try:
            if self._path.stat().st_size == 0:
                conn.execute("PRAGMA journal_mode = DELETE")
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        finally:
            conn.close()
        with self.transaction(write=True, initialise=True):
            pass

    def _verify(self) -> None:
        # Everything is read under SQLite's shared lock, so a ledger being created by
        # another process at this very moment is seen either empty or complete. Reading
        # never writes: a foreign or damaged file is left byte-for-byte as it was.
        with self.transaction(write=False) as conn:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise self._not_a_ledger(f"the database is damaged: {'; '.join(problems[:3])}")


class _Store(Protocol):
    """What a :class:`Ledger` needs of its storage (see :class:`_SqliteStore`)."""

    path: Path | None

    @property
    def where(self) -> str: ...

    def transaction(self, *, write: bool) -> contextlib.AbstractContextManager[Any]: ...

    def write(self, body: Callable[[Any], _T]) -> _T: ...

    def entry_columns(self, conn: Any) -> str: ...


_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def _open_store(path: object, timeout: float, create: bool) -> _Store:
    """The storage of the ledger at ``path``: a ``postgresql://`` (or ``postgres://``) URL
    is a PostgreSQL database, anything else an SQLite file."""
    if not isinstance(path, (str, os.PathLike)):
        raise SpecError(
            "ledger must be the path of a ledger file or a postgresql:// URL, "
            f"got {type(path).__name__}"
        )
    text = os.fspath(path)
    if not isinstance(text, str):
        raise SpecError(f"ledger path must be text, got {text!r}")
    scheme = _URL_SCHEME.match(text)
    if scheme and len(scheme.group(1)) > 1:  # not a Windows drive letter such as C:
        if (
            scheme.group(1).lower() in ("postgresql", "postgres")
            and text[scheme.end() : scheme.end() + 2] == "//"
        ):
            from dpmap.ledger_postgres import PostgresStore  # psycopg only when needed

            return PostgresStore(text, timeout=timeout, create=create)
        from dpmap.ledger_postgres import mask_url

        raise SpecError(
            f"ledger {mask_url(text)!r} is neither a file path nor a PostgreSQL URL; pass a "
            "file such as budget.db (SQLite) or a URL such as "
            "postgresql://analyst@db.example.org/dpmap (if it was a URL, check its "
            "'postgresql://' prefix: a Path() or a shell may have dropped a slash)"
        )
    return _SqliteStore(Path(text), timeout=timeout, create=create)


class Ledger:
    """A privacy-budget ledger stored in one SQLite file, or in a PostgreSQL database that
    a team shares across machines.

    ``Ledger(path)`` opens an existing ledger; it never creates one. Create a ledger with
    :meth:`Ledger.init` (file and first dataset, like ``dpmap budget init``) or
    ``Ledger(path, create=True)`` (the file only; add datasets with :meth:`create`).

    Parameters
    ----------
    path
        The ledger file (SQLite), or a PostgreSQL URL
        ``postgresql://user@host[:port]/database`` (needs ``dpmap[postgres]``; see
        :mod:`dpmap.ledger_postgres`). Both have the same semantics; a password in the URL
        is never shown (see :attr:`location`).
    timeout
        Seconds a call waits for another process holding the ledger before it fails
        with a :class:`~dpmap.errors.BudgetError`.
    create
        If true, a missing (or empty) file is made an empty ledger. If false (the
        default), a missing file raises :class:`~dpmap.errors.DataFileError` and an
        empty one :class:`~dpmap.errors.BudgetError`, and nothing is created.

    Raises
    ------
    BudgetError
        If the file exists but is not a dpmap ledger (not SQLite, another application's
        database, damaged, or from a newer dpmap). The file is left untouched.
    DataFileError
        If the file does not exist (and ``create`` is false) or cannot be opened or
        created; for a URL, if the server cannot be reached or psycopg is missing.
    SpecError
        If ``path`` looks like a URL but is not a well-formed ``postgresql://`` one.

    Notes
    -----
    A ``Ledger`` holds no open connection: every call opens the file, runs one
    transaction and closes it, so a ``Ledger`` can be shared across threads and passed to
    (or re-created in) other processes. No call other than ``Ledger(path, create=True)``
    and :meth:`Ledger.init` creates the file: if it disappears, later calls fail.

    Privacy
    -------
    See the module docstring: reservations count from the moment they are made, are
    given back only if no noise was drawn, all sums are exact, and a mistyped path or
    dataset name is refused instead of starting a fresh budget.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, timeout: float = 30.0, create: bool = False
    ) -> None:
        if not (
            isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout >= 0
        ):
            raise SpecError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        self._store: _Store = _open_store(path, float(timeout), create)
        self._where = self._store.where

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        dataset: str,
        *,
        epsilon: Amount,
        delta: Amount = 0,
        timeout: float = 30.0,
    ) -> Ledger:
        """Create the ledger file if needed and register ``dataset`` with its cap.

        The Python form of ``dpmap budget init PATH --dataset NAME --epsilon E``. Returns
        the ledger. Raises :class:`~dpmap.errors.BudgetError` if the dataset already
        exists (a cap is never changed); see :meth:`create`.
        """
        book = cls(path, timeout=timeout, create=True)
        book.create(dataset, epsilon=epsilon, delta=delta)
        return book

    # ------------------------------------------------------------------ public API

    @property
    def path(self) -> Path | None:
        """The ledger file (``None`` for a PostgreSQL ledger: see :attr:`location`)."""
        return self._store.path

    @property
    def location(self) -> str:
        """Where the ledger is, as shown in messages: the file's path, or the PostgreSQL URL
        with its password masked."""
        return self._where

    def __repr__(self) -> str:
        return f"Ledger({self._where!r})"

    def _write(self, body: Callable[[Any], _T]) -> _T:
        """``body(conn)`` in one write transaction (SQLite: under the file's write lock;
        PostgreSQL: SERIALIZABLE, run again from the start after a serialization failure,
        so ``body`` must only read and write through ``conn``)."""
        return self._store.write(body)

    def create(self, dataset: str, *, epsilon: Amount, delta: Amount = 0) -> Budget:
        """Register a dataset with its privacy-loss cap.

        Parameters
        ----------
        dataset
            A name for the body of sensitive data, e.g. ``"hebei-debt-2026"``. Releases
            are charged to it by name.
        epsilon
            The total ε that all releases of this dataset may spend (> 0, finite).
        delta
            The total δ (``0 <= delta < 1``); 0 for pure DP only.

        Returns
        -------
        Budget
            The cap, exactly as stored.

        Raises
        ------
        SpecError
            If the name or the cap is invalid.
        BudgetError
            If the dataset already exists (caps are never changed).

        Privacy
        -------
        The cap is fixed once set: to publish more, a new dataset (a new period, fresh
        data) must be created; a cap is never raised after releases were charged to it.
        """
        name = _check_name(dataset)
        # a cap is a policy number: a float is read as the decimal the user wrote
        eps = _check_epsilon(epsilon, floats="decimal")
        dlt = _check_delta(delta, floats="decimal")

        def body(conn: Any) -> None:
            row = conn.execute(
                "SELECT epsilon, delta FROM datasets WHERE name = ?", (name,)
            ).fetchone()
            if row is not None:
                existing = Budget(Fraction(row[0]), Fraction(row[1]))
                raise BudgetError(
                    f"dataset {name!r} already exists in ledger {self._where} with cap {existing}; "
                    "a cap is never changed or reset. Use another name for new data or a new "
                    f"period (e.g. '{name}-2'), or see its state with: "
                    f"dpmap budget show {self._where} "
                    f"--dataset {name}"
                )
            conn.execute(
                "INSERT INTO datasets (name, epsilon, delta, created_at, dpmap_version) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, _store(eps), _store(dlt), _now(), __version__),
            )

        self._write(body)
        return Budget(eps, dlt)

    def datasets(self) -> list[str]:
        """Names of all datasets in the ledger, sorted."""
        with self._store.transaction(write=False) as conn:
            return [r[0] for r in conn.execute("SELECT name FROM datasets ORDER BY name")]

    def cap(self, dataset: str) -> Budget:
        """The dataset's cap ``(ε, δ)``."""
        with self._store.transaction(write=False) as conn:
            return self._cap(conn, dataset)

    def spent(self, dataset: str) -> Budget:
        """What the dataset has spent: ``(Σ ε, Σ δ)`` over entries that count, exactly.

        Entries that count are those with status ``"reserved"`` or ``"spent"``.
        ``rho`` is the total ρ of the zCDP entries among them (``None`` if there are none),
        reported for information; the cap is enforced on ``(ε, δ)``.
        """
        with self._store.transaction(write=False) as conn:
            self._cap(conn, dataset)
            return self._spent(conn, dataset)

    def remaining(self, dataset: str) -> Budget:
        """What the dataset may still spend: ``cap − spent`` for ε and δ, exactly.

        Privacy
        -------
        Exact: never rounded in the user's favour. In-flight reservations (including
        those of processes that died) are already subtracted.
        """
        with self._store.transaction(write=False) as conn:
            cap = self._cap(conn, dataset)
            spent = self._spent(conn, dataset)
        return Budget(cap.epsilon - spent.epsilon, cap.delta - spent.delta)

    def history(self, dataset: str) -> list[LedgerEntry]:
        """Every release recorded for the dataset, oldest first, including cancelled ones."""
        with self._store.transaction(write=False) as conn:
            self._cap(conn, dataset)
            rows = conn.execute(
                f"SELECT {self._store.entry_columns(conn)} FROM entries WHERE dataset = ? ORDER BY id",
                (dataset,),
            ).fetchall()
        return [_entry_from_row(row) for row in rows]

    def entry(self, entry_id: int) -> LedgerEntry:
        """One entry by id."""
        with self._store.transaction(write=False) as conn:
            row = conn.execute(
                f"SELECT {self._store.entry_columns(conn)} FROM entries WHERE id = ?", (entry_id,)
            ).fetchone()
        if row is None:
            raise BudgetError(f"ledger {self._where} has no entry {entry_id}")
        return _entry_from_row(row)

    def reserve(
        self,
        dataset: str,
        *,
        epsilon: Amount,
        delta: Amount = 0,
        rho: Amount | None = None,
        accounting: Accounting,
        mechanism: str,
        statistics: Sequence[str],
        resolution: int | None = None,
        details: Mapping[str, Any] | None = None,
        label: str | None = None,
        claim: str | None = None,
    ) -> Reservation:
        """Reserve privacy budget for one release, or refuse.

        In one ``BEGIN IMMEDIATE`` transaction: check that ``spent + requested <= cap``
        for both ε and δ (and that ``claim``, if given, is free), then record an entry with
        status ``"reserved"``. Use the result as a context manager (see
        :class:`Reservation`).

        Parameters
        ----------
        dataset
            The dataset to charge.
        epsilon, delta
            The release's privacy loss, as reported by OpenDP (for ``"zcdp"``: the
            ``(ε, δ)`` of OpenDP's conversion of this release's ρ).
        rho
            The release's ρ; required for ``accounting="zcdp"``, refused otherwise.
        accounting
            ``"pure-dp"`` (δ must be 0), ``"approx-dp"`` or ``"zcdp"`` (δ > 0).
        mechanism, statistics, resolution, details
            Recorded for the audit trail. ``details`` is a small JSON object: release
            parameters only, never data.
        label
            Which release this is, for people reading the history (e.g. ``"debtors,
            January 2026"``); at most 200 characters, one line. Public text: never data.
        claim
            A one-time step this entry takes (one line, at most 512 characters), e.g.
            ``"continual:12:from:2026-03"``: refused if an entry that counts (reserved or
            spent) already holds it; a cancelled reservation frees it. With a claim and
            ``accounting="pure-dp"``, ``epsilon`` may be 0 (the entry records the step and
            spends nothing). Public text: never data.

        Returns
        -------
        Reservation
            Already committed: it counts against the cap from now on.

        Raises
        ------
        BudgetExceededError
            If the release would exceed the cap; nothing is recorded. The exception has
            attributes ``requested`` and ``remaining`` (:class:`Budget`).
        SpecError
            If a parameter is invalid; nothing is recorded.
        ClaimTakenError
            If ``claim`` is held by an entry that counts; nothing is recorded. The
            exception has attributes ``claim`` and ``entry_id`` (the holder).
        BudgetError
            If the dataset is unknown or the ledger is unusable or busy.

        Privacy
        -------
        Call this *before* any noise is drawn, and draw noise only after
        :meth:`Reservation.mark_noise_drawn` returned.
        """
        name = _check_name(dataset)
        wanted = _check_claim(claim)
        requested = _check_spend(accounting, epsilon, delta, rho, claimed=wanted is not None)
        record = _check_record(mechanism, statistics, resolution, details, label)

        def body(conn: Any) -> int:
            self._check_cap(conn, name, requested)
            if wanted is not None:
                holder = _claim_holder(conn, wanted)
                if holder is not None:
                    raise _claim_taken(wanted, holder, self._where)
            return _insert_reserved(conn, name, requested, accounting, record, wanted)

        entry_id = self._write(body)
        return Reservation(self, entry_id, name, requested)

    # ------------------------------------------------------------------ internals

    def _check_cap(self, conn: Any, name: str, requested: Budget) -> None:
        """Refuse ``requested`` unless ``spent + requested <= cap`` for both ε and δ (inside
        the caller's write transaction, so no other process can spend in between)."""
        cap = self._cap(conn, name)
        spent = self._spent(conn, name)
        remaining = Budget(cap.epsilon - spent.epsilon, cap.delta - spent.delta)
        if requested.epsilon > remaining.epsilon or requested.delta > remaining.delta:
            raise self._exceeded(name, requested, remaining)

    def _exceeded(self, name: str, requested: Budget, remaining: Budget) -> BudgetExceededError:
        # Shown to 17 significant digits (a float's precision), each rounded against the user: requested and the
        # excess up, remaining down (a float spend's exact binary value has ~55 digits).
        def part(symbol: str, req: Fraction, rem: Fraction) -> str:
            diff = req - rem
            verdict = (
                f"{format_amount(diff, 'up', 17)} over the remainder"
                if diff > 0
                else "within the remainder"
            )
            return (
                f"{symbol}: requested {format_amount(req, 'up', 17)}, remaining "
                f"{format_amount(rem, 'down', 17)}, difference {verdict}"
            )

        if remaining.epsilon <= 0 or (requested.delta > 0 and remaining.delta <= 0):
            step = (
                "this dataset's budget is used up; no further release of it is possible. "
                "Publish from new data (e.g. next period) under a new dataset with: "
                f"dpmap budget init {self._where} --dataset NAME --epsilon E"
            )
        else:
            step = (
                f"request at most ε = {format_amount(remaining.epsilon, 'down', 17)}"
                + (
                    f" and δ = {format_amount(remaining.delta, 'down', 17)}"
                    if requested.delta > 0
                    else ""
                )
                + " (e.g. fewer statistics or a smaller epsilon), "
                "or publish new data under a new dataset"
            )
        err = BudgetExceededError(
            f"release refused: it would exceed the privacy budget of dataset {name!r} in ledger "
            f"{self._where}. {part('epsilon', requested.epsilon, remaining.epsilon)}; "
            f"{part('delta', requested.delta, remaining.delta)}. Nothing was recorded. "
            f"Next step: {step}."
        )
        err.requested = requested
        err.remaining = remaining
        return err

    def _cap(self, conn: Any, dataset: str) -> Budget:
        row = conn.execute(
            "SELECT epsilon, delta FROM datasets WHERE name = ?", (dataset,)
        ).fetchone()
        if row is None:
            raise self._unknown(conn, dataset)
        return Budget(Fraction(row[0]), Fraction(row[1]))

    def _unknown(self, conn: Any, dataset: object) -> BudgetError:
        """The error for a dataset that is not in the ledger: never suggest creating the
        name that was typed (a typo must not get a fresh budget); name the existing ones."""
        known = [r[0] for r in conn.execute("SELECT name FROM datasets ORDER BY name")]
        if not known:
            listing = "the ledger has no datasets yet"
        else:
            shown = ", ".join(repr(k) for k in known[:10])
            more = f" and {len(known) - 10} more" if len(known) > 10 else ""
            listing = f"it has {shown}{more}"
        close = (
            difflib.get_close_matches(dataset, known, n=1, cutoff=0.6)
            if isinstance(dataset, str)
            else []
        )
        hint = f"; did you mean {close[0]!r}?" if close else "."
        return BudgetError(
            f"dataset {dataset!r} is not in ledger {self._where} ({listing}){hint} A release "
            "never creates a dataset: if this is new data, register it with its own cap: "
            f"dpmap budget init {self._where} --dataset NAME --epsilon E"
        )

    def _spent(self, conn: Any, dataset: str) -> Budget:
        eps = Fraction(0)
        dlt = Fraction(0)
        rho: Fraction | None = None
        for e, d, r in conn.execute(
            "SELECT epsilon, delta, rho FROM entries "
            "WHERE dataset = ? AND status IN ('reserved', 'spent')",
            (dataset,),
        ):
            eps += Fraction(e)
            dlt += Fraction(d)
            if r is not None:
                rho = (rho or Fraction(0)) + Fraction(r)
        return Budget(eps, dlt, rho)


def _entry_from_row(row: tuple[Any, ...]) -> LedgerEntry:
    (
        eid,
        dataset,
        created,
        status,
        eps,
        dlt,
        rho,
        acc,
        mech,
        stats,
        res,
        fp,
        ver,
        details,
        drawn,
        final,
        label,
        claim,
    ) = row
    return LedgerEntry(
        id=int(eid),
        dataset=dataset,
        time=created,
        status=status,
        epsilon=Fraction(eps),
        delta=Fraction(dlt),
        rho=_load(rho),
        accounting=acc,
        mechanism=mech,
        statistics=tuple(json.loads(stats)),
        resolution=res,
        fingerprint=fp,
        dpmap_version=ver,
        details=json.loads(details),
        noise_drawn_at=drawn,
        finalized_at=final,
        label=label,
        claim=claim,
    )


# --------------------------------------------------------------------------- reservation


class Reservation:
    """Budget reserved for one release; returned by :meth:`Ledger.reserve`.

    The reservation is already recorded (status ``"reserved"``) and counts against the
    cap. Use it as a context manager::

        with ledger.reserve(...) as r:
            ...                      # an exception here gives the budget back
            r.mark_noise_drawn()     # from here on the spend stands
            ...
            r.finalize(fingerprint="sha256:...")

    Leaving the block:

    * by an exception before :meth:`mark_noise_drawn`: the entry becomes
      ``"cancelled"`` and stops counting;
    * by an exception after :meth:`mark_noise_drawn`: the entry stays ``"spent"``;
    * normally without :meth:`mark_noise_drawn`: the entry becomes ``"spent"`` — the
      ledger cannot tell whether noise was drawn, so it keeps the charge (call
      :meth:`cancel` explicitly to give back a release that was not made).

    Privacy
    -------
    If giving the budget back fails (e.g. the ledger stays locked past the timeout), the
    entry stays ``"reserved"`` and keeps counting: failures always err on the side of
    spending.
    """

    def __init__(self, ledger: Ledger, entry_id: int, dataset: str, requested: Budget) -> None:
        self._ledger = ledger
        self.entry_id = entry_id
        self.dataset = dataset
        self.requested = requested
        self._state: Status = "reserved"

    def __repr__(self) -> str:
        return f"<Reservation #{self.entry_id} {self.dataset!r} {self.requested} ({self._state})>"

    @property
    def status(self) -> Status:
        """``"reserved"``, ``"spent"`` or ``"cancelled"`` (as this object last set it)."""
        return self._state

    @property
    def noise_drawn(self) -> bool:
        """Whether :meth:`mark_noise_drawn` has been called."""
        return self._state == "spent"

    def mark_noise_drawn(self) -> None:
        """Record that noise is about to be drawn: the spend now stands for good.

        Call this immediately before the first noise sample. If it raises, no noise may
        be drawn (the reservation still counts until the ``with`` block cancels it).
        """
        if self._state == "spent":
            return
        if self._state == "cancelled":
            raise BudgetError(
                f"reservation #{self.entry_id} was cancelled; reserve again before drawing noise"
            )
        self._set_status("spent", "noise_drawn_at")

    def finalize(self, fingerprint: str, *, details: Mapping[str, Any] | None = None) -> None:
        """Record the output's fingerprint (and optionally more ``details``, merged in).

        A finalized entry is always ``"spent"``: if :meth:`mark_noise_drawn` was not
        called, it is marked now (an output exists, so the spend stands).
        """
        fp = _check_text(fingerprint, "fingerprint", limit=512)
        if self._state == "cancelled":
            raise BudgetError(f"reservation #{self.entry_id} was cancelled and cannot be finalized")
        extra = json.loads(_check_details(details))

        def body(conn: Any) -> None:
            row = conn.execute(
                "SELECT status, details FROM entries WHERE id = ?", (self.entry_id,)
            ).fetchone()
            if row is None or row[0] == "cancelled":
                raise BudgetError(
                    f"ledger entry #{self.entry_id} is missing or cancelled; cannot finalize it"
                )
            merged = json.loads(row[1])
            merged.update(extra)
            now = _now()
            conn.execute(
                "UPDATE entries SET status = 'spent', "
                "noise_drawn_at = COALESCE(noise_drawn_at, ?), "
                "fingerprint = ?, finalized_at = ?, details = ? WHERE id = ?",
                (now, fp, now, _check_details(merged), self.entry_id),
            )

        self._ledger._write(body)
        self._state = "spent"

    def cancel(self) -> None:
        """Give the reserved budget back; only allowed before :meth:`mark_noise_drawn`.

        The entry is kept with status ``"cancelled"`` for the audit trail.
        """
        if self._state == "cancelled":
            return
        if self._state == "spent":
            raise BudgetError(
                f"reservation #{self.entry_id} cannot be cancelled: noise was drawn, "
                "so the spend stands"
            )
        self._set_status("cancelled", None)

    def _set_status(self, new: Status, stamp_column: str | None) -> None:
        def body(conn: Any) -> None:
            stamp = f", {stamp_column} = ?" if stamp_column else ""
            params: tuple[Any, ...] = (
                (new, _now(), self.entry_id) if stamp_column else (new, self.entry_id)
            )
            cur = conn.execute(
                f"UPDATE entries SET status = ?{stamp} WHERE id = ? AND status = 'reserved'", params
            )
            if cur.rowcount != 1:
                raise BudgetError(
                    f"ledger entry #{self.entry_id} is no longer reserved; cannot mark it {new}"
                )

        self._ledger._write(body)
        self._state = new

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state != "reserved":
            return
        if exc_type is None:
            self._set_status("spent", None)
            return
        # An exception before any noise was drawn: give the budget back. If that fails
        # the entry stays "reserved" (counted), and the original exception propagates.
        with contextlib.suppress(Exception):
            self.cancel()
