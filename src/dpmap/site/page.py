"""The website's front end: index.html, its scripts and styles, and data/site-data.js.

:func:`write_front_end` writes into a folder that :func:`dpmap.site.build.publish` created
(it writes method.html, the manifests and the marker). Leaflet is copied from the pip
package ``django-js-lib-leaflet`` (as :mod:`dpmap.maps.interactive` inlines it); nothing is
loaded from the network.

The page's test hooks (``assets/site.js``): ``window.dpmapSite`` with ``ready`` (a Promise,
resolved after the first full draw, when ``performance.mark("dpmap-first-draw")`` is set),
``map`` (the Leaflet map), ``state`` ({layer, period, stat}: indexes and a statistic key,
"trend" for the trend layer), ``around(lat, lng, radius_m)`` (what the page shows: ``{cells,
count, count_moe, sum, sum_moe, area_km2, coverage, radius_m, lat, lng, text, note}`` with
``text`` exactly ``str(rel.around(..., noun=noun))``, or ``{error}`` with rel.around's
message), ``csv()`` (the text the CSV button downloads) and ``drawTimes`` (ms and shapes
per draw). Elements: ``#map``, ``#layer-select`` (inside ``#layer-box``, hidden with one
layer), ``#stat-select``, ``#period-slider`` and ``#period-label`` (inside ``#period-box``,
hidden with one period), ``#around-lat``, ``#around-lng``, ``#around-radius``,
``#around-go``, ``#around-answer`` (``data-cells``, ``data-count``, ``data-count-moe``),
``#table-search``, ``#data-table`` (``tbody tr[data-id]``, 100 rows a page, ``#page-prev``,
``#page-next``, ``#table-page``), ``#csv-download`` (``<layer>-<period>-<stat>.csv``, period
"all" for a layer of one release without a label; every row the search keeps, in the
shown order, all pages), ``#legend``, links to method.html.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from dpmap.errors import missing_extra
from dpmap.maps.interactive import LEAFLET_PACKAGE, script_json

ASSETS = ("site.js", "geo.js", "site.css")
_LEAFLET_MODULE = "js_lib_leaflet"
_LEAFLET_DIR = "static/js_lib_leaflet"


def _leaflet_folder() -> Any:
    from importlib import resources

    try:
        folder = resources.files(_LEAFLET_MODULE).joinpath(_LEAFLET_DIR)
        folder.joinpath("leaflet.js").read_bytes()
    except (ImportError, OSError):
        raise missing_extra(LEAFLET_PACKAGE, "plot") from None
    return folder


def write_front_end(folder: Path, data: dict[str, Any], *, title: str) -> None:
    """Write index.html, assets/ (Leaflet, site.js, geo.js, site.css) and data/site-data.js."""
    from importlib import resources

    folder = Path(folder)
    assets, images = folder / "assets", folder / "assets" / "images"
    images.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    leaflet = _leaflet_folder()
    js = leaflet.joinpath("leaflet.js").read_text(encoding="utf-8")
    # the source map is not shipped (browsers would try to load it)
    js = re.sub(r"\n//# sourceMappingURL=\S+\s*$", "\n", js)
    (assets / "leaflet.js").write_text(js, encoding="utf-8")
    (assets / "leaflet.css").write_text(
        leaflet.joinpath("leaflet.css").read_text(encoding="utf-8"), encoding="utf-8"
    )
    for image in leaflet.joinpath("images").iterdir():
        if image.name.endswith(".png"):
            (images / image.name).write_bytes(image.read_bytes())
    own = resources.files("dpmap.site").joinpath("assets")
    for name in ASSETS:
        (assets / name).write_bytes(own.joinpath(name).read_bytes())
    page = own.joinpath("index.html").read_text(encoding="utf-8")
    (folder / "index.html").write_text(
        page.replace("__TITLE__", html.escape(title)), encoding="utf-8"
    )
    (folder / "data" / "site-data.js").write_text(
        f"window.DPMAP_SITE = {script_json(data)};\n", encoding="utf-8"
    )
