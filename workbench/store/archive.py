"""Backing a project up into one ``.tar`` file and restoring it.

An archive holds, as plain members of an (optionally gzipped) tar file:

* ``dataset.json``: the dataset's schema (FiftyOne's own field declarations), ``info``
  (classes, slice fields, analysis-run records, label book), tags and class lists;
* ``samples.jsonl``: every sample's raw database document in MongoDB extended JSON (ids,
  full annotation histories with times, ``ground_truth``, predictions, run fields, tags,
  slice fields), with ``filepath`` (and a synthetic image's mask) rewritten to an
  archive-relative path;
* ``project/…``: the project folder (model versions with their checkpoints, drift checks,
  synthetic images, imported media copies; the embedding cache unless left out). The
  thumbnail and map caches are left out (rebuilt on demand), and so is training state
  (``models/.runs``), which never travels;
* ``media/…``: images the samples point to outside the project folder;
* ``manifest.json`` (written last): format, project name, and the size and SHA-256 of
  every other member.

An archive is untrusted input. A restore refuses, before anything is created: a member the
manifest does not list, or whose size or SHA-256 differs from it; links, devices, sparse
files, absolute names, ``..``, names outside the layout and ``project/models/.runs``; more
than :data:`MAX_MEMBERS` members, a member over :data:`MAX_MEMBER_BYTES`, more than
:data:`MAX_TOTAL_BYTES` in all or more than :data:`MAX_EXPANSION` times the archive's own
size (keyword arguments of :func:`import_archive` override the first three); and then (see
:mod:`workbench.store.archive_restore`) every path a document names that would leave the project
folder, and every sample whose image is missing or differs from its content hash.

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
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from bson import json_util

from workbench.config import fiftyone, projects_dir
from workbench.errors import UnsafePathError
from workbench.store.archive_format import (
    _MEDIA,
    _PROJECT,
    DATASET_KEYS,
    ArchiveError,
    safe_suffix,
)
from workbench.store.labels import now
from workbench.store.leftovers import owner_tag, partial_path, remove_stale
from workbench.store.safe_paths import inside, remove_inside

if TYPE_CHECKING:
    from workbench.store.project import Project

FORMAT = "loupe-archive"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: Project sub-folders not archived: caches rebuilt on demand.
CACHE_FOLDERS = ("thumbnails", "maps")
#: Training state under the project folder: never archived, refused in an archive.
RUNS = "models/.runs"

#: Most members a restore accepts (``max_members=``).
MAX_MEMBERS = 100_000
#: Largest single member a restore accepts, in bytes (``max_member_bytes=``): 8 GiB.
MAX_MEMBER_BYTES = 8 * 2**30
#: Most bytes a restore expands to in all (``max_total_bytes=``): 32 GiB.
MAX_TOTAL_BYTES = 32 * 2**30
#: Expanded bytes per byte of archive beyond which an archive is taken for a bomb ...
MAX_EXPANSION = 100
#: ... once it expands to more than this (small JSON-only archives compress far better).
EXPANSION_FLOOR = 256 * 2**20
#: Largest ``manifest.json`` read.
MAX_MANIFEST_BYTES = 64 * 2**20
#: Largest ``dataset.json`` / ``samples.jsonl`` (read into memory whole): 2 GiB.
MAX_DOCUMENT_BYTES = 2 * 2**30
#: Free disk space kept beyond what a restore writes.
SPARE_BYTES = 64 * 2**20

_JSON = json_util.CANONICAL_JSON_OPTIONS
_TOP = ("dataset.json", "samples.jsonl", MANIFEST)


@dataclass(frozen=True)
class Limits:
    """What one restore may extract (defaults: the module's constants at call time)."""

    members: int
    member_bytes: int
    total_bytes: int

    @classmethod
    def of(cls, members: int | None, member_bytes: int | None,
           total_bytes: int | None) -> Limits:
        chosen = cls(MAX_MEMBERS if members is None else members,
                     MAX_MEMBER_BYTES if member_bytes is None else member_bytes,
                     MAX_TOTAL_BYTES if total_bytes is None else total_bytes)
        for key, value in vars(chosen).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"max_{key}={value!r}: expected a positive integer")
        return chosen


def export_archive(project: Project, path: str | os.PathLike[str], *,
                   include_embeddings: bool = True) -> Path:
    """Write ``project`` (dataset, images, project folder) into one tar file.

    Parameters
    ----------
    project : Project
    path : str or path-like
        Ends with ``.tar`` (uncompressed; images are compressed already) or ``.tar.gz``.
        Written under a hidden temporary name (``.<name>.<host>-<pid>-<random>.partial``)
        and renamed, so ``path`` is either complete or absent. A failure removes the
        temporary file; one left by a killed export is removed by the next export into
        the same folder.
    include_embeddings : bool, default True
        Archive the embedding cache (recomputed on demand when left out).

    Returns
    -------
    Path
        ``path``. The manifest lists images that were missing on disk
        (``missing_media``); see :func:`import_archive` for how they come back.
    """
    path = Path(path)
    if not (path.name.endswith(".tar") or path.name.endswith(".tar.gz")):
        raise ValueError(f"path={str(path)!r}: an archive name ends with .tar or .tar.gz")
    if not path.parent.is_dir():
        raise ValueError(f"path={str(path)!r}: folder {str(path.parent)!r} does not exist")
    remove_stale(path.parent)
    dataset = project.dataset
    dataset.reload()
    folder = project.folder.resolve()
    skipped = set(CACHE_FOLDERS) | (set() if include_embeddings else {"embeddings"})
    raw = fiftyone().core.odm.get_db_conn().datasets.find_one({"_id": dataset._doc.id})
    partial = partial_path(path)
    files: dict[str, dict[str, Any]] = {}
    media: dict[str, str] = {}
    missing: list[str] = []
    try:
        with tarfile.open(partial, "w:gz" if path.name.endswith(".gz") else "w") as tar:
            _add_bytes(tar, "dataset.json", json_util.dumps(
                {k: raw.get(k) for k in DATASET_KEYS}, json_options=_JSON).encode(), files)
            lines = [json_util.dumps(_archived_document(doc, folder, media, missing),
                                     json_options=_JSON)
                     for doc in dataset._sample_collection.find({})]
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
                   overwrite: bool = False, max_members: int | None = None,
                   max_member_bytes: int | None = None,
                   max_total_bytes: int | None = None) -> str:
    """Restore an archive from :func:`export_archive` as a project; returns its name.

    The archive is extracted and checked into a hidden staging folder, the dataset is built
    under a temporary name that is not a project, every sample's image is checked against
    its content hash, and only then is the result swapped into place; with ``overwrite``
    the old project is deleted only after that. Any failure leaves the projects exactly as
    they were. Leftovers of a restore that was killed are removed by the next restore.

    Parameters
    ----------
    path : str or path-like
    name : str, optional
        Restore under this name (default: the archived project's name).
    overwrite : bool, default False
        Replace an existing project of that name (never a FiftyOne dataset Loupe did not
        create).
    max_members, max_member_bytes, max_total_bytes : int, optional
        Limits on the archive (default :data:`MAX_MEMBERS` = 100,000 members,
        :data:`MAX_MEMBER_BYTES` = 8 GiB per member, :data:`MAX_TOTAL_BYTES` = 32 GiB).

    Raises
    ------
    ArchiveError
        Not a tar file, truncated, no manifest, unknown format, a member that is not
        listed or fails its checksum, an unsafe member (absolute, ``..``, links, devices,
        sparse files, training state), a limit passed, a document that is not valid or
        names a path outside the project folder, an image that does not match its sample.
    ProjectError
        From the project name rules, when the project exists and ``overwrite`` is False,
        or when the name belongs to a dataset Loupe did not create.
    """
    from workbench.store.archive_restore import recover_leftovers, restore

    path = Path(path)
    limits = Limits.of(max_members, max_member_bytes, max_total_bytes)
    if not path.is_file():
        raise ArchiveError(f"archive not found: {str(path)!r}")
    root = projects_dir()
    root.mkdir(parents=True, exist_ok=True)
    recover_leftovers()
    staging = root / f".import.{owner_tag()}.partial"
    try:
        manifest = _extract_checked(path, staging, limits)
        name = name if name is not None else manifest.get("project")
        restore(name, manifest, staging, repr(str(path)), overwrite=overwrite)
    finally:
        remove_inside(root, staging, what="staging folder")
    return name


# -- export helpers ------------------------------------------------------------------------
def _archived_document(doc: dict[str, Any], folder: Path, media: dict[str, str],
                       missing: list[str]) -> dict[str, Any]:
    doc.pop("_dataset_id", None)
    doc["filepath"] = _archived_path(doc["filepath"], folder, media, missing)
    synthetic = doc.get("synthetic")
    if isinstance(synthetic, dict) and isinstance(synthetic.get("mask"), str):
        mask = Path(synthetic["mask"]).resolve()
        if mask.is_relative_to(folder):
            synthetic["mask"] = _PROJECT + mask.relative_to(folder).as_posix()
    return doc


def _archived_path(filepath: str, folder: Path, media: dict[str, str],
                   missing: list[str]) -> str:
    source = Path(filepath)
    if not source.is_file():
        missing.append(filepath)
        return filepath
    resolved = source.resolve()
    if resolved.is_relative_to(folder) and not _is_skipped(resolved.relative_to(folder)):
        return _PROJECT + resolved.relative_to(folder).as_posix()
    if filepath not in media:
        media[filepath] = f"{_MEDIA}{len(media):06d}{safe_suffix(source.suffix)}"
    return media[filepath]


def _is_skipped(relative: Path) -> bool:
    text = relative.as_posix()
    return (text.startswith(RUNS + "/") or relative.parts[0] in CACHE_FOLDERS
            or any(part.endswith(".partial") for part in relative.parts))


#: Files that describe this machine's files (paths, times), meaningless elsewhere: the
#: embedding cache's record of file hashes (workbench.train.embeddings.HASH_INDEX).
_MACHINE_FILES = frozenset({"file-hashes.json", "grid-options.json"})  # caches of this machine


def _project_files(folder: Path, skipped: set[str]) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        top = here == folder
        dirnames[:] = [d for d in dirnames if not d.endswith(".partial")
                       and not (top and d in skipped)
                       and (here / d).relative_to(folder).as_posix() != RUNS]
        found += [here / f for f in filenames if not f.endswith(".partial")
                  and not (here / f).is_symlink()
                  and f not in _MACHINE_FILES]
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


# -- import: extraction ----------------------------------------------------------------------
def _extract_checked(path: Path, staging: Path, limits: Limits) -> dict[str, Any]:
    """Check every member against the limits and the manifest, extract them into
    ``staging`` (checking each one's SHA-256 as it is written); return the manifest."""
    where = repr(str(path))
    try:
        with tarfile.open(path, "r:*") as tar:
            members = _scan(tar, where, limits, path.stat().st_size)
            manifest = _read_manifest(tar, members, where)
            listed = _check_listing(manifest, members, where)
            _check_space(sum(m.size for m in members), where)
            staging.mkdir(parents=True)
            for member in members:
                _extract_one(tar, member, staging, listed, where)
    except tarfile.TarError as error:
        raise ArchiveError(f"{where} is not a readable Loupe archive (a .tar or .tar.gz "
                           f"file): {error}") from None
    except (EOFError, OSError, UnicodeDecodeError, ValueError, zlib.error) as error:
        if isinstance(error, ArchiveError):
            raise
        raise ArchiveError(f"{where} is cut short or damaged: {error}") from None
    return manifest


def _scan(tar: tarfile.TarFile, where: str, limits: Limits,
          archive_bytes: int) -> list[tarfile.TarInfo]:
    """Every member, checked one header at a time: a limit stops the scan at once."""
    members: list[tarfile.TarInfo] = []
    names: set[str] = set()
    total = 0
    for member in tar:
        if len(members) >= limits.members:
            raise ArchiveError(f"{where} has more than {limits.members:,} members (the limit, "
                               "max_members=); refusing it")
        _check_member(member, where)
        if member.name in names:
            raise ArchiveError(f"{where} holds {member.name!r} twice; refusing it")
        names.add(member.name)
        largest = MAX_DOCUMENT_BYTES if member.name in _TOP else limits.member_bytes
        if member.size > min(largest, limits.member_bytes):
            raise ArchiveError(f"{where}: member {member.name!r} expands to {member.size:,} "
                               f"bytes, over the limit of {min(largest, limits.member_bytes):,}"
                               " (max_member_bytes=); refusing it")
        total += member.size
        if total > limits.total_bytes:
            raise ArchiveError(f"{where} expands to more than {limits.total_bytes:,} bytes "
                               "(the limit, max_total_bytes=); refusing it")
        if total > EXPANSION_FLOOR and total > MAX_EXPANSION * archive_bytes:
            raise ArchiveError(f"{where} expands to more than {MAX_EXPANSION} times its own "
                               f"size ({total:,} bytes from {archive_bytes:,}): a "
                               "decompression bomb, not a Loupe archive; refusing it")
        members.append(member)
    return members


def _check_member(member: tarfile.TarInfo, where: str) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    layout = (name in _TOP or (name.startswith((_MEDIA, _PROJECT)) and len(parts) > 1)
              or (member.isdir() and name.rstrip("/") in (_MEDIA[:-1], _PROJECT[:-1])))
    if (name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir())
            or not layout):
        raise ArchiveError(f"{where} has a member Loupe archives never hold: {name!r} "
                           "(absolute path, '..', a link or device, or outside media/ and "
                           "project/); refusing to extract it")
    if member.issparse():
        raise ArchiveError(f"{where}: member {name!r} is a sparse file (Loupe never writes "
                           "one); refusing it")
    if parts[:1] == (_PROJECT[:-1],) and "/".join(parts[1:3]) == RUNS:
        raise ArchiveError(f"{where}: member {name!r} is training state ({RUNS}), which never "
                           "travels in an archive (it could carry code); refusing it")


def _read_manifest(tar: tarfile.TarFile, members: list[tarfile.TarInfo],
                   where: str) -> dict[str, Any]:
    found = [m for m in members if m.name == MANIFEST]
    if not found:
        raise ArchiveError(f"{where} is not a complete Loupe archive: it has no "
                           f"{MANIFEST} (written last, so the file may be cut short)")
    if found[0].size > MAX_MANIFEST_BYTES or not found[0].isfile():
        raise ArchiveError(f"{where}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES:,} bytes "
                           "or not a file; refusing it")
    with tar.extractfile(found[0]) as handle:
        text = handle.read()
    try:
        manifest = json.loads(text)
    except ValueError:
        raise ArchiveError(f"{where}: {MANIFEST} is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f"{where} is not a Loupe archive (format "
                           f"{manifest.get('format') if isinstance(manifest, dict) else None!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArchiveError(f"{where} has archive format version "
                           f"{manifest.get('format_version')!r}; this Loupe reads "
                           f"{FORMAT_VERSION}")
    return manifest


def _check_listing(manifest: dict[str, Any], members: list[tarfile.TarInfo],
                   where: str) -> dict[str, dict[str, Any]]:
    """Every file member listed with its size, every listed name present: the listing."""
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str)
            and isinstance(v.get("size"), int) for v in listed.values()):
        raise ArchiveError(f"{where}: the manifest's 'files' is not a table of name -> "
                           "size and sha256")
    for required in _TOP[:2]:
        if required not in listed:
            raise ArchiveError(f"{where}: the manifest lists no {required}")
    present = {m.name: m for m in members if m.isfile() and m.name != MANIFEST}
    for name, member in present.items():
        if name not in listed:
            raise ArchiveError(f"{where}: member {name!r} is not listed in the manifest; "
                               "refusing it")
        if member.size != listed[name]["size"]:
            raise ArchiveError(f"{where}: {name} does not match its checksum (damaged: "
                               f"{member.size:,} bytes, the manifest lists "
                               f"{listed[name]['size']:,})")
    for name in listed:
        if name not in present:
            raise ArchiveError(f"{where}: {name} is listed in the manifest but missing")
    return listed


def _check_space(total: int, where: str) -> None:
    free = shutil.disk_usage(projects_dir()).free
    if free < total + SPARE_BYTES:
        raise ArchiveError(f"{where} expands to {total:,} bytes and {str(projects_dir())!r} "
                           f"has {free:,} bytes free; free some space first")


def _extract_one(tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path,
                 listed: dict[str, dict[str, Any]], where: str) -> None:
    if member.name == MANIFEST:
        return
    try:
        target = inside(staging, member.name, what=f"archive member {member.name!r}")
    except UnsafePathError as error:
        raise ArchiveError(f"{where}: {error}") from None
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tar.extractfile(member) as source, target.open("xb") as out:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != listed[member.name]["sha256"]:
        raise ArchiveError(f"{where}: {member.name} does not match its checksum (damaged)")
