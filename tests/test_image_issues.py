"""Image-quality checks on a real project of real image files, and the pure rules alone.

One project per module: twelve clean demo casings (64 px, bright light) and one copy each
darkened, overexposed, blurred, flattened, grey, oddly sized and oddly shaped, plus one
file corrupted after import. Each planted image must be flagged with its issue and nothing
else; the clean ones with nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

import workbench as wb
from workbench.analyse.image_quality import UnreadableImagesWarning
from workbench.demo.render import render_casing
from workbench.metrics.image_quality import (
    ISSUES,
    count_image_issues,
    image_quality_issues,
    measure_image,
)
from workbench.store import _db as store

PLANTED = ("dark", "overexposed", "blurry", "low_information", "grayscale", "odd_size",
           "odd_aspect")


def _casing(seed: int, size: int = 64) -> np.ndarray:
    return render_casing(np.random.default_rng(seed), ("ok", "scratch", "dent")[seed % 3],
                         lighting="bright", line="ABC"[seed % 3], size=size)


def _planted(issue: str, pixels: np.ndarray) -> Image.Image:
    values = pixels.astype(np.float64)
    if issue == "dark":
        values = values * 0.15
    elif issue == "overexposed":
        values = values * 6
    elif issue == "low_information":
        values = values.mean(axis=(0, 1)) + (values - values.mean(axis=(0, 1))) * 0.04
    elif issue == "blurry":
        return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(2.5))
    elif issue == "grayscale":
        return Image.fromarray(pixels).convert("L")
    elif issue == "odd_size":
        return Image.fromarray(_casing(99, size=160))
    elif issue == "odd_aspect":
        return Image.fromarray(_casing(98, size=128)[48:80])  # 128 x 32: a 64 px area
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(project, {issue or "clean_<i>" or "corrupt": sample id}, corrupt file's path)."""
    folder = tmp_path_factory.mktemp("quality")
    for i in range(12):
        Image.fromarray(_casing(i)).save(folder / f"clean_{i}.png")
    for j, issue in enumerate(PLANTED):
        _planted(issue, _casing(20 + j)).save(folder / f"{issue}.png")
    Image.fromarray(_casing(40)).save(folder / "corrupt.png")
    p = wb.Project.create(f"quality-{os.getpid()}", overwrite=True)
    p.import_folder(folder, layout="unlabeled", progress=False)
    ids, paths = p.dataset.values(["id", "filepath"])
    by_name = {Path(path).stem: sid for sid, path in zip(ids, paths, strict=True)}
    corrupt = folder / "corrupt.png"  # broken after import: the disk failed, say
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image any more")
    yield p, by_name, str(corrupt)
    wb.delete_project(p.name)


@pytest.fixture(scope="module")
def result(planted):
    p, _, _ = planted
    with pytest.warns(UnreadableImagesWarning, match="corrupt.png"):
        return wb.image_issues(p)


def test_each_planted_image_is_flagged_with_its_issue_only(planted, result):
    _, by_name, _ = planted
    flagged = result[result["is_issue"]].groupby("sample_id")["issue"].apply(set)
    for issue in PLANTED:
        assert flagged.get(by_name[issue]) == {issue}, issue
    clean = [by_name[f"clean_{i}"] for i in range(12)]
    assert not set(flagged.index) & set(clean), flagged[flagged.index.isin(clean)]


def test_the_long_frame_has_one_row_per_image_and_issue(planted, result):
    _, by_name, _ = planted
    assert list(result.columns) == ["sample_id", "issue", "score", "is_issue"]
    assert len(result) == (len(by_name) - 1) * len(ISSUES)
    assert result["score"].between(0, 1).all()
    assert set(result.attrs["thresholds"]) == set(ISSUES)
    score = result.set_index(["issue", "sample_id"])["score"]
    clean = [by_name[f"clean_{i}"] for i in range(12)]
    for issue in PLANTED:  # lower is worse: below the threshold, the clean images above
        threshold = result.attrs["thresholds"][issue]
        assert score[issue, by_name[issue]] < threshold <= score[issue].loc[clean].min()


def test_an_unreadable_file_is_named_and_skipped(planted, result):
    _, by_name, corrupt = planted
    assert result.attrs["unreadable"] == [corrupt]
    assert by_name["corrupt"] not in set(result["sample_id"])
    counts = count_image_issues(result)
    assert counts == {**dict.fromkeys(ISSUES, 0), **dict.fromkeys(PLANTED, 1),
                      "unreadable": 1}


def test_the_run_is_stored_and_views_filter_on_it(planted, result):
    from fiftyone import ViewField as F

    p, by_name, _ = planted
    runs = store.analysis_runs(p.dataset)
    assert runs["image_issues"]["method"] == "image_issues"
    assert runs["image_issues"]["config"]["unreadable"] == result.attrs["unreadable"]
    dark = p.dataset.match(F("image_issues.issues").contains("dark"))
    assert dark.values("id") == [by_name["dark"]]
    stored = p.dataset[by_name["blurry"]]["image_issues"]
    assert stored["issues"] == ["blurry"] and stored["n_issues"] == 1
    assert 0 <= stored["blurry_score"] < result.attrs["thresholds"]["blurry"]
    assert p.dataset[by_name["corrupt"]]["image_issues"] is None
    assert p.dataset.match(F("image_issues.n_issues") > 0).count() == len(PLANTED)


def test_the_datasheet_counts_them_and_the_grid_filters_on_them(planted, result):
    from widgets import LabelingGrid

    p, by_name, _ = planted
    card = wb.datasheet(p)
    assert f"images with an image quality issue | {len(PLANTED)}" in card
    assert "image quality: blurry | 1" in card and "unreadable images | 1" in card
    grid = LabelingGrid(p, annotator="tester")
    assert grid.filter_options["quality"][0] == "any"
    assert set(grid.filter_options["quality"][1:]) == set(PLANTED)
    grid.filter(quality="overexposed")
    assert [item["id"] for item in grid.items] == [by_name["overexposed"]]
    grid.filter(quality="any")
    assert grid.total == len(PLANTED)


def test_by_name_without_writing_leaves_the_stored_run(planted, result):
    p, _, _ = planted
    before = store.analysis_runs(p.dataset)["image_issues"]["time"]
    with pytest.warns(UnreadableImagesWarning):
        again = wb.image_issues(p.name, write=False)
    pd.testing.assert_frame_equal(again, result)
    assert store.analysis_runs(p.dataset)["image_issues"]["time"] == before


def test_an_empty_project_is_an_error_naming_it(project):
    with pytest.raises(wb.ProjectError, match=project.name):
        wb.image_issues(project)


# -- the pure rules -------------------------------------------------------------------------
def _frame(images: list) -> pd.DataFrame:
    return pd.DataFrame([{"sample_id": f"s{i}", **measure_image(image)}
                         for i, image in enumerate(images)])


def _flagged(frame: pd.DataFrame, issue: str) -> list[str]:
    issues = image_quality_issues(frame)
    return issues.loc[issues["is_issue"] & (issues["issue"] == issue), "sample_id"].tolist()


def test_grayscale_is_an_issue_only_where_it_is_unusual():
    colour = [_casing(i) for i in range(8)]
    grey = [np.asarray(Image.fromarray(_casing(10 + i)).convert("L")) for i in range(8)]
    assert _flagged(_frame([*colour, grey[0]]), "grayscale") == ["s8"]
    # all grey (like NEU steel, stored as RGB with equal channels): nothing to flag
    assert _flagged(_frame([np.repeat(g[..., None], 3, axis=2) for g in grey]),
                    "grayscale") == []
    assert _flagged(_frame([*grey, colour[0]]), "grayscale") == []


def test_a_data_set_dark_as_a_whole_is_not_flagged_but_its_darkest_image_is():
    dim = [(_casing(i) * 0.25).astype(np.uint8) for i in range(8)]  # below cleanvision's 0.32
    assert _flagged(_frame(dim), "dark") == []
    assert _flagged(_frame([*dim, (_casing(9) * 0.05).astype(np.uint8)]), "dark") == ["s8"]


def test_a_line_scan_data_set_is_not_oddly_shaped_as_a_whole():
    strips = [_casing(i, size=128)[:32] for i in range(6)]
    assert _flagged(_frame(strips), "odd_aspect") == []
    assert _flagged(_frame([*strips, _casing(7)]), "odd_aspect") == ["s6"]


def test_measure_image_reads_any_mode_and_dtype():
    rgb = _casing(0)
    base = measure_image(rgb)
    assert measure_image(Image.fromarray(rgb)) == base
    assert measure_image(rgb.astype(np.float64) / 255) == pytest.approx(base)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    assert measure_image(rgba) == pytest.approx(base)
    wide = measure_image(rgb.astype(np.uint16) * 257)
    assert wide["brightness_perc_99"] == pytest.approx(base["brightness_perc_99"])
    assert measure_image(Image.fromarray(rgb).convert("P"))["saturation"] > 0
    assert measure_image(Image.fromarray(rgb).convert("L"))["saturation"] == 0
    assert measure_image(np.full((40, 30), 128, np.uint8))["sharpness"] == 0
    big = measure_image(np.asarray(Image.fromarray(rgb).resize((1024, 768))))
    assert (big["width"], big["height"]) == (1024, 768)
    with pytest.raises(ValueError, match="shape"):
        measure_image(np.zeros((4, 4, 2)))


def test_bad_input_names_what_is_missing():
    with pytest.raises(ValueError, match="sharpness"):
        image_quality_issues(pd.DataFrame({"sample_id": ["a"], "width": [1.0]}))
    frame = _frame([_casing(0), _casing(1)])
    frame["sample_id"] = "same"
    with pytest.raises(ValueError, match="unique"):
        image_quality_issues(frame)
    empty = image_quality_issues(frame.iloc[:0])
    assert empty.empty and list(empty.columns) == ["sample_id", "issue", "score", "is_issue"]
    with pytest.raises(ValueError, match="lacks"):
        count_image_issues(pd.DataFrame({"x": [1]}))
