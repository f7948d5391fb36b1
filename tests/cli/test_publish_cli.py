"""``dpmap publish`` and ``dpmap.publish``: the site's folder written whole or not at all.

The front end (index.html, assets/, data/site-data.js) is sitedata's part of the site; here it
is replaced by a stub (``dpmap.site.build.front_end``) so that these tests check what
publish itself does: validation first, a temporary sibling folder, the method page, the
manifests, the marker, the swap, and every bad input refused with one line, exit status 2 and
nothing changed at --out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import dpmap
from common import REGION, region_gdf
from dpmap.cli.app import main
from dpmap.errors import DataFileError
from dpmap.site import build
from dpmap.site.layers import SiteLayer

X0, Y0, X1, Y1 = REGION.bounds
MONTHS = [f"2026-{m:02d}" for m in range(1, 4)]


def points(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "pid": [f"p{i}" for i in range(n)],
            "lng": rng.uniform(X0, X1, n),
            "lat": rng.uniform(Y0, Y1, n),
        }
    )


def write(folder: Path, name: str, period: str | None, seed: int = 0, **kw: Any) -> Path:
    opts = {"region": region_gdf(), "resolution": 7, **kw}
    rel = dpmap.release(points(300, seed), epsilon=1.0, person="pid", period=period, **opts)
    return rel.to_file(folder / name, include_unbiased=True)


class Stub:
    """A stand-in front end that records what publish handed it."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    def site_data(self, layers: Any, *, title: str, noun: str, tiles: Any) -> dict[str, Any]:
        assert all(isinstance(layer, SiteLayer) for layer in layers)
        self.calls.append({"layers": list(layers), "title": title, "noun": noun, "tiles": tiles})
        return {"format": 1, "title": title, "layers": [layer.key for layer in layers]}

    def write_front_end(self, folder: Path, data: dict[str, Any], *, title: str) -> None:
        assert folder.is_dir() and not (folder / build.MARKER).exists()
        (folder / "index.html").write_text(f"<title>{title}</title>", encoding="utf-8")
        (folder / "data").mkdir()
        (folder / "data" / "site-data.js").write_text(
            "window.DPMAP_SITE = " + json.dumps(data) + ";", encoding="utf-8"
        )
        if self.fail is not None:
            raise self.fail


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Stub:
    s = Stub()
    monkeypatch.setattr(build, "front_end", lambda: (s.site_data, s.write_front_end))
    return s


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    w = tmp_path_factory.mktemp("releases")
    out = {m: write(w, f"{m}.geojson", m, seed=k) for k, m in enumerate(MONTHS)}
    out["r8"] = write(w, "r8.geojson", "2026-04", resolution=8)
    out["hier"] = write(w, "hier.geojson", "2026-04", resolution=[6, 7])
    out["dup"] = write(w, "dup.geojson", "2026-01", seed=7)
    out["nomanifest"] = write(w, "nomanifest.geojson", "2026-05")
    out["nomanifest"].with_name("nomanifest.manifest.json").unlink()
    bad = w / "garbage.geojson"
    bad.write_text("{this is not json", encoding="utf-8")
    bad.with_name("garbage.manifest.json").write_text("{}", encoding="utf-8")
    out["garbage"] = bad
    return out


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file and folder under ``folder`` (hidden ones too) with its bytes."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def publish_args(out: Path, *files: Path, title: str = "Debt, Hebei 2026") -> list[object]:
    return ["publish", *files, "--out", out, "--title", title, "--noun", "debtors"]


def test_publish_writes_the_whole_site(
    tmp_path: Path, files: dict[str, Path], stub: Stub, capsys: Any
) -> None:
    out = tmp_path / "site"
    months = [files[m] for m in reversed(MONTHS)]
    code, stdout, err = run(capsys, *publish_args(out, *months))
    assert code == 0, err
    assert "wrote the site" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no temporary folder left
    names = set(snapshot(out))
    assert {"index.html", "method.html", "data/site-data.js", build.MARKER} <= names
    marker = json.loads((out / build.MARKER).read_text())
    assert marker["dpmap_site"] == 1 and marker["dpmap_version"] == dpmap.__version__
    (call,) = stub.calls
    assert call["title"] == "Debt, Hebei 2026" and call["noun"] == "debtors"
    assert call["tiles"] is None
    (layer,) = call["layers"]
    assert [p.label for p in layer.periods] == MONTHS and not layer.unbiased
    for m in MONTHS:  # every manifest, for download, as the release holds it
        written = json.loads((out / f"downloads/manifests/cells-r7-{m}.manifest.json").read_text())
        assert written == dpmap.read_release(files[m]).manifest
    method = (out / "method.html").read_text()
    assert "Debt, Hebei 2026" in method and "cells-r7-2026-02.manifest.json" in method
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # readable by a web server


def test_a_site_is_replaced_and_a_failed_build_changes_nothing(
    tmp_path: Path, files: dict[str, Path], stub: Stub, capsys: Any, monkeypatch: Any
) -> None:
    out = tmp_path / "site"
    assert run(capsys, *publish_args(out, files["2026-01"]))[0] == 0
    (out / "stale.txt").write_text("from an older site")
    code, _, err = run(
        capsys,
        *publish_args(out, files["2026-01"], files["2026-02"], title="Second"),
        "--include-unbiased",
        "--tiles",
        "OpenStreetMap.Mapnik",
    )
    assert code == 0, err
    assert not (out / "stale.txt").exists()
    assert "Second" in (out / "index.html").read_text()
    assert stub.calls[-1]["layers"][0].unbiased is True
    assert stub.calls[-1]["tiles"] == {  # resolved, as the front end takes it
        "url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        "attribution": "(C) OpenStreetMap contributors",
    }
    before = snapshot(tmp_path)
    from dpmap.errors import SpecError

    for fail in (SpecError("the front end refused this"), RuntimeError("a crash half-way")):
        stub.fail = fail
        with pytest.raises(type(fail)):
            dpmap.publish([files["2026-03"]], out, title="Third")
        assert snapshot(tmp_path) == before  # the old site untouched, no temporary folder
    stub.fail = SpecError("the front end refused this")
    code, _, err = run(capsys, *publish_args(out, files["2026-03"], title="Third"))
    assert code == 2 and err.strip().startswith("dpmap: error: the front end refused")
    assert snapshot(tmp_path) == before


def test_layers_and_trends_from_the_command_line(
    tmp_path: Path, files: dict[str, Path], stub: Stub, capsys: Any
) -> None:
    trend = tmp_path / "trend.csv"
    months = [files[m] for m in MONTHS]
    assert run(capsys, "trend", *months, "--out", trend)[0] == 0
    code, _, err = run(
        capsys,
        "publish",
        "--layer",
        "Months=" + ",".join(map(str, months)),
        "--layer",
        f"Finer={files['r8']}",
        "--trend",
        trend,
        "--out",
        tmp_path / "site",
        "--title",
        "Two layers",
    )
    assert code == 0, err
    months_layer, finer = stub.calls[-1]["layers"]
    assert (months_layer.name, finer.name) == ("Months", "Finer")
    assert months_layer.trend is not None and finer.trend is None
    assert len(months_layer.trend) == len(pd.read_csv(trend))


def test_the_python_function_is_dpmap_publish() -> None:
    assert dpmap.publish is build.publish
    assert "publish" in dpmap.__all__


BAD = {
    "existing folder that is not a site": (
        lambda f, out: [f["2026-01"]],
        "exists and is not a dpmap site",
    ),
    "missing manifest": (lambda f, out: [f["nomanifest"]], "no manifest"),
    "mixed designs": (lambda f, out: [f["2026-01"], f["hier"]], "differ in design"),
    "mixed resolutions": (lambda f, out: [f["2026-01"], f["r8"]], "differ in resolution"),
    "duplicate periods": (lambda f, out: [f["2026-01"], f["dup"]], "are both period '2026-01'"),
    "unreadable file": (lambda f, out: [f["garbage"]], "garbage.geojson"),
    "missing file": (lambda f, out: [out.parent / "nope.geojson"], "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_in_one_line_and_changes_nothing(
    tmp_path: Path, files: dict[str, Path], stub: Stub, capsys: Any, case: str
) -> None:
    out = tmp_path / "site"
    out.mkdir()
    if case == "existing folder that is not a site":
        (out / "report.pdf").write_text("the agency's own file")
    else:  # a site from before: it must survive every refusal
        assert run(capsys, *publish_args(out, files["2026-02"]))[0] == 0
    before = snapshot(tmp_path)
    inputs, message = BAD[case]
    code, stdout, err = run(capsys, *publish_args(out, *inputs(files, out)))
    assert code == 2, (stdout, err)
    assert err.count("\n") == 1 and err.startswith("dpmap: error: "), err
    assert message in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--title", " "], "--title"),
        (["--tiles", "NoSuchTiles"], "unknown tiles 'NoSuchTiles'"),
        (["--tiles", "https://tiles.example/a.png"], "lacks {z}, {x} or {y}"),
        (["--layer", "NoEquals"], "is not NAME=FILE"),
        (["--noun", ""], "noun must be a non-empty text"),
    ],
)
def test_bad_options_exit_2_before_anything_is_read(
    tmp_path: Path, files: dict[str, Path], stub: Stub, capsys: Any, extra: list[str], message: str
) -> None:
    before = snapshot(tmp_path)
    args = [*publish_args(tmp_path / "site", files["2026-01"]), *extra]
    code, _, err = run(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert snapshot(tmp_path) == before and not stub.calls


def test_out_that_is_a_file_or_in_a_missing_folder(tmp_path: Path, files: dict[str, Path]) -> None:
    a_file = tmp_path / "site"
    a_file.write_text("x")
    with pytest.raises(DataFileError, match="exists and is not a folder"):
        dpmap.publish([files["2026-01"]], a_file, title="t")
    with pytest.raises(DataFileError, match="does not exist"):
        dpmap.publish([files["2026-01"]], tmp_path / "no" / "site", title="t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


@pytest.mark.slow  # a small demo release and its PNG map (~8 s)
def test_the_demo_publishes_its_site_with_the_unbiased_estimates(
    tmp_path: Path, stub: Stub, capsys: Any
) -> None:
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "demo", "--out", out, "--rows", 3000, "--resolution", 5)
    assert code == 0, err
    assert f"website: {out / 'site' / 'index.html'}" in stdout
    (call,) = stub.calls
    (layer,) = call["layers"]
    assert layer.unbiased is True and call["noun"] == "debtors"
    method = (out / "site" / "method.html").read_text()
    assert "adds up the unbiased noisy estimates of every cell, hidden ones included" in method
    # a folder there that is not a site stops the demo before anything is written
    other = tmp_path / "other"
    (other / "site").mkdir(parents=True)
    (other / "site" / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "demo", "--out", other, "--rows", 3000, "--resolution", 5)
    assert code == 2 and "is not a dpmap site" in err
    assert sorted(p.name for p in other.iterdir()) == ["site"]


def test_an_input_inside_the_site_folder_is_refused(
    tmp_path: Path, files: dict[str, Path], stub: Stub, capsys: Any, monkeypatch: Any
) -> None:
    out = tmp_path / "site"
    assert run(capsys, *publish_args(out, files["2026-01"]))[0] == 0
    inside = write(out, "2026-02.geojson", "2026-02")  # a release kept in the site's folder
    before = snapshot(tmp_path)
    code, _, err = run(capsys, *publish_args(out, files["2026-01"], inside))
    assert code == 2 and "is inside the output folder" in err and err.count("\n") == 1
    monkeypatch.chdir(out)  # --out . names the same folder
    code, _, err = run(capsys, *publish_args(Path("."), Path("2026-02.geojson")))
    assert code == 2 and "is inside the output folder" in err
    assert snapshot(tmp_path) == before
