"""``loupe demo`` sets up the 3 a.m. story: exam sets, v1 on line A, a night batch."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

import workbench as wb
from workbench import cli
from workbench.demo import create_demo_project, truth_file
from workbench.demo.line_story import GOLDEN


def test_the_demo_ships_exam_sets_v1_on_line_a_and_a_night_batch():
    p = create_demo_project(f"demo-story-{os.getpid()}", n_per_class=10, seed=1,
                            overwrite=True)
    try:
        cli._demo_inbox(p.name)
        cli._demo_line(p.name)
        deployment = wb.current_deployment(p, line="A")
        assert deployment is not None and deployment.version == "v1"
        assert deployment.gate["passed"] and not deployment.forced
        frozen, golden = p.eval_ids(), p.golden()
        assert frozen and len(golden) == sum(GOLDEN.values())
        truth = dict(zip(*p.dataset.values(["id", "demo_truth"]), strict=True))
        assert sorted(truth[sid] for sid in golden) == sorted(
            label for label, n in GOLDEN.items() for _ in range(n))
        trained_on = set(p.model("v1").snapshot()["sample_id"])
        assert not trained_on & (set(frozen) | set(golden))  # frozen before the training
        batches = wb.inbox_batches(p, environ={})
        night = batches[batches["batch"].str.startswith("night-")]
        assert len(night) == 1
        labels = pd.read_csv(truth_file(Path(night["path"].iloc[0])))
        assert len(labels) == night["n_images"].iloc[0] and set(labels["label"]) <= set(
            p.classes)
        cli._demo_line(p.name)  # again: nothing changes
        assert wb.current_deployment(p, line="A").deployment_id == deployment.deployment_id
        assert list(p.models()["name"]) == ["v1"] and p.eval_ids() == frozen
    finally:
        wb.delete_project(p.name)


def test_without_training_the_demo_still_sets_its_exam_sets_aside():
    p = create_demo_project(f"demo-untrained-{os.getpid()}", n_per_class=4, seed=2,
                            size=64, overwrite=True)
    try:
        cli._demo_line(p.name, train=False)
        assert p.eval_ids() and p.golden()
        assert p.models().empty and wb.current_deployment(p, line="A") is None
    finally:
        wb.delete_project(p.name)
