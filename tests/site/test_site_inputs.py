"""The website's inputs (dpmap.site.inputs.site_layers): releases and files grouped into layers,
periods in order, the mixes that must be said explicitly refused in one line, the unbiased
estimates only where asked for and held, and trends matched to their layer."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

import dpmap
from common import REGION, region_gdf
from dpmap.cli.app import main
from dpmap.errors import DpmapError, ReleaseFormatError, SpecError
from dpmap.site.inputs import site_layers

X0, Y0, X1, Y1 = REGION.bounds
XM = (X0 + X1) / 2
ZONES = gpd.GeoDataFrame(
    {"name": ["west", "east"]},
    geometry=[shapely.box(X0, Y0, XM, Y1), shapely.box(XM, Y0, X1, Y1)],
    crs="EPSG:4326",
)
MONTHS = [f"2026-{m:02d}" for m in range(1, 13)]


def points(n: int, seed: int, *, value: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "pid": [f"p{i}" for i in range(n)],
            "lng": rng.uniform(X0, X1, n),
            "lat": rng.uniform(Y0, Y1, n),
        }
    )
    if value:
        df["amount"] = rng.integers(0, 1000, n)
    return df


def monthly(period: str | None, seed: int = 0, **kw: Any) -> dpmap.Release:
    opts: dict[str, Any] = {"region": region_gdf(), "resolution": 7, **kw}
    if "zones" in opts:
        opts.pop("region"), opts.pop("resolution")
    return dpmap.release(
        points(300, seed, value="value" in kw), epsilon=1.0, person="pid", period=period, **opts
    )


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Twelve monthly cell releases (with their unbiased estimates) and a district release."""
    w = tmp_path_factory.mktemp("year")
    files = [
        monthly(m, seed=k).to_file(w / f"{m}.geojson", include_unbiased=True)
        for k, m in enumerate(MONTHS)
    ]
    districts = monthly("2026", seed=99, zones=ZONES, by="name").to_file(
        w / "districts-2026.geojson"
    )
    return {"folder": w, "months": files, "districts": districts}


def test_months_and_districts_form_two_layers_in_time_order(year: dict[str, Any]) -> None:
    files = [*year["months"], year["districts"]]
    random.Random(3).shuffle(files)  # the order of the command line is not the order in time
    layers = site_layers(files)
    assert sorted((layer.kind, layer.key, layer.name) for layer in layers) == [
        ("cells", "cells-r7", "H3 cells, resolution 7"),
        ("zones", "zones-name", "2 zones (by name)"),
    ]
    cells = next(layer for layer in layers if layer.kind == "cells")
    zones = next(layer for layer in layers if layer.kind == "zones")
    assert [p.label for p in cells.periods] == MONTHS
    for p in cells.periods:  # each period is the release of that file
        assert p.release.manifest["period"] == p.label
        written = dpmap.read_release(year["folder"] / f"{p.label}.geojson")
        assert p.release.fingerprint == written.fingerprint
    assert [p.label for p in zones.periods] == ["2026"]
    assert set(zones.periods[0].release.cells["name"]) == {"west", "east"}
    assert not cells.unbiased and not zones.unbiased  # not asked for


def test_a_panel_becomes_one_period_per_public_period() -> None:
    rng = np.random.default_rng(1)
    pts = points(600, 1)
    pts["when"] = pd.to_datetime("2026-01-01") + pd.to_timedelta(rng.integers(0, 89, 600), "D")
    periods = pd.period_range("2026-01", "2026-03", freq="M")
    panel = dpmap.release(
        pts,
        region=region_gdf(),
        resolution=7,
        epsilon=1.0,
        person="pid",
        time="when",
        periods=periods,
        max_periods=3,
    )
    (layer,) = site_layers(panel)
    assert [p.label for p in layer.periods] == ["2026-01", "2026-02", "2026-03"]
    for p in layer.periods:
        assert p.release.periods is None  # an ordinary release of one period
        assert p.release.fingerprint == panel.at(p.label).fingerprint
    assert layer.unbiased is False
    (asked,) = site_layers([panel], include_unbiased=True)
    assert asked.unbiased is True  # an in-memory release holds its unbiased estimates


def test_unbiased_estimates_only_when_asked_and_held(year: dict[str, Any]) -> None:
    cells, zones = sorted(
        site_layers([*year["months"][:2], year["districts"]], include_unbiased=True),
        key=lambda layer: layer.kind,
    )
    assert cells.unbiased is True  # files written with include_unbiased=True
    assert zones.unbiased is False  # a file written without them cannot carry them


@pytest.mark.parametrize(
    ("other", "what"),
    [
        ({"resolution": 8}, "resolution"),
        ({"resolution": [6, 7]}, "design"),
        ({"region": shapely.box(X0, Y0, X1 + 0.05, Y1)}, "region"),
        ({"value": "amount", "bounds": (0, 1000)}, "statistics"),
    ],
)
def test_mixed_releases_in_one_layer_are_refused_in_one_line(
    tmp_path: Path, other: dict[str, Any], what: str
) -> None:
    a = monthly("2026-01").to_file(tmp_path / "a.geojson")
    b = monthly("2026-02", **other).to_file(tmp_path / "b.geojson")
    with pytest.raises(SpecError) as err:
        site_layers([a, b])
    text = one_line(err.value)
    assert f"a.geojson and b.geojson differ in {what} (" in text
    assert "--layer NAME=FILE" in text
    # said explicitly, the same files are two layers
    layers = site_layers(None, layers={"January": [a], "February": [b]})
    assert [layer.name for layer in layers] == ["January", "February"]
    assert [layer.key for layer in layers] == ["january", "february"]


def test_duplicate_and_missing_period_labels_are_refused(tmp_path: Path) -> None:
    a = monthly("2026-01").to_file(tmp_path / "a.geojson")
    b = monthly("2026-01", seed=1).to_file(tmp_path / "b.geojson")
    with pytest.raises(SpecError) as err:
        site_layers([a, b])
    assert "a.geojson and b.geojson are both period '2026-01'" in one_line(err.value)
    c = monthly(None).to_file(tmp_path / "c.geojson")
    with pytest.raises(SpecError) as err:
        site_layers([a, c])
    assert "c.geojson has no period label" in one_line(err.value)
    (single,) = site_layers([c])  # one release without a period is a layer of one period
    assert [p.label for p in single.periods] == [None]


def test_missing_manifest_unreadable_file_and_bad_arguments(tmp_path: Path) -> None:
    a = monthly("2026-01").to_file(tmp_path / "a.geojson")
    (tmp_path / "a.manifest.json").unlink()  # the GeoJSON still embeds one: not enough
    with pytest.raises(ReleaseFormatError) as err:
        site_layers([a])
    assert "no manifest" in one_line(err.value) and "a.manifest.json" in str(err.value)
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    (tmp_path / "bad.manifest.json").write_text("{}")
    with pytest.raises(DpmapError) as err:
        site_layers([bad])
    assert "bad.geojson" in one_line(err.value)
    with pytest.raises(SpecError, match="no releases to publish"):
        site_layers([])
    with pytest.raises(SpecError, match="layers="):
        site_layers([a], layers={"x": [a]})
    with pytest.raises(SpecError, match="is a int"):
        site_layers([3])


def test_trends_are_matched_to_their_layer(year: dict[str, Any], capsys: Any) -> None:
    months, districts = year["months"], year["districts"]
    rels = [dpmap.read_release(f) for f in months]
    table = dpmap.trend(rels)
    layers = site_layers([*months, districts], trends=table)
    cells = next(layer for layer in layers if layer.kind == "cells")
    zones = next(layer for layer in layers if layer.kind == "zones")
    assert cells.trend is table and zones.trend is None
    out = year["folder"] / "trend.csv"
    assert main(["trend", *map(str, months), "--out", str(out)]) == 0, capsys.readouterr().err
    (layer,) = site_layers(months, trends=out)
    assert layer.trend["slope"].to_numpy() == pytest.approx(table["slope"].to_numpy())
    assert list(layer.trend["cell"]) == list(table["cell"])
    with pytest.raises(SpecError) as err:  # twelve months' trend on a layer of two months
        site_layers(months[:2], trends=table)
    assert "covers the periods 2026-01 to 2026-12" in one_line(err.value)
    with pytest.raises(SpecError) as err:  # no layer has these cells
        site_layers([districts], trends=table)
    assert "matches no layer" in one_line(err.value)
    # one trend per cell on the map: the rows of two categories would overwrite each other
    both = pd.concat([table.assign(category="bank"), table.assign(category="utility")])
    with pytest.raises(SpecError) as err:
        site_layers(months, trends=both)
    assert one_line(err.value) == (
        "the trend table 0 has a row per cell and category (2 categories); the site shows one "
        "trend per cell or zone: pass the rows of one category, e.g. "
        "table[table['category'] == 'bank']"
    )
    (layer,) = site_layers(months, trends=both[both["category"] == "utility"])
    assert list(layer.trend["category"].unique()) == ["utility"]
    meta = json.loads(out.with_name("trend.manifest.json").read_text())
    meta.pop("dpmap_trend")
    out.with_name("trend.manifest.json").write_text(json.dumps(meta))
    with pytest.raises(ReleaseFormatError, match="not a trend written by dpmap trend"):
        site_layers(months, trends=out)


def test_the_default_noun_is_what_the_manifests_say_a_count_counts() -> None:
    """An answer must not call people records, nor records people: without noun=, the site
    says "people" only when every layer counts each person at most once per cell."""
    from dpmap.site.build import default_noun

    people = monthly(None)  # person="pid", one record per cell: a count counts people
    records = monthly(None, max_records_per_cell=3)
    assert default_noun(site_layers([people])) == "people"
    assert default_noun(site_layers([records])) == "records"
    assert default_noun(site_layers([], layers={"a": [people], "b": [records]})) == ("records")
