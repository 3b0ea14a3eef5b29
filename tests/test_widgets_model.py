"""Model widgets (ConfusionDrilldown, SlicePerformance, ModelCompare) and the pure
version comparison: what a click puts in the grid, what a relabel writes and redraws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.analyse.classification import held_out
from workbench.metrics.compare import compare_predictions, per_class_deltas


def _click(figure, *, trace: int, x, y, index) -> None:
    """Send a click the way plotly's front-end does."""
    figure._js2py_pointsCallback = {
        "event_type": "plotly_click",
        "points": {"xs": [x], "ys": [y], "point_indexes": [index], "trace_indexes": [trace]}}


def _frame(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["sample_id", "given", "predicted", "confidence"])


# -- pure comparison (no database) -----------------------------------------------------
def test_compare_predictions_names_each_change():
    a = _frame([("s1", "ok", "ok", 0.9), ("s2", "ok", "dent", 0.8), ("s3", "dent", "dent", 0.7),
                ("s4", "dent", "ok", 0.6), ("s5", "ok", "ok", 0.5)])
    b = _frame([("s4", "dent", "pit", 0.55), ("s3", "dent", "ok", 0.65),
                ("s2", "ok", "ok", 0.75), ("s1", "ok", "ok", 0.95), ("s9", "ok", "ok", 0.99)])

    result = compare_predictions(a, b)

    assert list(result.columns) == ["sample_id", "given", "predicted_a", "predicted_b",
                                    "confidence_a", "confidence_b", "outcome"]
    assert list(result["sample_id"]) == ["s1", "s2", "s3", "s4"]  # only both held out
    assert list(result["outcome"]) == ["same_right", "better", "worse", "same_wrong"]
    row = result.set_index("sample_id").loc["s4"]
    assert (row["predicted_a"], row["predicted_b"]) == ("ok", "pit")
    assert (row["confidence_a"], row["confidence_b"]) == (0.6, 0.55)


def test_per_class_deltas_recall_and_f1():
    compared = compare_predictions(
        _frame([("s1", "ok", "ok", 0.9), ("s2", "ok", "dent", 0.9), ("s3", "dent", "dent", 0.9),
                ("s4", "dent", "dent", 0.9)]),
        _frame([("s1", "ok", "ok", 0.9), ("s2", "ok", "ok", 0.9), ("s3", "dent", "dent", 0.9),
                ("s4", "dent", "ok", 0.9)]))

    deltas = per_class_deltas(compared, classes=["ok", "dent", "pit"]).set_index("class")

    assert deltas.loc["ok", "n"] == 2 and deltas.loc["pit", "n"] == 0
    assert deltas.loc["ok", ["recall_a", "recall_b", "recall_delta"]].tolist() == [0.5, 1.0, 0.5]
    assert deltas.loc["dent", ["recall_a", "recall_b"]].tolist() == [1.0, 0.5]
    # dent under a: precision 2/3, recall 1 -> F1 0.8; under b: precision 1, recall 0.5 -> 2/3
    assert deltas.loc["dent", "f1_a"] == pytest.approx(0.8)
    assert deltas.loc["dent", "f1_delta"] == pytest.approx(2 / 3 - 0.8)
    empty = per_class_deltas(compared.iloc[:0], classes=["ok", "dent"])
    assert empty["n"].tolist() == [0, 0] and empty["recall_delta"].tolist() == [0.0, 0.0]


def test_compare_predictions_rejects_bad_frames():
    good = _frame([("s1", "ok", "ok", 0.9)])
    with pytest.raises(ValueError, match="confidence"):
        compare_predictions(good.drop(columns="confidence"), good)
    with pytest.raises(ValueError, match="different labels"):
        compare_predictions(good, _frame([("s1", "dent", "ok", 0.9)]))
    with pytest.raises(ValueError, match="more than once"):
        compare_predictions(good, pd.concat([good, good]))
    with pytest.raises(ValueError, match="DataFrame"):
        compare_predictions([("s1", "ok", "ok", 0.9)], good)


# -- ConfusionDrilldown --------------------------------------------------------------------
def _off_diagonal_cell(matrix: pd.DataFrame, *, at_least: int = 1) -> tuple[str, str]:
    for true in matrix.index:
        for pred in matrix.columns:
            if true != pred and matrix.loc[true, pred] >= at_least:
                return true, pred
    raise AssertionError("the demo model makes no mistake to drill into")


def test_confusion_click_opens_cell_most_confident_first(widget_demo):
    import workbench as wb
    from widgets.analyse.confusion import ConfusionDrilldown

    p, v1, _ = widget_demo
    widget = ConfusionDrilldown(p, v1)
    expected_matrix = wb.confusion(p, v1)
    assert np.array_equal(np.array(widget.figure.data[0].z), expected_matrix.to_numpy())
    assert list(widget.figure.data[0].x) == list(expected_matrix.columns)
    assert widget.report["class"].tolist() == list(expected_matrix.index)
    assert widget.grid.sample_ids == []

    true, pred = _off_diagonal_cell(widget.matrix, at_least=2)
    i, j = widget.classes.index(true), widget.classes.index(pred)
    _click(widget.figure, trace=0, x=pred, y=true, index=[i, j])

    frame = held_out(p, v1)
    cell = frame[(frame["given"] == true) & (frame["predicted"] == pred)]
    assert sorted(widget.grid.sample_ids) == sorted(cell["sample_id"])
    confidence = cell.set_index("sample_id").loc[widget.grid.sample_ids, "confidence"]
    assert confidence.is_monotonic_decreasing
    assert widget.grid.sample_ids == wb.confusion_samples(p, v1, true=true, pred=pred)
    assert widget.cell == (true, pred)
    first = widget.grid.items[0]
    assert first["caption"].startswith(pred)


def test_confusion_relabel_in_grid_updates_store_and_heatmap(widget_demo):
    from widgets.analyse.confusion import ConfusionDrilldown

    p, v1, _ = widget_demo
    widget = ConfusionDrilldown(p, v1.name, annotator="carol")
    true, pred = _off_diagonal_cell(widget.matrix)
    ids = widget.drill(true, pred)
    before = widget.matrix.copy()
    sid = ids[0]

    widget.grid.assign(pred, [sid])  # accept the model's label for the top mistake

    assert p.to_pandas().set_index("sample_id").loc[sid, "label"] == pred
    last = p.history(sid).iloc[-1]
    assert (last["annotator"], last["label"], bool(last["review"])) == ("carol", pred, True)
    z = np.array(widget.figure.data[0].z)
    i, j = widget.classes.index(true), widget.classes.index(pred)
    assert z[i, j] == before.iloc[i, j] - 1  # left the mistake cell ...
    assert z[j, j] == before.iloc[j, j] + 1  # ... and is now a correct prediction
    assert z.sum() == before.to_numpy().sum()

    widget.grid.undo()  # the review is withdrawn: the old consensus and counts come back
    assert p.to_pandas().set_index("sample_id").loc[sid, "label"] == true
    assert np.array_equal(np.array(widget.figure.data[0].z), before.to_numpy())


def test_confusion_view_and_bad_input(widget_demo):
    from fiftyone import ViewField as F

    import workbench as wb
    from widgets.analyse.confusion import ConfusionDrilldown

    p, v1, _ = widget_demo
    view = p.dataset.match(F("lighting") == "dim")
    widget = ConfusionDrilldown(view, v1)
    frame = held_out(p, v1)
    assert widget.matrix.to_numpy().sum() == (frame["lighting"] == "dim").sum()
    with pytest.raises(wb.ProjectError, match="not a class"):
        widget.drill("ok", "crack")
    with pytest.raises(wb.ProjectError, match="v7"):
        ConfusionDrilldown(p, "v7")


# -- SlicePerformance ----------------------------------------------------------------------
def test_slice_bar_click_opens_exactly_the_slice_errors(widget_demo):
    import workbench as wb
    from widgets.analyse.slices import SlicePerformance

    p, v1, _ = widget_demo
    widget = SlicePerformance(p, v1, by=["lighting", "line"])
    assert [t.name for t in widget.figure.data] == ["lighting", "line"]
    expected = wb.slice_report(p, v1, by=["lighting", "line"]).set_index("slice")
    shown = widget.report.set_index("slice")
    assert shown.loc[expected.index, "accuracy"].tolist() == expected["accuracy"].tolist()

    bars = list(widget.figure.data[0].x)
    index = bars.index("lighting=dim")
    _click(widget.figure, trace=0, x="lighting=dim", y=widget.figure.data[0].y[index],
           index=index)

    frame = held_out(p, v1)
    errors = frame[(frame["lighting"] == "dim") & (frame["given"] != frame["predicted"])]
    assert sorted(widget.grid.sample_ids) == sorted(errors["sample_id"])
    assert len(errors) > 0
    confidence = errors.set_index("sample_id").loc[widget.grid.sample_ids, "confidence"]
    assert confidence.is_monotonic_decreasing
    assert widget.slice == (("lighting",), ("dim",))
    # a dim slice below the overall accuracy is drawn redder than a bright one above it
    colors = dict(zip(bars, widget.figure.data[0].marker.color, strict=True))
    assert shown.loc["lighting=dim", "accuracy"] < widget.overall
    assert colors["lighting=dim"] != colors["lighting=bright"]


def test_slice_drill_line_and_pairs(widget_demo):
    from widgets.analyse.slices import SlicePerformance

    p, v1, _ = widget_demo
    widget = SlicePerformance(p, v1, by=["lighting", "line"], pairs=True)
    assert len(widget.figure.data) == 3
    frame = held_out(p, v1)
    wrong = frame["given"] != frame["predicted"]

    ids = widget.drill("line", "B")
    assert sorted(ids) == sorted(frame.loc[wrong & (frame["line"] == "B"), "sample_id"])
    ids = widget.drill(["lighting", "line"], ["dim", "A"])
    where = wrong & (frame["lighting"] == "dim") & (frame["line"] == "A")
    assert sorted(ids) == sorted(frame.loc[where, "sample_id"])
    assert widget.grid.sample_ids == ids


def test_slice_bad_input_names_the_field(widget_demo):
    import workbench as wb
    from widgets.analyse.slices import SlicePerformance

    p, v1, _ = widget_demo
    with pytest.raises(wb.ProjectError, match="shift") as info:
        SlicePerformance(p, v1, by=["lighting", "shift"])
    for field in ("line", "camera", "lighting"):
        assert field in str(info.value)
    widget = SlicePerformance(p, v1, by="lighting")
    with pytest.raises(wb.ProjectError, match="foggy"):
        widget.drill("lighting", "foggy")
    with pytest.raises(wb.ProjectError, match="camera"):
        widget.drill("camera", "cam1")  # a slice field, but not one shown


# -- ModelCompare --------------------------------------------------------------------------
def test_model_compare_outcomes_partition_common_samples(widget_demo):
    from widgets.analyse.compare import ModelCompare

    p, v1, v2 = widget_demo
    widget = ModelCompare(p, "v1", "v2")
    first = held_out(p, v1).set_index("sample_id")
    second = held_out(p, v2).set_index("sample_id")
    common = set(first.index) & set(second.index)

    shown = {outcome: widget.drill(outcome)
             for outcome in ("better", "worse", "same_wrong", "same_right")}
    assert sum(len(ids) for ids in shown.values()) == len(common)
    assert set().union(*map(set, shown.values())) == common
    for outcome, ids in shown.items():
        for sid in ids:
            right_a = first.loc[sid, "predicted"] == first.loc[sid, "given"]
            right_b = second.loc[sid, "predicted"] == first.loc[sid, "given"]
            assert outcome == {(False, True): "better", (True, False): "worse",
                               (True, True): "same_right",
                               (False, False): "same_wrong"}[(right_a, right_b)]
    assert widget.counts == {o: len(ids) for o, ids in shown.items()}
    assert shown["better"] or shown["worse"], "the fixture's versions should differ"

    outcome = "worse" if shown["worse"] else "better"
    widget.buttons[outcome].click()
    assert widget.grid.sample_ids == shown[outcome]
    sid = shown[outcome][0]
    label = first.loc[sid, "given"]
    x = list(widget.figure.data[0].x)
    _click(widget.figure, trace=0, x=label, y=0.0, index=x.index(label))
    assert (widget.outcome, widget.label, widget.class_picker.value) == (outcome, label, label)
    assert widget.grid.sample_ids == [s for s in shown[outcome] if first.loc[s, "given"] == label]
    assert widget.grid.items[0]["caption"] == (
        f"v1: {first.loc[sid, 'predicted']} → v2: {second.loc[sid, 'predicted']}")
    widget.class_picker.value = ""  # back to all classes
    assert widget.grid.sample_ids == shown[outcome]


def test_model_compare_rejects_bad_versions(widget_demo):
    import workbench as wb
    from widgets.analyse.compare import ModelCompare
    from workbench.analyse.compare import compare

    p, v1, _ = widget_demo
    with pytest.raises(wb.ProjectError, match="both 'v1'"):
        ModelCompare(p, "v1", v1)
    with pytest.raises(wb.ProjectError, match="v9"):
        ModelCompare(p, "v1", "v9")
    with pytest.raises(wb.ProjectError, match="both 'v2'"):
        compare(p, "v2", "v2")
    widget = ModelCompare(p, "v2", "v1")
    with pytest.raises(ValueError, match="better"):
        widget.drill("improved")
    with pytest.raises(wb.ProjectError, match="crack"):
        widget.drill("worse", label="crack")
