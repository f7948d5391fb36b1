"""The command line: happy paths, and every kind of bad input → one line, exit 2, no file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import box

import dpmap
from dpmap.cli.app import as_command_line, main
from dpmap.cli.app import cli_options as _cli_options

REGION = box(116.0, 39.0, 116.5, 39.4)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    n = 400
    df = pd.DataFrame(
        {
            "debtor_id": [f"D{i % 300:04d}" for i in range(n)],
            "lat": rng.uniform(39.05, 39.35, n),
            "lng": rng.uniform(116.05, 116.45, n),
            "amount": rng.lognormal(9, 1, n).round(2),
            "creditor": rng.choice(["bank", "microloan", "court"], n),
        }
    )
    df.to_csv(tmp_path / "points.csv", index=False)
    (tmp_path / "region.geojson").write_text(
        json.dumps(
            {
                "type": "Feature",
                "properties": {},
                "geometry": json.loads(shapely.to_geojson(REGION)),
            }
        )
    )
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def base(w: Path, *extra: str) -> list[str]:
    return [
        "release",
        str(w / "points.csv"),
        "--region",
        str(w / "region.geojson"),
        "--resolution",
        "7",
        "--epsilon",
        "1",
        "--out",
        str(w / "map.geojson"),
        *extra,
    ]


def test_release_writes_release_manifest_and_png(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        *base(
            workdir,
            "--person",
            "debtor_id",
            "--value",
            "amount",
            "--bounds",
            "0",
            "50000",
            "--png",
            str(workdir / "map.png"),
        ),
    )
    assert code == 0, err
    assert (workdir / "map.geojson").is_file() and (workdir / "map.png").is_file()
    manifest = json.loads((workdir / "map.manifest.json").read_text())
    assert manifest["privacy"]["epsilon"] == 1.0
    assert manifest["resolution"] == 7
    assert set(manifest["statistics"]) == {"count", "sum"}
    assert "ε = 1" in out
    # the released cell set is the public polyfill of the region
    gj = json.loads((workdir / "map.geojson").read_text())
    cells = {f["properties"]["cell"] for f in gj["features"]}
    shape = h3.geo_to_h3shape(REGION.__geo_interface__)
    assert cells == set(h3.h3shape_to_cells_experimental(shape, 7, contain="overlap"))


def test_release_with_categories_and_no_suppression(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys,
        *base(
            workdir,
            "--person",
            "debtor_id",
            "--category",
            "creditor",
            "--categories",
            "bank,microloan",
            "--no-suppress",
        ),
    )
    assert code == 0, err
    gj = json.loads((workdir / "map.geojson").read_text())
    cats = {f["properties"]["category"] for f in gj["features"]}
    assert cats == {"bank", "microloan", "other"}
    assert not any(f["properties"]["suppressed"] for f in gj["features"])


def test_explain_needs_no_points(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    code, out, err = run(
        capsys,
        "explain",
        "--region",
        workdir / "region.geojson",
        "--resolution",
        "7",
        "--epsilon",
        "1",
        "--value",
        "amount",
        "--bounds",
        "0",
        "50000",
        "--json",
    )
    assert code == 0, err
    plan = json.loads(out)
    assert plan["statistics"]["count"]["scale"] == pytest.approx(2.0)
    assert plan["statistics"]["sum"]["scale"] == pytest.approx(100_000.0)
    assert plan["cells"] > 0


def test_plot_reads_a_release(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, *base(workdir))[0] == 0
    code, _, err = run(capsys, "plot", workdir / "map.geojson", "--png", workdir / "again.png")
    assert code == 0, err
    assert (workdir / "again.png").stat().st_size > 1000


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("dpmap ")
    code, out, _ = run(capsys, "release", "--help")
    assert code == 0 and "--max-records-per-cell" in out


BAD = {
    "missing person column": (["--person", "nope"], "nope"),
    "missing value column": (["--value", "nope", "--bounds", "0", "1"], "nope"),
    "missing lat column": (["--lat", "latitude"], "latitude"),
    "epsilon zero": (["--epsilon", "0"], "epsilon"),
    "epsilon nan": (["--epsilon", "nan"], "epsilon"),
    "epsilon inf": (["--epsilon", "inf"], "epsilon"),
    "epsilon not a number": (["--epsilon", "abc"], "epsilon"),
    "delta negative": (["--delta", "-0.1"], "delta"),
    "delta one": (["--delta", "1"], "delta"),
    "gaussian without delta": (["--mechanism", "gaussian"], "delta"),
    "unknown mechanism": (["--mechanism", "exponential"], "mechanism"),
    "resolution too fine": (["--resolution", "10"], "resolution"),
    "resolution negative": (["--resolution", "-1"], "resolution"),
    "value without bounds": (["--value", "amount"], "bounds"),
    "bounds reversed": (["--value", "amount", "--bounds", "10", "0"], "bounds"),
    "bounds not whole": (["--value", "amount", "--bounds", "0", "0.5"], "whole"),
    "max cells zero": (["--max-cells", "0"], "--max-cells"),
    "max records zero": (["--max-records-per-cell", "0"], "--max-records-per-cell"),
    "category without list": (["--category", "creditor"], "categories"),
    "suppress conflict": (["--suppress-below", "3", "--no-suppress"], "no-suppress"),
    "ledger without dataset": (["--ledger", "x.db"], "dataset"),
    "non-numeric values": (["--value", "creditor", "--bounds", "0", "1"], "numeric"),
    "bad output type": (["--out", "map.xlsx"], ".xlsx"),
}


#: a release keyword as Python spells it: ``person=``, ``max_cells`` (not quoted)
PYTHON_KEYWORD = re.compile(
    r"(?<![\w\-'])(?:(?:"
    + "|".join(sorted(_cli_options(), key=len, reverse=True))
    + r")=|(?:"
    + "|".join(n for n in _cli_options() if "_" in n)
    + r")(?![\w']))"
)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_flags_exit_2_with_one_line(
    case: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra, needle = BAD[case]
    args = base(workdir, *extra)
    if "--out" in extra:  # replace the default --out
        i = args.index("--out")
        del args[i : i + 2]
        args += ["--out", str(workdir / extra[extra.index("--out") + 1])]
    before = sorted(p.name for p in workdir.iterdir())
    code, _, err = run(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dpmap: error:")
    assert needle.lower() in lines[0].lower()
    assert "Traceback" not in err
    assert sorted(p.name for p in workdir.iterdir()) == before  # nothing written
    # the command line names its flags, never the Python keywords (person=, max_cells)
    assert not PYTHON_KEYWORD.search(lines[0]), lines[0]


def _write_points(w: Path, df: pd.DataFrame, name: str = "bad.csv") -> Path:
    p = w / name
    df.to_csv(p, index=False)
    return p


@pytest.mark.parametrize(
    "case",
    [
        "latitude out of range",
        "longitude out of range",
        "projected",
        "string coordinates",
        "empty",
        "missing file",
        "unsupported type",
        "random bytes parquet",
        "region missing",
        "region not degrees",
        "region invalid",
        "region unsupported",
        "no region and delta 0",
    ],
)
def test_bad_data_exit_2(case: str, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pts = workdir / "points.csv"
    region = workdir / "region.geojson"
    extra: list[str] = []
    if case == "latitude out of range":
        pts = _write_points(workdir, pd.DataFrame({"lat": [39.1, 95.0], "lng": [116.1, 116.2]}))
        needle = "latitudes"
    elif case == "longitude out of range":
        pts = _write_points(workdir, pd.DataFrame({"lat": [39.1, 39.2], "lng": [116.1, 190.0]}))
        needle = "longitudes"
    elif case == "projected":
        pts = _write_points(workdir, pd.DataFrame({"lat": [4.4e6, 4.41e6], "lng": [1.29e7, 1.3e7]}))
        needle = "projected"
    elif case == "string coordinates":
        pts = _write_points(workdir, pd.DataFrame({"lat": ["39.1N", "x"], "lng": ["a", "b"]}))
        needle = "not numeric"
    elif case == "empty":
        pts = workdir / "empty.csv"
        pts.write_text("")
        needle = "empty"
    elif case == "missing file":
        pts = workdir / "nope.csv"
        needle = "does not exist"
    elif case == "unsupported type":
        pts = workdir / "points.xlsx"
        pts.write_bytes(b"PK\x03\x04")
        needle = "unsupported"
    elif case == "random bytes parquet":
        pts = workdir / "junk.parquet"
        pts.write_bytes(np.random.default_rng(0).bytes(500))
        needle = "cannot read"
    elif case == "region missing":
        region = workdir / "nowhere.geojson"
        needle = "does not exist"
    elif case == "region not degrees":
        region = workdir / "metres.geojson"
        region.write_text(json.dumps(shapely.geometry.mapping(box(4e5, 4e6, 5e5, 4.1e6))))
        needle = "degrees"
    elif case == "region invalid":
        region = workdir / "bowtie.geojson"
        bowtie = {
            "type": "Polygon",
            "coordinates": [[[116, 39], [116.4, 39.4], [116.4, 39], [116, 39.4], [116, 39]]],
        }
        region.write_text(json.dumps(bowtie))
        needle = "not a valid polygon"
    elif case == "region unsupported":
        region = workdir / "region.txt"
        region.write_text("hello")
        needle = "unsupported"
    else:
        needle = "delta"
    args = [
        "release",
        str(pts),
        "--resolution",
        "7",
        "--epsilon",
        "1",
        "--out",
        str(workdir / "out.geojson"),
        *extra,
    ]
    if case != "no region and delta 0":
        args[2:2] = ["--region", str(region)]
    before = sorted(p.name for p in workdir.iterdir())
    code, _, err = run(capsys, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dpmap: error:"), err
    assert needle.lower() in lines[0].lower()
    assert sorted(p.name for p in workdir.iterdir()) == before


def test_console_script_exit_status(workdir: Path) -> None:
    """The installed entry point passes the status to the shell, with no traceback."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dpmap.cli",
            "release",
            str(workdir / "points.csv"),
            "--resolution",
            "12",
            "--epsilon",
            "1",
            "--region",
            str(workdir / "region.geojson"),
            "--out",
            str(workdir / "m.geojson"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "resolution 12" in proc.stderr
    assert not (workdir / "m.geojson").exists()


def test_config_file_mode(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Settings kept under version control; command-line flags win; recorded in the manifest."""
    (workdir / "release.toml").write_text(
        "# monthly debt map\n"
        "[release]\n"
        'points = "points.csv"\nregion = "region.geojson"\nresolution = 7\nepsilon = 0.5\n'
        'person = "debtor_id"\nvalue = "amount"\nbounds = [0, 50000]\nout = "cfg.geojson"\n'
    )
    code, _, err = run(capsys, "release", "--config", workdir / "release.toml", "--epsilon", "0.25")
    assert code == 0, err
    manifest = json.loads((workdir / "cfg.manifest.json").read_text())
    assert manifest["privacy"]["epsilon"] == pytest.approx(0.25)  # the flag won
    assert manifest["config"]["file"] == "release.toml"
    assert manifest["config"]["settings"]["epsilon"] == 0.5
    assert len(manifest["config"]["sha256"]) == 64
    assert set(manifest["statistics"]) == {"count", "sum"}


@pytest.mark.parametrize(
    "text,needle",
    [
        ("foo = 1\n", "unknown settings"),
        ("epsilon = [\n", "not valid TOML"),
        ('points = "points.csv"\nepsilon = 1\n', "--resolution is required"),
    ],
)
def test_bad_config_exits_2(
    text: str, needle: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "bad.toml").write_text(text)
    code, _, err = run(
        capsys, "release", "--config", workdir / "bad.toml", "--out", workdir / "x.geojson"
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err
    assert not (workdir / "x.geojson").exists()


def test_hierarchical_and_adaptive_from_the_cli(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys,
        "release",
        workdir / "points.csv",
        "--region",
        workdir / "region.geojson",
        "--resolution",
        "6,7",
        "--epsilon",
        "1",
        "--out",
        workdir / "h.geojson",
    )
    assert code == 0, err
    assert json.loads((workdir / "h.manifest.json").read_text())["resolution"] == [6, 7]
    code, _, err = run(
        capsys,
        "release",
        workdir / "points.csv",
        "--region",
        workdir / "region.geojson",
        "--resolution",
        "8",
        "--adaptive",
        "--epsilon",
        "1",
        "--out",
        workdir / "a.geojson",
    )
    assert code == 0, err
    assert (
        json.loads((workdir / "a.manifest.json").read_text())["adaptive"]["finest_resolution"] == 8
    )
    code, _, err = run(
        capsys,
        "release",
        workdir / "points.csv",
        "--region",
        workdir / "region.geojson",
        "--resolution",
        "8",
        "--adaptive",
        "--internal-share",
        "0.1,0,0.1,0",
        "--epsilon",
        "1",
        "--out",
        workdir / "ai.geojson",
    )
    assert code == 0, err
    split = json.loads((workdir / "ai.manifest.json").read_text())["adaptive"]["budget_split"]
    assert split["internal_share"] == {"4": 0.1, "5": 0.0, "6": 0.1, "7": 0.0}
    code, _, err = run(
        capsys,
        "release",
        workdir / "points.csv",
        "--region",
        workdir / "region.geojson",
        "--resolution",
        "6,x",
        "--epsilon",
        "1",
        "--out",
        workdir / "b.geojson",
    )
    assert code == 2 and "--resolution" in err
    grid_args = ["--resolution", "8", "--adaptive-method", "grid", "--epsilon", "1", "--out"]
    code, _, err = run(
        capsys,
        "release",
        workdir / "points.csv",
        "--region",
        workdir / "region.geojson",
        "--adaptive",
        *grid_args,
        workdir / "g.geojson",
    )
    assert code == 0, err
    adaptive = json.loads((workdir / "g.manifest.json").read_text())["adaptive"]
    assert adaptive["kind"] == "grid" and isinstance(adaptive["first_resolution"], int)
    assert adaptive["root_resolution"] <= adaptive["first_resolution"] < 8
    for extra, words in (([], "add --adaptive"), (["--adaptive"], "privtree or grid")):
        args = grid_args if extra == [] else [*grid_args[:3], "quadtree", *grid_args[4:]]
        code, _, err = run(
            capsys,
            "release",
            workdir / "points.csv",
            "--region",
            workdir / "region.geojson",
            *extra,
            *args,
            workdir / "g2.geojson",
        )
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1
        assert not (workdir / "g2.geojson").exists()


def test_engine_flag_reaches_the_engine(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--engine streaming (or engine = "streaming" in --config) runs the streaming engine;
    a bad engine name exits 2 with one line and writes nothing."""
    from dpmap.engines import streaming

    calls: list[str] = []
    original = streaming.bound_and_aggregate

    def spy(points: Any, *args: Any, **kw: Any) -> Any:
        calls.append(str(points))
        return original(points, *args, **kw)

    monkeypatch.setattr(streaming, "bound_and_aggregate", spy)
    code, _, err = run(capsys, *base(workdir, "--person", "debtor_id"))
    assert code == 0 and calls == [], err
    code, _, err = run(
        capsys, *base(workdir, "--person", "debtor_id", "--engine", "streaming", "--overwrite")
    )
    assert code == 0, err
    assert calls == [str(workdir / "points.csv")]
    (workdir / "release.toml").write_text(
        'points = "points.csv"\nregion = "region.geojson"\nresolution = 7\nepsilon = 1\n'
        'out = "cfg.geojson"\nengine = "streaming"\n'
    )
    code, _, err = run(capsys, "release", "--config", workdir / "release.toml")
    assert code == 0 and len(calls) == 2, err
    code, _, err = run(capsys, *base(workdir, "--engine", "dask", "--out", workdir / "x.geojson"))
    assert code == 2 and "engine must be one of" in err and len(err.strip().splitlines()) == 1
    assert not (workdir / "x.geojson").exists()


# ------------------------------------------------------------------ Python keywords → flags


@pytest.mark.parametrize(
    ("extra", "flags", "keywords"),
    [
        (["--value", "amount"], ["--value amount", "--bounds lo hi"], ["bounds=", "value="]),
        (["--category", "creditor"], ["--categories a,b"], ["categories=", "category="]),
        (["--ledger", "x.db"], ["--ledger path", "--dataset name"], ["ledger=", "dataset="]),
        (["--mechanism", "gaussian"], ["--delta 1e-6", "--mechanism laplace"], ["delta="]),
        (["--bounds", "0", "1"], ["--value <column>"], ["value="]),
        (["--integers"], ["--integers applies"], ["integers="]),
    ],
)
def test_cli_errors_name_flags_not_python_keywords(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    flags: list[str],
    keywords: list[str],
) -> None:
    code, _, err = run(capsys, *base(workdir, *extra))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for flag in flags:
        assert flag in err, err
    for keyword in keywords:
        assert keyword not in err, err


def test_python_keywords_are_translated_from_the_clis_own_options() -> None:
    assert as_command_line("pass bounds=(lo, hi), e.g. bounds=(0, 50_000)") == (
        "pass --bounds lo hi, e.g. --bounds 0 50_000"
    )
    assert as_command_line("pass e.g. resolution=[5, 6, 7]") == "pass e.g. --resolution 5,6,7"
    assert as_command_line("max_cells must be ≥ 1; adaptive_from applies") == (
        "--max-cells must be ≥ 1; --adaptive-from applies"
    )
    assert as_command_line("adaptive=True needs; pass person='<column>'") == (
        "--adaptive needs; pass --person <column>"
    )
    assert as_command_line("suppress_below=False publishes") == "--no-suppress publishes"
    assert as_command_line("too large for max_cells.") == "too large for --max-cells."
    # not Python keywords: left alone
    for text in (
        "ε = 1, δ = 0",
        "column 'max_cells' is missing",
        "a=b",
        "--dataset NAME",
        "cannot read /data/count_share.csv",
        "cannot read data/max_cells/x.csv",
    ):
        assert as_command_line(text) == text
    # keywords that are no option of the command line are left alone, too
    assert as_command_line("draw it with show_uncertainty=False") == (
        "draw it with show_uncertainty=False"
    )
    # include_unbiased became a flag of dpmap release (--include-unbiased)
    assert as_command_line("write it with include_unbiased=True") == (
        "write it with --include-unbiased"
    )


# ------------------------------------------------------------------ nothing spent for nothing


@pytest.fixture
def book(workdir: Path) -> dpmap.Ledger:
    return dpmap.Ledger.init(workdir / "budget.db", "debts-2026", epsilon=10)


def charged(workdir: Path, *extra: str) -> list[str]:
    return base(workdir, "--ledger", str(workdir / "budget.db"), "--dataset", "debts-2026", *extra)


def test_png_with_categories_is_refused_before_anything_is_spent(
    workdir: Path, book: dpmap.Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's first run: the PNG needs one category; it used to fail after ε = 1
    was charged and the release written."""
    before = sorted(p.name for p in workdir.iterdir())
    args = charged(workdir, "--category", "creditor", "--categories", "bank,court")
    code, _, err = run(capsys, *args, "--png", workdir / "cat.png")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--png" in err and "dpmap plot" in err
    assert book.history("debts-2026") == []
    assert sorted(p.name for p in workdir.iterdir()) == before


def test_existing_outputs_are_not_overwritten_without_overwrite(
    workdir: Path, book: dpmap.Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    png = workdir / "map.png"
    assert run(capsys, *charged(workdir, "--png", png, "--label", "January"))[0] == 0
    assert book.spent("debts-2026").epsilon == 1
    assert book.history("debts-2026")[0].label == "January"
    files = {p: p.read_bytes() for p in (workdir / "map.geojson", workdir / "map.manifest.json")}
    # the same command again: refused, nothing spent, nothing touched
    for extra in (
        [],
        ["--png", str(png)],
        ["--out", str(workdir / "other.geojson"), "--png", str(png)],
    ):
        code, _, err = run(capsys, *charged(workdir, *extra))
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("dpmap: error: " + ("--png" if "--out" in extra else "--out"))
        assert "already exists; nothing was spent" in err and "pass --overwrite" in err
        assert "cannot write" not in err
    # a manifest alone is an output too
    (workdir / "lonely.manifest.json").write_text("{}")
    code, _, err = run(capsys, *charged(workdir, "--out", str(workdir / "lonely.geojson")))
    assert code == 2 and "lonely.manifest.json" in err
    assert book.spent("debts-2026").epsilon == 1
    assert len(book.history("debts-2026")) == 1
    assert all(p.read_bytes() == b for p, b in files.items())
    assert not (workdir / "other.geojson").exists() and not (workdir / "lonely.geojson").exists()
    # --overwrite replaces them, and pays again
    code, _, err = run(capsys, *charged(workdir, "--png", png, "--overwrite"))
    assert code == 0, err
    assert book.spent("debts-2026").epsilon == 2
    assert (workdir / "map.geojson").read_bytes() != files[workdir / "map.geojson"]


def test_an_output_that_is_an_input_is_refused(
    workdir: Path, book: dpmap.Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    for out in ("points.csv", "budget.db"):
        args = charged(workdir, "--out", str(workdir / out), "--overwrite")
        if out == "budget.db":  # not a release type: refused by its suffix first
            continue
        code, _, err = run(capsys, *args)
        assert code == 2 and "is an input" in err, err
    assert book.history("debts-2026") == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("out", ["/proc/m.geojson", "{w}/" + "m" * 236 + ".geojson"])
def test_an_unwritable_output_is_refused_before_anything_is_spent(
    workdir: Path, book: dpmap.Ledger, capsys: pytest.CaptureFixture[str], out: str
) -> None:
    """/proc refuses new files even to root; a 244-character name (and its manifest's) is
    allowed, but not the writer's temporary names (14 characters longer): both used to fail
    only after the release was paid for."""
    code, _, err = run(capsys, *charged(workdir, "--out", out.format(w=workdir)))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot write" in err, err
    assert book.history("debts-2026") == []


def test_a_failed_map_after_payment_keeps_the_written_release(
    workdir: Path,
    book: dpmap.Ledger,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dpmap.releases import Release

    def broken_plot(self: Release, *args: Any, **kw: Any) -> None:
        raise dpmap.SpecError("the release table has no cells to plot")

    monkeypatch.setattr(Release, "plot", broken_plot)
    code, _, err = run(capsys, *charged(workdir, "--png", workdir / "map.png"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "paid for" in err and "written to" in err and "dpmap plot" in err
    assert "ledger entry #1" in err
    assert (workdir / "map.geojson").is_file() and (workdir / "map.manifest.json").is_file()
    assert not (workdir / "map.png").exists()
    assert book.spent("debts-2026").epsilon == 1
    manifest = json.loads((workdir / "map.manifest.json").read_text())
    assert manifest["ledger"]["entry_id"] == book.history("debts-2026")[0].id

    def crashing_plot(self: Release, *args: Any, **kw: Any) -> None:
        raise RuntimeError("matplotlib crashed")

    monkeypatch.setattr(Release, "plot", crashing_plot)
    args = charged(workdir, "--out", str(workdir / "b.geojson"), "--png", str(workdir / "b.png"))
    code, _, err = run(capsys, *args)
    assert code == 1 and "matplotlib crashed" in err and "written to" in err, err
    assert (workdir / "b.geojson").is_file()


def test_a_failed_write_after_payment_saves_the_release_elsewhere(
    workdir: Path,
    book: dpmap.Ledger,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dpmap.releases import Release

    original = Release.to_file
    rescue = workdir / "rescue"
    rescue.mkdir()
    monkeypatch.chdir(rescue)

    def disk_full(self: Release, path: Any, **kw: Any) -> Path:
        if Path(path).parent == workdir:
            raise dpmap.DataFileError(f"cannot write {path!r} (No space left on device)")
        return original(self, path, **kw)

    monkeypatch.setattr(Release, "to_file", disk_full)
    code, _, err = run(capsys, *charged(workdir, "--png", workdir / "map.png"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "No space left" in err and "paid for" in err and "saved to" in err
    (saved,) = rescue.glob("dpmap-release-*.geojson")
    assert str(saved) in err
    assert (rescue / (saved.stem + ".manifest.json")).is_file()
    assert json.loads(saved.read_text())["dpmap_manifest"]["ledger"]["dataset"] == "debts-2026"
    assert book.spent("debts-2026").epsilon == 1


def test_a_mistyped_ledger_or_dataset_is_refused_and_creates_nothing(
    workdir: Path, book: dpmap.Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in workdir.iterdir())
    args = base(workdir, "--ledger", str(workdir / "budegt.db"), "--dataset", "debts-2026")
    code, _, err = run(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "budegt.db does not exist" in err and "dpmap budget init" in err
    args = base(workdir, "--ledger", str(workdir / "budget.db"), "--dataset", "debts-2062")
    code, _, err = run(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "did you mean 'debts-2026'?" in err and "--dataset debts-2062" not in err
    assert sorted(p.name for p in workdir.iterdir()) == before
    assert book.datasets() == ["debts-2026"] and book.history("debts-2026") == []


def test_label_in_a_config_file_is_the_title(
    workdir: Path, book: dpmap.Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "release.toml").write_text(
        'points = "points.csv"\nregion = "region.geojson"\nresolution = 7\nepsilon = 1\n'
        'out = "cfg.geojson"\nledger = "budget.db"\ndataset = "debts-2026"\n'
        'label = "Debtors, February 2026"\n'
    )
    code, _, err = run(capsys, "release", "--config", workdir / "release.toml")
    assert code == 0, err
    assert book.history("debts-2026")[0].label == "Debtors, February 2026"
    assert json.loads((workdir / "cfg.manifest.json").read_text())["title"] == (
        "Debtors, February 2026"
    )


def test_a_failure_inside_the_release_after_noise_says_the_budget_was_spent(
    workdir: Path,
    book: dpmap.Ledger,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    release_module = importlib.import_module("dpmap.releases.pipeline")

    def boom(*args: Any, **kw: Any) -> None:
        raise dpmap.SpecError("injected failure after noise")

    monkeypatch.setattr(release_module, "publish", boom)
    code, _, err = run(capsys, *charged(workdir))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "injected failure after noise" in err
    assert "was spent, ledger entry #1 of dataset 'debts-2026', and nothing was written" in err
    assert book.spent("debts-2026").epsilon == 1
    # a failure before any noise says nothing of the kind (nothing was spent)
    code, _, err = run(
        capsys, *charged(workdir, "--person", "nope", "--out", workdir / "n.geojson")
    )
    assert code == 2 and "was spent" not in err and book.spent("debts-2026").epsilon == 1


# -- press tables, roll-ups, comparisons, total maps, and small things (CLI parity) --


def _zones_file(w: Path) -> Path:
    west, east = box(116.0, 39.0, 116.25, 39.4), box(116.25, 39.0, 116.5, 39.4)
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": n},
                "geometry": json.loads(shapely.to_geojson(g)),
            }
            for n, g in (("west", west), ("east", east))
        ],
    }
    path = w / "zones.geojson"
    path.write_text(json.dumps(fc))
    return path


def _categorised(w: Path, out: str = "map.geojson", *extra: str) -> list[str]:
    args = base(w, "--person", "debtor_id", "--value", "amount", "--bounds", "0", "50000")
    args[args.index("--out") + 1] = str(w / out)
    return [*args, "--category", "creditor", "--categories", "bank,microloan", *extra]


def test_include_unbiased_writes_the_unbiased_estimates(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *base(workdir, "--include-unbiased"))
    assert code == 0, err
    rel = dpmap.read_release(workdir / "map.geojson")
    assert rel.estimates is not None
    assert {"count_unbiased", "count_var"} <= set(
        json.loads((workdir / "map.geojson").read_text())["features"][0]["properties"]
    )
    # suppressed cells carry their unbiased values too
    assert rel.cells["suppressed"].any()
    assert rel.estimates.loc[rel.cells["suppressed"].to_numpy(), "count"].notna().all()


def test_dpmap_table_writes_a_press_table_with_its_statement(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *_categorised(workdir, "map.geojson", "--include-unbiased"))[0] == 0
    out = workdir / "press.csv"
    code, stdout, err = run(capsys, "table", workdir / "map.geojson", "--out", out)
    assert code == 0, err
    table = pd.read_csv(out, dtype=str)
    assert set(table["category"]) == {"bank", "microloan", "other", "total"}
    assert (table.loc[table["suppressed"] == "True", "count_display"] == "hidden").all()
    shown = table.loc[table["suppressed"] == "False", "count_display"].astype(int)
    assert (shown >= 0).all()
    assert set(table["count_reliability"]) <= {
        "reliable",
        "use with caution",
        "unreliable",
        "hidden",
    }
    assert (workdir / "press.manifest.json").is_file() and (workdir / "press.notes.txt").is_file()
    assert "ε = 1" in stdout
    # by zones
    zones = _zones_file(workdir)
    code, _, err = run(
        capsys,
        "table",
        workdir / "map.geojson",
        "--zones",
        zones,
        "--by",
        "name",
        "--out",
        workdir / "zones.csv",
        "--sum-unit",
        "1000",
    )
    assert code == 0, err
    z = pd.read_csv(workdir / "zones.csv")
    assert list(z["name"]) == ["west"] * 4 + ["east"] * 4
    assert (z["sum_display"] % 1000 == 0).all()
    # an existing output is refused, nothing else written
    code, _, err = run(capsys, "table", workdir / "map.geojson", "--out", out)
    assert code == 2 and err.count("\n") == 1 and "already exists" in err


def test_dpmap_aggregate_and_compare(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zones = _zones_file(workdir)
    for name in ("a.geojson", "b.geojson"):
        args = base(workdir, "--include-unbiased")
        args[args.index("--out") + 1] = str(workdir / name)
        assert run(capsys, *args)[0] == 0
    code, _, err = run(
        capsys,
        "aggregate",
        workdir / "a.geojson",
        "--zones",
        zones,
        "--by",
        "name",
        "--out",
        workdir / "agg_a.csv",
    )
    assert code == 0, err
    agg = pd.read_csv(workdir / "agg_a.csv")
    expected = dpmap.read_release(workdir / "a.geojson").aggregate_to(gpd_read(zones), by="name")
    assert list(agg["name"]) == ["west", "east"]
    assert np.allclose(agg["count"], expected["count"]) and np.allclose(
        agg["count_moe"], expected["count_moe"]
    )
    meta = json.loads((workdir / "agg_a.manifest.json").read_text())
    assert meta["by"] == "name" and meta["release_manifest"]["privacy"]["epsilon"] == 1.0
    # cell by cell
    code, _, err = run(
        capsys,
        "compare",
        workdir / "a.geojson",
        workdir / "b.geojson",
        "--out",
        workdir / "cmp.csv",
    )
    assert code == 0, err
    cmp = pd.read_csv(workdir / "cmp.csv")
    assert {"count_a", "count_b", "change", "change_moe", "significant"} <= set(cmp.columns)
    assert len(cmp) == len(dpmap.read_release(workdir / "a.geojson").cells)
    # zone by zone, from the releases or from two written roll-ups
    code, _, err = run(
        capsys,
        "compare",
        workdir / "a.geojson",
        workdir / "b.geojson",
        "--zones",
        zones,
        "--by",
        "name",
        "--out",
        workdir / "cmpz.csv",
    )
    assert code == 0, err
    assert (
        run(
            capsys,
            "aggregate",
            workdir / "b.geojson",
            "--zones",
            zones,
            "--by",
            "name",
            "--out",
            workdir / "agg_b.geojson",
        )[0]
        == 0
    )
    code, _, err = run(
        capsys,
        "compare",
        workdir / "agg_a.csv",
        workdir / "agg_b.geojson",
        "--out",
        workdir / "cmpr.csv",
    )
    assert code == 0, err
    pd.testing.assert_frame_equal(
        pd.read_csv(workdir / "cmpz.csv").drop(columns="geometry"),
        pd.read_csv(workdir / "cmpr.csv").drop(columns="geometry"),
    )
    # mistakes: one line, exit 2, nothing written
    code, _, err = run(
        capsys,
        "aggregate",
        workdir / "a.geojson",
        "--zones",
        zones,
        "--by",
        "nom",
        "--out",
        workdir / "bad.csv",
    )
    assert code == 2 and err.count("\n") == 1 and "'nom'" in err
    assert not (workdir / "bad.csv").exists() and not (workdir / "bad.manifest.json").exists()
    code, _, err = run(
        capsys, "compare", workdir / "a.geojson", workdir / "b.geojson", "--out", workdir / "x.xlsx"
    )
    assert code == 2 and ".xlsx" in err


def gpd_read(path: Path) -> Any:
    import geopandas as gpd

    return gpd.read_file(path)


def test_dpmap_plot_of_a_categorised_release_maps_the_total(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *_categorised(workdir))[0] == 0
    release_file = workdir / "map.geojson"
    code, _, err = run(capsys, "plot", release_file, "--png", workdir / "total.png")
    assert code == 0, err
    assert "mapping their total" in err and "--category NAME" in err
    assert (workdir / "total.png").stat().st_size > 1000
    code, _, err = run(
        capsys,
        "plot",
        release_file,
        "--category",
        "all",
        "--png",
        workdir / "all.png",
        "--html",
        workdir / "all.html",
    )
    assert code == 0 and err == "", err
    assert "total of all categories" in (workdir / "all.html").read_text()
    code, _, err = run(
        capsys, "plot", release_file, "--category", "bank", "--png", workdir / "bank.png"
    )
    assert code == 0 and err == "", err
    code, _, err = run(
        capsys, "plot", release_file, "--category", "nope", "--png", workdir / "nope.png"
    )
    assert code == 2 and "'nope'" in err and not (workdir / "nope.png").exists()


def test_total_map_values_add_up_the_categories(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dpmap.analysis.tables import category_total_cells

    # 300 more debtors in one place, so that one total is surely shown (its count is about
    # 300, its threshold about 20) while the sparse cells' totals are hidden
    points = pd.read_csv(workdir / "points.csv")
    crowd = points.head(300).assign(lat=39.2, lng=116.2, debtor_id=[f"C{i}" for i in range(300)])
    pd.concat([points, crowd]).to_csv(workdir / "points.csv", index=False)
    assert run(capsys, *_categorised(workdir, "map.geojson", "--include-unbiased"))[0] == 0
    rel = dpmap.read_release(workdir / "map.geojson")
    tot = category_total_cells(rel)
    est = rel.estimates
    assert est is not None
    sums = est.groupby("cell")["count"].sum()
    shown = ~tot["suppressed"].to_numpy()
    assert shown.any()
    assert np.allclose(tot.loc[shown, "count"], sums.loc[tot.loc[shown, "cell"]].to_numpy())
    assert tot.loc[~shown, "count"].isna().all()  # a hidden total is null on the map, not 0


def test_engine_help_shows_the_spark_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = run(capsys, "release", "--help")
    assert code == 0
    assert "pip install 'dpmap[spark]'" in out


def test_a_huge_epsilon_warns_on_stderr_in_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = base(workdir)
    args[args.index("--epsilon") + 1] = "1e6"
    code, _, err = run(capsys, *args)
    assert code == 0
    lines = [line for line in err.splitlines() if line.startswith("dpmap: warning:")]
    assert len(lines) == 1
    assert "ε = 1e+06 gives a 95% margin of ±0.00 per cell" in lines[0]
    assert "ε ≤ 10" in lines[0]


def test_did_you_mean_in_the_words_of_the_command_line(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    df = pd.read_csv(workdir / "points.csv").rename(columns={"lat": "latitude", "lng": "longitude"})
    df.to_csv(workdir / "renamed.csv", index=False)
    args = base(workdir)
    args[1] = str(workdir / "renamed.csv")
    code, _, err = run(capsys, *args)
    assert code == 2 and err.count("\n") == 1
    assert "did you mean 'latitude'? pass --lat latitude" in err
