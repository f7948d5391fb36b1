"""``dpmap plot``: static (PNG) and interactive (HTML) maps of a published release."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dpmap.errors import SpecError

__all__ = ["ALL_CATEGORIES", "plot_cmd"]

#: --category value of dpmap plot that maps the total of every category
ALL_CATEGORIES = "all"


def plot_cmd(
    release_file: Annotated[
        Path, typer.Argument(metavar="RELEASE", help="A release written by dpmap.")
    ],
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
) -> None:
    """Draw a static map (PNG) and/or an interactive map (HTML) of a published release.

    Example: dpmap plot map.geojson --png map.png --html map.html
    """
    from dpmap.release import read_release

    if png is None and html is None:
        raise SpecError("dpmap plot needs an output: --png PATH, --html PATH, or both")
    if png is not None and png.suffix.lower() != ".png":
        raise SpecError(f"--png {str(png)!r} must end in .png")
    document = None
    if html is not None:
        from dpmap.maps.interactive import check_html_path

        check_html_path(html)
    rel = read_release(release_file)
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
