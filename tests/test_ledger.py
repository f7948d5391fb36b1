"""Tests of the privacy-budget ledger (single process) and of ``dpmap budget``."""

from __future__ import annotations

import json
import os
import sqlite3
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dpmap.cli.budget import budget_app
from dpmap.errors import BudgetError, BudgetExceededError, DataFileError, DpmapError, SpecError
from dpmap.ledger import APPLICATION_ID, SCHEMA_VERSION, Budget, Ledger, format_amount

DS = "hebei-debt-2026"


def reserve(ledger: Ledger, dataset: str = DS, **kw: Any):
    """ledger.reserve with the bookkeeping arguments filled in."""
    kw.setdefault("accounting", "pure-dp")
    kw.setdefault("mechanism", "laplace")
    kw.setdefault("statistics", ["count"])
    kw.setdefault("resolution", 7)
    return ledger.reserve(dataset, **kw)


def release(ledger: Ledger, epsilon: Any, dataset: str = DS, **kw: Any) -> int:
    """A complete, successful release."""
    with reserve(ledger, dataset, epsilon=epsilon, **kw) as r:
        r.mark_noise_drawn()
        r.finalize(fingerprint="sha256:" + "ab" * 32)
    return r.entry_id


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Ledger:
    """A ledger in an SQLite file (for the tests of the file itself)."""
    return Ledger.init(tmp_path / "budget.db", DS, epsilon=1.0, delta=1e-6)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    """A ledger with dataset DS, cap (1, 1e-6): the semantic tests run on both storages
    (PostgreSQL: a fresh database on the session's server, tests/pgserver.py)."""
    if request.param == "sqlite":
        return Ledger.init(tmp_path / "budget.db", DS, epsilon=1.0, delta=1e-6)
    url = request.getfixturevalue("postgres_url")
    return Ledger.init(url, DS, epsilon=1.0, delta=1e-6)


# ------------------------------------------------------------------ creation


def test_created_only_when_asked_and_reopened(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    with pytest.raises(DataFileError, match=r"does not exist.*budget init"):
        Ledger(path)  # opening never creates
    assert not path.exists()
    book = Ledger(path, create=True)
    assert path.exists()
    assert book.datasets() == []
    assert book.create(DS, epsilon=3.0, delta=1e-6) == Budget(Fraction(3), Fraction(1, 10**6))
    book.create("other", epsilon=1)
    again = Ledger(path)
    assert again.datasets() == ["hebei-debt-2026", "other"]
    assert again.cap(DS) == Budget(Fraction(3), Fraction(1, 1_000_000))
    assert again.cap("other").delta == 0


def test_file_markers_and_journal_mode(sqlite_ledger: Ledger) -> None:
    con = sqlite3.connect(sqlite_ledger.path)
    try:
        assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert con.execute("SELECT version FROM dpmap_schema").fetchall() == [(SCHEMA_VERSION,)]
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        con.close()
    release(sqlite_ledger, 0.1)
    # rollback journal: no side files left between transactions
    assert sorted(p.name for p in sqlite_ledger.path.parent.iterdir()) == ["budget.db"]


def test_create_existing_dataset_refused(ledger: Ledger) -> None:
    with pytest.raises(BudgetError, match=r"already exists.*never changed") as info:
        ledger.create(DS, epsilon=5)
    assert not isinstance(info.value, BudgetExceededError)
    assert ledger.cap(DS).epsilon == 1


@pytest.mark.parametrize(
    ("epsilon", "delta"),
    [
        (0, 0),
        (-1, 0),
        (float("nan"), 0),
        (float("inf"), 0),
        ("inf", 0),
        (True, 0),
        ("abc", 0),
        (None, 0),
        (1, 1),
        (1, -0.1),
        (1, 1.5),
        (1, float("nan")),
    ],
)
def test_create_invalid_cap(ledger: Ledger, epsilon: Any, delta: Any) -> None:
    with pytest.raises(SpecError):
        ledger.create("new", epsilon=epsilon, delta=delta)
    assert ledger.datasets() == [DS]


@pytest.mark.parametrize("name", ["", "  ", " padded", "tab\there", 5, None, "x" * 201])
def test_invalid_dataset_name(ledger: Ledger, name: Any) -> None:
    with pytest.raises(SpecError):
        ledger.create(name, epsilon=1)


def test_unknown_dataset(ledger: Ledger) -> None:
    for call in (ledger.remaining, ledger.spent, ledger.cap, ledger.history):
        with pytest.raises(BudgetError, match=r"not in ledger.*budget init"):
            call("nope")
    with pytest.raises(BudgetError, match="not in ledger"):
        reserve(ledger, "nope", epsilon=0.1)
    assert ledger.datasets() == [DS]  # nothing was created


def test_unknown_dataset_names_the_existing_ones_and_never_the_typo(ledger: Ledger) -> None:
    ledger.create("hebei-debt-2025", epsilon=1)
    with pytest.raises(BudgetError) as info:
        reserve(ledger, "hebei-debt-2062", epsilon=0.1)
    msg = str(info.value)
    assert "did you mean 'hebei-debt-2026'?" in msg
    assert "it has 'hebei-debt-2025', 'hebei-debt-2026'" in msg
    # the fix offered is a new dataset under a name of the user's choice, not the typo
    assert "--dataset NAME" in msg and "--dataset hebei-debt-2062" not in msg
    assert "\n" not in msg
    with pytest.raises(BudgetError) as info:
        ledger.spent("population-census")
    assert "did you mean" not in str(info.value)
    assert ledger.datasets() == ["hebei-debt-2025", DS]


def test_missing_ledger_never_created_by_opening(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    for kwargs in ({}, {"create": False}):
        with pytest.raises(DataFileError, match=r"typo\.db does not exist.*budget init"):
            Ledger(typo, **kwargs)
    assert not typo.exists()
    with pytest.raises(DataFileError):
        Ledger(tmp_path / "no-such-dir" / "budget.db", create=True)
    with pytest.raises(DataFileError, match="directory"):
        Ledger(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_missing_ledger_suggests_a_close_existing_ledger(tmp_path: Path) -> None:
    Ledger.init(tmp_path / "budget-2026.db", DS, epsilon=1)
    (tmp_path / "budget-2062.db.csv").write_text("not a ledger\n")  # close, but no ledger
    with pytest.raises(DataFileError) as info:
        Ledger(tmp_path / "budget-2062.db")
    msg = str(info.value)
    assert f"did you mean {str(tmp_path / 'budget-2026.db')!r}?" in msg
    assert "budget-2062.db.csv" not in msg
    with pytest.raises(DataFileError) as info:
        Ledger(tmp_path / "census.db")
    assert "did you mean" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["budget-2026.db", "budget-2062.db.csv"]


def test_ledger_deleted_after_opening_is_not_recreated(sqlite_ledger: Ledger) -> None:
    """A Ledger object whose file vanished fails; SQLite must not make a fresh, empty file."""
    sqlite_ledger.path.unlink()
    for call in (
        sqlite_ledger.datasets,
        lambda: sqlite_ledger.spent(DS),
        lambda: reserve(sqlite_ledger, epsilon=0.1),
    ):
        with pytest.raises(DataFileError, match="does not exist"):
            call()
    with pytest.raises(DataFileError):
        sqlite_ledger.create("new", epsilon=1)
    assert not sqlite_ledger.path.exists()


def test_init_creates_file_and_dataset(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    book = Ledger.init(path, DS, epsilon="0.3")
    assert book.cap(DS) == Budget(Fraction(3, 10), Fraction(0))
    Ledger.init(path, "other", epsilon=1)  # an existing file gets another dataset
    assert Ledger(path).datasets() == [DS, "other"]
    with pytest.raises(BudgetError, match="already exists"):
        Ledger.init(path, DS, epsilon=5)


def test_paths_with_uri_characters(tmp_path: Path) -> None:
    """The file is opened through an SQLite URI: ?, #, % and spaces in names must not
    change which file is used."""
    for name in ("a b.db", "q?mode=ro.db", "hash#1.db", "pct%20.db"):
        path = tmp_path / name
        Ledger.init(path, DS, epsilon=1)
        assert Ledger(path).datasets() == [DS]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a b.db", "q?mode=ro.db", "hash#1.db", "pct%20.db"]
    )


def test_empty_file_becomes_ledger_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    path.touch()
    with pytest.raises(BudgetError, match="empty file"):
        Ledger(path)
    assert path.stat().st_size == 0
    Ledger(path, create=True).create(DS, epsilon=1)
    assert Ledger(path).datasets() == [DS]


# ------------------------------------------------------------------ exact arithmetic


@pytest.mark.parametrize("tenth", ["0.1", Fraction(1, 10), Decimal("0.1")])
def test_ten_releases_of_a_tenth_fit_exactly_and_an_eleventh_is_refused(
    ledger: Ledger, tenth: Any
) -> None:
    for _ in range(10):
        release(ledger, tenth)
    assert ledger.spent(DS) == Budget(Fraction(1), Fraction(0))
    assert ledger.remaining(DS) == Budget(Fraction(0), Fraction(1, 10**6))
    assert sum([0.1] * 10) != 1.0  # the float sum would not have fitted
    before = ledger.history(DS)
    with pytest.raises(BudgetExceededError):
        reserve(ledger, epsilon=tenth)
    assert ledger.history(DS) == before  # nothing recorded
    assert len(before) == 10


def test_a_float_spend_is_charged_at_its_exact_binary_value(ledger: Ledger) -> None:
    """OpenDP reports ε as a float; the float 0.1 is 1/10 + 2^-54·(1/5)... > 1/10. Charging
    repr(0.1) = "0.1" would round the spend in the user's favour: ten such spends would
    fit a cap of 1 although their exact sum exceeds it."""
    binary = Fraction(0.1)
    assert binary > Fraction(1, 10)
    for _ in range(9):
        release(ledger, 0.1)
    assert ledger.spent(DS).epsilon == 9 * binary  # exact: no float sum, no decimal rounding
    assert ledger.remaining(DS).epsilon == 1 - 9 * binary < binary
    with pytest.raises(
        BudgetExceededError,
        match=r"epsilon: requested 0\.10000000000000001, remaining 0\.09999999999999995,",
    ):
        reserve(ledger, epsilon=0.1)  # 10 × the float 0.1 exceeds 1
    assert len(ledger.history(DS)) == 9
    (entry, *_) = ledger.history(DS)
    assert entry.epsilon == binary


def test_float_spends_exact_in_both_directions(tmp_path: Path) -> None:
    book = Ledger.init(tmp_path / "b.db", DS, epsilon=1, delta="1e-6")
    # a float below its decimal is charged below it (exact, not rounded either way)
    release(book, 0.7 - 0.6)  # 0.09999999999999998 < 1/10
    assert book.history(DS)[-1].epsilon == Fraction(0.7 - 0.6) < Fraction(1, 10)
    # rho and delta of a spend are read the same way
    release(book, "0.001", accounting="zcdp", rho=0.1, delta=1e-7, mechanism="gaussian")
    last = book.history(DS)[-1]
    assert last.rho == Fraction(0.1) and last.delta == Fraction(1e-7) != Fraction(1, 10**7)
    assert book.spent(DS) == Budget(
        Fraction(0.7 - 0.6) + Fraction(1, 1000), Fraction(1e-7), Fraction(0.1)
    )


def test_a_float_cap_is_read_as_the_decimal_written(tmp_path: Path) -> None:
    book = Ledger.init(tmp_path / "b.db", "d", epsilon=0.3, delta=1e-6)
    assert book.cap("d") == Budget(Fraction(3, 10), Fraction(1, 10**6))


def test_remaining_is_exact_fraction(ledger: Ledger) -> None:
    release(ledger, "0.1")
    release(ledger, "0.2")
    left = ledger.remaining(DS)
    assert isinstance(left.epsilon, Fraction) and isinstance(left.delta, Fraction)
    assert left.epsilon == Fraction(7, 10)
    assert ledger.spent(DS).epsilon == Fraction(3, 10)
    assert 0.1 + 0.2 != 0.3  # the float sum would have been 0.30000000000000004
    release(ledger, Fraction(1, 3))
    assert ledger.remaining(DS).epsilon == Fraction(7, 10) - Fraction(1, 3)
    release(ledger, Decimal("0.2"), accounting="approx-dp", delta="2.5e-7")
    assert ledger.remaining(DS) == Budget(Fraction(1, 6), Fraction(3, 4_000_000))
    assert ledger.spent(DS).rho is None and ledger.remaining(DS).rho is None


def test_amounts_stored_as_exact_strings(sqlite_ledger: Ledger) -> None:
    release(sqlite_ledger, "0.1")
    release(sqlite_ledger, Fraction(1, 3))
    release(sqlite_ledger, 0.1)
    con = sqlite3.connect(sqlite_ledger.path)
    try:
        rows = con.execute("SELECT epsilon, delta, rho FROM entries ORDER BY id").fetchall()
        cap = con.execute("SELECT epsilon, delta FROM datasets").fetchall()
    finally:
        con.close()
    assert rows == [
        ("0.1", "0", None),
        ("1/3", "0", None),
        ("0.1000000000000000055511151231257827021181583404541015625", "0", None),
    ]
    assert Fraction(rows[2][0]) == Fraction(0.1)
    assert cap == [("1", "0.000001")]


def test_numpy_floats_are_read_like_floats(ledger: Ledger) -> None:
    np = pytest.importorskip("numpy")
    release(ledger, np.float64(0.25))
    release(ledger, np.int64(0) + 0.25)
    assert ledger.spent(DS).epsilon == Fraction(1, 2)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cap=st.decimals(min_value="0.1", max_value="5", places=2),
    requests=st.lists(
        st.decimals(min_value="0.01", max_value="2", places=3), min_size=1, max_size=8
    ),
)
def test_accepts_exactly_what_fits(
    tmp_path_factory: pytest.TempPathFactory, cap: Decimal, requests: list[Decimal]
) -> None:
    book = Ledger.init(tmp_path_factory.mktemp("h") / "b.db", "d", epsilon=float(cap))
    total = Fraction(0)
    for i, req in enumerate(requests):
        # alternately the decimal text (charged exactly) and the float (its binary value)
        amount: Any = str(req) if i % 2 == 0 else float(req)
        charge = Fraction(req) if i % 2 == 0 else Fraction(float(req))
        fits = total + charge <= Fraction(cap)
        if fits:
            release(book, amount, dataset="d")
            total += charge
        else:
            with pytest.raises(BudgetExceededError):
                reserve(book, "d", epsilon=amount)
        assert book.spent("d").epsilon == total
        assert book.remaining("d").epsilon == Fraction(cap) - total


# ------------------------------------------------------------------ refusal


def test_refusal_message(ledger: Ledger) -> None:
    release(ledger, "0.7")
    with pytest.raises(BudgetExceededError) as info:
        reserve(ledger, epsilon="0.5", delta="2e-6", accounting="approx-dp")
    msg = str(info.value)
    assert "'hebei-debt-2026'" in msg
    assert "epsilon: requested 0.5, remaining 0.3, difference 0.2 over the remainder" in msg
    assert (
        "delta: requested 0.000002, remaining 0.000001, difference 0.000001 over the remainder"
        in msg
    )
    assert "Nothing was recorded" in msg
    assert "Next step: request at most ε = 0.3 and δ = 0.000001" in msg
    assert "\n" not in msg  # one line for the CLI
    assert info.value.requested == Budget(Fraction(1, 2), Fraction(2, 10**6))  # type: ignore[attr-defined]
    assert info.value.remaining == Budget(Fraction(3, 10), Fraction(1, 10**6))  # type: ignore[attr-defined]
    assert len(ledger.history(DS)) == 1


def test_refusal_on_delta_alone(ledger: Ledger) -> None:
    refused = r"delta: requested 0\.00001, remaining 0\.000001"
    with pytest.raises(BudgetExceededError, match=refused):
        reserve(ledger, epsilon="0.1", delta="1e-5", accounting="approx-dp")
    assert ledger.history(DS) == []


def test_refusal_when_exhausted_says_so(ledger: Ledger) -> None:
    release(ledger, 1)
    with pytest.raises(BudgetExceededError, match=r"used up.*budget init"):
        reserve(ledger, epsilon=0.01)


# ------------------------------------------------------------------ reservations


def test_exception_before_noise_gives_budget_back(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError, match="boom"), reserve(ledger, epsilon="0.4") as r:
        assert ledger.spent(DS).epsilon == Fraction(2, 5)  # counts while reserved
        assert ledger.history(DS)[0].status == "reserved"
        raise RuntimeError("boom")
    assert r.status == "cancelled"
    assert ledger.spent(DS).epsilon == 0
    assert ledger.remaining(DS).epsilon == 1
    (entry,) = ledger.history(DS)
    assert entry.status == "cancelled" and not entry.counts
    assert entry.noise_drawn_at is None


def test_keyboard_interrupt_before_noise_gives_budget_back(ledger: Ledger) -> None:
    with pytest.raises(KeyboardInterrupt), reserve(ledger, epsilon="0.4"):
        raise KeyboardInterrupt
    assert ledger.spent(DS).epsilon == 0


def test_exception_after_noise_keeps_spend(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError), reserve(ledger, epsilon="0.4") as r:
        r.mark_noise_drawn()
        raise RuntimeError("disk full while writing the map")
    assert ledger.spent(DS).epsilon == Fraction(2, 5)
    (entry,) = ledger.history(DS)
    assert entry.status == "spent" and entry.counts and entry.noise_drawn_at is not None
    assert entry.fingerprint is None


def test_reservation_is_committed_before_the_with_block(ledger: Ledger) -> None:
    r = reserve(ledger, epsilon="0.9")
    assert ledger.remaining(DS).epsilon == Fraction(1, 10)  # another process would see it too
    with pytest.raises(BudgetExceededError):
        reserve(ledger, epsilon="0.2")
    r.cancel()
    assert ledger.remaining(DS).epsilon == 1


def test_normal_exit_without_mark_counts_as_spent(ledger: Ledger) -> None:
    with reserve(ledger, epsilon="0.3") as r:
        pass
    assert r.status == "spent"
    assert ledger.history(DS)[0].status == "spent"
    assert ledger.spent(DS).epsilon == Fraction(3, 10)


def test_finalize_records_fingerprint_and_details(ledger: Ledger) -> None:
    details = {"bounds": {"sum": [0, 1000]}, "region": "sha256:1234", "cells": 812}
    with reserve(ledger, epsilon=0.5, statistics=["count", "sum"], details=details) as r:
        r.mark_noise_drawn()
        r.mark_noise_drawn()  # idempotent
        r.finalize(fingerprint="sha256:feed", details={"output": "map.parquet"})
    (entry,) = ledger.history(DS)
    assert entry.id == r.entry_id
    assert entry.fingerprint == "sha256:feed"
    assert entry.statistics == ("count", "sum")
    assert entry.resolution == 7 and entry.mechanism == "laplace" and entry.accounting == "pure-dp"
    assert entry.details == {**details, "output": "map.parquet"}
    assert entry.dpmap_version
    assert entry.time.endswith("+00:00") and entry.finalized_at is not None
    assert ledger.entry(entry.id) == entry
    assert json.loads(json.dumps(entry.to_dict()))["epsilon"] == "0.5"


def test_cancel_after_noise_refused(ledger: Ledger) -> None:
    with reserve(ledger, epsilon=0.5) as r:
        r.mark_noise_drawn()
        with pytest.raises(BudgetError, match="noise was drawn"):
            r.cancel()
    assert ledger.spent(DS).epsilon == Fraction(1, 2)


def test_mark_after_cancel_refused(ledger: Ledger) -> None:
    r = reserve(ledger, epsilon=0.5)
    r.cancel()
    with pytest.raises(BudgetError, match="cancelled"):
        r.mark_noise_drawn()
    with pytest.raises(BudgetError, match="cancelled"):
        r.finalize("sha256:00")


def test_zcdp_entries_record_rho(ledger: Ledger) -> None:
    release(ledger, "0.3", accounting="zcdp", rho="0.005", delta="1e-7", mechanism="gaussian")
    release(ledger, "0.2", accounting="zcdp", rho="0.0025", delta="1e-7", mechanism="gaussian")
    release(ledger, "0.1")
    spent = ledger.spent(DS)
    assert spent == Budget(Fraction(3, 5), Fraction(2, 10**7), Fraction(75, 10**4))
    assert str(spent) == "ε = 0.6, δ = 2e-7, ρ = 0.0075"
    assert ledger.remaining(DS) == Budget(Fraction(2, 5), Fraction(8, 10**7))
    assert [e.accounting for e in ledger.history(DS)] == ["zcdp", "zcdp", "pure-dp"]
    assert ledger.history(DS)[0].rho == Fraction(1, 200)


@pytest.mark.parametrize(
    "kw",
    [
        {"accounting": "zcdp", "delta": 1e-7},  # no rho
        {"accounting": "zcdp", "rho": 0.01, "delta": 0},  # zCDP converts with delta > 0
        {"accounting": "zcdp", "rho": -0.01, "delta": 1e-7},
        {"accounting": "pure-dp", "rho": 0.01},
        {"accounting": "pure-dp", "delta": 1e-7},
        {"accounting": "renyi"},
        {"epsilon": 0},
        {"epsilon": float("nan")},
        {"mechanism": ""},
        {"statistics": "count"},
        {"statistics": []},
        {"resolution": 16},
        {"resolution": True},
        {"details": {"x": float("nan")}},
        {"details": {"x": object()}},
        {"details": {1: "x"}},
        {"details": {"points": "x" * 70_000}},
    ],
)
def test_invalid_reservation_records_nothing(ledger: Ledger, kw: dict[str, Any]) -> None:
    kw.setdefault("epsilon", 0.1)
    with pytest.raises(SpecError):
        reserve(ledger, **kw)
    assert ledger.history(DS) == []


def test_label_is_recorded_and_shown(ledger: Ledger) -> None:
    release(ledger, "0.1", label="Debtors,\n  January 2026 ")
    release(ledger, "0.1")
    first, second = ledger.history(DS)
    assert first.label == "Debtors, January 2026"  # one line, white space collapsed
    assert second.label is None
    assert first.to_dict()["label"] == "Debtors, January 2026"
    assert ledger.entry(first.id) == first


@pytest.mark.parametrize("label", ["", "   ", "x" * 201, "bell\x07", 5])
def test_invalid_label_records_nothing(ledger: Ledger, label: Any) -> None:
    with pytest.raises(SpecError, match="label"):
        reserve(ledger, epsilon="0.1", label=label)
    assert ledger.history(DS) == []


# The schema-1 tables exactly as dpmap wrote them before entries had a label.
_SCHEMA_1 = (
    "CREATE TABLE dpmap_schema (version INTEGER NOT NULL, created_at TEXT NOT NULL, "
    "dpmap_version TEXT NOT NULL)",
    "CREATE TABLE datasets (name TEXT PRIMARY KEY NOT NULL, epsilon TEXT NOT NULL, "
    "delta TEXT NOT NULL, created_at TEXT NOT NULL, dpmap_version TEXT NOT NULL)",
    "CREATE TABLE entries (id INTEGER PRIMARY KEY AUTOINCREMENT, dataset TEXT NOT NULL "
    "REFERENCES datasets(name), created_at TEXT NOT NULL, status TEXT NOT NULL CHECK (status "
    "IN ('reserved', 'spent', 'cancelled')), noise_drawn_at TEXT, finalized_at TEXT, epsilon "
    "TEXT NOT NULL, delta TEXT NOT NULL, rho TEXT, accounting TEXT NOT NULL CHECK (accounting "
    "IN ('pure-dp', 'approx-dp', 'zcdp')), mechanism TEXT NOT NULL, statistics TEXT NOT NULL, "
    "resolution INTEGER, fingerprint TEXT, dpmap_version TEXT NOT NULL, details TEXT NOT NULL)",
    "CREATE INDEX entries_by_dataset ON entries (dataset, status)",
)


def _schema_1_ledger(path: Path) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode = DELETE")
        con.execute("BEGIN")
        for statement in _SCHEMA_1:
            con.execute(statement)
        con.execute("INSERT INTO dpmap_schema VALUES (1, '2026-01-01T00:00:00+00:00', '0.9')")
        con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        con.execute("PRAGMA user_version = 1")
        con.execute("INSERT INTO datasets VALUES (?, '1', '0', 'then', '0.9')", (DS,))
        con.execute(
            "INSERT INTO entries (dataset, created_at, status, epsilon, delta, accounting, "
            "mechanism, statistics, resolution, dpmap_version, details) VALUES "
            "(?, 'then', 'spent', '0.25', '0', 'pure-dp', 'laplace', '[\"count\"]', 7, '0.9', '{}')",
            (DS,),
        )
        con.execute("COMMIT")
    finally:
        con.close()


def test_schema_1_ledger_is_read_untouched_and_upgraded_on_the_first_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    _schema_1_ledger(path)
    before = path.read_bytes()
    book = Ledger(path)
    (old,) = book.history(DS)
    assert old.label is None and old.epsilon == Fraction(1, 4) and old.status == "spent"
    assert book.remaining(DS).epsilon == Fraction(3, 4)
    assert run("show", str(path)).exit_code == 0
    assert path.read_bytes() == before  # reading never writes (nor upgrades)

    release(book, "0.25", label="February")  # the first write upgrades, in its transaction
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert con.execute("SELECT version FROM dpmap_schema").fetchall() == [(3,)]
    finally:
        con.close()
    assert [(e.label, e.epsilon) for e in book.history(DS)] == [
        (None, Fraction(1, 4)),
        ("February", Fraction(1, 4)),
    ]
    assert book.remaining(DS).epsilon == Fraction(1, 2)


def test_schema_1_upgrade_rolls_back_with_a_refused_write(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _schema_1_ledger(path)
    book = Ledger(path)
    with pytest.raises(BudgetExceededError):
        reserve(book, epsilon=5)
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 1  # nothing committed
    finally:
        con.close()


def test_budget_str_and_format_amount() -> None:
    assert str(Budget(Fraction(3), Fraction(1, 10**6))) == "ε = 3, δ = 0.000001"
    assert format_amount(Fraction(1, 3)) == "1/3"
    assert format_amount(Fraction(1, 3), "up") == "0.333334"
    assert format_amount(Fraction(1, 3), "down") == "0.333333"
    assert format_amount(Fraction(2, 3), "down") == "0.666666"
    assert format_amount(Fraction(1, 10**7), "up") == "1e-7"
    assert format_amount(Fraction(25, 10), "down") == "2.5"
    assert format_amount(Fraction(0), "up") == "0"


# ------------------------------------------------------------------ foreign and damaged files


def _assert_refused_untouched(path: Path) -> None:
    before = path.read_bytes()
    for kwargs in ({}, {"create": False}):
        with pytest.raises(BudgetError, match="is not a dpmap ledger"):
            Ledger(path, **kwargs)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_random_bytes_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    path.write_bytes(os.urandom(8192))
    _assert_refused_untouched(path)


def test_text_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "points.csv"
    path.write_text("lat,lon\n39.0,116.0\n")
    _assert_refused_untouched(path)


def test_foreign_sqlite_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE datasets (name TEXT)")
    con.execute("INSERT INTO datasets VALUES ('mine')")
    con.commit()
    con.close()
    _assert_refused_untouched(path)
    with pytest.raises(BudgetError, match="without the dpmap ledger mark"):
        Ledger(path)


def test_other_application_id_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA application_id = 1234")
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    _assert_refused_untouched(path)


def test_damaged_ledger_refused_and_untouched(sqlite_ledger: Ledger) -> None:
    for _ in range(5):
        release(sqlite_ledger, 0.1)
    data = bytearray(sqlite_ledger.path.read_bytes())
    page = 4096
    assert len(data) >= 3 * page
    data[page : 3 * page] = os.urandom(2 * page)  # smash pages 2 and 3 (tables' b-trees)
    sqlite_ledger.path.write_bytes(bytes(data))
    _assert_refused_untouched(sqlite_ledger.path)


def test_newer_schema_refused(sqlite_ledger: Ledger) -> None:
    con = sqlite3.connect(sqlite_ledger.path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    before = sqlite_ledger.path.read_bytes()
    with pytest.raises(BudgetError, match="newer dpmap"):
        Ledger(sqlite_ledger.path)
    assert sqlite_ledger.path.read_bytes() == before


def test_ledger_never_stores_unpassed_values(sqlite_ledger: Ledger) -> None:
    release(sqlite_ledger, 0.1, details={"bounds": [0, 10]})
    con = sqlite3.connect(sqlite_ledger.path)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()
    assert tables == {"dpmap_schema", "datasets", "entries", "sqlite_sequence"}


# ------------------------------------------------------------------ CLI


def _cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """dpmap (test stand-in)."""

    app.add_typer(budget_app, name="budget")
    return app


def run(*args: str):
    result = CliRunner().invoke(_cli(), ["budget", *args], env={"COLUMNS": "250"})
    return result


def test_cli_init_show_history(tmp_path: Path) -> None:
    db = str(tmp_path / "budget.db")
    res = run("init", db, "--dataset", DS, "--epsilon", "1", "--delta", "1e-6")
    assert res.exit_code == 0, res.output
    assert "created" in res.output and "ε = 1, δ = 0.000001" in res.output

    book = Ledger(db)
    release(book, Fraction(1, 3), label="Debtors, January 2026")
    with pytest.raises(RuntimeError), reserve(book, epsilon="0.1"):
        raise RuntimeError
    res = run("show", db)
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if DS in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    # dataset, cap ε, cap δ, spent ε (up), spent δ, remaining ε (down), remaining δ, ρ, releases
    day = book.history(DS)[0].time[:10]
    assert cells == [
        DS,
        "1",
        "0.000001",
        "0.333334",
        "0",
        "0.666666",
        "0.000001",
        "—",
        "1",
        f"Debtors, January 2026 ({day})",
    ]
    assert "rounded up" in res.output

    res = run("show", db, "--dataset", DS)
    assert res.exit_code == 0 and "0.666666" in res.output

    res = run("history", db, "--dataset", DS)
    assert res.exit_code == 0, res.output
    assert "spent" in res.output and "cancelled" in res.output and "laplace" in res.output
    assert "Debtors, January 2026" in res.output and "#2 (no label)" in res.output

    res = run("history", db, "--dataset", DS, "--json")
    assert res.exit_code == 0, res.output
    entries = json.loads(res.output)
    assert [(e["status"], e["epsilon"], e["label"]) for e in entries] == [
        ("spent", "1/3", "Debtors, January 2026"),
        ("cancelled", "0.1", None),
    ]


@pytest.mark.parametrize("columns", ["40", "80"])
def test_cli_show_never_cuts_names_or_amounts(tmp_path: Path, columns: str) -> None:
    db = tmp_path / "budget.db"
    long_name = "hebei-province-consumer-debtors-2026-monthly-maps"
    book = Ledger.init(db, long_name, epsilon=1)
    release(book, Fraction(1, 3), dataset=long_name, label="a rather long label for January")
    for args in (("show", str(db)), ("history", str(db), "--dataset", long_name)):
        res = CliRunner().invoke(_cli(), ["budget", *args], env={"COLUMNS": columns})
        assert res.exit_code == 0, res.output
        # the only shortened text is the fingerprint of history (on purpose, "sha256:abab…")
        assert res.output.count("…") == (1 if args[0] == "history" else 0), res.output
        lines = res.output.splitlines()
        assert any(long_name in line for line in lines) or args[0] == "history"
        assert any("0.333334" in line for line in lines)
        assert any("a rather long label for January" in line for line in lines)


def test_cli_init_exact_text(tmp_path: Path) -> None:
    db = str(tmp_path / "budget.db")
    assert run("init", db, "--dataset", "a", "--epsilon", "0.3").exit_code == 0
    assert Ledger(db).cap("a") == Budget(Fraction(3, 10), Fraction(0))


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("init", "{db}", "--dataset", DS, "--epsilon", "1"), BudgetError),  # already exists
        (("init", "{db}", "--dataset", "b", "--epsilon", "-1"), SpecError),
        (("init", "{db}", "--dataset", "b", "--epsilon", "1", "--delta", "1"), SpecError),
        (("show", "{db}", "--dataset", "nope"), BudgetError),
        (("history", "{db}", "--dataset", "nope"), BudgetError),
        (("show", "{missing}"), DataFileError),
        (("history", "{missing}", "--dataset", DS), DataFileError),
        (("show", "{junk}"), BudgetError),
    ],
)
def test_cli_errors_are_dpmap_errors(
    tmp_path: Path, args: tuple[str, ...], error: type[DpmapError]
) -> None:
    db = tmp_path / "budget.db"
    Ledger.init(db, DS, epsilon=1)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00not sqlite" * 100)
    paths = {"db": str(db), "missing": str(tmp_path / "missing.db"), "junk": str(junk)}
    res = run(*(a.format(**paths) for a in args))
    assert res.exit_code != 0
    assert isinstance(res.exception, error), res.exception
    assert not (tmp_path / "missing.db").exists()


def test_cli_show_empty_ledger(tmp_path: Path) -> None:
    db = tmp_path / "budget.db"
    Ledger(db, create=True)
    res = run("show", str(db))
    assert res.exit_code == 0 and "no datasets" in res.output
