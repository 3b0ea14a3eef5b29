"""Images dropped in a browser: checked like a folder import, then written under the project.

>>> folder = save_uploads(p, upload.value, batch="night-2026-12-05")   # ipywidgets FileUpload
>>> folder                       # <project folder>/uploads/night-2026-12-05/

A dashboard hands over what :class:`ipywidgets.FileUpload` holds: a tuple of dicts with
``name`` and ``content`` (ipywidgets 8), a dict of name to ``{"content": …}`` (ipywidgets
7), or ``(name, bytes)`` pairs. Every file is checked before anything is written: a safe
name (the last part of what the browser sent, no hidden or control characters, an image
ending), the size limits, and the same decoding check as a folder import
(:func:`workbench.store.ingest.images.check_image`). One refused file refuses the whole
upload, and the error names every refused file and why: nothing is stored.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import LoupeError
from workbench.store.inbox import IMAGE_SUFFIXES
from workbench.store.ingest.images import ImageRejectedError, check_image
from workbench.store.ingest.scan import check_batch
from workbench.store.leftovers import partial_path
from workbench.store.safe_paths import inside

if TYPE_CHECKING:
    from workbench.store.project import Project

#: Folder of uploaded batches inside a project folder.
UPLOADS_FOLDER = "uploads"
#: Largest file one upload may hold, in bytes (20 MiB).
MAX_FILE_BYTES = 20 * 1024 * 1024
#: Largest upload (all its files together), in bytes (200 MiB).
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
#: Longest file name kept, in bytes.
MAX_NAME_BYTES = 200


class UploadRejectedError(LoupeError, ValueError):
    """An upload refused as a whole; ``rejected`` lists ``(file name, reason)``."""

    def __init__(self, message: str, rejected: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.rejected = rejected


def upload_folder(project: Project, batch: str) -> Path:
    """``<project folder>/uploads/<batch>/`` (not created), refusing a batch name that is
    not a plain folder name."""
    name = check_batch(batch)
    if name is None or name in (".", "..") or "/" in name or "\\" in name \
            or name.startswith("."):
        raise ValueError(f"batch={batch!r} cannot name an upload folder: use a plain name "
                         "without '/', '\\' or a leading '.' (e.g. batch='night-2026-12-05')")
    return inside(project.folder / UPLOADS_FOLDER, name, what="upload batch")


def upload_files(uploads: Any) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of each file of a FileUpload value (ipywidgets 7 or 8) or of
    ``(name, bytes)`` pairs."""
    if isinstance(uploads, Mapping):  # ipywidgets 7: {name: {"content": …, "metadata": …}}
        items: Iterable[Any] = [{"name": name, **dict(value)} if isinstance(value, Mapping)
                                else {"name": name, "content": value}
                                for name, value in uploads.items()]
    elif isinstance(uploads, str | bytes | os.PathLike) or not isinstance(uploads, Iterable):
        raise TypeError(f"uploads must be a FileUpload value (files with a name and content) "
                        f"or (name, bytes) pairs, got {type(uploads).__name__}")
    else:
        items = uploads
    files = []
    for item in items:
        if isinstance(item, Mapping) and "name" in item and "content" in item:
            name, content = item["name"], item["content"]
        elif isinstance(item, tuple | list) and len(item) == 2:
            name, content = item
        else:
            raise TypeError(f"each uploaded file needs a name and a content, got {item!r:.80}")
        if not isinstance(content, bytes | bytearray | memoryview):
            raise TypeError(f"uploaded file {name!r}: content must be bytes, got "
                            f"{type(content).__name__}")
        files.append((str(name), bytes(content)))
    return files


def save_uploads(project: Project, uploads: Any, *, batch: str,
                 max_file_bytes: int = MAX_FILE_BYTES,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES) -> Path:
    """Check every uploaded file, then write them to ``<project>/uploads/<batch>/``.

    Parameters
    ----------
    project : Project
    uploads : FileUpload value or sequence of (name, bytes)
    batch : str
        The batch's name, also its folder's.
    max_file_bytes, max_upload_bytes : int
        Size limits per file and for the whole upload.

    Returns
    -------
    Path
        The batch's folder (files of earlier uploads to the same batch stay).

    Raises
    ------
    UploadRejectedError
        Naming each file refused (not an image, too large, unsafe name, a name already
        holding other bytes) and why; nothing is written.
    ValueError
        For an empty upload or a batch name that cannot be a folder.
    """
    folder = upload_folder(project, batch)
    files = upload_files(uploads)
    if not files:
        raise ValueError("the upload holds no files: choose images to upload first")
    total = sum(len(data) for _, data in files)
    if total > max_upload_bytes:
        raise UploadRejectedError(
            f"the upload holds {_mib(total)} in {len(files)} file(s), more than the "
            f"{_mib(max_upload_bytes)} one upload may hold; upload fewer files at a time, or "
            "put the batch in the server's inbox folder", [("(all)", "upload too large")])
    rejected, keep, seen = [], [], set()
    for raw, data in files:
        name, problem = _safe_name(raw)
        if problem is None and name in seen:
            problem = "uploaded twice in this upload (two files of one name)"
        if problem is None and len(data) > max_file_bytes:
            problem = (f"{_mib(len(data))}, more than the {_mib(max_file_bytes)} a file may "
                       "hold")
        if problem is None:
            problem = _image_problem(data)
        if problem is None and (folder / name).is_file() \
                and (folder / name).read_bytes() != data:
            problem = (f"{UPLOADS_FOLDER}/{folder.name}/{name} already holds another image; "
                       "rename the file or use another batch")
        if problem is not None:
            rejected.append((raw, problem))
        else:
            seen.add(name)
            keep.append((name, data))
    if rejected:
        listed = "; ".join(f"{name!r}: {why}" for name, why in rejected)
        raise UploadRejectedError(
            f"upload refused, nothing was stored: {len(rejected)} of {len(files)} file(s) "
            f"cannot be imported: {listed}", rejected)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in keep:
        target = folder / name
        if target.is_file():  # the same bytes, uploaded again
            continue
        partial = partial_path(target)
        partial.write_bytes(data)
        partial.replace(target)
    return folder


def _safe_name(raw: str) -> tuple[str, str | None]:
    """The file name to write (the last part of what the browser sent), or why not."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or name in (".", ".."):
        return name, "no file name"
    if name.startswith("."):
        return name, "hidden file name (starts with '.'); rename it"
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return name, "the file name holds control characters; rename it"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return name, f"the file name is longer than {MAX_NAME_BYTES} bytes; shorten it"
    if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
        return name, (f"not an image file name (it should end in "
                      f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    return name, None


def _image_problem(data: bytes) -> str | None:
    try:
        check_image(data)
    except ImageRejectedError as error:
        return error.reason
    return None


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size:,} bytes"


__all__ = ["MAX_FILE_BYTES", "MAX_UPLOAD_BYTES", "UPLOADS_FOLDER", "UploadRejectedError",
           "save_uploads", "upload_files", "upload_folder"]
