"""BoxLabeler without a browser: what it shows, and what the store holds after a save.

Messages are delivered the way ``box_labeler.js`` sends them (``model.send``), through
ipywidgets' ``Widget._handle_custom_msg``; every write goes through the real project API
into the session's throwaway database.
"""

from __future__ import annotations

import shutil
import subprocess

import fiftyone as fo
import pytest
from images_factory import write_image

import workbench as wb
from widgets._base import STATIC
from workbench import ProjectError

BOX_LABELER_JS = STATIC / "box_labeler.js"
CLASSES = ["scratch", "dent"]
FIRST = [{"label": "dent", "bounding_box": [0.1, 0.2, 0.3, 0.4]},
         {"label": "scratch", "bounding_box": [0.5, 0.5, 0.25, 0.125]}]


def _send(widget, **content) -> None:
    """Deliver a custom message as the front-end's ``model.send(content)`` does."""
    widget._handle_custom_msg(content, [])


@pytest.fixture
def det(request, tmp_path):
    """A detection project of 3 small images (96 x 64); the first has 2 consensus boxes."""
    name = "bl-" + request.node.name[:40].replace("[", "-").replace("]", "")
    p = wb.Project.create(name, task="detection", classes=CLASSES, overwrite=True)
    for i in range(3):
        write_image(tmp_path / "images" / f"img_{i}.png", seed=i, size=(96, 64))
    p.import_folder(tmp_path / "images", layout="unlabeled", progress=False)
    ids = [sid for _, sid in sorted(zip(*p.dataset.values(["filepath", "id"]), strict=True))]
    p.annotate_boxes(ids[0], FIRST, annotator="import")
    yield p, ids
    wb.delete_project(name)


def _coords(boxes) -> list[tuple]:
    return [(b["label"], *(round(v, 6) for v in (b["x"], b["y"], b["w"], b["h"])))
            for b in boxes]


def test_shows_the_image_and_its_consensus_boxes(det):
    from widgets._base.palette import label_colors
    from widgets.label.box_labeler import BoxLabeler

    p, ids = det
    w = BoxLabeler(p, ids, annotator="alice")
    assert (w.index, w.total, w.sample_id, w.name) == (0, 3, ids[0], "img_0.png")
    assert w.image.startswith("data:image/jpeg;base64,")
    assert (w.image_width, w.image_height) == (512, 341)  # 96 x 64 scaled to fit 512
    assert w.labelled and not w.suggested
    assert _coords(w.boxes) == [("dent", 0.1, 0.2, 0.3, 0.4), ("scratch", 0.5, 0.5, 0.25, 0.125)]
    assert all(not b["suggested"] and b["confidence"] is None for b in w.boxes)
    assert w.classes == CLASSES and w.colors == label_colors(CLASSES)
    assert w.selected_class == "scratch" and w.selected_box == -1
    assert w.selected == [ids[0]]

    assert w.next() and w.sample_id == ids[1]
    assert w.boxes == [] and not w.labelled
    _send(w, type="move", to="previous")
    assert w.sample_id == ids[0] and len(w.boxes) == 2
    assert not w.previous() and w.message == "this is the first image"
    w.go(2)
    assert not w.next() and w.index == 2
    # the project name works too, and a view chooses the images
    by_name = BoxLabeler(p.name, p.dataset.select(ids[1:]), annotator="alice")
    assert by_name.sample_ids == ids[1:]


def test_save_appends_the_box_set_to_the_history_and_moves_on(det):
    from widgets.label.box_labeler import BoxLabeler

    p, ids = det
    w = BoxLabeler(p, ids, annotator="alice", review=True)
    stored = []
    w.on_save(lambda sid, boxes: stored.append((sid, boxes)))
    w.go(1)
    w.set_boxes([{"label": "scratch", "x": 0.25, "y": 0.5, "w": 0.5, "h": 0.25}])
    assert w.save()
    history = p.box_history(ids[1])
    assert len(history) == 1
    entry = history.iloc[-1]
    assert entry.annotator == "alice" and entry.review and entry.n_boxes == 1
    assert entry.boxes == [{"label": "scratch", "bounding_box": [0.25, 0.5, 0.5, 0.25]}]
    consensus = p.boxes(p.dataset.select([ids[1]]))
    assert consensus[["label", "x", "y", "w", "h"]].values.tolist() == [
        ["scratch", 0.25, 0.5, 0.5, 0.25]]
    assert w.index == 2 and w.saved == 1 and w.error == ""
    assert w.message == "saved 1 box on img_1.png"
    assert stored == [(ids[1], [{"label": "scratch", "bounding_box": [0.25, 0.5, 0.5, 0.25]}])]

    # "no defect" stores an empty box set: the image is labelled, with zero boxes
    _send(w, type="no_defect", sample_id=ids[2])
    assert p.box_history(ids[2]).iloc[-1].boxes == []
    assert w.index == 2 and w.labelled and w.boxes == []
    assert "that was the last image" in w.message

    # the front-end's save carries the boxes on screen; a relabel appends, never rewrites
    w.go(0)
    before = p.box_history(ids[0])
    _send(w, type="save", sample_id=ids[0],
          boxes=[{**w.boxes[0], "x": 0.0, "label": "scratch"}])
    after = p.box_history(ids[0])
    assert len(after) == len(before) + 1 and after.iloc[0].boxes == FIRST
    assert after.iloc[-1].boxes == [{"label": "scratch", "bounding_box": [0.0, 0.2, 0.3, 0.4]}]
    assert w.revision >= 1


def test_an_invalid_box_is_shown_and_nothing_is_stored(det):
    from widgets.label.box_labeler import BoxLabeler

    p, ids = det
    w = BoxLabeler(p, ids, annotator="alice")
    w.go(1)
    w.set_boxes([{"label": "dent", "bounding_box": [0.8, 0.1, 0.5, 0.2]}])  # past the edge
    assert not w.save()
    assert "boxes[0].bounding_box" in w.error and "past the image" in w.error
    assert len(p.box_history(ids[1])) == 0 and w.index == 1 and w.saved == 0

    w.set_boxes([{"label": "crack", "bounding_box": [0.1, 0.1, 0.2, 0.2]}])
    assert not w.save()
    assert "'crack' is not a class" in w.error
    assert len(p.box_history(ids[1])) == 0

    # from the browser: a malformed box, a stale image, an unknown message — no crash
    _send(w, type="save", sample_id=ids[1], boxes=[{"label": "dent", "x": "a", "y": 0,
                                                    "w": 0.1, "h": 0.1}])
    assert "box 0: 'x' must be a finite number" in w.error
    _send(w, type="save", sample_id=ids[2], boxes=[])
    assert "edits were made on sample" in w.error
    _send(w, type="explode")
    assert "unknown message" in w.error
    assert len(p.box_history(ids[1])) == 0 and len(p.box_history(ids[2])) == 0
    assert w.index == 1

    with pytest.raises(ValueError, match="box 0: 'label'"):
        w.set_boxes([{"x": 0.1, "y": 0.1, "w": 0.1, "h": 0.1}])


def test_prefills_suggestions_from_the_prediction_field(det):
    from widgets.label.box_labeler import BoxLabeler

    p, ids = det
    dataset = p.dataset
    dataset.add_sample_field("pred_v7", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    for sid in ids[:2]:  # the labelled first image gets predictions too: they are not shown
        sample = dataset[sid]
        sample["pred_v7"] = fo.Detections(detections=[
            fo.Detection(label="dent", bounding_box=[0.2, 0.3, 0.4, 0.2], confidence=0.9,
                         fold=-1),
            fo.Detection(label="scratch", bounding_box=[0.6, 0.1, 0.2, 0.2], confidence=0.2,
                         fold=-1)])
        sample.save()

    w = BoxLabeler(p, ids, annotator="bob", model="v7")
    assert w.model_name == "v7"
    assert w.labelled and not w.suggested and len(w.boxes) == 2  # consensus, not the model
    w.next()
    assert w.suggested and not w.labelled
    assert _coords(w.boxes) == [("dent", 0.2, 0.3, 0.4, 0.2)]  # 0.2 < prefill_threshold
    assert w.boxes[0]["suggested"] and w.boxes[0]["confidence"] == pytest.approx(0.9)
    w.next()
    assert w.boxes == [] and not w.suggested  # no predictions stored for this image

    low = BoxLabeler(p, [ids[1]], annotator="bob", model="v7", prefill_threshold=0.1)
    assert [b["label"] for b in low.boxes] == ["dent", "scratch"]
    low.boxes = [{**low.boxes[0], "suggested": False}, low.boxes[1]]  # the browser edits one
    assert low.suggested
    low.boxes = [{**low.boxes[1], "suggested": False}]  # and deletes the other
    assert not low.suggested

    # saving accepts what is on screen: the suggestion becomes bob's box set
    w.go(1)
    assert w.save()
    entry = p.box_history(ids[1]).iloc[-1]
    assert entry.annotator == "bob"
    assert entry.boxes == [{"label": "dent", "bounding_box": [0.2, 0.3, 0.4, 0.2]}]
    w.go(1)
    assert w.labelled and not w.suggested and not w.boxes[0]["suggested"]


def test_rejects_what_it_cannot_label(det, project):
    from widgets.label.box_labeler import BoxLabeler

    p, ids = det
    with pytest.raises(ProjectError, match="needs a detection project"):
        BoxLabeler(project, annotator="alice")
    with pytest.raises(ProjectError, match="annotator must be a non-empty name"):
        BoxLabeler(p, annotator=" ")
    with pytest.raises(ProjectError, match="not in project"):
        BoxLabeler(p, [ids[0], "0" * 24], annotator="alice")
    with pytest.raises(ProjectError, match="no model version 'v5'"):
        BoxLabeler(p, annotator="alice", model="v5")
    with pytest.raises(ValueError, match="prefill_threshold"):
        BoxLabeler(p, annotator="alice", prefill_threshold=1.5)
    empty = BoxLabeler(p, [], annotator="alice")
    assert empty.total == 0 and empty.message == "no images to label"
    assert not empty.save() and "no images" in empty.error


def test_box_labeler_js_is_an_es_module_exporting_render():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; cannot check box_labeler.js parses as an ES module")
    script = (f"const m = await import({BOX_LABELER_JS.as_uri()!r});"
              "if (typeof m.default.render !== 'function') process.exit(3);")
    result = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
