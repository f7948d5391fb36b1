"""Multi-process tests of the privacy-budget ledger: races and killed processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sqlite3
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from dpmap.errors import BudgetExceededError
from dpmap.ledger import Ledger

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals"),
    # Python >= 3.12 warns about fork() in a process with threads; the children here only
    # touch the ledger file, which holds no connection across calls.
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

DS = "hebei-debt-2026"
# fork is fast (no re-import of the test module in each child); spawn where fork is missing.
CTX = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the ledger goes: an SQLite file, or a fresh place in the session's PostgreSQL
    server (tests/pgserver.py). The same tests hold for both storages."""
    if request.param == "sqlite":
        return str(tmp_path / "budget.db")
    return str(request.getfixturevalue("postgres_url"))


def _reserve(book: Ledger, epsilon: float):
    return book.reserve(
        DS,
        epsilon=epsilon,
        accounting="pure-dp",
        mechanism="laplace",
        statistics=["count"],
        resolution=7,
    )


def _race_worker(path: str, barrier: Any, results: Any, index: int) -> None:
    book = Ledger(path)
    barrier.wait(timeout=20)
    try:
        with _reserve(book, 1.0) as r:
            r.mark_noise_drawn()
            time.sleep(0.05)  # hold the reservation a little while others try
            r.finalize(fingerprint=f"sha256:{index:064x}")
    except BudgetExceededError:
        results.put((index, "refused"))
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put((index, f"error: {type(exc).__name__}: {exc}"))
    else:
        results.put((index, "ok"))


def test_ten_processes_race_for_a_cap_of_three(where: str) -> None:
    path = where
    Ledger.init(path, DS, epsilon=3.0)
    n = 10
    barrier = CTX.Barrier(n)
    results = CTX.Queue()
    procs = [CTX.Process(target=_race_worker, args=(path, barrier, results, i)) for i in range(n)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=30) for _ in range(n))
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    assert sorted(outcomes) == list(range(n))
    assert sum(v == "ok" for v in outcomes.values()) == 3, outcomes
    assert sum(v == "refused" for v in outcomes.values()) == 7, outcomes

    book = Ledger(path)
    assert book.spent(DS).epsilon == Fraction(3)
    assert book.remaining(DS).epsilon == 0
    history = book.history(DS)
    assert len(history) == 3 and all(e.status == "spent" and e.fingerprint for e in history)


def _killed_worker(path: str, ready: Any, mark: bool) -> None:
    book = Ledger(path)
    with _reserve(book, 0.5) as r:
        if mark:
            r.mark_noise_drawn()
        ready.set()
        time.sleep(60)  # SIGKILLed here
        raise AssertionError("not killed")


_UNCOMMITTED = (
    "INSERT INTO entries (dataset, created_at, status, epsilon, delta, accounting, mechanism, "
    "statistics, dpmap_version, details) VALUES ({p}, 'now', 'spent', '0.25', '0', 'pure-dp', "
    "'laplace', '[]', 'x', '{{}}')"
)


def _killed_mid_transaction(path: str, ready: Any) -> None:
    # Dies inside a write transaction with an uncommitted row (SQLite: holding the write
    # lock, a hot journal on disk; PostgreSQL: the server sees the connection drop).
    if "://" in path:
        import psycopg

        conn = psycopg.connect(path, autocommit=True)
        conn.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
        conn.execute(_UNCOMMITTED.format(p="%s"), (DS,))
    else:
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        con.execute(_UNCOMMITTED.format(p="?"), (DS,))
    ready.set()
    time.sleep(60)


def _start_and_kill(target: Any, *args: Any) -> None:
    ready = CTX.Event()
    proc = CTX.Process(target=target, args=(*args, ready))
    proc.start()
    assert ready.wait(timeout=20), "child did not get ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=10)
    assert proc.exitcode == -signal.SIGKILL


def test_killed_processes_leave_their_spend_counted(where: str) -> None:
    path = where
    Ledger.init(path, DS, epsilon=3.0)

    _start_and_kill(_killed_after_noise, path)
    _start_and_kill(_killed_before_noise, path)
    _start_and_kill(_killed_mid_transaction, path)

    book = Ledger(path)  # opens fine (and rolls back the hot journal of the last child)
    if "://" not in path:
        con = sqlite3.connect(path)
        try:
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            con.close()
    statuses = [(e.status, e.epsilon) for e in book.history(DS)]
    assert statuses == [("spent", Fraction(1, 2)), ("reserved", Fraction(1, 2))]
    assert book.spent(DS).epsilon == 1  # both killed releases count; the uncommitted row does not
    assert book.remaining(DS).epsilon == 2
    # and the ledger is writable again (no stale lock)
    with _reserve(book, 2.0) as r:
        r.mark_noise_drawn()
    assert book.remaining(DS).epsilon == 0


def _killed_after_noise(path: str, ready: Any) -> None:
    _killed_worker(path, ready, mark=True)


def _killed_before_noise(path: str, ready: Any) -> None:
    _killed_worker(path, ready, mark=False)


def test_concurrent_creation_of_a_new_ledger(where: str) -> None:
    path = where
    n = 6
    barrier = CTX.Barrier(n)
    results = CTX.Queue()
    procs = [CTX.Process(target=_create_worker, args=(path, barrier, results, i)) for i in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=30) for _ in range(n)]
    for p in procs:
        p.join(timeout=10)
    assert sorted(outcomes) == sorted(f"ok {i}" for i in range(n)), outcomes
    assert Ledger(path).datasets() == [f"d{i}" for i in range(n)]


def _create_worker(path: str, barrier: Any, results: Any, index: int) -> None:
    barrier.wait(timeout=20)
    try:
        Ledger.init(path, f"d{index}", epsilon=1)
    except BaseException as exc:
        results.put(f"error {index}: {type(exc).__name__}: {exc}")
    else:
        results.put(f"ok {index}")
