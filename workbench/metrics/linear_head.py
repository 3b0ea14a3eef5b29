"""A softmax head on features, fitted by scikit-learn's logistic regression, as plain
arrays: what a linear probe learns (:mod:`workbench.train.classification.probe` copies it
into a torch ``Linear``) and what the review simulation refits after each review.

Fits run in float32 on one BLAS thread (lbfgs's many small products lose more to thread
hand-offs than they gain: 3.3× faster on 7,941 × 1,280 embeddings, 2 cores), and on at most
:data:`MAX_FIT_ROWS` rows, a seeded class-stratified sample of larger sets: a linear head on
frozen 1,280-d features has long stopped improving at that size, and 80,000 rows would take
minutes per fit (docs/benchmarks.md, Scale).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

#: Inverse L2 strength of the head, scikit-learn's default.
DEFAULT_C = 1.0
#: Rows a head is fitted on at most (a seeded sample, stratified by class, above).
MAX_FIT_ROWS = 10_000


def fit_rows(labels: np.ndarray, max_rows: int | None = MAX_FIT_ROWS, *,
             seed: int = 0) -> np.ndarray:
    """Indices of the rows to fit on: all of them up to ``max_rows``, else a seeded sample
    of ``max_rows`` with each class's share kept (every class keeps at least one row)."""
    labels = np.asarray(labels)
    if max_rows is None or len(labels) <= max_rows:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.floor(counts * max_rows / len(labels))).astype(int)
    chosen = [rng.choice(np.flatnonzero(labels == c), q, replace=False)
              for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(chosen))


def fit_logistic(features: np.ndarray, labels: np.ndarray, *, c: float,
                 max_iter: int = 3000, max_rows: int | None = MAX_FIT_ROWS,
                 seed: int = 0) -> LogisticRegression:
    """scikit-learn's multinomial logistic regression, fitted in float32 on one BLAS thread
    on at most ``max_rows`` rows (:func:`fit_rows`)."""
    rows = fit_rows(labels, max_rows, seed=seed)
    x = np.asarray(features)[rows].astype(np.float32, copy=False)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=max_iter).fit(x, np.asarray(labels)[rows])


def fit_softmax_head(features: np.ndarray, labels: np.ndarray, n_classes: int, *,
                     c: float = DEFAULT_C) -> tuple[np.ndarray, np.ndarray]:
    """Weights (n_classes, d) and biases (n_classes,) of a softmax head for integer labels
    (n,) in ``range(n_classes)``, whose softmax equals scikit-learn's ``predict_proba``.

    A class absent from ``labels`` gets zero weights and a very negative bias (probability
    ~0).
    """
    present = np.unique(labels)
    weight = np.zeros((n_classes, features.shape[1]), dtype=np.float64)
    bias = np.full(n_classes, -30.0)
    if len(present) == 1:
        bias[present[0]] = 0.0
        return weight, bias
    model = fit_logistic(features, labels, c=c)
    coef, intercept = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
    if len(present) == 2:  # scikit-learn keeps one row: p(second) = sigmoid(w.x + b)
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    weight[model.classes_], bias[model.classes_] = coef, intercept
    return weight, bias


def softmax_probabilities(weight: np.ndarray, bias: np.ndarray,
                          features: np.ndarray) -> np.ndarray:
    """Softmax of the head on features (n, d): probabilities (n, n_classes), float32."""
    weight32, bias32 = weight.astype(np.float32), bias.astype(np.float32)
    logits = np.asarray(features, dtype=np.float32) @ weight32.T + bias32
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


__all__ = ["DEFAULT_C", "MAX_FIT_ROWS", "fit_logistic", "fit_rows", "fit_softmax_head",
           "softmax_probabilities"]
