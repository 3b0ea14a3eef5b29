"""Planted-error tests for the confusion, slice and interval analyses (pure, no FiftyOne)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.metrics import (
    class_report,
    confusion_cell,
    confusion_matrix,
    discover_slices,
    slice_report,
    wilson_interval,
)

CLASSES = ["good", "scratch", "dent"]


def _planted(cells: dict[tuple[str, str], tuple[int, int]], seed: int) -> pd.DataFrame:
    """Rows for each (lighting, line) cell with exactly (n, n_correct), shuffled."""
    rng = np.random.default_rng(seed)
    parts = []
    for (lighting, line), (n, n_correct) in cells.items():
        correct = np.zeros(n, dtype=bool)
        correct[:n_correct] = True
        parts.append(pd.DataFrame({"lighting": lighting, "line": line,
                                   "correct": rng.permutation(correct)}))
    frame = pd.concat(parts, ignore_index=True).iloc[rng.permutation(sum(
        n for n, _ in cells.values()))].reset_index(drop=True)
    frame["sample_id"] = [f"s{i:04d}" for i in range(len(frame))]
    return frame


@pytest.fixture(scope="module")
def dim_frame() -> pd.DataFrame:
    """300 samples: lighting=dim is 60 % accurate, bright 95 %; line is irrelevant."""
    return _planted({("dim", "A"): (50, 30), ("dim", "B"): (50, 30),
                     ("bright", "A"): (100, 95), ("bright", "B"): (100, 95)}, seed=0)


@pytest.fixture(scope="module")
def conjunction_frame() -> pd.DataFrame:
    """600 samples; line=B & camera=cam2 fails 70 %, everything else 5 % (random, seeded)."""
    rng = np.random.default_rng(1)
    n = 600
    frame = pd.DataFrame({
        "sample_id": [f"c{i}" for i in range(n)],
        "line": rng.choice(["A", "B", "C"], n),
        "camera": rng.choice(["cam1", "cam2", "cam3"], n),
        "lighting": rng.choice(["bright", "dim"], n),
    })
    bad = (frame["line"] == "B") & (frame["camera"] == "cam2")
    frame["correct"] = rng.random(n) >= np.where(bad, 0.7, 0.05)
    return frame


# --- wilson_interval ---------------------------------------------------------------------

def test_wilson_known_values_and_vectorised():
    low, high = wilson_interval(8, 10)
    assert float(low) == pytest.approx(0.4902, abs=1e-3)
    assert float(high) == pytest.approx(0.9433, abs=1e-3)
    low, high = wilson_interval(np.array([0, 10, 0, 50]), np.array([10, 10, 0, 100]))
    assert low.shape == high.shape == (4,)
    assert low[0] == 0.0 and high[1] == pytest.approx(1.0)
    assert (low[2], high[2]) == (0.0, 1.0)  # no trials: uninformative
    assert low[3] < 0.5 < high[3]
    wide_low, wide_high = wilson_interval(50, 100, confidence=0.99)
    assert wide_low < low[3] and wide_high > high[3]


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"successes": 11, "n": 10}, "successes"),
    ({"successes": 1, "n": -1}, "n must"),
    ({"successes": 1, "n": 10, "confidence": 1.5}, "confidence"),
])
def test_wilson_rejects_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        wilson_interval(**kwargs)


# --- confusion ---------------------------------------------------------------------------

GIVEN = ["good", "good", "good", "scratch", "scratch", "dent", "good", "scratch"]
PRED = ["good", "scratch", "scratch", "scratch", "good", "scratch", "good", "scratch"]


def test_confusion_matrix_equals_hand_count():
    matrix = confusion_matrix(GIVEN, PRED, classes=CLASSES)
    assert list(matrix.index) == CLASSES and list(matrix.columns) == CLASSES
    assert matrix.index.name == "true" and matrix.columns.name == "predicted"
    expected = [[2, 2, 0],   # good: 2 right, 2 as scratch
                [1, 2, 0],   # scratch: 1 as good
                [0, 1, 0]]   # dent: 1 as scratch; never predicted
    assert matrix.to_numpy().tolist() == expected
    assert all(np.issubdtype(t, np.integer) for t in matrix.dtypes)
    empty = confusion_matrix([], [], classes=CLASSES)
    assert empty.shape == (3, 3) and int(empty.to_numpy().sum()) == 0


def test_confusion_matrix_rejects_unknown_label_and_bad_shapes():
    with pytest.raises(ValueError, match=r"predicted.*crack"):
        confusion_matrix(["good"], ["crack"], classes=CLASSES)
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix(["good", "dent"], ["good"], classes=CLASSES)
    with pytest.raises(ValueError, match="classes"):
        confusion_matrix(["good"], ["good"], classes=[])
    with pytest.raises(ValueError, match="unique"):
        confusion_matrix(["good"], ["good"], classes=["good", "good"])


def test_confusion_cell_most_confident_mistakes_first():
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(GIVEN))], "given": GIVEN,
                          "predicted": PRED,
                          "confidence": [0.9, 0.55, 0.97, 0.8, 0.6, 0.7, 0.85, 0.99],
                          "filepath": [f"/img/{i}.png" for i in range(len(GIVEN))]})
    cell = confusion_cell(frame, true="good", pred="scratch")
    assert cell["sample_id"].tolist() == ["s2", "s1"]
    assert list(cell.index) == [0, 1] and "filepath" in cell.columns
    diagonal = confusion_cell(frame, true="scratch", pred="scratch")
    assert diagonal["sample_id"].tolist() == ["s7", "s3"]
    assert confusion_cell(frame, true="dent", pred="good").empty
    with pytest.raises(ValueError, match=r"true='crack'.*\['dent', 'good', 'scratch'\]"):
        confusion_cell(frame, true="crack", pred="good")
    with pytest.raises(ValueError, match="confidence"):
        confusion_cell(frame.drop(columns="confidence"), true="good", pred="good")


def test_class_report_most_confused_with():
    report = class_report(GIVEN, PRED, classes=CLASSES)
    assert list(report.columns) == ["class", "precision", "recall", "f1", "support",
                                    "predicted", "most_confused_with", "confused_count",
                                    "recall_low", "recall_high", "note"]
    rows = report.set_index("class")
    # four images of 'good' are too few to judge: the note says so, with the interval
    assert rows.loc["good", "note"].startswith("'good' has only 4 held-out images: its "
                                               "recall 0.50 could be anywhere from 0.15 to")
    assert rows.loc["good", "recall_low"] < 0.5 < rows.loc["good", "recall_high"]
    assert rows.loc["good", "most_confused_with"] == "scratch"
    assert rows.loc["good", "confused_count"] == 2
    assert rows.loc["good", "recall"] == pytest.approx(0.5)
    assert rows.loc["good", "precision"] == pytest.approx(2 / 3)
    assert rows.loc["scratch", "most_confused_with"] == "good"
    assert rows.loc["scratch", "precision"] == pytest.approx(2 / 5)
    assert rows.loc["dent", "precision"] == 0.0  # never predicted
    assert rows.loc["dent", "predicted"] == 0 and rows.loc["dent", "support"] == 1
    perfect = class_report(["good", "dent"], ["good", "dent"], classes=CLASSES)
    assert perfect["most_confused_with"].isna().all()
    assert perfect["confused_count"].tolist() == [0, 0, 0]
    many = class_report(["good"] * 40 + ["dent"] * 40, ["good"] * 40 + ["dent"] * 39 + ["good"],
                        classes=["good", "dent"])
    assert many["note"].isna().all()  # 40 images each: the figures stand on their own


# --- slice_report ------------------------------------------------------------------------

def test_slice_report_ranks_planted_dim_slice_first(dim_frame):
    report = slice_report(dim_frame, by=["lighting", "line"])
    top = report.iloc[0]
    assert top["slice"] == "lighting=dim"
    assert top["fields"] == ("lighting",) and top["values"] == ("dim",) and top["level"] == 1
    assert (top["n"], top["n_correct"], top["rest_n"]) == (100, 60, 200)
    assert top["accuracy"] == pytest.approx(0.6)
    assert top["rest_accuracy"] == pytest.approx(0.95)
    assert top["gap"] == pytest.approx(-0.35)
    assert top["ci_low"] < 0.6 < top["ci_high"] < 0.95 and top["excludes_rest"]
    assert sorted(top["sample_ids"]) == sorted(
        dim_frame.loc[dim_frame["lighting"] == "dim", "sample_id"])
    bright = report.set_index("slice").loc["lighting=bright"]
    assert bright["gap"] > 0
    # the irrelevant field is not flagged
    line_rows = report[report["fields"] == ("line",)]
    assert len(line_rows) == 2 and not line_rows["excludes_rest"].any()
    # 2 + 2 single values and 2 × 2 pairs, worst first
    assert len(report) == 8 and (report["level"] == 2).sum() == 4
    assert "lighting=dim & line=A" in set(report["slice"])
    assert report["gap"].is_monotonic_increasing


def test_slice_report_missing_values_min_size_and_no_ids(dim_frame):
    frame = dim_frame.drop(columns="sample_id").copy()
    frame["line"] = frame["line"].astype(object)
    frame.loc[:9, "line"] = None
    report = slice_report(frame, by=["line"], min_size=11)
    assert "line=(missing)" not in set(report["slice"])
    assert "sample_ids" not in report.columns
    assert report["n"].sum() == len(frame) - 10
    report = slice_report(frame, by=["line"])
    assert report.set_index("slice").loc["line=(missing)", "n"] == 10
    whole = slice_report(frame.assign(site="x"), by=["site"])
    assert whole["rest_n"].tolist() == [0] and not whole["excludes_rest"].iloc[0]


def test_slice_report_rejects_bad_input(dim_frame):
    with pytest.raises(ValueError, match=r"by must be a non-empty"):
        slice_report(dim_frame, by=[])
    with pytest.raises(ValueError, match=r"\['camera'\].*'lighting'"):
        slice_report(dim_frame, by=["camera"])
    with pytest.raises(ValueError, match="by must be a non-empty list"):
        slice_report(dim_frame, by="lighting")
    with pytest.raises(ValueError, match="correct='lighting' must hold only True/False"):
        slice_report(dim_frame, by=["line"], correct="lighting")
    with pytest.raises(ValueError, match="min_size"):
        slice_report(dim_frame, by=["line"], min_size=0)
    with pytest.raises(ValueError, match="confidence"):
        slice_report(dim_frame, by=["line"], confidence=95)


# --- discover_slices ---------------------------------------------------------------------

def test_discover_slices_finds_planted_conjunction(conjunction_frame):
    found = discover_slices(conjunction_frame, fields=["line", "camera", "lighting"], k=3)
    assert list(found.columns) == ["slice", "level", "size", "errors", "error_rate", "score",
                                   "accuracy", "ci_low", "ci_high", "gap", "sample_ids"]
    assert 1 <= len(found) <= 3
    top = found.iloc[0]
    assert top["slice"] == "line=B & camera=cam2" and top["level"] == 2
    bad = (conjunction_frame["line"] == "B") & (conjunction_frame["camera"] == "cam2")
    assert top["size"] == bad.sum()
    assert top["errors"] == (~conjunction_frame.loc[bad, "correct"]).sum()
    assert sorted(top["sample_ids"]) == sorted(conjunction_frame.loc[bad, "sample_id"])
    assert top["accuracy"] == pytest.approx(1 - top["error_rate"])
    assert top["ci_low"] < top["accuracy"] < top["ci_high"]
    assert top["gap"] < -0.4
    assert found["score"].is_monotonic_decreasing


def test_discover_slices_cuts_to_k_and_handles_no_errors(conjunction_frame):
    one = discover_slices(conjunction_frame, fields=["line", "camera"], k=1, max_level=1)
    assert len(one) == 1 and one["level"].iloc[0] == 1
    perfect = conjunction_frame.drop(columns="sample_id").assign(correct=True)
    empty = discover_slices(perfect, fields=["line", "camera"])
    assert empty.empty
    assert list(empty.columns) == ["slice", "level", "size", "errors", "error_rate", "score",
                                   "accuracy", "ci_low", "ci_high", "gap"]


def test_discover_slices_rejects_bad_input(conjunction_frame):
    with pytest.raises(ValueError, match="fields must be a non-empty"):
        discover_slices(conjunction_frame, fields=[])
    with pytest.raises(ValueError, match=r"\['shift'\].*'camera'"):
        discover_slices(conjunction_frame, fields=["shift"])
    with pytest.raises(ValueError, match="k must be an integer"):
        discover_slices(conjunction_frame, fields=["line"], k=0)
    with pytest.raises(ValueError, match="alpha"):
        discover_slices(conjunction_frame, fields=["line"], alpha=0)
