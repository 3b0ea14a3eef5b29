"""Simulated label review: how much accuracy each review order buys per image reviewed.

Pure: arrays in, a DataFrame out; no FiftyOne, no disk. A reviewer (the *oracle*) corrects
the first ``round(budget * n_pool)`` samples of the review pool in a strategy's order; a
probe head is refitted on the pool's labels after the review and scored on a fixed
evaluation split against the oracle's labels. The evaluation samples are never reviewed and
never trained on.

>>> mask = eval_split(oracle, share=0.3, seed=0)
>>> frame = simulate_review(features, noisy, oracle, eval_mask=mask,
...                         orders={"random": rng.permutation(len(noisy))},
...                         budgets=(0.05, 0.1))
>>> frame.attrs["noisy_accuracy"], frame.attrs["clean_accuracy"]

The project-level wrapper is :func:`workbench.improve.review_curve.review_curve`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from workbench.metrics.linear_head import DEFAULT_C, fit_softmax_head, softmax_probabilities

#: Columns of :func:`simulate_review`'s result, in order.
COLUMNS = ("strategy", "budget", "n_reviewed", "labels_fixed", "accuracy", "recovered_share")


def eval_split(labels: Sequence[str] | np.ndarray, *, share: float, seed: int) -> np.ndarray:
    """A seeded evaluation mask, stratified by label.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        The labels to stratify by (the oracle's).
    share : float in (0, 1)
        Of each class, ``round(share * n_class)`` samples are drawn for evaluation.
    seed : int

    Returns
    -------
    np.ndarray of shape (n_samples,), bool
        True for the evaluation samples.
    """
    labels = np.asarray(labels)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
        raise ValueError(f"share must be a number in (0, 1), got {share!r}.")
    rng = np.random.default_rng([int(seed), 7])
    mask = np.zeros(len(labels), dtype=bool)
    for label in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == label)
        mask[rng.choice(rows, round(share * len(rows)), replace=False)] = True
    return mask


def simulate_review(features: np.ndarray, noisy: Sequence[str] | np.ndarray,
                    oracle: Sequence[str] | np.ndarray, *, eval_mask: np.ndarray,
                    orders: Mapping[str, Sequence[int] | np.ndarray],
                    budgets: Sequence[float], c: float = DEFAULT_C) -> pd.DataFrame:
    """Accuracy after reviewing each budget's share of the pool in each strategy's order.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Frozen embeddings, row i of sample i.
    noisy, oracle : array-like of shape (n_samples,)
        The labels as given, and the labels a careful reviewer would give.
    eval_mask : array-like of shape (n_samples,), bool
        The evaluation split (never reviewed, never trained on); the rest is the pool.
    orders : mapping of str to array-like of int
        Per strategy, row indices in review order. Rows of the evaluation split are skipped;
        a short order reviews only the pool rows it lists.
    budgets : sequence of float in (0, 1]
        Shares of the pool to review.
    c : float, default 1.0
        Inverse L2 strength of the probe head
        (:func:`workbench.metrics.linear_head.fit_softmax_head`).

    Returns
    -------
    pd.DataFrame
        One row per strategy and budget: ``strategy``, ``budget``, ``n_reviewed``,
        ``labels_fixed`` (reviewed samples whose label changed), ``accuracy`` (on the
        evaluation split, against the oracle), ``recovered_share`` (``(accuracy - noisy) /
        (clean - noisy)``, NaN when clean equals noisy). ``attrs`` holds
        ``noisy_accuracy`` (no review), ``clean_accuracy`` (every pool label the oracle's),
        ``n_pool``, ``n_eval`` and ``n_wrong_in_pool``.
    """
    x, noisy, oracle, eval_mask, orders, budgets = _check_inputs(
        features, noisy, oracle, eval_mask, orders, budgets, c)
    classes = sorted(set(noisy.tolist()) | set(oracle.tolist()))
    code = {label: i for i, label in enumerate(classes)}
    given = np.array([code[v] for v in noisy.tolist()], dtype=int)
    truth = np.array([code[v] for v in oracle.tolist()], dtype=int)
    pool = np.flatnonzero(~eval_mask)
    scorer = _Scorer(x, truth, eval_mask, n_classes=len(classes), c=c)
    noisy_accuracy = scorer(given)
    clean = given.copy()
    clean[pool] = truth[pool]
    clean_accuracy = scorer(clean)
    gap = clean_accuracy - noisy_accuracy
    in_pool = ~eval_mask
    rows = []
    for name, order in orders.items():
        order = order[in_pool[order]]
        for budget in budgets:
            reviewed = order[:round(budget * len(pool))]
            labels = given.copy()
            labels[reviewed] = truth[reviewed]
            accuracy = scorer(labels)
            rows.append({"strategy": name, "budget": budget, "n_reviewed": len(reviewed),
                         "labels_fixed": int((given[reviewed] != truth[reviewed]).sum()),
                         "accuracy": accuracy,
                         "recovered_share": ((accuracy - noisy_accuracy) / gap if gap
                                             else math.nan)})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.attrs.update({"noisy_accuracy": noisy_accuracy, "clean_accuracy": clean_accuracy,
                        "n_pool": len(pool), "n_eval": int(eval_mask.sum()),
                        "n_wrong_in_pool": int((given[pool] != truth[pool]).sum())})
    return frame


class _Scorer:
    """Accuracy on the evaluation split of a head fitted on the pool's labels; one fit per
    distinct labelling (a review that changes nothing costs nothing, and scores the same)."""

    def __init__(self, x: np.ndarray, truth: np.ndarray, eval_mask: np.ndarray, *,
                 n_classes: int, c: float) -> None:
        self.x, self.truth, self.eval_mask = x, truth, eval_mask
        self.n_classes, self.c = n_classes, c
        self.seen: dict[bytes, float] = {}

    def __call__(self, labels: np.ndarray) -> float:
        pool = ~self.eval_mask
        key = labels[pool].tobytes()
        if key not in self.seen:
            weight, bias = fit_softmax_head(self.x[pool], labels[pool], self.n_classes, c=self.c)
            predicted = softmax_probabilities(weight, bias, self.x[self.eval_mask]).argmax(1)
            self.seen[key] = float((predicted == self.truth[self.eval_mask]).mean())
        return self.seen[key]


def _check_inputs(features, noisy, oracle, eval_mask, orders, budgets, c):
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"features must be an array of shape (n_samples, n_features), got "
                         f"shape {x.shape}.")
    n = len(x)
    noisy, oracle = np.asarray(noisy, dtype=object), np.asarray(oracle, dtype=object)
    mask = np.asarray(eval_mask)
    for name, value in (("noisy", noisy), ("oracle", oracle), ("eval_mask", mask)):
        if value.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) like features' rows, got "
                             f"{value.shape}.")
    for name, value in (("noisy", noisy), ("oracle", oracle)):
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in value.tolist()):
            raise ValueError(f"{name} has missing labels; give every sample a label.")
    if mask.dtype != bool:
        raise ValueError(f"eval_mask must be boolean, got dtype {mask.dtype}.")
    if not mask.any() or mask.all():
        raise ValueError(f"eval_mask marks {int(mask.sum())} of {n} samples; both the "
                         "evaluation split and the review pool need at least one.")
    if not isinstance(orders, Mapping) or not orders:
        raise ValueError("orders must be a non-empty mapping of strategy name to row indices.")
    checked = {}
    for name, order in orders.items():
        rows = np.asarray(order)
        if rows.ndim != 1 or (len(rows) and not np.issubdtype(rows.dtype, np.integer)):
            raise ValueError(f"orders[{name!r}] must be a 1-d sequence of row indices.")
        rows = rows.astype(int)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise ValueError(f"orders[{name!r}] has row indices outside [0, {n}).")
        if len(np.unique(rows)) != len(rows):
            raise ValueError(f"orders[{name!r}] lists a row more than once.")
        checked[str(name)] = rows
    budgets = check_budgets(budgets)
    if isinstance(c, bool) or not isinstance(c, int | float) or not c > 0:
        raise ValueError(f"c must be a positive number, got {c!r}.")
    return x, noisy, oracle, mask, checked, budgets


def check_budgets(budgets: Sequence[float]) -> tuple[float, ...]:
    """The budgets, checked (each a number in (0, 1]), sorted and without repeats."""
    if isinstance(budgets, int | float) and not isinstance(budgets, bool):
        budgets = (budgets,)
    try:
        values = list(budgets)
    except TypeError:
        raise ValueError(f"budgets must be a sequence of shares in (0, 1], got "
                         f"{budgets!r}.") from None
    bad = [b for b in values if isinstance(b, bool) or not isinstance(b, int | float)
           or not 0 < b <= 1]
    if not values or bad:
        raise ValueError(f"budgets must be shares of the review pool in (0, 1], e.g. "
                         f"(0.05, 0.1); got {budgets!r}"
                         f"{f' ({bad[0]!r} is not)' if bad else ''}.")
    return tuple(sorted({float(b) for b in values}))


__all__ = ["COLUMNS", "check_budgets", "eval_split", "simulate_review"]
