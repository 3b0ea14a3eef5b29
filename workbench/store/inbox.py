"""The server's inbox: folders of new images a dashboard may check or import, by name.

Nobody types a path into a dashboard. New images are dropped into an *inbox* folder on the
server, one subfolder per batch (``inbox/night-2026-11-26/``), and the dashboards list those
batches. The allowed inbox roots are the project's own ``<project folder>/inbox/`` plus any
folders listed in ``$LOUPE_INBOX`` (separated by ``os.pathsep``). Every path is resolved
(links followed) and must stay inside one of those roots.

>>> inbox_batches(p)                 # batch, path, n_images, modified, root; newest first
>>> inbox_batch(p, "night-2026-11-26")   # its resolved folder, or an error saying why not
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from workbench.errors import ProjectError, UnsafePathError
from workbench.store.coerce import as_project
from workbench.store.safe_paths import inside

if TYPE_CHECKING:
    from workbench.store.project import Project

#: Environment variable listing further inbox roots (``os.pathsep``-separated).
INBOX_ENV = "LOUPE_INBOX"
#: The project's own inbox, inside its folder.
INBOX_FOLDER = "inbox"
#: File name endings counted as images in a batch's ``n_images``.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
COLUMNS = ["batch", "path", "n_images", "modified", "root"]


def project_inbox(project: Project | str) -> Path:
    """The project's own inbox folder (it may not exist yet)."""
    return as_project(project).folder / INBOX_FOLDER


def inbox_roots(project: Project | str, *, environ: Mapping[str, str] | None = None) -> list[Path]:
    """The allowed inbox roots, resolved: the project's inbox, then those of ``$LOUPE_INBOX``.

    Raises
    ------
    ProjectError
        When ``$LOUPE_INBOX`` names a folder that does not exist (the message names it).
    """
    env = os.environ if environ is None else environ
    roots = [project_inbox(project).resolve()]
    for text in env.get(INBOX_ENV, "").split(os.pathsep):
        if not text.strip():
            continue
        root = Path(text.strip()).expanduser()
        if not root.is_dir():
            raise ProjectError(f"${INBOX_ENV} names {text.strip()!r}, which is not a folder; "
                               f"create it or remove it from ${INBOX_ENV}")
        roots.append(root.resolve())
    return list(dict.fromkeys(roots))


def inbox_batches(project: Project | str, *,
                  environ: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The batches waiting in the inbox: subfolders of the roots that hold images.

    Parameters
    ----------
    project : Project or str
    environ : mapping, optional
        Where to read ``$LOUPE_INBOX`` (default: the process environment).

    Returns
    -------
    pandas.DataFrame
        One row per batch, newest first: ``batch`` (the folder's name), ``path`` (resolved),
        ``n_images`` (image files in it and its subfolders), ``modified`` (UTC, the newest
        file or folder time) and ``root``. Subfolders that are links leading outside their
        root are left out and listed in ``attrs["refused"]`` as ``(path, reason)``; an
        empty or missing inbox gives an empty frame.
    """
    project = as_project(project)
    rows, refused = [], []
    for root in inbox_roots(project, environ=environ):
        if not root.is_dir():
            continue
        for entry in sorted(root.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                folder = inside(root, entry.name, what=f"inbox batch {entry.name!r}")
            except UnsafePathError as error:
                refused.append((str(entry), str(error)))
                continue
            n_images, newest = _count_images(folder)
            if n_images:
                rows.append({"batch": entry.name, "path": str(folder), "n_images": n_images,
                             "modified": pd.Timestamp(newest, unit="s", tz="UTC"),
                             "root": str(root)})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if len(frame):
        frame = frame.sort_values(["modified", "batch"], ascending=[False, True],
                                  kind="mergesort").reset_index(drop=True)
    frame.attrs["refused"] = refused
    return frame


def inbox_batch(project: Project | str, batch: str | os.PathLike[str], *,
                environ: Mapping[str, str] | None = None) -> Path:
    """The resolved folder of an inbox batch, given its name or its path.

    A name is looked up in every root, the project's inbox first; a path must lie inside a
    root. Links are followed before the check.

    Raises
    ------
    UnsafePathError
        When the batch (through ``..`` or a link) leads outside every inbox root.
    ProjectError
        When no inbox holds a folder of that name.
    """
    project = as_project(project)
    text = os.fspath(batch)
    if not isinstance(text, str) or not text.strip():
        raise ProjectError(f"batch must be the name of an inbox folder, got {batch!r}")
    roots = inbox_roots(project, environ=environ)
    raw = Path(text)
    candidates = [raw] if raw.is_absolute() else [root / raw for root in roots]
    for candidate in candidates:
        target = candidate.resolve()
        home = next((r for r in roots if target != r and target.is_relative_to(r)), None)
        if home is None:
            if raw.is_absolute() or not _is_plain_name(text) or candidate.is_symlink():
                raise UnsafePathError(
                    f"inbox batch {text!r} leads to {str(target)!r}, outside the inbox "
                    f"folders ({', '.join(map(str, roots))}); refused. Put the images in a "
                    f"subfolder of the inbox (or add its folder to ${INBOX_ENV}).")
            continue
        if target.is_dir():
            return target
    raise ProjectError(f"no inbox batch {text!r}: the inbox folders "
                       f"({', '.join(map(str, roots))}) hold no such folder; see "
                       "wb.inbox_batches(p)")


def _is_plain_name(text: str) -> bool:
    parts = Path(text).parts
    return bool(parts) and ".." not in parts


def _count_images(folder: Path) -> tuple[int, float]:
    """Image files under ``folder`` (links to folders are not entered) and the newest
    modification time seen."""
    count, newest = 0, folder.stat().st_mtime
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            count += 1
            try:
                newest = max(newest, (Path(dirpath) / name).stat().st_mtime)
            except OSError:  # a dangling link: not an image the import could read
                count -= 1
    return count, newest


__all__ = ["INBOX_ENV", "INBOX_FOLDER", "inbox_batch", "inbox_batches", "inbox_roots",
           "project_inbox"]
