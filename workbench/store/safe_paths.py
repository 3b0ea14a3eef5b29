"""One guard for every path that comes from data (an archive, a dataset document, a recipe
id) and for every delete: the path must stay inside the folder it belongs to.

>>> inside(project.folder, "synthetic/r1", what="recipe id")     # a Path, or UnsafePathError
>>> remove_inside(project.folder, project.folder / "synthetic" / "r1")
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from workbench.errors import UnsafePathError


def inside(root: str | os.PathLike[str], path: str | os.PathLike[str], *,
           what: str = "path") -> Path:
    """``path`` (relative to ``root`` unless absolute) resolved, if it stays inside ``root``.

    Links are followed before the check, so a link that leads out is refused too. The root
    itself is not "inside" it. Raises :class:`~workbench.errors.UnsafePathError` naming
    ``what`` and the path otherwise.
    """
    base = Path(root).resolve()
    raw = Path(path)
    if "\x00" in str(path):
        raise UnsafePathError(f"{what} {str(path)!r} holds a NUL character; refused")
    target = (raw if raw.is_absolute() else base / raw).resolve()
    if target == base or not target.is_relative_to(base):
        raise UnsafePathError(
            f"{what} {str(path)!r} leads outside {str(base)!r}; refused. Loupe only reads, "
            "writes and deletes inside the project's own folder.")
    return target


def remove_inside(root: str | os.PathLike[str], path: str | os.PathLike[str], *,
                  what: str = "path", missing_ok: bool = True) -> bool:
    """Delete ``path`` (a file, a link or a whole folder) if it lies inside ``root``.

    The one way Loupe deletes project data: anything outside ``root`` (after resolving
    links in the parent folders) raises :class:`~workbench.errors.UnsafePathError` and
    nothing is deleted. A link is removed itself, never what it points to. Returns whether
    something was deleted.
    """
    raw = Path(path) if Path(path).is_absolute() else Path(root) / path
    if raw.name in ("", ".", ".."):
        raise UnsafePathError(f"{what} {str(path)!r} names no entry to delete; refused")
    # The parent resolved plus the entry's own name: a link is removed, never followed.
    base = Path(root).resolve()
    parent = raw.parent.resolve()
    if not (parent == base or parent.is_relative_to(base)):
        raise UnsafePathError(
            f"{what} {str(path)!r} leads outside {str(base)!r}; nothing was deleted. Loupe "
            "only deletes inside the project's own folder.")
    target = parent / raw.name
    if target.is_symlink() or target.is_file():
        target.unlink(missing_ok=missing_ok)
        return True
    if target.is_dir():
        shutil.rmtree(target)
        return True
    if not missing_ok and not target.exists():
        raise FileNotFoundError(target)
    if target.exists():  # a FIFO, socket or device node inside the folder
        target.unlink()
        return True
    return False


__all__ = ["inside", "remove_inside"]
