"""Two model versions on the same held-out samples: which images got better or worse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from workbench.metrics.confusion import class_report

#: Per-sample outcomes of :func:`compare_predictions`, from version ``a`` to version ``b``.
OUTCOMES = ("better", "worse", "same_right", "same_wrong")
Outcome = Literal["better", "worse", "same_right", "same_wrong"]
INPUT_COLUMNS = ("sample_id", "given", "predicted", "confidence")
COMPARE_COLUMNS = ("sample_id", "given", "predicted_a", "predicted_b", "confidence_a",
                   "confidence_b", "outcome")
DELTA_COLUMNS = ("class", "n", "recall_a", "recall_b", "recall_delta", "f1_a", "f1_b",
                 "f1_delta")


def _check_input(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame of held-out predictions, got "
                         f"{type(frame).__name__}; pass "
                         "workbench.analyse.classification.held_out(...).")
    missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; it has "
                         f"{list(map(str, frame.columns))}. Held-out frames carry "
                         f"{list(INPUT_COLUMNS)}.")
    repeated = frame["sample_id"][frame["sample_id"].duplicated()]
    if len(repeated):
        raise ValueError(f"{name} lists sample ids more than once: "
                         f"{sorted(map(str, repeated.unique()))[:5]}; keep one row per sample.")
    return frame[list(INPUT_COLUMNS)]


def compare_predictions(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Pair two versions' held-out predictions per sample and name what changed.

    Parameters
    ----------
    a, b : pandas.DataFrame
        Held-out predictions of the two versions, one row per sample, with columns
        ``sample_id``, ``given`` (the label compared with), ``predicted`` and ``confidence``
        (of the predicted class); extra columns are ignored. The given labels of a sample
        held out by both must agree.

    Returns
    -------
    pandas.DataFrame of shape (n_common, 7)
        One row per sample held out by both (in ``a``'s order): ``sample_id``, ``given``,
        ``predicted_a``, ``predicted_b``, ``confidence_a``, ``confidence_b`` and ``outcome``:
        ``"better"`` (``a`` wrong, ``b`` right), ``"worse"`` (``a`` right, ``b`` wrong),
        ``"same_right"`` or ``"same_wrong"`` (both wrong, possibly with different
        predictions).

    Raises
    ------
    ValueError
        If a frame lacks a column or repeats a sample, or the given labels disagree.
    """
    left = _check_input(a, "a")
    right = _check_input(b, "b")
    merged = left.merge(right, on="sample_id", how="inner", suffixes=("_a", "_b"))
    disagree = merged["given_a"].astype(object) != merged["given_b"].astype(object)
    if disagree.any():
        shown = merged.loc[disagree, "sample_id"].head(5).tolist()
        raise ValueError(f"a and b give different labels to {int(disagree.sum())} sample(s) "
                         f"(e.g. {shown}); build both frames from the same labels "
                         f"(the same project state).")
    right_a = (merged["predicted_a"] == merged["given_a"]).to_numpy()
    right_b = (merged["predicted_b"] == merged["given_a"]).to_numpy()
    outcome = np.select([~right_a & right_b, right_a & ~right_b, right_a & right_b],
                        ["better", "worse", "same_right"], default="same_wrong")
    return pd.DataFrame({
        "sample_id": merged["sample_id"].to_numpy(dtype=object),
        "given": merged["given_a"].to_numpy(dtype=object),
        "predicted_a": merged["predicted_a"].to_numpy(dtype=object),
        "predicted_b": merged["predicted_b"].to_numpy(dtype=object),
        "confidence_a": merged["confidence_a"].to_numpy(dtype=float),
        "confidence_b": merged["confidence_b"].to_numpy(dtype=float),
        "outcome": pd.Series(outcome, dtype=object),
    }, columns=list(COMPARE_COLUMNS))


def per_class_deltas(compared: pd.DataFrame, *,
                     classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Recall and F1 of each class under both versions, and the change.

    Parameters
    ----------
    compared : pandas.DataFrame
        The result of :func:`compare_predictions` (columns ``given``, ``predicted_a``,
        ``predicted_b``).
    classes : sequence of str, optional
        Rows, in this order; every label must be one of them. Default: the labels present,
        sorted.

    Returns
    -------
    pandas.DataFrame of shape (n_classes, 8)
        ``class``, ``n`` (samples given that class), ``recall_a``, ``recall_b``,
        ``recall_delta`` (b − a), ``f1_a``, ``f1_b``, ``f1_delta``; 0.0 where undefined.

    Raises
    ------
    ValueError
        If a column is missing or a label is not in ``classes``.
    """
    if not isinstance(compared, pd.DataFrame):
        raise ValueError(f"compared must be a DataFrame from compare_predictions, got "
                         f"{type(compared).__name__}.")
    missing = [c for c in ("given", "predicted_a", "predicted_b") if c not in compared.columns]
    if missing:
        raise ValueError(f"compared lacks columns {missing}; pass the result of "
                         f"compare_predictions(a, b).")
    if classes is None:
        present = pd.concat([compared["given"], compared["predicted_a"],
                             compared["predicted_b"]]).dropna()
        classes = sorted(map(str, pd.unique(present)))
    if len(classes) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in DELTA_COLUMNS})
    if compared.empty:  # nothing to score: every class has n = 0 and 0.0 everywhere
        zeros = np.zeros(len(classes))
        return pd.DataFrame({"class": list(classes), "n": zeros.astype(np.int64),
                             **dict.fromkeys(DELTA_COLUMNS[2:], zeros)},
                            columns=list(DELTA_COLUMNS))
    report_a = class_report(compared["given"], compared["predicted_a"], classes=classes)
    report_b = class_report(compared["given"], compared["predicted_b"], classes=classes)
    return pd.DataFrame({
        "class": report_a["class"], "n": report_a["support"],
        "recall_a": report_a["recall"], "recall_b": report_b["recall"],
        "recall_delta": report_b["recall"] - report_a["recall"],
        "f1_a": report_a["f1"], "f1_b": report_b["f1"],
        "f1_delta": report_b["f1"] - report_a["f1"],
    }, columns=list(DELTA_COLUMNS))


#: Columns of :func:`class_comparison`.
COMPARISON_COLUMNS = ("class", "n", "precision_a", "precision_b", "precision_delta",
                      "recall_a", "recall_b", "recall_delta", "recall_delta_low",
                      "recall_delta_high", "f1_a", "f1_b", "f1_delta", "f1_delta_low",
                      "f1_delta_high")


def class_comparison(compared: pd.DataFrame, *, classes: Sequence[str],
                     confidence: float = 0.95, n_boot: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """Precision, recall and F1 per class under both versions, the changes, and paired
    bootstrap confidence intervals of the recall and F1 changes; a last row ``macro``.

    Parameters
    ----------
    compared : pandas.DataFrame
        The result of :func:`compare_predictions` (both versions scored on the same images).
    classes : sequence of str
        Rows, in this order.
    confidence : float, default 0.95
    n_boot : int, default 1000
        Resamples of the images (with replacement; both versions resampled together).

    Returns
    -------
    pandas.DataFrame
        :data:`COMPARISON_COLUMNS`, one row per class and ``macro`` (unweighted means).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(compared["given"]) - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not in classes {classes}")
    k = len(classes)
    given = compared["given"].map(index).to_numpy(dtype=int)
    pred_a = compared["predicted_a"].map(index).fillna(-1).to_numpy(dtype=int)
    pred_b = compared["predicted_b"].map(index).fillna(-1).to_numpy(dtype=int)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(given), size=(n_boot, len(given))) if len(given) else None
    point_a, point_b = _scores(given, pred_a, k), _scores(given, pred_b, k)
    low_q, high_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    if draws is not None:
        boot = np.stack([_scores(given[d], pred_b[d], k) - _scores(given[d], pred_a[d], k)
                         for d in draws])  # (n_boot, 3 metrics, k + 1)
        low, high = np.quantile(boot, low_q, axis=0), np.quantile(boot, high_q, axis=0)
    else:
        low = high = np.full((3, k + 1), np.nan)
    counts = np.bincount(given, minlength=k)
    rows = {"class": [*classes, "macro"], "n": [*counts.tolist(), int(counts.sum())]}
    for m, metric in enumerate(("precision", "recall", "f1")):
        rows[f"{metric}_a"], rows[f"{metric}_b"] = point_a[m], point_b[m]
        rows[f"{metric}_delta"] = point_b[m] - point_a[m]
        if metric != "precision":
            rows[f"{metric}_delta_low"], rows[f"{metric}_delta_high"] = low[m], high[m]
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def per_class_scores(given: np.ndarray, predicted: np.ndarray, k: int, *,
                     absent: float = 0.0) -> tuple[np.ndarray, ...]:
    """Precision, recall, F1 and support of each of ``k`` classes (class indices; a
    prediction below 0 is no class). Precision and F1 are 0 where undefined; the recall of a
    class with no image is ``absent`` (NaN keeps it out of a mean)."""
    right = given == predicted
    support = np.bincount(given, minlength=k).astype(float)
    hits = np.bincount(given[right], minlength=k).astype(float)
    called = np.bincount(predicted[predicted >= 0], minlength=k)[:k].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(called > 0, hits / called, 0.0)
        recall = np.where(support > 0, hits / support, absent)
        f1 = np.where(precision + np.nan_to_num(recall) > 0,
                      2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1, support


def _scores(given: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """(3, k + 1): precision, recall, F1 per class and their macro mean (0 where undefined)."""
    precision, recall, f1, _ = per_class_scores(given, predicted, k)
    per = np.stack([precision, recall, f1])
    return np.concatenate([per, per.mean(axis=1, keepdims=True)], axis=1)
