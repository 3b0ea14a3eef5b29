"""The line console (``widgets.LineConsole``) on a real store: buttons pressed as a person
would, the store, the job queue and the deployment folders checked after each press."""

from __future__ import annotations

import io
import os
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from PIL import Image

import workbench as wb
from widgets import LineConsole
from workbench.demo import create_demo_project, write_demo_inbox

PROBE = {"mode": "probe", "folds": 3, "image_size": 64, "progress": False}
N_BOOT = 100


@pytest.fixture(scope="module")
def shop():
    """A small demo project: ``v1`` trained before the frozen set was drawn (the gate refuses
    it), ``v2`` and ``v3`` after; ``v2`` is promoted on line A by erin."""
    p = create_demo_project(f"line-console-{os.getpid()}", n_per_class=8, seed=3, size=64,
                            overwrite=True)
    stale = wb.train(p, **PROBE)
    p.freeze_eval(fraction=0.3, annotator="erin")
    champion = wb.train(p, **PROBE)
    candidate = wb.train(p, seed=1, **PROBE)
    wb.promote(p, champion, line="A", annotator="erin", n_boot=N_BOOT)
    yield {"p": p, "stale": stale.name, "champion": champion.name,
           "candidate": candidate.name}
    wb.delete_project(p.name)


def _current(p) -> str:
    return wb.current_deployment(p, line="A").version


def _png(path: str, factor: float = 0.4) -> bytes:
    """An image of the project, darker (a night shift), as PNG bytes."""
    with Image.open(path) as image:
        dark = image.convert("RGB").point(lambda v: int(v * factor))
    buffer = io.BytesIO()
    dark.save(buffer, format="PNG")
    return buffer.getvalue()


def _upload(console: LineConsole, p, n: int = 6, factor: float = 0.4) -> None:
    files = []
    for i, path in enumerate(p.to_pandas()["filepath"].iloc[:n]):
        data = _png(path, factor)
        files.append({"name": f"night {i}.png", "type": "image/png", "size": len(data),
                      "content": memoryview(data), "last_modified": datetime.now(UTC)})
    console.batch.upload.value = tuple(files)


def test_the_status_strip_says_what_the_line_runs(shop):
    console = LineConsole(shop["p"], line="A", n_boot=N_BOOT)
    strip = console.strip.value
    assert f"runs <b>{shop['champion']}</b>" in strip and "promoted by erin" in strip
    assert "frozen-set accuracy <b>" in strip and "No drift check yet" in strip
    assert "No training running" in strip
    assert console.status.frozen_accuracy is not None


def test_without_a_name_nothing_is_written(shop):
    p = shop["p"]
    console = LineConsole(p, line="A", n_boot=N_BOOT)
    jobs, samples, events = len(wb.jobs.list(p)), len(p), len(wb.deployment_history(p))
    console.retrain.button.click()
    assert "Type your name" in console.retrain.message.value
    _upload(console, p)
    console.batch.upload_button.click()
    assert "Type your name" in console.batch.message.value
    console.promote.compare()  # reading needs no name
    assert console.promote.report is not None
    console.promote.promote_button.click()
    assert "Type your name" in console.promote.message.value
    console.promote.rollback_button.click()
    console.promote.confirm_button.click()
    assert len(wb.jobs.list(p)) == jobs and len(p) == samples
    assert len(wb.deployment_history(p)) == events and _current(p) == shop["champion"]


def test_promote_with_a_passing_gate_then_roll_back_with_confirmation(shop):
    p = shop["p"]
    console = LineConsole(p, line="A", annotator="sam", n_boot=N_BOOT)
    promote = console.promote
    assert promote.candidate_picker.value == shop["candidate"]  # the newest first
    assert promote.promote_button.disabled  # nothing compared yet
    promote.compare_button.click()
    assert promote.report.passed, promote.report.summary()
    assert not promote.promote_button.disabled
    assert "the gate <b class=\"loupe-better\">passes</b>" in promote.verdict.value
    assert "Accuracy on the frozen set is not worse" in promote.checks_html.value
    assert "Per class, on the frozen set" in promote.classes_html.value
    assert "Changed answers" in promote.changes_html.value
    promote.promote_button.click()
    assert _current(p) == shop["candidate"], promote.message.value
    assert wb.deployment_history(p, line="A")["annotator"].iloc[-1] == "sam"
    assert f"runs <b>{shop['candidate']}</b>" in console.strip.value  # refreshed

    promote.rollback_button.click()  # first a question, nothing changed yet
    assert promote.confirm_box.layout.display == "flex"
    assert _current(p) == shop["candidate"]
    promote.keep_button.click()
    assert promote.confirm_box.layout.display == "none" and _current(p) == shop["candidate"]
    promote.rollback_button.click()
    promote.confirm_button.click()
    assert _current(p) == shop["champion"], promote.message.value
    last = wb.deployment_history(p, line="A").iloc[-1]
    assert (last["event"], last["annotator"]) == ("rollback", "sam")
    timeline = wb.line_timeline(p, line="A")
    assert timeline["kind"].iloc[0] == "rollback" and timeline["who"].iloc[0] == "sam"
    assert {"promotion", "new version"} <= set(timeline["kind"])
    assert "rollback" in console.timeline.value


def test_a_failed_gate_is_forced_only_with_a_written_reason(shop):
    p = shop["p"]
    console = LineConsole(p, line="A", annotator="sam", n_boot=N_BOOT)
    promote = console.promote
    promote.candidate_picker.value = shop["stale"]
    promote.compare_button.click()
    assert not promote.report.passed
    assert promote.promote_button.disabled
    assert "never trained on the frozen or golden images" in promote.verdict.value
    assert promote.force_box.layout.display == "flex"
    promote.force_button.click()  # no reason
    assert "needs a written reason" in promote.message.value
    assert _current(p) == shop["champion"]
    promote.reason.value = "night shift, supervisor ok"
    promote.force_button.click()
    deployment = wb.current_deployment(p, line="A")
    assert deployment.version == shop["stale"] and deployment.forced
    assert deployment.reason == "night shift, supervisor ok"
    assert deployment.promoted_by == "sam"
    assert "forced: night shift" in console.strip.value
    promote.rollback_button.click()
    promote.confirm_button.click()
    assert _current(p) == shop["champion"]


def test_a_concurrent_change_is_refused_with_a_clear_message(shop):
    p = shop["p"]
    console = LineConsole(p, line="A", annotator="sam", n_boot=N_BOOT)
    console.promote.compare_button.click()
    assert console.promote.report.passed
    wb.promote(p, shop["candidate"], line="A", annotator="erin", n_boot=N_BOOT)  # meanwhile
    console.promote.promote_button.click()
    assert "changed while you were deciding" in console.promote.message.value
    assert wb.current_deployment(p, line="A").promoted_by == "erin"
    wb.rollback(p, line="A", annotator="erin")
    assert _current(p) == shop["champion"]


def test_retrain_queues_the_line_versions_configuration_and_cancels(shop):
    p = shop["p"]
    console = LineConsole(p, line="A", n_boot=N_BOOT)
    console.annotator = "sam"
    console.retrain.button.click()
    job = console.retrain.job
    assert job is not None and job.state == "queued" and job.submitted_by == "sam"
    arguments = job.arguments
    assert (arguments["mode"], arguments["folds"], arguments["image_size"]) == ("probe", 3, 64)
    assert console.retrain.ticker.active and console.retrain.button.disabled
    assert "job" in console.retrain.stage.value
    console.retrain.button.click()  # one at a time
    assert "still queued" in console.retrain.message.value
    assert len(wb.jobs.list(p).query("state == 'queued'")) == 1
    console.retrain.cancel_button.click()
    assert job.state == "cancelled" and job.cancelled_by == "sam"
    assert not console.retrain.ticker.active and not console.retrain.button.disabled
    timeline = wb.line_timeline(p)
    assert "training" in set(timeline["kind"])


def test_an_upload_is_checked_for_drift_and_labelled_least_familiar_first(shop):
    p = shop["p"]
    console = LineConsole(p, line="A", annotator="sam", n_boot=N_BOOT)
    batch = console.batch
    batch.max_upload_bytes = 100
    _upload(console, p)
    batch.upload_button.click()
    assert "at most 0.0 MB" in batch.message.value and "Not imported" in batch.message.value
    batch.max_upload_bytes = 50 * 1024 * 1024
    samples, checks = len(p), len(p.drift_history())
    _upload(console, p, factor=0.35)
    batch.upload_button.click()
    assert "6 image(s) added" in batch.message.value, batch.message.value
    assert len(p) == samples + 6 and len(p.drift_history()) == checks + 1
    ranked = batch.ranked
    assert len(ranked) == 6 and ranked["ood_score"].is_monotonic_decreasing
    grid = batch.grid
    assert grid.sample_ids == list(ranked["sample_id"])
    grid.assign(p.classes[0], [grid.sample_ids[0]])
    history = p.history(grid.sample_ids[0])
    assert history["annotator"].iloc[-1] == "sam"
    assert "Last drift check" in console.strip.value
    kinds = set(wb.line_timeline(p)["kind"])
    assert {"import", "drift check", "label edits"} <= kinds


def test_an_inbox_batch_is_imported_under_the_name(shop):
    p = shop["p"]
    folder = write_demo_inbox(p, n=6, day=date(2026, 12, 5))
    console = LineConsole(p, line="A", n_boot=N_BOOT)
    batch = console.batch
    assert batch.batch_picker.value is not None and not batch.import_button.disabled
    samples = len(p)
    batch.import_button.click()
    assert "Type your name" in batch.message.value and len(p) == samples
    console.annotator = "sam"
    batch.import_button.click()
    assert "6 image(s) added" in batch.message.value, batch.message.value
    assert len(p) == samples + 6
    assert p.dataset.match({"batch": folder.name}).count() == 6


def test_images_the_line_sent_back_come_first_least_confident_first(shop, tmp_path):
    """``loupe-edge watch`` leaves doubtful images with their verdicts in
    ``out/feedback/<date>/``; after ``p.import_feedback`` the console offers them."""
    import json

    p = shop["p"]
    folder = tmp_path / "out" / "feedback" / "2026-12-06"
    folder.mkdir(parents=True)
    confidences = [0.55, 0.31, 0.42]
    for i, (path, confidence) in enumerate(zip(p.to_pandas()["filepath"].iloc[10:13],
                                                confidences, strict=True)):
        (folder / f"sent_{i}.png").write_bytes(_png(path, 0.3))
        (folder / f"sent_{i}.png.json").write_text(json.dumps(
            {"label": "ok", "confidence": confidence, "ood_score": 0.5,
             "deployment_id": "d1", "why": [f"confidence {confidence:.2f} < 0.60"]}))
    console = LineConsole(p, line="A", annotator="erin", n_boot=N_BOOT)
    assert console.batch.feedback_button.layout.display == "none"  # nothing sent back yet
    report = p.import_feedback(tmp_path / "out", progress=False)
    assert len(report.added) == 3
    console.refresh()
    button = console.batch.feedback_button
    assert button.layout.display == "flex" and button.description.endswith("(3)")
    button.click()
    grid = console.batch.grid
    names = [Path(path).name for path in
             p.dataset.select(grid.sample_ids, ordered=True).values("filepath")]
    assert names == ["sent_1.png", "sent_2.png", "sent_0.png"]  # 0.31, 0.42, 0.55
    assert grid.title.startswith("3 image(s) sent back by the line")
    grid.assign(p.classes[1], grid.sample_ids[:1])  # labelled: it leaves the queue
    console.refresh()
    assert button.description.endswith("(2)")
