"""Claims in the privacy-budget ledger (schema 3): a one-time step recorded at most once.

A reservation may carry a ``claim``; an entry that counts (reserved or spent) holds it and a
second reservation of the same claim is refused before anything is recorded. A cancelled
reservation frees it. Claims need not spend (ε = 0). Old ledgers (schemas 1 and 2) open and
upgrade on the first write. Both storages; processes racing for one claim: exactly one wins.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from dpmap.errors import BudgetError, BudgetExceededError, ClaimTakenError, SpecError
from dpmap.ledger import SCHEMA_VERSION, Ledger

DS = "hebei-debt-2026"
CLAIM = "continual:1:from:2026-03"
CTX = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def reserve(book: Ledger, epsilon: Any = 0, claim: str | None = CLAIM, **kw: Any):
    return book.reserve(
        DS,
        epsilon=epsilon,
        accounting="pure-dp",
        mechanism="laplace",
        statistics=["count"],
        resolution=7,
        claim=claim,
        **kw,
    )


def take(book: Ledger, epsilon: Any = 0, claim: str | None = CLAIM) -> int:
    with reserve(book, epsilon, claim) as r:
        r.mark_noise_drawn()
        r.finalize(fingerprint="sha256:" + "cd" * 32)
    return r.entry_id


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "budget.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def book(where: str) -> Ledger:
    return Ledger.init(where, DS, epsilon=1.0)


def test_a_claim_is_taken_once(book: Ledger) -> None:
    first = take(book)
    (entry,) = book.history(DS)
    assert (entry.id, entry.claim, entry.epsilon, entry.status) == (first, CLAIM, 0, "spent")
    assert entry.to_dict()["claim"] == CLAIM
    with pytest.raises(ClaimTakenError) as err:
        reserve(book)
    text = str(err.value)
    assert "\n" not in text and CLAIM in text and f"entry {first}" in text, text
    assert isinstance(err.value, BudgetError)
    assert (err.value.claim, err.value.entry_id) == (CLAIM, first)
    assert [e.id for e in book.history(DS)] == [first]  # nothing recorded
    assert book.spent(DS).epsilon == 0
    # another claim, and no claim at all, are not affected
    take(book, claim=CLAIM.replace("2026-03", "2026-04"))
    take(book, epsilon="0.5", claim=None)
    assert [e.claim for e in book.history(DS)] == [CLAIM, CLAIM[:-2] + "04", None]
    assert book.spent(DS).epsilon == Fraction(1, 2)


def test_a_reserved_claim_blocks_and_a_cancelled_one_frees(book: Ledger) -> None:
    r = reserve(book)
    with pytest.raises(ClaimTakenError):  # reserved, noise maybe drawn: it counts
        reserve(book)
    r.cancel()
    second = take(book)  # the cancelled reservation gave the claim back
    history = book.history(DS)
    assert [(e.status, e.claim) for e in history] == [("cancelled", CLAIM), ("spent", CLAIM)]
    assert history[1].id == second
    with pytest.raises(ClaimTakenError, match=f"entry {second}"):
        reserve(book)
    # leaving the block by an exception before noise also frees it
    other = "continual:1:from:2026-04"
    with pytest.raises(RuntimeError), reserve(book, claim=other):
        raise RuntimeError("the release failed before any noise")
    take(book, claim=other)


def test_the_cap_is_still_checked_with_a_claim(book: Ledger) -> None:
    with pytest.raises(BudgetExceededError):
        reserve(book, epsilon=2)
    assert book.history(DS) == []
    take(book, epsilon=1, claim="x")  # a claim may also spend
    assert book.remaining(DS).epsilon == 0
    take(book, epsilon=0, claim="y")  # an ε = 0 claim fits even a used-up budget


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"claim": None}, "epsilon must be > 0"),  # ε = 0 only with a claim
        ({"claim": ""}, "claim"),
        ({"claim": "two\nlines"}, "claim"),
        ({"claim": 5}, "claim"),
        ({"delta": "1e-9"}, "delta = 0"),
    ],
)
def test_bad_claims_record_nothing(book: Ledger, kw: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError, match=words):
        reserve(book, **kw)
    assert book.history(DS) == []


def test_budget_history_shows_the_claims(book: Ledger, where: str) -> None:
    from typer.testing import CliRunner

    from dpmap.cli.budget import budget_app

    take(book, epsilon="0.5", claim=None)
    runner = CliRunner()
    plain = runner.invoke(budget_app, ["history", where, "--dataset", DS])
    assert plain.exit_code == 0 and "Claim" not in plain.output  # no claims: no column
    take(book)
    shown = runner.invoke(budget_app, ["history", where, "--dataset", DS], env={"COLUMNS": "400"})
    assert shown.exit_code == 0 and "Claim" in shown.output and CLAIM in shown.output
    as_json = runner.invoke(budget_app, ["history", where, "--dataset", DS, "--json"])
    assert [e["claim"] for e in json.loads(as_json.output)] == [None, CLAIM]


# ------------------------------------------------------------------ old schemas


def _downgrade_to_schema_2(where: str) -> None:
    """Make a fresh schema-3 ledger a schema-2 one: no claim column, no index, version 2."""
    statements = [
        "DROP INDEX entries_by_claim",
        "ALTER TABLE entries DROP COLUMN claim",
        "UPDATE dpmap_schema SET version = 2",
    ]
    if where.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(where, autocommit=True) as conn:
            for s in statements:
                conn.execute(s)
        return
    con = sqlite3.connect(where, isolation_level=None)
    try:
        for s in [*statements, "PRAGMA user_version = 2"]:
            con.execute(s)
    finally:
        con.close()


def _version(where: str) -> int:
    if where.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(where, autocommit=True) as conn:
            return int(conn.execute("SELECT version FROM dpmap_schema").fetchone()[0])
    con = sqlite3.connect(where)
    try:
        (v,) = con.execute("PRAGMA user_version").fetchone()
        assert con.execute("SELECT version FROM dpmap_schema").fetchall() == [(v,)]
        return int(v)
    finally:
        con.close()


def test_schema_2_ledger_is_read_and_upgraded_on_the_first_write(where: str) -> None:
    old = Ledger.init(where, DS, epsilon=1.0)
    with old.reserve(DS, epsilon="0.25", accounting="pure-dp", mechanism="laplace",
                     statistics=["count"], label="January") as r:  # fmt: skip
        r.mark_noise_drawn()
    _downgrade_to_schema_2(where)
    book = Ledger(where)
    (jan,) = book.history(DS)
    assert (jan.label, jan.claim, jan.epsilon) == ("January", None, Fraction(1, 4))
    assert _version(where) == 2  # reading never upgrades
    with pytest.raises(BudgetExceededError):  # a refused write rolls the upgrade back
        reserve(book, epsilon=5)
    assert _version(where) == 2
    take(book)  # the first write upgrades, in its transaction
    assert _version(where) == SCHEMA_VERSION == 3
    assert [(e.label, e.claim) for e in book.history(DS)] == [("January", None), (None, CLAIM)]
    with pytest.raises(ClaimTakenError):
        reserve(book)


# ------------------------------------------------------------------ races


def _claim_worker(path: str, barrier: Any, results: Any, index: int) -> None:
    book = Ledger(path, timeout=60)
    barrier.wait(timeout=30)
    try:
        take(book)
    except ClaimTakenError:
        results.put((index, "refused"))
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put((index, f"error: {type(exc).__name__}: {exc}"))
    else:
        results.put((index, "ok"))


@pytest.mark.skipif(sys.platform == "win32", reason="uses fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
@pytest.mark.parametrize("old", [False, True], ids=["schema3", "upgrading"])
def test_processes_racing_for_one_claim_exactly_one_wins(where: str, old: bool) -> None:
    Ledger.init(where, DS, epsilon=1.0)
    if old:  # the racers also race to upgrade the schema
        _downgrade_to_schema_2(where)
    n = 6
    barrier = CTX.Barrier(n)
    results = CTX.Queue()
    procs = [CTX.Process(target=_claim_worker, args=(where, barrier, results, i)) for i in range(n)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=90) for _ in range(n))
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    assert sorted(outcomes.values()) == ["ok"] + ["refused"] * (n - 1), outcomes
    history = Ledger(where).history(DS)
    assert [(e.claim, e.status) for e in history] == [(CLAIM, "spent")]
