"""Scale (issue 28): the approximate neighbour index that the analyses switch to on large
projects finds what the exact search finds, on clustered embeddings like a real backbone's,
and each analysis gives the same answer through it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.metrics import (
    coverage,
    drift_tests,
    label_issues,
    neighbours,
    outliers,
    projection,
)
from workbench.metrics.duplicates import find_duplicates
from workbench.metrics.neighbours import NeighbourIndex, use_approximate
from workbench.metrics.outliers import outlier_scores

N, DIMS, CLUSTERS = 3000, 256, 6


@pytest.fixture(scope="module")
def clustered() -> dict:
    """Unit vectors in low-rank clusters (as backbone embeddings are), 10 planted near copies
    and 10 off-cluster outliers at the end."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(CLUSTERS, DIMS))
    bases = rng.normal(size=(CLUSTERS, 12, DIMS)) / np.sqrt(DIMS)
    truth = rng.integers(CLUSTERS, size=N)
    spread = rng.normal(size=(N, 12)) * (2.0 / np.sqrt(np.arange(1, 13)))
    x = centres[truth] * 0.5 + np.einsum("nk,nkd->nd", spread, bases[truth]) \
        + rng.normal(scale=0.05, size=(N, DIMS))
    copies = np.arange(N - 20, N - 10)
    x[copies] = x[:10] + rng.normal(scale=0.002, size=(10, DIMS))
    truth[copies] = truth[:10]
    outliers = np.arange(N - 10, N)
    x[outliers] = rng.normal(size=(10, DIMS)) * 3
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return {"x": x, "truth": truth, "copies": copies, "outliers": outliers,
            "ids": [f"s{i}" for i in range(N)]}


def test_approximate_neighbours_are_mostly_the_exact_ones_and_never_closer(clustered):
    x = clustered["x"]
    exact_d, exact_i = NeighbourIndex(x, search="exact").search(None, 10)
    approx_d, approx_i = NeighbourIndex(x, search="approximate").search(None, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx_i, exact_i,
                                                                  strict=True)])
    assert recall > 0.85  # 3,000 rows probe few lists; ~0.98 at 100,000 (bench)
    assert np.median(approx_d.mean(axis=1) / exact_d.mean(axis=1)) < 1.02
    assert (approx_d >= exact_d - 1e-5).all()  # a missed neighbour only moves the k-th out
    assert (np.diff(approx_d, axis=1) >= -1e-7).all()  # ascending
    assert not (approx_i == np.arange(N)[:, None]).any()  # leave one out
    rows = np.arange(N)  # distances are exact cosine distances to the rows named
    assert np.allclose(approx_d[:, 0], 1 - np.sum(x[rows] * x[approx_i[:, 0]], axis=1),
                       atol=1e-5)


def test_a_query_never_gets_a_row_of_its_own_group(clustered):
    x = clustered["x"]
    groups = np.arange(N) // 3  # three rows per group, e.g. one part photographed thrice
    for search in ("exact", "approximate"):
        found = NeighbourIndex(x, search=search).search(None, 5, groups=groups)[1]
        assert not (groups[found] == groups[:, None]).any(), search


def test_auto_switches_at_the_pair_count_and_bad_modes_are_named(monkeypatch):
    assert not use_approximate("auto", 1000, 1000)
    assert use_approximate("auto", 20_000, 20_000)
    assert use_approximate("approximate", 2, 2) and not use_approximate("exact", 10**6, 10**6)
    with pytest.raises(ValueError, match="search must be 'auto', 'exact' or 'approximate'"):
        NeighbourIndex(np.eye(3, dtype=np.float32), search="fast")


def test_duplicates_outliers_and_typicality_agree_with_the_exact_search(clustered,
                                                                        monkeypatch):
    x, ids = clustered["x"], clustered["ids"]
    exact = find_duplicates(ids, x, search="exact")
    approx = find_duplicates(ids, x, search="approximate")
    planted = {frozenset((f"s{i}", f"s{c}")) for i, c in enumerate(clustered["copies"])}
    pairs = {frozenset(p) for p in zip(approx["sample_id"], approx["other_id"], strict=True)}
    assert planted <= pairs
    assert pairs == {frozenset(p) for p in zip(exact["sample_id"], exact["other_id"],
                                                strict=True)}
    top = set(outlier_scores(ids, x, search="approximate")["sample_id"][:10])
    assert top == {f"s{i}" for i in clustered["outliers"]}
    typical = coverage.typicality(x)
    monkeypatch.setattr(neighbours, "EXACT_PAIRS", 1000)  # "auto" goes approximate
    approx_typical = coverage.typicality(x)
    assert np.corrcoef(typical, approx_typical)[0, 1] > 0.98
    assert (approx_typical <= typical + 1e-3).all()  # distances only come out larger


def test_knn_label_estimates_and_drift_scores_hold_through_the_approximate_index(
        clustered, monkeypatch):
    x, truth = clustered["x"], clustered["truth"]
    folds = np.arange(N) % 5
    given = truth.copy()
    flipped = np.arange(0, 300, 10)
    given[flipped] = (given[flipped] + 1) % CLUSTERS
    exact = label_issues.knn_probabilities(x, given, folds=folds, n_classes=CLUSTERS)
    ref_scores, ref_threshold = drift_tests.knn_ood_scores(x[:2000], x[2000:])
    monkeypatch.setattr(neighbours, "EXACT_PAIRS", 1000)
    approx = label_issues.knn_probabilities(x, given, folds=folds, n_classes=CLUSTERS)
    assert np.allclose(approx.sum(axis=1), 1.0)
    assert (approx.argmax(axis=1) == exact.argmax(axis=1)).mean() > 0.98
    assert (approx[flipped].argmax(axis=1) == truth[flipped]).mean() > 0.9  # flips exposed
    scores, threshold = drift_tests.knn_ood_scores(x[:2000], x[2000:])
    assert abs(threshold - ref_threshold) < 0.02
    assert (scores >= ref_scores - 1e-5).all()
    off = clustered["outliers"] - 2000
    assert (scores[off] > threshold).all()


def test_searching_some_rows_finds_what_searching_all_finds_for_them(clustered):
    x = clustered["x"]
    rows = np.arange(7, N, 13)
    folds = np.arange(N) % 5
    for search in ("exact", "approximate"):
        index = NeighbourIndex(x, search=search)
        every_d, every_i = index.search(None, 5, groups=folds)
        some_d, some_i = index.search(None, 5, groups=folds, rows=rows)
        assert np.allclose(some_d, every_d[rows]) and (some_i == every_i[rows]).all()
        assert not (folds[some_i] == folds[rows][:, None]).any()  # own fold still left out
    with pytest.raises(ValueError, match="pass queries=None"):
        NeighbourIndex(x).search(x[:3], 2, rows=np.arange(3))


def test_label_issue_searches_sharing_one_index_answer_as_their_own_would(clustered,
                                                                           monkeypatch):
    x, truth, ids = clustered["x"], clustered["truth"], clustered["ids"]
    folds = np.arange(N) % 5
    monkeypatch.setattr(neighbours, "EXACT_PAIRS", 1000)  # "auto" goes approximate
    own = (label_issues.knn_probabilities(x, truth, folds=folds, n_classes=CLUSTERS),
           find_duplicates(ids, x, threshold=1e-3))
    shared = NeighbourIndex(x)
    knn = label_issues.knn_probabilities(x, truth, folds=folds, n_classes=CLUSTERS,
                                         index=shared)
    searched = shared._candidates  # the kNN vote's search, kept for the duplicates
    pairs = find_duplicates(ids, x, threshold=1e-3, index=shared)
    assert shared._candidates is searched  # reused, not searched again
    assert np.allclose(knn, own[0])
    pd.testing.assert_frame_equal(pairs, own[1])
    assert len(pairs) >= len(clustered["copies"])  # the planted copies are found
    with pytest.raises(ValueError, match="index must hold the 3000 samples"):
        label_issues.knn_probabilities(x, truth, folds=folds, n_classes=CLUSTERS,
                                       index=NeighbourIndex(x[:10]))


def test_junk_verdicts_for_some_rows_match_the_full_screen(clustered, monkeypatch):
    x = clustered["x"]
    full = coverage.junk_outliers(x, k=3)
    asked = np.concatenate([np.arange(0, 400), clustered["outliers"]])
    monkeypatch.setattr(outliers, "FENCE_ROWS", 1000)  # the fence from a 1,000-row sample
    some = coverage.junk_outliers(x, k=3, rows=asked)
    assert np.isnan(some["ood_score"]).sum() >= N - len(asked) - 1000
    assert np.allclose(some["ood_score"][asked], full["ood_score"][asked])
    assert abs(some.attrs["cutoff"] - full.attrs["cutoff"]) < 0.1 * full.attrs["cutoff"]
    full_verdicts = full["is_junk"].to_numpy()[asked]
    assert set(np.flatnonzero(some["is_junk"])) == set(asked[full_verdicts])
    assert set(clustered["outliers"]) <= set(np.flatnonzero(some["is_junk"]))
    with pytest.raises(ValueError, match="rows must be row numbers in 0"):
        coverage.junk_outliers(x, rows=np.array([N]))


def test_a_large_map_fits_a_sample_and_places_the_rest_among_its_clusters(clustered,
                                                                          monkeypatch):
    monkeypatch.setattr(projection, "EXACT_TSNE_MAX", 1000)
    monkeypatch.setattr(projection, "MAP_FIT_ROWS", 1200)
    x, truth = clustered["x"][:-10], clustered["truth"][:-10]
    xy = projection.project_2d(x, metric="cosine", seed=0)
    assert xy.shape == (len(x), 2) and np.isfinite(xy).all()
    centres = np.stack([np.median(xy[truth == c], axis=0) for c in range(CLUSTERS)])
    nearest = np.linalg.norm(xy[:, None] - centres[None], axis=-1).argmin(axis=1)
    assert (nearest == truth).mean() > 0.95  # fitted and placed points alike
    again = projection.project_2d(x, metric="cosine", seed=0)
    np.testing.assert_allclose(again, xy)


def test_the_map_widget_draws_a_sample_with_every_issue():
    from widgets.analyse.embedding_map import _drawn_rows

    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(500)],
                          "is_issue": [i % 50 == 0 for i in range(500)]})
    drawn = _drawn_rows(frame, 100, seed=0)
    assert drawn.sum() == 100 and drawn[frame["is_issue"]].all()
    assert _drawn_rows(frame, 500, seed=0).all()
    np.testing.assert_array_equal(_drawn_rows(frame, 100, seed=0), drawn)
