"""Label issues: which given labels are probably wrong, ranked worst first.

Confident learning (``cleanlab.filter.find_label_issues``) decides which labels are issues
and self-confidence ranks them, on the mean of several out-of-fold probability estimates
rather than one model's: the trained version's, a strongly regularised probe on frozen
embeddings averaged over a mirrored copy of each image (test-time augmentation), and a
k-nearest-neighbour vote in the same embedding space. The three err on different images, so
their mean puts fewer correct labels among the suspects (bench/label_issues.py).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from workbench.metrics.linear_head import fit_logistic
from workbench.metrics.neighbours import NeighbourIndex
from workbench.metrics.vectors import unit_rows

#: Inverse L2 strength of the extra probe: stronger than the trained probe's C=1, so a
#: flipped label pulls the head less (F1 +0.02–0.05 on NEU at 5–20 % noise).
ROBUST_C = 0.1
#: Neighbours voting in :func:`knn_probabilities`, and the softmax temperature of their
#: cosine similarities.
KNN_K, KNN_TEMPERATURE = 10, 0.1
#: A label that every estimate gives less than this is an issue even when confident
#: learning's per-class count leaves it out (F1 +0.03–0.05 on NEU at 5–20 % noise) ...
LOW_QUALITY = 0.3
#: ... provided the ensemble agrees with at least this share of the labels confident
#: learning keeps. A weaker model's low scores are as often hard images as wrong labels
#: (the demo at 128 px agrees with 82 %, and the floor cost it 0.07 F1; NEU 90–98 %).
TRUSTED = 0.88

_COLUMNS = ["sample_id", "given", "suggested", "label_quality", "is_issue", "rank",
            "suggested_probability", "reason"]


def _check_folds(folds: np.ndarray, n: int) -> np.ndarray:
    folds = np.asarray(folds)
    if folds.shape != (n,):
        raise ValueError(f"folds must have shape ({n},), one fold number per sample; got "
                         f"{folds.shape}.")
    if len(np.unique(folds)) < 2:
        raise ValueError("folds must hold at least 2 different fold numbers (out-of-fold "
                         "estimates need a held-out part).")
    return folds


def probe_probabilities(features: np.ndarray, labels: np.ndarray, *, folds: np.ndarray,
                        n_classes: int, c: float = ROBUST_C,
                        augmented: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Out-of-fold probabilities of a logistic-regression probe on frozen embeddings.

    Parameters
    ----------
    features : array of shape (n_samples, n_features)
    labels : int array of shape (n_samples,), values in ``range(n_classes)``
    folds : array of shape (n_samples,)
        Fold number of each sample; each fold is predicted by a probe fit on the others.
    n_classes : int
    c : float
        Inverse L2 strength.
    augmented : sequence of arrays of shape (n_samples, n_features)
        Embeddings of augmented copies (e.g. mirrored); the held-out prediction is the mean
        over the original and every copy.

    Returns
    -------
    np.ndarray of shape (n_samples, n_classes)

    Each fold's probe is fitted on at most
    :data:`~workbench.metrics.linear_head.MAX_FIT_ROWS` of the other folds' rows (a seeded
    class-stratified sample), the folds two at a time on two cores.
    """
    folds = _check_folds(folds, len(labels))
    views = [np.asarray(features, dtype=np.float32), *(np.asarray(a, np.float32)
                                                      for a in augmented)]
    probs = np.zeros((len(labels), n_classes))
    labels = np.asarray(labels)
    fold_ids = np.unique(folds)

    def fit(fold: object) -> LogisticRegression:
        rest = np.flatnonzero(folds != fold)
        return fit_logistic(views[0][rest], labels[rest], c=c, max_iter=2000)

    # one BLAS thread per fit (linear_head), so two folds at a time fill two cores
    with threadpool_limits(1), ThreadPoolExecutor(max_workers=min(len(fold_ids),
                                                                _cores())) as pool:
        models = list(pool.map(fit, fold_ids))
    for fold, model in zip(fold_ids, models, strict=True):
        held = folds == fold
        for view in views:
            probs[np.ix_(held, model.classes_)] += model.predict_proba(view[held])
    return probs / len(views)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        os.cpu_count() or 1


def knn_probabilities(features: np.ndarray, labels: np.ndarray, *, folds: np.ndarray,
                      n_classes: int, k: int = KNN_K,
                      temperature: float = KNN_TEMPERATURE,
                      index: NeighbourIndex | None = None) -> np.ndarray:
    """Out-of-fold class probabilities from the labels of each sample's k nearest neighbours
    (cosine similarity, softmax-weighted) among the other folds.

    Shapes as :func:`probe_probabilities`; returns (n_samples, n_classes). Neighbours are
    approximate above :data:`~workbench.metrics.neighbours.EXACT_PAIRS` distances (one
    :class:`~workbench.metrics.neighbours.NeighbourIndex` of all samples, each sample's own
    fold masked). ``index``: that index, built by the caller on ``unit_rows(features)`` to
    share it with another search of the same samples (e.g. ``find_duplicates``).
    """
    folds = _check_folds(folds, len(labels))
    if index is not None and len(index.reference) != len(labels):
        raise ValueError(f"index must hold the {len(labels)} samples' own unit vectors; it "
                         f"holds {len(index.reference)} rows.")
    labels = np.asarray(labels)
    probs = np.zeros((len(labels), n_classes))
    _, codes, sizes = np.unique(folds, return_inverse=True, return_counts=True)
    # one index over every sample; each searches only the other folds (its own masked)
    index = index or NeighbourIndex(unit_rows(features))
    distance, nearest = index.search(
        None, min(k, len(labels) - int(sizes.max())), groups=codes)
    weights = np.exp(-distance / temperature)  # exp((similarity - 1) / temperature)
    np.add.at(probs, (np.arange(len(labels))[:, None], labels[nearest]), weights)
    return probs / probs.sum(axis=1, keepdims=True)


def rank_label_issues(sample_ids: Sequence[str], given: Sequence[str],
                      pred_probs: np.ndarray | Sequence[np.ndarray], *,
                      classes: Sequence[str],
                      conflicts: dict[str, str] | None = None) -> pd.DataFrame:
    """Rank given labels by how likely they are wrong.

    Parameters
    ----------
    sample_ids : sequence of str, length n_samples
    given : sequence of str, length n_samples
        The labels to check, each in ``classes``.
    pred_probs : array of shape (n_samples, n_classes), or a sequence of such arrays
        Out-of-fold probabilities (columns in ``classes`` order); several are averaged.
    classes : sequence of str
    conflicts : dict of sample id to str, optional
        Samples known to be wrong for another reason (e.g. an identical image labelled
        differently), with that reason; they are issues whatever the model says.

    Returns
    -------
    pd.DataFrame
        One row per sample, worst first: ``sample_id``, ``given``, ``suggested`` (the most
        probable class), ``label_quality`` (probability of the given label, cleanlab's
        self-confidence, 0–1, lower is worse), ``is_issue`` (confident learning's verdict,
        or, for a trusted ensemble (:data:`TRUSTED`), every estimate giving the label less
        than :data:`LOW_QUALITY`; or a conflict),
        ``rank`` (1 = worst), ``suggested_probability``, ``reason``.
    """
    from cleanlab.filter import find_label_issues

    classes = list(classes)
    ids, given = list(sample_ids), list(given)
    if len(ids) != len(given):
        raise ValueError(f"sample_ids and given must have the same length, got {len(ids)} "
                         f"and {len(given)}.")
    unknown = sorted(set(given) - set(classes))
    if unknown:
        raise ValueError(f"given holds labels that are not in classes: {unknown[:5]}; "
                         f"classes are {classes}.")
    stack = [np.asarray(p, dtype=float) for p in
             (pred_probs if isinstance(pred_probs, list | tuple) else [pred_probs])]
    for probs in stack:
        if probs.shape != (len(ids), len(classes)):
            raise ValueError(f"pred_probs must have shape ({len(ids)}, {len(classes)}) "
                             f"(samples × classes), got {probs.shape}.")
    probs = np.mean(stack, axis=0)
    probs = probs / probs.sum(axis=1, keepdims=True)
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[g] for g in given], dtype=int)
    quality = probs[np.arange(len(ids)), labels]
    best = probs.argmax(axis=1)
    flagged = np.zeros(len(ids), dtype=bool)
    present = np.unique(labels)
    if len(ids) and len(present) > 1:  # confident learning needs the classes present only
        local = np.searchsorted(present, labels)
        sub = probs[:, present] / probs[:, present].sum(axis=1, keepdims=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flagged = find_label_issues(local, sub, filter_by="prune_by_noise_rate")
    kept = ~flagged
    if kept.any() and (best[kept] == labels[kept]).mean() >= TRUSTED:
        every_estimate_low = np.all([e[np.arange(len(ids)), labels] / e.sum(axis=1)
                                     < LOW_QUALITY for e in stack], axis=0)
        flagged = flagged | every_estimate_low
    reasons = np.where(flagged, [f"model: {classes[b]} {probs[i, b]:.2f} vs given "
                                 f"{quality[i]:.2f}" for i, b in enumerate(best)], "")
    for i, sid in enumerate(ids):
        if conflicts and sid in conflicts:
            flagged[i] = True
            reasons[i] = "; ".join(r for r in (conflicts[sid], reasons[i]) if r)
    frame = pd.DataFrame({
        "sample_id": ids, "given": given, "suggested": [classes[b] for b in best],
        "label_quality": quality, "is_issue": flagged, "rank": 0,
        "suggested_probability": probs[np.arange(len(ids)), best], "reason": reasons},
        columns=_COLUMNS)
    frame = frame.sort_values(["is_issue", "label_quality"], ascending=[False, True],
                              kind="stable").reset_index(drop=True)
    frame["rank"] = np.arange(1, len(frame) + 1)
    return frame


__all__ = ["knn_probabilities", "probe_probabilities", "rank_label_issues"]
