"""Backing a project up into one ``.tar`` file and restoring it.

An archive holds, as plain members of an (optionally gzipped) tar file:

* ``dataset.json``: the dataset's schema (FiftyOne's own field declarations), ``info``
  (classes, slice fields, analysis-run records, label book), tags and class lists;
* ``samples.jsonl``: every sample's raw database document in MongoDB extended JSON (ids,
  full annotation histories with times, ``ground_truth``, predictions, run fields, tags,
  slice fields), with ``filepath`` rewritten to an archive-relative path;
* ``project/…``: the project folder (model versions with their checkpoints, drift checks,
  synthetic images, imported media copies; the embedding cache unless left out). The
  thumbnail and map caches are left out: they are rebuilt on demand;
* ``media/…``: images the samples point to outside the project folder;
* ``manifest.json`` (written last): format, project name, and the size and SHA-256 of
  every other member, checked on import, so a truncated or altered archive is refused.

Sample ids are kept, so model versions' snapshots, predictions and the label book still
name the right samples after a restore.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import uuid
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from bson import json_util

from workbench import store
from workbench.labels import now
from workbench.project import ProjectError, _check_name, delete_project
from workbench.settings import fiftyone, projects_dir

if TYPE_CHECKING:
    from workbench.project import Project

FORMAT = "loupe-archive"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: Project sub-folders not archived: caches rebuilt on demand.
CACHE_FOLDERS = ("thumbnails", "maps")
#: Raw dataset-document keys archived (schema, bookkeeping, class lists).
DATASET_KEYS = ("sample_fields", "info", "tags", "classes", "default_classes", "media_type")
_JSON = json_util.CANONICAL_JSON_OPTIONS
_TOP = ("dataset.json", "samples.jsonl", MANIFEST)
_MEDIA = "media/"
_PROJECT = "project/"


class ArchiveError(ProjectError):
    """A file that is not a complete Loupe archive (the message says what is wrong)."""


def export_archive(project: Project, path: str | os.PathLike[str], *,
                   include_embeddings: bool = True) -> Path:
    """Write ``project`` (dataset, images, project folder) into one tar file.

    Parameters
    ----------
    project : Project
    path : str or path-like
        Ends with ``.tar`` (uncompressed; images are compressed already) or ``.tar.gz``.
        Written under a temporary name and renamed, so ``path`` is either complete or absent.
    include_embeddings : bool, default True
        Archive the embedding cache (recomputed on demand when left out).

    Returns
    -------
    Path
        ``path``. The manifest lists images that were missing on disk
        (``missing_media``); their samples keep their original file path.
    """
    path = Path(path)
    if not (path.name.endswith(".tar") or path.name.endswith(".tar.gz")):
        raise ValueError(f"path={str(path)!r}: an archive name ends with .tar or .tar.gz")
    if not path.parent.is_dir():
        raise ValueError(f"path={str(path)!r}: folder {str(path.parent)!r} does not exist")
    dataset = project.dataset
    dataset.reload()
    folder = project.folder.resolve()
    skipped = set(CACHE_FOLDERS) | (set() if include_embeddings else {"embeddings"})
    raw = fiftyone().core.odm.get_db_conn().datasets.find_one({"_id": dataset._doc.id})
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    files: dict[str, dict[str, Any]] = {}
    media: dict[str, str] = {}
    missing: list[str] = []
    try:
        with tarfile.open(partial, "w:gz" if path.name.endswith(".gz") else "w") as tar:
            _add_bytes(tar, "dataset.json", json_util.dumps(
                {k: raw.get(k) for k in DATASET_KEYS}, json_options=_JSON).encode(), files)
            lines = []
            for doc in dataset._sample_collection.find({}):
                doc.pop("_dataset_id", None)
                doc["filepath"] = _archived_path(doc["filepath"], folder, media, missing)
                lines.append(json_util.dumps(doc, json_options=_JSON))
            _add_bytes(tar, "samples.jsonl", "\n".join(lines).encode(), files)
            for source, name in media.items():
                _add_file(tar, Path(source), name, files)
            if folder.is_dir():
                for file in sorted(_project_files(folder, skipped)):
                    _add_file(tar, file, _PROJECT + file.relative_to(folder).as_posix(), files)
            manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                        "project": project.name, "created": now().isoformat(),
                        "n_samples": len(lines), "files": files, "missing_media": missing}
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1).encode(), None)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def import_archive(path: str | os.PathLike[str], name: str | None = None, *,
                   overwrite: bool = False) -> str:
    """Restore an archive from :func:`export_archive` as a project; returns its name.

    The whole archive is read and checked (manifest, sizes, SHA-256, member names) into a
    hidden staging folder before anything is created, so a bad archive leaves no project,
    dataset or folder behind.

    Raises
    ------
    ArchiveError
        Not a tar file, truncated, no manifest, unknown format, a member that fails its
        checksum, or a member name outside the archive's layout (absolute, ``..``, links).
    ValueError
        From the project name rules, or when the project exists and ``overwrite`` is False.
    """
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"archive not found: {str(path)!r}")
    projects_dir().mkdir(parents=True, exist_ok=True)
    staging = projects_dir() / f".import-{uuid.uuid4().hex[:12]}.partial"
    try:
        manifest = _extract_checked(path, staging)
        name = name if name is not None else manifest.get("project")
        _check_name(name)
        taken = store.dataset_exists(name) or any((projects_dir() / name).glob("*"))
        if taken and not overwrite:
            raise ProjectError(f"project {name!r} already exists (or its folder does); pass "
                               "overwrite=True to replace it, or name=... to restore under "
                               "another name")
        described = json_util.loads((staging / "dataset.json").read_text())
        lines = (staging / "samples.jsonl").read_text().splitlines()
        documents = [json_util.loads(line) for line in lines if line.strip()]
        if len(documents) != manifest.get("n_samples"):
            raise ArchiveError(f"{str(path)!r}: samples.jsonl holds {len(documents)} samples, "
                               f"the manifest says {manifest.get('n_samples')}")
        _restore(name, described, documents, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return name


def _archived_path(filepath: str, folder: Path, media: dict[str, str],
                   missing: list[str]) -> str:
    source = Path(filepath)
    if not source.is_file():
        missing.append(filepath)
        return filepath
    resolved = source.resolve()
    if resolved.is_relative_to(folder):
        return _PROJECT + resolved.relative_to(folder).as_posix()
    if filepath not in media:
        suffix = "".join(ch for ch in source.suffix if ch.isascii() and (ch.isalnum()
                                                                          or ch == "."))
        media[filepath] = f"{_MEDIA}{len(media):06d}{suffix}"
    return media[filepath]


def _project_files(folder: Path, skipped: set[str]) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        top = here == folder
        dirnames[:] = [d for d in dirnames if not d.endswith(".partial")
                       and not (top and d in skipped)]
        found += [here / f for f in filenames if not f.endswith(".partial")
                  and not (here / f).is_symlink()]
    return found


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes,
               files: dict[str, dict[str, Any]] | None) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(now().timestamp()), 0o644
    tar.addfile(info, io.BytesIO(data))
    if files is not None:
        files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _add_file(tar: tarfile.TarFile, source: Path, name: str,
              files: dict[str, dict[str, Any]]) -> None:
    with source.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        size = handle.tell()
        handle.seek(0)
        info = tar.gettarinfo(fileobj=handle, arcname=name)
        info.size, info.uid, info.gid, info.uname, info.gname = size, 0, 0, "", ""
        tar.addfile(info, handle)
    files[name] = {"size": size, "sha256": digest}


def _extract_checked(path: Path, staging: Path) -> dict[str, Any]:
    """Extract into ``staging`` and check it against the manifest; return the manifest."""
    where = repr(str(path))
    try:
        with tarfile.open(path, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, where)
            names = {m.name for m in members}
            if MANIFEST not in names:
                raise ArchiveError(f"{where} is not a complete Loupe archive: it has no "
                                   f"{MANIFEST} (written last, so the file may be cut short)")
            staging.mkdir(parents=True)
            tar.extractall(staging, filter="data")
    except tarfile.TarError as error:
        raise ArchiveError(f"{where} is not a readable Loupe archive (a .tar or .tar.gz "
                           f"file): {error}") from None
    except (EOFError, OSError, UnicodeDecodeError, ValueError) as error:
        if isinstance(error, ArchiveError):
            raise
        raise ArchiveError(f"{where} is cut short or damaged: {error}") from None
    try:
        manifest = json.loads((staging / MANIFEST).read_text())
    except ValueError:
        raise ArchiveError(f"{where}: {MANIFEST} is not valid JSON") from None
    if manifest.get("format") != FORMAT:
        raise ArchiveError(f"{where} is not a Loupe archive (format "
                           f"{manifest.get('format')!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArchiveError(f"{where} has archive format version "
                           f"{manifest.get('format_version')!r}; this Loupe reads "
                           f"{FORMAT_VERSION}")
    listed = manifest.get("files") or {}
    for required in _TOP[:2]:
        if required not in listed:
            raise ArchiveError(f"{where}: the manifest lists no {required}")
    for name, expected in listed.items():
        file = staging / name
        if not file.is_file():
            raise ArchiveError(f"{where}: {name} is listed in the manifest but missing")
        with file.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest != expected.get("sha256"):
            raise ArchiveError(f"{where}: {name} does not match its checksum (damaged)")
    return manifest


def _check_member(member: tarfile.TarInfo, where: str) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    if (name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir())
            or not (name in _TOP or name.startswith((_MEDIA, _PROJECT))
                    or name in (_MEDIA[:-1], _PROJECT[:-1]))):
        raise ArchiveError(f"{where} has a member Loupe archives never hold: {name!r} "
                           "(absolute path, '..', a link or device, or outside media/ and "
                           "project/); refusing to extract it")


def _restore(name: str, described: dict[str, Any], documents: list[dict[str, Any]],
             staging: Path) -> None:
    """Build the dataset under a temporary name, then swap it (and the folder) into place:
    a failure before the swap leaves an existing project of that name untouched."""
    fo = fiftyone()
    folder = projects_dir() / name
    dataset = fo.Dataset(f"{name}-restoring-{uuid.uuid4().hex[:8]}", persistent=True)
    try:
        conn = fo.core.odm.get_db_conn()
        conn.datasets.update_one({"_id": dataset._doc.id},
                                 {"$set": {k: described[k] for k in DATASET_KEYS
                                           if k in described}})
        dataset.reload()
        for doc in documents:
            doc["_dataset_id"] = dataset._doc.id
            filepath = doc.get("filepath", "")
            if filepath.startswith(_PROJECT):
                doc["filepath"] = str(folder / filepath[len(_PROJECT):])
            elif filepath.startswith(_MEDIA):
                doc["filepath"] = str(folder / "media" / "archived" / filepath[len(_MEDIA):])
        for start in range(0, len(documents), 1000):
            store.add_samples(dataset, documents[start:start + 1000])
        dataset.create_index("content_hash")
        store.ensure_review_field(dataset)
    except BaseException:
        dataset.delete()
        raise
    if store.dataset_exists(name) or folder.exists():
        delete_project(name)
    dataset.name = name
    if (staging / "project").is_dir():
        (staging / "project").replace(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if (staging / "media").is_dir():
        (folder / "media").mkdir(exist_ok=True)
        (staging / "media").replace(folder / "media" / "archived")
