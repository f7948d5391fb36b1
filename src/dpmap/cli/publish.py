"""``dpmap publish``: a self-contained website of published releases (see :mod:`dpmap.site`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dpmap.errors import SpecError

__all__ = ["layer_options", "publish_cmd"]


def publish_cmd(
    release_files: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="RELEASES...",
            help="Release files (each with its .manifest.json): all H3 releases form one "
            "layer (one period each, or a panel's periods), each set of zones another.",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="The site's folder (new, empty, or a site to replace).")
    ] = Path("site"),
    title: Annotated[str, typer.Option("--title", help="The site's title.")] = "",
    noun: Annotated[
        str | None,
        typer.Option(
            "--noun",
            help="What a count counts, e.g. debtors (default: people or records, as the "
            "manifests say).",
        ),
    ] = None,
    tiles: Annotated[
        str | None,
        typer.Option(
            "--tiles",
            help="A base map (an xyzservices name or a URL template); default none: no "
            "network request. The tile server learns where visitors look.",
        ),
    ] = None,
    include_unbiased: Annotated[
        bool,
        typer.Option(
            "--include-unbiased",
            help="'Around here' adds up the unbiased estimates of hidden cells too (for "
            "files written with them); they are then readable in the site's data.",
        ),
    ] = False,
    layer: Annotated[
        list[str] | None,
        typer.Option(
            "--layer",
            help="NAME=FILE[,FILE...]: a layer, named (repeatable); instead of RELEASES.",
        ),
    ] = None,
    trend: Annotated[
        list[Path] | None,
        typer.Option("--trend", help="A trend written by dpmap trend (repeatable)."),
    ] = None,
) -> None:
    """Write a website of published releases: map, "around here", table and method page.

    It opens from disk or any static web host with no network request (unless --tiles).
    No budget is spent.

    Example: dpmap publish 2026-*.geojson districts-2026.geojson --out site/ --title
    "Household debt, Hebei 2026" --noun debtors
    """
    from dpmap.site.build import publish

    layers = layer_options(layer or [])
    if not title.strip():
        raise SpecError('--title is required; e.g. --title "Household debt, Hebei 2026"')
    site = publish(
        list(release_files or []),
        out,
        title=title,
        noun=noun,
        tiles=tiles,
        include_unbiased=include_unbiased,
        layers=layers,
        trends=list(trend) if trend else None,
    )
    typer.echo(
        f"wrote the site {site}/ (open {site / 'index.html'}; method: {site / 'method.html'})"
    )


def layer_options(values: list[str]) -> dict[str, list[Path]] | None:
    """``--layer NAME=FILE,FILE`` options as ``{name: [files]}`` (None without any)."""
    if not values:
        return None
    out: dict[str, list[Path]] = {}
    for value in values:
        name, sep, files = value.partition("=")
        paths = [Path(f.strip()) for f in files.split(",") if f.strip()]
        if not sep or not name.strip() or not paths:
            raise SpecError(
                f"--layer {value!r} is not NAME=FILE[,FILE...]; e.g. --layer "
                "Hebei=2026-01.geojson,2026-02.geojson"
            )
        if name.strip() in out:
            raise SpecError(f"--layer {name.strip()!r} is given twice; name each layer once")
        out[name.strip()] = paths
    return out
