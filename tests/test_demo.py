"""The generated demo project: classes, slices, the inconsistent annotator, faint dim pits."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from workbench.demo import ANNOTATORS, CONFUSED_PAIR, DUPLICATES, demo_table
from workbench.demo_render import CLASSES, render_casing


def test_demo_project_has_the_promised_shape(demo_project):
    frame = demo_project.to_pandas()
    assert len(frame) == 50 + DUPLICATES
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


def _pit_strength(pixels: np.ndarray) -> float:
    """How far the darkest spots sit below their local background, relative to brightness."""
    grey = pixels.astype(np.float64).mean(axis=2)
    background = ndimage.median_filter(grey, size=7)
    return float(np.percentile(background - grey, 99.9) / (grey.mean() + 1e-6))


def test_pit_marks_are_faint_in_dim_light():
    def margin(lighting: str) -> float:
        rng = np.random.default_rng(11)
        pits = [_pit_strength(render_casing(rng, "pit_mark", lighting=lighting))
                for _ in range(20)]
        clean = [_pit_strength(render_casing(rng, "ok", lighting=lighting)) for _ in range(20)]
        return float(np.mean(pits) - np.mean(clean))

    assert margin("bright") > 0.03  # clearly visible in bright light
    assert margin("dim") < 0.5 * margin("bright")


def test_dim_images_are_darker(demo_project):
    frame = demo_project.to_pandas()
    brightness = {lighting: np.mean([np.asarray(Image.open(p).convert("L")).mean()
                                     for p in group.filepath])
                  for lighting, group in frame.groupby("lighting")}
    assert brightness["dim"] < 0.75 * brightness["bright"]


def test_misfiled_copies_have_the_pixels_of_their_original_and_another_label(tmp_path):
    from workbench.demo import write_demo_images

    table = demo_table(n_per_class=3, seed=2, duplicates=2)
    copies = table[table.duplicate_of.notna()]
    assert len(copies) == 2 and len(table) == 17
    paths = dict(zip(table.filename, write_demo_images(tmp_path, table, seed=2, size=32),
                     strict=True))
    for copy in copies.itertuples():
        original = table[table.filename == copy.duplicate_of].iloc[0]
        assert copy.alice == copy.bob == copy.carol != original.demo_truth
        assert copy.demo_truth == original.demo_truth
        assert paths[copy.filename].read_bytes() != paths[copy.duplicate_of].read_bytes()
        assert np.array_equal(np.asarray(Image.open(paths[copy.filename])),
                              np.asarray(Image.open(paths[copy.duplicate_of])))
