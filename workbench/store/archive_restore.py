"""Restoring an extracted archive: check every document, build in staging, then swap in.

:func:`workbench.store.archive.import_archive` extracts and checks the members into a staging
folder, then calls :func:`restore`, which

1. reads ``dataset.json`` and ``samples.jsonl`` (an :class:`ArchiveError` names the file,
   line and field of anything malformed: bad JSON, duplicate ids, wrong types, a dataset
   that is not a Loupe project, a field type that is not FiftyOne's own);
2. resolves every path a document names (sample ``filepath``, a synthetic image's mask,
   recipe ids) inside the new project folder, refusing any that would leave it, and checks
   that every sample's image is in the archive and matches its content hash;
3. builds the dataset under a temporary name that is not a project (no ``loupe`` tag,
   marked ``info["loupe_transient"]``), and loads every sample once;
4. swaps it in: the old project (``overwrite=True``) is set aside, the new folder and
   dataset take its name, and only then is the old one deleted. A failure at any step
   undoes the steps before it.

Leftovers of a restore killed half-way (a temporary dataset, a project set aside, the
staging folder) are found by their marker, whose process is gone, and undone by
:func:`recover_leftovers` at the start of the next restore.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from bson import ObjectId, json_util
from bson.errors import BSONError
from pymongo.errors import OperationFailure

from workbench.config import fiftyone, projects_dir
from workbench.errors import LoupeError, ProjectError, UnsafePathError
from workbench.store import _db as store
from workbench.store.archive_format import (
    _MEDIA,
    _PROJECT,
    DATASET_KEYS,
    ArchiveError,
    safe_suffix,
)
from workbench.store.leftovers import host_id, owner_tag, process_alive, remove_stale
from workbench.store.ownership import OWNER, OWNER_KEY, require_loupe_dataset
from workbench.store.ownership import check_name as _check_name
from workbench.store.safe_paths import inside, remove_inside
from workbench.store.synthetic import recipe_path

if TYPE_CHECKING:
    import fiftyone as fo

#: ``dataset.info`` key of a dataset that is not (yet, or any more) a project.
TRANSIENT = "loupe_transient"
#: Errors FiftyOne or MongoDB raise on malformed documents (not on an unreachable server).
_DATA_ERRORS = (OperationFailure, BSONError, ValueError, TypeError, KeyError, AttributeError,
                ImportError, AssertionError)
_BATCH = 1000


def restore(name: object, manifest: dict[str, Any], staging: Path, where: str, *,
            overwrite: bool) -> None:
    """Turn the extracted archive in ``staging`` into project ``name`` (see module doc)."""
    _check_name(name)
    _check_target(name, overwrite)
    described = _read_described(staging / "dataset.json", where)
    documents = _read_documents(staging / "samples.jsonl", where)
    if len(documents) != manifest.get("n_samples"):
        raise ArchiveError(f"{where}: samples.jsonl holds {len(documents)} samples, "
                           f"the manifest says {manifest.get('n_samples')}")
    built, archived = _layout(staging, where)
    final = projects_dir() / name
    missing = manifest.get("missing_media") or []
    if not _strings(missing):
        raise ArchiveError(f"{where}: the manifest's missing_media is not a list of paths")
    for line, doc in documents:
        _place(doc, f"{where}: samples.jsonl line {line} (sample {doc['_id']})", built=built,
               final=final, archived=archived, listed=manifest["files"], missing=set(missing))
    info = _restored_info(described["info"], final, where)
    dataset = _build(name, described, info, [doc for _, doc in documents], where)
    _swap_in(name, dataset, described["tags"], built, overwrite=overwrite)


# -- reading and checking the documents ------------------------------------------------------
def _check_target(name: str, overwrite: bool) -> None:
    folder = projects_dir() / name
    exists = store.dataset_exists(name)
    taken = exists or folder.is_symlink() or (folder.exists() and (
        not folder.is_dir() or any(folder.iterdir())))
    if taken and not overwrite:
        raise ProjectError(f"project {name!r} already exists (or its folder does); pass "
                           "overwrite=True to replace it, or name=... to restore under "
                           "another name")
    if exists:
        require_loupe_dataset(name, "replace")


def _read_described(path: Path, where: str) -> dict[str, Any]:
    try:
        described = json_util.loads(path.read_text(encoding="utf-8"))
    except Exception as error:  # JSON, extended-JSON and encoding errors alike
        raise ArchiveError(f"{where}: dataset.json is not valid extended JSON "
                           f"({type(error).__name__}: {error})") from None
    if not isinstance(described, dict) or not set(described) <= set(DATASET_KEYS):
        raise ArchiveError(f"{where}: dataset.json is not a dataset description (expected an "
                           f"object with the keys {', '.join(DATASET_KEYS)})")
    tags = described.get("tags")
    if not _strings(tags) or store.PROJECT_TAG not in tags:
        raise ArchiveError(f"{where}: dataset.json: tags {tags!r} lack {store.PROJECT_TAG!r}, "
                           "so this is not the archive of a Loupe project")
    info = described.get("info")
    loupe = info.get("loupe") if isinstance(info, dict) else None
    if not isinstance(loupe, dict) or not _strings(loupe.get("classes")):
        raise ArchiveError(f"{where}: dataset.json: info.loupe (Loupe's bookkeeping, with "
                           "its list of classes) is missing or malformed")
    if described.get("media_type", "image") != "image":
        raise ArchiveError(f"{where}: dataset.json: media_type "
                           f"{described.get('media_type')!r}; Loupe projects hold images")
    fields = described.get("sample_fields", [])
    if not isinstance(fields, list):
        raise ArchiveError(f"{where}: dataset.json: sample_fields is not a list")
    for field in fields:
        _check_declaration(field, where)
    return described


def _check_declaration(field: object, where: str) -> None:
    """A field declaration names only FiftyOne's own types: FiftyOne imports the module a
    declaration names, so an archive must not choose it."""
    if not isinstance(field, dict) or not isinstance(field.get("name"), str):
        raise ArchiveError(f"{where}: dataset.json: a sample field declaration is malformed "
                           f"({str(field)[:80]!r})")
    for key in ("ftype", "embedded_doc_type", "subfield"):
        value = field.get(key)
        if (value is not None or key == "ftype") and not (
                isinstance(value, str) and value.startswith("fiftyone.core.")):
            raise ArchiveError(f"{where}: dataset.json: field {field['name']!r} declares "
                               f"{key} {value!r}; only FiftyOne's own types "
                               "(fiftyone.core.…) are accepted")
    subfields = field.get("fields") or []
    if not isinstance(subfields, list):
        raise ArchiveError(f"{where}: dataset.json: field {field['name']!r}: 'fields' is not "
                           "a list")
    for sub in subfields:
        _check_declaration(sub, where)


def _read_documents(path: Path, where: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, document)`` of every sample, each checked for Loupe's own fields."""
    documents: list[tuple[int, dict[str, Any]]] = []
    seen: set[ObjectId] = set()
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise ArchiveError(f"{where}: samples.jsonl is not UTF-8 text ({error})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        label = f"{where}: samples.jsonl line {number}"
        try:
            doc = json_util.loads(line)
        except Exception as error:  # JSON, extended-JSON and type errors alike
            raise ArchiveError(f"{label} is not valid extended JSON "
                               f"({type(error).__name__}: {error})") from None
        _check_document(doc, label, seen)
        documents.append((number, doc))
    return documents


def _check_document(doc: object, label: str, seen: set[ObjectId]) -> None:
    if not isinstance(doc, dict):
        raise ArchiveError(f"{label} is not a sample document (a JSON object)")
    sid = doc.get("_id")
    if not isinstance(sid, ObjectId):
        raise ArchiveError(f"{label}: _id {sid!r} is not an ObjectId")
    if sid in seen:
        raise ArchiveError(f"{label}: sample id {sid} appears twice; refusing the archive")
    seen.add(sid)
    doc.pop("_dataset_id", None)
    checks = {"filepath": isinstance(doc.get("filepath"), str),
              "content_hash": isinstance(doc.get("content_hash"), str),
              "tags": _strings(doc.get("tags", [])),
              "annotations": isinstance(doc.get("annotations", []), list) and all(
                  isinstance(a, dict) for a in doc.get("annotations", [])),
              "ground_truth": isinstance(doc.get("ground_truth"), dict | None),
              "synthetic": isinstance(doc.get("synthetic"), dict | None)}
    bad = [key for key, ok in checks.items() if not ok]
    if bad:
        raise ArchiveError(f"{label} (sample {sid}): field {bad[0]!r} is missing or of the "
                           f"wrong type ({str(doc.get(bad[0]))[:80]!r})")


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# -- paths -------------------------------------------------------------------------------------
def _layout(staging: Path, where: str) -> tuple[Path, str | None]:
    """The staged project folder, with ``media/`` moved into ``media/archived[-n]`` (a name
    no archived project file uses); returns the folder and that sub-path."""
    built = staging / _PROJECT[:-1]
    try:
        built.mkdir(exist_ok=True)
        media = staging / _MEDIA[:-1]
        if not media.is_dir():
            return built, None
        (built / "media").mkdir(exist_ok=True)
        taken = {p.name for p in (built / "media").iterdir()}
        name = next(n for n in ("archived", *(f"archived-{i}" for i in range(2, 10**6)))
                    if n not in taken)
        media.rename(built / "media" / name)
    except OSError as error:
        raise ArchiveError(f"{where}: its project/ and media/ members do not form a project "
                           f"folder ({error})") from None
    return built, f"media/{name}"


def _place(doc: dict[str, Any], label: str, *, built: Path, final: Path, archived: str | None,
           listed: dict[str, dict[str, Any]], missing: set[str]) -> None:
    """Point the sample (and its mask) at the new project folder, once its image is found
    in the archive and matches its content hash."""
    filepath = doc["filepath"]
    if filepath.startswith(_PROJECT):
        relative = filepath[len(_PROJECT):]
    elif filepath.startswith(_MEDIA) and archived is not None:
        relative = f"{archived}/{filepath[len(_MEDIA):]}"
    elif filepath in missing:  # missing when archived: a path inside, never the old one
        doc["filepath"] = str(final / "media" / "missing" /
                              f"{doc['_id']}{safe_suffix(PurePosixPath(filepath).suffix)}")
        relative = None
    else:
        raise ArchiveError(f"{label}: filepath {filepath!r} is not a file of the archive "
                           "(project/… or media/…); Loupe never restores a path outside the "
                           "project folder")
    if relative is not None:
        staged = _inside(built, relative, f"{label}: filepath")
        expected = listed.get(filepath, {}).get("sha256")
        if expected is None or not staged.is_file():
            raise ArchiveError(f"{label}: its image {filepath!r} is not in the archive")
        if not _same_image(expected, doc["content_hash"], staged.name):
            raise ArchiveError(f"{label}: image {filepath!r} does not match the sample's "
                               "content_hash; refusing the archive")
        doc["filepath"] = str(final / staged.relative_to(built.resolve()))
    if doc.get("synthetic") is not None:
        _place_synthetic(doc["synthetic"], label, built, final)


def _same_image(sha256: str, content_hash: str, name: str) -> bool:
    """The file is the sample's image: same SHA-256, or the PNG copy import made of a
    converted image (named by the original's hash)."""
    return sha256 == content_hash or name == f"{content_hash[:20]}.png"


def _place_synthetic(recipe: dict[str, Any], label: str, built: Path, final: Path) -> None:
    try:
        recipe_path(final, recipe.get("recipe"))
    except UnsafePathError as error:
        raise ArchiveError(f"{label}: field synthetic.recipe: {error}") from None
    mask = recipe.get("mask")
    if mask is None:
        return
    parts = PurePosixPath(mask).parts if isinstance(mask, str) else ()
    if isinstance(mask, str) and mask.startswith(_PROJECT):
        relative = mask[len(_PROJECT):]
    elif len(parts) > 4 and parts[0] == "/" and parts[-4:-1] == (
            "synthetic", recipe["recipe"], "masks"):  # archives written before masks moved
        relative = "/".join(parts[-4:])
    else:
        raise ArchiveError(f"{label}: field synthetic.mask {mask!r} is not a path inside the "
                           "project folder; refusing the archive")
    staged = _inside(built, relative, f"{label}: field synthetic.mask")
    recipe["mask"] = str(final / staged.relative_to(built.resolve()))


def _inside(root: Path, relative: str, what: str) -> Path:
    try:
        return inside(root, relative, what=what)
    except UnsafePathError as error:
        raise ArchiveError(str(error)) from None


def _restored_info(info: dict[str, Any], final: Path, where: str) -> dict[str, Any]:
    """``info`` with the recipes' folders under the new project folder and Loupe's marker."""
    loupe = dict(info["loupe"])
    recipes = loupe.get("synthetic")
    if recipes is not None:
        if not isinstance(recipes, dict) or not all(isinstance(r, dict)
                                                    for r in recipes.values()):
            raise ArchiveError(f"{where}: dataset.json: info.loupe.synthetic is not a table "
                               "of recipes")
        for recipe_id in recipes:
            try:
                folder = recipe_path(final, recipe_id)
            except UnsafePathError as error:
                raise ArchiveError(f"{where}: dataset.json: info.loupe.synthetic: "
                                   f"{error}") from None
            recipes[recipe_id] = {**recipes[recipe_id], "folder": str(folder)}
    loupe[OWNER_KEY] = OWNER
    return {**{k: v for k, v in info.items() if k != TRANSIENT}, "loupe": loupe}


# -- building and swapping -----------------------------------------------------------------------
def _build(name: str, described: dict[str, Any], info: dict[str, Any],
           documents: list[dict[str, Any]], where: str) -> fo.Dataset:
    """The dataset under a temporary name, not a project (no ``loupe`` tag) until swapped in;
    deleted again on any failure."""
    fo = fiftyone()
    dataset = fo.Dataset(f"{name}-restoring-{uuid.uuid4().hex[:8]}", persistent=True)
    try:
        kept = ("sample_fields", "classes", "default_classes", "media_type")
        _raw_update(dataset, {"$set": {
            **{k: described[k] for k in kept if k in described},
            "tags": [t for t in described["tags"] if t != store.PROJECT_TAG],
            "info": {**info, TRANSIENT: _transient("restoring")}}})
        dataset.reload()
        for doc in documents:
            doc["_dataset_id"] = dataset._doc.id
        for start in range(0, len(documents), _BATCH):
            store.add_samples(dataset, documents[start:start + _BATCH])
        dataset.create_index("content_hash")
        store.ensure_review_field(dataset)
        for _ in dataset.iter_samples():  # FiftyOne can load every sample
            pass
    except BaseException as error:
        _drop(dataset)
        if isinstance(error, _DATA_ERRORS) and not isinstance(error, LoupeError):
            raise ArchiveError(f"{where}: its samples are not valid FiftyOne documents "
                               f"({type(error).__name__}: {str(error)[:300]})") from None
        raise
    return dataset


def _swap_in(name: str, dataset: fo.Dataset, tags: list[str], built: Path, *,
             overwrite: bool) -> None:
    """Give ``dataset`` and ``built`` the project's name; an old project is deleted only
    once the new one is in place, and every step is undone if a later one fails."""
    root = projects_dir()
    final = root / name
    temp = dataset.name
    undo: list[Callable[[], None]] = []
    old = None
    backup = root / f".replaced.{owner_tag()}.partial"
    try:
        _check_target(name, overwrite)  # again: another restore may have taken it meanwhile
        if store.dataset_exists(name):
            old = _set_aside(name, backup.name, undo)
        if final.exists() or final.is_symlink():
            final.rename(backup)
            undo.append(lambda: backup.rename(final))
        built.rename(final)
        undo.append(lambda: final.rename(built))
        dataset.name = name
        undo.append(lambda: setattr(dataset, "name", temp))
        _raw_update(dataset, {"$set": {"tags": list(tags)}, "$unset": {f"info.{TRANSIENT}": ""}})
        dataset.reload()
    except BaseException:
        for step in reversed(undo):
            with contextlib.suppress(Exception):
                step()
        with contextlib.suppress(Exception):
            _drop(dataset)
        raise
    if old is not None:
        _drop(old)
    if backup.exists() or backup.is_symlink():
        remove_inside(root, backup, what="replaced project folder")


def _set_aside(name: str, folder: str, undo: list[Callable[[], None]]) -> fo.Dataset:
    """Rename the old project out of the way, untagged and marked, so that it is not a
    project meanwhile and a killed restore can put it back."""
    old = _load(name)
    tags = list(old.tags)
    _raw_update(old, {"$set": {
        "tags": [t for t in tags if t != store.PROJECT_TAG],
        f"info.{TRANSIENT}": _transient("replaced", original=name, tags=tags, folder=folder)}})
    undo.append(lambda: _unmark(old, tags))
    old.reload()
    old.name = f"{name}-replaced-{uuid.uuid4().hex[:8]}"
    undo.append(lambda: setattr(old, "name", name))
    return old


def _unmark(dataset: fo.Dataset, tags: list[str]) -> None:
    _raw_update(dataset, {"$set": {"tags": tags}, "$unset": {f"info.{TRANSIENT}": ""}})
    dataset.reload()


def _transient(kind: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "host": host_id(), "pid": os.getpid(), **extra}


def _raw_update(dataset: fo.Dataset, update: dict[str, Any]) -> None:
    fiftyone().core.odm.get_db_conn().datasets.update_one({"_id": dataset._doc.id}, update)


def _load(name: str) -> fo.Dataset:
    """The dataset named ``name`` in the database now: FiftyOne caches datasets by name, and
    a cached one may be another dataset that was renamed since (by a killed restore)."""
    fo = fiftyone()
    dataset = fo.load_dataset(name)
    stored = fo.core.odm.get_db_conn().datasets.find_one({"name": name}, {"_id": 1})
    if stored is not None and dataset._doc.id != stored["_id"]:
        fo.Dataset._instances.pop(name, None)
        dataset = fo.load_dataset(name)
    return dataset


def _drop(dataset: fo.Dataset) -> None:
    """Delete a dataset Loupe made, even one whose schema FiftyOne cannot load."""
    try:
        dataset.delete()
    except Exception:
        conn = fiftyone().core.odm.get_db_conn()
        doc = conn.datasets.find_one({"_id": dataset._doc.id}) or {}
        for key in ("sample_collection_name", "frame_collection_name"):
            if isinstance(doc.get(key), str):
                conn.drop_collection(doc[key])
        conn.datasets.delete_one({"_id": dataset._doc.id})


# -- leftovers of a killed restore --------------------------------------------------------------
def recover_leftovers() -> None:
    """Undo what a restore killed half-way left, once its process is gone: its temporary
    dataset is deleted, a project it had set aside is put back (or deleted, when the new
    one was already in place), and staging folders are removed."""
    conn = fiftyone().core.odm.get_db_conn()
    marked = list(conn.datasets.find({f"info.{TRANSIENT}": {"$exists": True}},
                                     {"name": 1, f"info.{TRANSIENT}": 1}))
    marked.sort(key=lambda d: d["info"][TRANSIENT].get("kind") != "restoring")
    for doc in marked:
        mark = doc["info"][TRANSIENT]
        try:
            if process_alive(str(mark.get("host")), int(mark.get("pid"))):
                continue
            dataset = _load(doc["name"])
            if mark.get("kind") == "replaced":
                _put_back(dataset, mark)
            else:
                _drop(dataset)
        except Exception:  # a leftover that cannot be undone stays; it is never a project
            continue
    remove_stale(projects_dir())


def _put_back(dataset: fo.Dataset, mark: dict[str, Any]) -> None:
    original = mark["original"]
    if original in store.list_project_names():  # the new project was already in place
        _drop(dataset)
        return
    if store.dataset_exists(original):
        return
    root = projects_dir()
    backup, final = root / mark["folder"], root / original
    if backup.is_dir():
        if final.exists() or final.is_symlink():
            remove_inside(root, final, what="half-restored project folder")
        backup.rename(final)
    dataset.name = original
    _unmark(dataset, list(mark["tags"]))


__all__ = ["TRANSIENT", "recover_leftovers", "restore"]
