"""Detection metrics on hand-built boxes whose answers can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.metrics import detection_metrics as dm
from workbench.metrics.box_issues import _cleanlab_inputs, box_issues, image_label_quality

GT = ["sample_id", "label", "x", "y", "w", "h"]


def frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=GT)


def predict(gt: pd.DataFrame, confidence: float = 0.9) -> pd.DataFrame:
    return gt.assign(confidence=confidence)


def clean_set(n: int = 12) -> pd.DataFrame:
    """n images, each with one or two well-separated boxes of "scratch" or "pit"."""
    rows = []
    for i in range(n):
        rows.append((f"s{i}", "scratch" if i % 2 else "pit", 0.1, 0.1, 0.3, 0.2))
        if i % 3 == 0:
            rows.append((f"s{i}", "pit", 0.55, 0.6, 0.25, 0.3))
    return frame(rows)


def test_iou_matrix_by_hand():
    a = [[0, 0, 1, 1], [2, 2, 1, 1]]
    b = [[0.5, 0, 1, 1], [0, 0, 1, 1], [0.25, 0.25, 0.5, 0.5]]
    expected = [[0.5 / 1.5, 1.0, 0.25], [0, 0, 0]]
    np.testing.assert_allclose(dm.iou_matrix(a, b), expected)
    assert dm.iou_matrix(np.empty((0, 4)), b).shape == (0, 3)
    with pytest.raises(ValueError, match="w > 0"):
        dm.iou_matrix([[0, 0, 0, 1]], b)


def test_perfect_predictions_give_ap_one():
    gt = clean_set()
    table = dm.detection_map(gt, predict(gt))
    assert list(table["label"]) == ["pit", "scratch"]
    assert np.allclose(table["AP50"], 1) and np.allclose(table["AP50_95"], 1)
    assert table.attrs == pytest.approx({"map50": 1.0, "map50_95": 1.0})
    assert table.set_index("label").loc["pit", "n_gt"] == 10


def test_missing_prediction_lowers_recall_and_ap():
    gt = frame([(f"s{i}", "dent", 0.2, 0.2, 0.4, 0.4) for i in range(4)])
    table = dm.detection_map(gt, predict(gt.iloc[:3]), sample_ids=[f"s{i}" for i in range(4)])
    # precision 1 up to recall 0.75: 76 of the 101 recall points
    assert table["AP50"].iloc[0] == pytest.approx(76 / 101)


def test_confident_false_positive_caps_precision():
    gt = frame([("a", "dent", 0.1, 0.1, 0.3, 0.3), ("b", "dent", 0.1, 0.1, 0.3, 0.3)])
    pred = pd.concat([predict(gt.iloc[[0]], 0.8), predict(gt.iloc[[1]], 0.7),
                      predict(frame([("a", "dent", 0.6, 0.6, 0.3, 0.3)]), 0.9)])
    # ranked fp, tp, tp: precision 0, 1/2, 2/3; the envelope is 2/3 at every recall
    assert dm.detection_map(gt, pred)["AP50"].iloc[0] == pytest.approx(2 / 3, abs=1e-9)


def test_class_without_ground_truth_reported_but_not_averaged():
    gt = clean_set(4)
    pred = pd.concat([predict(gt), predict(frame([("s1", "stain", 0.6, 0.1, 0.2, 0.2)]))])
    table = dm.detection_map(gt, pred, classes=["rust", "pit"]).set_index("label")
    assert list(table.index) == ["rust", "pit", "scratch", "stain"]
    assert np.isnan(table.loc["stain", "AP50"]) and table.loc["stain", "n_pred"] == 1
    assert np.isnan(table.loc["rust", "AP50"]) and table.loc["rust", "n_gt"] == 0
    assert table.attrs["map50"] == pytest.approx(1.0)
    # a class with ground truth and no prediction scores 0 and pulls the mean down
    only_pits = predict(gt[gt["label"] == "pit"])
    assert dm.mean_ap(dm.detection_map(gt, only_pits))["map50"] == pytest.approx(0.5)


def test_localisation_counts_at_strict_thresholds_only():
    gt = frame([("a", "dent", 0.0, 0.0, 0.4, 0.4)])
    shifted = predict(frame([("a", "dent", 0.0, 0.0, 0.4, 0.31)]))  # IoU 0.775
    table = dm.detection_map(gt, shifted)
    assert table["AP50"].iloc[0] == pytest.approx(1.0)
    assert table["AP50_95"].iloc[0] == pytest.approx(0.6)  # hit at 0.50 … 0.75: 6 of 10


def test_match_detections_is_greedy_by_confidence():
    gt = frame([("a", "dent", 0.1, 0.1, 0.3, 0.3), ("a", "dent", 0.6, 0.6, 0.2, 0.2)])
    pred = pd.DataFrame([("a", "dent", 0.6, 0.12, 0.1, 0.3, 0.3),   # duplicate, less sure
                         ("a", "dent", 0.9, 0.1, 0.1, 0.3, 0.3),
                         ("a", "dent", 0.8, 0.0, 0.6, 0.1, 0.1)],   # overlaps nothing
                        columns=["sample_id", "label", "confidence", "x", "y", "w", "h"])
    matches = dm.match_detections(gt, pred).set_index("pred_index")
    assert matches.loc[1, "outcome"] == "tp" and matches.loc[1, "gt_index"] == 0
    assert matches.loc[0, "outcome"] == "fp" and matches.loc[2, "outcome"] == "fp"
    missed = matches[matches["outcome"] == "fn"]
    assert list(missed["gt_index"]) == [1]


def test_confusion_has_background_row_and_column():
    gt = frame([("a", "pit", 0.1, 0.1, 0.3, 0.3), ("a", "scratch", 0.6, 0.6, 0.3, 0.3),
                ("b", "scratch", 0.1, 0.1, 0.3, 0.3)])
    pred = pd.concat([
        predict(gt.iloc[[0]], 0.9),                                   # pit seen as pit
        predict(gt.iloc[[1]].assign(label="pit"), 0.8),                # scratch seen as pit
        predict(frame([("c", "scratch", 0.2, 0.2, 0.2, 0.2)]), 0.7),  # on an empty image
        predict(gt.iloc[[2]], 0.1)])                                  # below the threshold
    counts = dm.detection_confusion(gt, pred, sample_ids=["a", "b", "c"], score_threshold=0.3)
    assert list(counts.index) == ["pit", "scratch", "background"]
    assert counts.columns.tolist() == ["pit", "scratch", "background"]
    assert counts.loc["pit", "pit"] == 1 and counts.loc["scratch", "pit"] == 1
    assert counts.loc["background", "scratch"] == 1  # extra predicted box
    assert counts.loc["scratch", "background"] == 1  # missed box (its prediction is unsure)
    assert counts.to_numpy().sum() == 4 and counts.loc["background", "background"] == 0


def planted() -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Model boxes = the true boxes (confidence 0.9); the given labels carry four errors."""
    truth = clean_set()
    pred = predict(truth)
    given = truth.copy()
    shifted = given.index[given["sample_id"] == "s1"][0]
    given.loc[shifted, "x"] += 0.6 * given.loc[shifted, "w"]           # IoU 0.25
    wrong = given.index[given["sample_id"] == "s5"][0]
    given.loc[wrong, "label"] = "pit"                                   # truly a scratch
    dropped = given.index[(given["sample_id"] == "s3") & (given["label"] == "pit")]
    given = given.drop(index=dropped[-1:])                              # second pit of s3
    given = pd.concat([given, frame([("s8", "pit", 0.7, 0.05, 0.2, 0.2)])])  # nothing there
    return given.reset_index(drop=True), pred, {"s1": "poor_localisation", "s5": "wrong_class",
                                                "s3": "missing_box", "s8": "extra_box"}


def test_box_issues_find_planted_errors_with_their_kind():
    given, pred, expected = planted()
    ids = [f"s{i}" for i in range(12)]
    issues = box_issues(given, pred, sample_ids=ids)
    assert dict(zip(issues["sample_id"], issues["kind"], strict=True)) == expected
    by_kind = issues.set_index("kind")
    assert by_kind.loc["wrong_class", "label"] == "pit"
    assert by_kind.loc["wrong_class", "suggested_label"] == "scratch"
    assert by_kind.loc["missing_box", "suggested_label"] == "pit"
    assert np.isnan(by_kind.loc["missing_box", "x"])
    assert by_kind.loc["missing_box", "pred_x"] == pytest.approx(0.55)
    assert np.isnan(by_kind.loc["extra_box", "pred_x"])
    assert by_kind.loc["poor_localisation", "iou"] == pytest.approx(0.4 / 1.6)
    assert list(issues["rank"]) == [1, 2, 3, 4]
    assert issues["score"].is_monotonic_decreasing and issues["score"].between(0, 1).all()
    # ObjectLab's image quality ranks the images with a missing, swapped or badly located box
    # below every clean one; it has no extra-box score, hence box_issues' own rule
    quality = image_label_quality(given, pred, sample_ids=ids,
                                     low_probability_threshold=0.3,
                                     high_probability_threshold=0.3)
    clean = quality.drop(list(expected))
    assert quality[["s1", "s3", "s5"]].max() < clean.min()
    assert quality["s8"] == pytest.approx(1.0)
    np.testing.assert_allclose(issues["image_quality"], quality[issues["sample_id"]])


def test_box_issues_trust_a_confident_model_more():
    given, pred, _ = planted()
    sure = box_issues(given, pred).set_index("kind")["score"]
    unsure = box_issues(given, pred.assign(confidence=0.5)).set_index("kind")["score"]
    for kind in ("missing_box", "wrong_class", "poor_localisation"):
        assert unsure[kind] < sure[kind]
    # the extra box is judged by how many boxes of its class the model finds
    # 11 given pits, 9 of them found: (9 + 1) / (11 + 1)
    assert sure["extra_box"] == pytest.approx(10 / 12)


def test_clean_labels_have_no_box_issues():
    gt = clean_set()
    assert box_issues(gt, predict(gt)).empty
    assert list(box_issues(gt, predict(gt)).columns)[:6] == [
        "sample_id", "kind", "label", "suggested_label", "iou", "score"]


def test_image_quality_reproduces_cleanlab():
    from cleanlab.object_detection.rank import get_label_quality_scores

    given, pred, _ = planted()
    ids = [f"s{i}" for i in range(12)]
    published = image_label_quality(given, pred.assign(confidence=0.97), sample_ids=ids)
    rebuilt = image_label_quality(given, pred.assign(confidence=0.97), sample_ids=ids,
                                     low_probability_threshold=0.5,
                                     high_probability_threshold=0.95)
    np.testing.assert_allclose(rebuilt, published)
    labels, predictions = _cleanlab_inputs(given, pred.assign(confidence=0.97), ids)
    direct = get_label_quality_scores(labels, predictions, verbose=False)
    np.testing.assert_allclose(published, direct)
    assert published["s5"] < published["s0"]


def test_slice_map_per_value():
    gt = clean_set()
    dim = {f"s{i}" for i in range(6, 12)}
    pred = predict(gt[~gt["sample_id"].isin({"s6", "s7", "s8"})])  # misses half the dim ones
    slices = pd.DataFrame({"sample_id": [f"s{i}" for i in range(12)],
                           "lighting": ["dim" if f"s{i}" in dim else "bright"
                                        for i in range(12)],
                           "line": ["A"] * 11 + [None]})
    report = dm.slice_map(gt, pred, slices)
    rows = report.set_index("slice")
    assert rows.loc["lighting=bright", "map50"] == pytest.approx(1.0)
    assert rows.loc["lighting=dim", "map50"] < 1.0
    assert rows.loc["lighting=dim", "n_images"] == 6
    assert rows.loc["line=(missing)", "n_images"] == 1
    assert report["slice"].iloc[0] == "lighting=dim"  # worst first
    assert sorted(rows.loc["lighting=dim", "sample_ids"]) == sorted(dim)
    overall = dm.mean_ap(dm.detection_map(gt, pred))["map50"]
    assert rows.loc["lighting=dim", "gap"] == pytest.approx(
        rows.loc["lighting=dim", "map50"] - overall)


def test_bad_input_names_the_field():
    gt = clean_set(2)
    with pytest.raises(ValueError, match=r"pred lacks column.*confidence"):
        dm.detection_map(gt, gt)
    bad = gt.copy()
    bad.loc[1, "w"] = 0
    with pytest.raises(ValueError, match="gt row 1: w=0"):
        dm.detection_map(bad, predict(gt))
    with pytest.raises(ValueError, match="confidence"):
        box_issues(gt, predict(gt, 1.5))
    with pytest.raises(ValueError, match="localisation_iou"):
        box_issues(gt, predict(gt), localisation_iou=0.6)
    with pytest.raises(ValueError, match="reserved"):
        dm.detection_confusion(gt.assign(label="background"), predict(gt))
    with pytest.raises(ValueError, match="sample_id"):
        dm.slice_map(gt, predict(gt), pd.DataFrame({"lighting": ["dim"]}))
