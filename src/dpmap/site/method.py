"""The website's method page (``method.html``), in plain language, from the manifests.

Every fact on the page is read from the manifests of the releases shown (and worded with
the same helpers as the maps' captions, :mod:`dpmap.maps.layers`): what is protected, ε and
δ and a worked reading of them, the bounds on each person, suppression, the caveats the
manifests carry, how to read a margin, the dates, the versions, the total ε over the
periods shown, and links to the manifests themselves (``downloads/manifests/``). Every piece
of text that comes from a user or a manifest is HTML-escaped. Nothing is claimed that the
manifests do not say.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from typing import Any

from dpmap.maps.layers import (
    CaptionFacts,
    created_date,
    in_units,
    privacy_terms,
    suppression_note,
)
from dpmap.site.layers import SiteLayer, SitePeriod

__all__ = ["belief_bounds", "manifest_file", "method_page", "total_privacy"]

#: the folder of the site that holds every manifest, for download
MANIFESTS = "downloads/manifests"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def manifest_file(layer: SiteLayer, period: SitePeriod) -> str:
    """The file name of a period's manifest in ``downloads/manifests/``."""
    if period.label is None:
        return f"{layer.key}.manifest.json"
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", period.label).strip("-.") or "period"
    return f"{layer.key}-{label}.manifest.json"


def total_privacy(periods: Sequence[SitePeriod]) -> tuple[float, float, int]:
    """(ε, δ, separate releases) of the periods together, by sequential composition.

    The periods of one panel release are one measurement with one guarantee (counted
    once); separate releases of the same people add up their ε and their δ (basic
    sequential composition, an upper bound).
    """
    seen: dict[str, tuple[float, float]] = {}
    for i, p in enumerate(periods):
        m = p.release.manifest
        panel = (m.get("panel") or {}).get("fingerprint")
        key = f"panel:{panel}" if panel else f"release:{i}:{p.release.fingerprint}"
        privacy = m.get("privacy") or {}
        seen[key] = (float(privacy.get("epsilon", math.nan)), float(privacy.get("delta") or 0.0))
    eps = sum(e for e, _ in seen.values())
    delta = sum(d for _, d in seen.values())
    return eps, delta, len(seen)


def _terms(eps: float, delta: float) -> tuple[str, str]:
    """ε and δ as the maps show them."""
    shown = privacy_terms({"privacy": {"epsilon": eps, "delta": delta}})
    return shown[0], shown[1]


def method_page(layers: Sequence[SiteLayer], *, title: str) -> str:
    """The method page of a website showing ``layers`` (an HTML document, as text)."""
    sections = [
        _intro(layers),
        _protected(layers),
        _epsilon(layers),
        _bounds(layers),
        _hidden(layers),
        _margins(layers),
        _around(layers),
        _caveats(layers),
        _releases(layers),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>How this map was made — {_e(title)}</title>\n"
        '<link rel="stylesheet" href="assets/site.css">\n'
        "<style>body{max-width:46em;margin:0 auto;padding:1em;font:16px/1.5 system-ui,"
        "sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;"
        "padding:.2em .5em;text-align:left}</style>\n</head>\n<body>\n"
        f'<p><a href="index.html">← Back to the map</a></p>\n<main>\n'
        f'<h1>How this map was made</h1>\n<p class="site-title">{_e(title)}</p>\n'
        + "\n".join(sections)
        + "\n</main>\n</body>\n</html>\n"
    )


def _section(ident: str, heading: str, body: str) -> str:
    return f'<section id="{ident}">\n<h2>{_e(heading)}</h2>\n{body}\n</section>'


def _period_words(layer: SiteLayer) -> str:
    labels = [p.label for p in layer.periods]
    if len(labels) == 1:
        return f"period {labels[0]}" if labels[0] is not None else "one release"
    return f"{len(labels)} periods, {labels[0]} to {labels[-1]}"


def _intro(layers: Sequence[SiteLayer]) -> str:
    items = "".join(
        f"<li><strong>{_e(layer.name)}</strong>: {_e(_period_words(layer))}</li>"
        for layer in layers
    )
    return _section(
        "what",
        "What this site shows",
        "<p>Every number on this site was published with <em>differential privacy</em>: "
        "random noise was added to each number before it left the agency, so that no "
        "number reveals whether any one person is in the data. The map, the "
        '"around here" answers and the table are all computed from these published '
        "numbers only; nothing finer than a map cell (or zone) is ever shown.</p>\n"
        f"<ul>{items}</ul>",
    )


def _manifests(layers: Sequence[SiteLayer]) -> list[dict[str, Any]]:
    return [p.release.manifest for layer in layers for p in layer.periods]


def _distinct(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v is not None and v not in out:
            out.append(v)
    return out


def _protected(layers: Sequence[SiteLayer]) -> str:
    manifests = _manifests(layers)
    units = _distinct([(m.get("privacy") or {}).get("unit") for m in manifests])
    neighbours = _distinct([(m.get("privacy") or {}).get("neighbouring") for m in manifests])
    statements = _distinct([(m.get("privacy") or {}).get("statement") for m in manifests])
    body = (
        "<p>The protection is for <strong>one person, with all of their records</strong>: "
        f"the unit named by the releases is the {_e(' / '.join(units) or 'person')}. The "
        "guarantee compares the data with and without one such person: "
        f"“{_e(' / '.join(neighbours) or 'one person')}”.</p>\n"
    )
    quoted = "".join(f"<blockquote>{_e(s)}</blockquote>\n" for s in statements[:3])
    more = (
        f"<p>(and {len(statements) - 3} more such statements, one per release: see the "
        "manifests below)</p>"
        if len(statements) > 3
        else ""
    )
    return _section(
        "protected",
        "What is protected",
        body + "<p>In the releases' own words:</p>\n" + quoted + more,
    )


def _epsilon(layers: Sequence[SiteLayer]) -> str:
    rows = []
    for layer in layers:
        eps, delta, n = total_privacy(layer.periods)
        e_text, d_text = _terms(eps, delta)
        per = sorted({privacy_terms(p.release.manifest)[:2] for p in layer.periods})
        each = "; ".join(f"ε = {e}, δ = {d}" for e, d in per)
        if n == 1:
            how = (
                "one release covering all its periods together (a panel: one ε for all)"
                if len(layer.periods) > 1
                else "one release"
            )
        else:
            how = f"{n} separate releases: their ε and δ add up (sequential composition)"
        rows.append(
            f"<tr><td>{_e(layer.name)}</td><td>{_e(each)}</td><td>{_e(how)}</td>"
            f"<td>ε = {_e(e_text)}, δ = {_e(d_text)}</td></tr>"
        )
    eps_all, delta_all, _ = total_privacy([p for layer in layers for p in layer.periods])
    e_all, d_all = _terms(eps_all, delta_all)
    body = (
        "<p><strong>ε (epsilon)</strong> limits how much any one person can change what is "
        "published: whatever this site shows is at most e<sup>ε</sup> times as likely with "
        "that person's records as without them. <strong>δ (delta)</strong> is a small "
        "probability with which that limit may fail (δ = 0: never). Smaller is more "
        "private.</p>\n<table><thead><tr><th>Layer</th><th>Each release</th>"
        "<th>How they combine</th><th>Total over the periods shown</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>\n"
    )
    if len(layers) > 1:
        body += (
            f"<p>If the layers are drawn from the same people's records, their guarantees add "
            f"up as well: ε = {_e(e_all)}, δ = {_e(d_all)} for everything on this site.</p>\n"
        )
    one = max(
        float((p.release.manifest.get("privacy") or {}).get("epsilon", math.nan))
        for layer in layers
        for p in layer.periods
    )
    return _section(
        "epsilon", "ε and δ: how strong the protection is", body + _worked(one, eps_all)
    )


def belief_bounds(eps: float, prior: float = 0.10) -> tuple[float, float]:
    """How far ε-DP lets a belief about one person move: from ``prior`` to at most
    ``prior·e^ε / (prior·e^ε + 1 − prior)`` and at least the same with −ε (the odds change
    by at most a factor e^ε, whatever else is known)."""
    up = prior * math.exp(eps) / (prior * math.exp(eps) + 1 - prior)
    down = prior * math.exp(-eps) / (prior * math.exp(-eps) + 1 - prior)
    return up, down


def _percent(x: float) -> str:
    """A share in words precise enough not to round to 0% or 100%."""
    for digits in range(0, 6):
        text = f"{100 * x:.{digits}f}"
        if 0 < float(text) < 100:
            return f"{text}%"
    return f"{100 * x:.6f}%"


def _worked(one: float, total: float) -> str:
    """A worked reading of ε: how far any belief about one person can move, for one release
    (``one``, the largest ε of a release shown) and for everything shown (``total``)."""
    if not (math.isfinite(one) and one > 0):
        return ""
    up, down = belief_bounds(one)
    text = (
        "<p><em>A worked reading.</em> Suppose someone believed, before seeing this site, "
        "that there was a 10% chance that a particular neighbour has a record in the data. "
        f"With ε = {_e(_terms(one, 0.0)[0])} (one release), nothing that release shows can "
        f"move that belief above {_percent(up)} or below {_percent(down)}, whatever else "
        "they know (except with the small probability δ)."
    )
    if math.isfinite(total) and total > one:
        up, down = belief_bounds(total)
        text += (
            f" All the releases shown together (ε = {_e(_terms(total, 0.0)[0])}) allow more: "
            f"up to {_percent(up)} or down to {_percent(down)}; the protection weakens with "
            "every release of the same people."
        )
    return text + "</p>"


def _bound_words(m: dict[str, Any]) -> str:
    b = m.get("contribution_bounds") or {}
    place = "zone" if in_units("hexagon", m) == "zone" else "map cell"
    parts = []
    if b.get("max_periods") is not None:
        parts.append(f"at most {b['max_periods']} period(s)")
    if b.get("max_cells") is not None:
        per = " per period" if b.get("max_periods") is not None else ""
        parts.append(f"at most {b['max_cells']} {place}(s){per}")
    if b.get("max_records_per_cell") is not None:
        parts.append(f"at most {b['max_records_per_cell']} record(s) per {place}")
    if b.get("value") and b.get("bounds"):
        lo, hi = b["bounds"]
        parts.append(f"each value of {b['value']!r} limited to the range {lo} to {hi}")
    text = "Each person counts in " + ", ".join(parts) if parts else ""
    if b.get("count_counts"):
        text += f". A count counts {b['count_counts']}"
    return text + "." if text else ""


def _bounds(layers: Sequence[SiteLayer]) -> str:
    items = []
    for layer in layers:
        words = _distinct([_bound_words(p.release.manifest) for p in layer.periods])
        items += [f"<li><strong>{_e(layer.name)}</strong>: {_e(w)}</li>" for w in words if w]
    return _section(
        "bounds",
        "The limits on each person",
        "<p>Before any noise is added, each person's contribution is limited, so that "
        "nobody can stand out however many records they have. Records beyond these limits "
        "are left out of the numbers.</p>\n"
        f"<ul>{''.join(items)}</ul>",
    )


def _hidden(layers: Sequence[SiteLayer]) -> str:
    items = []
    for layer in layers:
        m = layer.periods[0].release.manifest
        note = suppression_note(m)
        rule = (m.get("suppression") or {}).get("rule")
        if note is None:
            items.append(f"<li><strong>{_e(layer.name)}</strong>: nothing is hidden.</li>")
            continue
        detail = f" (the rule: {_e(rule)})" if rule else ""
        items.append(
            f"<li><strong>{_e(layer.name)}</strong>: {_e(in_units(note, m))}{detail}.</li>"
        )
    return _section(
        "hidden",
        "Hidden cells",
        "<p>Where a noisy count is small, the number is mostly noise, and showing it would "
        "make empty places look populated by chance. Such cells are <strong>hidden</strong> "
        "(hatched on the map, marked in the table). <strong>A hidden cell is not a zero</strong>: "
        "it may hold a few records, or none.</p>\n"
        f"<ul>{''.join(items)}</ul>",
    )


def _margins(layers: Sequence[SiteLayer]) -> str:
    texts = _distinct([m.get("margins") for m in _manifests(layers)])
    quoted = "".join(f"<p>The releases say: “{_e(t)}”.</p>\n" for t in texts if isinstance(t, str))
    return _section(
        "margins",
        "How to read a margin",
        "<p>Every number comes with a 95% margin of error, written like "
        "<strong>37 ± 9</strong>. It means: the published number is the true number plus "
        "random noise, and for 95 out of 100 numbers published this way the true number lies "
        "within the margin, here between 28 and 46. The margin covers the added noise only; "
        "records left out by the limits on each person are not in the true number "
        "either.</p>\n" + quoted,
    )


def _around(layers: Sequence[SiteLayer]) -> str:
    items = []
    for layer in layers:
        if layer.unbiased:
            text = (
                "adds up the unbiased noisy estimates of every cell, hidden ones included. "
                "The site's data file (data/site-data.js) carries these estimates: they are "
                "noisy values of the same releases (no further privacy cost), so a reader of "
                "that file can see the noisy estimate behind a hidden cell."
            )
        else:
            text = (
                "adds up the published numbers only; where a cell it needs is hidden, it "
                "says so instead of answering (the estimates behind hidden cells were not "
                "published with this site)."
            )
        items.append(f"<li><strong>{_e(layer.name)}</strong>: {_e(text)}</li>")
    return _section(
        "around",
        '"Around here"',
        "<p>A click on the map (or a typed coordinate) adds up the <strong>whole cells</strong> "
        "that overlap a circle around that point. The answer is about those cells, not a "
        "count within the circle, and it never shows anything finer than a cell.</p>\n"
        f"<ul>{''.join(items)}</ul>",
    )


def _caveats(layers: Sequence[SiteLayer]) -> str:
    found: list[str] = []
    for m in _manifests(layers):
        if isinstance(m.get("mean"), str):
            found.append(f"Means: {m['mean']}.")
        sum_limit = (m.get("contribution_bounds") or {}).get("sum_limit")
        if isinstance(sum_limit, dict) and sum_limit.get("rule"):
            found.append(f"Sums: {sum_limit['rule']}.")
        value_rule = (m.get("contribution_bounds") or {}).get("value_rule")
        if value_rule:
            found.append(f"Values are {value_rule}.")
        noise = in_units(CaptionFacts.noise, m)
        found.append(noise[:1].upper() + noise[1:] + ".")
    items = "".join(f"<li>{_e(c)}</li>" for c in _distinct(found))
    return _section("caveats", "Caveats", f"<ul>{items}</ul>")


def _releases(layers: Sequence[SiteLayer]) -> str:
    rows = []
    for layer in layers:
        for p in layer.periods:
            m = p.release.manifest
            eps, delta, _ = privacy_terms(m)
            versions = m.get("versions") or {}
            name = manifest_file(layer, p)
            rows.append(
                f"<tr><td>{_e(layer.name)}</td><td>{_e(p.label or '—')}</td>"
                f"<td>{_e(created_date(m.get('created', '')))}</td>"
                f"<td>ε = {_e(eps)}, δ = {_e(delta)}</td>"
                f"<td>{_e(versions.get('dpmap', '?'))}</td><td>{_e(versions.get('opendp', '?'))}</td>"
                f'<td><a href="{_e(MANIFESTS)}/{_e(name)}" download>{_e(name)}</a></td></tr>'
            )
    return _section(
        "releases",
        "The releases and their manifests",
        "<p>Each release's manifest is the full technical record of how it was made (every "
        "parameter, the noise, the versions). Download them here.</p>\n"
        "<table><thead><tr><th>Layer</th><th>Period</th><th>Released</th><th>Privacy</th>"
        "<th>dpmap</th><th>OpenDP</th><th>Manifest</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>",
    )
