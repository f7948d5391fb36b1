"""Fixtures and settings shared by the whole suite.

The suites' plain helpers (synthetic debtors, the test region, the CI skip rule) live in
``tests/common.py`` and the engine-parity helpers in ``tests/parity.py``; pytest puts
``tests/`` on the import path for every folder (``pythonpath`` in ``pyproject.toml``), so
``from common import ...`` works the same from ``tests/`` and from its subfolders, which
mirror the packages of ``src/dpmap``. The suites that hold for every design and engine (the
privacy maps, neighbours, bounding, no leaks, no free answers, hostile inputs) stay at the top.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common import under_ci, write_region_geojson


def pytest_report_header(config: pytest.Config) -> str:
    return (
        "dpmap: CI mode, a missing browser, Java runtime or optional package FAILS its tests"
        if under_ci()
        else "dpmap: local mode, tests needing a missing browser, Java or extra are skipped"
    )


@pytest.fixture
def region_file(tmp_path: Path) -> Path:
    """The test region as a GeoJSON file in a fresh folder."""
    return write_region_geojson(tmp_path)


@pytest.fixture(scope="session")
def postgres_server():  # type: ignore[no-untyped-def]
    """A throwaway PostgreSQL server for the whole session (tests/pgserver.py); skipped
    where PostgreSQL or psycopg is missing, a failure under CI."""
    from pgserver import start_server

    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:  # type: ignore[no-untyped-def]
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return str(postgres_server.new_database())
