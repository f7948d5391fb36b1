"""No free answers: what depends on the data leaves dpmap only through the mechanism.

A refusal that depends on the data is an exact, unlimited answer to whoever sees success
or failure. Before this was fixed, a region holding no point, an input with no usable row
and a sum that could overflow all raised errors *before* the ledger was charged, so
``release(points, region=<a 50 m disc>)`` told, for free, whether anyone lived there.
Now each of these is released as an ordinary (all-noise) map over the public cells, charged
like any release, and only the PRIVATE diagnostics say what happened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pytest
import shapely

import dpmap
from common import REGION, RESOLUTION, cell_centre, debtors, interior_cells, overlap_cells
from dpmap import Diagnostics

NAN = float("nan")


def _points() -> pd.DataFrame:
    return debtors(12, 1, 2)


def _header_only(tmp: Path) -> Path:
    path = tmp / "header.csv"
    path.write_text("lat,lng,pid,amount\n", encoding="utf-8")
    return path


#: inputs that hold no usable point inside the region, and the private note each leaves
EMPTY_LIKE: dict[str, tuple[Any, str]] = {
    "zero-rows-pandas": (lambda tmp: _points().iloc[:0], "empty"),
    "zero-rows-polars-typed": (lambda tmp: pl.from_pandas(_points()).head(0), "empty"),
    "zero-rows-polars-untyped": (
        lambda tmp: pl.DataFrame({"lat": [], "lng": [], "pid": [], "amount": []}),
        "empty",
    ),
    "header-only-csv": (_header_only, "empty"),
    "no-point-inside-region": (lambda tmp: _points().assign(lat=45.0, lng=120.0), "no point"),
    "all-coordinates-missing": (lambda tmp: _points().assign(lat=NAN), "no row has usable"),
    "all-persons-missing": (lambda tmp: _points().assign(pid=None), "no usable row"),
    "all-values-missing": (lambda tmp: _points().assign(amount=NAN), "no usable row"),
}

PARAMS = dict(region=REGION, resolution=RESOLUTION, epsilon=1.0, person="pid")


def _ledger(tmp_path: Path, cap: float = 10.0) -> dpmap.Ledger:
    return dpmap.Ledger.init(tmp_path / "budget.db", "d", epsilon=cap)


@pytest.mark.parametrize("case", list(EMPTY_LIKE), ids=list(EMPTY_LIKE))
def test_an_input_without_usable_points_is_an_ordinary_charged_release(
    case: str, tmp_path: Path
) -> None:
    make, note = EMPTY_LIKE[case]
    ledger = _ledger(tmp_path)
    diag = Diagnostics()
    rel = dpmap.release(
        make(tmp_path),
        **PARAMS,
        value="amount",
        bounds=(0, 2000),
        suppress_below=False,
        ledger=ledger,
        dataset="d",
        diagnostics=diag,
    )
    # the same public table as any release over this region: every cell, all noised
    assert list(rel.cells["cell"]) == overlap_cells()
    assert rel.cells["count"].notna().all() and rel.cells["sum"].notna().all()
    # charged like any release
    assert float(ledger.spent("d").epsilon) == pytest.approx(rel.epsilon)
    assert rel.manifest["ledger"]["dataset"] == "d"
    # only the private diagnostics say why
    assert any(note in n for n in diag.private_notes), diag.private_notes
    assert note not in str(rel.manifest) and "private_notes" not in str(rel.manifest)


def test_an_empty_release_looks_like_any_other_release() -> None:
    """Same columns, dtypes, manifest keys as a release of real points: nothing in the
    output's shape says "there was no data" (only the noisy values can, as DP allows)."""
    empty = dpmap.release(_points().iloc[:0], **PARAMS)
    full = dpmap.release(_points(), **PARAMS)
    assert list(empty.cells.columns) == list(full.cells.columns)
    assert list(empty.cells.dtypes) == list(full.cells.dtypes)
    assert list(empty.cells["cell"]) == list(full.cells["cell"])

    def keys(d: Any, prefix: str = "") -> set[str]:
        if not isinstance(d, dict):
            return set()
        return {prefix + k for k in d} | {
            x for k, v in d.items() for x in keys(v, prefix + k + ".")
        }

    assert keys(empty.manifest) == keys(full.manifest)
    assert empty.manifest["privacy"] == {
        **full.manifest["privacy"],
        "statement": empty.manifest["privacy"]["statement"],
    }


def test_a_50_metre_disc_gets_a_map_whether_or_not_anyone_lives_there() -> None:
    """The membership test the review found: success or failure no longer tells."""
    cell = interior_cells(1)[0]
    lat, lng = cell_centre(cell)
    disc = shapely.Point(lng, lat).buffer(0.0005)  # ~50 m
    someone = _points().assign(lat=lat, lng=lng).head(1)
    nobody = _points().assign(lat=lat + 0.5, lng=lng + 0.5).head(1)
    for points in (someone, nobody):
        rel = dpmap.release(points, region=disc, resolution=9, epsilon=1.0, person="pid")
        assert len(rel.cells) >= 1
        assert rel.manifest["cell_selection"]["cells"] == len(rel.cells)


@pytest.mark.parametrize(
    "params",
    [
        {"resolution": [6, RESOLUTION]},
        {"adaptive": True},
        {"adaptive": "grid"},
        {"category": "creditor", "categories": ["bank", "utility"]},
    ],
    ids=["hierarchical", "privtree", "adaptive-grid", "categories"],
)
def test_every_design_releases_an_empty_input(params: dict[str, Any]) -> None:
    points = _points().iloc[:0]
    rel = dpmap.release(points, **{**PARAMS, **params})
    assert len(rel.cells) > 0
    assert rel.epsilon > 0


def test_private_discovery_of_an_empty_input_publishes_no_cell() -> None:
    """Without a region, cells are chosen by OpenDP's threshold: with no data no cell passes
    (a threshold above every possible noisy zero is the mechanism's own guarantee)."""
    rel = dpmap.release(
        _points().iloc[:0], resolution=RESOLUTION, epsilon=1.0, delta=1e-6, person="pid"
    )
    assert len(rel.cells) == 0
    assert rel.delta > 0


@pytest.mark.parametrize("kind", ["header-only", "no-point-inside"])
def test_cli_releases_an_input_without_usable_points(
    tmp_path: Path, region_file: Path, kind: str
) -> None:
    from typer.testing import CliRunner

    from dpmap.cli import app

    region = region_file
    out = tmp_path / "out.geojson"
    if kind == "header-only":
        points = _header_only(tmp_path)
    else:
        points = tmp_path / "far.csv"
        _points().assign(lat=10.0, lng=10.0).to_csv(points, index=False)
    result = CliRunner().invoke(
        app,
        [
            "release",
            str(points),
            "--region",
            str(region),
            "--resolution",
            str(RESOLUTION),
            "--epsilon",
            "1",
            "--person",
            "pid",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.exists()
