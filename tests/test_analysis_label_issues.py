"""Label issues as pure functions: planted flips on separable clusters are found."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.metrics import knn_probabilities, probe_probabilities, rank_label_issues

CLASSES = ["ok", "scratch", "dent", "pit"]


@pytest.fixture(scope="module")
def clusters():
    """200 points in 4 Gaussian clusters (16-d), 10 % of labels flipped, 5 folds."""
    rng = np.random.default_rng(3)
    truth = np.repeat(np.arange(4), 50)
    centres = rng.normal(0, 1, (4, 16)) * 3
    features = (centres[truth] + rng.normal(0, 1, (200, 16))).astype(np.float32)
    given = truth.copy()
    planted = rng.choice(200, 20, replace=False)
    given[planted] = (truth[planted] + rng.integers(1, 4, 20)) % 4
    folds = rng.permutation(np.arange(200) % 5)
    return features, truth, given, set(planted.tolist()), folds


def test_out_of_fold_estimates_are_distributions_untouched_by_their_own_label(clusters):
    features, _, given, _, folds = clusters
    for estimate in (probe_probabilities, knn_probabilities):
        probs = estimate(features, given, folds=folds, n_classes=4)
        assert probs.shape == (200, 4) and np.allclose(probs.sum(axis=1), 1)
        changed = given.copy()
        changed[0] = (given[0] + 1) % 4
        again = estimate(features, changed, folds=folds, n_classes=4)
        assert np.allclose(again[0], probs[0])  # sample 0 never sees its own label


def test_mirrored_copies_are_averaged_into_the_probe(clusters):
    features, _, given, _, folds = clusters
    plain = probe_probabilities(features, given, folds=folds, n_classes=4)
    shifted = probe_probabilities(features, given, folds=folds, n_classes=4,
                                  augmented=[features + 5.0])
    assert not np.allclose(plain, shifted)


def test_planted_flips_are_ranked_first_and_flagged(clusters):
    features, _, given, planted, folds = clusters
    probs = [probe_probabilities(features, given, folds=folds, n_classes=4),
             knn_probabilities(features, given, folds=folds, n_classes=4)]
    ids = [f"s{i}" for i in range(200)]
    frame = rank_label_issues(ids, [CLASSES[g] for g in given], probs, classes=CLASSES)
    assert list(frame["rank"]) == list(range(1, 201))
    top = {int(s[1:]) for s in frame["sample_id"][:20]}
    assert len(top & planted) >= 18
    flagged = {int(s[1:]) for s in frame.loc[frame["is_issue"], "sample_id"]}
    assert len(flagged & planted) >= 18 and len(flagged - planted) <= 4
    assert frame["label_quality"].between(0, 1).all()
    worst = frame.iloc[0]
    assert worst["suggested"] != worst["given"] and "model:" in worst["reason"]


def test_a_conflict_is_an_issue_whatever_the_model_says(clusters):
    features, _, given, _, folds = clusters
    probs = probe_probabilities(features, given, folds=folds, n_classes=4)
    ids = [f"s{i}" for i in range(200)]
    clean = int(np.argmax(probs[np.arange(200), given]))
    frame = rank_label_issues(ids, [CLASSES[g] for g in given], probs, classes=CLASSES,
                              conflicts={f"s{clean}": "identical image s7 is labelled dent"})
    row = frame.set_index("sample_id").loc[f"s{clean}"]
    assert row["is_issue"] and row["reason"].startswith("identical image")


def test_bad_inputs_name_the_argument():
    probs = np.full((3, 4), 0.25)
    with pytest.raises(ValueError, match=r"not in classes.*'crack'"):
        rank_label_issues(["a", "b", "c"], ["ok", "dent", "crack"], probs, classes=CLASSES)
    with pytest.raises(ValueError, match=r"pred_probs must have shape \(3, 4\)"):
        rank_label_issues(["a", "b", "c"], ["ok"] * 3, probs[:, :3], classes=CLASSES)
    with pytest.raises(ValueError, match="folds must have shape"):
        knn_probabilities(np.zeros((3, 2)), np.zeros(3, int), folds=np.zeros(2), n_classes=2)
    with pytest.raises(ValueError, match="at least 2 different fold"):
        probe_probabilities(np.zeros((3, 2)), np.zeros(3, int), folds=np.zeros(3),
                            n_classes=2)
