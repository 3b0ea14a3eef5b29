"""The generated demo project: classes, slices, the inconsistent annotator, faint dim pits."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from workbench.demo import ANNOTATORS, CONFUSED_PAIR, demo_table
from workbench.demo_render import CLASSES


def test_demo_project_has_the_promised_shape(demo_project):
    frame = demo_project.to_pandas()
    assert len(frame) == 50
    assert demo_project.classes == list(CLASSES)
    assert demo_project.slice_fields == ["line", "camera", "lighting"]
    assert set(frame.line) == {"A", "B", "C"} and set(frame.lighting) == {"bright", "dim"}
    history = demo_project.history(frame.sample_id[0])
    assert sorted(history.annotator) == sorted(ANNOTATORS)
    truth = demo_project.dataset.values("demo_truth")
    assert sorted(set(truth)) == sorted(CLASSES)


def test_one_annotator_confuses_dent_and_discoloration():
    table = demo_table(n_per_class=60, seed=3)
    pair = table[table.demo_truth.isin(CONFUSED_PAIR)]
    swap_rate = {who: float((pair[who] != pair.demo_truth).mean()) for who in ANNOTATORS}
    assert swap_rate["carol"] > 0.3
    assert max(swap_rate["alice"], swap_rate["bob"]) < 0.15
    other = table[~table.demo_truth.isin(CONFUSED_PAIR)]
    assert float((other.carol != other.demo_truth).mean()) < 0.15


def test_demo_is_reproducible_from_its_seed():
    pd.testing.assert_frame_equal(demo_table(seed=5), demo_table(seed=5))
    assert not demo_table(seed=5).equals(demo_table(seed=6))


def _local_contrast(path: str) -> float:
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    return float(np.percentile(np.abs(grey - np.median(grey)), 99.5) / (grey.std() + 1e-6))


def test_pit_marks_are_fainter_in_dim_light(demo_project):
    frame = demo_project.to_pandas()
    frame["truth"] = demo_project.dataset.values("demo_truth")
    pits = frame[frame.truth == "pit_mark"]
    bright = pits[pits.lighting == "bright"].filepath.map(_local_contrast)
    dim = pits[pits.lighting == "dim"].filepath.map(_local_contrast)
    assert len(dim) >= 1 and len(bright) >= 1
    brightness = {lighting: np.mean([np.asarray(Image.open(p).convert("L")).mean()
                                     for p in group.filepath])
                  for lighting, group in frame.groupby("lighting")}
    assert brightness["dim"] < 0.75 * brightness["bright"]
