"""The streaming engine (bounded memory) agrees exactly with the local engine.

Compared through the internal ``bound_and_aggregate`` of each engine (PRIVATE aggregates,
never a published release). Tiny batches (``batch_rows``) and tiny partitions
(``part_bytes``: each person bucket bounded on its own) exercise the batch and partition
boundaries on small data; with ``selection="hash"`` the aggregates and the PRIVATE
diagnostics must be identical, and bad inputs must raise the same error.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pandas as pd
import polars as pl
import pytest

import dpmap
from common import REGION, RESOLUTION, debtors, write_parquet
from dpmap import Diagnostics, DpmapError, SpecError, engines
from dpmap.engines import bounding, local, streaming
from dpmap.grid import region_to_cells, to_region
from dpmap.spec import ReleaseSpec
from parity import (
    BAD,
    NOTHING_USABLE,
    PARITY,
    ZONE_PARITY,
    assert_same,
    heavy_person,
    random_points,
    spec_of,
    zone_points,
    zone_spec_of,
)

DOMAIN = region_to_cells(to_region(REGION), RESOLUTION)

#: (batch_rows, part_bytes): one batch and one partition; tiny batches, one bucket at a time;
#: middling both
SPLITS = [(10**9, 1 << 40), (257, 1), (1000, 20_000)]


def both(df: Any, spec: ReleaseSpec, split: tuple[int, int], domain: Any = DOMAIN) -> Any:
    d_local, d_stream = Diagnostics(), Diagnostics()
    a = local.bound_and_aggregate(df, spec, domain, d_local)
    b = streaming.bound_and_aggregate(
        df, spec, domain, d_stream, batch_rows=split[0], part_bytes=split[1]
    )
    return a, b, d_local, d_stream


@pytest.mark.parametrize("split", SPLITS, ids=["whole", "tiny", "middling"])
@pytest.mark.parametrize("name", list(PARITY))
def test_parity_bounded_aggregates(name: str, split: tuple[int, int]) -> None:
    make, kw = PARITY[name]
    a, b, d_local, d_stream = both(make(), spec_of(**kw), split)
    assert_same(a, b)
    assert d_local == d_stream
    assert d_stream.records_used == int(b.count.sum()) > 0


@pytest.mark.parametrize("split", SPLITS, ids=["whole", "tiny", "middling"])
@pytest.mark.parametrize("name", list(ZONE_PARITY))
def test_parity_zone_aggregates(name: str, split: tuple[int, int]) -> None:
    """A zone release: the same points in the same zones (borders, holes, outside) and the
    same bounded aggregates, in batches and partitions as in one frame."""
    spec = zone_spec_of(**ZONE_PARITY[name])
    assert spec.zones is not None
    a, b, d_local, d_stream = both(zone_points(), spec, split, spec.zones.domain)
    assert_same(a, b)
    assert d_local == d_stream
    assert set(a.cells.tolist()) == set(range(5))  # every zone, the island too, has points
    assert d_stream.rows_outside_region > 0  # the margin around the zones was dropped


def test_heavy_person_is_really_bounded() -> None:
    df = heavy_person()
    spec = spec_of(person="pid", max_cells=5, max_records_per_cell=3)
    a, b, d_local, d_stream = both(df, spec, (300, 1))
    assert_same(a, b)
    assert d_local == d_stream
    assert int(b.count.sum()) == 5 * 3 + 200 * 4  # each debtor: 4 cells x 1 record
    assert d_stream.persons == 201


def test_a_person_with_very_many_records_is_read_in_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One person with 30,000 records in 3 cells makes their bucket far larger than a
    partition: it is read in pieces cut to the L∞ first records per (person, cell), and the
    aggregates are still exactly the local engine's."""
    rng = np.random.default_rng(11)
    cells = np.unique(DOMAIN)[[3, 40, 90]]
    centres = [h3.cell_to_latlng(h3.int_to_str(int(c))) for c in cells]
    pick = rng.integers(0, 3, 30_000)
    heavy = pd.DataFrame(
        {
            "lat": [centres[i][0] for i in pick],
            "lng": [centres[i][1] for i in pick],
            "pid": "heavy",
            "amount": rng.integers(0, 2000, 30_000).astype(float),
        }
    )
    df = pd.concat([heavy, random_points(3000).assign(pid=lambda d: d.pid.astype(str))])
    df = df.sample(frac=1.0, random_state=1).reset_index(drop=True)  # spread over batches
    spec = spec_of(person="pid", value="amount", bounds=(0, 1500), max_cells=2,
                   max_records_per_cell=3)  # fmt: skip
    pieces: list[int] = []
    original = bounding.keep_first_records

    def spy(piece: pl.DataFrame, spec: ReleaseSpec) -> pl.DataFrame:
        pieces.append(piece.height)
        return original(piece, spec)

    monkeypatch.setattr(bounding, "keep_first_records", spy)
    a, b, d_local, d_stream = both(df, spec, (2_000, 40_000))
    assert_same(a, b)
    assert d_local == d_stream
    assert len(pieces) >= 3  # the heavy bucket was read in pieces
    assert int(b.count.sum()) <= 2 * 3 + 600 * 2 * 3


def test_discovery_without_region() -> None:
    a, b, d_local, d_stream = both(random_points(), spec_of(person="pid"), (500, 1), domain=None)
    assert_same(a, b)
    assert d_local == d_stream


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_files_are_streamed_the_same(tmp_path: Path, suffix: str) -> None:
    df = heavy_person(3000)
    path = tmp_path / f"points{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path)
    spec = spec_of(person="pid", value="amount", bounds=(0, 2500), max_cells=4)
    a, b, d_local, d_stream = both(str(path), spec, (701, 10_000))
    assert_same(a, b)
    assert d_local == d_stream and d_stream.rows_read == len(df)


def test_random_selection_still_bounds() -> None:
    """``selection="random"``: other records than the local engine's, bounded the same way."""
    df = heavy_person(2000)
    spec = ReleaseSpec(resolution=RESOLUTION, epsilon=1.0, person="pid", max_cells=3)
    diag = Diagnostics()
    got = streaming.bound_and_aggregate(df, spec, DOMAIN, diag, batch_rows=333, part_bytes=1)
    assert int(got.count.sum()) == 3 + 200 * 3  # 3 cells each, 1 record per cell
    assert diag.persons == 201


def test_random_selection_keeps_a_uniform_record() -> None:
    """Random priorities are fresh per record (in every batch): with one person holding
    4 records in 4 cells and L0 = 1, each cell is kept about ¼ of the time.

    400 runs; each cell's count of wins is Binomial(400, ¼): P(< 50) = 1.8e-10 and
    P(> 155) = 4.9e-10 (exact binomial tails), so < 3e-9 for the 4 cells together.
    """
    h3_cells = np.unique(DOMAIN)[[5, 50, 100, 150]]
    lat_lng = [h3.cell_to_latlng(h3.int_to_str(int(c))) for c in h3_cells]
    df = pd.DataFrame({"lat": [a for a, _ in lat_lng], "lng": [b for _, b in lat_lng], "pid": 1})
    spec = ReleaseSpec(resolution=RESOLUTION, epsilon=1.0, person="pid")
    wins = dict.fromkeys(h3_cells.tolist(), 0)
    for _ in range(400):
        got = streaming.bound_and_aggregate(df, spec, DOMAIN, batch_rows=1)
        assert got.count.tolist() == [1]
        wins[int(got.cells[0])] += 1
    assert all(50 <= w <= 155 for w in wins.values()), wins


def test_count_only_is_summed_over_batches() -> None:
    """Without a person column every record counts; 40 batches are merged on the way."""
    df = random_points(4000)
    spec = spec_of()
    a, b, d_local, d_stream = both(df, spec, (100, 1))
    assert_same(a, b)
    assert d_local == d_stream


@pytest.mark.parametrize("name", list(NOTHING_USABLE))
def test_nothing_usable_same_empty_aggregates(name: str) -> None:
    make, kw = NOTHING_USABLE[name]
    a, b, d_local, d_stream = both(make(), spec_of(**kw), (5, 1))
    assert_same(a, b)
    assert len(a.cells) == 0
    assert d_local == d_stream and d_stream.private_notes


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_same_error(name: str) -> None:
    make, kw = BAD[name]
    df = make()
    spec = spec_of(**kw)
    with pytest.raises(DpmapError) as local_err:
        local.bound_and_aggregate(df, spec, DOMAIN)
    with pytest.raises(DpmapError) as stream_err:
        streaming.bound_and_aggregate(df, spec, DOMAIN, batch_rows=5)
    assert type(stream_err.value) is type(local_err.value)
    assert str(stream_err.value) == str(local_err.value)


def test_malformed_csv_row_late_in_the_file(tmp_path: Path) -> None:
    """A bad row after many good ones (seen only in a late batch) gives the local
    engine's one-line error, and the spilled private rows are removed."""
    good = debtors(300, 2, 2)[["lat", "lng", "pid"]]
    path = tmp_path / "points.csv"
    good.to_csv(path, index=False)
    with path.open("a") as f:
        f.write("39.1,not-a-number,77\n")
    spill = tmp_path / "spill"
    spill.mkdir()
    spec = spec_of(person="pid")
    with pytest.raises(DpmapError) as local_err:
        local.bound_and_aggregate(str(path), spec, DOMAIN)
    old = tempfile.tempdir
    tempfile.tempdir = str(spill)
    try:
        with pytest.raises(DpmapError) as stream_err:
            streaming.bound_and_aggregate(str(path), spec, DOMAIN, batch_rows=50)
    finally:
        tempfile.tempdir = old
    assert type(stream_err.value) is type(local_err.value)
    assert "\n" not in str(stream_err.value)
    assert list(spill.iterdir()) == []


def test_spilled_rows_are_private_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spill folder is mode 0700 while it exists and gone afterwards, also after an error."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: list[tuple[Path, int, int]] = []
    original = bounding.bound

    def spy(df: pl.DataFrame, spec: ReleaseSpec) -> pl.DataFrame:
        (folder,) = tmp_path.iterdir()
        seen.append((folder, folder.stat().st_mode & 0o777, len(list(folder.iterdir()))))
        return original(df, spec)

    monkeypatch.setattr(bounding, "bound", spy)
    streaming.bound_and_aggregate(heavy_person(500), spec_of(person="pid"), DOMAIN, batch_rows=64)
    assert seen and all(mode == 0o700 and files > 0 for _, mode, files in seen)
    assert list(tmp_path.iterdir()) == []
    bad = debtors(20, 1, 1).assign(lat=100.0)  # refused: latitudes out of range
    with pytest.raises(dpmap.InputError, match="latitudes must be within"):
        streaming.bound_and_aggregate(bad, spec_of(person="pid"), DOMAIN, batch_rows=7)
    assert list(tmp_path.iterdir()) == []


def test_large_files_are_streamed_automatically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_parquet(debtors(50, 2, 3), tmp_path)
    calls: list[Any] = []
    original = streaming.bound_and_aggregate

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append(args[0])
        return original(*args, **kw)

    monkeypatch.setattr(streaming, "bound_and_aggregate", spy)
    spec = spec_of(person="pid")
    assert engines.engine_for(str(path), None) is local
    assert engines.engine_for(str(path), "local") is local
    small = local.bound_and_aggregate(str(path), spec, DOMAIN)
    monkeypatch.setattr(local, "STREAM_ABOVE_BYTES", 100)
    assert engines.engine_for(str(path), None) is streaming
    assert engines.engine_for(str(path), "local") is streaming  # bounded memory regardless
    assert calls == []
    large = engines.engine_for(str(path), None).bound_and_aggregate(str(path), spec, DOMAIN)
    assert calls == [str(path)]
    assert_same(small, large)


def test_release_with_the_streaming_engine(tmp_path: Path) -> None:
    df = debtors(150, 3, 5)
    path = write_parquet(df, tmp_path)
    params: dict[str, Any] = dict(
        region=REGION, resolution=RESOLUTION, epsilon=1.0, person="pid", value="amount",
        bounds=(0, 2000), max_cells=2, selection="hash", seed=5,
    )  # fmt: skip
    d_local, d_stream = Diagnostics(), Diagnostics()
    a = dpmap.release(df, diagnostics=d_local, **params)
    b = dpmap.release(str(path), engine="streaming", diagnostics=d_stream, **params)
    assert d_local == d_stream
    assert a.cells["cell"].tolist() == b.cells["cell"].tolist()
    assert a.manifest["privacy"] == b.manifest["privacy"]


def test_unknown_engine_names_streaming() -> None:
    with pytest.raises(SpecError, match="'local', 'streaming', 'spark'"):
        dpmap.release(debtors(5, 1, 1), region=REGION, resolution=RESOLUTION, epsilon=1.0,
                      engine="dask")  # fmt: skip


def test_batch_rows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_rows must be at least 1"):
        streaming.bound_and_aggregate(debtors(5, 1, 1), spec_of(), DOMAIN, batch_rows=0)


def test_a_full_disk_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No space for the spill files: one line naming the folder and the fix, nothing left."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def full(self: pl.DataFrame, file: Any, **kw: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_ipc", full)
    with pytest.raises(dpmap.DataFileError) as err:
        streaming.bound_and_aggregate(heavy_person(300), spec_of(person="pid"), DOMAIN)
    message = str(err.value)
    assert "No space left on device" in message and "TMPDIR" in message
    assert str(tmp_path) in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []
