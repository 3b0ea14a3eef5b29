"""wb.detection_report on a real detection project and a really trained (tiny) RetinaNet."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import workbench as wb
from workbench.analyse.detection import DetectionReport, detection_report
from workbench.store import _db as store
from workbench.store.project import ProjectError

N_IMAGES, SIZE = 16, 64


def spots(rng: np.random.Generator, index: int) -> list[tuple[str, list[float]]]:
    """The defects of image ``index``: 0–2 squares, bright "spot"s or dark "hole"s."""
    boxes = []
    for k in range(index % 3):
        side = rng.uniform(0.2, 0.3)
        x, y = rng.uniform(0.05 + 0.5 * k, 0.45 + 0.5 * k - side), rng.uniform(0.05, 0.6)
        boxes.append(("spot" if (index + k) % 2 else "hole", [x, y, side, side]))
    return boxes


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A detection project (16 images, slice field ``lighting``) and a 2-fold detector."""
    folder = tmp_path_factory.mktemp("detection-report")
    rng = np.random.default_rng(0)
    truth, lighting = {}, []
    for i in range(N_IMAGES):
        pixels = rng.normal(110 if i % 4 else 70, 12, (SIZE, SIZE, 3))
        truth[f"img{i:02d}.png"] = spots(rng, i)
        for label, (x, y, w, h) in truth[f"img{i:02d}.png"]:
            c0, r0, c1, r1 = (round(v * SIZE) for v in (x, y, x + w, y + h))
            pixels[r0:r1, c0:c1] = 235 if label == "spot" else 10
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")
        lighting.append((f"img{i:02d}.png", "dim" if i % 4 == 0 else "bright"))
    csv = folder.parent / "detection-report-meta.csv"
    pd.DataFrame(lighting, columns=["filename", "lighting"]).to_csv(csv, index=False)
    name = f"t-detection-report-{os.getpid()}"
    p = wb.Project.create(name, classes=["spot", "hole"], task="detection", overwrite=True)
    p.import_folder(folder, layout="unlabeled", metadata_csv=csv, progress=False)
    for row in p.to_pandas().itertuples():
        boxes = truth[Path(row.filepath).name]
        p.annotate_boxes(row.sample_id, [{"label": label, "bounding_box": box}
                                         for label, box in boxes], annotator="alice")
    mv = wb.train(p, task="detection", folds=2, epochs=3, image_size=64, progress=False)
    yield p, mv
    wb.delete_project(name)


@pytest.mark.slow
def test_report_matches_fiftyone_coco_evaluation(trained):
    p, mv = trained
    rep = detection_report(p, mv)
    assert isinstance(rep, DetectionReport)
    assert rep.config["n_images"] == N_IMAGES  # every image held out once, all labelled
    assert set(rep.per_class["label"]) == {"spot", "hole"}
    assert rep.per_class.set_index("label")["n_gt"].sum() == len(p.boxes())
    view = p.dataset.select(list(mv.snapshot()["sample_id"]))
    for thresholds, ours in ((None, rep.map50_95), ([0.5], rep.map50)):
        kwargs = {} if thresholds is None else {"iou_threshs": thresholds}
        theirs = view.evaluate_detections(f"pred_{mv.name}", gt_field="ground_truth",
                                          method="coco", compute_mAP=True, **kwargs)
        assert ours == pytest.approx(theirs.mAP(), abs=0.02)
    # the version's own out-of-fold metrics are the same numbers
    assert rep.map50 == pytest.approx(mv.metrics["mAP50"], abs=1e-9)


def test_confusion_counts_every_box_once(trained):
    p, mv = trained
    rep = detection_report(p, mv, score_threshold=0.2, write=False)
    classes = ["spot", "hole"]
    assert list(rep.confusion.index) == [*classes, "background"]
    assert list(rep.confusion.columns) == [*classes, "background"]
    # every given box is in exactly one cell of its row; every kept prediction in its column
    assert rep.confusion.loc[classes].to_numpy().sum() == len(p.boxes())
    pred = mv.oof_predictions()
    assert rep.confusion[classes].to_numpy().sum() == int((pred["confidence"] >= 0.2).sum())


def test_relabel_shows_up_as_issue_and_run(trained):
    p, mv = trained
    sid = p.to_pandas().sample_id.iloc[0]
    before = p.boxes()
    kept = [{"label": r.label, "bounding_box": [r.x, r.y, r.w, r.h]}
            for r in before[before["sample_id"] == sid].itertuples()]
    planted = [0.82, 0.82, 0.15, 0.15]  # a "hole" in a corner where nothing is painted
    p.annotate_boxes(sid, [*kept, {"label": "hole", "bounding_box": planted}],
                     annotator="bob", review=True)
    try:
        rep = detection_report(p, mv)
        extra = rep.issues[(rep.issues["sample_id"] == sid)
                           & (rep.issues["kind"] == "extra_box")]
        assert np.isclose(extra[["x", "y", "w", "h"]].to_numpy(), planted, atol=1e-6).all(1).any()
        assert set(rep.issues["kind"]) <= {"missing_box", "extra_box", "wrong_class",
                                           "poor_localisation"}
        assert rep.issues["score"].is_monotonic_decreasing
        assert rep.issues["filepath"].notna().all()
        # the per-image summary is a run views can filter on
        key = f"box_issues_{mv.name}"
        assert key in store.analysis_runs(p.dataset)
        from fiftyone import ViewField as F

        flagged = p.dataset.match(F(f"{key}.n_issues") > 0)
        assert set(flagged.values("id")) == set(rep.issues["sample_id"])
        assert sum(p.dataset.values(f"{key}.n_issues")[i] or 0
                   for i in range(len(p.dataset))) == len(rep.issues)
        mine = p.dataset[sid][key]
        assert "extra_box" in mine["kinds"] and mine["max_score"] > 0
    finally:
        p.annotate_boxes(sid, kept, annotator="bob", review=True)


def test_slices_summary_and_dict(trained):
    p, mv = trained
    rep = detection_report(p, mv, write=False)
    lighting = rep.slices[rep.slices["field"] == "lighting"].set_index("value")
    assert lighting.loc["dim", "n_images"] == N_IMAGES // 4
    assert lighting["n_images"].sum() == N_IMAGES
    text = rep.summary()
    assert mv.name in text and "mAP@0.5" in text and f"{rep.map50:.3f}" in text
    data = json.loads(json.dumps(rep.to_dict()))
    assert data["config"]["version"] == mv.name
    assert data["confusion"]["background"]["background"] == 0
    assert len(data["issues"]) == len(rep.issues)


def test_bad_calls_are_refused(trained, project):
    p, mv = trained
    with pytest.raises(ProjectError, match="score_threshold"):
        detection_report(p, mv, score_threshold=1.5)
    with pytest.raises(ProjectError, match="localisation_iou"):
        detection_report(p, mv, localisation_iou=0.6)
    with pytest.raises(ProjectError, match="detection project"):
        detection_report(project, mv)


def test_an_operating_point_on_a_detector_counts_images_with_and_without_boxes(trained):
    p, mv = trained
    # 6 of the 16 images have no box: too few normal parts to state a cost, and it says so
    with pytest.raises(wb.NotEnoughEvidenceError, match="6 normal and 10 defective"):
        wb.operating_point(p, mv, costs={"escape": 20, "false_reject": 1})
    with pytest.raises(ValueError, match="per class applies to classifiers"):
        wb.operating_point(p, mv, costs={"escape": {"spot": 5}, "false_reject": 1})
