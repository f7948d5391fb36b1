"""Releases charged to a persistent ledger: reserved before noise, refused over the cap."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

import dpmap
from dpmap.cli import main

REGION = box(116.0, 39.0, 116.3, 39.2)


@pytest.fixture
def points() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 200
    return pd.DataFrame(
        {
            "pid": [f"p{i % 150}" for i in range(n)],
            "lat": rng.uniform(39.01, 39.19, n),
            "lng": rng.uniform(116.01, 116.29, n),
            "amount": rng.uniform(0, 1000, n),
        }
    )


def test_releases_spend_until_the_cap_then_are_refused(
    tmp_path: Path, points: pd.DataFrame
) -> None:
    ledger = dpmap.Ledger(tmp_path / "budget.db")
    ledger.create("debts-2026", epsilon=1.0)
    kw = dict(region=REGION, resolution=7, person="pid", ledger=ledger, dataset="debts-2026")
    for _ in range(10):
        rel = dpmap.release(points, epsilon=0.1, **kw)
        assert rel.manifest["ledger"]["dataset"] == "debts-2026"
    assert ledger.remaining("debts-2026").epsilon == 0
    with pytest.raises(dpmap.BudgetExceededError, match=r"(?i)requested"):
        dpmap.release(points, epsilon=0.1, **kw)
    history = ledger.history("debts-2026")
    assert len([e for e in history if e.counts]) == 10
    assert sum(e.epsilon for e in history if e.counts) == Fraction(1)
    # the manifest names its entry, and the entry holds the output's fingerprint, not data
    last = history[-1]
    assert last.fingerprint is not None and last.fingerprint.startswith("sha256:")
    assert last.resolution == 7 and last.mechanism == "laplace"


def test_gaussian_release_records_rho_and_approx_dp(tmp_path: Path, points: pd.DataFrame) -> None:
    ledger = dpmap.Ledger(tmp_path / "budget.db")
    ledger.create("d", epsilon=2.0, delta=1e-5)
    rel = dpmap.release(
        points,
        region=REGION,
        resolution=7,
        epsilon=1.0,
        delta=1e-6,
        mechanism="gaussian",
        ledger=ledger,
        dataset="d",
    )
    entry = ledger.entry(rel.manifest["ledger"]["entry_id"])
    assert entry.accounting == "zcdp"
    assert entry.rho is not None and float(entry.rho) == pytest.approx(
        rel.manifest["privacy"]["rho"]
    )
    assert float(entry.epsilon) <= 1.0 and float(entry.delta) == pytest.approx(1e-6)


def test_bad_input_spends_nothing(tmp_path: Path, points: pd.DataFrame) -> None:
    ledger = dpmap.Ledger(tmp_path / "budget.db")
    ledger.create("d", epsilon=1.0)
    with pytest.raises(dpmap.InputError):
        dpmap.release(
            points,
            region=REGION,
            resolution=7,
            epsilon=0.5,
            person="missing",
            ledger=ledger,
            dataset="d",
        )
    assert ledger.spent("d").epsilon == 0
    assert [e for e in ledger.history("d") if e.counts] == []


def test_cli_release_with_ledger(
    tmp_path: Path, points: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    points.to_csv(tmp_path / "p.csv", index=False)
    (tmp_path / "r.geojson").write_text(json.dumps(REGION.__geo_interface__))
    db = str(tmp_path / "b.db")
    assert main(["budget", "init", db, "--dataset", "d", "--epsilon", "1"]) == 0
    args = [
        "release",
        str(tmp_path / "p.csv"),
        "--region",
        str(tmp_path / "r.geojson"),
        "--resolution",
        "7",
        "--epsilon",
        "0.6",
        "--ledger",
        db,
        "--dataset",
        "d",
    ]
    assert main([*args, "--out", str(tmp_path / "a.geojson")]) == 0
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "b.geojson")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "remaining" in err.lower()
    assert not (tmp_path / "b.geojson").exists()
    manifest = json.loads((tmp_path / "a.manifest.json").read_text())
    assert manifest["ledger"]["dataset"] == "d"
