"""Planted-error tests for annotator agreement, duplicates and outliers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from cleanlab.outlier import OutOfDistribution

from workbench.metrics import duplicates as duplicates_module
from workbench.metrics.agreement import annotator_agreement
from workbench.metrics.duplicates import (
    EXACT_DISTANCE,
    MAX_DEFAULT_THRESHOLD,
    find_duplicates,
)
from workbench.metrics.outliers import outlier_scores

CLASSES = ["A", "B", "C", "D"]


# --- annotator agreement ---------------------------------------------------------------


@pytest.fixture(scope="session")
def crowd() -> dict:
    """Two careful annotators (3 % slips) and one who swaps A and B half the time."""
    rng = np.random.default_rng(7)
    n, k = 200, len(CLASSES)
    truth = rng.integers(0, k, n)
    rows = []
    for name in ["careful_1", "careful_2", "swapper"]:
        labels = truth.copy()
        slip = rng.random(n) < 0.03
        labels[slip] = (labels[slip] + rng.integers(1, k, slip.sum())) % k
        if name == "swapper":
            swap = (truth <= 1) & (rng.random(n) < 0.5)
            labels[swap] = 1 - truth[swap]
        # a fifth of the samples miss one annotator
        present = rng.random(n) >= (0.2 / 3)
        rows += [{"sample_id": f"s{i:03d}", "annotator": name, "label": CLASSES[labels[i]]}
                 for i in range(n) if present[i]]
    logits = 2.5 * np.eye(k)[truth] + rng.normal(0, 1.0, (n, k))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ids = [f"s{i:03d}" for i in range(n)]
    return {"annotations": pd.DataFrame(rows), "truth": dict(zip(ids, truth, strict=True)),
            "pred_probs": pd.DataFrame(probs, index=ids, columns=CLASSES)}


def _accuracy(samples: pd.DataFrame, column: str, truth: dict) -> float:
    return float(np.mean([CLASSES.index(c) == truth[s]
                          for s, c in zip(samples["sample_id"], samples[column], strict=True)]))


def _plain_majority(samples: pd.DataFrame) -> list[str]:
    """Majority vote with ties to the first class: the baseline to beat."""
    return [max(CLASSES, key=lambda c, labels=labels: (labels.count(c), -CLASSES.index(c)))
            for labels in samples["labels"]]


@pytest.mark.parametrize("with_model", [False, True])
def test_swapper_ranks_last_and_consensus_beats_majority(crowd: dict, with_model: bool) -> None:
    report = annotator_agreement(crowd["annotations"], classes=CLASSES,
                                 pred_probs=crowd["pred_probs"] if with_model else None)
    assert report.method == ("crowdlab" if with_model else "majority_vote")
    table = report.annotators
    assert table["annotator"].iloc[-1] == "swapper"
    assert list(table["quality"]) == sorted(table["quality"], reverse=True)
    swapper = table.set_index("annotator").loc["swapper"]
    assert swapper["most_confused"] in {"A → B", "B → A"}
    assert swapper["agreement"] < 0.85 < table.set_index("annotator").loc["careful_1",
                                                                            "agreement"]
    samples = report.samples.assign(majority=lambda f: _plain_majority(f))
    consensus = _accuracy(samples, "consensus", crowd["truth"])
    assert consensus >= _accuracy(samples, "majority", crowd["truth"])
    assert consensus >= 0.95
    assert samples["consensus_quality"].between(0, 1).all()


def test_hand_made_agreement_values_and_review_order() -> None:
    annotations = pd.DataFrame([
        ("all3", "x", "A"), ("all3", "y", "A"), ("all3", "z", "A"),
        ("two_of3", "x", "A"), ("two_of3", "y", "A"), ("two_of3", "z", "B"),
        ("split", "x", "A"), ("split", "y", "B"), ("split", "z", "C"),
        ("single", "z", "D"),
    ], columns=["sample_id", "annotator", "label"])
    report = annotator_agreement(annotations, classes=CLASSES, threshold=0.8)
    by_id = report.samples.set_index("sample_id")
    assert by_id.loc["all3", "agreement"] == 1.0
    assert by_id.loc["two_of3", "agreement"] == pytest.approx(2 / 3, abs=1e-3)
    assert by_id.loc["split", "agreement"] == pytest.approx(1 / 3)
    assert by_id.loc["single", "agreement"] == 1.0
    assert by_id.loc["two_of3", "consensus"] == "A"
    assert by_id.loc["two_of3", "labels"] == ["A", "A", "B"]
    assert by_id.loc["two_of3", "annotators"] == ["x", "y", "z"]
    assert list(report.samples["sample_id"][:2]) == ["split", "two_of3"]
    assert list(report.to_review()["sample_id"]) == ["split", "two_of3"]
    assert report.to_review()["needs_review"].all()
    assert report.to_frame().equals(report.samples)
    assert annotator_agreement(annotations, classes=CLASSES, threshold=0.5).to_review()[
        "sample_id"].tolist() == ["split"]
    # "split": A and B tie on quality (x, y both 1.0; z 0.5), so classes order picks A
    assert by_id.loc["split", "consensus"] == "A"
    per_class = report.classes.set_index("class")
    assert per_class.loc["A", "n"] == 3 and per_class.loc["B", "n"] == 0
    assert per_class.loc["A", "agreement"] == pytest.approx((1 + 2 / 3 + 1 / 3) / 3)
    assert math.isnan(per_class.loc["B", "agreement"])


def test_tie_goes_to_the_more_reliable_annotator() -> None:
    rows = [(f"s{i}", name, "C" if name != "z" else "D") for i in range(6)
            for name in "wxyz"]
    rows += [("tie", "x", "B"), ("tie", "z", "A")]
    report = annotator_agreement(pd.DataFrame(rows, columns=["sample_id", "annotator",
                                                             "label"]), classes=CLASSES)
    quality = report.annotators.set_index("annotator")["quality"]
    assert quality["x"] == pytest.approx(6 / 7) and quality["z"] == 0.0
    assert report.annotators.set_index("annotator").loc["z", "most_confused"] == "C → D"
    assert report.annotators.set_index("annotator").loc["x", "most_confused"] is None
    assert report.samples.set_index("sample_id").loc["tie", "consensus"] == "B"


def test_krippendorff_alpha_perfect_and_random() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, 100)
    perfect = pd.DataFrame([(f"s{i}", a, CLASSES[t]) for i, t in enumerate(truth)
                            for a in "xyz"], columns=["sample_id", "annotator", "label"])
    report = annotator_agreement(perfect, classes=CLASSES)
    assert report.alpha == pytest.approx(1.0)
    assert np.allclose(report.classes["alpha"], 1.0)
    random = perfect.assign(label=[CLASSES[c] for c in rng.integers(0, 4, len(perfect))])
    assert abs(annotator_agreement(random, classes=CLASSES).alpha) < 0.15
    single = perfect[perfect["annotator"] == "x"]
    assert math.isnan(annotator_agreement(single, classes=CLASSES).alpha)


def test_pred_probs_for_some_samples_or_not_applicable(crowd: dict) -> None:
    annotations, probs = crowd["annotations"], crowd["pred_probs"]
    half = probs.iloc[:100]
    report = annotator_agreement(annotations, classes=CLASSES, pred_probs=half)
    assert report.method == "crowdlab"
    assert len(report.samples) == annotations["sample_id"].nunique()
    plain = annotator_agreement(annotations, classes=CLASSES).samples.set_index("sample_id")
    rest = report.samples.set_index("sample_id").drop(index=half.index)
    top = [max(labels.count(c) for c in labels) for labels in rest["labels"]]
    assert [labels.count(c) for labels, c in zip(rest["labels"], rest["consensus"],
                                                 strict=True)] == top
    agreed = rest["agreement"] > 0.5
    assert (rest.loc[agreed, "consensus"] == plain.loc[rest.index[agreed], "consensus"]).all()
    singles = annotations.drop_duplicates("sample_id")
    fallback = annotator_agreement(singles, classes=CLASSES, pred_probs=probs)
    assert fallback.method == "majority_vote"
    assert (fallback.samples["agreement"] == 1.0).all()


@pytest.mark.parametrize(("change", "kwargs", "words"), [
    (lambda f: f.drop(columns="label"), {}, "'label'"),
    (lambda f: pd.concat([f, f.iloc[:1]]), {}, "(sample_id, annotator)"),
    (lambda f: f.assign(label=["Z", *f["label"][1:]]), {}, "'Z'"),
    (lambda f: f, {"threshold": 1.5}, "threshold"),
    (lambda f: f, {"pred_probs": pd.DataFrame({"A": [1.0]}, index=["s000"])}, "pred_probs"),
    (lambda f: f, {"pred_probs": pd.DataFrame([[2.0, 0, 0, 0]], index=["s000"],
                                              columns=CLASSES)}, "softmax"),
    (lambda f: f, {"classes": "ABCD"}, "classes"),
])
def test_agreement_bad_inputs(crowd: dict, change, kwargs: dict, words: str) -> None:
    options = {"classes": CLASSES, **kwargs}
    with pytest.raises(ValueError, match=None) as caught:
        annotator_agreement(change(crowd["annotations"]), **options)
    assert words in str(caught.value)


# --- duplicates --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def planted_copies() -> dict:
    """100 random embeddings, plus an exact copy of 0 and two near copies each of 1 and 2."""
    rng = np.random.default_rng(11)
    base = rng.normal(size=(100, 64))
    extra = np.stack([base[0], base[1] + rng.normal(0, 0.05, 64),
                      base[1] + rng.normal(0, 0.05, 64), base[2] + rng.normal(0, 0.05, 64)])
    vectors = np.vstack([base, extra])
    ids = [f"img{i}" for i in range(104)]
    hashes = [f"h{i}" for i in range(100)] + ["h0", None, "", None]
    labels = ["ok"] * 103 + ["dent"]
    return {"ids": ids, "vectors": vectors, "hashes": hashes, "labels": labels}


def test_copies_found_random_pairs_not(planted_copies: dict) -> None:
    p = planted_copies
    pairs = find_duplicates(p["ids"], p["vectors"], hashes=p["hashes"], labels=p["labels"])
    found = {frozenset(x) for x in zip(pairs["sample_id"], pairs["other_id"], strict=True)}
    assert found == {frozenset(x) for x in [("img0", "img100"), ("img1", "img101"),
                                            ("img1", "img102"), ("img101", "img102"),
                                            ("img2", "img103")]}
    assert EXACT_DISTANCE <= pairs.attrs["threshold"] <= MAX_DEFAULT_THRESHOLD
    first = pairs.iloc[0]
    assert (first["sample_id"], first["other_id"], first["conflicting"]) == ("img2", "img103",
                                                                             True)
    assert (first["label"], first["other_label"]) == ("ok", "dent")
    assert pairs["conflicting"].sum() == 1
    assert list(pairs["distance"][1:]) == sorted(pairs["distance"][1:])
    kinds = dict(zip(pairs["sample_id"] + "-" + pairs["other_id"], pairs["kind"], strict=True))
    assert kinds["img0-img100"] == "exact" and kinds["img1-img101"] == "near"
    groups = pairs.groupby("group")["sample_id"].apply(set)
    assert pairs["group"].iloc[0] == 0 and sorted(pairs["group"].unique()) == [0, 1, 2]
    assert {"img1", "img101"} <= groups[pairs.set_index("other_id").loc["img102", "group"]
                                        .max()]
    assert list(pairs.columns) == ["sample_id", "other_id", "distance", "kind", "group",
                                   "label", "other_label", "conflicting"]


def test_hashes_pair_at_any_distance_and_threshold_honoured(planted_copies: dict) -> None:
    p = planted_copies
    hashes = list(p["hashes"])
    hashes[50] = "h7"  # a different image under the same hash
    pairs = find_duplicates(p["ids"], p["vectors"], hashes=hashes, threshold=0.0)
    assert {tuple(x) for x in pairs[["sample_id", "other_id"]].to_numpy()} == {
        ("img0", "img100"), ("img7", "img50")}
    assert (pairs["kind"] == "exact").all() and pairs["label"].isna().all()
    assert not pairs["conflicting"].any()
    near = find_duplicates(p["ids"], p["vectors"])
    d = near.set_index("other_id").loc["img103", "distance"]
    assert "img103" in set(find_duplicates(p["ids"], p["vectors"], threshold=d + 1e-6)[
        "other_id"])
    assert "img103" not in set(find_duplicates(p["ids"], p["vectors"], threshold=d - 1e-6)[
        "other_id"])
    assert len(find_duplicates(p["ids"][:100], p["vectors"][:100])) == 0


def test_blocks_give_the_same_pairs(planted_copies: dict, monkeypatch) -> None:
    p = planted_copies
    whole = find_duplicates(p["ids"], p["vectors"], hashes=p["hashes"])
    monkeypatch.setattr(duplicates_module, "_BLOCK_ENTRIES", 7 * 104)  # blocks of 7 rows
    pd.testing.assert_frame_equal(find_duplicates(p["ids"], p["vectors"], hashes=p["hashes"]),
                                  whole)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"embeddings": np.ones((3, 4))}, "embeddings"),
    ({"sample_ids": ["a", "a", "b", "c"]}, "sample_ids"),
    ({"hashes": ["x"]}, "hashes"),
    ({"labels": ["x"] * 5}, "labels"),
    ({"threshold": -0.1}, "threshold"),
    ({"embeddings": np.vstack([np.zeros(4), np.ones((3, 4))])}, "all zeros"),
])
def test_duplicates_bad_inputs(kwargs: dict, words: str) -> None:
    options = {"sample_ids": ["a", "b", "c", "d"], "embeddings": np.eye(4), **kwargs}
    with pytest.raises(ValueError, match=words):
        find_duplicates(options.pop("sample_ids"), options.pop("embeddings"), **options)


# --- outliers ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cloud() -> dict:
    """300 embeddings around one direction, and 5 planted points pointing elsewhere."""
    rng = np.random.default_rng(5)
    centre = rng.normal(size=32)
    inliers = 3 * centre + rng.normal(size=(300, 32))
    planted = rng.normal(size=(5, 32)) - 3 * centre
    return {"inliers": inliers, "planted": planted, "rng": rng, "centre": centre}


def test_planted_outliers_rank_first(cloud: dict) -> None:
    vectors = np.vstack([cloud["inliers"], cloud["planted"]])
    ids = [f"in{i}" for i in range(300)] + [f"out{i}" for i in range(5)]
    scores = outlier_scores(ids, vectors, k=10)
    assert set(scores["sample_id"][:5]) == {f"out{i}" for i in range(5)}
    assert scores["is_outlier"][:5].all() and scores["is_outlier"].sum() <= 5 + 15
    assert list(scores["rank"]) == list(range(1, 306))
    assert scores["outlier_score"].between(0, 1).all()
    assert scores["outlier_score"].is_monotonic_increasing
    expected = OutOfDistribution().fit_score(features=vectors)
    mine = scores.set_index("sample_id").loc[ids, "outlier_score"].to_numpy()
    np.testing.assert_allclose(mine, expected, atol=1e-5)
    flagged = outlier_scores(ids, vectors, contamination=0.05)["is_outlier"]
    assert flagged.sum() == math.ceil(0.05 * 305) and flagged[:5].all()


def test_reference_mode_scores_a_batch_on_the_reference_scale(cloud: dict) -> None:
    rng = np.random.default_rng(6)
    fresh = 3 * cloud["centre"] + rng.normal(size=(40, 32))
    batch = np.vstack([fresh, cloud["planted"][:2]])
    ids = [f"new{i}" for i in range(40)] + ["far0", "far1"]
    scores = outlier_scores(ids, batch, reference=cloud["inliers"])
    assert set(scores["sample_id"][:2]) == {"far0", "far1"}
    assert scores["is_outlier"][:2].all() and scores["is_outlier"][2:].mean() < 0.1
    own = outlier_scores(range(300), cloud["inliers"])
    assert scores.attrs["scale"] == pytest.approx(own.attrs["scale"])
    new = scores[scores["sample_id"].str.startswith("new")]["ood_score"]
    assert new.median() == pytest.approx(own["ood_score"].median(), rel=0.15)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"k": 0}, "k must"),
    ({"reference": np.ones((5, 3))}, "reference"),
    ({"reference": np.ones((1, 4))}, "reference"),
    ({"contamination": 1.5}, "contamination"),
    ({"embeddings": np.ones((2, 4))}, "embeddings"),
    ({"sample_ids": "abcd"}, "sample_ids"),
])
def test_outliers_bad_inputs(kwargs: dict, words: str) -> None:
    options = {"sample_ids": ["a", "b", "c", "d"], "embeddings": np.eye(4), **kwargs}
    with pytest.raises(ValueError, match=words):
        outlier_scores(options.pop("sample_ids"), options.pop("embeddings"), **options)
