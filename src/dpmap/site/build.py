"""Writing a website: :func:`publish` checks everything, builds the site in a temporary
folder beside ``out`` and only then moves it into place.

The site (see :mod:`dpmap.site`): ``index.html``, ``assets/``, ``data/site-data.js`` (the
front end, :mod:`dpmap.site.page` and :mod:`dpmap.site.data`), ``method.html``
(:mod:`dpmap.site.method`), ``downloads/manifests/`` (every release's manifest) and the
marker ``.dpmap-site.json``. An existing folder is replaced only when it holds that marker
(a site written here before) or is empty; anything else is refused. On any error nothing
changes at ``out``.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dpmap._version import __version__
from dpmap.errors import DataFileError, MissingDependencyError, SpecError
from dpmap.site.inputs import site_layers
from dpmap.site.layers import SiteLayer
from dpmap.site.method import MANIFESTS, manifest_file, method_page

__all__ = ["MARKER", "check_out", "front_end", "publish", "tile_source"]

#: the file that marks a folder as a dpmap website (and so lets publish replace it)
MARKER = ".dpmap-site.json"


def publish(
    releases: Any,
    out: str | os.PathLike[str],
    *,
    title: str,
    noun: str | None = None,
    tiles: str | None = None,
    include_unbiased: bool = False,
    layers: Mapping[str, Sequence[Any]] | None = None,
    trends: Any = None,
) -> Path:
    """Write a self-contained website of published releases to the folder ``out``.

    The site opens from disk (``file://``) or any static web host and makes no network
    request (unless ``tiles`` asks for a base map): a map of the cells or zones with a
    period slider, "around here" answers from the published numbers, a table with a CSV
    download, and a method page written from the manifests. Post-processing only: no data
    is read and no privacy budget is spent.

    Parameters
    ----------
    releases
        Releases or release files (each file with its ``.manifest.json``); see
        :func:`dpmap.site.inputs.site_layers` for how they are grouped into layers and
        periods (a panel's periods, or monthly releases ordered by their ``period``).
    out
        The site's folder: new, empty, or a site written by ``publish`` before (replaced).
    title
        The site's title (shown on every page).
    noun
        What a count counts, in the "around here" answers ("debtors"). By default what the
        manifests say: "people" when each person counts at most once per cell, else
        "records".
    tiles
        A base map: a name known to xyzservices (``"OpenStreetMap.Mapnik"``,
        ``"CartoDB.Positron"``) or a URL template ``https://.../{z}/{x}/{y}.png``. None (the
        default): no base map and no network request. With tiles, the tile server learns
        which area each visitor looks at.
    include_unbiased
        Let "around here" add up the unbiased estimates of suppressed cells too (only for
        releases that hold them; the method page says which layers do). They are then
        readable in the site's data file.
    layers
        ``{"layer name": [releases], ...}`` instead of ``releases``: the grouping, said
        explicitly.
    trends
        The table of :func:`dpmap.trend` or a file of ``dpmap trend`` (or a list): shown as
        the trend of the layer it covers.

    Returns
    -------
    Path of the site's folder.
    """
    title = _check_text(title, "title", "title='Household debt, Hebei 2026'")
    if noun is not None:
        noun = _check_text(noun, "noun", "noun='debtors'")
    tile = tile_source(tiles)
    target = check_out(Path(out))
    _check_inputs_outside(target, releases, layers, trends)
    shown = site_layers(releases, layers=layers, include_unbiased=include_unbiased, trends=trends)
    noun = noun or default_noun(shown)
    site_data, write_front_end = front_end()
    data = site_data(shown, title=title, noun=noun, tiles=tile)
    page = method_page(shown, title=title)
    tmp = _temp_folder(target)
    try:
        write_front_end(tmp, data, title=title)
        (tmp / "method.html").write_text(page, encoding="utf-8")
        _write_manifests(tmp, shown)
        marker = {
            "dpmap_site": 1,
            "dpmap_version": __version__,
            "generated": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def default_noun(layers: Sequence[SiteLayer]) -> str:
    """What the counts of every layer count, as the manifests say it: "people" when each
    person counts at most once per cell (and period), else "records"."""
    units = {
        str((p.release.manifest.get("contribution_bounds") or {}).get("count_counts", ""))
        for layer in layers
        for p in layer.periods
    }
    return "people" if all(u.startswith("people") for u in units) else "records"


def _check_text(value: Any, name: str, example: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{name} must be a non-empty text, got {value!r}; e.g. {example}")
    return value.strip()


def front_end() -> tuple[Callable[..., dict[str, Any]], Callable[..., None]]:
    """``(site_data, write_front_end)`` of :mod:`dpmap.site.data` and :mod:`dpmap.site.page`."""
    try:
        data = importlib.import_module("dpmap.site.data")
        page = importlib.import_module("dpmap.site.page")
    except ImportError as exc:
        raise MissingDependencyError(
            f"the website's front end is not available ({exc}); install a dpmap that "
            "includes dpmap.site.data and dpmap.site.page"
        ) from None
    return data.site_data, page.write_front_end


def tile_source(tiles: Any) -> dict[str, str] | None:
    """``{"url", "attribution"}`` of a base map: an xyzservices name or a URL template.

    None stays None (no base map). Anything else that is not a known provider nor an
    ``http(s)://`` template with ``{z}``, ``{x}`` and ``{y}`` is refused.
    """
    if tiles is None:
        return None
    fix = "pass a name such as 'OpenStreetMap.Mapnik' or a URL https://host/{z}/{x}/{y}.png"
    if not isinstance(tiles, str) or not tiles.strip():
        raise SpecError(f"tiles must be a provider name or a URL template, got {tiles!r}; {fix}")
    text = tiles.strip()
    if text.lower().startswith(("http://", "https://")):
        if not all(part in text for part in ("{z}", "{x}", "{y}")):
            raise SpecError(f"tiles URL {text!r} lacks {{z}}, {{x}} or {{y}}; {fix}")
        host = text.split("/")[2]
        return {"url": text, "attribution": f"Tiles: {host}"}
    try:
        import xyzservices
    except ImportError:
        raise MissingDependencyError(
            f"tiles={text!r} names a tile provider, which needs xyzservices (pip install "
            "xyzservices); or pass a URL template"
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # providers' notices (API keys) are for their users
        flat: dict[str, Any] = dict(xyzservices.providers.flatten())
        provider: Any = flat.get(text.replace(".", "_"))
        if provider is None:
            try:
                provider = xyzservices.providers.query_name(text)
            except ValueError:
                bunch: Any = getattr(xyzservices.providers, text, None)
                leaves = bunch.flatten() if hasattr(bunch, "flatten") else {}
                provider = next(iter(leaves.values()), None)
        if provider is None:
            raise SpecError(f"unknown tiles {text!r}; {fix}")
        return {"url": provider.build_url(), "attribution": str(provider.get("attribution", ""))}


def check_out(out: Path) -> Path:
    """The site's folder (absolute), refused unless new, empty, or a dpmap site (its marker)."""
    out = Path(os.path.abspath(out))
    try:
        if out.exists() and not out.is_dir():
            raise DataFileError(
                f"output {str(out)!r} exists and is not a folder; choose a folder for the site"
            )
        if not out.parent.is_dir():
            raise DataFileError(
                f"folder {str(out.parent)!r} does not exist; create it or choose another output"
            )
        if out.is_dir() and any(out.iterdir()) and not _is_site(out):
            raise DataFileError(
                f"output folder {str(out)!r} exists and is not a dpmap site (no {MARKER}); "
                "choose a new or empty folder (a site written by dpmap publish is replaced)"
            )
    except OSError as exc:
        if isinstance(exc, DataFileError):
            raise
        raise DataFileError(
            f"cannot use the output folder {str(out)!r} ({exc.strerror or exc}); choose another"
        ) from None
    return out


def _check_inputs_outside(out: Path, *inputs: Any) -> None:
    """Refuse an input file inside the folder that publish replaces (it would be deleted)."""
    paths: list[Path] = []
    for item in inputs:
        values = item.values() if isinstance(item, Mapping) else [item]
        for value in values:
            many = value if isinstance(value, list | tuple) else [value]
            paths += [Path(v) for v in many if isinstance(v, str | os.PathLike)]
    for path in paths:
        if Path(os.path.abspath(path)).is_relative_to(out):
            raise SpecError(
                f"input {str(path)!r} is inside the output folder {str(out)!r}, which publish "
                "replaces; move the file out of it or choose another output folder"
            )


def _is_site(folder: Path) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("dpmap_site") == 1


def _temp_folder(out: Path) -> Path:
    """A new folder beside ``out`` (same file system: the swap is a rename)."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise DataFileError(
            f"cannot write beside {str(out)!r} ({exc.strerror or exc}); choose another output"
        ) from None
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # a web server must read it; mkdtemp makes 0700
    return tmp


def _write_manifests(folder: Path, layers: Sequence[SiteLayer]) -> None:
    target = folder / MANIFESTS
    target.mkdir(parents=True, exist_ok=True)
    for layer in layers:
        for period in layer.periods:
            text = json.dumps(period.release.manifest, indent=2, ensure_ascii=False)
            (target / manifest_file(layer, period)).write_text(text + "\n", encoding="utf-8")


def _swap_in(tmp: Path, out: Path) -> None:
    """Move the finished site to ``out``; an old site there is set aside, then deleted (or
    put back if the move fails)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(out, old)
        except OSError as exc:
            raise DataFileError(
                f"cannot replace the site {str(out)!r} ({exc.strerror or exc}); nothing was "
                "changed there"
            ) from None
    try:
        os.rename(tmp, out)
    except OSError as exc:
        if old is not None:
            os.rename(old, out)
        raise DataFileError(
            f"cannot move the site into {str(out)!r} ({exc.strerror or exc}); nothing was "
            "changed there, choose another output"
        ) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
