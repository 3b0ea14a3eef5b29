"""The frozen evaluation set and the golden set: stored references, recorded decisions, and
both trainers leaving the images out (a classifier and a detector, trained for real)."""

from __future__ import annotations

import os

import pytest
import torch

import workbench as wb
from workbench.demo import create_demo_project
from workbench.train.detection.train import DetectionSettings


@pytest.fixture(scope="module")
def shelf():
    """A demo project with 6 images per class; nothing set aside yet."""
    p = create_demo_project(f"evalsets-{os.getpid()}", n_per_class=6, seed=2, size=64,
                            overwrite=True)
    yield p
    wb.delete_project(p.name)


def test_a_stratified_draw_records_the_labels_as_reference(shelf):
    p = shelf
    ids = p.freeze_eval(fraction=0.34, annotator="erin", seed=4)
    assert ids == p.eval_ids()
    labels = p.to_pandas().set_index("sample_id")["label"]
    per_class = labels[ids].value_counts()
    expected = labels.value_counts().map(lambda n: max(1, round(0.34 * n)))
    assert per_class.sort_index().equals(expected.sort_index())
    table = p.eval_sets()
    assert table["frozen"].all() and not table["changed"].any()
    assert (table.set_index("sample_id").loc[ids, "reference"] == labels[ids]).all()
    assert p.freeze_eval(fraction=0.34, annotator="erin", seed=4, replace=True) == ids
    with pytest.raises(wb.ProjectError, match="replace=True"):
        p.freeze_eval(fraction=0.2, annotator="erin")


def test_a_later_review_changes_the_reference_only_with_a_recorded_decision(shelf):
    p = shelf
    sid = p.eval_ids()[0]
    before = p.to_pandas().set_index("sample_id").loc[sid, "label"]
    other = next(c for c in p.classes if c != before)
    p.annotate([sid], other, annotator="sam", review=True)
    row = p.eval_sets().set_index("sample_id").loc[sid]
    assert row["reference"] == before and row["current"] == other and row["changed"]
    with pytest.raises(wb.ProjectError, match="reason"):
        p.update_eval_reference([sid], annotator="erin", reason="")
    assert p.update_eval_reference(annotator="erin", reason="supervisor re-checked") == [sid]
    assert p.eval_sets().set_index("sample_id").loc[sid, "reference"] == other
    last = p.eval_history().iloc[-1]
    assert last["action"] == "update_reference" and last["reason"] == "supervisor re-checked"
    p.annotate([sid], before, annotator="sam", review=True)
    p.update_eval_reference([sid], annotator="erin", reason="back as it was")


def test_bad_input_is_refused_with_what_to_do(shelf):
    p = shelf
    with pytest.raises(wb.ProjectError, match="annotator"):
        p.freeze_eval(["x"], annotator="")
    with pytest.raises(wb.ProjectError, match="not in project"):
        p.freeze_eval(["0123456789abcdef01234567"], annotator="erin")
    with pytest.raises(wb.ProjectError, match="fraction"):
        p.freeze_eval(fraction=1.5, annotator="erin", replace=True)
    with pytest.raises(wb.ProjectError, match="not in the golden set"):
        p.golden(remove=["nope"], annotator="erin")
    assert p.golden() == []


def test_the_classifier_never_trains_on_frozen_or_golden_images(shelf):
    p = shelf
    if not p.eval_ids():
        p.freeze_eval(fraction=0.34, annotator="erin")
    frame = p.to_pandas()
    free = [s for s in frame.dropna(subset=["label"])["sample_id"] if s not in p.eval_ids()]
    golden = p.golden(add=free[:2], annotator="erin")
    version = wb.train(p, mode="probe", folds=2, image_size=64, progress=False)
    trained = set(version.snapshot()["sample_id"])
    held = set(p.eval_ids()) | set(golden)
    assert not trained & held
    # the labelled images left out besides are the near-copies of held-back ones (the demo
    # plants exact copies): a model that learnt them would be scored on what it saw
    left_out = set(frame.dropna(subset=["label"])["sample_id"]) - held - trained
    assert len(left_out) == version.config["groups"]["dropped_near_held_back"]
    copies = wb.near_duplicates(p, image_size=64, write=False)
    for sid in left_out:
        pairs = copies[(copies["sample_id"] == sid) | (copies["other_id"] == sid)]
        assert set(pairs["sample_id"]) | set(pairs["other_id"]) & held, sid
    checks = wb.gate(p, version, line="A", n_boot=50).checks.set_index("check")
    assert checks.loc["frozen_unseen", "passed"] and checks.loc["frozen_set", "passed"]


@pytest.fixture(scope="module")
def boxes():
    """A detection demo project (4 images per class) with a third frozen."""
    p = create_demo_project(f"evalsets-det-{os.getpid()}", n_per_class=4, seed=2, size=64,
                            task="detection", overwrite=True)
    yield p
    wb.delete_project(p.name)


@pytest.mark.slow
def test_the_detector_never_trains_on_frozen_images_and_is_gated_on_map50(boxes):
    p = boxes
    frozen = p.freeze_eval(fraction=0.34, annotator="erin")
    assert frozen and all(isinstance(p.eval_sets().set_index("sample_id").loc[s, "reference"],
                                     list) for s in frozen)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        version = wb.train(p, folds=2, epochs=2, image_size=64, progress=False,
                           settings=DetectionSettings(batch_size=4))
    finally:
        torch.set_num_threads(threads)
    trained = set(version.snapshot()["sample_id"])
    assert trained and not trained & set(frozen)
    report = wb.gate(p, version, line="A", n_boot=50)
    checks = report.checks.set_index("check")
    assert checks.loc["frozen_set", "passed"] and checks.loc["frozen_unseen", "passed"]
    assert "map50" in checks.index and checks.loc["onnx_parity", "passed"]
    assert checks.loc["edge_predictor", "passed"]
    against_itself = wb.gate(p, version, champion=version, line="A", n_boot=50)
    rows = against_itself.checks.set_index("check")
    assert rows.loc["map50", "passed"] and "0.000" in rows.loc["map50", "detail"]
