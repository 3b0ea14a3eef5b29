"""Box histories of detection samples: append-only box sets per annotator, the consensus
boxes kept in ``ground_truth`` in the same conditional update (see
:func:`workbench.store._db.append_history` for labels; both retry through
:func:`workbench.store._db._write_in_rounds`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bson import ObjectId

from workbench.store._db import (
    BOX_HISTORY,
    _write_in_rounds,
)
from workbench.store.boxes import box_consensus
from workbench.store.durability import not_stored
from workbench.store.labels import now

if TYPE_CHECKING:
    import fiftyone as fo


def box_entry(annotator: str, boxes: Sequence[Mapping] | None, stamp: datetime, *,
              review: bool = False) -> dict[str, Any]:
    """One entry of a box history as stored (``boxes`` None: a withdrawal)."""
    return {"_cls": "DynamicEmbeddedDocument", "annotator": annotator, "time": stamp,
            "review": bool(review),
            "boxes": None if boxes is None else [
                {"label": b["label"], "bounding_box": [float(v) for v in b["bounding_box"]]}
                for b in boxes]}


def detections_document(boxes: Sequence[Mapping] | None) -> dict[str, Any] | None:
    """A box set as the raw ``fo.Detections`` document FiftyOne stores (None stays None)."""
    if boxes is None:
        return None
    return {"_id": ObjectId(), "_cls": "Detections", "detections": [
        {"_id": ObjectId(), "_cls": "Detection", "attributes": {}, "tags": [],
         "label": b["label"], "bounding_box": list(b["bounding_box"])} for b in boxes]}


def append_box_history(dataset: fo.Dataset, entries: Mapping[str, Sequence[dict]]) -> None:
    """Append box entries (from :func:`box_entry`) and update the consensus, atomically.

    Like :func:`append_history`: per sample, read the history (``n`` entries), compute
    :func:`workbench.store.boxes.box_consensus` over it and the new entries, and write entries and
    ``ground_truth`` in one update applied only if the history still has ``n`` entries;
    otherwise read again and retry. The updates of all samples go in one ``bulk_write``;
    since histories only grow, an update took effect exactly when the entries at ``n…`` are
    the new ones. Concurrent writers never lose an entry, and the consensus is always that
    of the stored history. Ids of missing samples are skipped.

    Raises
    ------
    ConcurrentWriteError
        When a sample kept changing for :data:`MAX_WRITE_ATTEMPTS` attempts.
    """
    _write_in_rounds(dataset, {sid: items for sid, items in entries.items() if items},
                     _box_attempt, what="boxes")


def _box_attempt(collection: Any, pending: dict[str, list[dict]], n: int,
                 in_flight: dict[str, list[dict]]) -> tuple[dict[str, list[dict]], list[str]]:
    """Round ``n`` of :func:`append_box_history`: (still pending, written).

    Entries an interrupted earlier write already stored are not written again; while the
    bulk write is under way, its entries are in ``in_flight``.
    """
    from pymongo import UpdateOne

    states = _box_states(collection, list(pending))
    written = []
    todo = {}
    for sid, items in pending.items():
        if sid not in states:  # deleted meanwhile
            continue
        fresh = not_stored(states[sid], items)
        if fresh:
            todo[sid] = fresh
        else:
            written.append(sid)
    if not todo:
        return {}, written
    sizes = {sid: len(states[sid]) for sid in todo}
    in_flight.update(todo)
    result = collection.bulk_write(
        [UpdateOne(*_box_update(sid, states[sid], todo[sid])) for sid in todo], ordered=False)
    in_flight.clear()
    if result.matched_count == len(todo):
        return {}, written + list(todo)
    after = _box_states(collection, list(todo))
    retry = {}
    for sid, n in sizes.items():
        items = todo[sid]
        if _same_entries(after.get(sid, [])[n:n + len(items)], items):
            written.append(sid)
        elif sid in after:
            retry[sid] = items
    return retry, written


def _box_states(collection: Any, sample_ids: Sequence[str]) -> dict[str, list[dict]]:
    cursor = collection.find({"_id": {"$in": [ObjectId(s) for s in sample_ids]}},
                             {BOX_HISTORY: 1})
    return {str(doc["_id"]): list(doc.get(BOX_HISTORY) or []) for doc in cursor}


def _box_update(sid: str, history: list[dict], items: list[dict]) -> tuple[dict, dict]:
    """Filter and update of one sample's append + consensus, valid while it has ``n``
    entries."""
    n = len(history)
    condition: dict[str, Any] = {"_id": ObjectId(sid)}
    if n:
        condition[BOX_HISTORY] = {"$size": n}
    else:
        condition["$or"] = [{BOX_HISTORY: {"$size": 0}}, {BOX_HISTORY: None}]
    update: dict[str, Any] = {"$set": {
        "last_modified_at": now(),
        "ground_truth": detections_document(box_consensus([*history, *items]))}}
    if n:
        update["$push"] = {BOX_HISTORY: {"$each": items}}
    else:
        update["$set"][BOX_HISTORY] = items
    return condition, update


def _same_entries(stored: Sequence[dict], items: Sequence[dict]) -> bool:
    def key(entry: dict) -> tuple:
        stamp = entry.get("time")
        return (entry.get("annotator"), stamp.replace(tzinfo=None) if stamp else None,
                bool(entry.get("review")), entry.get("boxes"))

    return len(stored) == len(items) and all(
        key(a) == key(b) for a, b in zip(stored, items, strict=True))


def box_histories(dataset: fo.Dataset, sample_ids: Sequence[str]) -> dict[str, list[dict]]:
    """Sample id -> its box history as dicts (annotator, time, review, boxes), oldest first."""
    wanted = [ObjectId(s) for s in sample_ids if ObjectId.is_valid(s)]
    cursor = dataset._sample_collection.find({"_id": {"$in": wanted}}, {BOX_HISTORY: 1})
    return {str(doc["_id"]): [
        {"annotator": e.get("annotator"), "time": e.get("time"), "review": bool(e.get("review")),
         "boxes": e.get("boxes")} for e in doc.get(BOX_HISTORY) or []] for doc in cursor}
