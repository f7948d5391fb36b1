"""Fixtures and settings shared by the whole suite.

The suites' plain helpers (synthetic debtors, the test region, the CI skip rule) live in
``tests/common.py`` and the engine-parity helpers in ``tests/parity.py``; pytest puts
``tests/`` on the import path for every folder (``pythonpath`` in ``pyproject.toml``), so
``from common import ...`` works the same from ``tests/`` and from its subfolders, which
mirror the packages of ``src/dpmap``. The suites that hold for every design and engine (the
privacy maps, neighbours, bounding, no leaks, no free answers, hostile inputs) stay at the top.
``cached_plans`` (plan each distinct release once) serves every suite that runs many releases.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

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


def spec_key(spec: Any) -> Any:
    """A spec as a cache key. ``Zones`` compare by identity (``eq=False``) and every zone
    release checks its zones afresh, so a spec with zones is keyed by its other fields and
    the zones' content (fingerprint of names and shapes, and the name column)."""
    if spec.zones is None:
        return spec
    rest = tuple(
        (f.name, getattr(spec, f.name))
        for f in dataclasses.fields(spec)
        if f.compare and f.name != "zones"
    )
    return (rest, spec.zones.fingerprint, spec.zones.by)


@pytest.fixture
def cached_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan each distinct release once (the noise is still drawn afresh in every release).

    A plan is a deterministic function of the public parameters (checked by
    test_privacy_maps.py::test_plan_is_deterministic_and_public), but calibrating a Gaussian
    or hierarchical plan takes 0.1–1.4 s (a bisection over OpenDP's privacy maps), and an
    adaptive plan ≈ 40 ms (its scales are fitted to OpenDP's maps), which would dominate
    hundreds of releases. Binning, bounding, noise and post-processing run exactly as in
    production (adaptive releases build their OpenDP chains from the plan at run time);
    test_gaussian_end_to_end_without_caching runs a few releases without the cache. Zone
    releases are keyed by their zones' content (:func:`spec_key`): keyed by the spec alone,
    every zone release missed the cache and re-planned (two thirds of a zone audit's time).
    """
    module = importlib.import_module("dpmap.releases.pipeline")  # `import dpmap` is lazy
    real_design_for = module.design_for
    designs: dict[Any, Any] = {}

    def design_for(spec: Any, region: Any, options: Any) -> Any:
        internal = options.internal_share
        key = (
            spec_key(spec),
            None if region is None else region.fingerprint,
            dataclasses.replace(
                options, internal_share=tuple(internal) if isinstance(internal, list) else internal
            ),
        )
        if key not in designs:
            designs[key] = real_design_for(spec, region, options)
        return designs[key]

    monkeypatch.setattr(module, "design_for", design_for)
