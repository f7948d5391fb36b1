"""The PostgreSQL storage of a privacy-budget ledger (``dpmap.Ledger("postgresql://...")``).

A team that publishes from several machines (or from Spark jobs) shares one ledger in a
PostgreSQL database instead of an SQLite file on a network share (whose file locking is
not reliable). The ledger's semantics live in :mod:`dpmap.ledger` and are the same for
both storages; this module only stores them:

* **Reservation before noise, serialised.** Every write (a new dataset, a reservation, a
  status change) is one ``SERIALIZABLE`` transaction on a fresh connection. PostgreSQL
  guarantees that concurrent serializable transactions behave as if run one at a time,
  or one of them fails with a serialization failure (SQLSTATE 40001); that transaction
  is rolled back and run again from the start (re-reading what was spent), until it
  commits or ``timeout`` seconds have passed. Two analysts can therefore never both see
  the same remaining budget.
* **Reads** run in a ``REPEATABLE READ READ ONLY`` transaction: one consistent snapshot
  (a cap and the spends under it are read together), and never a serialization failure.
* **Exact amounts** are stored as text, exactly as in the SQLite file (a decimal, or
  ``p/q``), never as a floating-point or ``numeric`` column.
* **Failure is fail-safe.** A process that dies after its reservation leaves the entry
  ``"reserved"``: it counts, as in SQLite. A server that goes away mid-release makes the
  next ledger call fail with a one-line :class:`~dpmap.errors.BudgetError` (the release
  stops before any noise if that call was the reservation); a commit whose outcome is
  unknown either recorded the reservation (it counts) or did not (nothing was spent),
  and no noise is drawn either way.
* **Versioned schema.** The table ``dpmap_schema`` holds the ledger's schema version and
  the mark ``application = 'dpmap-ledger'``; a database without it is refused unless it is
  created (``Ledger(url, create=True)``, ``Ledger.init``, ``dpmap budget init``), and a
  database holding tables named ``datasets`` or ``entries`` of another application is
  never written to. A schema-2 database (entries without a ``claim``) is read as it is and
  upgraded to schema 3 by the first write, inside that write's transaction.
* **No password is shown.** Messages, ``repr`` and :attr:`~dpmap.Ledger.location` show the
  URL with its password replaced by ``***`` (a release manifest records only the
  dataset name and the entry id, never the ledger's location).

Needs the optional dependency psycopg 3: ``pip install 'dpmap[postgres]'``.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from dpmap._version import __version__
from dpmap.errors import BudgetError, DataFileError, SpecError

__all__ = ["APPLICATION", "SCHEMA_VERSION", "PostgresStore", "mask_url"]

#: The mark in ``dpmap_schema.application`` of a dpmap ledger database.
APPLICATION = "dpmap-ledger"
#: Version of the PostgreSQL ledger's schema (table ``dpmap_schema``); the same columns as
#: SQLite schema 3 (entries have a ``label`` and a ``claim``, unique among those that count).
SCHEMA_VERSION = 3
#: Older schemas this dpmap still reads (and upgrades on the first write).
_READABLE_SCHEMAS = (2, 3)

_T = TypeVar("_T")
#: SQLSTATEs after which a write transaction is run again: serialization failure, deadlock,
#: unique violation (a claim taken by a concurrent write: the rerun finds it and refuses).
_RETRY_STATES = ("40001", "40P01", "23505")
#: An arbitrary key for pg_advisory_lock while the tables are created ("dpmp").
_CREATE_LOCK = 0x64706D70

#: The SELECT list of an entry, in the order :mod:`dpmap.ledger` reads it.
_ENTRY_COLUMNS = (
    "id, dataset, created_at, status, epsilon, delta, rho, accounting, mechanism, statistics, "
    "resolution, fingerprint, dpmap_version, details, noise_drawn_at, finalized_at, label, "
    "claim"
)
#: At most one entry that counts holds a claim (the same SQL as dpmap.ledger.CLAIM_INDEX).
_CLAIM_INDEX = (
    "CREATE UNIQUE INDEX IF NOT EXISTS entries_by_claim ON entries (claim) "
    "WHERE claim IS NOT NULL AND status <> 'cancelled'"
)

_SCHEMA = (
    """
    CREATE TABLE dpmap_schema (
        application    TEXT    NOT NULL,
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
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    _CLAIM_INDEX,
)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (in the user part and in a
    ``password=`` query parameter), for messages, reprs and logs."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            user, _, host = netloc.rpartition("@")
            if ":" in user:
                user = user.split(":", 1)[0] + ":***"
            netloc = f"{user}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*"
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return re.sub(r"://[^/@]*@", "://***@", url.split("?", 1)[0])


def _first_line(exc: BaseException) -> str:
    """The first line of a psycopg error, with any password in it masked (libpq quotes
    the part of a URL it could not parse)."""
    text = " ".join(str(exc).split("\n", 1)[0].split())
    text = re.sub(r"(://[^/:@\s\"]*):[^@\s\"]*@", r"\1:***@", text)
    text = re.sub(r"(password\s*=\s*)\S+", r"\1***", text, flags=re.IGNORECASE)
    return text.removeprefix("connection failed: ") or type(exc).__name__


class _Connection:
    """A psycopg connection with the SQLite module's ``?`` placeholders."""

    def __init__(self, conn: Any) -> None:
        self.raw = conn

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.raw.execute(sql.replace("?", "%s"), params)


class PostgresStore:
    """The ledger's tables in a PostgreSQL database (the storage interface of
    :class:`dpmap.ledger.Ledger`; see this module's docstring).

    Parameters
    ----------
    url
        ``postgresql://user[:password]@host[:port]/database[?options]`` (libpq's URL form).
        Prefer a password file (``~/.pgpass``) or ``PGPASSWORD`` to a password in the URL.
    timeout
        Seconds to wait for the server (connection, locks) and to keep retrying a write
        that lost a serialization race, before failing with a BudgetError.
    create
        Create the ledger's tables if the database has none (never over another
        application's tables).
    """

    path: Path | None = None

    def __init__(self, url: str, *, timeout: float, create: bool) -> None:
        self._url = url
        self._where = mask_url(url)
        self._timeout = timeout
        try:
            import psycopg
            import psycopg.conninfo
        except ImportError:
            raise DataFileError(
                f"ledger {self._where} is a PostgreSQL database, which needs the psycopg "
                "package: pip install 'dpmap[postgres]'"
            ) from None
        self._psycopg = psycopg
        try:
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise SpecError(
                f"ledger URL {self._where} is malformed ({_first_line(exc)}); write it as "
                "postgresql://user@host:5432/database"
            ) from None
        if create:
            self.write(lambda conn: None, initialise=True)
        else:
            with self.transaction(write=False):
                pass

    @property
    def where(self) -> str:
        """The URL with its password masked."""
        return self._where

    def entry_columns(self, conn: Any) -> str:
        """The SELECT list of an entry (the order :mod:`dpmap.ledger` reads); a schema-2
        database (read, not upgraded) has no claim."""
        row = conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = 'entries' AND column_name = 'claim'"
        ).fetchone()
        return _ENTRY_COLUMNS if row[0] else _ENTRY_COLUMNS.removesuffix("claim") + "NULL"

    def write(self, body: Callable[[Any], _T], *, initialise: bool = False) -> _T:
        """``body(conn)`` in one SERIALIZABLE transaction, run again after a serialization
        failure or deadlock (with a random back-off) until it commits or ``timeout`` passes."""
        deadline = time.monotonic() + self._timeout
        pause = 0.005
        while True:
            try:
                with self.transaction(write=True, initialise=initialise) as conn:
                    return body(conn)
            except _Retry:
                if time.monotonic() + pause > deadline:
                    raise self._busy() from None
                time.sleep(pause * (0.5 + random.random()))
                pause = min(pause * 2, 0.25)

    @contextlib.contextmanager
    def transaction(self, *, write: bool, initialise: bool = False) -> Iterator[_Connection]:
        """One transaction on a fresh connection; psycopg errors become dpmap errors (a
        serialization failure of a write: :class:`_Retry`, for :meth:`write`)."""
        psycopg = self._psycopg
        raw = self._connect()
        try:
            conn = _Connection(raw)
            try:
                if initialise:  # one creator at a time; the lock is taken before the
                    # transaction's snapshot, so the next creator sees the tables (released
                    # when the connection closes)
                    conn.execute("SELECT pg_advisory_lock(?)", (_CREATE_LOCK,))
                conn.execute(
                    "BEGIN ISOLATION LEVEL SERIALIZABLE"
                    if write
                    else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
                )
                conn.execute(f"SET LOCAL lock_timeout = {max(1, int(self._timeout * 1000))}")
                self._check_identity(conn, initialise=initialise, write=write)
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    raw.execute("ROLLBACK")
                raise
        except psycopg.Error as exc:
            if write and getattr(exc, "sqlstate", None) in _RETRY_STATES:
                raise _Retry() from exc
            raise self._translate(exc) from None
        finally:
            with contextlib.suppress(psycopg.Error):
                raw.close()

    # ------------------------------------------------------------------ internals

    def _connect(self) -> Any:
        psycopg = self._psycopg
        try:
            return psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=max(2, round(min(self._timeout, 30.0))),
                application_name="dpmap",
            )
        except psycopg.Error as exc:
            raise DataFileError(
                f"cannot reach PostgreSQL ledger {self._where}: {_first_line(exc)}; check "
                "that the server is running, the URL (host, port, database, user) and the "
                "password (~/.pgpass or PGPASSWORD)"
            ) from None

    def _busy(self) -> BudgetError:
        return BudgetError(
            f"ledger {self._where} is busy: other releases kept winning the race for it for "
            f"more than {self._timeout:g} s; try again"
        )

    def _translate(self, exc: Exception) -> Exception:
        state = getattr(exc, "sqlstate", None) or ""
        msg = _first_line(exc)
        if state == "42501":  # insufficient_privilege
            return BudgetError(
                f"ledger {self._where}: permission denied ({msg}); the role needs SELECT, "
                "INSERT and UPDATE on dpmap_schema, datasets and entries (see "
                "docs/how-to/share-ledger.md)"
            )
        if state in _RETRY_STATES or state == "55P03":  # retries exhausted / lock timeout
            return self._busy()
        if isinstance(exc, self._psycopg.OperationalError):
            return BudgetError(
                f"lost the connection to PostgreSQL ledger {self._where} ({msg}); nothing "
                "after the last completed step was recorded. Check the server, then see "
                "what was spent with: dpmap budget show URL"
            )
        return BudgetError(f"ledger {self._where} cannot be used: {msg}")

    def _not_a_ledger(self, reason: str) -> BudgetError:
        return BudgetError(
            f"database {self._where} is not a dpmap ledger ({reason}); dpmap refuses to use "
            "or write to it. Check the URL (the database name), or use a database of its own"
        )

    def _tables(self, conn: _Connection) -> set[str]:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() "
            "AND table_name IN ('dpmap_schema', 'datasets', 'entries')"
        ).fetchall()
        return {r[0] for r in rows}

    def _check_identity(self, conn: _Connection, *, initialise: bool, write: bool) -> None:
        tables = self._tables(conn)
        if "dpmap_schema" not in tables:
            if tables:
                raise self._not_a_ledger(
                    f"it has tables named {', '.join(sorted(tables))} but no dpmap_schema"
                )
            if not initialise:
                raise BudgetError(
                    f"database {self._where} holds no dpmap ledger yet; create one with: "
                    f"dpmap budget init {self._where} --dataset NAME --epsilon E"
                )
            self._create_tables(conn)
            return
        rows = conn.execute("SELECT application, version FROM dpmap_schema").fetchall()
        if len(rows) != 1 or rows[0][0] != APPLICATION:
            raise self._not_a_ledger("its dpmap_schema table is not a dpmap ledger's")
        version = rows[0][1]
        if version > SCHEMA_VERSION:
            raise BudgetError(
                f"ledger {self._where} was written by a newer dpmap (ledger schema {version}; "
                f"this dpmap {__version__} reads schema {SCHEMA_VERSION}); upgrade dpmap to use it"
            )
        if version not in _READABLE_SCHEMAS:
            raise self._not_a_ledger(f"its schema version {version} is unrecognised")
        if version < SCHEMA_VERSION and write:
            # schema 2 → 3: entries gain a claim, unique among those that count; in this
            # write's SERIALIZABLE transaction (a concurrent upgrade makes one of the two
            # fail on dpmap_schema and run again, then it finds schema 3)
            conn.execute("ALTER TABLE entries ADD COLUMN IF NOT EXISTS claim TEXT")
            conn.execute(_CLAIM_INDEX)
            conn.execute("UPDATE dpmap_schema SET version = ?", (SCHEMA_VERSION,))

    def _create_tables(self, conn: _Connection) -> None:
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO dpmap_schema (application, version, created_at, dpmap_version) "
            "VALUES (?, ?, ?, ?)",
            (
                APPLICATION,
                SCHEMA_VERSION,
                datetime.now(UTC).isoformat(timespec="milliseconds"),
                __version__,
            ),
        )


class _Retry(Exception):
    """A write transaction lost a serialization race; :meth:`PostgresStore.write` runs it
    again."""
