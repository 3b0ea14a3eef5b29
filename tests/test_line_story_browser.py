"""The whole 3 a.m. story in chromium, from the line console alone: import the night batch,
see the drift flag, label ten flagged images, retrain, compare, promote, roll back — with
the store and the deployment folder read from this process after each step.

Small settings: a demo project of 10 images per class, v1 a 3-fold probe (128 px) promoted
on line A by the demo's own set-up, a night batch of 14 images. Screenshots of each step go
to ``browser_support.SCREENSHOTS / "line"`` (``make screenshots``: ``docs/img/line``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from browser_support import SCREENSHOTS, chromium, offline_context, serve_project
from line_story import StoryDriver

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LINE = "A"
N_NIGHT = 14
N_LABEL = 10
SHOTS = SCREENSHOTS / "line"


@pytest.fixture(scope="module")
def story_project():
    """A demo project as ``loupe demo`` sets it up (frozen and golden sets, v1 promoted on
    line A, a night batch in the inbox with its true labels beside it), at small settings."""
    import workbench as wb
    from workbench.demo import create_demo_project, write_demo_inbox
    from workbench.demo.line_story import prepare_line

    p = create_demo_project(f"line-story-{os.getpid()}", n_per_class=10, seed=1,
                            overwrite=True)
    folder = write_demo_inbox(p, n=N_NIGHT)
    prepare_line(p, training={"folds": 3})
    yield p, folder
    wb.delete_project(p.name)


@pytest.fixture(scope="module")
def server(story_project, tmp_path_factory):
    p, _ = story_project
    log = tmp_path_factory.mktemp("serve") / "loupe-serve.log"
    with serve_project(p.name, log) as url:
        yield url, log


def _fresh(p):
    """The project as stored now (the server's processes wrote it)."""
    import workbench as wb

    fresh = wb.Project.open(p.name)
    fresh.dataset.reload()  # FiftyOne keeps one dataset object per process
    return fresh


def _current_folder(p) -> tuple[dict, Path]:
    """The line's pointer and the folder it names, read as a line PC reads them: files."""
    line = p.folder / "deployments" / LINE
    pointer = json.loads((line / "current.json").read_text())
    return pointer, line / pointer["deployment_id"]


def _events(p) -> list[dict]:
    path = p.folder / "deployments" / "deployments.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_an_inspector_closes_the_loop_from_the_line_console(story_project, server):
    import workbench as wb
    from workbench.demo import truth_file

    p, folder = story_project
    url, log = server
    name = f"erin-{os.getpid()}"
    truth_by_file = dict(pd.read_csv(truth_file(folder)).itertuples(index=False))
    n_before = len(_fresh(p))
    v1 = wb.current_deployment(p, line=LINE)
    assert v1 is not None and v1.version == "v1"

    with chromium() as browser:
        external: list[str] = []
        context = offline_context(browser, external)
        story = StoryDriver(context.new_page(), url, log)
        story.open()
        assert story.fact("deployment") == "v1"
        story.sign(name)

        # 1. the night batch: imported, checked for drift, flagged on the strip
        message = story.import_batch(folder.name)
        assert "DRIFT" in message
        stored = _fresh(p)
        night = stored.dataset.match({"filepath": {"$regex": f"/{folder.name}/"}})
        assert len(stored) == n_before + N_NIGHT and len(night) == N_NIGHT
        assert set(night.distinct("batch")) == {folder.name}
        checks = wb.drift_history(p)
        assert checks.iloc[-1]["drifted"] and checks.iloc[-1]["batch"] == folder.name
        story.wait("() => document.querySelector(\".loupe-line-fact[data-fact='drift']\")"
                   ".dataset.value === 'drift'", what="the drift flag on the status strip")
        assert _current_folder(p)[1] == v1.folder  # an import does not touch the line
        story.shot(SHOTS / "1_night_batch.png", at=".loupe-line-batch-message")

        # 2. ten flagged images labelled, least familiar first, under the typed name
        ids_by_file = dict(zip(*night.values(["filepath", "id"]), strict=True))
        truth = {ids_by_file[str(folder / f)]: label for f, label in truth_by_file.items()}
        per_image = wb.load_check(p, checks.iloc[-1]["check_id"]).per_image
        ood = dict(zip(per_image["filepath"], per_image["ood_score"], strict=True))

        def is_stored(sid: str, label: str) -> bool:
            history = p.history(sid)
            return bool(len(history)) and history.iloc[-1]["annotator"] == name \
                and history.iloc[-1]["label"] == label

        labelled = story.label(N_LABEL, truth.__getitem__, p.classes, is_stored)
        assert len(set(labelled)) == N_LABEL
        frame = _fresh(p).to_pandas().set_index("sample_id")
        assert frame.loc[labelled, "label"].tolist() == [truth[s] for s in labelled]
        assert frame.loc[[s for s in truth if s not in labelled], "label"].isna().all()
        scores = sorted((ood[frame.loc[s, "filepath"]] for s in truth), reverse=True)
        assert [ood[frame.loc[s, "filepath"]] for s in labelled] == scores[:N_LABEL]
        story.shot(SHOTS / "2_labelled.png", at=".loupe-line-batch .loupe-grid")

        # 3. retrain in the worker, like the version the line runs
        version = story.retrain()
        candidate = _fresh(p).model(version)
        assert candidate.config["mode"] == p.model("v1").config["mode"]
        trained_on = set(candidate.snapshot()["sample_id"])
        assert set(labelled) <= trained_on
        assert not trained_on & (set(p.eval_ids()) | set(p.golden()))
        jobs = wb.jobs.list(p)
        assert jobs.iloc[-1]["state"] == "done" and jobs.iloc[-1]["submitted_by"] == name

        # 4. compare: the gate on the frozen and golden sets
        assert story.compare(version), story.text(".loupe-line-verdict")
        assert story.page.locator(".loupe-line-promote table").count() >= 1
        story.shot(SHOTS / "3_compared.png", at=".loupe-line-verdict")

        # 5. promote: the new folder is current, complete and recorded under the name
        story.promote()
        now = wb.current_deployment(p, line=LINE)
        assert now.version == version and now.promoted_by == name
        pointer, current = _current_folder(p)
        assert current == now.folder and now.verify() == [] and pointer["changed_by"] == name
        record = json.loads((current / "deployment.json").read_text())
        assert record["version"] == version and record["gate"]["passed"]
        assert (current / record["model"]).stat().st_size > 0
        assert v1.folder.is_dir() and v1.verify() == []  # the previous one is kept intact
        assert _events(p)[-1]["event"] == "promote" and _events(p)[-1]["annotator"] == name
        story.wait("([v]) => document.querySelector(\".loupe-line-fact"
                   "[data-fact='deployment']\").dataset.value === v", arg=[version],
                   what="the status strip naming the new version")
        story.shot(SHOTS / "4_promoted.png", at=".loupe-line-promote-message")

        # 6. roll back: v1 is current again; both events are in the history
        story.rollback()
        back = wb.current_deployment(p, line=LINE)
        assert back.version == "v1" and back.deployment_id == v1.deployment_id
        assert _current_folder(p)[1] == v1.folder and current.is_dir()
        events = _events(p)
        assert [e["event"] for e in events[-2:]] == ["promote", "rollback"]
        assert events[-1]["annotator"] == name
        story.wait("() => document.querySelector(\".loupe-line-fact[data-fact='deployment']\")"
                   ".dataset.value === 'v1'", what="the status strip naming v1 again")
        story.shot(SHOTS / "5_rolled_back.png", at=".loupe-line-promote-message")
        assert external == []
    # beyond the labels: the name, one click per step, one key per image moved on
    assert story.labels == N_LABEL
    assert story.actions <= len(name) + 2 + 1 + (1 + N_LABEL - 1) + 1 + 1 + 1 + 2
