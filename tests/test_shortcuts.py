"""Shortcut checks: a class photographed only under dim light is found, in words; an
unplanted project reports nothing; properties measure the camera, not the defect."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

import workbench as wb
from workbench.metrics.shortcuts import image_properties, shortcut_table

CLASSES = ("ok", "scratch", "dent", "pit_mark", "discoloration")


def _render_project(name: str, folder, *, dim_class: str | None, n: int = 20, size: int = 96,
                    seed: int = 0):
    """A project of demo casings, 35 % of them in dim light, or all of ``dim_class``."""
    import workbench as wb
    from workbench.demo.render import render_casing

    rng = np.random.default_rng(seed)
    rows = []
    for label in CLASSES:
        for index in range(n):
            lighting = "dim" if label == dim_class or rng.random() < 0.35 else "bright"
            line, camera = rng.choice(["A", "B", "C"]), rng.choice(["cam1", "cam2"])
            pixels = render_casing(rng, label, lighting=lighting, line=line, camera=camera,
                                   size=size)
            path = folder / label / f"{label}_{index:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
            rows.append({"filepath": str(path), "label": label, "line": line,
                         "camera": camera, "lighting": lighting})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    project = wb.Project.create(name, classes=CLASSES, overwrite=True)
    project.import_csv(folder / "labels.csv", progress=False)
    return project


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return _render_project(f"shortcut-planted-{os.getpid()}",
                           tmp_path_factory.mktemp("planted"), dim_class="dent")


@pytest.fixture(scope="module")
def unplanted(tmp_path_factory):
    return _render_project(f"shortcut-unplanted-{os.getpid()}",
                           tmp_path_factory.mktemp("unplanted"), dim_class=None)


def test_a_class_shot_only_in_dim_light_is_ranked_first_and_said_in_words(planted):
    table = wb.shortcuts(planted)
    assert table.attrs["version"] is None and table.attrs["correction"] == "holm"
    assert set(table["property"].iloc[:2]) == {"lighting", "brightness"}
    top = table.set_index("property").loc[["lighting", "brightness"]]
    assert (top["p_value"] < 0.01).all() and top["is_shortcut"].all()
    assert table["error_p_value"].isna().all()
    note = top.loc["brightness", "note"]
    assert note.startswith("the model may be reading the lighting, not the defect")
    assert "'dent' images are darker" in note
    assert "100% of 'dent' images have lighting 'dim'" in top.loc["lighting", "note"]
    assert not table.set_index("property").loc[["camera", "line", "sharpness"],
                                               "is_shortcut"].any()


def test_without_the_plant_nothing_is_significant(unplanted):
    table = wb.shortcuts(unplanted.name)
    assert (table["p_value"].dropna() >= 0.01).all() and not table["is_shortcut"].any()
    constant = table.set_index("property").loc["size"]
    assert np.isnan(constant["p_value"]) and "nothing to test" in constant["note"]
    assert list(table.columns) == ["property", "kind", "association", "p_value",
                                   "error_association", "error_p_value", "is_shortcut", "note"]


def test_a_versions_held_out_errors_are_tested_too():
    import workbench as wb
    from workbench.demo import create_demo_project

    project = create_demo_project(f"shortcut-demo-{os.getpid()}", n_per_class=12, seed=3,
                                  size=64)
    version = wb.train(project, mode="probe", folds=3, image_size=64, progress=False)
    newest, named = wb.shortcuts(project), wb.shortcuts(project, version.name)
    assert newest.attrs["version"] == named.attrs["version"] == version.name
    tested = newest.dropna(subset=["p_value"])
    assert tested["error_p_value"].notna().all() and tested["error_association"].between(0, 1).all()
    assert newest.attrs["n_predicted"] == newest.attrs["n_labelled"]
    wb.delete_project(project.name)


def test_properties_measure_the_camera_not_the_defect():
    rng = np.random.default_rng(0)
    surface = 120 + 25 * ndimage.gaussian_filter(rng.standard_normal((96, 128)), 0.8)
    scratched = surface.copy()
    scratched[40:42, 10:90] = 250  # a thin bright scratch
    blurred = ndimage.gaussian_filter(surface, 1.5)
    frame = image_properties([surface, scratched, surface * 0.5, blurred,
                              np.dstack([surface] * 3)])
    base = frame.iloc[0]
    assert abs(frame["brightness"][1] - base["brightness"]) < 1
    assert frame["sharpness"][1] == pytest.approx(base["sharpness"], rel=0.05)
    assert frame["brightness"][2] == pytest.approx(base["brightness"] / 2)
    assert frame["sharpness"][2] == pytest.approx(base["sharpness"], rel=0.01)  # exposure
    assert frame["sharpness"][3] < 0.7 * base["sharpness"]
    assert frame.iloc[4].to_dict() == pytest.approx(base.to_dict())
    assert (frame["size"] == 96 * 128).all() and frame["aspect"][0] == pytest.approx(128 / 96)


def test_errors_that_follow_a_slice_are_reported_as_a_weak_slice_not_a_shortcut():
    rng = np.random.default_rng(1)
    n = 300
    labels = rng.choice(["ok", "dent", "scratch"], n)
    lighting = rng.choice(["bright", "dim"], n)
    errors = np.where(lighting == "dim", rng.random(n) < 0.5, rng.random(n) < 0.05)
    properties = pd.DataFrame({"brightness": rng.normal(120, 10, n), "lighting": lighting,
                               "batch": [f"b{i}" for i in range(n)]})
    table = shortcut_table(properties, labels, errors=[bool(e) for e in errors]).set_index(
        "property")
    row = table.loc["lighting"]
    assert row["p_value"] >= 0.01 and row["error_p_value"] < 0.01 and not row["is_shortcut"]
    assert "not a shortcut, but the model's errors follow it: it gets" in row["note"]
    assert "of the lighting 'dim' images wrong" in row["note"]
    assert "too many to test" in table.loc["batch", "note"]
    assert np.isnan(table.loc["batch", "p_value"])


def test_p_values_are_holm_adjusted():
    rng = np.random.default_rng(2)
    labels = np.repeat(["a", "b"], 40)
    shifted = rng.normal(0, 1, 80) + np.where(labels == "a", 1.0, 0.0)
    properties = pd.DataFrame({"x": shifted, "y": rng.normal(0, 1, 80),
                               "z": rng.normal(0, 1, 80)})
    table = shortcut_table(properties, labels).set_index("property")
    from scipy import stats

    raw = stats.kruskal(shifted[labels == "a"], shifted[labels == "b"]).pvalue
    assert table.loc["x", "p_value"] == pytest.approx(min(1.0, 3 * raw))
    assert table.index[0] == "x" and table.attrs["alpha"] == 0.01


def test_bad_inputs_name_the_argument():
    frame = pd.DataFrame({"brightness": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="labels must hold one entry"):
        shortcut_table(frame, ["a", "b"])
    with pytest.raises(ValueError, match="at least two classes"):
        shortcut_table(frame, ["a", "a", None])
    with pytest.raises(ValueError, match="errors must be True"):
        shortcut_table(frame, ["a", "b", "a"], errors=[1, 0, None])
    with pytest.raises(ValueError, match="each column once"):
        shortcut_table(pd.concat([frame, frame], axis=1), ["a", "b", "a"])
    with pytest.raises(ValueError, match="alpha"):
        shortcut_table(frame, ["a", "b", "a"], alpha=2)
    with pytest.raises(ValueError, match="shape"):
        image_properties([np.zeros((2, 2, 2, 2))])


def _write_images(folder, *, seed: int = 0, n: int = 3) -> None:
    folder.mkdir(parents=True)
    for index in range(n):
        pixels = np.full((16, 16), 40 * index + seed, np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")


def test_projects_without_two_labelled_classes_are_refused_by_name(project, tmp_path):
    import workbench as wb

    with pytest.raises(wb.ProjectError, match=f"{project.name!r} has no images"):
        wb.shortcuts(project)
    _write_images(tmp_path / "new")
    project.import_folder(tmp_path / "new", layout="unlabeled", progress=False)
    with pytest.raises(wb.ProjectError, match=f"{project.name!r} has no labelled images"):
        wb.shortcuts(project)
    _write_images(tmp_path / "labelled" / "ok", seed=2)
    project.import_folder(tmp_path / "labelled", progress=False)
    with pytest.raises(wb.ProjectError, match="labelled images of only one class \\('ok'\\)"):
        wb.shortcuts(project)
    _write_images(tmp_path / "more" / "dent", seed=1)
    project.import_folder(tmp_path / "more", progress=False)
    with pytest.raises(wb.ProjectError, match="no model version 'v9'"):
        wb.shortcuts(project, "v9")
    assert wb.shortcuts(project).attrs["n_labelled"] == 6
    broken = tmp_path / "more" / "dent" / "0.png"  # the disk failed after the import, say
    broken.write_bytes(b"not an image any more")
    with pytest.warns(wb.UnreadableImagesWarning, match=f"cannot be read: '{broken}'"):
        table = wb.shortcuts(project)
    assert table.attrs["unreadable"] == [str(broken)] and table.attrs["n_labelled"] == 5
