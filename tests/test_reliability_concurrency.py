"""Concurrent labelers on one project: no history entry and no consensus update is lost.

The consensus rule replayed here is the store's guarantee (``workbench.store._db.append_history``):
a sample's ``ground_truth`` is the replay of its history in the order the entries were
stored, ``label_k, disputed_k = consensus(history[:k], label_{k-1})`` (one entry per write
here), so a tie keeps the consensus that was in force before the tying entry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from bson import ObjectId
from images_factory import write_image

import workbench as wb
from workbench.store import _db as store
from workbench.store.labels import DISPUTED_TAG, consensus, now

CLASSES = ["ok", "scratch", "dent"]
RELABELS = 300

WORKER = r"""
import json, random, sys, time
from pathlib import Path
import workbench as wb

name, seed, annotators, reviewer, ids_file, go_file = sys.argv[1:7]
p = wb.Project.open(name)
ids = Path(ids_file).read_text().split()
classes = p.classes
rng = random.Random(int(seed))
annotators = annotators.split(",")
deadline = time.time() + 120
while not Path(go_file).exists() and time.time() < deadline:
    time.sleep(0.01)
acked = []
for _ in range(int(sys.argv[7])):
    sid = rng.choice(ids)
    review = rng.random() < 0.1
    who = reviewer if review else rng.choice(annotators)
    label = rng.choice(classes)
    p.annotate(sid, label, annotator=who, review=review)
    acked.append([sid, who, label, review])
print(json.dumps(acked))
"""


def _replay(history: list[dict]) -> tuple[str | None, bool]:
    label, disputed = None, False
    for k in range(1, len(history) + 1):
        label, disputed = consensus(history[:k], label)
    return label, disputed


def _stored(project: wb.Project) -> dict[str, dict]:
    """Raw documents as the database holds them (history in stored order)."""
    cursor = project.dataset._sample_collection.find(
        {}, {"annotations": 1, "ground_truth": 1, "tags": 1})
    return {str(d["_id"]): d for d in cursor}


def _check_consensus_is_the_replay(project: wb.Project) -> None:
    for sid, doc in _stored(project).items():
        history = [{"annotator": e["annotator"], "label": e["label"],
                    "review": bool(e.get("review"))} for e in doc["annotations"]]
        label, disputed = _replay(history)
        assert (doc.get("ground_truth") or {}).get("label") == label, sid
        assert (DISPUTED_TAG in doc["tags"]) == disputed, sid


@pytest.fixture
def labelled(tmp_path):
    name = f"rel-conc-{os.getpid()}"
    p = wb.Project.create(name, classes=CLASSES, overwrite=True)
    for i in range(12):
        write_image(tmp_path / "imgs" / CLASSES[i % 3] / f"{i}.png", seed=100 + i)
    report = p.import_folder(tmp_path / "imgs", progress=False)
    assert len(report.added) == 12
    yield p
    wb.delete_project(name)


@pytest.mark.slow
def test_two_processes_relabelling_the_same_samples_lose_nothing(labelled, tmp_path):
    p = labelled
    ids_file, go_file = tmp_path / "ids.txt", tmp_path / "go"
    ids_file.write_text("\n".join(p.dataset.values("id")))
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, p.name, str(seed), annotators,
                          reviewer, str(ids_file), str(go_file), str(RELABELS)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed, annotators, reviewer in ((1, "alice,bob", "rita"), (2, "carol,dave", "rob"))
    ]
    time.sleep(0.5)
    go_file.touch()  # both start hammering at once (they wait for this file)
    acked = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
        acked.append(json.loads(out.strip().splitlines()[-1]))
    assert [len(a) for a in acked] == [RELABELS, RELABELS]

    stored = _stored(p)
    entries = [e for doc in stored.values() for e in doc["annotations"]]
    assert len(entries) == 12 + 2 * RELABELS  # every acknowledged write is in a history
    for who_and_label in ({(w, lab, r) for _, w, lab, r in a} for a in acked):
        stored_set = {(e["annotator"], e["label"], bool(e.get("review"))) for e in entries}
        assert who_and_label <= stored_set
    # each process's writes to one sample appear in the order it made them
    for run in acked:
        for sid in {s for s, *_ in run}:
            mine = [(w, lab) for s, w, lab, _ in run if s == sid]
            mine_who = {w for w, _ in mine}
            theirs = [(e["annotator"], e["label"]) for e in stored[sid]["annotations"]
                      if e["annotator"] in mine_who]
            assert theirs == mine
    _check_consensus_is_the_replay(p)

    # FiftyOne itself loads what the conditional updates wrote
    reopened = wb.Project.open(p.name)
    frame = reopened.to_pandas().set_index("sample_id")
    for sample in reopened.dataset.iter_samples():
        label = sample.ground_truth.label if sample.ground_truth is not None else None
        assert label == frame.label[sample.id]
        assert label == (stored[sample.id].get("ground_truth") or {}).get("label")


def test_a_write_computed_from_a_stale_read_is_retried(labelled, monkeypatch):
    """Deterministic interleaving: another writer appends between our read and our write."""
    p = labelled
    sid = p.dataset.first().id
    original = store._label_states
    calls = []

    def stale_then_fresh(collection, sample_ids):
        state = original(collection, sample_ids)
        if not calls:  # someone else writes after we read: our conditional update must miss
            calls.append("interleaved")
            collection.update_one({"_id": ObjectId(sid)}, {"$push": {"annotations": {
                "_cls": "DynamicEmbeddedDocument", "annotator": "zoe", "label": "dent",
                "time": now()}}})
            store.refresh_consensus(p.dataset, [sid])
        else:
            calls.append("read")
        return state

    monkeypatch.setattr(store, "_label_states", stale_then_fresh)
    p.annotate(sid, "dent", annotator="alice")
    assert calls[:2] == ["interleaved", "read"]  # first write missed, re-read, retried
    stored_order = [e["annotator"] for e in _stored(p)[sid]["annotations"]]
    assert stored_order == ["import", "zoe", "alice"]
    assert p.to_pandas().set_index("sample_id").label[sid] == "dent"
    _check_consensus_is_the_replay(p)


def test_a_tie_keeps_the_consensus_in_force_before_it(labelled):
    p = labelled
    sid = p.dataset.first().id
    first = p.to_pandas().set_index("sample_id").label[sid]
    other = next(c for c in CLASSES if c != first)
    p.annotate(sid, other, annotator="alice")  # import: first, alice: other -> tie
    assert p.to_pandas().set_index("sample_id").label[sid] == first
    assert DISPUTED_TAG in p.dataset[sid].tags
    p.annotate(sid, other, annotator="bob")  # 2 vs 1
    assert p.to_pandas().set_index("sample_id").label[sid] == other
    assert DISPUTED_TAG not in p.dataset[sid].tags
    p.annotate(sid, first, annotator="carol")  # 2 vs 2: the consensus in force stays
    assert p.to_pandas().set_index("sample_id").label[sid] == other
    assert DISPUTED_TAG in p.dataset[sid].tags
    _check_consensus_is_the_replay(p)

