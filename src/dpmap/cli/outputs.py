"""Output files of the commands: refused before any work (and before any budget is spent)
when they exist without --overwrite, would overwrite an input, or cannot be written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dpmap.errors import DataFileError, DpmapError, SpecError
from dpmap.io import temp_beside

__all__ = ["check_new_files", "check_target", "same_file_key"]


def check_new_files(
    targets: list[tuple[str, Path]], *, overwrite: bool, inputs: tuple[Any, ...]
) -> None:
    """Refuse, before any work, outputs that exist (without --overwrite) or cannot be written."""
    used = {same_file_key(Path(p)) for p in inputs if p is not None}
    for flag, target in targets:
        try:
            check_target(flag, target, overwrite=overwrite, used=used)
        except DpmapError:  # DataFileError is an OSError too: already one clear line
            raise
        except OSError as exc:  # e.g. ENAMETOOLONG from the file system
            raise DataFileError(
                f"cannot write {flag} {str(target)!r} ({exc.strerror or exc}); choose another path"
            ) from None


def check_target(flag: str, target: Path, *, overwrite: bool, used: set[Path]) -> None:
    """Refuse one output path: a missing folder, an input (``used``), a folder, an existing
    file without --overwrite, or a folder where its temporary file cannot be made."""
    if not target.parent.is_dir():
        raise DataFileError(
            f"folder {str(target.parent)!r} does not exist; create it or choose another path"
        )
    if same_file_key(target) in used:
        raise SpecError(
            f"{flag} {str(target)!r} is an input of this release (the points or the "
            "ledger); choose another output path"
        )
    if target.is_dir():
        raise DataFileError(f"{flag} {str(target)!r} is a folder; choose a file path")
    if target.exists() and not overwrite:
        raise DataFileError(
            f"{flag} {str(target)!r} already exists; nothing was spent. Choose another "
            "path, or pass --overwrite to replace it"
        )
    # the very temporary file the writer will make (io.atomic_write): the folder must be
    # writable and the temporary name (longer than the target's) must be allowed
    temp_beside(target, f"{flag} {str(target)!r}").unlink()


def same_file_key(path: Path) -> Path:
    """``path`` resolved (absolute when it cannot be resolved), to compare files."""
    try:
        return path.resolve()
    except OSError:
        return path.absolute()
