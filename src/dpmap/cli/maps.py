"""``dpmap plot``: static (PNG) and interactive (HTML) maps of a published release."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dpmap.errors import SpecError

__all__ = ["ALL_CATEGORIES", "plot_cmd"]

#: --category value of dpmap plot that maps the total of every category
ALL_CATEGORIES = "all"

_RELEASE_FILES = Annotated[
    list[Path],
    typer.Argument(
        metavar="RELEASE...",
        help="A release written by dpmap; several (one per period, oldest first) for "
        "small multiples (--png) and a map with a period slider (--html).",
    ),
]
_PERIODS = Annotated[
    str | None,
    typer.Option(
        "--periods",
        help="Several releases: the periods' names, comma-separated (e.g. 2026-01,2026-02); "
        "default the releases' own periods, else 0, 1, …",
    ),
]


def plot_cmd(
    release_files: _RELEASE_FILES,
    png: Annotated[Path | None, typer.Option("--png", help="Output PNG file.")] = None,
    column: Annotated[
        str, typer.Option("--column", help="Statistic to map: count, sum or mean.")
    ] = "count",
    category: Annotated[
        str | None,
        typer.Option(
            "--category",
            help="Category to map (with a breakdown), or 'all' for the total of every category "
            "(the default for a release with categories).",
        ),
    ] = None,
    # -- interactive map (dpmap.maps.interactive) --
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Output interactive map: one self-contained HTML file that works offline.",
        ),
    ] = None,
    periods: _PERIODS = None,
) -> None:
    """Draw a static map (PNG) and/or an interactive map (HTML) of a published release.

    With several releases (one per period), or a panel release: small multiples on one
    colour scale (PNG) and an interactive map with a period slider (HTML).

    Example: dpmap plot map.geojson --png map.png --html map.html
    """
    from dpmap.releases import read_release

    if png is None and html is None:
        raise SpecError("dpmap plot needs an output: --png PATH, --html PATH, or both")
    if png is not None and png.suffix.lower() != ".png":
        raise SpecError(f"--png {str(png)!r} must end in .png")
    document = None
    if html is not None:
        from dpmap.maps.interactive import check_html_path

        check_html_path(html)
    if len(release_files) > 1 or periods is not None:
        _plot_periods(
            [read_release(f) for f in release_files], png, html, column, category, periods
        )
        return
    rel = read_release(release_files[0])
    if rel.periods is not None:  # a panel: one map per period
        _plot_periods([rel.at(p) for p in rel.periods], png, html, column, category, None)
        return
    cells, manifest, title = rel.cells, rel.manifest, None
    has_cat = "category" in cells.columns
    named = set(cells["category"].astype(str)) if has_cat else set()
    if has_cat and category is None:  # the total, as a map of the whole release should be
        names = ", ".join(str(c) for c in manifest.get("categories") or sorted(named))
        print(
            f"dpmap: note: the release has one row per category ({names}); mapping their "
            "total. Map one category with --category NAME.",
            file=sys.stderr,
        )
    if category is None or (category == ALL_CATEGORIES and ALL_CATEGORIES not in named):
        if has_cat:
            from dpmap.analysis.tables import category_total_cells

            cells = category_total_cells(rel)
            title = f"{manifest.get('title') or 'dpmap release'} — total of all categories"
        category = None  # a release without a breakdown is its own total
    if html is not None:  # built before any file is written, so a mistake writes nothing
        from dpmap.maps.interactive import html_document

        document = html_document(cells, manifest, column=column, category=category, title=title)
    if png is not None:
        from dpmap.maps.static import plot_release

        plot_release(cells, manifest, png, column=column, category=category, title=title)
    if html is not None and document is not None:
        from dpmap.maps.interactive import save_html

        save_html(document, html)
    typer.echo("wrote " + " and ".join(str(p) for p in (png, html) if p is not None))


def _plot_periods(
    releases: list[Any],
    png: Path | None,
    html: Path | None,
    column: str,
    category: str | None,
    periods: str | None,
) -> None:
    """Several releases: small multiples (PNG) and the slider map (HTML); both are checked
    and drawn before either file is written, so a mistake writes nothing."""
    from dpmap.cli.tables import period_names
    from dpmap.maps.interactive import offline_document, save_html
    from dpmap.maps.periods import explore_periods, plot_periods

    names = period_names(periods, len(releases))
    rels, category, title = _category_totals(releases, category)
    document = None
    if html is not None:
        fmap = explore_periods(rels, names, column, category=category, title=title)
        document = offline_document(fmap)
    if png is not None:  # checked and drawn in full before the PNG is written
        plot_periods(rels, names, column, png, category=category, title=title)
    if document is not None and html is not None:
        save_html(document, html)
    typer.echo("wrote " + " and ".join(str(p) for p in (png, html) if p is not None))


def _category_totals(
    rels: list[Any], category: str | None
) -> tuple[list[Any], str | None, str | None]:
    """Releases with categories and no --category (or 'all'): each period's total of every
    category, as ``dpmap plot`` maps one release; else the releases as they are."""
    cells = rels[0].cells
    if "category" not in cells.columns:
        return rels, category, None
    named = set(cells["category"].astype(str))
    if category is not None and (category != ALL_CATEGORIES or ALL_CATEGORIES in named):
        return rels, category, None
    from dpmap.analysis.tables import category_total_cells
    from dpmap.releases import Release

    if category is None:
        print(
            "dpmap: note: the releases have one row per category; mapping their total. Map "
            "one category with --category NAME.",
            file=sys.stderr,
        )
    totals = [Release(category_total_cells(r), r.manifest) for r in rels]
    title = f"{rels[0].manifest.get('title') or 'dpmap release'} — total of all categories"
    return totals, None, title
