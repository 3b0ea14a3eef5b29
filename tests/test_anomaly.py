"""Anomaly versions: learn from good parts only, score and localise what is not normal,
on small generated surfaces of several sizes and modes (a real backbone, a real bank)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import workbench as wb
from workbench.train.anomaly.train import NotEnoughNormalImagesError

#: Where the planted scratch runs on a defect image: columns 40-43 of the middle third.
SCRATCH = (slice(60, 120), slice(40, 44))


def _surface(rng: np.random.Generator, height: int = 180, width: int = 96) -> np.ndarray:
    """A brushed grey surface: vertical streaks and noise, a little different each time."""
    streaks = rng.normal(0, 6, width)[None, :].repeat(height, 0)
    noise = rng.normal(0, 4, (height, width))
    return np.clip(128 + streaks + noise + rng.normal(0, 3), 0, 255)


def _write(folder, name: str, pixels: np.ndarray, mode: str = "RGB") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    grey = Image.fromarray(pixels.astype(np.uint8), mode="L")
    (grey if mode == "L" else grey.convert(mode)).save(folder / name)


@pytest.fixture
def surfaces(project, tmp_path):
    """12 good surfaces labelled ``ok`` (some grey, some wider), 4 scratched ones labelled
    ``scratch``; two more of each unlabelled in ``new/``."""
    rng = np.random.default_rng(0)
    for i in range(12):
        size = (180, 96) if i % 3 else (200, 128)
        _write(tmp_path / "in" / "ok", f"ok{i}.png", _surface(rng, *size),
               mode="L" if i % 4 == 0 else "RGB")
    for i in range(6):
        pixels = _surface(rng)
        pixels[SCRATCH] = 30
        folder = tmp_path / "in" / "scratch" if i < 4 else tmp_path / "new"
        _write(folder, f"scratch{i}.png", pixels)
    for i in range(2):
        _write(tmp_path / "new", f"ok{i}.png", _surface(rng))
    project.import_folder(tmp_path / "in", progress=False)
    return project, tmp_path


def test_an_anomaly_version_learns_from_good_parts_and_points_at_the_defect(surfaces):
    p, folder = surfaces
    mv = wb.train(p, task="anomaly", normal="ok", image_size=96, progress=False)
    assert mv.task == "anomaly" and mv.classes == ["ok", "anomaly"]
    metrics = mv.metrics
    assert metrics["n_normal"] == 12 and metrics["n_defect"] == 4
    assert metrics["auroc"] >= 0.9  # the scratches score above the good parts
    assert "percentile of 12 out-of-fold normal scores" in metrics["threshold_basis"]
    snapshot = mv.snapshot()
    # defects are scored, never trained on: no fold holds them
    assert (snapshot[snapshot["label"] == "scratch"]["fold"] == -1).all()
    assert (snapshot[snapshot["label"] == "ok"]["fold"] >= 0).all()
    new = sorted(str(f) for f in (folder / "new").iterdir())
    frame = mv.predict(new, progress=False)
    assert list(frame.columns) == ["filepath", "anomaly_score", "label", "confidence",
                                   "heatmap"]
    by_name = frame.set_index(frame["filepath"].map(os.path.basename))
    assert by_name.loc["scratch4.png", "anomaly_score"] > by_name.loc["ok0.png",
                                                                      "anomaly_score"]
    assert set(frame["label"]) <= {"ok", "anomaly"}
    assert by_name.loc["scratch4.png", "label"] == "anomaly"
    # the heatmap has the image's size and is hottest on the scratch
    scratched = str(folder / "new" / "scratch4.png")
    values = mv.heatmap(scratched)
    assert values.shape == (180, 96) and values.dtype == np.float32
    row, column = np.unravel_index(int(values.argmax()), values.shape)
    assert 50 <= row <= 130 and 25 <= column <= 60
    png = Image.open(by_name.loc["scratch4.png", "heatmap"])
    assert png.size == (96, 180)
    listed = p.models()
    assert listed["name"].tolist() == [mv.name] and listed["mode"].tolist() == ["patchcore"]


def test_an_anomaly_version_reopens_in_a_new_process(surfaces):
    p, folder = surfaces
    mv = wb.train(p, task="anomaly", image_size=64, progress=False)
    path = str(folder / "new" / "scratch5.png")
    here = float(mv.predict([path], progress=False)["anomaly_score"].iloc[0])
    code = ("import workbench as wb, sys; mv = wb.Project.open(sys.argv[1]).model(sys.argv[2]);"
            "print(float(mv.predict([sys.argv[3]], progress=False)['anomaly_score'].iloc[0]))")
    done = subprocess.run([sys.executable, "-c", code, p.name, mv.name, path],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) == pytest.approx(here, rel=1e-5)


def test_bad_input_gets_specific_errors(surfaces, tmp_path):
    p, _ = surfaces
    with pytest.raises(ValueError, match=r"normal='good' is not a labelled class.*ok, scratch"):
        wb.train(p, task="anomaly", normal="good", progress=False)
    ids, labels = p.dataset.values(["id", "ground_truth.label"])
    nine = p.dataset.select([i for i, label in zip(ids, labels, strict=True)
                             if label == "ok"][:9])
    with pytest.raises(NotEnoughNormalImagesError, match=r"at least 10 labelled 'ok' images;"
                       r" .* has 9"):
        wb.train(p, task="anomaly", view=nine, progress=False)
    with pytest.raises(ValueError, match="does not apply to an anomaly model"):
        wb.train(p, task="anomaly", epochs=3, progress=False)
    with pytest.raises(ValueError, match="normal='ok' applies to task='anomaly'"):
        wb.train(p, normal="ok", progress=False)
    assert p.models().empty  # nothing half-written
    mv = wb.train(p, task="anomaly", image_size=64, progress=False)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"broken\.png.*cannot be read as an image"):
        mv.predict([str(broken)], progress=False)


def test_an_exported_anomaly_model_scores_and_maps_like_the_version(surfaces, tmp_path,
                                                                     monkeypatch, capsys):
    from loupe_edge.anomaly import EdgeAnomaly
    from loupe_edge.predictor import main as edge_main

    from workbench.deploy import anomaly_export

    p, folder = surfaces
    mv = wb.train(p, task="anomaly", image_size=64, progress=False)
    new = sorted(str(f) for f in (folder / "new").iterdir())
    expected = mv.predict(new, progress=False)
    for format, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        path = wb.export(mv, format, tmp_path / f"ad{suffix}")
        edge = wb.EdgePredictor(path)  # the line's loader picks the anomaly predictor
        assert isinstance(edge, EdgeAnomaly) and edge.normal == "ok"
        assert edge.threshold == pytest.approx(mv.metrics["threshold"])
        got = edge.predict(new, heatmaps=True)
        np.testing.assert_allclose([row["anomaly_score"] for row in got],
                                   expected["anomaly_score"], rtol=1e-4)
        assert [row["label"] for row in got] == expected["label"].tolist()
        scratched = new[[Path(f).name for f in new].index("scratch4.png")]
        np.testing.assert_allclose(got[new.index(scratched)]["heatmap"],
                                   mv.heatmap(scratched), rtol=1e-3, atol=1e-3)
    # from a shell: one JSON line per image, a corrupt image named with exit status 1
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG but not really")
    assert edge_main([str(tmp_path / "ad.onnx"), new[0], str(broken)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert '"anomaly_score"' in lines[0] and "broken.png" in lines[1]
    # a bank larger than the stated limit: said so, how to coreset it down, nothing written
    monkeypatch.setattr(anomaly_export, "MAX_EXPORT_PATCHES", len(mv.anomaly.bank) - 1)
    with pytest.raises(wb.LoupeError, match=r"memory bank holds .* at most .*coreset="):
        wb.export(mv, "onnx", tmp_path / "too-big.onnx")
    assert not (tmp_path / "too-big.onnx").exists()


def test_the_anomaly_demo_starts_from_good_parts_and_finds_a_defect_labelled_good():
    from workbench.demo import create_demo_project

    p = create_demo_project(f"anomaly-demo-{os.getpid()}", n_per_class=12, size=64,
                            task="anomaly", overwrite=True)
    try:
        frame = p.to_pandas()
        truth = dict(zip(*p.dataset.values(["id", "demo_truth"]), strict=True))
        labelled = frame[frame["label"].notna()]
        assert set(labelled["label"]) == {"ok"} and len(labelled) == 12  # good parts only
        assert {truth[s] for s in frame.loc[frame["label"].isna(), "sample_id"]} == {
            "scratch", "dent", "pit_mark", "discoloration"}  # defects unlabelled, truth kept
        first = wb.train(p, task="anomaly", image_size=64, progress=False)
        unlabelled = frame[frame["label"].isna()]
        scores = first.predict(unlabelled["filepath"].tolist(), progress=False)
        assert (scores["label"] == "anomaly").mean() >= 0.75  # most defects flagged
        # a defect filed as a good part by mistake: the next version's issues put it first
        wrong = unlabelled["sample_id"].iloc[int(scores["anomaly_score"].to_numpy().argmax())]
        p.annotate(wrong, "ok", annotator="erin")
        second = wb.train(p, task="anomaly", image_size=64, progress=False)
        issues = wb.label_issues(p, second)
        assert len(issues) == 13 and set(issues["given"]) == {"ok"}
        assert issues["sample_id"].iloc[0] == wrong and bool(issues["is_issue"].iloc[0])
        assert issues["suggested"].iloc[0] == "anomaly" and issues["rank"].iloc[0] == 1
        assert issues["anomaly_score"].is_monotonic_decreasing
        # the review queue shows the worst first, with its heatmap over it (key h hides it)
        from widgets import IssueQueue

        queue = IssueQueue(p, second, annotator="erin")
        assert queue.current["sample_id"] == wrong and queue.has_heatmaps
        assert queue.heat.startswith("data:image/png;base64,")
        queue.overlay = False
        assert queue.heat == "" and queue.image.startswith("data:image/")
        with pytest.raises(wb.ProjectError, match="cannot say which defect"):
            queue.accept()  # "anomaly" is no class: the inspector names the defect
        assert queue.choose(truth[wrong]) == truth[wrong]
        assert p.to_pandas().set_index("sample_id").loc[wrong, "label"] == truth[wrong]
    finally:
        wb.delete_project(p.name)


def test_an_anomaly_version_goes_through_the_gate_to_the_line(tmp_path):
    """Frozen set with a few labelled defects, gate, promotion, and the line's inspector
    rejecting a defect by its anomaly score."""
    from loupe_edge import Inspector

    from workbench.demo import create_demo_project
    from workbench.deploy import line_state

    p = create_demo_project(f"anomaly-line-{os.getpid()}", n_per_class=16, size=64,
                            task="anomaly", overwrite=True)
    try:
        ids, truth, labels = p.dataset.values(["id", "demo_truth", "ground_truth.label"])
        defects = [s for s, t, given in zip(ids, truth, labels, strict=True)
                   if given is None and t != "ok"]
        for sid in defects[::4]:  # 16 defects labelled with their truth
            p.annotate(sid, truth[ids.index(sid)], annotator="erin")
        frozen = p.freeze_eval(fraction=0.25, annotator="erin")
        assert len(frozen) >= 5
        mv = wb.train(p, task="anomaly", image_size=64, progress=False)
        assert not set(mv.snapshot()["sample_id"]) & set(frozen)  # never trained on them
        report = wb.gate(p, mv, line="A")
        checks = report.checks.set_index("check")
        assert bool(checks.loc["onnx_parity", "passed"]), checks.loc["onnx_parity", "detail"]
        assert checks.loc["onnx_parity", "figure"] <= 1e-4  # relative score difference
        assert report.passed, report.summary()
        # the frozen defects count as "anomaly": the version is scored as the line runs it
        assert checks.loc["accuracy", "figure"] >= 0.6, checks.loc["accuracy", "detail"]
        # with labelled defects, the threshold by the cost of each mistake
        point = wb.operating_point(p, mv, costs={"escape": 50, "false_reject": 1},
                                   annotator="erin")
        assert point.task == "anomaly" and point.n_defect >= 8 and 0 < point.threshold < 1
        limit = point.anomaly_score_threshold
        assert limit == pytest.approx(mv.metrics["threshold"] * point.threshold
                                      / (1 - point.threshold))
        decided = point.decide(mv.predict([p.dataset[s].filepath for s in defects[:8]],
                                          progress=False))
        assert ((decided["decision"] == "reject")
                == (decided["anomaly_score"] >= limit)).all()
        deployment = wb.promote(p, mv, line="A", annotator="erin")
        assert deployment.version == mv.name
        inspector = Inspector(line_state.root(p.folder), "A")
        scores = mv.predict([p.dataset[s].filepath for s in defects[1:4]], progress=False)
        worst = defects[1:4][int(scores["anomaly_score"].to_numpy().argmax())]
        verdict = inspector.inspect_bytes(Path(p.dataset[worst].filepath).read_bytes())
        assert verdict["version"] == mv.name
        assert verdict["decision"] == "reject" and verdict["anomaly_score"] >= limit
        assert verdict["threshold"] == pytest.approx(limit)  # the line applies the point
        assert verdict["anomaly_score"] == pytest.approx(float(scores["anomaly_score"].max()),
                                                         rel=1e-4)
        # drift against what it learned from: the good parts
        batch = [p.dataset[s].filepath for s in defects[:12]]
        drift = wb.drift(p, mv, batch, write=False)
        assert set(drift.per_image["label"]) <= {"ok", "anomaly"}
        assert drift.n_images == 12
    finally:
        wb.delete_project(p.name)


def test_the_anomaly_map_shows_the_worst_first_with_its_patch_and_the_nearest_normal(
        surfaces):
    from widgets import AnomalyMap

    p, folder = surfaces
    mv = wb.train(p, task="anomaly", normal="ok", image_size=96, progress=False)
    scratched = str(folder / "new" / "scratch4.png")
    found = mv.nearest_normal(scratched)
    x0, y0, x1, y1 = found["box"]  # the worst patch covers the planted scratch
    assert x0 <= 43 and x1 >= 40 and y0 <= 120 and y1 >= 60
    assert found["score"] == pytest.approx(float(mv.predict([scratched], progress=False)
                                                 ["anomaly_score"].iloc[0]), rel=1e-5)
    assert Path(found["normal_filepath"]).parent.name == "ok"
    nx0, ny0, nx1, ny1 = found["normal_box"]
    assert 0 <= nx0 < nx1 and 0 <= ny0 < ny1

    new = sorted(str(f) for f in (folder / "new").iterdir())
    shown = AnomalyMap(mv, new)
    scores = shown.frame["anomaly_score"].tolist()
    assert scores == sorted(scores, reverse=True) and len(scores) == 4
    assert Path(shown.current["filepath"]).name.startswith("scratch")  # worst first
    assert "anomaly" in shown.header.value and shown.previous.disabled
    with_heat = shown.picture.value
    shown.toggle.value = False  # the overlay off: the picture changes, the image stays
    assert shown.picture.value != with_heat and shown.index == 0
    shown.next.click()
    assert shown.index == 1 and "image 2 of 4" in shown.header.value
    for _ in range(5):
        shown.next.click()
    assert shown.index == 3 and shown.next.disabled
    assert Image.open(io.BytesIO(shown.normal.value)).width == 160
    with pytest.raises(ValueError, match="anomaly version"):
        AnomalyMap(wb.train(p, mode="probe", folds=2, image_size=32, progress=False))


def test_the_labeling_grid_lays_the_heatmap_over_its_thumbnails(surfaces):
    import base64

    from widgets import LabelingGrid

    p, _ = surfaces
    mv = wb.train(p, task="anomaly", normal="ok", image_size=96, progress=False)
    grid = LabelingGrid(p, annotator="erin", heatmaps=mv, thumb_size=90)
    assert grid.has_heatmaps and all(item["heat"] == "" for item in grid.items)
    grid.overlay = True  # the button or key h in the page
    heat = {item["name"]: item["heat"] for item in grid.items}
    assert all(uri.startswith("data:image/png;base64,") for uri in heat.values())
    alpha = np.asarray(Image.open(io.BytesIO(base64.b64decode(
        heat["scratch0.png"].split(",", 1)[1]))))[..., 3]
    assert alpha.shape == (90, 48)  # the thumbnail's shape: longest side 90, aspect kept
    rows, columns = np.nonzero(alpha >= alpha.max() * 0.8)  # the hottest part: the scratch
    assert 25 <= rows.mean() <= 65 and 15 <= columns.mean() <= 30
    grid.overlay = False
    assert all(item["heat"] == "" for item in grid.items)
    from widgets import Workbench  # the dashboard's Label tab on an anomaly version

    assert Workbench(p, annotator="erin").open_tab("Label").has_heatmaps
    classifier = wb.train(p, mode="probe", folds=2, image_size=32, progress=False)
    with pytest.raises(ValueError, match="heatmaps must be an anomaly version"):
        LabelingGrid(p, annotator="erin", heatmaps=classifier)
