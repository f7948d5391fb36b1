"""Press-ready tables of a release or of a roll-up: rounded, non-negative, flagged, totalled.

A published release is a table of *noisy* numbers: unbiased, so they may be fractional
(least-squares estimates) or negative, and each has a 95% margin of error. That is what
an analyst needs and what a press office cannot print. :func:`press_table` turns the
cells of a :class:`~dpmap.Release` (or the zones of :func:`dpmap.analysis.aggregate_to`)
into a table a press office can use, keeping the unbiased values beside it:

Rounding (stated in every table's notes and manifest)
    Counts: to whole records, and never below 0 (``count_display``); their margins are
    rounded *up* to whole records (``count_moe_display``), so a margin is never understated.
    Sums and means: to three significant figures of the larger of the value and its margin
    (no more digits than the margin supports), or to a unit you choose (``sum_unit=1000``:
    thousands); sums are never shown below 0 (means already lie within the public bounds);
    margins are rounded up to the same unit.

Reliability
    From the coefficient of variation, CV = margin ÷ 1.96 ÷ estimate (the estimate's
    standard error over the estimate; the margin is a 95% margin), in the three bands
    commonly used with the US Census Bureau's American Community Survey estimates:
    ``"reliable"`` (CV < 15%), ``"use with caution"`` (15% ≤ CV ≤ 30%), ``"unreliable"``
    (CV > 30%, and every estimate ≤ 0). Other cut-offs: ``cv_bands=(0.10, 0.20)``.
    A suppressed row is ``"hidden"``: its display values are the word "hidden", never 0.

Totals across categories
    When the release has a category breakdown, each cell (or zone) gets a row
    ``category == "total"``: the sum of the categories' unbiased estimates, with the margin
    of that sum, ``1.96·√(Σ var)``. The noise is drawn independently for every (cell,
    category), and the least-squares step of a hierarchical release works category by
    category, so the variances add (adaptive releases have no categories). A total is
    shown or hidden by the release's suppression rule applied to the total: a fixed
    threshold as it is; the default rule as a table-wide multiple of the total's standard
    deviation (:func:`dpmap._privacy.postprocess.phantom_factor`: at most about one truly empty total per table shows
    by chance; in a release without a region, below the total's own margin). When the
    release was read from a file without its unbiased estimates and some category of a
    cell is hidden, the total is hidden too (the hidden value is not in the file).

Privacy
    Post-processing of published noisy values and public parameters only: no data read,
    no budget spent. The privacy statement and the release's manifest go beside the table
    (:meth:`PressTable.to_file`).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h3
import numpy as np
import pandas as pd

from dpmap._privacy.postprocess import Z95, Z975, mean_and_margin, phantom_factor
from dpmap.analysis.totals import is_release
from dpmap.designs.base import manifest_noise_variance
from dpmap.designs.zones import zone_column
from dpmap.errors import DataFileError, SpecError
from dpmap.io import atomic_write, manifest_path
from dpmap.spec import band_name, quantile_name

if TYPE_CHECKING:  # pragma: no cover
    from dpmap.releases import Release

__all__ = [
    "HIDDEN",
    "RELIABILITY_SCHEME",
    "PressTable",
    "count_unit",
    "press_table",
    "reliability",
]

#: display value of a suppressed row (never a zero)
HIDDEN = "hidden"
#: display value of a zone that no released cell touches (roll-ups)
NO_DATA = "no data"
TOTAL = "total"
#: default cut-offs of the coefficient of variation: reliable below the first, use with
#: caution up to the second, unreliable above it
CV_BANDS = (0.15, 0.30)
RELIABILITY_SCHEME = (
    "coefficient of variation CV = margin / 1.96 / estimate, in the three bands commonly "
    "used with the US Census Bureau's American Community Survey estimates: reliable "
    "(CV < {lo:.0%}), use with caution ({lo:.0%} ≤ CV ≤ {hi:.0%}), unreliable (CV > {hi:.0%}, "
    "or an estimate ≤ 0); hidden: suppressed by the release (not a zero)"
)
STATS = ("count", "sum", "mean")


def reliability(
    estimate: Any, moe: Any, cv_bands: tuple[float, float] = CV_BANDS
) -> tuple[np.ndarray, np.ndarray]:
    """The coefficient of variation and its reliability label for each estimate.

    ``CV = moe / 1.96 / estimate``; an estimate ≤ 0 has an infinite CV ("unreliable");
    a missing estimate or margin gets NaN and an empty label (the caller says why).
    """
    est = np.asarray(estimate, dtype=np.float64)
    moe = np.asarray(moe, dtype=np.float64)
    lo, hi = _check_bands(cv_bands)
    with np.errstate(divide="ignore", invalid="ignore"):
        cv = np.where(est > 0, moe / Z95 / est, np.inf)
    missing = np.isnan(est) | np.isnan(moe)
    cv = np.where(missing, np.nan, cv)
    labels = np.where(
        cv < lo, "reliable", np.where(cv <= hi, "use with caution", "unreliable")
    ).astype(object)
    labels[missing] = ""
    return cv, labels


def _check_bands(cv_bands: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in cv_bands)
    except (TypeError, ValueError):
        raise SpecError(
            f"cv_bands must be two numbers (reliable below, unreliable above), e.g. (0.15, 0.30); "
            f"got {cv_bands!r}"
        ) from None
    if not (0 < lo <= hi) or not math.isfinite(hi):
        raise SpecError(
            f"cv_bands must be two increasing positive numbers, e.g. (0.15, 0.30); got {cv_bands!r}"
        )
    return lo, hi


def count_terms(spec: Any) -> tuple[str | None, int, int, int | None]:
    """The arguments of :func:`count_unit` for a release spec (panels per period)."""
    if spec.panel and spec.person is not None:
        return spec.person, spec.linf, spec.max_cells, spec.periods_per_person
    return spec.person, spec.linf, spec.l0, None


def count_unit(
    person: str | None, max_records_per_cell: int, max_cells: int = 1, periods: int | None = None
) -> str:
    """What a published count counts, in words (for the manifest and ``explain``);
    ``periods``: a panel's periods per person (``max_cells`` is then per period)."""
    place = "cell and period" if periods is not None else "cell"
    if person is None:
        return "rows: every row is treated as a different person"
    if int(max_records_per_cell) > 1:
        return (
            f"records, not people: each person adds up to {int(max_records_per_cell)} records "
            f"per {place} (max_records_per_cell), so a count of 10 may be fewer than 10 people"
        )
    if periods is not None:
        return (
            f"people: each person counts at most once per {place}, in at most {int(periods)} "
            f"period(s) and {int(max_cells)} cell(s) per period"
        )
    return "people: each person counts at most once per cell" + (
        f" (and in at most {int(max_cells)} cells)" if int(max_cells) > 1 else ""
    )


# ---------------------------------------------------------------------------------------
# rounding


def _unit_of(x: np.ndarray, digits: int = 3, minimum: float | None = None) -> np.ndarray:
    """10^k such that |x| rounded to a multiple of it keeps ``digits`` significant figures."""
    ax = np.abs(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        exp = np.floor(np.log10(np.where(ax > 0, ax, 1.0))) - (digits - 1)
    unit = np.power(10.0, exp)
    if minimum is not None:
        unit = np.maximum(unit, minimum)
    return unit


def _round_to(x: np.ndarray, unit: np.ndarray | float) -> np.ndarray:
    """Round half away from zero to a multiple of ``unit`` (and clean 0.1+0.2 artefacts)."""
    q = np.sign(x) * np.floor(np.abs(x) / unit + 0.5) * unit
    return np.round(q, 10)


def _ceil_to(x: np.ndarray, unit: np.ndarray | float) -> np.ndarray:
    return np.round(np.ceil(np.round(x / unit, 9)) * unit, 10)


def _as_number(v: float) -> Any:
    return int(v) if float(v).is_integer() and abs(v) < 2**53 else float(v)


def _display(
    values: np.ndarray,
    moes: np.ndarray,
    hidden: np.ndarray,
    nodata: np.ndarray,
    *,
    kind: str,
    unit: float | None,
    floor_zero: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Display value and display margin (object arrays: numbers, "hidden" or "no data")."""
    v = np.asarray(values, dtype=np.float64)
    m = np.asarray(moes, dtype=np.float64)
    if kind == "count":
        units: np.ndarray | float = 1.0
    elif unit is not None:
        units = float(unit)
    else:
        units = _unit_of(np.fmax(np.abs(v), np.nan_to_num(m)), 3, 1.0 if kind == "sum" else None)
    shown = _round_to(v, units)
    if floor_zero:
        shown = np.maximum(shown, 0.0)
    shown_moe = _ceil_to(m, units)
    out_v = np.empty(len(v), dtype=object)
    out_m = np.empty(len(v), dtype=object)
    for i in range(len(v)):
        if hidden[i]:
            out_v[i] = out_m[i] = HIDDEN
        elif nodata[i] or np.isnan(shown[i]):
            out_v[i] = out_m[i] = NO_DATA if nodata[i] else ""
        else:
            out_v[i] = _as_number(shown[i] + 0.0)  # + 0.0: no "-0"
            out_m[i] = "" if np.isnan(shown_moe[i]) else _as_number(shown_moe[i])
    return out_v, out_m


def _interval_display(
    lo: np.ndarray, hi: np.ndarray, hidden: np.ndarray, nodata: np.ndarray, *, floor_zero: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The ends of a 95% interval for display: widened outwards to three significant figures
    of the larger end (never narrowed), the lower end not below 0 where values cannot be."""
    units = _unit_of(np.fmax(np.abs(lo), np.abs(hi)), 3, 1.0)
    low = np.round(np.floor(np.round(lo / units, 9)) * units, 10)
    high = _ceil_to(hi, units)
    if floor_zero:
        low = np.maximum(low, 0.0)
    out_lo = np.empty(len(lo), dtype=object)
    out_hi = np.empty(len(lo), dtype=object)
    for i in range(len(lo)):
        if hidden[i]:
            out_lo[i] = out_hi[i] = HIDDEN
        elif nodata[i] or np.isnan(low[i]) or np.isnan(high[i]):
            out_lo[i] = out_hi[i] = NO_DATA if nodata[i] else ""
        else:
            out_lo[i], out_hi[i] = _as_number(low[i] + 0.0), _as_number(high[i] + 0.0)
    return out_lo, out_hi


# ---------------------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class PressTable:
    """A press-ready table, its reading notes and the manifest that goes beside it.

    ``table``: one row per cell or zone (× category, plus a ``"total"`` row per cell/zone
    when there are categories). For each statistic ``s`` (count, [sum, mean]):
    ``s_display`` and ``s_moe_display`` (rounded, never negative; "hidden" for a suppressed
    row), for a roll-up ``s_lo_display``/``s_hi_display`` (its 95% interval, border error
    included, which also sets the margin shown), ``s_reliability``, then the unrounded
    ``s_unbiased``, ``s_moe`` and ``s_cv``.
    """

    table: pd.DataFrame
    notes: str
    manifest: dict[str, Any] = field(repr=False)

    def __str__(self) -> str:
        return self.table.to_string(index=False) + "\n\n" + self.notes

    def to_file(self, path: str | Path) -> list[Path]:
        """Write ``<name>.csv``, ``<name>.manifest.json`` and ``<name>.notes.txt`` beside it.

        The three files are written to temporary names and renamed only when all are
        complete. Returns the paths written.
        """
        path = Path(path)
        if path.suffix.lower() != ".csv":
            raise DataFileError(
                f"a press table is written as .csv, got {str(path)!r}; use a path ending in .csv"
            )
        targets = [path, manifest_path(path), notes_path(path)]
        with atomic_write(targets) as (tmp_csv, tmp_manifest, tmp_notes):
            self.table.to_csv(tmp_csv, index=False)
            tmp_manifest.write_text(
                json.dumps(self.manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            tmp_notes.write_text(self.notes + "\n", encoding="utf-8")
        return targets


def notes_path(path: str | Path) -> Path:
    """``table.csv`` -> ``table.notes.txt`` (beside it)."""
    p = Path(path)
    return p.with_name(p.stem + ".notes.txt")


def press_table(
    source: Any,
    *,
    release: Release | None = None,
    sum_unit: float | None = None,
    mean_unit: float | None = None,
    cv_bands: tuple[float, float] = CV_BANDS,
    totals: bool = True,
    unbiased: bool = True,
) -> PressTable:
    """A press-ready table of a release's cells or of a roll-up (see the module docstring).

    Parameters
    ----------
    source
        A :class:`~dpmap.Release`, or a roll-up (the GeoDataFrame of
        :func:`~dpmap.analysis.aggregate_to`; then pass ``release=`` too, for the privacy
        statement and manifest).
    sum_unit, mean_unit
        Round sums (means) to multiples of this unit instead of three significant figures.
    cv_bands
        The reliability cut-offs of the coefficient of variation (default 15% and 30%).
    totals
        Add a ``"total"`` row per cell/zone when there are categories.
    unbiased
        Keep the unrounded unbiased values (``*_unbiased``, ``*_moe``, ``*_cv``) beside
        the display values (for analysts who add them up); ``False`` leaves them out.
    """
    bands = _check_bands(cv_bands)
    _check_units(sum_unit=sum_unit, mean_unit=mean_unit)
    rel, kind, (long, keys, notes_extra) = _table_rows(source, release, totals)
    out = pd.DataFrame({k: long[k].to_numpy() for k in keys})
    extra: dict[str, Any] = {}
    stats = [s for s in STATS if s in long.columns]
    for s in stats:
        unit = sum_unit if s == "sum" else mean_unit if s == "mean" else None
        shown, unrounded = _statistic_columns(long, s, unit, bands)
        for k, v in shown.items():
            out[k] = v
        extra.update(unrounded)
    quantiles, value_bands = distribution_names(rel.manifest)
    shown_d, unrounded_d = _distribution_columns(long, quantiles, value_bands)
    for k, v in shown_d.items():
        out[k] = v
    extra.update(unrounded_d)
    for col in ("coverage", "cells"):
        if col in long.columns:
            out[col] = long[col].to_numpy()
    out["suppressed"] = long["hidden"].to_numpy(dtype=bool)
    if unbiased:
        for k, v in extra.items():
            out[k] = v
    manifest = rel.manifest
    place = "zone" if zone_column(manifest) is not None else None  # a zone release's rows
    rules = _rules(stats, sum_unit, mean_unit, bands, kind, place)
    rules.update(_distribution_rules(quantiles, value_bands, kind))
    notes = _notes(manifest, rules, notes_extra, unbiased)
    table_manifest = {
        "dpmap_press_table": 1,
        "source": {
            "kind": "release cells" if kind == "cells" else "roll-up to zones",
            "release_fingerprint": rel.fingerprint,
            "release_title": manifest.get("title"),
        },
        "rules": rules,
        "privacy_statement": rel.privacy_statement,
        "release_manifest": manifest,
    }
    return PressTable(table=out, notes=notes, manifest=json.loads(json.dumps(table_manifest)))


def _check_units(**units: float | None) -> None:
    for name, unit in units.items():
        if unit is not None and not (
            isinstance(unit, (int, float)) and math.isfinite(unit) and unit > 0
        ):
            raise SpecError(f"{name} must be a positive number (e.g. 1000), got {unit!r}")


def _table_rows(
    source: Any, release: Release | None, totals: bool
) -> tuple[Release, str, tuple[pd.DataFrame, list[str], list[str]]]:
    """The release the table speaks for, the kind of rows (``"cells"`` or ``"zones"``) and
    the rows themselves (see :func:`_cells_frame`)."""
    if is_release(source):
        return source, "cells", _cells_frame(source, totals)
    if isinstance(source, pd.DataFrame):
        if release is None or not is_release(release):
            raise SpecError(
                "a roll-up table needs the release it came from, for its privacy statement and "
                "manifest: pass release=<the Release>"
            )
        return release, "zones", _rollup_frame(source, totals)
    raise SpecError(
        f"press_table takes a Release or a roll-up (result of aggregate_to), got "
        f"{type(source).__name__}"
    )


def _statistic_columns(
    long: pd.DataFrame, s: str, unit: float | None, bands: tuple[float, float]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One statistic's display columns (rounded values and margins, a roll-up's interval,
    the reliability flag) and its unrounded columns (estimate, margin, CV[, interval])."""
    hidden = long["hidden"].to_numpy(dtype=bool)
    nodata = long["nodata"].to_numpy(dtype=bool)
    shown_base = long[f"{s}_shown"].to_numpy(dtype=np.float64)
    est = long[s].to_numpy(dtype=np.float64)
    moe = long[f"{s}_moe"].to_numpy(dtype=np.float64)
    interval = f"{s}_lo" in long.columns and f"{s}_hi" in long.columns
    if interval:
        # a roll-up's honest 95% interval covers the cells cut by the zone's border as
        # well as the noise: the margin shown (and judged) is its larger half-width
        lo = long[f"{s}_lo"].to_numpy(dtype=np.float64)
        hi = long[f"{s}_hi"].to_numpy(dtype=np.float64)
        moe = np.fmax(np.fmax(est - lo, hi - est), moe)
    shown: dict[str, Any] = {}
    shown[f"{s}_display"], shown[f"{s}_moe_display"] = _display(
        shown_base, moe, hidden, nodata, kind=s, unit=unit, floor_zero=s != "mean"
    )
    cv, label = reliability(est, moe, bands)
    if interval:
        shown[f"{s}_lo_display"], shown[f"{s}_hi_display"] = _interval_display(
            lo, hi, hidden, nodata, floor_zero=s != "mean"
        )
    shown[f"{s}_reliability"] = np.where(hidden, HIDDEN, np.where(nodata, NO_DATA, label)).astype(
        object
    )
    unrounded: dict[str, Any] = {
        f"{s}_unbiased": est,
        f"{s}_moe": moe,
        f"{s}_cv": np.round(cv, 4),
    }
    for bound in ("lo", "hi"):  # interval columns of a roll-up, when it has them
        if f"{s}_{bound}" in long.columns:
            unrounded[f"{s}_{bound}"] = long[f"{s}_{bound}"].to_numpy()
    return shown, unrounded


def _rules(
    stats: list[str],
    sum_unit: float | None,
    mean_unit: float | None,
    bands: tuple[float, float],
    kind: str,
    place: str | None = None,
) -> dict[str, str]:
    def unit_rule(unit: float | None, what: str) -> str:
        if unit is not None:
            return f"{what} rounded to the nearest {unit:g}; margins rounded up to a multiple of {unit:g}"
        return (
            f"{what} rounded to three significant figures of the larger of the value and its "
            "margin; margins rounded up to the same unit"
        )

    rules = {
        "count": "counts rounded to whole records and shown as 0 when the noisy value is "
        "negative; margins rounded up to whole records (never understated)",
        "reliability": RELIABILITY_SCHEME.format(lo=bands[0], hi=bands[1]),
        "hidden": "a suppressed row shows 'hidden', never 0: its noisy count was below the "
        "release's threshold, which does not mean nobody is there",
        "unbiased": "the *_unbiased columns are the unrounded noisy estimates (may be "
        "fractional or negative): add those up, never the display values",
    }
    if kind == "zones":
        rules["intervals"] = (
            "zones rolled up from H3 cells: *_lo_display – *_hi_display is the 95% interval "
            "that covers both the noise and the cells cut by the zone's border; the margin "
            "shown (± *_moe_display) and the reliability flag use its larger half-width, "
            "not the noise alone"
        )
    if "sum" in stats:
        rules["sum"] = unit_rule(sum_unit, "sums") + "; shown as 0 when negative"
    if "mean" in stats:
        rules["mean"] = unit_rule(mean_unit, "means")
    rules["totals"] = (
        "a 'total' row per "
        + (place or ("cell" if kind == "cells" else "zone"))
        + " adds up the categories' unbiased estimates; its margin is 1.96·√(sum of the "
        "variances) (independent noise per category); rounded categories need not add up "
        "to the rounded total. With the release's default suppression a total is hidden "
        "when its count is below a table-wide multiple of its standard deviation, so that at "
        "most about one truly empty total shows by chance; with a fixed threshold, below "
        "that threshold"
    )
    return rules


def _notes(
    manifest: dict[str, Any], rules: dict[str, str], extra: list[str], unbiased: bool
) -> str:
    linf = (manifest.get("contribution_bounds") or {}).get("max_records_per_cell", 1)
    unit = (manifest.get("privacy") or {}).get("unit", "one person")
    counts = (
        f"Counts count records: each person contributes at most {linf} record(s) per cell, so "
        "a count is not a number of people."
        if linf and int(linf) > 1
        else "Counts count people: each person contributes at most one record per cell."
    )
    lines = [
        str(manifest.get("title") or "dpmap release") + " — press table",
        "",
        "Privacy: " + str((manifest.get("privacy") or {}).get("statement", "")),
        f"Privacy unit: {unit}.",
        counts,
        "",
        "How to read this table:",
    ]
    order = ["count", "sum", "mean", "quantiles", "value_bands", "intervals", "reliability"]
    order += ["hidden", "totals"]
    if unbiased:
        order.append("unbiased")
    lines += [f"- {rules[k]}" for k in order if k in rules]
    lines += [f"- {e}" for e in extra]
    lines.append(
        "- margins are 95% margins of error"
        + (
            " (for zones, of the noise and the border together)"
            if "intervals" in rules
            else " of the added noise"
        )
        + ": the true (bounded) value lies within ± the margin in at least 19 of 20 rows"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# quantiles and value bands


def distribution_names(manifest: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The quantile columns (``q50``, …) and value-band columns (``band_0_1000``, …) a
    release publishes, from its manifest (none without a value histogram)."""
    vd = manifest.get("value_distribution") or {}
    quantiles = [quantile_name(float(p)) for p in vd.get("quantiles") or ()]
    bands = [
        band_name(float(a), float(b)) for a, b in itertools.pairwise(vd.get("value_bands") or ())
    ]
    return quantiles, bands


def _copy_distribution(source: pd.DataFrame, df: pd.DataFrame, manifest: Any) -> None:
    """Copy the quantile and band columns (with their intervals and margins) into ``df``."""
    suffixes = ("", "_lo", "_hi", "_moe")
    for col in source.columns:
        name = str(col)
        base = next((name[: -len(x)] for x in suffixes[1:] if name.endswith(x)), name)
        if (base.startswith("band_") or (base[:1] == "q" and base[1:2].isdigit())) and (
            name in {base + x for x in suffixes}
        ):
            df[name] = pd.array(source[col], dtype="Float64").to_numpy(
                dtype=np.float64, na_value=np.nan
            )


def _distribution_columns(
    long: pd.DataFrame, quantiles: list[str], value_bands: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Display columns of the quantiles (``q50_display``, ``q50_lo_display``,
    ``q50_hi_display``: the interval widened outwards to three significant figures, the
    point rounded to the same unit) and of the value bands (whole records, margins rounded
    up, a roll-up's interval), and their unrounded columns. Rows without them (a category
    total) are left empty."""
    hidden = long["hidden"].to_numpy(dtype=bool)
    nodata = long["nodata"].to_numpy(dtype=bool)
    shown: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    for q in (q for q in quantiles if q in long.columns):
        v, lo, hi = (long[c].to_numpy(dtype=np.float64) for c in (q, f"{q}_lo", f"{q}_hi"))
        units = _unit_of(np.fmax(np.abs(lo), np.abs(hi)), 3, 1.0)
        shown[f"{q}_display"] = _display(
            np.clip(_round_to(v, units), lo, hi), np.zeros(len(v)), hidden, nodata,
            kind="mean", unit=None, floor_zero=False,
        )[0]  # fmt: skip
        shown[f"{q}_lo_display"], shown[f"{q}_hi_display"] = _interval_display(
            lo, hi, hidden, nodata, floor_zero=False
        )
        raw.update({q: v, f"{q}_lo": lo, f"{q}_hi": hi})
    for b in (b for b in value_bands if b in long.columns):
        v = long[b].to_numpy(dtype=np.float64)
        moe = long[f"{b}_moe"].to_numpy(dtype=np.float64)
        shown[f"{b}_display"], shown[f"{b}_moe_display"] = _display(
            v, moe, hidden, nodata, kind="count", unit=None, floor_zero=True
        )
        raw.update({f"{b}_unbiased": v, f"{b}_moe": moe})
        if f"{b}_lo" in long.columns:
            lo, hi = long[f"{b}_lo"].to_numpy(), long[f"{b}_hi"].to_numpy()
            shown[f"{b}_lo_display"], shown[f"{b}_hi_display"] = _interval_display(
                np.asarray(lo, np.float64), np.asarray(hi, np.float64), hidden, nodata,
                floor_zero=True,
            )  # fmt: skip
    return shown, raw


def _distribution_rules(quantiles: list[str], value_bands: list[str], kind: str) -> dict[str, str]:
    rules = {}
    if quantiles:
        rules["quantiles"] = (
            f"quantiles ({', '.join(quantiles)}; q50 is the median) from the release's noisy "
            "value histogram: *_lo_display – *_hi_display is a 95% interval for the true "
            "quantile (widened outwards to three significant figures), the value shown is "
            "rounded to the same unit; empty for a category total"
        )
    if value_bands:
        rules["value_bands"] = (
            "value bands (band_a_b: how many records have a value in [a, b)) rounded to whole "
            "records, never below 0, margins rounded up"
            + (
                "; *_lo_display – *_hi_display is their 95% interval, border included"
                if kind == "zones"
                else ""
            )
            + "; empty for a category total"
        )
    return rules


# ---------------------------------------------------------------------------------------
# the rows: release cells


def _cells_frame(rel: Release, totals: bool) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Per row: keys, the published value to display, the unbiased estimate, margin, flags."""
    cells = rel.cells
    m = rel.manifest
    est = rel.estimates
    stats = [s for s in ("count", "sum") if s in cells.columns]
    has_cat = "category" in cells.columns
    zone = zone_column(m)  # a zone release: rows keyed by the zone's name
    place = [zone] if zone is not None else ["cell", "resolution"]
    keys = place + (["category"] if has_cat else [])
    hidden = cells["suppressed"].to_numpy(dtype=bool)
    df = pd.DataFrame({k: cells[k].to_numpy() for k in keys})
    df["hidden"] = hidden
    df["nodata"] = False
    hierarchical = bool(m.get("hierarchy")) or bool((m.get("adaptive") or {}).get("consistency"))
    notes: list[str] = []
    for s in stats:
        shown = _floats(cells[s])
        df[f"{s}_shown"] = shown
        moe = cells[f"{s}_moe"].to_numpy(dtype=np.float64)
        if est is not None:
            df[s] = est[s].to_numpy(dtype=np.float64)
            df[f"{s}_var"] = est[f"{s}_var"].to_numpy(dtype=np.float64)
            # a hidden row's margin: the exact one of a single flat cell, else from the variance
            fill = (
                Z95 * np.sqrt(df[f"{s}_var"].to_numpy())
                if hierarchical
                else float(m["statistics"][s]["moe_95"])
            )
            moe = np.where(np.isnan(moe), fill, moe)
        else:
            df[s] = shown
            if hierarchical:
                df[f"{s}_var"] = (moe / Z95) ** 2
            else:
                df[f"{s}_var"] = manifest_noise_variance(m["statistics"][s])
        df[f"{s}_moe"] = moe
    _copy_distribution(cells, df, m)
    if "mean" in cells.columns:
        df["mean_shown"] = cells["mean"].to_numpy(dtype=np.float64)
        df["mean"] = df["mean_shown"]
        df["mean_moe"] = cells["mean_moe"].to_numpy(dtype=np.float64)
    if est is None and hidden.any():
        notes.append(
            "this release file carries no unbiased estimates, so the unbiased columns of "
            "hidden rows are empty"
        )
    if has_cat and totals:
        tot = _category_totals(df, m, stats, est is not None, place)
        df = _interleave(df, tot, place)
    if zone is not None:  # zones have no H3 centre
        return df, keys, notes
    centres = {c: h3.cell_to_latlng(c) for c in pd.unique(df["cell"])}
    df.insert(2, "lat", [round(centres[c][0], 5) for c in df["cell"]])
    df.insert(3, "lng", [round(centres[c][1], 5) for c in df["cell"]])
    return df, [*keys[:2], "lat", "lng", *keys[2:]], notes


def _private_cells(m: dict[str, Any]) -> bool:
    """Whether the release's rows were chosen privately (no public region nor zones)."""
    selection = m.get("cell_selection") or {}
    return selection.get("region") is None and zone_column(m) is None


def _floats(series: pd.Series) -> np.ndarray:
    return pd.array(series, dtype="Float64").to_numpy(dtype=np.float64, na_value=np.nan)


def _total_label(categories: Any) -> str:
    label = TOTAL
    while categories is not None and label in {str(c) for c in categories}:
        label = f"({label})"
    return label


def _category_totals(
    df: pd.DataFrame,
    m: dict[str, Any],
    stats: list[str],
    unbiased: bool,
    place: list[str] | None = None,
) -> pd.DataFrame:
    """One row per ``place`` (cell and resolution, or zone): the categories' unbiased
    estimates added up."""
    g = df.groupby(place or ["cell", "resolution"], sort=False)
    tot = g.agg(
        **{f"{s}": (s, "sum") for s in stats},
        **{f"{s}_var": (f"{s}_var", "sum") for s in stats},
        any_hidden=("hidden", "any"),
    ).reset_index()
    tot["category"] = _total_label(m.get("categories"))
    n = len(tot)
    for s in stats:
        tot[f"{s}_moe"] = Z95 * np.sqrt(tot[f"{s}_var"].to_numpy())
    count = tot["count"].to_numpy(dtype=np.float64)
    rule = m.get("suppression") or {}
    if not unbiased:  # the hidden categories' values are not in the file
        hide = tot["any_hidden"].to_numpy(dtype=bool)
    elif rule.get("default") and _private_cells(m):
        hide = count < tot["count_moe"].to_numpy()  # private discovery: below its own margin
    elif rule.get("default"):
        sd = np.sqrt(tot["count_var"].to_numpy())
        hide = count < phantom_factor(_mechanism(m), n) * sd
    elif rule.get("threshold") is not None:
        hide = count < float(rule["threshold"])
    else:
        hide = np.zeros(n, dtype=bool)
    tot["hidden"] = hide
    tot["nodata"] = False
    for s in stats:
        if not unbiased:  # a partial sum of the shown categories is no estimate of the total
            tot.loc[hide, [s, f"{s}_moe"]] = np.nan
        tot[f"{s}_shown"] = tot[s]
    bounds = (m.get("contribution_bounds") or {}).get("bounds")
    if "sum" in stats and bounds is not None:
        sd_c = np.sqrt(tot["count_var"].to_numpy())
        sd_s = np.sqrt(tot["sum_var"].to_numpy())
        mean, mean_moe = mean_and_margin(
            tot["sum"].to_numpy(dtype=np.float64),
            count,
            Z975 * sd_c,
            Z975 * sd_s,
            float(bounds[0]),
            float(bounds[1]),
        )
        tot["mean_shown"] = tot["mean"] = np.where(hide, np.nan, mean)
        tot["mean_moe"] = np.where(hide, np.nan, mean_moe)
    return tot.drop(columns="any_hidden")


def _mechanism(m: dict[str, Any]) -> str:
    return "gaussian" if (m.get("parameters") or {}).get("mechanism") == "gaussian" else "laplace"


def _interleave(rows: pd.DataFrame, totals: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """``rows`` with each group's total row right after the group's last row."""
    order = rows[by].drop_duplicates().reset_index(drop=True)
    order["_g"] = np.arange(len(order))
    a = rows.merge(order, on=by, how="left", sort=False).assign(_t=0)
    b = totals.merge(order, on=by, how="left", sort=False).assign(_t=1)
    a["_i"] = np.arange(len(a))
    b["_i"] = np.arange(len(b))
    out = pd.concat([a, b], ignore_index=True, sort=False)
    out = out.sort_values(["_g", "_t", "_i"], kind="stable").drop(columns=["_g", "_t", "_i"])
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# the rows: a roll-up (aggregate_to)


def _rollup_frame(rollup: pd.DataFrame, totals: bool) -> tuple[pd.DataFrame, list[str], list[str]]:
    if not {"count", "count_moe"} <= set(rollup.columns):
        raise SpecError(
            "the table has no count/count_moe columns; pass a Release or a result of aggregate_to"
        )
    by = rollup.attrs.get("dpmap_by")
    if by is None or by not in rollup.columns:
        geom = getattr(rollup, "geometry", None)
        gname = geom.name if geom is not None and hasattr(geom, "name") else "geometry"
        skip = {"category", "count", "count_moe", "sum", "sum_moe", "coverage", "cells", gname}
        candidates = [
            c for c in rollup.columns if c not in skip and not str(c).endswith(("_lo", "_hi"))
        ]
        if len(candidates) != 1:
            raise SpecError(
                f"cannot tell which column names the zones ({candidates}); keep the table that "
                "aggregate_to returned, or set table.attrs['dpmap_by'] = '<column>'"
            )
        by = candidates[0]
    has_cat = "category" in rollup.columns
    keys = [by] + (["category"] if has_cat else [])
    stats = [s for s in ("count", "sum") if {s, f"{s}_moe"} <= set(rollup.columns)]
    df = pd.DataFrame({k: rollup[k].to_numpy() for k in keys})
    for s in stats:
        df[s] = rollup[s].to_numpy(dtype=np.float64)
        df[f"{s}_shown"] = df[s]
        df[f"{s}_moe"] = rollup[f"{s}_moe"].to_numpy(dtype=np.float64)
        for bound in ("lo", "hi"):
            if f"{s}_{bound}" in rollup.columns:
                df[f"{s}_{bound}"] = rollup[f"{s}_{bound}"].to_numpy()
    for col in ("coverage", "cells"):
        if col in rollup.columns:
            df[col] = rollup[col].to_numpy()
    _copy_distribution(rollup, df, None)
    df["hidden"] = False
    df["nodata"] = np.isnan(df["count"].to_numpy())
    if has_cat and totals:
        g = df.groupby(by, sort=False)
        agg: dict[str, Any] = {s: (s, lambda x: x.sum(min_count=1)) for s in stats}
        agg.update({f"{s}_moe": (f"{s}_moe", _root_sum_squares) for s in stats})
        # the total's 95% interval: the sums of the categories' ends. The border part (cells
        # inside vs touching) adds up exactly; the noise margins add up to at least the
        # margin of the summed noise, so the total's interval is conservative
        agg.update(
            {
                f"{s}_{b}": (f"{s}_{b}", lambda x: x.sum(min_count=1))
                for s in stats
                for b in ("lo", "hi")
                if f"{s}_{b}" in df.columns
            }
        )
        agg.update({c: (c, "first") for c in ("coverage", "cells") if c in df.columns})
        agg["nodata"] = ("nodata", "all")
        tot = g.agg(**agg).reset_index()
        tot["category"] = _total_label(pd.unique(df["category"]))
        for s in stats:
            tot[f"{s}_shown"] = tot[s]
        tot["hidden"] = False
        df = _interleave(df, tot, [by])
    notes = [
        "zone values add up the unbiased estimates of every cell overlapping the zone, "
        "suppressed cells included, weighted by the share of each cell's area inside the zone; "
        "zones are never hidden, their reliability says how far to trust them",
    ]
    return df, keys, notes


def _root_sum_squares(x: pd.Series) -> float:
    v = x.to_numpy(dtype=np.float64)
    return float(np.sqrt(np.sum(v**2))) if not np.isnan(v).all() else float("nan")


# ---------------------------------------------------------------------------------------
# a total map of a categorised release (for dpmap plot --category all)


def category_total_cells(rel: Release) -> Any:
    """The release's cells with its categories added up: one row per cell, published-style
    columns (``count``, ``count_moe``, [``sum``, ``sum_moe``, ``mean``, ``mean_moe``],
    ``suppressed``), null numbers where the total is hidden. For maps of the total."""
    import geopandas as gpd  # lazily: importing dpmap does not load geopandas

    cells = rel.cells
    if "category" not in cells.columns:
        raise SpecError("the release has no category breakdown; it is already a total map")
    df, _, _ = _cells_frame(rel, totals=True)
    label = _total_label(rel.manifest.get("categories"))
    tot = df[df["category"] == label].reset_index(drop=True)
    data: dict[str, Any] = {"cell": tot["cell"].to_numpy(), "resolution": tot["resolution"]}
    hide = tot["hidden"].to_numpy(dtype=bool)
    for s in ("count", "sum", "mean"):
        if s in tot.columns:
            data[s] = np.where(hide, np.nan, tot[s].to_numpy(dtype=np.float64))
            data[f"{s}_moe"] = np.where(hide, np.nan, tot[f"{s}_moe"].to_numpy(dtype=np.float64))
    data["suppressed"] = hide
    geom = cells.drop_duplicates(["cell", "resolution"]).set_index(["cell", "resolution"]).geometry
    geometry = geom.reindex(pd.MultiIndex.from_arrays([tot["cell"], tot["resolution"]]))
    return gpd.GeoDataFrame(pd.DataFrame(data), geometry=geometry.to_numpy(), crs="EPSG:4326")
