"""Grouped folds and leaks: near-copies never straddle a split, and wb.leaks shows where
they would (issue 27)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

import workbench as wb
from workbench.demo.render import render_casing
from workbench.metrics.near_copies import near_copy_pairs, pixel_signature

CLASSES = ("ok", "scratch", "dent")
PROBE = {"mode": "probe", "image_size": 64, "progress": False}


def _copy(image: Image.Image, kind: str) -> Image.Image:
    if kind == "mirror":
        return ImageOps.mirror(image)
    if kind == "crop":
        w, h = image.size
        return image.crop((4, 4, w - 4, h - 4)).resize((w, h))
    return image  # "jpeg": the same picture re-encoded


def _planted(folder: Path, n_per_class: int = 12, copies: int = 6,
             parts: int | None = None) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Rows of filepath, label, part_id: ``n_per_class`` rendered casings per class and
    ``copies`` near-copies (mirror, crop, JPEG re-encode); the (original, copy) path pairs."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    rows, pairs = [], []
    for c, label in enumerate(CLASSES):
        for i in range(n_per_class):
            path = folder / f"{label}_{i}.png"
            Image.fromarray(render_casing(rng, label, size=64)).save(path)
            part = f"P{(c * n_per_class + i) // 3}" if parts is None else f"P{i % parts}"
            rows.append((str(path), label, part))
    for k in range(copies):
        source, label, part = rows[k * 5]
        kind = ("mirror", "crop", "jpeg")[k % 3]
        target = folder / f"copy{k}_{kind}.jpg"
        _copy(Image.open(source).convert("RGB"), kind).save(target, quality=85)
        rows.append((str(target), label, part))
        pairs.append((source, str(target)))
    return pd.DataFrame(rows, columns=["filepath", "label", "part_id"]), pairs


def _project(project: wb.Project, tmp_path: Path, **kwargs) -> list[tuple[str, str]]:
    rows, pairs = _planted(tmp_path / "images", **kwargs)
    rows.to_csv(tmp_path / "labels.csv", index=False)
    project.import_csv(tmp_path / "labels.csv", progress=False)
    return pairs


def _ids(project: wb.Project) -> dict[str, str]:
    ids, paths = project.dataset.values(["id", "filepath"])
    return dict(zip(paths, ids, strict=True))


def test_signatures_match_mirrors_crops_and_reencodings_but_not_other_images(tmp_path):
    rows, pairs = _planted(tmp_path, n_per_class=6, copies=3)
    signatures = np.stack([pixel_signature(Image.open(p)) for p in rows["filepath"]])
    found = near_copy_pairs(list(rows["filepath"]), signatures)
    assert {tuple(sorted(p)) for p in pairs} == \
        {tuple(sorted(p)) for p in zip(found["sample_id"], found["other_id"], strict=True)}
    assert (found["found_by"] == "pixels").all() and (found["correlation"] >= 0.99).all()


def test_near_copies_share_a_fold_and_ungrouped_folds_leak(project, tmp_path):
    pairs = _project(project, tmp_path)
    ids = _ids(project)
    loose = wb.train(project, group_copies=False, **PROBE)
    leaked = wb.leaks(project, loose)
    straddling = {tuple(sorted((ids[a], ids[b]))) for a, b in pairs}
    found = {tuple(sorted(p)) for p in zip(leaked["sample_id"], leaked["other_id"],
                                           strict=True)}
    folds = loose.snapshot().set_index("sample_id")["fold"]
    split = {p for p in straddling if folds[p[0]] != folds[p[1]]}
    assert split, "with 5 folds some planted copies must land in different folds"
    assert split <= found
    assert leaked["where"].str.match(r"fold \d / fold \d").all()

    grouped = wb.train(project, **PROBE)
    groups = grouped.config["groups"]
    assert groups["near_copies"] and groups["near_copy_pairs"] >= len(pairs)
    assert groups["grouped_images"] >= 2 * len(pairs)
    snapshot = grouped.snapshot().set_index("sample_id")
    for a, b in pairs:
        assert snapshot.loc[ids[a], "fold"] == snapshot.loc[ids[b], "fold"]
        assert snapshot.loc[ids[a], "group"] == snapshot.loc[ids[b], "group"]
    assert wb.leaks(project, grouped).empty
    assert wb.leaks(project).attrs["version"] == grouped.name

    from widgets import HonestNumbers  # the report dashboard's section says it in words

    said = HonestNumbers(project, loose).check()
    assert said["leaks"][0].startswith(f"{len(split)} near-copy pair(s) fold / fold")
    assert HonestNumbers(project, grouped).check()["leaks"][0].startswith("no near-copies")
    assert said["image quality"] == ["not checked yet: run wb.image_issues(project)."]


def test_group_by_keeps_a_part_in_one_fold(project, tmp_path):
    _project(project, tmp_path, copies=0)
    mv = wb.train(project, group_by="part_id", **PROBE)
    parts = dict(zip(*project.dataset.values(["id", "part_id"]), strict=True))
    snapshot = mv.snapshot()
    snapshot["part"] = snapshot["sample_id"].map(parts)
    assert (snapshot.groupby("part")["fold"].nunique() == 1).all()
    assert mv.config["groups"]["group_by"] == "part_id"
    assert mv.config["groups"]["n_groups"] == snapshot["part"].nunique()


def test_training_leaves_out_near_copies_of_the_frozen_set(project, tmp_path):
    pairs = _project(project, tmp_path)
    ids = _ids(project)
    original, copy = pairs[0]
    project.freeze_eval([ids[original]], annotator="lead")
    before = wb.leaks(project)  # no version yet: the labelled copy would be trained on
    assert before.attrs["version"] is None
    row = before[(before["sample_id"] == ids[copy]) | (before["other_id"] == ids[copy])]
    assert list(row["where"]) == ["train / frozen set"]
    mv = wb.train(project, **PROBE)
    assert ids[copy] not in set(mv.snapshot()["sample_id"])
    assert mv.config["groups"]["dropped_near_held_back"] >= 1
    assert wb.leaks(project, mv).empty


def test_bad_group_by_gets_a_clear_error(project, tmp_path):
    rows, _ = _planted(tmp_path / "images", n_per_class=6, copies=0)
    rows["serial"] = [f"S{i}" for i in range(len(rows))]
    rows["batch"] = ["big" if i < 10 else f"b{i}" for i in range(len(rows))]
    rows.to_csv(tmp_path / "labels.csv", index=False)
    project.import_csv(tmp_path / "labels.csv", progress=False)
    with pytest.raises(ValueError, match="group_by='part' is not a field of project"):
        wb.train(project, group_by="part", **PROBE)
    with pytest.raises(ValueError, match="group_by='serial' has a different value on every"):
        wb.train(project, group_by="serial", **PROBE)
    with pytest.raises(ValueError, match="batch='big' holds 10 of 18 images, more than a fold"):
        wb.train(project, group_by="batch", folds=3, **PROBE)
    assert project.models().empty  # nothing written by a refused run


def test_leaks_of_an_empty_project_say_so(project):
    with pytest.raises(wb.ProjectError, match="has no images"):
        wb.leaks(project)


def test_leaks_name_and_skip_an_image_that_cannot_be_read(project, tmp_path):
    _project(project, tmp_path, n_per_class=4, copies=3)
    broken = Path(project.dataset.first().filepath)
    broken.write_bytes(b"not an image any more")
    with pytest.warns(UserWarning, match=f"cannot be read: '{broken}'"):
        found = wb.leaks(project)
    assert found.attrs["unreadable"] == [str(broken)]
    assert str(broken) not in set(found["filepath"]) | set(found["other_filepath"])
