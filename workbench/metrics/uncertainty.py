"""How unsure a model is about each sample, from its probabilities (arrays in, frames out).

>>> margin_scores(probs)["uncertainty"]              # 1 - (top1 - top2)
>>> disagreement_scores(fold_probs)["disagreement"]  # fold models voting differently
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def margin_scores(probs: np.ndarray) -> pd.DataFrame:
    """How unsure a model is: the gap between its two most probable classes.

    Parameters
    ----------
    probs : array-like of shape (n_samples, n_classes)
        Predicted probabilities (rows sum to 1).

    Returns
    -------
    pd.DataFrame of shape (n_samples, 6)
        ``first``, ``second`` (class indices of the two most probable classes), ``p_first``,
        ``p_second``, ``margin`` (``p_first - p_second``, 0–1) and ``uncertainty``
        (``1 - margin``; 1 = a coin toss between two classes).
    """
    p = _check_probs(probs, "probs", 2)
    order = np.argsort(-p, axis=1, kind="stable")
    rows = np.arange(len(p))
    p1, p2 = p[rows, order[:, 0]], p[rows, order[:, 1]]
    margin = np.clip(p1 - p2, 0.0, 1.0)
    return pd.DataFrame({"first": order[:, 0], "second": order[:, 1], "p_first": p1,
                         "p_second": p2, "margin": margin, "uncertainty": 1.0 - margin})


def disagreement_scores(member_probs: np.ndarray) -> pd.DataFrame:
    """How much several models (e.g. one per cross-validation fold) disagree on each sample.

    Parameters
    ----------
    member_probs : array-like of shape (n_members, n_samples, n_classes)
        Each member's predicted probabilities.

    Returns
    -------
    pd.DataFrame of shape (n_samples, 4)
        ``n_labels`` (distinct labels the members vote for), ``vote_entropy`` (entropy of
        the votes over ``log(min(n_members, n_classes))``, 0–1), ``mean_kl`` (mean
        Kullback-Leibler divergence of each member from their average, nats) and
        ``disagreement`` (``(vote_entropy + 1 - exp(-mean_kl)) / 2``, 0–1).
    """
    probs = np.asarray(member_probs, dtype=np.float64)
    if probs.ndim != 3 or probs.shape[0] < 1 or probs.shape[2] < 1:
        raise ValueError(f"member_probs must have shape (n_members, n_samples, n_classes); got "
                         f"{probs.shape}.")
    for member in probs:
        _check_probs(member, "member_probs", 1)
    m, n, k = probs.shape
    votes = probs.argmax(axis=2)
    counts = np.stack([(votes == c).sum(axis=0) for c in range(k)], axis=1) / m
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(counts > 0, counts * np.log(counts), 0.0).sum(axis=1)
    top = np.log(min(m, k))
    entropy = np.maximum(entropy / top, 0.0) if top > 0 else np.zeros(n)
    mean = probs.mean(axis=0)
    safe = np.clip(probs, 1e-12, 1.0)
    kl = (safe * (np.log(safe) - np.log(np.clip(mean, 1e-12, 1.0))[None])).sum(axis=2)
    mean_kl = np.maximum(kl.mean(axis=0), 0.0)
    return pd.DataFrame({"n_labels": (counts > 0).sum(axis=1), "vote_entropy": entropy,
                         "mean_kl": mean_kl,
                         "disagreement": (entropy + 1.0 - np.exp(-mean_kl)) / 2})


def _check_probs(probs: np.ndarray, name: str, least_classes: int) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < least_classes:
        raise ValueError(f"{name} must have shape (n_samples, n_classes >= {least_classes}); "
                         f"got {p.shape}.")
    if not np.isfinite(p).all() or (p < -1e-6).any():
        raise ValueError(f"{name} must hold finite probabilities >= 0.")
    return p
