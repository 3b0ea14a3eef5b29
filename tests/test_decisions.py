"""Decisions by cost: temperature calibration and the operating point, from the pure
functions to the stored version, the CLI, the deployment and the edge runtime that applies
it, and the bad inputs each refused with a reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import workbench as wb
from workbench.metrics.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
)
from workbench.metrics.costs import (
    PER,
    Costs,
    NotEnoughEvidenceError,
    best_threshold,
    cost_table,
    realised,
)

COSTS = {"escape": 50, "false_reject": 1}


# -- pure ---------------------------------------------------------------------------------------
def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a 3-class model that is right ~75 % of the time but says ~99 %."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(4 * logits)
    return probs / probs.sum(axis=1, keepdims=True), labels


def test_temperature_scaling_makes_overconfident_probabilities_honest():
    probs, labels = _overconfident(2000, seed=0)
    temperature = fit_temperature(probs, labels)
    assert temperature > 2  # it softens
    before = expected_calibration_error(probs, labels)
    after = expected_calibration_error(apply_temperature(probs, temperature), labels)
    assert before > 0.1 and after < 0.03
    # fitted on one draw, it holds on another
    fresh, fresh_labels = _overconfident(2000, seed=1)
    assert expected_calibration_error(apply_temperature(fresh, temperature), fresh_labels) < 0.04
    # the ranking of classes is kept
    assert (apply_temperature(probs, temperature).argmax(1) == probs.argmax(1)).all()


def test_the_cost_table_counts_escapes_and_false_rejects_per_ten_thousand():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8] * 2 + [0.35, 0.9] * 4)
    given = np.array(["ok"] * 16 + ["dent", "scratch"] * 4)
    costs = Costs.parse(COSTS, ["dent", "scratch"])
    table = cost_table(scores, given, normal="ok", costs=costs, thresholds=[0.5], n_boot=200)
    row = table.iloc[0]
    rate = 8 / 24
    # normals with score >= 0.5: 0.5, 0.6, 0.7, 0.8 twice -> 8 of 16 rejected
    assert row["false_rejects"] == pytest.approx(PER * (1 - rate) * 8 / 16)
    # defects below 0.5: the four dents (0.35) pass
    assert row["escapes"] == pytest.approx(PER * rate * 4 / 8)
    assert row["cost"] == pytest.approx(50 * row["escapes"] + row["false_rejects"])
    assert row["escapes_low"] <= row["escapes"] <= row["escapes_high"]
    # a line with 1 % defects: the same rates weigh differently
    line = cost_table(scores, given, normal="ok", costs=costs, thresholds=[0.5],
                      defect_rate=0.01, n_boot=50).iloc[0]
    assert line["escapes"] == pytest.approx(PER * 0.01 * 0.5)
    # per-class costs: a dent escape costs 200, a scratch 1
    per_class = Costs.parse({"escape": {"dent": 200, "scratch": 1}, "false_reject": 1},
                            ["dent", "scratch"])
    row = cost_table(scores, given, normal="ok", costs=per_class, thresholds=[0.5],
                     n_boot=50).iloc[0]
    assert row["cost"] == pytest.approx(PER * (rate * 200 * 4 / 8 + (1 - rate) * 8 / 16))


def test_the_least_cost_threshold_follows_the_costs_and_zero_counts_keep_an_upper_bound():
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.beta(2, 5, 200), rng.beta(5, 2, 40)])
    given = np.array(["ok"] * 200 + ["crack"] * 40)
    expensive = cost_table(scores, given, normal="ok",
                           costs=Costs.parse({"escape": 100, "false_reject": 1}, ["crack"]))
    cheap = cost_table(scores, given, normal="ok",
                       costs=Costs.parse({"escape": 1, "false_reject": 1}, ["crack"]))
    assert best_threshold(expensive) < best_threshold(cheap)
    chosen = expensive[expensive["threshold"] == best_threshold(expensive)].iloc[0]
    assert chosen["cost"] == expensive["cost"].min()
    # rejecting everything: no escape counted, yet the interval admits some
    everything = expensive.iloc[0]
    assert everything["threshold"] == 0 and everything["escapes"] == 0
    assert everything["escapes_high"] > 0
    held = realised(scores, given, best_threshold(expensive), normal="ok",
                    costs=Costs.parse({"escape": 100, "false_reject": 1}, ["crack"]))
    assert held["cost"] == pytest.approx(chosen["cost"])


def test_the_smoothed_choice_costs_less_on_parts_it_never_saw():
    """On 60 good and 10 cracked images the least *counted* cost sits just under the lowest
    crack seen; spreading the scores keeps a margin that pays off at 50:1 on fresh parts."""
    costs = Costs.parse({"escape": 50, "false_reject": 1}, ["crack"])
    counted = smoothed = 0.0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        scores = np.concatenate([rng.beta(2, 5, 60), rng.beta(5, 2, 10)])
        given = np.array(["ok"] * 60 + ["crack"] * 10)
        fresh = np.concatenate([rng.beta(2, 5, 2000), rng.beta(5, 2, 300)])
        fresh_given = np.array(["ok"] * 2000 + ["crack"] * 300)
        table = cost_table(scores, given, normal="ok", costs=costs, n_boot=10)
        assert (np.diff(table["cost_smoothed"].to_numpy()[:-1]) != 0).any()
        counted += realised(fresh, fresh_given, best_threshold(table, "cost"), normal="ok",
                            costs=costs)["cost"]
        smoothed += realised(fresh, fresh_given, best_threshold(table, "cost_smoothed"),
                             normal="ok", costs=costs)["cost"]
    assert smoothed < 0.9 * counted


def test_too_little_evidence_is_said_with_the_counts():
    given = np.array(["ok"] * 30 + ["crack"] * 3)
    with pytest.raises(NotEnoughEvidenceError, match=r"30 normal and 3 defective.*only 3 "
                       r"defective images.*needs about 97"):
        cost_table(np.linspace(0, 1, 33), given, normal="ok",
                   costs=Costs.parse(COSTS, ["crack"]))


@pytest.mark.parametrize(("costs", "words"), [
    ({"escape": -1, "false_reject": 1}, r'costs\["escape"\] must be a number > 0'),
    ({"escape": 50, "false_reject": 0}, r'costs\["false_reject"\] must be a number > 0'),
    ({"escape": 50}, r'exactly the keys "escape" and "false_reject"'),
    ({"escape": {"dent": 5}, "false_reject": 1}, r"no cost for the defect classes \['scratch'\]"),
    ({"escape": {"dent": 5, "scratch": 1, "rust": 2}, "false_reject": 1},
     r"\['rust'\], which are not defect classes"),
    ({"escape": "a lot", "false_reject": 1}, r"got 'a lot'"),
])
def test_bad_costs_are_refused_naming_the_key(costs, words):
    with pytest.raises(ValueError, match=words):
        Costs.parse(costs, ["dent", "scratch"])


# -- on a project -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    from workbench.demo import create_demo_project

    p = create_demo_project(f"decisions-{os.getpid()}", n_per_class=10, seed=2, overwrite=True)
    version = wb.train(p, mode="probe", folds=3, image_size=128, progress=False)
    yield p, version
    wb.delete_project(p.name)


def test_calibration_is_stored_and_predict_and_exports_apply_it(trained, tmp_path):
    p, version = trained
    files = list(p.dataset.values("filepath"))[:6]
    raw = version.predict(files, progress=False)[version.classes].to_numpy()
    calibration = wb.calibrate(p, version)
    assert calibration.temperature != 1.0
    assert calibration.n == len(p.dataset)  # every labelled image was held out once
    assert calibration.ece_after <= calibration.ece_before + 1e-9
    assert calibration.plot().data  # a reliability diagram
    mv = p.model(version.name)
    assert mv.temperature == pytest.approx(calibration.temperature)
    calibrated = mv.predict(files, progress=False)[mv.classes].to_numpy()
    np.testing.assert_allclose(calibrated, apply_temperature(raw, calibration.temperature),
                               atol=1e-5)
    onnx = wb.export(mv, "onnx", tmp_path / "calibrated.onnx")
    edge = wb.EdgePredictor(onnx)
    np.testing.assert_allclose(edge.predict_proba(files), calibrated, atol=1e-4)


def test_an_operating_point_is_chosen_stored_and_decides(trained):
    p, version = trained
    point = wb.operating_point(p, version, costs=COSTS, normal="ok", annotator="quinn")
    assert 0 <= point.threshold <= 1
    at = point.table[np.isclose(point.table["threshold"], point.threshold)].iloc[0]
    assert at["cost_smoothed"] == pytest.approx(point.table["cost_smoothed"].min())
    assert at["cost"] == pytest.approx(point.expected["cost"])
    labels = p.dataset.values("ground_truth.label")
    assert point.n_normal == labels.count("ok")
    assert point.n_defect == len(labels) - labels.count("ok")
    for key in ("escapes", "false_rejects", "cost"):
        assert point.expected[f"{key}_low"] <= point.expected[key] <= \
            point.expected[f"{key}_high"]
    assert point.plot().data
    stored = p.model(version.name).operating_point
    assert stored["threshold"] == pytest.approx(point.threshold, abs=1e-6)
    assert stored["normal"] == "ok" and stored["chosen_by"] == "quinn"
    # a person moves it: both choices stay in the history, the newest is in force
    moved = wb.operating_point(p, version, costs=COSTS, threshold=0.9, annotator="rene")
    history = wb.operating_point_history(p, version)
    assert list(history["chosen_by"][-2:]) == ["quinn", "rene"]
    assert p.model(version.name).operating_point["threshold"] == pytest.approx(0.9)
    frame = moved.decide(p.model(version.name).predict(list(p.dataset.values("filepath")),
                                                        progress=False))
    expected = np.where(1 - frame["ok"] >= 0.9, "reject", "accept")
    assert (frame["decision"] == expected).all()
    assert set(frame["decision"]) == {"accept", "reject"}
    # a cheaper escape moves the least-cost point up, never down
    cheaper = wb.operating_point(p, version, costs={"escape": 1, "false_reject": 1},
                                 write=False)
    assert cheaper.threshold >= point.threshold


def test_the_point_travels_with_a_promotion_and_the_edge_applies_it(trained, tmp_path):
    from loupe_edge.deployment import EdgeDeployment
    from loupe_edge.runtime import LineModel, decode

    p, version = trained
    wb.operating_point(p, version, costs=COSTS, threshold=0.5, annotator="quinn")
    deployment = wb.promote(p, version.name, line="B", annotator="quinn", force=True,
                            reason="test of the operating point")
    record = json.loads((deployment.folder / "deployment.json").read_text())
    assert record["operating_point"]["threshold"] == pytest.approx(0.5)
    line = LineModel.load(EdgeDeployment.load(deployment.folder))
    decisions = []
    for path in list(p.dataset.values("filepath"))[:30]:
        verdict, _ = line.inspect(decode(Path(path).read_bytes()))
        reject = 1 - verdict["probabilities"]["ok"] >= 0.5
        assert verdict["decision"] == ("reject" if reject else "accept")
        decisions.append(verdict["decision"])
    assert "reject" in decisions and "accept" in decisions


def test_the_cli_prints_the_point_and_stores_it_under_the_name(trained, tmp_path):
    p, version = trained
    table = tmp_path / "table.csv"
    result = subprocess.run([sys.executable, "-m", "workbench.cli", "operating-point", p.name,
                             version.name, "--escape-cost", "20", "--false-reject-cost", "1",
                             "--annotator", "sam", "--csv", str(table)],
                            capture_output=True, text=True, timeout=300, env=os.environ)
    assert result.returncode == 0, result.stderr
    assert "escapes and" in result.stdout and "per 10,000 parts" in result.stdout
    assert pd.read_csv(table)["cost"].notna().all()
    assert p.model(version.name).operating_point["chosen_by"] == "sam"
    refused = subprocess.run([sys.executable, "-m", "workbench.cli", "operating-point", p.name,
                              version.name, "--escape-cost", "0", "--false-reject-cost", "1"],
                             capture_output=True, text=True, timeout=300, env=os.environ)
    assert refused.returncode == 2 and 'costs["escape"] must be a number > 0' in refused.stderr


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"costs": {"escape": 0, "false_reject": 1}}, r'costs\["escape"\] must be a number > 0'),
    ({"costs": COSTS, "normal": "good"}, r"normal='good' is not a class"),
    ({"costs": COSTS, "defect_rate": 1.2}, r"defect_rate must be .* strictly between 0 and 1"),
    ({"costs": COSTS, "defect_rate": 0}, r"defect_rate must be"),
])
def test_bad_arguments_are_refused_and_nothing_is_stored(trained, kwargs, words):
    p, version = trained
    before = (p.model(version.name).folder / "version.json").read_text()
    with pytest.raises(ValueError, match=words):
        wb.operating_point(p, version, annotator="quinn", **kwargs)
    assert (p.model(version.name).folder / "version.json").read_text() == before


def test_a_version_without_held_out_predictions_is_refused(trained):
    p, version = trained
    # a version written by an earlier release, without out-of-fold predictions
    folder = version.folder.parent / "v90"
    shutil.copytree(version.folder, folder)
    try:
        frame = pd.read_parquet(folder / "predictions.parquet")
        frame.iloc[:0].to_parquet(folder / "predictions.parquet", index=False)
        with pytest.raises(wb.ProjectError, match=r"no held-out predictions.*out-of-fold"):
            wb.operating_point(p, "v90", costs=COSTS)
    finally:
        shutil.rmtree(folder)


def test_a_project_where_every_label_is_normal_is_refused(trained):
    from workbench.demo import create_demo_project

    p = create_demo_project(f"all-ok-{os.getpid()}", n_per_class=6, seed=4, overwrite=True)
    try:
        version = wb.train(p, mode="probe", folds=2, image_size=128, progress=False)
        p.annotate(list(p.dataset.values("id")), "ok", annotator="inspector", review=True)
        with pytest.raises(NotEnoughEvidenceError, match="labelled 'ok' now: with no defect"):
            wb.operating_point(p, version, costs=COSTS)
    finally:
        wb.delete_project(p.name)


def test_the_widget_moves_the_point_and_stores_it_under_the_name(trained):
    from widgets import OperatingPoint

    p, version = trained
    panel = OperatingPoint(p, version.name)
    first = panel.point.threshold
    assert panel.figure is not None and "Per 10,000 parts" in panel.summary.value
    panel.escape_input.value = 1000  # escapes now matter more: reject earlier
    assert panel.point.threshold <= first
    panel.slider.value = 0.8
    assert panel.point.threshold == pytest.approx(0.8)
    assert "moved by hand" in panel.summary.value
    assert panel.save() is None and "Type your name" in panel.message.value
    panel.annotator = "dana"
    saved = panel.save()
    assert saved is not None and saved.threshold == pytest.approx(0.8)
    stored = p.model(version.name).operating_point
    assert stored["chosen_by"] == "dana" and stored["costs"]["escape"] == 1000
