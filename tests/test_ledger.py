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

from dpmap.cli_budget import budget_app
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
def ledger(tmp_path: Path) -> Ledger:
    book = Ledger(tmp_path / "budget.db")
    book.create(DS, epsilon=1.0, delta=1e-6)
    return book


# ------------------------------------------------------------------ creation


def test_created_on_first_use_and_reopened(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    book = Ledger(path)
    assert path.exists()
    assert book.datasets() == []
    assert book.create(DS, epsilon=3.0, delta=1e-6) == Budget(Fraction(3), Fraction(1, 10**6))
    book.create("other", epsilon=1)
    again = Ledger(path)
    assert again.datasets() == ["hebei-debt-2026", "other"]
    assert again.cap(DS) == Budget(Fraction(3), Fraction(1, 1_000_000))
    assert again.cap("other").delta == 0


def test_file_markers_and_journal_mode(ledger: Ledger) -> None:
    con = sqlite3.connect(ledger.path)
    try:
        assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert con.execute("SELECT version FROM dpmap_schema").fetchall() == [(SCHEMA_VERSION,)]
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        con.close()
    release(ledger, 0.1)
    # rollback journal: no side files left between transactions
    assert sorted(p.name for p in ledger.path.parent.iterdir()) == ["budget.db"]


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


def test_missing_ledger_not_created_when_create_false(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="does not exist"):
        Ledger(tmp_path / "typo.db", create=False)
    assert not (tmp_path / "typo.db").exists()
    with pytest.raises(DataFileError):
        Ledger(tmp_path / "no-such-dir" / "budget.db")
    with pytest.raises(DataFileError, match="directory"):
        Ledger(tmp_path)


def test_empty_file_becomes_ledger(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    path.touch()
    with pytest.raises(BudgetError, match="empty file"):
        Ledger(path, create=False)
    Ledger(path).create(DS, epsilon=1)
    assert Ledger(path, create=False).datasets() == [DS]


# ------------------------------------------------------------------ exact arithmetic


def test_ten_releases_of_a_tenth_fit_exactly_and_an_eleventh_is_refused(ledger: Ledger) -> None:
    for _ in range(10):
        release(ledger, 0.1)
    assert ledger.spent(DS) == Budget(Fraction(1), Fraction(0))
    assert ledger.remaining(DS) == Budget(Fraction(0), Fraction(1, 10**6))
    assert sum([0.1] * 10) != 1.0  # the float sum would not have fitted
    before = ledger.history(DS)
    with pytest.raises(BudgetExceededError):
        reserve(ledger, epsilon=0.1)
    assert ledger.history(DS) == before  # nothing recorded
    assert len(before) == 10


def test_remaining_is_exact_fraction(ledger: Ledger) -> None:
    release(ledger, 0.1)
    release(ledger, 0.2)
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


def test_amounts_stored_as_exact_strings(ledger: Ledger) -> None:
    release(ledger, 0.1)
    release(ledger, Fraction(1, 3))
    con = sqlite3.connect(ledger.path)
    try:
        rows = con.execute("SELECT epsilon, delta, rho FROM entries ORDER BY id").fetchall()
        cap = con.execute("SELECT epsilon, delta FROM datasets").fetchall()
    finally:
        con.close()
    assert rows == [("0.1", "0", None), ("1/3", "0", None)]
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
    book = Ledger(tmp_path_factory.mktemp("h") / "b.db")
    book.create("d", epsilon=float(cap))
    total = Fraction(0)
    for req in requests:
        fits = total + Fraction(req) <= Fraction(cap)
        if fits:
            release(book, float(req), dataset="d")
            total += Fraction(req)
        else:
            with pytest.raises(BudgetExceededError):
                reserve(book, "d", epsilon=float(req))
        assert book.spent("d").epsilon == total
        assert book.remaining("d").epsilon == Fraction(cap) - total


# ------------------------------------------------------------------ refusal


def test_refusal_message(ledger: Ledger) -> None:
    release(ledger, 0.7)
    with pytest.raises(BudgetExceededError) as info:
        reserve(ledger, epsilon=0.5, delta=2e-6, accounting="approx-dp")
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
        reserve(ledger, epsilon=0.1, delta=1e-5, accounting="approx-dp")
    assert ledger.history(DS) == []


def test_refusal_when_exhausted_says_so(ledger: Ledger) -> None:
    release(ledger, 1)
    with pytest.raises(BudgetExceededError, match=r"used up.*budget init"):
        reserve(ledger, epsilon=0.01)


# ------------------------------------------------------------------ reservations


def test_exception_before_noise_gives_budget_back(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError, match="boom"), reserve(ledger, epsilon=0.4) as r:
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
    with pytest.raises(KeyboardInterrupt), reserve(ledger, epsilon=0.4):
        raise KeyboardInterrupt
    assert ledger.spent(DS).epsilon == 0


def test_exception_after_noise_keeps_spend(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError), reserve(ledger, epsilon=0.4) as r:
        r.mark_noise_drawn()
        raise RuntimeError("disk full while writing the map")
    assert ledger.spent(DS).epsilon == Fraction(2, 5)
    (entry,) = ledger.history(DS)
    assert entry.status == "spent" and entry.counts and entry.noise_drawn_at is not None
    assert entry.fingerprint is None


def test_reservation_is_committed_before_the_with_block(ledger: Ledger) -> None:
    r = reserve(ledger, epsilon=0.9)
    assert ledger.remaining(DS).epsilon == Fraction(1, 10)  # another process would see it too
    with pytest.raises(BudgetExceededError):
        reserve(ledger, epsilon=0.2)
    r.cancel()
    assert ledger.remaining(DS).epsilon == 1


def test_normal_exit_without_mark_counts_as_spent(ledger: Ledger) -> None:
    with reserve(ledger, epsilon=0.3) as r:
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
    release(ledger, 0.3, accounting="zcdp", rho=0.005, delta=1e-7, mechanism="gaussian")
    release(ledger, 0.2, accounting="zcdp", rho=0.0025, delta=1e-7, mechanism="gaussian")
    release(ledger, 0.1)
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


def test_damaged_ledger_refused_and_untouched(ledger: Ledger) -> None:
    for _ in range(5):
        release(ledger, 0.1)
    data = bytearray(ledger.path.read_bytes())
    page = 4096
    assert len(data) >= 3 * page
    data[page : 3 * page] = os.urandom(2 * page)  # smash pages 2 and 3 (tables' b-trees)
    ledger.path.write_bytes(bytes(data))
    _assert_refused_untouched(ledger.path)


def test_newer_schema_refused(ledger: Ledger) -> None:
    con = sqlite3.connect(ledger.path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    before = ledger.path.read_bytes()
    with pytest.raises(BudgetError, match="newer dpmap"):
        Ledger(ledger.path)
    assert ledger.path.read_bytes() == before


def test_ledger_never_stores_unpassed_values(ledger: Ledger) -> None:
    release(ledger, 0.1, details={"bounds": [0, 10]})
    con = sqlite3.connect(ledger.path)
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
    release(book, Fraction(1, 3))
    with pytest.raises(RuntimeError), reserve(book, epsilon=0.1):
        raise RuntimeError
    res = run("show", db)
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if DS in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    # dataset, cap ε, cap δ, spent ε (up), spent δ, remaining ε (down), remaining δ, ρ, releases
    assert cells == [DS, "1", "0.000001", "0.333334", "0", "0.666666", "0.000001", "—", "1"]
    assert "rounded up" in res.output

    res = run("show", db, "--dataset", DS)
    assert res.exit_code == 0 and "0.666666" in res.output

    res = run("history", db, "--dataset", DS)
    assert res.exit_code == 0, res.output
    assert "spent" in res.output and "cancelled" in res.output and "laplace" in res.output

    res = run("history", db, "--dataset", DS, "--json")
    assert res.exit_code == 0, res.output
    entries = json.loads(res.output)
    assert [(e["status"], e["epsilon"]) for e in entries] == [
        ("spent", "1/3"),
        ("cancelled", "0.1"),
    ]


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
    Ledger(db).create(DS, epsilon=1)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00not sqlite" * 100)
    paths = {"db": str(db), "missing": str(tmp_path / "missing.db"), "junk": str(junk)}
    res = run(*(a.format(**paths) for a in args))
    assert res.exit_code != 0
    assert isinstance(res.exception, error), res.exception
    assert not (tmp_path / "missing.db").exists()


def test_cli_show_empty_ledger(tmp_path: Path) -> None:
    db = tmp_path / "budget.db"
    Ledger(db)
    res = run("show", str(db))
    assert res.exit_code == 0 and "no datasets" in res.output
