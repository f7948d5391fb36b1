"""A throwaway PostgreSQL server for the tests of the PostgreSQL ledger.

:func:`start_server` runs Debian's ``initdb`` and ``pg_ctl`` (package ``postgresql``, which
``.ci/run`` installs) on a free loopback port, with a data folder in a temporary
directory, and returns a :class:`PgServer` that makes one fresh database per test. As
root (CI runs as root, and ``initdb`` refuses root) the server runs as the ``postgres``
user through ``runuser``. Where the binaries, the ``postgres`` user or psycopg are
missing the tests skip with the reason, and fail under CI (``skip_or_fail``).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from common import skip_or_fail

USER = "dpmap"


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """A running server; ``url(db)`` is a URL the ledger accepts."""

    def __init__(self, bindir: Path, root: Path, port: int, prefix: list[str]) -> None:
        self.bindir, self.root, self.port, self.prefix = bindir, root, port, prefix
        self.data = root / "data"
        self._names = itertools.count(1)

    def run_tool(self, tool: str, *args: str) -> None:
        cmd = [*self.prefix, str(self.bindir / tool), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr or proc.stdout}")

    def pg_ctl(self, action: str, *extra: str) -> None:
        """``pg_ctl start|stop|restart`` (waiting until it is done)."""
        # fsync off: a throwaway server. A killed *server* process loses nothing with it (its
        # writes are in the operating system's cache); only a machine crash would.
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run_tool(
            "pg_ctl", action, "-w", "-D", str(self.data), "-l", str(self.root / "log"),
            "-o", opts, *extra,
        )  # fmt: skip

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log (for a failing test's report)."""
        try:
            return "\n".join((self.root / "log").read_text().splitlines()[-lines:])
        except OSError as exc:
            return f"(no server log: {exc})"

    def url(self, database: str, password: str | None = None) -> str:
        auth = USER if password is None else f"{USER}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty place for a ledger; returns its URL. (A schema of its own in the
        database ``ledgers``, chosen by the URL's ``options=-csearch_path=...``: creating a
        schema takes milliseconds, a database up to a second.)"""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("ledgers"), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return self.url("ledgers") + f"?options=-csearch_path%3D{name}"

    def sql(self, url: str, statement: str) -> list[tuple[object, ...]]:
        """Run one statement in the database at ``url`` (as the superuser); its rows."""
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def stop(self) -> None:
        try:
            self.pg_ctl("stop", "-m", "fast")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PgServer:
    """Start a server (skip, or fail under CI, where that is impossible here)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        skip_or_fail("psycopg is not installed: pip install 'dpmap[postgres]'")
    bindir = _bindir()
    if bindir is None or not (bindir / "initdb").exists():
        skip_or_fail("PostgreSQL's initdb/pg_ctl not found: apt-get install postgresql")
    prefix: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="dpmap-pg-"))
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        if shutil.which("runuser") is None:
            skip_or_fail("running as root, and runuser (to run PostgreSQL as postgres) is missing")
        try:
            shutil.chown(root, user="postgres", group=None)
        except (LookupError, OSError) as exc:
            skip_or_fail(f"running as root, and there is no usable 'postgres' user: {exc}")
        prefix = ["runuser", "-u", "postgres", "--"]
    server = PgServer(bindir, root, _free_port(), prefix)
    server.run_tool(
        "initdb", "-D", str(server.data), "-U", USER, "-A", "trust", "-E", "UTF8", "--no-sync",
        "--no-instructions",
    )  # fmt: skip
    server.pg_ctl("start")
    server.sql(server.url("postgres"), "CREATE DATABASE ledgers")
    return server
