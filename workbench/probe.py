"""Linear probe: a logistic-regression head on frozen embeddings, as a torch ``Linear``.

The head is fitted by scikit-learn (L-BFGS, multinomial) and copied into an
``nn.Linear``, so a probe exports and predicts exactly like a fine-tuned network, and a
fine-tune can start from it (linear probe, then fine-tune).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from torch import nn

#: Inverse L2 strength of the head, scikit-learn's default.
DEFAULT_C = 1.0


def fit_head(features: np.ndarray, labels: np.ndarray, n_classes: int, *,
             c: float = DEFAULT_C) -> nn.Linear:
    """Fit a softmax head on features (n, d) for integer labels (n,) in ``range(n_classes)``.

    A class absent from ``labels`` gets zero weights and a very negative bias (probability
    ~0). Returns a ``Linear(d, n_classes)`` whose softmax equals scikit-learn's
    ``predict_proba``.
    """
    present = np.unique(labels)
    head = nn.Linear(features.shape[1], n_classes)
    weight = np.zeros((n_classes, features.shape[1]), dtype=np.float64)
    bias = np.full(n_classes, -30.0)
    if len(present) == 1:
        bias[present[0]] = 0.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=c, max_iter=3000).fit(features, labels)
        coef, intercept = model.coef_, model.intercept_
        if len(present) == 2:  # scikit-learn keeps one row: p(second) = sigmoid(w.x + b)
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        weight[model.classes_], bias[model.classes_] = coef, intercept
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    return head


def head_probabilities(head: nn.Linear, features: np.ndarray) -> np.ndarray:
    """Softmax of the head on features (n, d): probabilities (n, n_classes), float32."""
    with torch.inference_mode():
        return head(torch.from_numpy(np.asarray(features, dtype=np.float32))).softmax(1).numpy()


__all__ = ["DEFAULT_C", "fit_head", "head_probabilities"]
