"""Readers and writers: points in, releases out.

Points can be a pandas, polars or GeoPandas DataFrame, a polars LazyFrame, or the path
of a CSV or Parquet file. Releases are written as GeoJSON, GeoParquet or CSV, each with
a ``<name>.manifest.json`` beside it (and the manifest embedded in the file), always via
a temporary file and an atomic rename so that a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpmap.errors import DataFileError, InputError, ReleaseFormatError

if TYPE_CHECKING:  # polars is imported by the readers that need it: the path helpers stay light
    import polars as pl

    from dpmap.spec import ReleaseSpec

__all__ = ["atomic_write", "histogram_path", "manifest_path", "read_points"]

_POINT_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def is_parquet_path(points: Any) -> bool:
    """Whether ``points`` is a path that :func:`read_points` reads as Parquet."""
    if not isinstance(points, (str, os.PathLike)):
        return False
    return _POINT_SUFFIXES.get(Path(os.fspath(points)).suffix.lower()) == "parquet"


def read_points(points: Any, spec: ReleaseSpec) -> pl.LazyFrame:
    """Adapt any supported input to a polars LazyFrame (no validation of values yet).

    A GeoDataFrame of points is reprojected to EPSG:4326 and its coordinates are used
    (``lat``/``lng`` names are then ignored); one without a CRS is refused.
    """
    import polars as pl

    if isinstance(points, (str, os.PathLike)):
        return _scan_file(os.fspath(points))
    if isinstance(points, pl.LazyFrame):
        return points
    if isinstance(points, pl.DataFrame):
        return points.lazy()
    try:
        import geopandas as gpd
        import pandas as pd
    except ImportError:  # pragma: no cover - core dependencies
        raise InputError("pandas/geopandas are needed to read this input") from None
    if isinstance(points, gpd.GeoDataFrame):
        return _from_geodataframe(points, spec)
    if isinstance(points, pd.DataFrame):
        try:
            return pl.from_pandas(points).lazy()
        except Exception as exc:  # pyarrow raises various types for mixed object columns
            bad = []
            for col in points.columns:
                try:
                    pl.from_pandas(points[[col]])
                except Exception:
                    bad.append(col)
            what = (
                f"the column(s) {bad[:5]!r} mix types" if bad else "its columns cannot be converted"
            )
            raise InputError(
                f"cannot convert the pandas DataFrame: {what}; make each column a single type "
                "(e.g. df[col].astype(str) for ids)"
            ) from exc
    raise InputError(
        f"cannot read points from an object of type {type(points).__name__}; pass a pandas, polars "
        "or GeoPandas DataFrame, or the path of a .csv or .parquet file"
    )


def points_file_kind(path: str) -> str:
    """``"csv"`` or ``"parquet"`` for an existing, non-empty points file; else a clear error."""
    suffix = Path(path).suffix.lower()
    if suffix not in _POINT_SUFFIXES:
        raise DataFileError(
            f"points file {path!r} has unsupported type {suffix or '(none)'!r}; use .csv or .parquet"
        )
    if not os.path.isfile(path):
        raise DataFileError(f"points file {path!r} does not exist; check the path")
    if os.path.getsize(path) == 0:
        raise InputError(f"points file {path!r} is empty; pass a file with a header and rows")
    return _POINT_SUFFIXES[suffix]


#: How much of a CSV file is read to tell its line endings (a header and some rows).
_EOL_SAMPLE = 1 << 20


def csv_line_ending(path: str) -> str:
    """``"\r"`` for a file with old Mac (CR-only) line endings, else ``"\n"`` (which also
    reads CRLF: polars drops the ``\r``). Polars splits lines on one byte only, so a CR-only
    file would otherwise read as a single header line and 0 rows. Decided from the first
    MiB (a carriage return and no line feed there), without reading the file twice."""
    try:
        with open(path, "rb") as fh:
            sample = fh.read(_EOL_SAMPLE)
    except OSError:
        return "\n"  # the scan reports an unreadable file with its own message
    return "\r" if b"\r" in sample and b"\n" not in sample else "\n"


def _scan_file(path: str) -> pl.LazyFrame:
    import polars as pl

    kind = points_file_kind(path)
    try:
        if kind == "csv":
            lf = pl.scan_csv(path, infer_schema_length=10_000, eol_char=csv_line_ending(path))
        else:
            lf = pl.scan_parquet(path)
        lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataFileError(
            f"cannot read points file {path!r}: {safe_message(exc)}; check that it is a complete, "
            "valid CSV/Parquet file (re-export it)"
        ) from exc
    return lf


def _from_geodataframe(gdf: Any, spec: ReleaseSpec) -> pl.LazyFrame:
    if gdf.crs is None:
        raise InputError(
            "the points GeoDataFrame has no CRS, so dpmap cannot tell whether it is in degrees; set "
            "it, e.g. points.set_crs('EPSG:4326')"
        )
    geom = gdf.geometry
    kinds = set(geom.geom_type.dropna().unique())
    if kinds - {"Point"}:
        raise InputError(
            f"the points GeoDataFrame holds {sorted(kinds)} geometries; pass Point geometries "
            "(e.g. gdf.representative_point() for areas)"
        )
    if not gdf.crs.equals("EPSG:4326"):
        geom = geom.to_crs("EPSG:4326")
    import pandas as pd
    import polars as pl

    df = pd.DataFrame(gdf.drop(columns=[gdf.geometry.name]))
    df = df.drop(columns=[c for c in (spec.lat, spec.lng) if c in df.columns])
    empty = geom.isna() | geom.is_empty
    df[spec.lng] = geom.x.where(~empty).to_numpy(dtype="float64", na_value=float("nan"))
    df[spec.lat] = geom.y.where(~empty).to_numpy(dtype="float64", na_value=float("nan"))
    try:
        return pl.from_pandas(df).lazy()
    except Exception as exc:
        raise InputError(f"cannot convert the GeoDataFrame's columns ({exc})") from exc


def safe_message(exc: BaseException) -> str:
    """The first line of a parser's message, without the data it quotes."""
    text = str(exc).strip().splitlines()
    return _QUOTED.sub("<value>", text[0] if text else type(exc).__name__)


_QUOTED = re.compile(r"`[^`]*`?|\"[^\"]*\"?|'[^']*'?")


def manifest_path(path: str | os.PathLike[str]) -> Path:
    """``map.geojson`` -> ``map.manifest.json`` (beside it)."""
    p = Path(path)
    return p.with_name(p.stem + ".manifest.json")


def histogram_path(path: str | os.PathLike[str]) -> Path:
    """``map.geojson`` -> ``map.histogram.parquet`` (beside it): a release's noisy value
    histogram."""
    p = Path(path)
    return p.with_name(p.stem + ".histogram.parquet")


def temp_beside(target: Path, what: str) -> Path:
    """Create (empty, mode 0600) the temporary file :func:`atomic_write` writes ``target``
    through, and return its path; a folder that refuses it is a one-line DataFileError
    naming ``what``. The CLI calls it (and removes the file) to check an output before
    any budget is spent."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise DataFileError(
            f"cannot write {what} ({exc.strerror or exc}); choose another path"
        ) from exc
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_write(paths: list[Path]) -> Iterator[list[Path]]:
    """Yield temporary paths; on success move them all onto their targets, else leave nothing.

    Targets that already exist are set aside first and put back if any move fails, so a
    failed write neither leaves a half-written release nor destroys an older one.
    """
    temps: list[Path] = []
    for p in paths:
        try:
            is_folder = p.is_dir()
        except OSError as exc:  # e.g. ENAMETOOLONG
            raise DataFileError(
                f"cannot write {str(p)!r} ({exc.strerror or exc}); choose another path"
            ) from exc
        if is_folder:
            raise DataFileError(f"{str(p)!r} is a folder; remove it or choose another path")
        if not p.parent.is_dir():
            raise DataFileError(
                f"folder {str(p.parent)!r} does not exist; create it or choose another path"
            )
    try:
        for p in paths:
            temps.append(temp_beside(p, repr(str(p))))
        yield temps
        umask = _umask()
        for tmp in temps:  # mkstemp makes 0600 files; a published file gets the usual mode
            os.chmod(tmp, 0o666 & ~umask)
        _replace_all(temps, paths)
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _replace_all(temps: list[Path], targets: list[Path]) -> None:
    """Move every temp onto its target, all or nothing."""
    backups: list[tuple[Path, Path]] = []
    done: list[Path] = []
    try:
        for target in targets:
            if target.exists():
                backup = target.with_name(f".{target.name}.{os.getpid()}.bak")
                os.replace(target, backup)
                backups.append((backup, target))
        for tmp, target in zip(temps, targets, strict=True):
            os.replace(tmp, target)
            done.append(target)
    except OSError as exc:
        for target in done:
            with contextlib.suppress(OSError):
                target.unlink()
        for backup, target in backups:
            with contextlib.suppress(OSError):
                os.replace(backup, target)
        raise DataFileError(
            f"cannot write {str(exc.filename or targets[0])!r} ({exc.strerror or exc}); remove it or "
            "choose another path"
        ) from exc
    for backup, _ in backups:
        with contextlib.suppress(OSError):
            backup.unlink()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ReleaseFormatError(f"no manifest {str(path)!r} beside the release") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReleaseFormatError(f"manifest {str(path)!r} is not readable JSON ({exc})") from exc
    if not isinstance(data, dict) or "dpmap_release" not in data:
        raise ReleaseFormatError(f"{str(path)!r} is not a dpmap manifest")
    return data
