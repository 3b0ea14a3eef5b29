"""Pages of a project's samples, filtered and counted by the database (not in memory).

What a labelling grid needs at 100,000 samples: the count and one page of rows for a set of
filters, the values each filter can take, and (only when asked) every matching id. Filters
are MongoDB queries on indexed fields (``ground_truth.label``, ``tags`` and the slice
fields get an index the first time a project is paged), so a page or a filter change reads
a page's documents, not the project's.

Filters: ``label`` (a class, or :data:`UNLABELLED`), ``tag``, ``issue`` (flagged by the
newest label-issue run), ``quality`` (an image-quality issue name, or ``"any"``) and any
slice field (matched as text, so ``line=1`` finds ``1`` and ``"1"``).
"""

from __future__ import annotations

import contextlib
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


def ensure_indexes(project: Project) -> None:
    """Index the fields filters match on (once per field: later calls only list them)."""
    dataset = project.dataset
    have = set(dataset.list_indexes())
    fields = [*(["ground_truth.label"] if project.task == "classification" else []), "tags",
              *project.slice_fields]
    for field in fields:
        if field not in have and dataset.has_sample_field(field):
            dataset.create_index(field)


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
    """How many samples ``match`` selects."""
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
                   slice_fields: Sequence[str]) -> dict[str, Any]:
    """The values each filter can take within the scope: ``label`` (classes present, then
    :data:`UNLABELLED` when some sample has none), ``tag``, ``slices`` (field → values as
    text), ``issue`` (whether any sample is flagged) and ``quality`` (``"any"`` and the
    issue names found, or empty)."""
    collection = _collection(project)
    base = query(project, scope, {}, slice_fields)
    present = set(collection.distinct("ground_truth.label", base))
    labels = [c for c in classes if c in present]
    if None in present or collection.find_one({**base, "ground_truth.label": None},
                                              {"_id": 1}) is not None:
        labels.append(UNLABELLED)
    tags = sorted(str(t) for t in collection.distinct("tags", base) if t is not None)
    slices = {field: sorted({str(v) for v in collection.distinct(field, base)
                             if v is not None}) for field in slice_fields}
    issue = bool(scope.issue_key) and collection.find_one(
        {**base, f"{scope.issue_key}.is_issue": True}, {"_id": 1}) is not None
    quality: list[str] = []
    if project.dataset.has_sample_field(QUALITY_FIELD):
        names = sorted(str(n) for n in collection.distinct(f"{QUALITY_FIELD}.issues", base)
                       if n is not None)
        quality = ["any", *names] if names else []
    return {"label": labels, "tag": tags, "slices": slices, "issue": issue,
            "quality": quality}
