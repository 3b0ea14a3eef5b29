"""The generated demo project: classes, slices, the inconsistent annotator, faint dim pits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from workbench.demo import ANNOTATORS, CONFUSED_PAIR, DUPLICATES, demo_table
from workbench.demo.render import CLASSES, render_casing


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


@pytest.mark.slow
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


# -- detection demo --------------------------------------------------------------------------
def _iou(a: list[float], b: list[float]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def test_defect_boxes_surround_what_the_painter_changed():
    from workbench.demo.render import render_casing_with_boxes

    for label in CLASSES[1:]:
        for seed in range(4):
            pixels, boxes = render_casing_with_boxes(np.random.default_rng(seed), label)
            # the same generator state gives the classification demo's pixels, unchanged
            assert np.array_equal(pixels, render_casing(np.random.default_rng(seed), label))
            clean = render_casing(np.random.default_rng(seed), "ok")  # same surface, no defect
            changed = np.abs(pixels.astype(int) - clean.astype(int)).max(axis=2) > 25
            inside = np.zeros_like(changed)
            for box in boxes:
                assert box["label"] == label
                x, y, w, h = (round(v * 128) for v in box["bounding_box"])
                inside[y:y + h, x:x + w] = True
            assert boxes and inside.mean() < 0.6, (label, seed)
            assert changed[inside].sum() >= 0.95 * changed.sum(), (label, seed)
    assert render_casing_with_boxes(np.random.default_rng(0), "ok")[1] == []


def test_detection_demo_has_true_boxes_and_a_few_planted_mistakes():
    import workbench as wb
    from workbench.demo import BOX_MISTAKES, INSPECTOR, create_demo_project

    p = create_demo_project("demo-det", n_per_class=10, seed=4, task="detection",
                            overwrite=True)
    try:
        assert p.task == "detection" and p.classes == list(CLASSES[1:])
        assert p.slice_fields == ["line", "camera", "lighting"]
        frame = p.to_pandas().set_index("sample_id")
        assert len(frame) == 50 + DUPLICATES and frame.n_boxes.notna().all()
        ids, truths, mistakes, paths = p.dataset.values(
            ["id", "demo_truth", "demo_mistake", "filepath"])
        given = p.boxes()
        planted = 0
        for sid, truth, mistake, path in zip(ids, truths, mistakes, paths, strict=True):
            true_boxes = [(d.label, d.bounding_box) for d in truth.detections]
            mine = given[given.sample_id == sid]
            boxes = list(zip(mine.label, mine[["x", "y", "w", "h"]].values.tolist(),
                             strict=True))
            folder = Path(path).parent.name
            assert all(label == folder for label, _ in true_boxes)
            assert bool(true_boxes) == (folder != "ok")
            assert p.box_history(sid).annotator.tolist() == [INSPECTOR]
            if mistake is None:
                assert boxes == true_boxes
                continue
            assert mistake in BOX_MISTAKES
            planted += "_copy" not in path
            if mistake == "dropped_box":  # a misfiled copy filed as "ok" loses them all
                assert len(boxes) == (0 if "_copy" in path else len(true_boxes) - 1)
            elif mistake == "wrong_class":
                assert [b for _, b in boxes] == [b for _, b in true_boxes]
                assert [label for label, _ in boxes] != [label for label, _ in true_boxes]
            else:
                assert [label for label, _ in boxes] == [label for label, _ in true_boxes]
                assert min(_iou(a[1], b[1]) for a, b in zip(boxes, true_boxes,
                                                            strict=True)) < 0.5
        assert planted == round(0.08 * 40)  # ~8 % of the 40 images with a defect
    finally:
        wb.delete_project("demo-det")
