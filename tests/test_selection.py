"""Choosing what to label: cover (TypiClust over slices) and active (uncertainty, folds,
ActiveLab, or a head on the labels so far), near-duplicates and junk left out, the stored
run, the grid."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from workbench.improve.selection import RUN_KEY, next_to_label, suggest_labels
from workbench.metrics.coverage import (
    disagreement_scores,
    diverse_top,
    greedy_by_score,
    junk_outliers,
    k_center_greedy,
    margin_scores,
    stratified_allocation,
    typical_clusters,
    typicality,
)
from workbench.store.project import Project, ProjectError, delete_project

SIZE = 64


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """The demo (10 per class, 3 annotators) with 6 images per class unlabelled again, one
    unlabelled image tagged synthetic, one unlabelled image imported a second time with other
    bytes, one labelled image the annotators split three ways, and a probe version."""
    import workbench as wb
    from workbench.demo import create_demo_project

    p = create_demo_project(f"sel-{os.getpid()}", n_per_class=10, seed=3, overwrite=True)
    frame = p.to_pandas()
    real = frame[~frame["filepath"].str.contains("_copy")]
    hidden = [sid for _, group in real.groupby("label") for sid in group["sample_id"].iloc[:6]]
    for who in ("alice", "bob", "carol"):
        p.withdraw(hidden, annotator=who)
    synthetic = hidden[0]
    p.dataset.select([synthetic]).tag_samples("synthetic")
    original = hidden[1]
    source = frame.set_index("sample_id").at[original, "filepath"]
    folder = tmp_path_factory.mktemp("copy")
    Image.open(source).convert("RGB").save(folder / "again.png", compress_level=9)
    p.import_folder(folder, layout="unlabeled", progress=False)
    copy = next(sid for sid, path in zip(*p.dataset.values(["id", "filepath"]), strict=True)
                if path.endswith("again.png"))
    split = real[real["label"].notna() & ~real["sample_id"].isin(hidden)]["sample_id"].iloc[0]
    for who, label in (("alice", "ok"), ("bob", "dent"), ("carol", "scratch")):
        p.annotate(split, label, annotator=who)
    mv = wb.train(p, mode="probe", folds=3, image_size=SIZE, progress=False)
    yield {"p": p, "mv": mv, "synthetic": synthetic, "original": original, "copy": copy,
           "split": split}
    delete_project(p.name)


def _labelled(p: Project) -> set[str]:
    frame = p.to_pandas()
    return set(frame.loc[frame["label"].notna(), "sample_id"])


# -- cover ---------------------------------------------------------------------------------------
def test_cover_is_deterministic_and_never_suggests_labelled_or_synthetic(pool):
    p = pool["p"]
    first = suggest_labels(p, n=12, seed=4, image_size=SIZE, write=False)
    again = suggest_labels(p, n=12, seed=4, image_size=SIZE, write=False)
    assert first.sample_ids == again.sample_ids and len(first) == 12
    frame = first.to_frame()
    assert list(frame.columns) == ["sample_id", "filepath", "reason", "score", "rank"]
    assert list(frame["rank"]) == list(range(1, 13))
    assert not set(first.sample_ids) & _labelled(p)
    assert pool["synthetic"] not in first.sample_ids
    assert frame["reason"].str.startswith("most typical of a group of").all()
    assert (first.strategy, first.seed, first.n) == ("cover", 4, 12)


def test_cover_without_slices_goes_to_groups_no_labelled_image_covers(pool):
    p = pool["p"]
    pick = suggest_labels(p, n=3, image_size=SIZE, slice_fields=[], write=False)
    frame = pick.to_frame()
    assert frame["reason"].str.contains("with no labelled image").all()
    assert (frame["score"] > 0).all()
    from workbench.train.embeddings import embed_project

    emb = embed_project(p, image_size=SIZE, progress=False)
    unit = emb.vectors / np.linalg.norm(emb.vectors, axis=1, keepdims=True)
    row = {sid: i for i, sid in enumerate(emb.sample_ids)}
    labelled = [row[s] for s in _labelled(p) if s not in {pool["synthetic"]}]
    distance = 1 - (unit[row[pick.sample_ids[0]]] @ unit[labelled].T).max()
    assert f"(distance {distance:.2f} to the nearest labelled" in frame.at[0, "reason"]


def test_cover_represents_every_slice_value(pool):
    p = pool["p"]
    frame = p.to_pandas()
    candidates = frame[frame["label"].isna() & (frame["sample_id"] != pool["synthetic"])]
    fields = ["line", "camera", "lighting"]
    # the second copy (imported without slice values) is a value "(none)" of each field
    values = {(f, v) for f in fields for v in candidates[f].fillna("(none)")}
    pick = suggest_labels(p, n=len(values), image_size=SIZE, write=False)
    chosen = frame.set_index("sample_id").loc[pick.sample_ids, fields].fillna("(none)")
    assert {(f, v) for f in fields for v in chosen[f]} == values
    assert any("stratified over line, camera, lighting" in note for note in pick.notes)


def test_a_second_copy_of_an_image_is_skipped_not_suggested(pool):
    p = pool["p"]
    pick = suggest_labels(p, n=100, image_size=SIZE, write=False)
    pair = {pool["original"], pool["copy"]}
    assert len(pair & set(pick.sample_ids)) == 1
    skipped = pick.skipped.set_index("sample_id")
    (left_out,) = pair - set(pick.sample_ids)
    (kept,) = pair & set(pick.sample_ids)
    assert skipped.at[left_out, "kind"] == "near_duplicate"
    assert skipped.at[left_out, "reason"].startswith(f"near-duplicate of {kept}")
    # n above the candidates: every usable candidate, and a note saying so
    unlabelled = set(p.to_pandas().query("label != label")["sample_id"]) - {pool["synthetic"]}
    assert set(pick.sample_ids) | set(pick.skipped["sample_id"]) == unlabelled
    assert any(note.startswith("asked for 100, found") for note in pick.notes)


def test_suggestion_opens_in_the_labeling_grid_in_rank_order(pool):
    from widgets.label.grid import LabelingGrid

    p = pool["p"]
    pick = suggest_labels(p, n=7, seed=1, image_size=SIZE, write=False)
    grid = LabelingGrid(p, view=pick.view())
    assert grid.sample_ids == pick.sample_ids
    assert list(pick.view().values("id")) == pick.sample_ids


# -- active --------------------------------------------------------------------------------------
def test_active_ranks_what_the_model_is_unsure_about(pool):
    p, mv = pool["p"], pool["mv"]
    pick = suggest_labels(p, n=5, strategy="active", model=mv, write=False)
    assert pick.model == mv.name and len(pick) == 5
    frame = pick.to_frame()
    assert (np.diff(frame["score"].to_numpy()) <= 1e-9).all()
    assert frame["reason"].str.startswith("model unsure").all()
    assert not set(pick.sample_ids) & _labelled(p)
    unlabelled = sorted(set(p.to_pandas().query("label != label")["sample_id"])
                        - {pool["synthetic"]})
    probs = mv.predict(p.dataset.select(unlabelled, ordered=True), progress=False)
    margin = margin_scores(probs[mv.classes].to_numpy()).set_index(probs["sample_id"])["margin"]
    chosen = margin.loc[pick.sample_ids]
    assert chosen.mean() < margin.drop(pick.sample_ids).mean()


def test_active_without_a_model_fits_a_head_on_the_labels_so_far(pool, project):
    from workbench.train.classification.probe import fit_head, head_probabilities
    from workbench.train.embeddings import embed_project

    p = pool["p"]
    pick = suggest_labels(p, n=5, strategy="active", seed=1, image_size=SIZE, write=False)
    again = suggest_labels(p, n=5, strategy="active", seed=1, image_size=SIZE, write=False)
    assert pick.sample_ids == again.sample_ids and len(pick) == 5 and pick.model is None
    assert any(note.startswith("no model given: a probe head") for note in pick.notes)
    frame = pick.to_frame()
    assert frame["reason"].str.startswith("model unsure").all()
    assert not set(pick.sample_ids) & _labelled(p)
    emb = embed_project(p, image_size=SIZE, progress=False)
    table = p.to_pandas().set_index("sample_id")
    synthetic = table["tags"].map(lambda tags: "synthetic" in (tags or []))
    labels = table["label"].reindex(emb.sample_ids)
    known = (labels.notna() & ~synthetic.reindex(emb.sample_ids)).to_numpy()
    classes = sorted(labels[known].unique())
    head = fit_head(emb.vectors[known], labels[known].map(classes.index).to_numpy(),
                    len(classes))
    probs = head_probabilities(head, emb.vectors)
    margin = pd.Series(margin_scores(probs)["margin"].to_numpy(), index=emb.sample_ids)
    unlabelled = margin[~known & ~synthetic.reindex(emb.sample_ids).to_numpy()]
    assert unlabelled.loc[pick.sample_ids].mean() < unlabelled.drop(pick.sample_ids).mean()
    with pytest.raises(ProjectError, match="labelled images of at least two classes"):
        suggest_labels(project, n=2, strategy="active")


def test_active_with_several_annotators_asks_a_second_opinion_on_a_split_vote(pool):
    p, mv = pool["p"], pool["mv"]
    pick = suggest_labels(p, n=10, strategy="active", model=mv.name, write=False)
    assert any("ActiveLab" in note for note in pick.notes)
    second = pick.second_opinion.set_index("sample_id")
    assert pool["split"] in second.index
    assert second.at[pool["split"], "reason"].startswith("annotators split")
    assert set(second.index) <= _labelled(p)
    assert list(pick.second_opinion["rank"]) == list(range(1, len(second) + 1))


def test_run_is_stored_and_next_to_label_reads_it_back(pool):
    p = pool["p"]
    pick = suggest_labels(p, n=4, seed=2, image_size=SIZE)
    runs = p.analysis_runs().set_index("key")
    assert runs.at[RUN_KEY, "method"] == "suggest_labels"
    assert runs.at[RUN_KEY, "config"]["strategy"] == "cover"
    queue = next_to_label(p)
    assert list(queue["sample_id"]) == pick.sample_ids
    assert list(queue.columns) == ["sample_id", "filepath", "reason", "score", "rank"]
    first = pick.sample_ids[0]
    p.annotate(first, "ok", annotator="dora")
    try:
        assert list(next_to_label(p)["sample_id"]) == pick.sample_ids[1:]
    finally:
        p.withdraw(first, annotator="dora")
    assert list(next_to_label(Project.open(p.name))["sample_id"]) == pick.sample_ids


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n": 0}, "n must be an integer >= 1"),
    ({"n": 2.5}, "n must be an integer >= 1"),
    ({"strategy": "random"}, "strategy='random' is not one of"),
    ({"model": "v99"}, "no model version 'v99'"),
    ({"slice_fields": ["shift"]}, "'shift' do not exist"),
    ({"seed": -1}, "seed must be"),
])
def test_bad_input_is_refused_and_nothing_is_stored(pool, kwargs, match):
    p = pool["p"]
    before = p.analysis_runs()
    with pytest.raises(ProjectError, match=match):
        suggest_labels(p, **{"image_size": SIZE, **kwargs})
    pd.testing.assert_frame_equal(p.analysis_runs(), before)


def test_a_model_or_view_of_another_project_is_refused(pool):
    p, mv = pool["p"], pool["mv"]
    foreign = dataclasses.replace(mv, project_name="elsewhere")
    with pytest.raises(ProjectError, match="belongs to project 'elsewhere'"):
        suggest_labels(p, n=3, strategy="active", model=foreign)
    other = Project.create(f"sel-other-{os.getpid()}", overwrite=True)
    try:
        with pytest.raises(ProjectError, match="view must be a view of project"):
            suggest_labels(p, n=3, view=other.dataset.view(), image_size=SIZE)
    finally:
        delete_project(other.name)


# -- the pure functions --------------------------------------------------------------------------
def _clusters(rng: np.random.Generator, centres: np.ndarray, per: int) -> np.ndarray:
    return np.vstack([c + rng.normal(size=(per, centres.shape[1])) for c in centres])


def test_k_center_goes_first_to_the_cluster_nobody_labelled():
    rng = np.random.default_rng(0)
    vectors = _clusters(rng, np.eye(8)[:3] * 5, 10)
    labelled = np.zeros(30, dtype=bool)
    labelled[[0, 10]] = True  # one image of cluster 0 and one of cluster 1
    picks = k_center_greedy(vectors, 3, centres_mask=labelled)
    assert picks.loc[0, "row"] >= 20 and picks.loc[0, "rank"] == 1
    assert (picks["status"] == "picked").sum() == 3
    assert not set(picks["row"]) & {0, 10}
    same = k_center_greedy(vectors, 3, seed=5)
    assert list(same["row"]) == list(k_center_greedy(vectors, 3, seed=5)["row"])


def test_k_center_quotas_and_duplicates():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(20, 6))
    vectors[7] = vectors[3] * 1.001
    groups = np.array([0] * 15 + [1] * 5)
    picks = k_center_greedy(vectors, 20, groups=groups, quotas=np.array([2, 1]))
    chosen = picks[picks["status"] == "picked"]
    assert (chosen["group"].head(3).value_counts().sort_index() == [2, 1]).all()
    dup = picks[picks["status"] == "near_duplicate"]
    assert len(dup) == 1 and {int(dup["row"].iloc[0]), int(dup["nearest"].iloc[0])} == {3, 7}
    with pytest.raises(ValueError, match="groups and quotas go together"):
        k_center_greedy(vectors, 2, groups=groups)


def test_typical_clusters_take_the_typical_image_of_each_uncovered_group():
    rng = np.random.default_rng(4)
    centres = np.eye(8)[:4] * 6
    vectors = np.vstack([c + rng.normal(scale=0.6, size=(12, 8)) for c in centres])
    vectors = np.vstack([vectors, centres])  # rows 48..51: each group's most typical image
    labelled = np.zeros(len(vectors), dtype=bool)
    labelled[[0, 12]] = True  # groups 0 and 1 are covered
    picks = typical_clusters(vectors, 2, centres_mask=labelled, seed=0)
    chosen = picks[picks["status"] == "picked"]
    assert set(chosen["row"]) == {50, 51}
    assert (chosen["cluster_covered"] == 0).all() and (chosen["cluster_size"] == 13).all()
    again = typical_clusters(vectors, 2, centres_mask=labelled, seed=0)
    assert list(again["row"]) == list(picks["row"])
    group = typicality(vectors[np.r_[0:12, 48]], k=5)
    assert group.argmax() == 12 and group.shape == (13,)
    groups = np.repeat([0, 1], 26)
    split = typical_clusters(vectors, 3, groups=groups, quotas=np.array([1, 2]), seed=1)
    assert sorted(split.loc[split["status"] == "picked", "group"]) == [0, 1, 1]


def test_with_many_labelled_images_the_groups_are_capped_and_picks_go_where_few_are(
        monkeypatch):
    import workbench.metrics.coverage as coverage_module

    rng = np.random.default_rng(7)
    centres = np.eye(8)[:3] * 6
    vectors = np.vstack([c + rng.normal(scale=0.6, size=(60, 8)) for c in centres])
    labelled = np.zeros(len(vectors), dtype=bool)
    labelled[:110] = True  # clusters 0 and (most of) 1 labelled, cluster 2 not at all
    asked = []
    real_kmeans = coverage_module._kmeans
    monkeypatch.setattr(coverage_module, "_kmeans",
                        lambda unit, k, seed: asked.append(k) or real_kmeans(unit, k, seed))
    monkeypatch.setattr(coverage_module, "MAX_CLUSTERS", 6)
    picks = typical_clusters(vectors, 3, centres_mask=labelled, seed=0)
    chosen = picks.loc[picks["status"] == "picked", "row"]
    assert asked == [6]  # not 110 + 3 groups for 180 images
    assert (chosen >= 120).all() and len(chosen) == 3  # the cluster nobody labelled
    many = typical_clusters(vectors, 8, centres_mask=labelled, seed=0)
    assert asked[-1] == 8  # never fewer groups than picks
    assert (many["status"] == "picked").sum() == 8


def test_diverse_top_spreads_a_batch_of_high_scorers():
    rng = np.random.default_rng(5)
    vectors = np.vstack([c + rng.normal(scale=0.3, size=(10, 6)) for c in np.eye(6)[:2] * 5])
    scores = np.r_[np.linspace(0.9, 1.0, 10), np.linspace(0.7, 0.8, 10)]
    top = diverse_top(vectors, scores, 2, pre=10, seed=0)
    chosen = top[top["status"] == "picked"]
    assert sorted(row // 10 for row in chosen["row"]) == [0, 1]  # one per group
    assert (np.diff(chosen["gain"].to_numpy()) <= 0).all()
    top3 = diverse_top(vectors, scores, 3, pre=1, duplicate_similarity=1.0)
    assert top3["row"].tolist()[:3] == [9, 8, 7]  # pre=1: the top n (no copies here)
    with pytest.raises(ValueError, match="pre must be a number >= 1"):
        diverse_top(vectors, scores, 2, pre=0.5)


def test_stratified_allocation_is_proportional_with_one_each():
    assert stratified_allocation([60, 30, 10], 10).tolist() == [6, 3, 1]
    assert stratified_allocation([97, 2, 1], 5).tolist() == [3, 1, 1]
    assert stratified_allocation([3, 0, 2], 50).tolist() == [3, 0, 2]
    keys = [("A", "dim"), ("A", "bright"), ("B", "bright")]
    assert stratified_allocation([50, 40, 1], 2, keys=keys).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        stratified_allocation([1, 2], 0)


def test_margin_disagreement_and_score_greedy():
    probs = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.34, 0.33, 0.33]])
    margins = margin_scores(probs)
    assert margins["uncertainty"].idxmax() == 2 and margins["first"].tolist() == [0, 0, 0]
    agree = np.tile(np.array([[0.8, 0.1, 0.1]]), (4, 1, 1))
    split = np.array([[[0.8, 0.1, 0.1]], [[0.1, 0.8, 0.1]], [[0.1, 0.1, 0.8]]])
    assert disagreement_scores(agree)["disagreement"].iloc[0] == pytest.approx(0.0, abs=1e-9)
    assert disagreement_scores(split)["n_labels"].iloc[0] == 3
    assert disagreement_scores(split)["vote_entropy"].iloc[0] == pytest.approx(1.0)
    assert disagreement_scores(split)["disagreement"].iloc[0] > 0.6
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(8, 5))
    scores = np.linspace(0, 1, 8)
    top = greedy_by_score(vectors, scores, 3, coverage_weight=0.0)
    assert top["row"].tolist()[:3] == [7, 6, 5]


def test_junk_is_what_is_far_from_everything():
    rng = np.random.default_rng(3)
    vectors = _clusters(rng, np.eye(8)[:3] * 5, 15)
    vectors = np.vstack([vectors, -np.ones((1, 8))])
    junk = junk_outliers(vectors)
    assert junk["is_junk"].tolist() == [False] * 45 + [True]
    assert not junk_outliers(vectors[:10])["is_junk"].any()
