"""No leaks: nothing that leaves dpmap carries raw data or the PRIVATE diagnostics.

One deliberately recognisable input (:func:`leaky_input`) goes through every output
channel — GeoJSON / GeoParquet / CSV files (with and without the unbiased columns), the
manifest, the PNG map (its metadata chunks, and the text drawn on it, via SVG), the
interactive HTML map, the ledger file, ``repr``/privacy statement/``explain``, the CLI's
stdout and stderr, and Python logging — and each is searched for:

* person ids (``LEAKME-…-Ωq``);
* raw coordinates, printed with repr() and with 12, 10, 8 and 6 decimals (the points sit
  at unusual offsets ≥ 1e-4° from their cell centres, so no public coordinate — a vertex,
  a centre, the region's bounding box — can coincide with them at these precisions); in
  outputs that hold no geometry (manifest, console, logs, PNG metadata) also with 5 and 4
  decimals;
* raw values (``1234.56789``-style amounts with five decimals and ``98765.43219`` above
  the bounds: published values are integers or ratios of noisy integers, which never end
  in these five decimals); shorter forms (4, 3, 2 decimals) only where no statistic is
  printed — a mean shown as "1889.57" is legitimate;
* the exact PRIVATE numbers: every diagnostics figure (rows read, missing coordinates,
  outside the region, missing ids and values, clamped values, records cut, records used,
  persons: all between 173 and 9 932, chosen far from every cell's count) and the true
  per-cell counts (4 321, 1 703, …). Published noisy counts may legitimately *equal* a
  true count (the discrete Laplace noise is 0 with probability ≈ 0.46 at ε = 1), so true
  counts are searched only where no per-cell statistic is printed (manifest, console,
  logs, PNG metadata, the drawn text), and the diagnostics figures only outside the
  statistic columns of the tables (a noisy sum of an empty cell could hit any integer).

The noise makes none of these checks probabilistic: every searched string is impossible
in a correct output, not merely unlikely.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

import dpmap
from common import FAR_AWAY, REGION, cell_centre, interior_cells, list_folder, write_region_geojson
from dpmap.cli import main

# --------------------------------------------------------------------------- the input

ID_PREFIX = "LEAKME-"
CELL_COUNTS = {0: 4321, 1: 1703, 2: 409}  # persons living in interior cells 0, 1, 2
RECORDS_PER_PERSON = {0: 1, 1: 3, 2: 2}  # cell 1: 3 records (L∞ = 2 keeps 2); cell 2: 2 cells
#: bounded records per cell: cell 0 4 321, cell 1 3 406; cell 2's persons keep one of
#: cells 2 and 3 (L0 = 1), chosen at random, 409 between them
TRUE_COUNTS = (4321, 2 * 1703)
MISSING_COORDS = 1013
OUTSIDE = 1327
MISSING_PERSON = 211
MISSING_VALUE = 173
CLAMPED_EVERY = 7  # every 7th kept-or-cut record of cell 0 has a value above the bounds
BOUNDS = (0, 5000)


def _pid(i: int) -> str:
    return f"{ID_PREFIX}{i:05d}-Ωq"


def _coord(base: float, k: int, axis: int) -> float:
    """A distinctive coordinate ≥ 1e-4° and ≤ 2.1e-3° from ``base``."""
    step = (k * 7919 + axis * 104729) % 1777
    return base + (1e-4 + step * 1.13e-6) * (1 if (k + axis) % 2 else -1) + 3.7e-11


def _value(k: int) -> float:
    return 98765.43219 if k % CLAMPED_EVERY == 0 else 1000 + (k % 997) + 0.56789


def leaky_input() -> pd.DataFrame:
    rows: list[tuple[Any, ...]] = []
    cells = interior_cells(4)
    person = 0
    k = 0
    for ci, n in CELL_COUNTS.items():
        lat0, lng0 = cell_centre(cells[ci])
        for _ in range(n):
            for r in range(RECORDS_PER_PERSON[ci]):
                target = cells[ci] if not (ci == 2 and r == 1) else cells[3]  # spread: L0 cuts
                la0, ln0 = (lat0, lng0) if target == cells[ci] else cell_centre(cells[3])
                rows.append((_coord(la0, k, 0), _coord(ln0, k, 1), _pid(person), _value(k)))
                k += 1
            person += 1
    lat0, lng0 = cell_centre(cells[0])
    for j in range(MISSING_COORDS):
        rows.append(
            (
                math.nan if j % 2 else _coord(lat0, k, 0),
                math.nan if not j % 2 else _coord(lng0, k, 1),
                _pid(person),
                _value(k),
            )
        )
        person += 1
        k += 1
    for _ in range(OUTSIDE):
        rows.append((_coord(FAR_AWAY[0], k, 0), _coord(FAR_AWAY[1], k, 1), _pid(person), _value(k)))
        person += 1
        k += 1
    for _ in range(MISSING_PERSON):
        rows.append((_coord(lat0, k, 0), _coord(lng0, k, 1), None, _value(k)))
        k += 1
    for _ in range(MISSING_VALUE):
        rows.append((_coord(lat0, k, 0), _coord(lng0, k, 1), _pid(person), math.nan))
        person += 1
        k += 1
    return pd.DataFrame(rows, columns=["lat", "lng", "pid", "amount"])


PARAMS = dict(
    region=REGION,
    resolution=7,
    epsilon=1.0,
    person="pid",
    value="amount",
    bounds=BOUNDS,
    max_records_per_cell=2,
    title="leak check",
)


@pytest.fixture(scope="module")
def points() -> pd.DataFrame:
    return leaky_input()


@pytest.fixture(scope="module")
def released(points: pd.DataFrame) -> tuple[dpmap.Release, dpmap.Diagnostics]:
    diag = dpmap.Diagnostics()
    rel = dpmap.release(points, diagnostics=diag, **PARAMS)
    return rel, diag


def test_the_input_has_the_intended_private_numbers(
    released: tuple[dpmap.Release, dpmap.Diagnostics], points: pd.DataFrame
) -> None:
    _, diag = released
    inside = sum(n * RECORDS_PER_PERSON[c] for c, n in CELL_COUNTS.items())
    assert (
        diag.rows_read
        == len(points)
        == inside + MISSING_COORDS + OUTSIDE + MISSING_PERSON + MISSING_VALUE
    )
    assert diag.rows_missing_coordinates == MISSING_COORDS
    assert diag.rows_outside_region == OUTSIDE
    assert diag.rows_missing_person == MISSING_PERSON
    assert diag.rows_missing_value == MISSING_VALUE
    assert diag.records_used == sum(TRUE_COUNTS) + CELL_COUNTS[2]
    assert diag.persons == sum(CELL_COUNTS.values())
    assert diag.records_cut_by_bounding == CELL_COUNTS[1] + CELL_COUNTS[2]
    assert diag.values_clamped > 0
    values = _private_numbers(diag)
    assert len(values) == len(set(values)), "the private numbers must be distinct"
    assert min(values) >= 173 and not set(values) & set(TRUE_COUNTS)


# --------------------------------------------------------------------------- the search


def _private_numbers(diag: dpmap.Diagnostics) -> list[int]:
    return [int(v) for v in diag.as_dict().values() if isinstance(v, int) and v > 0]


_NUM = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _tokens(text: str) -> set[str]:
    """Every number printed in ``text``, as written (and without a trailing '.0')."""
    out = set()
    for m in _NUM.finditer(text):
        tok = m.group(0)
        out.add(tok)
        if tok.endswith(".0"):
            out.add(tok[:-2])
    return out


class Secrets:
    def __init__(self, points: pd.DataFrame, diag: dpmap.Diagnostics) -> None:
        coords = pd.concat([points["lat"], points["lng"]]).dropna().unique()
        self.coords_fine = {repr(float(c)) for c in coords} | {
            f"{c:.{p}f}" for c in coords for p in (12, 10, 8, 6)
        }
        self.coords_coarse = self.coords_fine | {f"{c:.{p}f}" for c in coords for p in (5, 4)}
        vals = points["amount"].dropna().unique()
        # five decimals: a published mean (a ratio of noisy integers whose denominator is
        # not a product of 2s and 5s) never ends there; shorter forms only where no
        # statistic is printed (a mean shown with 2 decimals may well read "1889.57")
        self.values_fine = {repr(float(v)) for v in vals} | {f"{v:.5f}" for v in vals}
        self.values_coarse = self.values_fine | {f"{v:.{p}f}" for v in vals for p in (4, 3, 2)}
        self.diag = {str(v) for v in _private_numbers(diag)}
        self.true_counts = {str(v) for v in TRUE_COUNTS}
        self.diag_names = set(diag.as_dict())

    def check(self, name: str, text: str, *, geometry: bool, statistics: bool) -> None:
        """``geometry``: the text holds (public) coordinates; ``statistics``: it holds
        per-cell noisy numbers."""
        assert ID_PREFIX not in text and "Ωq" not in text, f"a person id appears in {name}"
        tokens = _tokens(text)
        coords = self.coords_fine if geometry else self.coords_coarse
        leaked = sorted(tokens & coords)
        assert not leaked, f"raw coordinates {leaked[:5]} appear in {name}"
        leaked = sorted(tokens & (self.values_fine if statistics else self.values_coarse))
        assert not leaked, f"raw values {leaked[:5]} appear in {name}"
        if not statistics:
            leaked = sorted(tokens & (self.diag | self.true_counts))
            assert not leaked, f"private numbers {leaked} appear in {name}"
        for field in self.diag_names:
            assert field not in text, f"the diagnostics field {field!r} appears in {name}"
        assert "PRIVATE diagnostics" not in text, f"the diagnostics appear in {name}"


@pytest.fixture(scope="module")
def secrets(points: pd.DataFrame, released: tuple[dpmap.Release, dpmap.Diagnostics]) -> Secrets:
    return Secrets(points, released[1])


def test_the_search_finds_what_it_looks_for(
    secrets: Secrets, points: pd.DataFrame, released: Any
) -> None:
    """The checks are not vacuous: each kind of secret is caught when present."""
    _, diag = released
    lat = float(points["lat"].dropna().iloc[5])
    for text in (
        f"id {points['pid'].dropna().iloc[3]}",
        f'{{"lat": {lat!r}}}',
        f"at {lat:.6f},",
        f"value {points['amount'].iloc[1]!r}",
        f"rows read: {diag.rows_read}",
        str(diag),
        f"count {TRUE_COUNTS[0]}",
    ):
        with pytest.raises(AssertionError):
            secrets.check("probe", text, geometry=True, statistics=False)


def _stat_columns(columns: Any) -> list[str]:
    stats = {"count", "count_moe", "sum", "sum_moe", "mean", "mean_moe"}
    return [c for c in columns if c in stats or c.endswith(("_unbiased", "_var"))]


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", [".geojson", ".parquet", ".csv"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_release_files(
    suffix: str, unbiased: bool, released: Any, secrets: Secrets, tmp_path: Path
) -> None:
    rel, _ = released
    path = rel.to_file(tmp_path / f"map{suffix}", include_unbiased=unbiased)
    assert list_folder(tmp_path) == sorted([path.name, "map.manifest.json"])
    manifest = (tmp_path / "map.manifest.json").read_text(encoding="utf-8")
    secrets.check("the manifest file", manifest, geometry=False, statistics=False)
    raw = path.read_bytes().decode("utf-8", errors="replace")
    secrets.check(f"{path.name} (whole file)", raw, geometry=True, statistics=True)
    # the same file without its statistic columns: no private number either
    if suffix == ".geojson":
        obj = json.loads(raw)
        for feature in obj["features"]:
            for col in _stat_columns(list(feature["properties"])):
                del feature["properties"][col]
        rest = json.dumps(obj, ensure_ascii=False)
    elif suffix == ".parquet":
        table = pq.read_table(path)
        keep = [c for c in table.column_names if c not in _stat_columns(table.column_names)]
        meta = table.schema.metadata or {}
        rest = "\n".join(
            [str(table.select(keep).to_pydict())]
            + [k.decode(errors="replace") + v.decode(errors="replace") for k, v in meta.items()]
        )
    else:
        df = pd.read_csv(path, dtype=str)
        rest = df.drop(columns=_stat_columns(df.columns)).to_csv(index=False)
    secrets.check(f"{path.name} (without statistics)", rest, geometry=True, statistics=False)


def test_manifest_repr_statement_and_explain(released: Any, secrets: Secrets) -> None:
    rel, _ = released
    secrets.check(
        "manifest", json.dumps(rel.manifest, ensure_ascii=False), geometry=False, statistics=False
    )
    secrets.check("repr", repr(rel), geometry=False, statistics=False)
    secrets.check("privacy statement", rel.privacy_statement, geometry=False, statistics=False)
    params = {k: v for k, v in PARAMS.items() if k != "title"}
    secrets.check("explain", str(dpmap.explain(**params)), geometry=False, statistics=False)
    secrets.check("Release.cells repr", repr(rel.cells), geometry=True, statistics=True)


def _png_text_chunks(data: bytes) -> str:
    """Every tEXt / zTXt / iTXt chunk of a PNG, decoded."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"tEXt":
            out.append(body.decode("latin-1"))
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\x00")
            out.append(key.decode("latin-1") + zlib.decompress(rest[1:]).decode("latin-1"))
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\x00")
            compressed = rest[0] == 1
            rest = rest[2:]
            _lang, _, rest = rest.partition(b"\x00")
            _tkey, _, text = rest.partition(b"\x00")
            out.append(key.decode() + (zlib.decompress(text) if compressed else text).decode())
        pos += 12 + length
    return "\n".join(out)


def test_png_map_metadata_and_drawn_text(released: Any, secrets: Secrets, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    rel, _ = released
    for column in ("count", "sum", "mean"):
        png = tmp_path / f"{column}.png"
        fig = rel.plot(png, column=column)
        meta = _png_text_chunks(png.read_bytes())
        assert "Software" in meta  # the chunks were found
        secrets.check(f"{png.name} metadata", meta, geometry=False, statistics=False)
        svg = io.BytesIO()
        with plt.rc_context({"svg.fonttype": "none"}):  # keep text as text
            fig.savefig(svg, format="svg")
        plt.close(fig)
        texts = re.findall(r"<text[^>]*>(.*?)</text>", svg.getvalue().decode(), flags=re.S)
        drawn = "\n".join(re.sub(r"<[^>]+>", "", t) for t in texts)
        assert "ε" in drawn or "epsilon" in drawn.lower()  # the caption was found
        # the colour bar's ticks are "nice" numbers of the noisy scale: statistics=True
        secrets.check(f"text drawn on the {column} map", drawn, geometry=False, statistics=True)
        for v in secrets.diag:
            assert not re.search(rf"(?<![\d.]){v}(?![\d.])", drawn), f"{v} drawn on the map"


def test_interactive_html_map(released: Any, secrets: Secrets, tmp_path: Path) -> None:
    pytest.importorskip("folium")
    rel, _ = released
    for column in ("count", "mean"):
        path = rel.to_html(tmp_path / f"{column}.html", column=column)
        html = path.read_text(encoding="utf-8")
        secrets.check(path.name, html, geometry=True, statistics=True)


def test_ledger_file(points: pd.DataFrame, secrets: Secrets, tmp_path: Path) -> None:
    ledger = dpmap.Ledger.init(tmp_path / "budget.db", "debts", epsilon=5.0)
    dpmap.release(points, ledger=ledger, dataset="debts", **PARAMS)
    con = sqlite3.connect(tmp_path / "budget.db")
    try:
        dump = "\n".join(con.iterdump())
    finally:
        con.close()
    secrets.check("the ledger", dump, geometry=False, statistics=False)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert ID_PREFIX.encode() not in raw


# --------------------------------------------------------------------------- console and logs


def test_python_logging_and_stdout_during_a_release(
    points: pd.DataFrame, secrets: Secrets, caplog: pytest.LogCaptureFixture
) -> None:
    out, err = io.StringIO(), io.StringIO()
    with (
        caplog.at_level(logging.DEBUG),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        dpmap.release(points, diagnostics=dpmap.Diagnostics(), **PARAMS)
    logged = "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records)
    secrets.check("Python logging (DEBUG and above)", logged, geometry=False, statistics=False)
    secrets.check("stdout during a release", out.getvalue(), geometry=False, statistics=False)
    secrets.check("stderr during a release", err.getvalue(), geometry=False, statistics=False)


@pytest.fixture(scope="module")
def cli_folder(tmp_path_factory: pytest.TempPathFactory, points: pd.DataFrame) -> Path:
    folder = tmp_path_factory.mktemp("cli-leaks")
    write_region_geojson(folder)
    points.to_csv(folder / "points.csv", index=False)
    points.to_parquet(folder / "points.parquet", index=False)
    return folder


def _cli(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("source", ["points.csv", "points.parquet"])
def test_cli_release_plot_and_html(
    source: str, cli_folder: Path, secrets: Secrets, caplog: pytest.LogCaptureFixture
) -> None:
    out = cli_folder / "out"
    out.mkdir(exist_ok=True)
    for p in out.iterdir():
        p.unlink()
    base = [
        "release",
        source,
        "--region",
        "region.geojson",
        "--resolution",
        "7",
        "--epsilon",
        "1",
        "--person",
        "pid",
        "--value",
        "amount",
        "--bounds",
        "0",
        "5000",
    ]
    with caplog.at_level(logging.WARNING):
        code, stdout, stderr = _cli(
            [*base, "--out", "out/m.geojson", "--png", "out/m.png"], cli_folder
        )
        assert code == 0, stderr
        code2, stdout2, stderr2 = _cli(
            ["plot", "out/m.geojson", "--html", "out/m.html", "--png", "out/p.png"], cli_folder
        )
        assert code2 == 0, stderr2
    for name, text in (
        ("release stdout", stdout),
        ("release stderr", stderr),
        ("plot stdout", stdout2),
        ("plot stderr", stderr2),
    ):
        secrets.check(name, text, geometry=False, statistics=False)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    secrets.check("logging during the CLI", logged, geometry=False, statistics=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "m.geojson",
        "m.html",
        "m.manifest.json",
        "m.png",
        "p.png",
    ]
    secrets.check(
        "m.geojson", (out / "m.geojson").read_text(encoding="utf-8"), geometry=True, statistics=True
    )
    secrets.check(
        "m.manifest.json",
        (out / "m.manifest.json").read_text(encoding="utf-8"),
        geometry=False,
        statistics=False,
    )
    secrets.check(
        "m.html", (out / "m.html").read_text(encoding="utf-8"), geometry=True, statistics=True
    )
    for png in ("m.png", "p.png"):
        secrets.check(
            png, _png_text_chunks((out / png).read_bytes()), geometry=False, statistics=False
        )


def test_cli_diagnostics_go_to_stderr_only(
    cli_folder: Path, secrets: Secrets, released: Any
) -> None:
    """--diagnostics prints the PRIVATE numbers for the data owner on stderr — and
    nowhere else: not on stdout, not in the files."""
    _, diag = released
    out = cli_folder / "out-diag"
    out.mkdir(exist_ok=True)
    code, stdout, stderr = _cli(
        [
            "release",
            "points.csv",
            "--region",
            "region.geojson",
            "--resolution",
            "7",
            "--epsilon",
            "1",
            "--person",
            "pid",
            "--value",
            "amount",
            "--bounds",
            "0",
            "5000",
            "--diagnostics",
            "--out",
            "out-diag/m.csv",
        ],
        cli_folder,
    )
    assert code == 0, stderr
    assert "PRIVATE" in stderr and str(diag.rows_read) in stderr  # shown to the data owner
    assert ID_PREFIX not in stderr
    secrets.check("stdout with --diagnostics", stdout, geometry=False, statistics=False)
    secrets.check(
        "m.manifest.json",
        (out / "m.manifest.json").read_text(encoding="utf-8"),
        geometry=False,
        statistics=False,
    )
    df = pd.read_csv(out / "m.csv", dtype=str)
    secrets.check(
        "m.csv",
        df.drop(columns=_stat_columns(df.columns)).to_csv(index=False),
        geometry=True,
        statistics=False,
    )
    secrets.check(
        "m.csv (whole)", (out / "m.csv").read_text(encoding="utf-8"), geometry=True, statistics=True
    )


def test_cli_explain_and_audit_print_nothing_private(cli_folder: Path, secrets: Secrets) -> None:
    code, stdout, stderr = _cli(
        [
            "explain",
            "--region",
            "region.geojson",
            "--resolution",
            "7",
            "--epsilon",
            "1",
            "--person",
            "pid",
            "--value",
            "amount",
            "--bounds",
            "0",
            "5000",
            "--json",
        ],
        cli_folder,
    )
    assert code == 0, stderr
    secrets.check("explain --json", stdout + stderr, geometry=False, statistics=False)


# --------------------------------------------------------------------------- error paths


def test_error_messages_name_columns_not_people(points: pd.DataFrame) -> None:
    """A user mistake about a column names the column, not the people in it."""
    for mistake in ({"lat": "latitude"}, {"person": "debtor"}, {"value": "owed"}):
        with pytest.raises(dpmap.DpmapError) as info:
            dpmap.release(points.head(50), **{**PARAMS, **mistake})
        assert ID_PREFIX not in str(info.value)
    with pytest.raises(dpmap.DpmapError) as info:
        dpmap.release(points.head(50).assign(lat=99.0), **PARAMS)
    assert ID_PREFIX not in str(info.value)


def test_bug_parser_errors_quote_raw_rows(cli_folder: Path, points: pd.DataFrame) -> None:
    """BUG (a leak into consoles and logs): when polars cannot parse a CSV row, dpmap's
    message repeats the parser's text, which quotes the row — here a person id:
    ``cannot read the points: could not parse `"LEAKME-99999-Ωq,1234.56789` as dtype …``.
    stderr and application logs are often kept where the microdata may not go. Fix:
    src/dpmap/engines/local.py (the ``cannot read the points: …`` messages) and
    src/dpmap/io.py, _first_line (used by _scan_file) — drop quoted fragments from the
    parser's text before using it, e.g.
    ``re.sub(r"`[^`]*`?|\"[^\"]*\"?|'[^']*'?", "<value>", text)``, and name the
    column/line instead."""
    good = points.head(30).to_csv(index=False)
    bad = good + '39.1,116.1,"LEAKME-99999-Ωq,1234.56789\n'  # an unbalanced quote, last row
    (cli_folder / "quote.csv").write_text(bad, encoding="utf-8")
    code, _stdout, stderr = _cli(
        [
            "release",
            "quote.csv",
            "--region",
            "region.geojson",
            "--resolution",
            "7",
            "--epsilon",
            "1",
            "--person",
            "pid",
            "--out",
            "out/q.geojson",
        ],
        cli_folder,
    )
    assert code == 2, stderr
    assert ID_PREFIX not in stderr, stderr


def test_bug_conversion_errors_quote_raw_values(points: pd.DataFrame) -> None:
    """BUG (same kind): a pandas column mixing types is refused with pyarrow's message,
    which quotes a raw cell: ``cannot convert the pandas DataFrame (Could not convert
    'LEAKME-…' with type str: tried to convert to double)``. Fix: src/dpmap/io.py,
    read_points — on failure find the offending column (``pl.from_pandas(points[[c]])``
    per column) and say ``the column 'lat' mixes types (e.g. str and float); make it one
    type …`` without quoting values."""
    df = points.head(50).copy()
    df["lat"] = df["lat"].astype(object)
    df.loc[3, "lat"] = df.loc[7, "pid"]  # a person id pasted into the latitude column
    with pytest.raises(dpmap.DpmapError) as info:
        dpmap.release(df, **PARAMS)
    assert ID_PREFIX not in str(info.value), str(info.value)
