"""The gate on real versions: a probe trained on the demo, one trained on shuffled labels,
one that misses a class, and one trained before the frozen set existed."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from fiftyone import ViewField as F

import workbench as wb
from workbench.demo import create_demo_project

PROBE = {"mode": "probe", "folds": 2, "image_size": 64, "progress": False}


@pytest.fixture(scope="module")
def line():
    """A demo project (16 images per class) and its versions: ``early`` (trained before the
    freeze), ``good``, ``shuffled`` (labels permuted by a review, then restored) and
    ``fewer`` (no ``dent``); the frozen set is 30 %, two golden images."""
    p = create_demo_project(f"gate-{os.getpid()}", n_per_class=16, seed=3, size=64,
                            overwrite=True)
    early = wb.train(p, **PROBE)
    no_frozen = wb.gate(p, early, line="A", n_boot=200)
    frozen = p.freeze_eval(fraction=0.3, annotator="erin")
    labels = p.to_pandas().set_index("sample_id")["label"]
    free = [sid for sid in labels.dropna().index if sid not in set(frozen)]
    p.golden(add=free[:2], annotator="erin")
    good = wb.train(p, **PROBE)
    rng = np.random.default_rng(0)
    trainable = free[2:]
    shuffled_labels = rng.permutation(labels[trainable].to_numpy())
    for sid, label in zip(trainable, shuffled_labels, strict=True):
        p.annotate([sid], label, annotator="prankster", review=True)
    shuffled = wb.train(p, **PROBE)
    for sid in trainable:
        p.annotate([sid], labels[sid], annotator="erin", review=True)
    fewer = wb.train(p, view=p.dataset.match(F("ground_truth.label") != "dent"), **PROBE)
    yield {"p": p, "early": early, "good": good, "shuffled": shuffled, "fewer": fewer,
           "no_frozen": no_frozen, "frozen": frozen}
    wb.delete_project(p.name)


def _check(report: wb.GateReport, name: str):
    return report.checks.set_index("check").loc[name]


def test_without_a_frozen_set_the_gate_fails_and_says_how_to_make_one(line):
    report = line["no_frozen"]
    assert not report.passed
    row = _check(report, "frozen_set")
    assert not row["passed"]
    assert "p.freeze_eval(" in row["detail"]
    assert "freeze_eval" in report.summary()


def test_first_deployment_applies_only_the_absolute_checks(line):
    report = wb.gate(line["p"], line["good"], line="A", n_boot=200)
    assert report.passed, report.summary()
    assert report.champion is None
    assert list(report.checks.columns) == ["check", "passed", "figure", "threshold", "detail"]
    checks = set(report.checks["check"])
    assert {"frozen_set", "frozen_unseen", "classes", "accuracy", "macro_f1", "golden",
            "onnx_parity", "edge_predictor"} <= checks
    assert "no champion" in _check(report, "accuracy")["detail"]
    assert _check(report, "onnx_parity")["figure"] <= 1e-3
    assert _check(report, "golden")["figure"] == 2


def test_a_model_trained_on_shuffled_labels_fails_against_the_champion(line):
    report = wb.gate(line["p"], line["shuffled"], champion=line["good"], line="A", n_boot=500)
    assert not report.passed
    failed = set(report.failed["check"])
    assert {"accuracy", "macro_f1"} <= failed
    assert any(c.startswith("recall:") for c in failed)
    row = _check(report, "accuracy")
    assert row["figure"] < row["threshold"]
    assert "worse than the champion" in row["detail"]
    assert report.hard_failures == []


def test_a_better_model_passes_against_a_weaker_champion(line):
    report = wb.gate(line["p"], line["good"], champion=line["shuffled"], line="A", n_boot=500)
    assert report.passed, report.summary()
    accuracy = report.comparison.set_index("metric").loc["accuracy"]
    assert accuracy["delta"] > 0 and accuracy["delta_low"] > 0
    assert report.champion == line["shuffled"].name


def test_a_golden_miss_fails_and_names_the_image(line):
    p, good = line["p"], line["good"]
    victim = line["frozen"][0]  # never trained on; a reviewer's wrong label becomes golden
    row = p.to_pandas().set_index("sample_id").loc[victim]
    before = row["label"]
    said = good.predict([row["filepath"]], progress=False)["label"].iloc[0]
    wrong = next(c for c in p.classes if c not in (before, said))
    p.annotate([victim], wrong, annotator="tired", review=True)
    p.golden(add=[victim], annotator="tired")
    try:
        report = wb.gate(p, good, line="A", n_boot=200)
        row = _check(report, "golden")
        assert not row["passed"] and victim in row["detail"]
        assert set(report.failed["check"]) == {"golden"}
        missed = report.golden_results.set_index("sample_id").loc[victim]
        assert missed["reference"] == wrong and not missed["right"]
    finally:
        p.golden(remove=[victim], annotator="tired")
        p.annotate([victim], before, annotator="erin", review=True)


def test_a_version_trained_before_the_freeze_is_not_scored_as_unseen(line):
    report = wb.gate(line["p"], line["early"], line="A", n_boot=200)
    row = _check(report, "frozen_unseen")
    assert not row["passed"] and row["figure"] > 0


def test_other_classes_than_the_champion_fail_the_classes_check(line):
    report = wb.gate(line["p"], line["fewer"], champion=line["good"], line="A", n_boot=200)
    row = _check(report, "classes")
    assert not row["passed"] and "missing: dent" in row["detail"]


def test_a_version_of_another_project_is_refused(line):
    stranger = dataclasses.replace(line["good"], project_name="someone-else")
    with pytest.raises(wb.ProjectError, match="belongs to project 'someone-else'"):
        wb.gate(line["p"], stranger, line="A")


def test_bad_line_names_are_refused_before_any_work(line):
    for bad in ("", "../etc", "a b", "x" * 40, None):
        with pytest.raises(wb.DeploymentError, match="line="):
            wb.gate(line["p"], line["good"], line=bad)


@pytest.mark.slow
def test_promotion_through_the_gate_and_a_forced_one_records_its_reason(line):
    p = line["p"]
    first = wb.promote(p, line["good"], line="G", annotator="erin", n_boot=200)
    assert not first.forced and first.gate["passed"]
    with pytest.raises(wb.GateFailed) as refused:
        wb.promote(p, line["shuffled"], line="G", annotator="erin", n_boot=200)
    assert "force=True" in str(refused.value)
    assert not refused.value.report.passed
    with pytest.raises(wb.DeploymentError, match="reason"):
        wb.promote(p, line["shuffled"], line="G", annotator="erin", force=True)
    forced = wb.promote(p, line["shuffled"], line="G", annotator="erin", force=True,
                        reason="night shift, supervisor ok", n_boot=200)
    assert forced.forced and forced.reason == "night shift, supervisor ok"
    assert wb.current_deployment(p, line="G").deployment_id == forced.deployment_id
    table = wb.deployments(p, line="G")
    row = table.set_index("deployment_id").loc[forced.deployment_id]
    assert row["forced"] and row["reason"] == "night shift, supervisor ok"
    assert not row["gate_passed"] and row["current"]
    events = wb.deployment_history(p, line="G")["event"].tolist()
    assert events == ["promote", "refused_gate", "promote"]
    with pytest.raises(wb.GateFailed, match="classes"):
        wb.promote(p, line["fewer"], line="G", annotator="erin", n_boot=200)
