"""Pages of a project's samples, filtered and counted by the database (not in memory).

What a labelling grid needs at 100,000 samples: the count and one page of rows for a set of
filters, the values each filter can take, and (only when asked) every matching id. Filters
are MongoDB queries; a page walks the ``_id`` index with the filter until it has its rows,
so a page reads about a page's documents, and the count is one server-side scan (no
Python loop over the project). The filtered fields are deliberately not indexed: a query
answered from such an index returns samples in the index's order, not the order they were
added, which folds and reports rely on.

Filters: ``label`` (a class, or :data:`UNLABELLED`), ``tag``, ``issue`` (flagged by the
newest label-issue run), ``quality`` (an image-quality issue name, or ``"any"``) and any
slice field (matched as text, so ``line=1`` finds ``1`` and ``"1"``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
from bson import ObjectId
from bson.errors import InvalidId

from workbench.errors import ProjectError

if TYPE_CHECKING:
    from workbench.store.project import Project

#: Filter value of samples without a label.
UNLABELLED = "(unlabelled)"
#: The filters every project has (slice fields come on top).
BASE_FILTERS = ("label", "tag", "issue", "quality")
#: Field of :func:`workbench.image_issues`' per-sample results.
QUALITY_FIELD = "image_issues"


@dataclass(frozen=True)
class Scope:
    """Which samples a grid pages through: the whole project (``ids`` None, in stored
    order) or these ids in this order; ``issue_key`` is the label-issue run the ``issue``
    filter reads (None: no run)."""

    ids: tuple[str, ...] | None = None
    issue_key: str | None = None


def latest_issue_run(project: Project) -> str | None:
    """Key of the newest stored label-issue run whose field exists, else None."""
    runs = project.analysis_runs()
    runs = runs[(runs["method"] == "label_issues")
                & runs["key"].map(project.dataset.has_sample_field)]
    return None if runs.empty else str(runs.sort_values("time")["key"].iloc[-1])


def _items(value: Any) -> list:
    """The non-null members of an array field's value (or the value itself)."""
    if isinstance(value, list):
        return [v for v in value if v is not None]
    return [] if value is None else [value]


def _collection(project: Project) -> Any:
    return project.dataset._sample_collection


def object_ids(ids: Sequence[str]) -> list[ObjectId]:
    out = []
    for sid in ids:
        try:
            out.append(ObjectId(sid))
        except (InvalidId, TypeError):
            continue
    return out


def _as_text_or_number(value: Any) -> dict[str, list[Any]]:
    text = str(value)
    choices: list[Any] = [text]
    for cast in (int, float):
        with contextlib.suppress(ValueError):
            choices.append(cast(text))
    return {"$in": choices}


def query(project: Project, scope: Scope, filters: Mapping[str, Any],
          slice_fields: Sequence[str]) -> dict[str, Any]:
    """The MongoDB filter of ``filters`` within ``scope``.

    Raises
    ------
    ProjectError
        For an unknown filter name (the message lists the known ones).
    """
    parts: list[dict[str, Any]] = []
    if scope.ids is not None:
        parts.append({"_id": {"$in": object_ids(scope.ids)}})
    for name, value in filters.items():
        if name == "label":
            parts.append({"ground_truth.label": None} if value == UNLABELLED
                         else {"ground_truth.label": str(value)})
        elif name == "tag":
            parts.append({"tags": str(value)})
        elif name == "issue":
            parts.append({f"{scope.issue_key}.is_issue": True} if scope.issue_key
                         else {"_id": {"$in": []}})
        elif name == "quality":
            parts.append({f"{QUALITY_FIELD}.issues.0": {"$exists": True}} if value == "any"
                         else {f"{QUALITY_FIELD}.issues": str(value)})
        elif name in slice_fields:
            parts.append({name: _as_text_or_number(value)})
        else:
            raise ProjectError(f"unknown filter {name!r}: use label, tag, issue, quality or "
                               f"a slice field ({', '.join(slice_fields) or 'none'})")
    return {"$and": parts} if len(parts) > 1 else (parts[0] if parts else {})


def count(project: Project, match: Mapping[str, Any]) -> int:
    """How many samples ``match`` selects (the whole project: from the collection's
    metadata, no scan)."""
    if not match:
        return int(_collection(project).estimated_document_count())
    return int(_collection(project).count_documents(dict(match)))


def matching_ids(project: Project, scope: Scope, match: Mapping[str, Any]) -> list[str]:
    """Every id ``match`` selects: in stored order, or in the scope's order."""
    found = [str(d["_id"]) for d in
             _collection(project).find(dict(match), {"_id": 1}).sort("_id", 1)]
    if scope.ids is None:
        return found
    keep = set(found)
    return [sid for sid in scope.ids if sid in keep]


def page_ids(project: Project, scope: Scope, match: Mapping[str, Any], page: int,
             page_size: int) -> list[str]:
    """The ids of page ``page`` (0-based) of ``match``."""
    if scope.ids is not None:
        return matching_ids(project, scope, match)[page * page_size:(page + 1) * page_size]
    cursor = (_collection(project).find(dict(match), {"_id": 1}).sort("_id", 1)
              .skip(page * page_size).limit(page_size))
    return [str(d["_id"]) for d in cursor]


def rows(project: Project, ids: Sequence[str], issue_key: str | None) -> pd.DataFrame:
    """``filepath``, ``label``, ``tags``, ``issue`` of these samples, indexed by id, in
    this order (ids no longer stored are left out)."""
    projection = {"filepath": 1, "ground_truth.label": 1, "tags": 1}
    if issue_key:
        projection[f"{issue_key}.is_issue"] = 1
    found = {}
    for doc in _collection(project).find({"_id": {"$in": object_ids(ids)}}, projection):
        truth = doc.get("ground_truth") or {}
        flag = (doc.get(issue_key) or {}).get("is_issue") if issue_key else False
        found[str(doc["_id"])] = {"filepath": doc.get("filepath"), "label": truth.get("label"),
                                  "tags": list(doc.get("tags") or []), "issue": bool(flag)}
    kept = [sid for sid in ids if sid in found]
    return pd.DataFrame([found[sid] for sid in kept], index=pd.Index(kept, name="sample_id"),
                        columns=["filepath", "label", "tags", "issue"])


def filter_options(project: Project, scope: Scope, classes: Sequence[str],
                   slice_fields: Sequence[str], *, fresh: bool = False) -> dict[str, Any]:
    """The values each filter can take within the scope: ``label`` (classes present, then
    :data:`UNLABELLED` when some sample has none), ``tag``, ``slices`` (field → values as
    text), ``issue`` (whether any sample is flagged) and ``quality`` (``"any"`` and the
    issue names found, or empty).

    One scan of the scope's samples (150–450 ms at 100,000), remembered until a sample is
    added, removed or modified (the sample count and the newest ``last_modified_at``, both
    read from indexes): in this process, and for the whole project or an issue scope also
    in the project folder (:data:`OPTIONS_FILE`), so the first grid of a new kernel or
    dashboard opens at once too; ``fresh`` scans again (a grid's ``refresh()``)."""
    collection = _collection(project)
    key = (project.dataset._doc.id, None if scope.ids is None else tuple(scope.ids),
           scope.issue_key, tuple(classes), tuple(slice_fields))
    newest = collection.find_one({}, {"last_modified_at": 1},
                                 sort=[("last_modified_at", -1)]) or {}
    stamp = newest.get("last_modified_at")
    state = (collection.estimated_document_count(),
             None if stamp is None else stamp.isoformat(),
             project.dataset.has_sample_field(QUALITY_FIELD))
    cached = _OPTIONS.get(key)
    if not fresh and cached and cached[0] == state:
        return copy.deepcopy(cached[1])
    on_disk = _options_on_disk(project, key) if scope.ids is None else None
    if not fresh and on_disk and on_disk.get("state") == list(state):
        options = on_disk["options"]
    else:
        options = _scan_options(project, scope, classes, slice_fields)
        if scope.ids is None:
            _remember_on_disk(project, key, state, options)
    if len(_OPTIONS) > 64:
        _OPTIONS.clear()
    _OPTIONS[key] = (state, copy.deepcopy(options))
    return options


_OPTIONS: dict[tuple, tuple[tuple, dict[str, Any]]] = {}
#: The filter options last scanned, in the project folder (a cache: deleting it costs one
#: scan; never copied into an archive).
OPTIONS_FILE = "grid-options.json"


def _disk_key(key: tuple) -> str:
    return json.dumps([str(key[0]), key[2], list(key[3]), list(key[4])])


def _options_on_disk(project: Project, key: tuple) -> dict[str, Any] | None:
    try:
        entry = json.loads((project.folder / OPTIONS_FILE).read_text()).get(_disk_key(key))
    except (OSError, ValueError, AttributeError):
        return None
    return entry if isinstance(entry, dict) and isinstance(entry.get("options"), dict) else None


def _remember_on_disk(project: Project, key: tuple, state: tuple,
                      options: dict[str, Any]) -> None:
    """Best effort: a read-only or missing folder only means the next process scans."""
    path = project.folder / OPTIONS_FILE
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
        known = known if isinstance(known, dict) and len(known) < 64 else {}
        known[_disk_key(key)] = {"state": list(state), "options": options}
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(known))
        partial.replace(path)
    except (OSError, ValueError):
        return


def _scan_options(project: Project, scope: Scope, classes: Sequence[str],
                  slice_fields: Sequence[str]) -> dict[str, Any]:
    collection = _collection(project)
    base = query(project, scope, {}, slice_fields)
    # one scan for every field (five distinct queries took 5 scans: 380 ms at 100,000)
    fields = {"label": "$ground_truth.label", "tags": "$tags",
              **{f"slice{i}": f"${name}" for i, name in enumerate(slice_fields)}}
    quality_on = project.dataset.has_sample_field(QUALITY_FIELD)
    if quality_on:
        fields["quality"] = f"${QUALITY_FIELD}.issues"
    group: dict[str, Any] = {"_id": None, **{k: {"$addToSet": v} for k, v in fields.items()}}
    group["unlabelled"] = {"$max": {"$eq": [{"$ifNull": ["$ground_truth.label", None]}, None]}}
    if scope.issue_key:
        group["issue"] = {"$max": {"$eq": [f"${scope.issue_key}.is_issue", True]}}
    found = next(collection.aggregate([{"$match": base}, {"$group": group}]), {})
    present = set(found.get("label", []))
    labels = [c for c in classes if c in present]
    if found.get("unlabelled"):
        labels.append(UNLABELLED)
    tags = sorted({str(t) for value in found.get("tags", []) for t in _items(value)})
    slices = {field: sorted({str(v) for v in found.get(f"slice{i}", []) if v is not None})
              for i, field in enumerate(slice_fields)}
    issue = bool(found.get("issue", False))
    quality: list[str] = []
    if quality_on:
        names = sorted({str(n) for value in found.get("quality", []) for n in _items(value)})
        quality = ["any", *names] if names else []
    return {"label": labels, "tag": tags, "slices": slices, "issue": issue,
            "quality": quality}
