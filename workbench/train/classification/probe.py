"""Linear probe: a logistic-regression head on frozen embeddings, as a torch ``Linear``.

The head is fitted by scikit-learn (L-BFGS, multinomial) and copied into an
``nn.Linear``, so a probe exports and predicts exactly like a fine-tuned network, and a
fine-tune can start from it (linear probe, then fine-tune).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from workbench.metrics.linear_head import DEFAULT_C, fit_softmax_head


def fit_head(features: np.ndarray, labels: np.ndarray, n_classes: int, *,
             c: float = DEFAULT_C) -> nn.Linear:
    """Fit a softmax head on features (n, d) for integer labels (n,) in ``range(n_classes)``
    (:func:`workbench.metrics.linear_head.fit_softmax_head`), as a ``Linear(d, n_classes)``
    whose softmax equals scikit-learn's ``predict_proba``."""
    weight, bias = fit_softmax_head(features, labels, n_classes, c=c)
    head = nn.Linear(features.shape[1], n_classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    return head


def head_probabilities(head: nn.Linear, features: np.ndarray) -> np.ndarray:
    """Softmax of the head on features (n, d): probabilities (n, n_classes), float32."""
    with torch.inference_mode():
        return head(torch.from_numpy(np.asarray(features, dtype=np.float32))).softmax(1).numpy()


__all__ = ["DEFAULT_C", "fit_head", "head_probabilities"]
