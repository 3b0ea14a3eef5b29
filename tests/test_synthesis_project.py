"""Synthetic samples in a real project: tagged with their recipe, never held out, removable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import workbench as wb
from workbench.analyse.data import annotations
from workbench.demo import create_demo_project
from workbench.store import _db as store


@pytest.fixture
def casing(request):
    name = "syn-" + request.node.name[:40].replace("_", "-")
    p = create_demo_project(name, n_per_class=6, seed=5, overwrite=True, duplicates=0,
                            progress=False)
    yield p
    wb.delete_project(name)


def synthetic_rows(p):
    view = p.dataset.match_tags("synthetic")
    return dict(zip(*view.values(["id", "synthetic.recipe"]), strict=True))


@pytest.mark.parametrize("method", ["procedural", "paste", "augment"])
def test_synthesized_samples_are_tagged_with_their_recipe(casing, method):
    before = set(casing.dataset.values("id"))
    rep = wb.synthesize(casing, target="pit_mark", n=4, base="ok", method=method, seed=3,
                        progress=False)
    assert len(rep.added) == 4 and not set(rep.added) & before
    assert synthetic_rows(casing) == dict.fromkeys(rep.added, rep.recipe_id)
    frame = casing.to_pandas().set_index("sample_id").loc[rep.added]
    assert (frame["label"] == "pit_mark").all() and (frame["split"] == "train").all()
    assert frame["lighting"].notna().all()  # slice values come from the source image
    for sid, path in frame["filepath"].items():
        assert Path(path).is_file()
        with Image.open(path) as image:
            assert image.size == (128, 128)
        history = casing.history(sid)
        assert history.annotator.tolist() == [f"synthesis:{rep.recipe_id}"]
    recipe = casing.dataset[rep.added[0]]["synthetic"]
    assert recipe["method"] == method and recipe["seed"] == 3 and recipe["sources"]
    with Image.open(recipe["mask"]) as mask:  # where the defect is, for a person or a detector
        assert mask.size == (128, 128) and mask.getextrema()[1] == 255
    assert set(recipe["sources"]) <= before
    assert wb.synthetic_recipes(casing)[rep.recipe_id]["n"] == 4


@pytest.mark.slow
def test_synthetic_images_train_but_are_never_held_out_and_no_person_annotated_them(casing):
    rep = wb.synthesize(casing, target="pit_mark", n=6, method="procedural", progress=False)
    mv = wb.train(casing, mode="probe", folds=3, image_size=64, progress=False)
    held = set(mv.oof_predictions()["sample_id"])
    assert not held & set(rep.added)
    assert len(held) == len(casing) - 6  # every real image is held out once
    snapshot = mv.snapshot().set_index("sample_id")
    assert (snapshot.loc[rep.added, "fold"] == -1).all()  # trained on, never scored
    assert not annotations(casing)["annotator"].str.startswith("synthesis:").any()
    assert set(rep.added).isdisjoint(wb.label_issues(casing, mv, tta=False)["sample_id"])


def test_remove_synthetic_takes_out_exactly_one_recipe(casing):
    real = casing.dataset.values("id")
    histories = store.histories(casing.dataset, real)
    first = wb.synthesize(casing, target="scratch", n=3, method="procedural", progress=False)
    second = wb.synthesize(casing, target="dent", n=2, method="augment", progress=False)
    folder = Path(casing.dataset[first.added[0]].filepath).parent
    assert casing.remove_synthetic(first.recipe_id) == 3
    assert not folder.exists()
    assert set(synthetic_rows(casing)) == set(second.added)
    assert sorted(casing.dataset.match_tags("synthetic", bool=False).values("id")) == \
        sorted(real)
    assert store.histories(casing.dataset, real) == histories
    assert list(wb.synthetic_recipes(casing)) == [second.recipe_id]
    with pytest.raises(wb.ProjectError, match="no synthesis 'syn-nope'"):
        casing.remove_synthetic("syn-nope")


def test_the_grid_can_show_only_synthetic_images_for_a_veto(casing):
    from widgets import LabelingGrid

    rep = wb.synthesize(casing, target="pit_mark", n=3, method="procedural", progress=False)
    grid = LabelingGrid(casing, annotator="veto-tester")
    assert "synthetic" in grid.filter_options["tag"]
    grid.filter(tag="synthetic")
    assert sorted(grid.sample_ids) == sorted(rep.added)
    bad = rep.added[0]
    path = Path(casing.dataset[bad].filepath)
    real = casing.dataset.match_tags("synthetic", bool=False).first().id
    n = len(casing)
    grid._on_front_message(grid, {"type": "veto", "ids": [bad, real]}, [])  # key "x"
    assert "only synthetic images can be vetoed" in grid.message and len(casing) == n
    grid.selected = [bad]
    grid._on_front_message(grid, {"type": "veto", "ids": grid.selected}, [])
    assert len(casing) == n - 1 and not path.exists()
    assert sorted(grid.sample_ids) == sorted(rep.added[1:])
    vetoed = wb.synthetic_recipes(casing)[rep.recipe_id]["vetoed"]
    assert [(v["sample_id"], v["by"]) for v in vetoed] == [(bad, "veto-tester")]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"target": "crack"}, "target='crack' is not a class"),
    ({"target": "pit_mark", "method": "gan"}, "method='gan' is not known"),
    ({"target": "ok", "base": "scratch"}, "no procedural painter for 'ok'"),
    ({"target": "pit_mark", "base": "pit_mark"}, "base and target are both"),
    ({"target": "pit_mark", "n": 0}, "n must be an integer"),
    ({"target": "pit_mark", "base": "rust"}, "base='rust' is not a class"),
])
def test_bad_requests_are_refused_and_nothing_is_added(casing, kwargs, message):
    n = len(casing)
    with pytest.raises(wb.ProjectError, match=message):
        wb.synthesize(casing, progress=False, **kwargs)
    assert len(casing) == n
    assert not (casing.folder / "synthetic").exists() or \
        not any((casing.folder / "synthetic").iterdir())


def test_paste_needs_real_images_of_the_target(project, tmp_path):
    for label in ("ok", "dent"):
        (tmp_path / label).mkdir()
        for i in range(3):
            pixels = np.full((32, 32, 3), 100 + 40 * i, dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{label}{i}.png")
    project.import_folder(tmp_path, progress=False)
    project.add_class("pit_mark")
    with pytest.raises(wb.ProjectError, match="starts from real 'pit_mark' images"):
        wb.synthesize(project, target="pit_mark", method="paste", progress=False)


@pytest.mark.slow
def test_improve_class_retrains_and_compares_on_real_held_out_images_only(casing):
    parent = wb.train(casing, mode="probe", folds=3, image_size=64, progress=False)
    real = len(casing)
    out = wb.improve_class(casing, target="pit_mark", n=6, method="procedural",
                           base_version=parent.name, progress=False)
    assert out.parent.name == parent.name and out.child.name != parent.name
    assert out.child.config["image_size"] == 64 and out.child.config["folds"] == 3
    table = out.compare.set_index("class")
    assert list(table.index) == [*parent.classes, "macro"]
    assert table.loc[parent.classes, "n"].sum() == real  # every real image, no synthetic one
    assert table.at["macro", "n"] == real
    for metric in ("recall", "f1"):
        delta = table[f"{metric}_delta"]
        assert np.allclose(delta, table[f"{metric}_child"] - table[f"{metric}_parent"])
        assert (table[f"{metric}_delta_low"] <= delta + 1e-9).all()
        assert (delta <= table[f"{metric}_delta_high"] + 1e-9).all()
    assert out.target_recall_delta == table.at["pit_mark", "recall_delta"]
    assert set(out.synthesis.added).isdisjoint(out.child.oof_predictions()["sample_id"])


def test_class_comparison_matches_a_hand_count():
    import pandas as pd

    from workbench.metrics.compare import class_comparison

    compared = pd.DataFrame({
        "given":       ["a", "a", "a", "a", "b", "b"],
        "predicted_a": ["a", "b", "b", "b", "b", "b"],
        "predicted_b": ["a", "a", "a", "b", "b", "a"],
    })
    table = class_comparison(compared, classes=["a", "b"], n_boot=200).set_index("class")
    assert table.at["a", "recall_a"] == 0.25 and table.at["a", "recall_b"] == 0.75
    assert table.at["b", "recall_delta"] == -0.5
    assert table.at["b", "precision_a"] == pytest.approx(2 / 5)
    assert table.at["macro", "recall_a"] == pytest.approx((0.25 + 1.0) / 2)
    assert table.at["a", "recall_delta_low"] <= 0.5 <= table.at["a", "recall_delta_high"]
    with pytest.raises(ValueError, match="not in classes"):
        class_comparison(compared, classes=["a"])
