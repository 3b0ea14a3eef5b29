"""Box detectors: a tiny RetinaNet trained on generated squares, its out-of-fold boxes on
the samples, its version on disk, predictions, ONNX export parity, and argument errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fiftyone as fo
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import workbench as wb
from workbench.deploy.edge import EdgeDetector, EdgePredictor, postprocess_detections
from workbench.deploy.export import TOLERANCE, detect_exported, export
from workbench.metrics.detection_metrics import detection_map, mean_ap
from workbench.train.detection.retinanet import build_detector
from workbench.train.detection.train import DetectionSettings, fit_detector, train_detector

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("bright", "dark")
SIZE = 80  # pixels of the generated images; the detector squashes them to 64
TINY = {"folds": 2, "epochs": 15, "image_size": 64, "progress": False,
        "settings": DetectionSettings(batch_size=2)}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on two cores shared with other jobs, two threads spin-wait on each
    other and a step takes ten times longer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _paint(rng: np.random.Generator, n: int, folder: Path) -> dict[str, list[dict]]:
    """Grey noise with ``bright`` and ``dark`` squares; every fourth image has none (a
    labelled negative). Saved as 8-bit greyscale PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        pixels = rng.integers(100, 150, (SIZE, SIZE), dtype=np.uint8)
        boxes = []
        for j in range([0, 1, 1, 2][i % 4]):
            side = int(rng.integers(SIZE // 5, SIZE * 2 // 5))
            x, y = (int(v) for v in rng.integers(0, SIZE - side, 2))
            label = CLASSES[(i + j) % 2]
            pixels[y:y + side, x:x + side] = 235 if label == "bright" else 15
            boxes.append({"label": label, "bounding_box": [x / SIZE, y / SIZE, side / SIZE,
                                                           side / SIZE]})
        Image.fromarray(pixels, mode="L").save(folder / f"part_{i:03d}.png")
        truth[f"part_{i:03d}.png"] = boxes
    return truth


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    """A detection project of 24 labelled images (6 without boxes) and 2 unlabelled ones,
    and a tiny detector trained on it."""
    folder = tmp_path_factory.mktemp("squares")
    truth = _paint(np.random.default_rng(7), 26, folder)
    p = wb.Project.create("t-detection-squares", task="detection", classes=CLASSES,
                          overwrite=True)
    p.import_folder(folder, layout="unlabeled", progress=False)
    frame = p.to_pandas()
    by_name = dict(zip(frame["filepath"].map(lambda f: Path(f).name), frame["sample_id"],
                       strict=True))
    for name in sorted(truth)[:24]:
        p.annotate_boxes(by_name[name], truth[name], annotator="alice")
    mv = wb.train(p, task="detection", model="retinanet", **TINY)
    yield p, mv
    wb.delete_project(p.name)


@pytest.mark.slow
def test_every_labelled_image_gets_out_of_fold_boxes_in_range(squares):
    p, mv = squares
    assert mv.task == "detection" and mv.name == "v1"
    ids, truth, preds = p.dataset.values(["id", "ground_truth", f"pred_{mv.name}"])
    labelled = {sid for sid, t in zip(ids, truth, strict=True) if t is not None}
    assert len(labelled) == 24  # the 6 images labelled [] count as labelled negatives
    snapshot = mv.snapshot().set_index("sample_id")
    assert set(snapshot.index) == labelled
    assert set(snapshot["fold"]) == {0, 1}
    for sid, pred in zip(ids, preds, strict=True):
        if sid not in labelled:
            assert pred is None  # never labelled: no out-of-fold prediction
            continue
        assert isinstance(pred, fo.Detections)  # empty when nothing was found
        for box in pred.detections:
            assert box.label in CLASSES
            assert 0 <= box.confidence <= 1
            assert box.fold == snapshot.loc[sid, "fold"]
            x, y, w, h = box.bounding_box
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= 1 + 1e-6 and y + h <= 1 + 1e-6
    oof = mv.oof_predictions()
    assert list(oof.columns) == ["sample_id", "label", "confidence", "x", "y", "w", "h", "fold"]
    assert set(oof["sample_id"]) <= labelled
    stored = sum(len(pred.detections) for pred in preds if pred is not None)
    assert len(oof) == stored > 0


def test_version_records_detection_metrics_and_reopens(squares):
    p, mv = squares
    record = json.loads((mv.folder / "version.json").read_text())
    assert record["task"] == "detection" and record["model"] == "retinanet"
    assert record["config"]["backbone"] == "tf_efficientnet_lite0"
    assert record["metrics"]["evaluated_on"] == "out-of-fold"
    assert record["metrics"]["n_evaluated"] == 24
    assert set(record["metrics"]["per_class"]) == set(CLASSES)
    reopened = p.model(mv.name)
    assert reopened.task == "detection" and reopened.classes == mv.classes
    assert "mAP50" in repr(reopened)
    with pytest.raises(ValueError, match="detector"):
        reopened.classifier  # noqa: B018 (the property raises)


def test_easy_squares_beat_a_random_box_predictor(squares):
    """On squares this plain, out-of-fold mAP50 far exceeds what random boxes score."""
    p, mv = squares
    gt = p.boxes()
    held = list(mv.snapshot()["sample_id"])
    oof = mv.oof_predictions()
    rng = np.random.default_rng(0)
    side = rng.uniform(0.2, 0.4, len(oof))
    random_boxes = oof.assign(x=rng.uniform(0, 1 - side), y=rng.uniform(0, 1 - side), w=side,
                              h=side, label=rng.choice(CLASSES, len(oof)),
                              confidence=rng.uniform(0, 1, len(oof)))
    chance = mean_ap(detection_map(gt, random_boxes, sample_ids=held))["map50"]
    model = mv.metrics["mAP50"]
    assert model == pytest.approx(mean_ap(detection_map(gt, oof, sample_ids=held))["map50"])
    print(f"out-of-fold mAP50 {model:.3f}, random boxes {chance:.3f}")
    assert chance < 0.05
    assert model > 0.25


def test_predict_returns_a_box_frame_for_a_view_and_for_files(squares):
    p, mv = squares
    view = p.dataset.limit(4)
    frame = mv.predict(view, progress=False)
    assert list(frame.columns) == ["sample_id", "filepath", "label", "confidence", "x", "y",
                                   "w", "h"]
    ids, paths = view.values(["id", "filepath"])
    assert set(frame["sample_id"]) <= set(ids)
    assert frame["confidence"].between(0.05, 1).all()
    assert ((frame["x"] + frame["w"]) <= 1 + 1e-6).all()
    by_file = mv.predict(paths, progress=False)
    assert list(by_file.columns) == ["filepath", "label", "confidence", "x", "y", "w", "h"]
    pd.testing.assert_frame_equal(by_file, frame.drop(columns="sample_id"))
    strict = mv.predict(paths, progress=False, score_threshold=0.5)
    assert len(strict) <= len(by_file) and (strict["confidence"] > 0.5).all()
    fresh = p.model(mv.name).predict(paths, progress=False)  # loaded from model.pt
    pd.testing.assert_frame_equal(fresh, by_file)


@pytest.mark.slow
def test_onnx_export_agrees_with_the_model(squares, tmp_path):
    p, mv = squares
    path = export(mv, "onnx", tmp_path / "squares.onnx")
    edge = EdgeDetector(path)
    assert edge.classes == list(CLASSES) and edge.version == mv.name
    assert edge.metadata["task"] == "detection"
    paths = p.dataset.limit(6).values("filepath")
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in paths])
    with torch.no_grad():
        scores, boxes = (t.numpy() for t in mv.detector(torch.from_numpy(pixels)))
    got_scores, got_boxes = edge.predict_pixels(pixels)
    assert np.abs(got_scores - scores).max() <= TOLERANCE
    assert np.abs(got_boxes - boxes).max() <= TOLERANCE
    exported = detect_exported(path, paths)
    expected = mv.predict(paths, progress=False)
    assert list(exported.columns) == list(expected.columns)
    assert len(exported) == len(expected) > 0
    assert (exported["label"].to_numpy() == expected["label"].to_numpy()).all()
    numbers = ["confidence", "x", "y", "w", "h"]
    assert np.abs(exported[numbers].to_numpy() - expected[numbers].to_numpy()).max() <= 1e-3
    with pytest.raises(ValueError, match="EdgeDetector"):
        EdgePredictor(path)
    done = subprocess.run([sys.executable, "-m", "workbench.deploy.edge", str(path), paths[0]],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    line = json.loads(done.stdout.splitlines()[0])  # the line-side command
    assert done.returncode == 0 and line["filepath"] == paths[0]
    assert len(line["boxes"]) == (exported["filepath"] == paths[0]).sum()


def test_wrong_task_model_and_arguments_are_refused(squares, project):
    p, _ = squares
    with pytest.raises(ValueError, match="is a classification project"):
        wb.train(project, task="detection")
    with pytest.raises(ValueError, match="detector"):
        wb.train(project, model="retinanet")
    with pytest.raises(ValueError, match="model='yolo'"):
        wb.train(p, model="yolo")
    with pytest.raises(ValueError, match="task='classification'"):
        wb.train(p, task="classification")
    with pytest.raises(ValueError, match="mode='probe'"):
        wb.train(p, mode="probe")
    with pytest.raises(ValueError, match="image_size"):
        train_detector(p, image_size=100)
    with pytest.raises(ValueError, match="folds"):
        train_detector(p, folds=1)
    with pytest.raises(ValueError, match="folds=30 needs at least 30 labelled"):
        train_detector(p, folds=30)
    with pytest.raises(ValueError, match="Unknown backbone"):
        train_detector(p, backbone="no_such_net")
    with pytest.raises(ValueError, match=r"weights='path/to/file\.pth'"):
        wb.train(p, backbone="resnet18")  # its ImageNet weights would need a download
    with pytest.raises(ValueError, match="stride 8"):
        build_detector("vit_tiny_patch16_224", classes=["a"], image_size=64, weights=None)
    assert list(p.models()["name"]) == ["v1"]  # nothing written by a refused call


def test_unlabelled_detection_project_is_refused(tmp_path):
    p = wb.Project.create("t-detection-empty", task="detection", classes=["x"], overwrite=True)
    try:
        folder = tmp_path / "few"
        _paint(np.random.default_rng(1), 3, folder)
        p.import_folder(folder, layout="unlabeled", progress=False)
        with pytest.raises(ValueError, match="at least 2 labelled images"):
            wb.train(p, **TINY)
        for sid in p.to_pandas()["sample_id"]:
            p.annotate_boxes(sid, [], annotator="alice")
        with pytest.raises(ValueError, match="no boxes"):
            wb.train(p, **TINY)
    finally:
        wb.delete_project(p.name)


def test_fit_is_reproducible_with_a_seed_on_the_cpu():
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 255, (4, 3, 64, 64), dtype=np.uint8))
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        detector = build_detector(classes=CLASSES, image_size=64)
        fit_detector(detector, pixels, targets, epochs=1, seed=5, progress=False,
                     settings=DetectionSettings(batch_size=2))
        states.append(detector.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not torch.equal(states[0]["net.head.classification_head.cls_logits.weight"],
                           build_detector(classes=CLASSES, image_size=64).state_dict()[
                               "net.head.classification_head.cls_logits.weight"])


def test_a_torchvision_backbone_feeds_the_pyramid():
    detector = build_detector("resnet18", classes=["a", "b", "c"], image_size=64, weights=None)
    with torch.no_grad():
        scores, boxes = detector(torch.zeros((2, 50, 70, 3), dtype=torch.uint8))
    n_anchors = 9 * sum((64 // s) ** 2 for s in (8, 16, 32, 64)) + 9  # P7 is 1x1
    assert scores.shape == (2, n_anchors, 3) and boxes.shape == (2, n_anchors, 4)
    assert float(boxes.min()) >= 0 and float(boxes.max()) <= 1


def test_postprocessing_keeps_the_best_of_overlapping_boxes_per_class():
    scores = np.array([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.3, 0.0], [0.01, 0.0]])
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.52], [0.1, 0.1, 0.5, 0.5],
                      [0.6, 0.6, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0]])
    found = postprocess_detections(scores, boxes, score_threshold=0.05, nms_iou=0.5)
    assert found["labels"].tolist() == [0, 1, 0]  # box 1 suppressed by 0; other class kept
    assert found["scores"].tolist() == pytest.approx([0.9, 0.7, 0.3])
    assert found["boxes"][2].tolist() == pytest.approx([0.6, 0.6, 0.3, 0.2])  # x, y, w, h


def test_default_epochs_give_a_few_dozen_images_enough_steps():
    from workbench.train.detection.train import DEFAULT_STEPS, default_epochs

    assert default_epochs(50, 4) == 30  # 13 steps an epoch: capped at 30
    assert default_epochs(2000, 4) == 12  # large projects keep the floor
    mid = default_epochs(80, 4)
    assert 12 < mid < 30 and mid * 20 >= DEFAULT_STEPS
