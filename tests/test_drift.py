"""Drift checks: the two-sample tests, wb.drift on a real project, its history, the CLI and
the DriftMonitor widget."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance, ImageFilter

import workbench as wb
from workbench.demo import demo_table, write_demo_images
from workbench.metrics import drift_tests


# -- pure tests -------------------------------------------------------------------------------
def test_mmd_test_separates_shifted_sets_and_not_equal_ones():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(120, 16))
    same = rng.normal(size=(40, 16))
    shifted = rng.normal(size=(40, 16)) + np.r_[1.5, np.zeros(15)]
    _, p_same = drift_tests.mmd_test(reference, same, n_permutations=200, normalise=False)
    stat, p_shifted = drift_tests.mmd_test(reference, shifted, n_permutations=200,
                                           normalise=False)
    assert p_same > 0.05
    assert p_shifted <= 1 / 201 + 1e-9 and stat > 0


def test_mmd_false_alarm_rate_is_near_alpha_under_no_drift():
    rng = np.random.default_rng(1)
    p_values = [drift_tests.mmd_test(rng.normal(size=(60, 8)), rng.normal(size=(20, 8)),
                                     n_permutations=99, seed=s)[1] for s in range(60)]
    # A valid permutation test: P(p <= 0.1) <= 0.1; 60 draws allow some slack.
    assert np.mean(np.array(p_values) <= 0.1) <= 0.2


def test_image_properties_see_darkening_and_blur():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(64, 64)).astype(np.uint8)
    base = drift_tests.image_properties(image)
    dark = drift_tests.image_properties((image * 0.5).astype(np.uint8))
    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(2)))
    soft = drift_tests.image_properties(blurred)
    assert dark["brightness"] == pytest.approx(base["brightness"] / 2, rel=0.05)
    assert soft["sharpness"] < base["sharpness"] / 5
    assert (base["width"], base["height"]) == (64, 64)
    with pytest.raises(ValueError, match="2-D image"):
        drift_tests.image_properties(np.zeros((2, 2)))


def test_label_shift_and_property_shift_tables():
    frame = drift_tests.label_shift(["a", "a", "b", "b"], ["a", "a", "a", "c"], ["a", "b", "c"])
    assert list(frame["change"].round(2)) == [0.25, -0.5, 0.25]
    assert frame.attrs["total_variation"] == pytest.approx(0.5)
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"brightness": rng.normal(0.5, 0.05, 200), "contrast": 0.2})
    new = pd.DataFrame({"brightness": rng.normal(0.35, 0.05, 40), "contrast": 0.2})
    shift = drift_tests.property_shift(ref, new, properties=("brightness", "contrast"))
    moved = dict(zip(shift["property"], shift["moved"], strict=True))
    assert moved == {"brightness": True, "contrast": False}
    assert shift.loc[0, "change"] == pytest.approx(-0.3, abs=0.05)


# -- on a project ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def line(tmp_path_factory):
    """A demo project with a probe version, and folders of new images from the same line:
    as they come, darkened by 40 %, blurred, and a mixed bag of problems."""
    project = wb.demo.create_demo_project(f"drift-{os.getpid()}", n_per_class=10, seed=3,
                                          overwrite=True)
    version = wb.train(project, mode="probe", folds=3, image_size=64, progress=False)
    root = tmp_path_factory.mktemp("batches")
    fresh = write_demo_images(root / "fresh", demo_table(n_per_class=6, seed=11), seed=11)
    batches = {"fresh": root / "fresh"}
    for kind in ("dark", "blurred"):
        folder = root / kind
        folder.mkdir()
        for path in fresh:
            with Image.open(path) as image:
                changed = (ImageEnhance.Brightness(image).enhance(0.6) if kind == "dark"
                           else image.filter(ImageFilter.GaussianBlur(3)))
                changed.save(folder / f"{path.parent.name}_{path.name}")
        batches[kind] = folder
    yield project, version, batches
    wb.delete_project(project.name)


def test_images_like_the_training_ones_do_not_drift(line):
    project, version, batches = line
    report = wb.drift(project, version, batches["fresh"], store=False)
    assert not report.drifted
    assert report.p_value >= report.alpha == 0.01
    assert report.n_images == 30 and report.rejected == [] and report.warnings == []
    assert list(report.per_image.columns) == ["filepath", "ood_score", "is_outlier", "label",
                                              "confidence"]
    assert set(report.per_image["label"]) <= set(version.classes)
    assert report.per_image["is_outlier"].mean() < 0.2
    assert not report.shift["moved"].any()


def test_a_darker_line_drifts_and_says_what_moved(line):
    project, version, batches = line
    report = wb.drift(project, version, batches["dark"], store=False)
    assert report.drifted and report.p_value < 0.01
    brightness = report.shift.set_index("property").loc["brightness"]
    assert brightness["moved"] and brightness["change"] == pytest.approx(-0.4, abs=0.1)
    assert "DRIFT" in report.summary() and "brightness" in report.summary()
    tests = report.tests.set_index("test")["p_value"]
    assert tests["image statistics"] < 0.005


def test_blur_drifts_and_its_images_are_out_of_distribution(line):
    project, version, batches = line
    fresh = wb.drift(project, version, batches["fresh"], store=False)
    blurred = wb.drift(project, version, batches["blurred"], store=False)
    assert blurred.drifted
    assert blurred.shift.set_index("property").loc["sharpness", "moved"]
    assert blurred.per_image["ood_score"].median() > fresh.per_image["ood_score"].median()


def test_checks_are_stored_in_the_project_history(line):
    project, version, batches = line
    before = len(project.drift_history())
    calm = wb.drift(project, version, batches["fresh"])
    alarm = wb.drift(project, "v1", list(map(str, sorted(batches["dark"].iterdir()))))
    history = wb.Project.open(project.name).drift_history()
    assert len(history) == before + 2
    latest = history.tail(2)
    assert list(latest["check_id"]) == [calm.check_id, alarm.check_id]
    assert list(latest["drifted"]) == [False, True]
    assert list(latest["n_images"]) == [30, 30]
    assert str(history["time"].dtype).startswith("datetime64")
    reopened = wb.load_check(project, alarm.check_id)
    assert reopened.drifted and reopened.summary() == alarm.summary()
    pd.testing.assert_frame_equal(reopened.per_image, alarm.per_image, check_dtype=False)
    with pytest.raises(wb.ProjectError, match="no drift check"):
        wb.load_check(project, "nope")


def test_a_view_of_training_images_is_a_batch(line):
    project, version, _ = line
    report = wb.drift(project, version, project.dataset.take(20, seed=1), store=False)
    assert report.n_images == 20 and not report.drifted
    assert "view of" in report.batch


def test_unreadable_files_are_skipped_and_named(line, tmp_path):
    project, version, batches = line
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in sorted(batches["fresh"].rglob("*.png"))[:12]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    data = path.read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    report = wb.drift(project, version, folder, store=False)
    assert report.n_images == 12
    reasons = dict(report.rejected)
    assert {Path(p).name for p in reasons} == {"empty.png", "notes.jpg", "cut.png"}
    assert "empty" in reasons[next(p for p in reasons if p.endswith("empty.png"))]
    assert "3 unreadable" in report.summary()
    assert any("only 12 images" in w for w in report.warnings)


def test_bad_batches_get_clear_errors_and_store_nothing(line, tmp_path):
    project, version, batches = line
    before = len(project.drift_history())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        wb.drift(project, version, tmp_path / "empty")
    with pytest.raises(ValueError, match="is empty"):
        wb.drift(project, version, [])
    with pytest.raises(FileNotFoundError, match="not found"):
        wb.drift(project, version, tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        (broken / f"{i}.png").write_bytes(b"\x89PNG junk")
    with pytest.raises(ValueError, match=r"0 readable image.*0\.png"):
        wb.drift(project, version, broken)
    with pytest.raises(ValueError, match="alpha"):
        wb.drift(project, version, batches["fresh"], alpha=5)
    with pytest.raises(TypeError, match="batch must be"):
        wb.drift(project, version, 42)
    with pytest.raises(wb.ProjectError, match="no model version 'v9'"):
        wb.drift(project, "v9", batches["fresh"])
    assert len(project.drift_history()) == before


def test_another_camera_size_and_mode_is_reported(line, tmp_path):
    project, version, batches = line
    folder = tmp_path / "small-grey"
    folder.mkdir()
    for path in sorted(batches["fresh"].rglob("*.png"))[:24]:
        with Image.open(path) as image:
            image.convert("L").resize((64, 48)).save(folder / path.name)
    report = wb.drift(project, version, folder, store=False)
    assert report.n_images == 24
    text = " ".join(report.warnings)
    assert "64x48 px" in text and "128x128 px" in text
    assert "the batch has L images" in text
    assert report.shift.set_index("property").loc["width", "moved"]


# -- command line and widget ---------------------------------------------------------------------
def test_cli_exit_codes_summary_and_json(line, tmp_path, capsys):
    from workbench import cli

    project, _, batches = line
    out = tmp_path / "report.json"
    code = cli.main(["drift", "--project", project.name, "--model", "v1",
                     str(batches["fresh"]), "--json", str(out)])
    printed = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(printed) == 1 and "no drift" in printed[0]
    assert json.loads(out.read_text())["drifted"] is False
    code = cli.main(["drift", "--project", project.name, "--model", "v1",
                     str(batches["dark"]), "--json", str(out)])
    printed = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out.read_text())
    assert code == 3 and "DRIFT" in printed[0]
    assert report["drifted"] is True and len(report["per_image"]) == 30
    assert cli.main(["drift", "--project", project.name, str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err


def test_drift_monitor_draws_checks_and_opens_one_on_click(line):
    from widgets import DriftMonitor

    project, version, batches = line
    wb.drift(project, version, batches["blurred"])
    monitor = DriftMonitor(project, version, n_images=5)
    history = project.drift_history()
    trace = monitor.figure.data[0]
    assert len(trace.y) == len(history) >= 1
    assert monitor.check.check_id == history["check_id"].iloc[-1]
    drifted_at = [i for i, d in enumerate(history["drifted"]) if d]
    calm_at = [i for i, d in enumerate(history["drifted"]) if not d]
    assert trace.marker.color[drifted_at[0]] != trace.marker.color[calm_at[0]]
    # A click on the first point, sent the way plotly's front-end does, opens that check.
    monitor.figure._js2py_pointsCallback = {
        "event_type": "plotly_click",
        "points": {"xs": [1], "ys": [float(trace.y[0])], "point_indexes": [0],
                   "trace_indexes": [0]}}
    assert monitor.check.check_id == history["check_id"].iloc[0]
    first = wb.load_check(project, history["check_id"].iloc[0])
    expected = first.per_image.sort_values("ood_score", ascending=False).head(5)
    assert monitor.selected == list(expected["filepath"])
    assert monitor.detail.value.count("<img") == 5
    report = monitor.run(str(batches["dark"]))
    assert report is not None and report.drifted
    assert len(monitor.figure.data[0].y) == len(history) + 1
    assert "DRIFT" in monitor.detail.value
    assert monitor.run("/no/such/folder") is None
    assert "not found" in monitor.message.value


def test_a_large_training_set_is_sampled_for_the_reference_by_label(line, monkeypatch):
    """Above MAX_REFERENCE training images the reference is a stratified sample (made the
    same way every time), so a check on a 100,000-image project stays quick."""
    from workbench.monitor import drift as drift_module

    project, version, batches = line
    cached = project.folder / "drift" / f"reference_{version.name}.npz"
    cached.unlink(missing_ok=True)
    monkeypatch.setattr(drift_module, "MAX_REFERENCE", 20)
    try:
        report = wb.drift(project, version, batches["fresh"], store=False)
        with np.load(cached) as saved:
            sampled, labels = len(saved["vectors"]), list(saved["labels"])
        assert not report.drifted
    finally:
        cached.unlink(missing_ok=True)  # the other tests use the full reference
    training = version.snapshot()
    assert sampled == len(labels) == 20 < len(training)
    expected = training["label"].value_counts(normalize=True)
    got = pd.Series(labels).value_counts(normalize=True)
    assert (got.reindex(expected.index, fill_value=0) - expected).abs().max() <= 0.1
