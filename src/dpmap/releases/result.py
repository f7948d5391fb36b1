"""The immutable Release: cells, manifest, files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from dpmap.analysis import aggregate_to, around
from dpmap.analysis.tables import category_total_cells, press_table
from dpmap.analysis.totals import panel_periods
from dpmap.analysis.trends import series, trend
from dpmap.designs.time_levels import coarse_periods
from dpmap.designs.zones import zone_column
from dpmap.errors import DataFileError, ReleaseFormatError, SpecError
from dpmap.io import atomic_write, histogram_path, manifest_path, read_manifest
from dpmap.maps.interactive import explore_release, write_html
from dpmap.maps.periods import explore_periods, plot_periods
from dpmap.maps.static import plot_release
from dpmap.releases.cells import KEY_COLUMNS, UNBIASED_COLUMNS, normalise_dtypes


class Release:
    """An immutable differentially private map release: a cell table and its manifest.

    Attributes
    ----------
    cells
        GeoDataFrame (EPSG:4326), one row per public cell (× category): ``cell``,
        ``resolution``, ``count``, ``count_moe``, [``sum``, ``sum_moe``, ``mean``,
        ``mean_moe``], ``suppressed``, ``geometry``. A copy on every access.
    manifest
        JSON-serialisable dict describing the guarantee and the parameters (a copy).
    """

    __slots__ = ("_cells", "_estimates", "_histogram", "_manifest")
    _cells: Any
    _manifest: dict[str, Any]
    _estimates: pd.DataFrame | None
    _histogram: pd.DataFrame | None

    def __init__(
        self,
        cells: Any,
        manifest: dict[str, Any],
        estimates: pd.DataFrame | None = None,
        *,
        histogram: pd.DataFrame | None = None,
    ) -> None:
        manifest = json.loads(json.dumps(manifest))  # deep copy, and proves it is JSON-serialisable
        manifest["columns"] = [c for c in cells.columns]
        object.__setattr__(self, "_cells", cells)
        object.__setattr__(self, "_manifest", manifest)
        object.__setattr__(self, "_estimates", estimates)
        object.__setattr__(self, "_histogram", histogram)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Release is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("a Release is immutable")

    @property
    def cells(self) -> Any:
        return self._cells.copy()

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._manifest))

    @property
    def estimates(self) -> pd.DataFrame | None:
        """Unbiased noisy estimates and noise variances of every row, suppressed ones included.

        Columns: ``cell``, ``resolution``, [``category``], ``count``, ``count_var``,
        [``sum``, ``sum_var``]. These are the values to add up over areas (suppression
        hides small noisy counts and so biases sums upward); they are noisy outputs of the
        same measurement, so using them costs no privacy. ``None`` for a release read from a
        file written without them (see :meth:`to_file`), in which case the published
        values of unsuppressed rows are used where possible.
        """
        return None if self._estimates is None else self._estimates.copy()

    @property
    def histogram(self) -> pd.DataFrame | None:
        """The noisy value histogram of every row of a release with quantiles or value bands.

        Columns: the row key (``cell``, ``resolution`` [, ``category``], or a zone
        release's name column), ``hist_var`` (the noise variance of each of the row's
        nodes) and ``node_a_b``, the noisy count of the values in [a, b), for every node of
        the public value tree (``manifest["value_distribution"]["tree"]``), level by level.
        A coarser cell of a hierarchical release holds the sum of its finest children's.
        It is the measured output the ``q…`` and ``band_…`` columns are computed from, so
        adding it up (roll-ups) costs no privacy. ``None`` without a histogram, or for a
        release read from a file written without it; a release read from a file written
        without ``include_unbiased=True`` holds the unsuppressed rows only.
        """
        return None if self._histogram is None else self._histogram.copy()

    @property
    def epsilon(self) -> float:
        return float(self._manifest["privacy"]["epsilon"])

    @property
    def delta(self) -> float:
        return float(self._manifest["privacy"]["delta"])

    @property
    def privacy_statement(self) -> str:
        return str(self._manifest["privacy"]["statement"])

    @property
    def fingerprint(self) -> str:
        """sha256 of the published table (cells and numbers), to identify this output."""
        cols = [c for c in self._cells.columns if c != "geometry"]
        csv = self._cells[cols].to_csv(index=False).encode()
        return "sha256:" + hashlib.sha256(csv).hexdigest()

    def __repr__(self) -> str:
        m = self._manifest
        by = (m.get("cell_selection") or {}).get("by")
        n = len(self._cells)
        if m.get("resolution") is None and by:
            rows = f"{n} zones (by {by!r})"
        else:
            rows = f"{n} rows at H3 resolution {m['resolution']}"
        labels = panel_periods(m)
        if labels is not None:
            rows += f", {len(labels)} periods {labels[0]} to {labels[-1]}"
        elif m.get("period") is not None:
            rows += f", period {m['period']}"
        return (
            f"<dpmap.Release: {rows}, "
            f"ε = {m['privacy']['epsilon']:.4g}, δ = {m['privacy']['delta']:.3g}, "
            f"{int(self._cells['suppressed'].sum())} suppressed>"
        )

    # -- panels (one row per cell and period) ----------------------------------------------
    @property
    def periods(self) -> list[str] | None:
        """The public periods of a panel release (``time=``, ``periods=``), oldest first;
        None for a release of one period. With ``time_levels`` these are the finest periods
        only; the coarse ones (quarters, years) are rows of the table too, and ``at`` takes
        them."""
        return panel_periods(self._manifest)

    def at(self, period: Any) -> Release:
        """One period of a panel release, as an ordinary release of that period.

        ``period``: a label such as ``"2026-03"`` (or a ``pd.Period``); with
        ``time_levels``, a coarse period such as ``"2026Q1"`` or ``"2026"`` too. The rows are the
        panel's rows of that period (their noise was drawn once, in the panel's one
        measurement; nothing is spent); the manifest records the ``period`` and keeps the
        panel's privacy guarantee, which covers all its periods together.
        """
        labels = self.periods
        if labels is None:
            raise SpecError(
                "at() picks one period of a panel release (made with time=, periods= and "
                "max_periods=); this release covers one period"
            )
        label = str(period)
        coarse = coarse_periods(self._manifest)  # a panel with time levels: quarters, years
        if label not in labels and label not in coarse:
            more = f" or a coarse period ({', '.join(coarse[:4])}, ...)" if coarse else ""
            raise SpecError(
                f"period {label!r} is not one of this panel's {len(labels)} periods "
                f"({labels[0]} to {labels[-1]}); pass one of rel.periods{more}"
            )

        def pick(frame: Any) -> Any:
            if frame is None:
                return None
            mask = frame["period"].astype(str).to_numpy() == label
            drop = [c for c in ("period", "time_level") if c in frame.columns]
            return frame[mask].drop(columns=drop).reset_index(drop=True)

        cells = pick(self._cells)
        manifest = {k: v for k, v in self._manifest.items() if k != "periods"}
        manifest.update(
            period=label,
            rows=len(cells),
            panel={"periods": labels, "fingerprint": self.fingerprint},
        )
        return Release(cells, manifest, pick(self._estimates), histogram=pick(self._histogram))

    def series(self, zones: Any = None, by: str | None = "name", **options: Any) -> Any:
        """A panel's estimates per period (long table); see :func:`dpmap.series`."""
        return series(self, zones, by, **options)

    def trend(self, zones: Any = None, by: str | None = "name", **options: Any) -> Any:
        """A panel's slope over its periods, per cell or zone; see :func:`dpmap.trend`."""
        return trend(self, zones, by, **options)

    # -- output --------------------------------------------------------------------------
    def to_file(self, path: str | Path, *, include_unbiased: bool = False) -> Path:
        """Write the release (``.geojson``, ``.parquet`` or ``.csv``) and ``<name>.manifest.json``.

        Both files are written to temporary names and renamed only when complete.
        Private diagnostics are never written (a Release does not hold any).

        ``include_unbiased=True`` adds the unbiased noisy estimates of every row (suppressed
        rows included) as ``count_unbiased``, ``count_var`` [``sum_unbiased``, ``sum_var``],
        so that readers can add up areas without the bias of suppression. They are noisy
        values of the same release: no privacy cost, but they show what suppression hides
        from the display.

        A release with quantiles or value bands also writes its noisy value histogram
        (:attr:`histogram`) beside the table as ``<name>.histogram.parquet``, so that its
        roll-ups have quantiles too: the unsuppressed rows only, like their counts, and
        every row with ``include_unbiased=True``.
        """
        path = Path(path)
        kind = release_kind(path)
        targets = [path, manifest_path(path)]
        table, manifest = self._cells, self._manifest
        if include_unbiased:
            table, manifest = self._with_unbiased(table, manifest)
        hist = self._histogram_to_write(include_unbiased)
        if hist is not None:
            targets.append(histogram_path(path))
            manifest = {
                **manifest,
                "histogram": {
                    "file": targets[-1].name,
                    "rows": len(hist),
                    "suppressed_rows_included": include_unbiased,
                },
            }
        manifest_text = json.dumps(manifest, indent=2, ensure_ascii=False)
        with atomic_write(targets) as (tmp_data, tmp_manifest, *tmp_hist):
            if hist is not None:
                hist.to_parquet(tmp_hist[0], index=False)
            if kind == "geojson":
                obj = json.loads(table.to_json(drop_id=True, na="null"))
                obj["dpmap_manifest"] = manifest
                tmp_data.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
            elif kind == "parquet":
                _write_geoparquet(table, tmp_data, manifest_text)
            else:
                df = pd.DataFrame(table.drop(columns="geometry"))
                df["geometry"] = table.geometry.to_wkt(rounding_precision=-1)
                df.to_csv(tmp_data, index=False)
            tmp_manifest.write_text(manifest_text + "\n", encoding="utf-8")
        return path

    def _with_unbiased(self, table: Any, manifest: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The table with the unbiased estimates' columns, and the manifest naming them."""
        if self._estimates is None:
            raise SpecError(
                "this release holds no unbiased estimates (it was read from a file written "
                "without them); write it with include_unbiased=False"
            )
        table = table.copy()
        for col, name in UNBIASED_COLUMNS.items():
            if col in self._estimates:
                table.insert(len(table.columns) - 1, name, self._estimates[col].to_numpy())
        names = [UNBIASED_COLUMNS[c] for c in UNBIASED_COLUMNS if c in self._estimates]
        return table, {**manifest, "unbiased_columns": names}

    def _histogram_to_write(self, include_unbiased: bool) -> pd.DataFrame | None:
        """The histogram rows a file gets: all of them with the unbiased estimates, else
        those of the unsuppressed rows (a suppressed row's histogram stays hidden, as its
        count does)."""
        hist = self._histogram
        if hist is None or include_unbiased:
            return hist
        keys = [c for c in hist.columns if c in self._cells.columns]
        shown = self._cells.loc[~self._cells["suppressed"].to_numpy(bool), keys]
        visible = pd.MultiIndex.from_frame(hist[keys]).isin(pd.MultiIndex.from_frame(shown))
        return hist[visible].reset_index(drop=True)

    def plot(self, path: str | Path | None = None, **kwargs: Any) -> Any:
        """Static map (matplotlib); see :func:`dpmap.maps.static.plot_release`. A release with
        categories maps their total unless ``category=`` names one (as ``dpmap plot``)."""
        if self.periods is not None:  # a panel: one small map per period, one colour scale
            return plot_periods(self, path=path, **kwargs)
        cells, kwargs["category"] = self._cells_to_map(kwargs.get("category"), kwargs)
        return plot_release(cells, self._manifest, path, **kwargs)

    def _cells_to_map(self, category: Any, kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """The rows a map of ``category`` draws: with a category breakdown and no category
        (or ``"all"``, when no category has that name), the total of all categories (and a
        title that says so, unless one is given)."""
        cells = self._cells
        if "category" not in cells.columns or category not in (None, "all"):
            return cells, category
        if category == "all" and "all" in set(cells["category"].astype(str)):
            return cells, category
        base = self._manifest.get("title") or "dpmap release"
        kwargs.setdefault("title", f"{base} — total of all categories")
        return category_total_cells(self), None

    # -- analysis (dpmap.analysis) -------------------------------------------------------
    def aggregate_to(
        self, polygons: Any, by: str | None = "name", *, resolution: int | None = None
    ) -> Any:
        """Totals with margins over user polygons; see :func:`dpmap.analysis.aggregate_to`."""
        return aggregate_to(self, polygons, by, resolution=resolution)

    def table(self, zones: Any = None, by: str | None = "name", **options: Any) -> Any:
        """Press-ready table of the cells, or of ``zones`` (rolled up with :meth:`aggregate_to`);
        see :func:`dpmap.analysis.tables.press_table`."""
        source = self if zones is None else self.aggregate_to(zones, by)
        return press_table(source, release=self, **options)

    def around(
        self,
        lat: float,
        lng: float,
        radius_m: float = 500.0,
        *,
        resolution: int | None = None,
        noun: str = "records",
    ) -> Any:
        """Totals of the whole cells overlapping a circle; see :func:`dpmap.analysis.nearby`."""
        return around(self, lat, lng, radius_m, resolution=resolution, noun=noun)

    # -- end of analysis -----------------------------------------------------------------

    # -- interactive map (dpmap.maps.interactive) ----------------------------------------------------
    def explore(
        self, column: str = "count", category: str | None = None, tiles: Any = None, **kwargs: Any
    ) -> Any:
        """Interactive map (a ``folium.Map``); see :func:`dpmap.maps.interactive.explore_release`. A
        release with categories maps their total unless ``category=`` names one."""
        if self.periods is not None:  # a panel: one layer per period, with a slider
            return explore_periods(self, statistic=column, category=category, tiles=tiles, **kwargs)
        cells, category = self._cells_to_map(category, kwargs)
        return explore_release(
            cells, self._manifest, column=column, category=category, tiles=tiles, **kwargs
        )

    def to_html(
        self, path: str | Path, column: str = "count", category: str | None = None, **kwargs: Any
    ) -> Path:
        """Self-contained interactive HTML map (works offline); see
        :func:`dpmap.maps.interactive.write_html`. A release with categories maps their total unless
        ``category=`` names one."""
        if self.periods is not None:
            explore_periods(self, statistic=column, category=category, path=path, **kwargs)
            return Path(path)
        cells, category = self._cells_to_map(category, kwargs)
        return write_html(cells, self._manifest, path, column=column, category=category, **kwargs)


def release_kind(path: Path) -> str:
    """The file type of a release written to ``path`` (from its suffix): refused before any
    data is read when dpmap cannot write it."""
    suffix = path.suffix.lower()
    kinds = {".geojson": "geojson", ".json": "geojson", ".parquet": "parquet", ".csv": "csv"}
    if suffix not in kinds:
        raise DataFileError(
            f"cannot write a release as {suffix or '(no suffix)'!r} ({str(path)!r}); use .geojson, .parquet or .csv"
        )
    return kinds[suffix]


def _read_histogram(path: Path, entry: Any) -> pd.DataFrame | None:
    """The histogram written beside a release (None when the manifest names none or the
    file is gone: its roll-ups then say how to get it)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        return None
    hpath = path.with_name(Path(entry["file"]).name)
    if not hpath.is_file():
        return None
    try:
        hist = pd.read_parquet(hpath)
    except (OSError, ValueError) as exc:
        raise ReleaseFormatError(
            f"{str(hpath)!r} is not a readable value histogram ({exc}); delete it or read the "
            "publisher's copy"
        ) from exc
    if "hist_var" not in hist.columns:
        raise ReleaseFormatError(
            f"{str(hpath)!r} has no column 'hist_var': it is not a dpmap value histogram; delete "
            "it or read the publisher's copy"
        )
    for col in ("cell", "category"):
        if col in hist:
            hist[col] = hist[col].astype(object)
    return hist


def _write_geoparquet(gdf: Any, path: Path, manifest_text: str) -> None:
    import pyarrow.parquet as pq

    gdf.to_parquet(path, index=False)
    table = pq.read_table(path)
    meta = dict(table.schema.metadata or {})
    meta[b"dpmap_manifest"] = manifest_text.encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


def _read_csv(path: Path, zone: str | None) -> pd.DataFrame:
    """A release's CSV table: cells and categories as text; a zone release's names exactly
    as written ("007", "NaN" and "" are names, not numbers or missing values)."""
    text = {"cell": str, "category": str}
    if zone is None:
        return pd.read_csv(path, dtype=text)
    columns = pd.read_csv(path, nrows=0).columns
    missing = ["", "NaN", "nan", "NA", "<NA>", "null", "None"]
    return pd.read_csv(
        path,
        dtype={**text, zone: str},
        keep_default_na=False,
        na_values={c: missing for c in columns if c != zone},
    )


def read_release(path: str | Path) -> Release:
    """Read a published release (GeoJSON, GeoParquet or CSV with its manifest)."""
    import geopandas as gpd
    import shapely

    path = Path(path)
    kind = release_kind(path)
    if not path.is_file():
        raise DataFileError(f"release file {str(path)!r} does not exist; check the path")
    mpath = manifest_path(path)
    try:
        if kind == "geojson":
            with open(path, encoding="utf-8") as fh:
                obj = json.load(fh)
            embedded = obj.pop("dpmap_manifest", None) if isinstance(obj, dict) else None
            gdf = gpd.GeoDataFrame.from_features(obj["features"], crs="EPSG:4326")
        elif kind == "parquet":
            import pyarrow.parquet as pq

            gdf = gpd.read_parquet(path)
            raw = (pq.read_schema(path).metadata or {}).get(b"dpmap_manifest")
            embedded = json.loads(raw) if raw else None
        else:
            df = _read_csv(path, zone_column(read_manifest(mpath)) if mpath.exists() else None)
            gdf = gpd.GeoDataFrame(
                df.drop(columns="geometry"),
                geometry=shapely.from_wkt(df["geometry"].to_numpy()),
                crs="EPSG:4326",
            )
            embedded = None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReleaseFormatError(f"{str(path)!r} is not a readable dpmap release ({exc})") from exc
    manifest = read_manifest(mpath) if (mpath.exists() or embedded is None) else embedded
    missing = {zone_column(manifest) or "cell", "count", "suppressed"} - set(gdf.columns)
    if missing:
        raise ReleaseFormatError(
            f"{str(path)!r} lacks the columns {sorted(missing)}; it is not a dpmap release"
        )
    unbiased = {
        c: gdf[n].astype("float64").to_numpy()
        for c, n in UNBIASED_COLUMNS.items()
        if n in gdf.columns
    }
    manifest.pop("unbiased_columns", None)
    histogram = _read_histogram(path, manifest.pop("histogram", None))
    order = [c for c in manifest.get("columns") or gdf.columns if c in gdf.columns]
    gdf = gdf[order]
    hier = manifest.get("hierarchy") or {}
    integer = not hier or bool(hier.get("integers"))
    if (manifest.get("adaptive") or {}).get("consistency") or manifest.get("time_levels"):
        integer = False  # least-squares estimates (adaptive leaves, time levels)

    gdf = gpd.GeoDataFrame(
        normalise_dtypes(pd.DataFrame(gdf), integer=integer), geometry="geometry", crs="EPSG:4326"
    )
    estimates = None
    if unbiased:
        keys = [c for c in (zone_column(manifest), *KEY_COLUMNS) if c and c in gdf]
        estimates = pd.DataFrame({c: gdf[c].to_numpy() for c in keys})
        for col, values in unbiased.items():
            estimates[col] = values
    return Release(gdf, manifest, estimates, histogram=histogram)
