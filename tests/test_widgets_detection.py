"""IssueQueue and ConfusionDrilldown on a detection project: boxed thumbnails, decisions
stored as box reviews, and a confusion cell's images.

Most tests use a version whose held-out boxes are the true boxes (confidence 0.9), written
with :func:`workbench.train.versions.write_version`, on labels with one planted mistake of each
kind, so every issue kind and confusion cell is known in advance. One test trains a real
(tiny) detector and checks the widgets agree with ``wb.detection_report``.
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import workbench as wb
from workbench.analyse.detection import detection_report
from workbench.store.boxes import same_boxes
from workbench.store.thumbnails import thumbnail

SIZE = 64
CLASSES = ["spot", "hole"]
A, B = [0.1, 0.1, 0.3, 0.3], [0.55, 0.55, 0.35, 0.35]
CENTRE = [0.2, 0.2, 0.4, 0.4]
SHIFTED = [0.4, 0.4, 0.4, 0.4]  # IoU with CENTRE 0.14: badly placed
CORNER = [0.75, 0.05, 0.2, 0.2]  # nothing painted there
# name -> (true boxes, given boxes); the mistakes are planted in img0 to img3
IMAGES = {
    "img0.png": ([("spot", A), ("hole", B)], [("spot", A)]),  # missing hole
    "img1.png": ([("spot", A)], [("spot", A), ("hole", CORNER)]),  # extra hole
    "img2.png": ([("hole", CENTRE)], [("spot", CENTRE)]),  # wrong class
    "img3.png": ([("spot", CENTRE)], [("spot", SHIFTED)]),  # poor localisation
    "img4.png": ([("spot", A)], [("spot", A)]),
    "img5.png": ([("hole", B)], [("hole", B)]),
    "img6.png": ([], []),
}
KIND_OF = {"img0.png": "missing_box", "img1.png": "extra_box", "img2.png": "wrong_class",
           "img3.png": "poor_localisation"}


def _boxes(pairs) -> list[dict]:
    return [{"label": label, "bounding_box": list(box)} for label, box in pairs]


def _send(widget, **content) -> None:
    """Deliver a custom message as the front-end's ``model.send(content)`` does."""
    widget._handle_custom_msg(content, [])


def _click(figure, *, x, y, index) -> None:
    """A click on the heat map, the way plotly's front-end sends it."""
    figure._js2py_pointsCallback = {
        "event_type": "plotly_click",
        "points": {"xs": [x], "ys": [y], "point_indexes": [index], "trace_indexes": [0]}}


def _decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/jpeg;base64,")
    data = base64.b64decode(uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def _hex(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])


def _edge_has(pixels: np.ndarray, box: list[float], color: str) -> bool:
    """Some pixel along the left edge of ``box`` has ``color`` (JPEG: within 60)."""
    height, width, _ = pixels.shape
    x, y, _, h = box
    column = pixels[int(y * height) + 4: int((y + h) * height) - 4,
                    int(x * width): int(x * width) + 3]
    return bool((np.abs(column - _hex(color)).max(axis=-1) < 60).any())


def _last(p, sid: str) -> pd.Series:
    return p.box_history(sid).iloc[-1]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A detection project with one planted mistake per issue kind, and version ``v1``
    whose held-out boxes are the true boxes."""
    from workbench.train.versions import VersionFiles, reserve_name, write_version

    folder = tmp_path_factory.mktemp("detection-widgets")
    rng = np.random.default_rng(0)
    for name, (truth, _) in IMAGES.items():
        pixels = rng.normal(128, 4, (SIZE, SIZE, 3)).round().astype(np.uint8)  # distinct files
        for label, (x, y, w, h) in truth:
            pixels[round(y * SIZE):round((y + h) * SIZE),
                   round(x * SIZE):round((x + w) * SIZE)] = 230 if label == "spot" else 20
        Image.fromarray(pixels).save(folder / name)
    project_name = f"t-detection-widgets-{os.getpid()}"
    p = wb.Project.create(project_name, classes=CLASSES, task="detection", overwrite=True)
    p.import_folder(folder, layout="unlabeled", progress=False)
    ids = {Path(r.filepath).name: r.sample_id for r in p.to_pandas().itertuples()}
    for name, (_, given) in IMAGES.items():
        p.annotate_boxes(ids[name], _boxes(given), annotator="alice")
    rows = [(ids[name], label, 0.9, *box, i % 2)
            for i, (name, (truth, _)) in enumerate(IMAGES.items()) for label, box in truth]
    predictions = pd.DataFrame(rows, columns=["sample_id", "label", "confidence", "x", "y",
                                              "w", "h", "fold"])
    snapshot = pd.DataFrame({"sample_id": [ids[n] for n in IMAGES],
                             "fold": [i % 2 for i in range(len(IMAGES))]})
    name = reserve_name(p.folder)
    record = {"name": name, "project": p.name, "task": "detection", "model": "planted",
              "mode": "planted",
              "classes": CLASSES, "config": {}, "metrics": {}}
    write_version(p.folder, name, VersionFiles(record=record, checkpoint={},
                                               snapshot=snapshot, predictions=predictions))
    yield p, p.model(name), ids
    wb.delete_project(project_name)


# -- IssueQueue ------------------------------------------------------------------------
def test_issue_queue_of_a_detection_project_shows_boxed_issue_cards(planted):
    from widgets._base.palette import label_colors
    from widgets.label.box_issue_queue import BoxIssueQueue
    from widgets.label.issue_queue import IssueQueue

    p, v1, ids = planted
    with pytest.warns(FutureWarning, match="use BoxIssueQueue"):  # the earlier shortcut
        queue = IssueQueue(p, v1, annotator="det-look")
    assert isinstance(queue, BoxIssueQueue)

    report = detection_report(p, v1, write=False)
    assert sorted(report.issues["kind"]) == sorted(KIND_OF.values())
    assert queue.sample_ids == list(report.issues["sample_id"])  # worst first
    name_of = {sid: name for name, sid in ids.items()}
    for card, row in zip(queue.cards, report.issues.itertuples(), strict=True):
        assert card["kind"] == KIND_OF[name_of[card["image_id"]]] == row.kind
        assert card["score"] == pytest.approx(row.score)
        assert card["kind"].replace("_", " ") in card["reason"] and "IoU" in card["reason"]
    cards = {card["kind"]: card for card in queue.cards}
    assert (cards["wrong_class"]["given"], cards["wrong_class"]["suggested"]) == ("spot", "hole")
    assert (cards["missing_box"]["given"], cards["missing_box"]["suggested"]) == ("no box",
                                                                                   "hole")
    assert cards["extra_box"]["suggested"] == "no box"
    assert cards["poor_localisation"]["iou"] == pytest.approx(0.04 / 0.28)
    assert [a["annotator"] for a in cards["extra_box"]["annotators"]] == ["alice"]

    colors = label_colors(CLASSES)
    for card in queue.cards:  # each card's image: the given box solid, the model's dashed
        queue.move(queue.issue_ids.index(card["sample_id"]))
        assert queue.selected == [card["image_id"]]
        pixels = _decode(queue.image)
        assert pixels.shape[:2] == (queue.image_size, queue.image_size)
        if card["box"]:
            box = [card["box"][k] for k in "xywh"]
            assert _edge_has(pixels, box, colors[card["label"]]), card["kind"]
        if card["pred_box"]:
            box = [card["pred_box"][k] for k in "xywh"]
            label = card["suggested_label"] or card["label"]
            assert _edge_has(pixels, box, colors[label]), card["kind"]
    plain = _decode("data:image/jpeg;base64," + base64.b64encode(
        thumbnail(p.dataset[ids["img2.png"]].filepath, size=256,
                  cache_dir=p.folder / "thumbnails")).decode())
    assert not _edge_has(plain, CENTRE, colors["spot"])  # the colour is the drawing's

    queue.move(0)
    assert [item["index"] for item in queue.strip] == [1, 2, 3]
    for item in queue.strip:  # the strip's thumbnails are boxed too
        card = queue.cards[item["index"]]
        pixels = _decode(item["thumb"])
        assert pixels.shape[:2] == (queue.thumb_size, queue.thumb_size)
        shown = card["box"] or card["pred_box"]
        label = card["label"] or card["suggested_label"]
        assert _edge_has(pixels, [shown[k] for k in "xywh"], colors[label])
    synced = ("cards", "strip", "decisions", "classes", "colors", "selected", "index", "image")
    json.dumps({name: getattr(queue, name) for name in synced}, allow_nan=False)
    given = BoxIssueQueue(p, v1, annotator="det-look", report=report)  # no recomputation
    assert given.cards == queue.cards


def test_accept_applies_each_kind_of_suggestion_and_undo_restores(planted):
    from widgets.label.box_issue_queue import BoxIssueQueue

    p, v1, ids = planted
    queue = BoxIssueQueue(p, v1, annotator="det-accept")
    edits = []
    queue.on_edit(lambda changed, label: edits.append(changed))
    given = {name: _boxes(pairs) for name, (_, pairs) in IMAGES.items()}
    expected = {
        "missing_box": [*given["img0.png"], {"label": "hole", "bounding_box": B}],
        "extra_box": [{"label": "spot", "bounding_box": A}],
        "wrong_class": [{"label": "hole", "bounding_box": CENTRE}],
        "poor_localisation": [{"label": "spot", "bounding_box": CENTRE}],
    }
    before = {sid: p.box_history(sid) for sid in ids.values()}
    for card in list(queue.cards):
        sid = card["image_id"]
        _send(queue, type="decide", sample_id=card["sample_id"], action="accept")
        assert queue.error == ""
        history = p.box_history(sid)
        assert len(history) == len(before[sid]) + 1  # appended, nothing rewritten
        pd.testing.assert_frame_equal(history.iloc[:-1], before[sid])
        last = history.iloc[-1]
        assert (last["annotator"], bool(last["review"])) == ("det-accept", True)
        assert same_boxes(last["boxes"], expected[card["kind"]]), card["kind"]
        consensus = p.boxes(p.dataset.select([sid]))
        assert same_boxes([{"label": r.label, "bounding_box": [r.x, r.y, r.w, r.h]}
                           for r in consensus.itertuples()], expected[card["kind"]])
        assert queue.decisions[card["sample_id"]]["action"] == "accept"
    assert queue.decided == 4 and edits == [[c["image_id"]] for c in queue.cards]
    assert BoxIssueQueue(p, v1, annotator="det-accept").cards == []  # all reviewed now

    for _ in range(4):  # undo: no review was in force before, so the review is withdrawn
        _send(queue, type="undo")
    assert queue.decided == 0 and not queue.can_undo
    for name, sid in ids.items():
        history = p.box_history(sid)
        if name in KIND_OF:
            assert len(history) == len(before[sid]) + 2
            assert history.iloc[-1]["boxes"] is None and bool(history.iloc[-1]["review"])
        consensus = p.boxes(p.dataset.select([sid]))
        assert same_boxes([{"label": r.label, "bounding_box": [r.x, r.y, r.w, r.h]}
                           for r in consensus.itertuples()], given[name])
    assert len(BoxIssueQueue(p, v1, annotator="det-accept").cards) == 4


def test_keep_stores_the_same_boxes_and_undo_re_appends_the_earlier_review(planted):
    from widgets.label.box_issue_queue import BoxIssueQueue

    p, v1, ids = planted
    queue = BoxIssueQueue(p, v1, annotator="det-keep")
    sid = ids["img1.png"]
    key = next(c["sample_id"] for c in queue.cards if c["image_id"] == sid)
    given = _boxes(IMAGES["img1.png"][1])
    before = len(p.box_history(sid))

    _send(queue, type="decide", sample_id=key, action="keep")
    assert same_boxes(_last(p, sid)["boxes"], given) and bool(_last(p, sid)["review"])
    assert sid not in BoxIssueQueue(p, v1, annotator="det-keep").sample_ids

    _send(queue, type="move", index=queue.issue_ids.index(key))
    _send(queue, type="decide", sample_id=key, action="label", label="spot")  # key 1
    relabelled = [given[0], {"label": "spot", "bounding_box": CORNER}]
    assert same_boxes(_last(p, sid)["boxes"], relabelled)
    assert queue.decisions[key]["action"] == "label"

    _send(queue, type="undo")  # back to the kept boxes: re-appended as a review
    last = _last(p, sid)
    assert same_boxes(last["boxes"], given) and bool(last["review"])
    assert queue.decisions[key]["action"] == "keep"
    _send(queue, type="undo")  # back to no review
    history = p.box_history(sid)
    assert len(history) == before + 4
    assert history["review"].iloc[before:].tolist() == [True] * 4
    assert history.iloc[-1]["boxes"] is None
    assert sid in BoxIssueQueue(p, v1, annotator="det-keep").sample_ids


def test_bad_decisions_show_an_error_and_write_nothing(planted):
    from widgets.label.box_issue_queue import BoxIssueQueue

    p, v1, _ = planted
    queue = BoxIssueQueue(p, v1, annotator="det-bad")
    sid = queue.cards[0]["image_id"]
    before = p.box_history(sid)
    _send(queue, type="decide", sample_id=queue.cards[0]["sample_id"], action="label",
          label="crack")
    assert "crack" in queue.error and "classes" in queue.error
    _send(queue, type="decide", sample_id="nowhere", action="accept")
    assert "nowhere" in queue.error
    _send(queue, type="undo")
    assert queue.message == "nothing to undo"
    pd.testing.assert_frame_equal(p.box_history(sid), before)
    classification = wb.Project.create(f"{p.name}-cls", classes=["ok"], overwrite=True)
    try:
        with pytest.raises(wb.ProjectError, match="detection project"):
            BoxIssueQueue(classification, v1)
    finally:
        wb.delete_project(classification.name)


def test_replace_box_is_idempotent():
    from widgets.label.box_issue_queue import replace_box

    boxes = _boxes([("spot", A), ("hole", CORNER)])
    at = [dict(zip("xywh", CORNER, strict=True)), None]
    once = replace_box(boxes, at, {"label": "spot", "bounding_box": CORNER})
    assert once == _boxes([("spot", A), ("spot", CORNER)])
    assert replace_box(once, at, {"label": "spot", "bounding_box": CORNER}) == once
    assert replace_box(boxes, at, None) == _boxes([("spot", A)])
    assert replace_box(boxes, [None, dict(zip("xywh", B, strict=True))],
                       {"label": "hole", "bounding_box": B})[-1] == {"label": "hole",
                                                                     "bounding_box": B}


# -- ConfusionDrilldown ------------------------------------------------------------------
def test_confusion_click_lists_the_cell_images_with_boxes(planted):
    from widgets.analyse.box_confusion import BoxConfusionDrilldown
    from widgets.analyse.confusion import ConfusionDrilldown

    p, v1, ids = planted
    with pytest.warns(FutureWarning, match="use BoxConfusionDrilldown"):  # earlier shortcut
        widget = ConfusionDrilldown(p, v1, annotator="det-cell")
    assert isinstance(widget, BoxConfusionDrilldown)
    report = detection_report(p, v1, write=False)
    pd.testing.assert_frame_equal(widget.matrix, report.confusion)
    assert np.array_equal(np.array(widget.figure.data[0].z), report.confusion.to_numpy())
    assert list(widget.figure.data[0].x) == [*CLASSES, "background"]
    assert list(widget.figure.data[0].y) == [*CLASSES, "background"]
    assert widget.report[["label", "n_gt"]].values.tolist() == [["spot", 5], ["hole", 2]]
    counted = widget.cells.groupby(["true", "predicted"])["n"].sum()
    for (true, pred), n in counted.items():
        assert widget.matrix.loc[true, pred] == n

    expected = {("spot", "hole"): ["img2.png"], ("background", "hole"): ["img0.png"],
                ("hole", "background"): ["img1.png"], ("spot", "background"): ["img3.png"],
                ("background", "spot"): ["img3.png"],
                ("spot", "spot"): ["img0.png", "img1.png", "img4.png"],
                ("hole", "hole"): ["img5.png"], ("hole", "spot"): []}
    rows, columns = list(widget.matrix.index), list(widget.matrix.columns)
    for (true, pred), names in expected.items():
        _click(widget.figure, x=pred, y=true, index=[rows.index(true), columns.index(pred)])
        assert widget.cell == (true, pred)
        assert sorted(widget.shown) == sorted(ids[n] for n in names), (true, pred)
        for name in names:
            assert f'data-sample-id="{ids[name]}"' in widget.gallery.value
        assert widget.gallery.value.count("data:image/jpeg;base64,") == len(names)
    assert "No image in this cell" in widget.gallery.value

    widget.drill("spot", "hole")  # the wrong-class image: given spot solid, hole dashed
    uri = widget.gallery.value.split('src="', 1)[1].split('"', 1)[0]
    from widgets._base.palette import label_colors

    colors = label_colors(CLASSES)
    assert _edge_has(_decode(uri), CENTRE, colors["spot"])
    assert widget.labeler is not None and widget.labeler.sample_ids == [ids["img2.png"]]


def test_a_save_in_the_labeler_redraws_the_matrix(planted):
    from widgets.analyse.box_confusion import BoxConfusionDrilldown

    p, v1, ids = planted
    widget = BoxConfusionDrilldown(p, v1.name, annotator="det-fix")
    before = widget.matrix.copy()
    widget.drill("spot", "hole")
    sid = ids["img2.png"]
    widget.labeler.set_boxes([{"label": "hole", "x": CENTRE[0], "y": CENTRE[1],
                               "w": CENTRE[2], "h": CENTRE[3]}])
    widget.labeler.save()
    try:
        last = _last(p, sid)
        assert (last["annotator"], bool(last["review"])) == ("det-fix", True)
        assert widget.matrix.loc["spot", "hole"] == before.loc["spot", "hole"] - 1
        assert widget.matrix.loc["hole", "hole"] == before.loc["hole", "hole"] + 1
        assert np.array_equal(np.array(widget.figure.data[0].z), widget.matrix.to_numpy())
        assert widget.shown == []  # the cell is redrawn: now empty
    finally:
        p.withdraw_boxes(sid, annotator="det-fix", review=True)


def test_confusion_view_and_bad_input(planted):
    from widgets.analyse.box_confusion import BoxConfusionDrilldown

    p, v1, ids = planted
    view = p.dataset.select([ids["img2.png"], ids["img4.png"]])
    widget = BoxConfusionDrilldown(view, v1, labeler=False)
    assert widget.matrix.to_numpy().sum() == 2
    assert widget.drill("spot", "hole") == [ids["img2.png"]] and widget.labeler is None
    with pytest.raises(wb.ProjectError, match="not a row"):
        widget.drill("crack", "spot")
    with pytest.raises(wb.ProjectError, match="v9"):
        BoxConfusionDrilldown(p, "v9")
    with pytest.raises(ValueError, match="iou"):
        BoxConfusionDrilldown(p, v1, iou=2)


# -- a real detector -------------------------------------------------------------------------
@pytest.mark.slow
def test_widgets_agree_with_the_report_of_a_trained_detector(planted):
    from widgets.analyse.box_confusion import BoxConfusionDrilldown
    from widgets.label.box_issue_queue import BoxIssueQueue

    p, _, _ = planted
    mv = wb.train(p, task="detection", folds=2, epochs=2, image_size=SIZE, progress=False)
    report = detection_report(p, mv, score_threshold=0.05, write=False)
    queue = BoxIssueQueue(p, mv, annotator="det-real", score_threshold=0.05)
    assert isinstance(queue, BoxIssueQueue)
    assert queue.sample_ids == list(report.issues["sample_id"])
    assert [c["kind"] for c in queue.cards] == list(report.issues["kind"])
    if queue.cards:
        assert _decode(queue.image).shape[:2] == (queue.image_size, queue.image_size)
    widget = BoxConfusionDrilldown(p, mv, score_threshold=0.05, labeler=False)
    pd.testing.assert_frame_equal(widget.matrix, report.confusion)
    counted = widget.cells.groupby(["true", "predicted"])["n"].sum()
    assert counted.sum() == widget.matrix.to_numpy().sum()


def test_workbench_on_a_detection_project_opens_the_box_tools(planted):
    from widgets.analyse.box_confusion import BoxConfusionDrilldown
    from widgets.app import Workbench
    from widgets.label.box_issue_queue import BoxIssueQueue
    from widgets.label.box_labeler import BoxLabeler

    p, mv, _ = planted
    app = Workbench(p, version=mv.name, annotator="wb-det")
    assert isinstance(app.open_tab("Label"), BoxLabeler)
    assert isinstance(app.open_tab("Confusion"), BoxConfusionDrilldown)
    assert isinstance(app.open_tab("Issues"), BoxIssueQueue)
    for title in ("Slices", "Agreement", "Map", "Label book", "Drift"):
        note = app.open_tab(title)
        assert "works on class labels" in note.value, title
