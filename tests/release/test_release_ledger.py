"""Releases charged to a persistent ledger: reserved before noise, refused over the cap."""

from __future__ import annotations

import importlib
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

import dpmap
from dpmap._privacy import noise as mechanisms
from dpmap.cli import main

release_module = importlib.import_module("dpmap.releases.pipeline")  # dpmap.release is the function

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
    ledger = dpmap.Ledger.init(tmp_path / "budget.db", "debts-2026", epsilon=1.0)
    kw = dict(region=REGION, resolution=7, person="pid", ledger=ledger, dataset="debts-2026")
    for month in range(4):  # 0.25 is exact in binary: OpenDP reports exactly 1/4
        rel = dpmap.release(points, epsilon=0.25, title=f"month {month + 1}", **kw)
        assert rel.manifest["ledger"]["dataset"] == "debts-2026"
    assert ledger.remaining("debts-2026").epsilon == 0
    with pytest.raises(dpmap.BudgetExceededError, match=r"(?i)requested"):
        dpmap.release(points, epsilon=0.25, **kw)
    history = ledger.history("debts-2026")
    assert len([e for e in history if e.counts]) == 4
    assert sum(e.epsilon for e in history if e.counts) == Fraction(1)
    assert [e.label for e in history] == ["month 1", "month 2", "month 3", "month 4"]
    # the manifest names its entry, and the entry holds the output's fingerprint, not data
    last = history[-1]
    assert last.fingerprint is not None and last.fingerprint.startswith("sha256:")
    assert last.resolution == 7 and last.mechanism == "laplace"


def test_gaussian_release_records_rho_and_approx_dp(tmp_path: Path, points: pd.DataFrame) -> None:
    ledger = dpmap.Ledger.init(tmp_path / "budget.db", "d", epsilon=2.0, delta=1e-5)
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
    ledger = dpmap.Ledger.init(tmp_path / "budget.db", "d", epsilon=1.0)
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


def test_ten_releases_of_a_tenth_fit_a_cap_of_one(tmp_path: Path, points: pd.DataFrame) -> None:
    """The ledger charges OpenDP's ε at its exact binary value; the planners keep it at or
    below the decimal asked for (0.1 = 1/10), so ten fit a cap of 1 and an eleventh not."""
    ledger = dpmap.Ledger.init(tmp_path / "budget.db", "d", epsilon=1.0)
    for _ in range(10):
        dpmap.release(points, region=REGION, resolution=7, epsilon=0.1, ledger=ledger, dataset="d")
    assert ledger.spent("d").epsilon <= 1
    with pytest.raises(dpmap.BudgetExceededError):
        dpmap.release(points, region=REGION, resolution=7, epsilon=0.1, ledger=ledger, dataset="d")


# ------------------------------------------------------------------ reserved before noise


def test_noise_is_drawn_only_after_the_reservation_is_recorded_and_marked(
    tmp_path: Path, points: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the public API: at the moment OpenDP draws noise, the ledger (read by a
    fresh handle, as another process would) already holds this release's entry, marked
    'spent' (noise drawn: the spend can no longer be given back)."""
    path = tmp_path / "budget.db"
    dpmap.Ledger.init(path, "d", epsilon=1.0)
    seen: list[list[tuple[str, Fraction]]] = []
    draw = mechanisms.NoisePlan._invoke

    def spy(self: mechanisms.NoisePlan, vectors: dict[str, np.ndarray]) -> list[object]:
        seen.append([(e.status, e.epsilon) for e in dpmap.Ledger(path).history("d")])
        return draw(self, vectors)

    monkeypatch.setattr(mechanisms.NoisePlan, "_invoke", spy)
    dpmap.release(points, region=REGION, resolution=7, epsilon=0.5, ledger=path, dataset="d")
    assert seen, "the noise entry point was not called"
    assert all(s == [("spent", Fraction(1, 2))] for s in seen), seen


@pytest.mark.parametrize("where", ["publish", "cell_table"])
def test_a_failure_after_noise_keeps_the_spend(
    tmp_path: Path, points: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Noise was drawn, then building the table fails: the spend stands (the noisy values
    existed; giving the budget back would let a retry see fresh noise for free)."""
    ledger = dpmap.Ledger.init(tmp_path / "budget.db", "d", epsilon=1.0)

    def boom(*args: object, **kw: object) -> None:
        raise RuntimeError("injected failure after noise")

    monkeypatch.setattr(release_module, where, boom)
    with pytest.raises(RuntimeError, match="injected"):
        dpmap.release(points, region=REGION, resolution=7, epsilon=0.5, ledger=ledger, dataset="d")
    (entry,) = ledger.history("d")
    assert entry.status == "spent" and entry.counts and entry.noise_drawn_at is not None
    assert ledger.spent("d").epsilon == Fraction(1, 2)
    assert ledger.remaining("d").epsilon == Fraction(1, 2)


# ------------------------------------------------------------------ never creates a ledger


def test_a_release_never_creates_a_ledger(tmp_path: Path, points: pd.DataFrame) -> None:
    stages: list[str] = []
    typo = tmp_path / "budegt.db"
    with pytest.raises(dpmap.DataFileError) as info:
        dpmap.release(
            points,
            region=REGION,
            resolution=7,
            epsilon=0.5,
            ledger=typo,
            dataset="d",
            progress=stages.append,
        )
    msg = str(info.value)
    assert "budegt.db does not exist" in msg and "dpmap budget init" in msg and "\n" not in msg
    assert not typo.exists()
    assert stages == []  # refused before planning, reading any data or drawing noise


def test_a_release_never_creates_a_dataset(tmp_path: Path, points: pd.DataFrame) -> None:
    ledger = dpmap.Ledger.init(tmp_path / "budget.db", "debts-2026", epsilon=1.0)
    stages: list[str] = []
    with pytest.raises(dpmap.BudgetError) as info:
        dpmap.release(
            points,
            region=REGION,
            resolution=7,
            epsilon=0.5,
            ledger=ledger,
            dataset="debts-2062",
            progress=stages.append,
        )
    msg = str(info.value)
    assert "did you mean 'debts-2026'?" in msg and "--dataset debts-2062" not in msg
    assert stages == []
    assert ledger.datasets() == ["debts-2026"]
    assert ledger.history("debts-2026") == []


def test_a_ledger_path_is_opened_not_created(tmp_path: Path, points: pd.DataFrame) -> None:
    path = tmp_path / "budget.db"
    dpmap.Ledger.init(path, "d", epsilon=1.0)
    rel = dpmap.release(
        points,
        region=REGION,
        resolution=7,
        epsilon=0.5,
        ledger=str(path),
        dataset="d",
        title="January",
    )
    entry = dpmap.Ledger(path).entry(rel.manifest["ledger"]["entry_id"])
    assert entry.label == "January" and entry.epsilon == Fraction(1, 2)
