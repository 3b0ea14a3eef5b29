"""Detection projects in the store: box edits with history, consensus, review, withdraw,
validation errors that name the field, and concurrent writers that keep every entry."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from images_factory import write_image

import workbench as wb
from workbench.store.boxes import box_consensus, check_boxes

CLASSES = ["scratch", "dent"]
A = {"label": "scratch", "bounding_box": [0.1, 0.2, 0.3, 0.4]}
B = {"label": "dent", "bounding_box": [0.5, 0.5, 0.25, 0.25]}


@pytest.fixture
def steel(tmp_path, request):
    name = "".join(ch if ch.isalnum() or ch in "-_." else "-"
                   for ch in f"det-{request.node.name[:40]}")
    p = wb.Project.create(name, task="detection", classes=CLASSES, overwrite=True)
    for i in range(3):
        write_image(tmp_path / "images" / f"img{i}.png", seed=i, size=(80, 60))
    p.import_folder(tmp_path / "images", layout="unlabeled", progress=False)
    yield p
    wb.delete_project(name)


def _ids(p: wb.Project) -> list[str]:
    return list(p.to_pandas().sample_id)


def test_detection_project_declares_boxes_and_survives_reopening(steel):
    assert steel.task == "detection"
    again = wb.Project.open(steel.name)
    assert again.task == "detection" and again.classes == CLASSES
    sid = _ids(steel)[0]
    steel.annotate_boxes(sid, [A, B], annotator="alice")
    ground_truth = again.dataset[sid].ground_truth
    assert type(ground_truth).__name__ == "Detections"
    assert [(d.label, d.bounding_box) for d in ground_truth.detections] == [
        ("scratch", A["bounding_box"]), ("dent", B["bounding_box"])]


def test_box_edits_are_kept_in_history_and_the_newest_set_wins(steel):
    sid, other, unlabelled = _ids(steel)
    steel.annotate_boxes(sid, [A], annotator="alice")
    steel.annotate_boxes(sid, [A, B], annotator="bob")
    steel.annotate_boxes(other, [], annotator="alice")  # looked at it: no defect
    history = steel.box_history(sid)
    assert list(history.annotator) == ["alice", "bob"]
    assert list(history.n_boxes) == [1, 2] and list(history.review) == [False, False]
    assert history.boxes[0] == [A]
    boxes = steel.boxes()
    assert list(boxes.sample_id) == [sid, sid] and list(boxes.box_index) == [0, 1]
    assert list(boxes.label) == ["scratch", "dent"]
    assert boxes.loc[1, ["x", "y", "w", "h"]].tolist() == B["bounding_box"]
    counts = steel.to_pandas().set_index("sample_id").n_boxes
    assert counts[sid] == 2 and counts[other] == 0 and pd.isna(counts[unlabelled])
    # a relabel by the first annotator is newest now, and history only grows
    steel.annotate_boxes(sid, [B], annotator="alice")
    assert steel.boxes().label.tolist() == ["dent"]
    assert len(steel.box_history(sid)) == 3


def test_withdraw_falls_back_to_the_box_set_still_in_force(steel):
    sid = _ids(steel)[0]
    steel.annotate_boxes(sid, [A], annotator="alice")
    steel.annotate_boxes(sid, [B], annotator="bob")
    steel.withdraw_boxes(sid, annotator="bob")
    assert steel.boxes().label.tolist() == ["scratch"]
    steel.withdraw_boxes(sid, annotator="alice")
    assert steel.boxes().empty
    assert steel.dataset[sid].ground_truth is None
    assert pd.isna(steel.to_pandas().set_index("sample_id").n_boxes[sid])
    history = steel.box_history(sid)
    assert history.boxes.tolist()[2:] == [None, None] and pd.isna(history.n_boxes[3])


def test_a_review_decides_until_it_is_withdrawn(steel):
    sid = _ids(steel)[0]
    steel.annotate_boxes(sid, [A], annotator="alice")
    steel.annotate_boxes(sid, [B], annotator="lead", review=True)
    steel.annotate_boxes(sid, [A, B], annotator="bob")  # a later vote does not override
    assert steel.boxes().label.tolist() == ["dent"]
    steel.withdraw_boxes(sid, annotator="lead", review=True)
    assert steel.boxes().label.tolist() == ["scratch", "dent"]  # bob's, the newest vote
    assert steel.box_history(sid).review.tolist() == [False, True, False, True]


def test_consensus_rule_on_plain_histories():
    def entry(who, boxes, review=False):
        return {"annotator": who, "boxes": boxes, "review": review}

    assert box_consensus([]) is None
    assert box_consensus([entry("a", [])]) == []
    assert box_consensus([entry("a", [A]), entry("b", [B])]) == [B]
    assert box_consensus([entry("a", [A]), entry("b", [B]), entry("b", None)]) == [A]
    assert box_consensus([entry("a", [A]), entry("r", [B], True), entry("a", [])]) == [B]
    assert box_consensus([entry("r", [B], True), entry("a", [A]), entry("r", None, True)]) == [A]
    assert box_consensus([entry("a", [A]), entry("a", None)]) is None


@pytest.mark.parametrize(("boxes", "expected"), [
    ([A, {"label": "dent", "bounding_box": [0.5, 0.5, 0.0, 0.1]}],
     "boxes[1].bounding_box: w must be > 0"),
    ([{"label": "dent", "bounding_box": [0.8, 0.1, 0.3, 0.1]}], "boxes[0].bounding_box"),
    ([{"label": "dent", "bounding_box": [0.1, 0.1, 0.3]}], "boxes[0].bounding_box"),
    ([{"label": "dent", "bounding_box": [0.1, float("nan"), 0.3, 0.2]}], "y must be finite"),
    ([A, A, {"label": "dent"}], "boxes[2].bounding_box: missing"),
    ([{"label": "rust", "bounding_box": [0.1, 0.1, 0.2, 0.2]}], "boxes[0].label: 'rust'"),
    ([{"label": " dent", "bounding_box": [0.1, 0.1, 0.2, 0.2]}], "boxes[0].label"),
    ("scratch", "boxes must be a list"),
])
def test_bad_boxes_name_the_box_and_field_and_write_nothing(steel, boxes, expected):
    sid = _ids(steel)[0]
    steel.annotate_boxes(sid, [A], annotator="alice")
    with pytest.raises(wb.ProjectError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        steel.annotate_boxes(sid, boxes, annotator="bob")
    assert len(steel.box_history(sid)) == 1
    assert steel.boxes().label.tolist() == ["scratch"]


def test_boxes_as_a_dataframe_or_x_y_w_h_dicts(steel):
    sid = _ids(steel)[0]
    frame = pd.DataFrame({"label": ["dent", "scratch"], "x": [0.0, 0.5], "y": [0.0, 0.5],
                          "w": [1.0, 0.5], "h": [0.5, 0.5]})
    steel.annotate_boxes(sid, frame, annotator="alice")
    assert steel.boxes()[["label", "x", "y", "w", "h"]].to_dict("list") == frame.to_dict("list")
    steel.annotate_boxes(sid, [{"label": "dent", "x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2}],
                         annotator="alice")
    assert steel.boxes().w.tolist() == [0.2]
    assert check_boxes([]) == []


def test_unknown_sample_or_annotator_is_refused(steel):
    with pytest.raises(wb.ProjectError, match="sample id 'nope'"):
        steel.annotate_boxes("nope", [A], annotator="alice")
    with pytest.raises(wb.ProjectError, match="annotator"):
        steel.annotate_boxes(_ids(steel)[0], [A], annotator="")


def test_class_labels_and_boxes_do_not_mix(steel, project):
    sid = _ids(steel)[0]
    with pytest.raises(wb.ProjectError, match="annotate_boxes"):
        steel.annotate(sid, "dent", annotator="alice")
    with pytest.raises(wb.ProjectError, match="box_history"):
        steel.history(sid)
    with pytest.raises(wb.ProjectError, match="detection project"):
        project.annotate_boxes(sid, [A], annotator="alice")
    with pytest.raises(wb.ProjectError, match="detection project"):
        project.boxes()
    with pytest.raises(wb.ProjectError, match="task='segmentation'"):
        wb.Project.create("seg", task="segmentation")


def test_class_folders_are_refused_for_a_detection_project(steel, tmp_path):
    write_image(tmp_path / "labelled" / "dent" / "x.png", seed=9)
    with pytest.raises(wb.ProjectError, match="import_voc"):
        steel.import_folder(tmp_path / "labelled", progress=False)
    assert len(steel) == 3


WORKER = r"""
import sys, time
from pathlib import Path
import workbench as wb

name, who, ids, go, n = sys.argv[1:6]
ids, n = ids.split(","), int(n)
p = wb.Project.open(name)
deadline = time.time() + 120
while not Path(go).exists() and time.time() < deadline:
    time.sleep(0.01)
for k in range(n):
    box = {"label": "dent", "bounding_box": [k / (2 * n), 0.1, 0.25, 0.25]}
    p.annotate_boxes(ids[k % len(ids)], [box] * (1 + k % 3), annotator=who)
print("done")
"""


@pytest.mark.slow
def test_concurrent_writers_from_two_processes_keep_every_entry(steel, tmp_path):
    ids = _ids(steel)[:2]
    go, n = tmp_path / "go", 30
    workers = [subprocess.Popen(
        [sys.executable, "-c", WORKER, steel.name, who, ",".join(ids), str(go), str(n)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        for who in ("alice", "bob")]
    time.sleep(1.0)
    go.touch()
    for worker in workers:
        _, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err[-2000:]
    for sid in ids:
        history = steel.box_history(sid)
        assert len(history) == n  # 15 entries from each writer per sample
        for who in ("alice", "bob"):
            mine = history[history.annotator == who]
            lefts = [boxes[0]["bounding_box"][0] for boxes in mine.boxes]
            assert lefts == sorted(lefts) and len(lefts) == n // 2  # in order, none lost
        stored = [{"annotator": a, "boxes": b, "review": r}
                  for a, b, r in zip(history.annotator, history.boxes, history.review,
                                     strict=True)]
        expected = box_consensus(stored)
        frame = steel.boxes()
        got = frame[frame.sample_id == sid]
        assert got[["x", "y", "w", "h"]].values.tolist() == [
            b["bounding_box"] for b in expected]


def test_archive_round_trip_keeps_boxes_and_their_history(steel, tmp_path):
    sid = _ids(steel)[0]
    steel.annotate_boxes(sid, [A], annotator="alice")
    steel.annotate_boxes(sid, [A, B], annotator="lead", review=True)
    restored = wb.Project.import_archive(steel.export_archive(tmp_path / "steel.tar"),
                                         name=f"{steel.name}-restored", overwrite=True)
    try:
        assert restored.task == "detection"
        assert restored.boxes().drop(columns="filepath").equals(
            steel.boxes().drop(columns="filepath"))
        history = restored.box_history(sid)
        assert history.annotator.tolist() == ["alice", "lead"]
        assert history.boxes.tolist() == [[A], [A, B]]
        restored.withdraw_boxes(sid, annotator="lead", review=True)
        assert restored.boxes().label.tolist() == ["scratch"]
    finally:
        wb.delete_project(restored.name)


def test_concurrent_bulk_appends_from_two_threads_keep_every_entry(steel):
    from concurrent.futures import ThreadPoolExecutor

    from workbench.store import box_records
    from workbench.store.labels import now

    ids, rounds = _ids(steel), 15

    def writer(who: str) -> None:
        for k in range(rounds):
            box = {"label": "scratch", "bounding_box": [k / (2 * rounds), 0.2, 0.3, 0.3]}
            box_records.append_box_history(steel.dataset, {
                sid: [box_records.box_entry(who, [box], now())] for sid in ids})

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(writer, ["alice", "bob"]))
    for sid in ids:
        history = steel.box_history(sid)
        assert len(history) == 2 * rounds
        for who in ("alice", "bob"):
            lefts = [b[0]["bounding_box"][0] for b in history[history.annotator == who].boxes]
            assert lefts == [k / (2 * rounds) for k in range(rounds)]
        last = history.boxes.iloc[-1][0]["bounding_box"]
        assert steel.boxes().set_index("sample_id").loc[sid, ["x", "y", "w", "h"]].tolist() \
            == last
