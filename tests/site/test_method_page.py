"""The website's method page (dpmap.site.method): every fact from the manifests, the total ε
over the periods shown (separate releases add up, a panel counts once), the worked reading of
ε, and every piece of user or manifest text HTML-escaped."""

from __future__ import annotations

import html
import math
import re

import numpy as np
import pandas as pd
import pytest

import dpmap
from common import REGION, region_gdf
from dpmap.site.inputs import site_layers
from dpmap.site.layers import SiteLayer
from dpmap.site.method import belief_bounds, manifest_file, method_page, total_privacy

X0, Y0, X1, Y1 = REGION.bounds


def points(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "pid": [f"p{i}" for i in range(n)],
            "lng": rng.uniform(X0, X1, n),
            "lat": rng.uniform(Y0, Y1, n),
            "amount": rng.integers(0, 1000, n),
        }
    )


def text_of(page: str) -> str:
    """The page as a reader sees it: tags removed, entities decoded, spaces collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


@pytest.fixture(scope="module")
def months() -> list[dpmap.Release]:
    return [
        dpmap.release(
            points(300, k),
            region=region_gdf(),
            resolution=7,
            epsilon=0.5,
            delta=0.0,
            person="pid",
            value="amount",
            bounds=(0, 800),
            max_cells=2,
            period=f"2026-0{k + 1}",
            title="Debtors <b>&</b> 'co'",
        )
        for k in range(3)
    ]


@pytest.fixture(scope="module")
def panel() -> dpmap.Release:
    rng = np.random.default_rng(1)
    pts = points(600, 1)
    pts["when"] = pd.to_datetime("2026-01-01") + pd.to_timedelta(rng.integers(0, 89, 600), "D")
    return dpmap.release(
        pts,
        region=region_gdf(),
        resolution=7,
        epsilon=2.0,
        person="pid",
        time="when",
        periods=pd.period_range("2026-01", "2026-03", freq="M"),
        max_periods=2,
    )


def test_separate_releases_add_up_and_a_panel_counts_once(
    months: list[dpmap.Release], panel: dpmap.Release
) -> None:
    (monthly,) = site_layers(months)
    assert total_privacy(monthly.periods) == (pytest.approx(1.5), 0.0, 3)
    (panelled,) = site_layers(panel)
    assert total_privacy(panelled.periods) == (pytest.approx(2.0), 0.0, 1)
    page = text_of(method_page([monthly], title="t"))
    assert (
        "3 separate releases: their ε and δ add up (sequential composition) ε = 1.5, δ = 0" in page
    )
    page = text_of(method_page([panelled], title="t"))
    assert (
        "one release covering all its periods together (a panel: one ε for all) ε = 2, δ = 0"
        in page
    )
    both = text_of(method_page([monthly, panelled], title="t"))
    assert "ε = 3.5, δ = 0 for everything on this site" in both


def test_the_facts_come_from_the_manifests(months: list[dpmap.Release]) -> None:
    (layer,) = site_layers(months)
    page = method_page([layer], title="Household debt")
    text = text_of(page)
    m = months[0].manifest
    assert m["privacy"]["unit"] in text  # what is protected: the unit the manifest names
    assert m["privacy"]["neighbouring"] in text
    assert m["privacy"]["statement"] in text
    bounds = m["contribution_bounds"]
    assert bounds["max_cells"] == 2
    assert (
        f"at most 2 map cell(s), at most {bounds['max_records_per_cell']} record(s) per map "
        "cell, each value of 'amount' limited to the range 0 to 800" in text
    )
    threshold = m["suppression"]["threshold"]
    assert f"noisy count below {threshold:.4g} are hidden" in text
    assert "A hidden cell is not a zero" in text
    assert m["suppression"]["rule"] in text
    assert m["mean"] in text  # the caveats the manifests carry
    assert m["contribution_bounds"]["sum_limit"]["rule"] in text
    assert "37 ± 9" in text and "between 28 and 46" in text and "95%" in text
    for rel in months:
        date = rel.manifest["created"][:10]
        assert date in text
    assert m["versions"]["opendp"] in text and m["versions"]["dpmap"] in text
    links = re.findall(r'href="(downloads/manifests/[^"]+)"', page)
    assert links == [f"downloads/manifests/{manifest_file(layer, p)}" for p in layer.periods]
    assert links[0] == "downloads/manifests/cells-r7-2026-01.manifest.json"
    assert "not a count within the circle" in text
    assert "adds up the published numbers only" in text  # no unbiased estimates asked for


def test_unbiased_estimates_are_said_on_the_page(months: list[dpmap.Release]) -> None:
    (layer,) = site_layers(months, include_unbiased=True)
    assert layer.unbiased
    text = text_of(method_page([layer], title="t"))
    assert "adds up the unbiased noisy estimates of every cell, hidden ones included" in text
    assert "data/site-data.js" in text


def test_worked_reading_of_epsilon(months: list[dpmap.Release]) -> None:
    # ε-DP bounds the odds ratio by e^ε: from 10% (odds 1/9) to at most odds e^ε/9
    for eps in (0.1, 0.5, 1.0, 3.0):
        up, down = belief_bounds(eps)
        assert up / (1 - up) == pytest.approx(math.exp(eps) / 9)
        assert down / (1 - down) == pytest.approx(math.exp(-eps) / 9)
    (layer,) = site_layers(months)
    text = text_of(method_page([layer], title="t"))
    up, down = belief_bounds(0.5)
    assert (
        f"With ε = 0.5 (one release), nothing that release shows can move that belief above {up:.0%} or below {down:.0%}"
        in text
    )
    up, down = belief_bounds(1.5)
    assert f"(ε = 1.5) allow more: up to {up:.0%} or down to {down:.0%}" in text


def test_every_user_and_manifest_text_is_escaped(months: list[dpmap.Release]) -> None:
    (layer,) = site_layers(months)
    hostile = SiteLayer(
        key=layer.key, name='<img src=x onerror="alert(1)">', kind="cells", periods=layer.periods
    )
    page = method_page([hostile], title="</title><script>alert(2)</script>")
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    tags = set(re.findall(r"<([a-z0-9]+)", page))
    assert tags <= {
        "html",
        "head",
        "meta",
        "title",
        "link",
        "style",
        "body",
        "p",
        "a",
        "main",
        "h1",
        "h2",
        "section",
        "ul",
        "li",
        "strong",
        "em",
        "sup",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "blockquote",
    }, tags


def test_manifest_file_names_are_safe() -> None:
    from dpmap.site.layers import SitePeriod

    layer = SiteLayer(key="cells-r7", name="x", kind="cells", periods=())
    assert manifest_file(layer, SitePeriod(None, None)) == "cells-r7.manifest.json"  # type: ignore[arg-type]
    assert manifest_file(layer, SitePeriod("2026Q1", None)) == "cells-r7-2026Q1.manifest.json"  # type: ignore[arg-type]
    assert manifest_file(layer, SitePeriod("../../x y", None)) == "cells-r7-x-y.manifest.json"  # type: ignore[arg-type]
