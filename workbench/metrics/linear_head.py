"""A softmax head on features, fitted by scikit-learn's logistic regression, as plain
arrays: what a linear probe learns (:mod:`workbench.train.classification.probe` copies it
into a torch ``Linear``) and what the review simulation refits after each review."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

#: Inverse L2 strength of the head, scikit-learn's default.
DEFAULT_C = 1.0


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=c, max_iter=3000).fit(features, labels)
    coef, intercept = model.coef_, model.intercept_
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


__all__ = ["DEFAULT_C", "fit_softmax_head", "softmax_probabilities"]
