"""The PostgreSQL ledger (``dpmap.Ledger("postgresql://...")``) beyond the semantics it shares
with the SQLite ledger (tests/test_ledger.py and tests/test_ledger_concurrency.py run those
on both storages): its tables, a server restarted mid-release, bad URLs, an unreachable
server, passwords never shown, and ``dpmap budget`` / ``dpmap release --ledger URL``.

The server is a throwaway one the tests start (tests/pgserver.py, fixture
``postgres_server``); without PostgreSQL or psycopg these tests skip, and under CI fail.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dpmap.cli.app import main
from dpmap.errors import BudgetError, BudgetExceededError, DataFileError, DpmapError, SpecError
from dpmap.ledger import Ledger

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX processes"),
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

DS = "hebei-debt-2026"
CTX = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
SECRET = "s3cr3t-pw"


def reserve(book: Ledger, epsilon: Any):
    return book.reserve(
        DS, epsilon=epsilon, accounting="pure-dp", mechanism="laplace", statistics=["count"]
    )


def with_password(url: str, password: str = SECRET) -> str:
    """The same URL with a password in it (the test server trusts loopback, so any
    password is accepted: what matters is that none is ever shown)."""
    return url.replace("postgresql://dpmap@", f"postgresql://dpmap:{password}@", 1)


# ------------------------------------------------------------------ storage


def test_tables_hold_exact_text_and_the_schema_mark(
    postgres_server: Any, postgres_url: str
) -> None:
    book = Ledger.init(postgres_url, DS, epsilon="2/3", delta=0)
    for eps in ("0.1", Fraction(1, 3), 0.1):
        with reserve(book, eps) as r:
            r.mark_noise_drawn()
    rows = postgres_server.sql(postgres_url, "SELECT epsilon, delta FROM entries ORDER BY id")
    assert rows == [
        ("0.1", "0"),
        ("1/3", "0"),
        ("0.1000000000000000055511151231257827021181583404541015625", "0"),
    ]
    assert postgres_server.sql(postgres_url, "SELECT epsilon FROM datasets") == [("2/3",)]
    mark = postgres_server.sql(postgres_url, "SELECT application, version FROM dpmap_schema")
    assert mark == [("dpmap-ledger", 3)]
    # summed exactly: the float 0.1 counts at its binary value
    left = Fraction(2, 3) - Fraction(1, 10) - Fraction(1, 3) - Fraction(0.1)
    assert book.remaining(DS).epsilon == left


def test_an_empty_database_is_never_made_a_ledger_by_opening(postgres_server: Any) -> None:
    url = postgres_server.new_database()
    with pytest.raises(BudgetError, match=r"holds no dpmap ledger yet.*budget init"):
        Ledger(url)
    schema = url.rsplit("%3D", 1)[1]
    tables = f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}'"
    assert postgres_server.sql(url, tables) == []
    Ledger(url, create=True)
    assert len(postgres_server.sql(url, tables)) == 3


def test_another_applications_tables_are_refused_and_untouched(postgres_server: Any) -> None:
    url = postgres_server.new_database()
    postgres_server.sql(url, "CREATE TABLE entries (id INTEGER, what TEXT)")
    for create in (False, True):
        with pytest.raises(BudgetError, match=r"not a dpmap ledger.*entries"):
            Ledger(url, create=create)
    schema = url.rsplit("%3D", 1)[1]
    tables = f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}'"
    assert postgres_server.sql(url, tables) == [("entries",)]


def test_a_newer_schema_is_refused(postgres_server: Any, postgres_url: str) -> None:
    Ledger.init(postgres_url, DS, epsilon=1)
    postgres_server.sql(postgres_url, "UPDATE dpmap_schema SET version = 4")  # schema 3 + 1
    with pytest.raises(BudgetError, match="newer dpmap"):
        Ledger(postgres_url)


# ------------------------------------------------------------------ server restarts


def test_server_restarted_between_reserve_and_finalize(
    postgres_server: Any, postgres_url: str
) -> None:
    """Each ledger call uses its own connection, so a restart between two steps of a
    release loses nothing: the release completes and its entry is there."""
    book = Ledger.init(postgres_url, DS, epsilon=1)
    with reserve(book, "0.5") as r:
        r.mark_noise_drawn()
        postgres_server.pg_ctl("restart", "-m", "fast")
        r.finalize(fingerprint="sha256:" + "ab" * 32)
    [entry] = book.history(DS)
    assert entry.status == "spent" and entry.fingerprint == "sha256:" + "ab" * 32
    assert book.remaining(DS).epsilon == Fraction(1, 2)


def test_server_down_mid_release_fails_cleanly_and_keeps_the_charge(
    postgres_server: Any, postgres_url: str
) -> None:
    """The server is down when the release would mark its noise: the call fails with one
    line, no noise may be drawn, and the reservation still counts once the server is back
    (the ledger cannot know; it errs on the side of spending)."""
    book = Ledger.init(postgres_url, DS, epsilon=1)
    r = reserve(book, "0.5")
    postgres_server.pg_ctl("stop", "-m", "fast")
    try:
        with pytest.raises(DataFileError, match="cannot reach PostgreSQL ledger") as err:
            r.mark_noise_drawn()
        assert "\n" not in str(err.value)
        with pytest.raises(DataFileError, match="cannot reach"):
            reserve(book, "0.1")  # nothing can be reserved while the server is down
    finally:
        postgres_server.pg_ctl("start")
    assert not r.noise_drawn
    assert [(e.status, e.epsilon) for e in book.history(DS)] == [("reserved", Fraction(1, 2))]
    assert book.remaining(DS).epsilon == Fraction(1, 2)


def _releasing_worker(url: str, index: int, results: Any, deadline: float) -> None:
    """Release ε = 0.1 again and again until the budget is used up (or the deadline);
    ledger errors from the restart are counted and the loop goes on."""
    while time.monotonic() < deadline:
        try:
            book = Ledger(url, timeout=10)  # opening may meet the restart too
            with reserve(book, "0.1") as r:
                r.mark_noise_drawn()
                fp = f"sha256:{index:032x}{r.entry_id:032x}"
                r.finalize(fingerprint=fp)
        except BudgetExceededError:
            results.put(("refused", index, 0, time.monotonic()))
            return
        except DpmapError:
            results.put(("error", index, 0, time.monotonic()))
            time.sleep(0.05)
        except BaseException as exc:  # reported to the parent, which fails the test
            results.put((f"crash: {type(exc).__name__}: {exc}", index, 0, time.monotonic()))
            return
        else:
            results.put(("ok", index, r.entry_id, time.monotonic()))
    results.put(("timeout", index, 0, time.monotonic()))


def test_server_crash_restart_during_concurrent_releases(
    postgres_server: Any, postgres_url: str
) -> None:
    """Four processes release against a cap of 2 (20 releases of 0.1) while the server is
    restarted in immediate mode (a crash: open transactions and connections cut, WAL
    recovery on start). Nothing is overspent, no completed release is lost, and the
    ledger keeps working after the restart until the budget is used up."""
    Ledger.init(postgres_url, DS, epsilon=2)
    results = CTX.Queue()
    deadline = time.monotonic() + 60
    procs = [
        CTX.Process(target=_releasing_worker, args=(postgres_url, i, results, deadline))
        for i in range(4)
    ]
    for p in procs:
        p.start()
    done: list[tuple[str, int, int, float]] = []
    while len([d for d in done if d[0] == "ok"]) < 4:  # some releases before the crash
        done.append(results.get(timeout=30))
    postgres_server.pg_ctl("restart", "-m", "immediate")
    restarted = time.monotonic()
    try:
        _after_the_crash(postgres_server, postgres_url, procs, results, done, restarted)
    except BaseException:
        print(postgres_server.log_tail())  # shown with the failure
        raise


def _after_the_crash(
    postgres_server: Any, postgres_url: str, procs: list[Any], results: Any, done: list[Any],
    restarted: float,
) -> None:  # fmt: skip
    def last(item: tuple[str, int, int, float]) -> bool:  # a worker's last report
        return item[0] in ("refused", "timeout") or item[0].startswith("crash")

    finished = sum(map(last, done))
    while finished < 4:
        item = results.get(timeout=60)
        done.append(item)
        finished += last(item)
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    assert [d for d in done if d[0] not in ("ok", "error", "refused")] == []
    print("outcomes:", {k: sum(d[0] == k for d in done) for k in ("ok", "error", "refused")})
    ok = {d[2] for d in done if d[0] == "ok"}
    assert any(d[0] == "ok" and d[3] > restarted for d in done), "no release after the restart"

    book = Ledger(postgres_url)
    history = {e.id: e for e in book.history(DS)}
    for entry_id in ok:  # no lost entry: every completed release is recorded, spent
        assert history[entry_id].status == "spent" and history[entry_id].fingerprint
    counted = [e for e in history.values() if e.counts]
    spent = book.spent(DS).epsilon
    assert spent == sum((e.epsilon for e in counted), Fraction(0))
    assert spent <= 2  # never overspent
    assert spent == Fraction(2)  # 20 × 0.1 exactly: the budget was used up after the crash
    assert len(ok) <= 20


# ------------------------------------------------------------------ bad input, passwords


@pytest.mark.parametrize(
    ("url", "error", "words"),
    [
        ("postgresql://dpmap@[::1/ledgers", SpecError, "malformed"),
        ("postgresql://dpmap@localhost/ledgers?bogus=1", SpecError, "malformed"),
        ("postgresql:/dpmap@localhost/ledgers", SpecError, "neither a file path nor"),
        ("mysql://dpmap@localhost/ledgers", SpecError, "neither a file path nor"),
    ],
)
def test_malformed_urls_are_refused_in_one_line(
    request: pytest.FixtureRequest, url: str, error: type, words: str
) -> None:
    if words == "malformed":  # psycopg (libpq) parses the URL: skip where it is missing
        request.getfixturevalue("postgres_server")
    with pytest.raises(error, match=words) as err:
        Ledger(with_password(url) if "dpmap@" in url else url)
    assert "\n" not in str(err.value) and SECRET not in str(err.value)


def test_an_unreachable_server_is_one_line_without_the_password(postgres_server: Any) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://dpmap:{SECRET}@127.0.0.1:{port}/ledgers"
    with pytest.raises(DataFileError, match="cannot reach PostgreSQL ledger") as err:
        Ledger.init(url, DS, epsilon=1)
    assert "\n" not in str(err.value) and SECRET not in str(err.value)
    assert "postgresql://dpmap:***@127.0.0.1" in str(err.value)


def test_without_psycopg_a_url_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg → ImportError
    with pytest.raises(DataFileError, match=r"needs the psycopg package.*dpmap\[postgres\]") as e:
        Ledger(f"postgresql://dpmap:{SECRET}@127.0.0.1/ledgers")
    assert SECRET not in str(e.value) and "dpmap:***@" in str(e.value)


def test_the_password_is_never_shown(postgres_url: str) -> None:
    url = with_password(postgres_url)
    book = Ledger.init(url, DS, epsilon=1)
    assert SECRET not in repr(book) and SECRET not in book.location
    assert book.location == with_password(postgres_url, "***") and book.path is None
    with pytest.raises(BudgetError) as err:
        book.cap("hebei-debt-2062")
    assert SECRET not in str(err.value) and "did you mean 'hebei-debt-2026'" in str(err.value)
    with reserve(book, 1) as r:
        r.mark_noise_drawn()
    with pytest.raises(BudgetExceededError) as refused:
        reserve(book, "0.1")
    assert SECRET not in str(refused.value)
    assert "requested 0.1, remaining 0" in str(refused.value)


# ------------------------------------------------------------------ command line


def test_cli_budget_commands_with_a_url(
    postgres_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    url = with_password(postgres_url)
    code = main(["budget", "init", url, "--dataset", DS, "--epsilon", "1", "--delta", "1e-6"])
    out = capsys.readouterr()
    assert code == 0 and "created in postgresql://dpmap:***@" in out.out, out
    book = Ledger(postgres_url)
    with reserve(book, "0.25") as r:
        r.mark_noise_drawn()
    assert main(["budget", "show", url]) == 0
    out = capsys.readouterr()
    assert DS in out.out and "0.75" in out.out and SECRET not in out.out + out.err
    assert main(["budget", "history", url, "--dataset", DS, "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["epsilon"] == "0.25" and entry["status"] == "spent"
    # a second init of the same dataset is refused, exit 2, one line, nothing changed
    code = main(["budget", "init", url, "--dataset", DS, "--epsilon", "5"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "already exists" in err
    assert SECRET not in err and book.cap(DS).epsilon == 1


def test_cli_bad_url_and_unreachable_server_exit_2(
    tmp_path: Path, postgres_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    for url in ("postgresql://dpmap@[::1/x", f"postgresql://dpmap:{SECRET}@127.0.0.1:1/x"):
        code = main(["budget", "show", url])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err and SECRET not in err
    assert list(tmp_path.iterdir()) == []


def test_cli_release_charges_a_postgresql_ledger(
    tmp_path: Path, region_file: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(7)
    n = 300
    pd.DataFrame(
        {
            "debtor_id": [f"D{i % 200:04d}" for i in range(n)],
            "lat": rng.uniform(39.02, 39.18, n),  # inside the test region (tests/common.py)
            "lng": rng.uniform(116.02, 116.28, n),
        }
    ).to_csv(tmp_path / "points.csv", index=False)
    book = Ledger.init(postgres_url, DS, epsilon=1)
    args = [
        "release", str(tmp_path / "points.csv"), "--region", str(region_file),
        "--resolution", "6", "--epsilon", "0.5",
        "--out", str(tmp_path / "map.geojson"), "--ledger", with_password(postgres_url),
        "--dataset", DS, "--quiet",
    ]  # fmt: skip
    code = main(args)
    out = capsys.readouterr()
    assert code == 0, out.err
    [entry] = book.history(DS)
    assert entry.status == "spent" and entry.epsilon == Fraction(1, 2) and entry.fingerprint
    manifest = json.loads((tmp_path / "map.manifest.json").read_text())
    assert manifest["ledger"] == {"dataset": DS, "entry_id": entry.id}
    assert SECRET not in (tmp_path / "map.manifest.json").read_text()
    # the budget is now too small for another 0.75: refused, exit 2, nothing written
    args[args.index("0.5")] = "0.75"
    args[args.index(str(tmp_path / "map.geojson"))] = str(tmp_path / "b.geojson")
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "release refused" in err and SECRET not in err, err
    assert not (tmp_path / "b.geojson").exists() and len(book.history(DS)) == 1
