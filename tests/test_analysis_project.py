"""Error analysis on real demo projects: a real FiftyOne store, real embeddings, real probes.

Two projects are trained once per session (probe, 5 folds, 128 px): the demo as generated
(three annotators, a dim-light slice, misfiled identical copies), and the same images
labelled by one inspector with 10 % of the labels flipped on purpose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import workbench as wb
from workbench.demo import CONFUSED_PAIR, create_demo_project

TRAIN = {"mode": "probe", "folds": 5, "image_size": 128, "progress": False}


@pytest.fixture(scope="session")
def demo():
    """The generated demo (30 images per class) and a probe version v1."""
    p = create_demo_project("analysis-demo", n_per_class=30, seed=1, overwrite=True)
    return p, wb.train(p, **TRAIN)


@pytest.fixture(scope="session")
def flipped(demo, tmp_path_factory):
    """The demo's images labelled once by an inspector, 10 % of labels flipped (seeded).

    Returns the project, a probe version, the planted flips, and every wrong label (the
    flips, the demo's misfiled copies and its few consensus mistakes)."""
    source, _ = demo
    truth = dict(zip(*source.dataset.values(["filepath", "demo_truth"]), strict=True))
    given = dict(zip(*source.dataset.values(["filepath", "ground_truth.label"]), strict=True))
    paths = sorted(truth)
    rng = np.random.default_rng(7)
    clean = [path for path in paths if given[path] == truth[path]]
    planted = set(rng.choice(clean, size=len(paths) // 10, replace=False))
    classes = source.classes
    rows = []
    for path in paths:
        label = given[path]
        if path in planted:
            label = str(rng.choice([c for c in classes if c != truth[path]]))
        rows.append({"filepath": path, "label": label, "annotator": "inspector"})
    csv = tmp_path_factory.mktemp("flipped") / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    p = wb.Project.create("analysis-flipped", classes=classes, overwrite=True)
    p.import_csv(csv, progress=False)
    by_path = dict(zip(*p.dataset.values(["filepath", "id"]), strict=True))
    wrong = {by_path[r["filepath"]] for r in rows if r["label"] != truth[r["filepath"]]}
    return p, wb.train(p, **TRAIN), {by_path[path] for path in planted}, wrong


# -- confusion and classes ----------------------------------------------------------------
@pytest.mark.slow
def test_confusion_counts_every_held_out_sample_in_class_order(demo):
    p, mv = demo
    matrix = wb.confusion(p, mv)
    assert list(matrix.index) == list(matrix.columns) == p.classes
    assert matrix.to_numpy().sum() == len(p)
    accuracy = np.trace(matrix.to_numpy()) / matrix.to_numpy().sum()
    assert accuracy == pytest.approx(mv.metrics["accuracy"], abs=0.02)


def test_confusion_samples_open_the_cell_most_confident_mistake_first(demo):
    p, mv = demo
    matrix = wb.confusion(p, mv)
    off = matrix.where(~np.eye(len(matrix), dtype=bool)).stack()
    true, pred = off.idxmax()
    ids = wb.confusion_samples(p, mv, true=true, pred=pred)
    assert len(ids) == matrix.loc[true, pred] > 0
    rows = mv.oof_predictions().set_index("sample_id").loc[ids]
    assert (rows["label"] == pred).all()
    assert list(rows["confidence"]) == sorted(rows["confidence"], reverse=True)
    assert set(p.dataset.select(ids).values("ground_truth.label")) == {true}


def test_class_report_names_what_each_class_is_confused_with(demo):
    p, mv = demo
    report = wb.class_report(p, mv).set_index("class")
    assert list(report.index) == p.classes
    assert report["support"].sum() == len(p)
    matrix = wb.confusion(p, mv)
    for name in p.classes:
        assert report.loc[name, "recall"] == pytest.approx(
            matrix.loc[name, name] / matrix.loc[name].sum())


# -- slices -------------------------------------------------------------------------------
def test_dim_lighting_is_reported_worse_with_an_interval_that_excludes_the_rest(demo):
    p, mv = demo
    report = wb.slice_report(p, mv, by=["lighting", "line"])
    dim = report.set_index("slice").loc["lighting=dim"]
    bright = report.set_index("slice").loc["lighting=bright"]
    assert dim["gap"] < 0 < bright["gap"]
    assert dim["excludes_rest"] and dim["ci_high"] < dim["rest_accuracy"]
    assert report.iloc[0]["slice"].count("lighting=dim") == 1
    assert {"lighting=dim & line=A", "lighting=bright & line=C"} <= set(report["slice"])


def test_discovered_slices_point_at_dim_light(demo):
    p, mv = demo
    found = wb.discover_slices(p, mv, k=3)
    assert 1 <= len(found) <= 3
    assert "lighting=dim" in found.iloc[0]["slice"]
    assert found.iloc[0]["error_rate"] > 1 - mv.metrics["accuracy"]


# -- annotators ---------------------------------------------------------------------------
@pytest.mark.parametrize("with_model", [False, True], ids=["votes", "crowdlab"])
def test_the_inconsistent_annotator_ranks_last(demo, with_model):
    p, mv = demo
    report = wb.agreement(p, mv if with_model else None)
    assert report.annotators.iloc[-1]["annotator"] == "carol"
    assert set(report.annotators.iloc[-1]["most_confused"].split(" → ")) == set(CONFUSED_PAIR)
    review = report.to_review()
    assert len(review) and (review["agreement"] < 0.8).all()
    assert list(review["agreement"]) == sorted(review["agreement"])
    assert 0 < report.alpha < 1
    stored = p.dataset.match(wb_field("agreement.needs_review")).count()
    assert stored == len(review)


def wb_field(name):
    from fiftyone import ViewField as F

    return F(name) == True  # noqa: E712  (a MongoDB expression, not a Python comparison)


# -- label issues -------------------------------------------------------------------------
@pytest.mark.slow
def test_planted_label_flips_rank_at_the_top(flipped):
    p, mv, planted, wrong = flipped
    issues = wb.label_issues(p, mv)
    assert len(issues) == len(p) and list(issues["rank"]) == list(range(1, len(p) + 1))
    top = set(issues["sample_id"][: 2 * len(wrong)])
    assert len(top & planted) >= 0.8 * len(planted)
    flagged = set(issues.loc[issues["is_issue"], "sample_id"])
    # both images of an identical pair filed under two labels are flagged (nobody can tell
    # from the pixels which label is wrong): the correctly filed one counts as found too
    pairs = set(issues.loc[issues["reason"].str.startswith("identical to"), "sample_id"])
    assert len(flagged & (wrong | pairs)) >= 0.7 * len(flagged)
    assert len(flagged & wrong) >= 0.7 * len(wrong)
    stored = p.dataset.match(wb_field(f"label_issues_{mv.name}.is_issue"))
    assert set(stored.values("id")) == flagged
    assert "label_issues_v1" in set(p.analysis_runs()["key"])


@pytest.mark.slow
def test_identical_images_with_conflicting_labels_are_issues_and_duplicates(flipped):
    p, mv, _, _ = flipped
    pairs = wb.near_duplicates(p)
    exact = pairs[(pairs["kind"] == "exact") & pairs["conflicting"]]
    copies = {path for path in p.dataset.values("filepath") if path.endswith("_copy.png")}
    assert len(exact) == len(copies) == 3
    assert set(exact["filepath"]) | set(exact["other_filepath"]) >= copies
    issues = wb.label_issues(p, mv, tta=False, neighbours=False, write=False).set_index(
        "sample_id")
    for row in exact.itertuples():
        assert issues.loc[row.sample_id, "is_issue"] and issues.loc[row.other_id, "is_issue"]
        assert f"identical to {Path(row.other_filepath).name}" in issues.loc[row.sample_id,
                                                                                "reason"]


def test_label_issues_need_out_of_fold_predictions(demo):
    p, _ = demo
    single = wb.train(p, mode="probe", folds=1, image_size=128, progress=False)
    before = set(p.analysis_runs()["key"])
    with pytest.raises(wb.ProjectError, match="folds"):
        wb.label_issues(p, single)
    assert set(p.analysis_runs()["key"]) == before


def test_a_missing_slice_field_says_which_fields_exist(demo):
    p, mv = demo
    with pytest.raises(wb.ProjectError, match=r"'shift'.*lighting"):
        wb.slice_report(p, mv, by=["shift"])


# -- data: outliers, advice, card -----------------------------------------------------------
def test_a_foreign_image_is_the_top_outlier(tmp_path):
    p = create_demo_project("analysis-outlier", n_per_class=4, seed=3, duplicates=0,
                            overwrite=True)
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    added = p.import_folder(tmp_path, layout="unlabeled", progress=False).added
    scores = wb.outliers(p)
    assert scores.iloc[0]["sample_id"] == added[0] and scores.iloc[0]["is_outlier"]
    assert scores["is_outlier"].sum() <= 3
    assert p.dataset[added[0]]["outliers"]["rank"] == 1


def test_data_advice_ranks_classes_by_expected_gain(demo):
    p, mv = demo
    advice = wb.data_advice(p, mv)
    assert sorted(advice["class"]) == sorted(p.classes)
    assert list(advice["gain"]) == sorted(advice["gain"], reverse=True)
    counts = p.to_pandas()["label"].value_counts()
    assert all(advice.set_index("class")["n"] == counts.reindex(advice["class"]).to_numpy())
    report = wb.class_report(p, mv).set_index("class")
    row = advice.iloc[0]
    assert row["recall"] == pytest.approx(report.loc[row["class"], "recall"])
    assert row["recall_at_2x"] >= row["recall"]
    assert row["class"] in row["recommendation"]


def test_data_advice_refuses_a_class_left_with_one_image_and_writes_nothing(project,
                                                                          tmp_path):
    rng = np.random.default_rng(0)
    for c, name in enumerate(("a", "b", "c")):
        for i in range(4):
            pixels = rng.integers(0, 120, (48, 48, 3), dtype=np.uint8)
            pixels[..., c] += 120
            (tmp_path / name).mkdir(exist_ok=True)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    project.import_folder(tmp_path, progress=False)
    mv = wb.train(project, mode="probe", folds=2, image_size=64, progress=False)
    c_ids = project.dataset.match(wb_label("c")).values("id")
    project.annotate(c_ids[1:], "a", annotator="import")
    with pytest.raises(wb.ProjectError, match=r"class\(es\) c have fewer than 2"):
        wb.data_advice(project, mv)
    assert project.analysis_runs().empty


def wb_label(name):
    from fiftyone import ViewField as F

    return F("ground_truth.label") == name


def test_datasheet_renders_the_projects_facts(demo, tmp_path):
    p, mv = demo
    wb.agreement(p)
    text = wb.datasheet(p, tmp_path / "card.md")
    assert text == (tmp_path / "card.md").read_text()
    assert text.startswith("#") and p.name in text
    for needle in ("Composition", "Labelling", "Known issues", "carol", "lighting", "dim",
                   mv.name, "Krippendorff"):
        assert needle in text, needle
    counts = p.to_pandas()["label"].value_counts()
    assert f"| {counts.idxmax()} " in text
