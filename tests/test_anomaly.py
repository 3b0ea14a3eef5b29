"""Anomaly versions: learn from good parts only, score and localise what is not normal,
on small generated surfaces of several sizes and modes (a real backbone, a real bank)."""

from __future__ import annotations

import os
import subprocess
import sys

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
