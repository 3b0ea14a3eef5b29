"""Confusion matrix, the samples behind one confusion cell, and a per-class report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import precision_recall_fscore_support

from workbench.metrics.small_classes import small_class_notes

CELL_COLUMNS = ("sample_id", "given", "predicted", "confidence")
REPORT_COLUMNS = ("class", "precision", "recall", "f1", "support", "predicted",
                  "most_confused_with", "confused_count", "recall_low", "recall_high", "note")


def _check_labels(given: ArrayLike, predicted: ArrayLike, classes: Sequence[Any]
                  ) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Validate the inputs; return given and predicted as class positions, and the classes."""
    if isinstance(classes, str) or len(classes) == 0:
        raise ValueError(f"classes must be a non-empty sequence of class names, got "
                         f"{classes!r}; pass e.g. classes=['good', 'scratch'].")
    index = pd.Index(list(classes))
    if index.has_duplicates:
        raise ValueError(f"classes must be unique, got duplicates "
                         f"{sorted(map(str, index[index.duplicated()]))}; remove them.")
    codes = []
    for name, values in (("given", given), ("predicted", predicted)):
        array = np.asarray(values, dtype=object)
        if array.ndim != 1:
            raise ValueError(f"{name} must be 1-D of shape (n_samples,), got shape "
                             f"{array.shape}; pass one label per sample.")
        positions = index.get_indexer(array)
        if np.any(positions < 0):
            unknown = sorted({str(v) for v in array[positions < 0]})
            raise ValueError(f"{name} holds labels not in classes: {unknown}; classes are "
                             f"{list(map(str, index))}. Add them to classes or fix the labels.")
        codes.append(positions)
    if len(codes[0]) != len(codes[1]):
        raise ValueError(f"given and predicted must have the same length, got "
                         f"{len(codes[0])} and {len(codes[1])}; pass one of each per sample.")
    return codes[0], codes[1], index


def _counts(true_codes: np.ndarray, pred_codes: np.ndarray, n_classes: int) -> np.ndarray:
    flat = true_codes * n_classes + pred_codes
    return np.bincount(flat, minlength=n_classes**2).reshape(n_classes, n_classes)


def confusion_matrix(given: ArrayLike, predicted: ArrayLike, *,
                     classes: Sequence[Any]) -> pd.DataFrame:
    """Count samples per (given, predicted) class pair.

    Parameters
    ----------
    given : array-like of shape (n_samples,)
        The given (annotated) class of each sample.
    predicted : array-like of shape (n_samples,)
        The predicted class of each sample.
    classes : sequence of length n_classes
        All class names, in display order; every label must be one of them.

    Returns
    -------
    pandas.DataFrame of shape (n_classes, n_classes)
        Integer counts; index ``classes`` named ``"true"``, columns ``classes`` named
        ``"predicted"``. Classes without samples appear with zero counts.

    Raises
    ------
    ValueError
        If a label is not in ``classes``, ``classes`` is empty or repeats a name, or the
        lengths differ.
    """
    true_codes, pred_codes, index = _check_labels(given, predicted, classes)
    counts = _counts(true_codes, pred_codes, len(index))
    return pd.DataFrame(counts.astype(np.int64), index=index.rename("true"),
                        columns=index.copy().rename("predicted"))


def confusion_cell(frame: pd.DataFrame, *, true: str, pred: str) -> pd.DataFrame:
    """The samples in one confusion cell, most confident first.

    Parameters
    ----------
    frame : pandas.DataFrame of shape (n_samples, n_columns)
        Columns ``sample_id``, ``given``, ``predicted`` and ``confidence`` (the confidence
        of the predicted class); extra columns are kept.
    true : str
        Given class of the cell (its row in the confusion matrix).
    pred : str
        Predicted class of the cell (its column).

    Returns
    -------
    pandas.DataFrame of shape (n_cell, n_columns)
        Rows with ``given == true`` and ``predicted == pred``, sorted by ``confidence``
        descending (for off-diagonal cells: the most confident mistakes first), index reset.

    Raises
    ------
    ValueError
        If a required column is missing or ``true``/``pred`` is not a class in the frame.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame must be a pandas DataFrame, got {type(frame).__name__}; "
                         f"build one with columns {list(CELL_COLUMNS)}.")
    missing = [c for c in CELL_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing}; it has {list(map(str, frame.columns))}."
                         f" Add them (confidence is the predicted class's probability).")
    present = pd.unique(pd.concat([frame["given"], frame["predicted"]]).dropna())
    known = sorted(map(str, present))
    for name, value in (("true", true), ("pred", pred)):
        if value not in set(present):
            raise ValueError(f"{name}={value!r} is not a class in the frame; the classes "
                             f"present are {known}. Pick one of them.")
    cell = frame[(frame["given"] == true) & (frame["predicted"] == pred)]
    return cell.sort_values("confidence", ascending=False, kind="mergesort").reset_index(
        drop=True)


def class_report(given: ArrayLike, predicted: ArrayLike, *,
                 classes: Sequence[Any]) -> pd.DataFrame:
    """Precision, recall, F1 and the most frequent confusion, per class.

    Parameters
    ----------
    given : array-like of shape (n_samples,)
        The given (annotated) class of each sample.
    predicted : array-like of shape (n_samples,)
        The predicted class of each sample.
    classes : sequence of length n_classes
        All class names, in the order of the report's rows.

    Returns
    -------
    pandas.DataFrame of shape (n_classes, 11)
        Columns ``class``, ``precision``, ``recall``, ``f1`` (0.0 where undefined),
        ``support`` (given count), ``predicted`` (predicted count), ``most_confused_with``
        (the class this class's samples are most often wrongly predicted as; first in
        ``classes`` order on ties; None without mistakes), ``confused_count``,
        ``recall_low`` and ``recall_high`` (95 % Wilson interval) and ``note``: for a class
        with too few images to judge (:mod:`workbench.metrics.small_classes`), the count and
        the interval in words; None otherwise.

    Raises
    ------
    ValueError
        As :func:`confusion_matrix`.
    """
    true_codes, pred_codes, index = _check_labels(given, predicted, classes)
    counts = _counts(true_codes, pred_codes, len(index))
    precision, recall, f1, _ = precision_recall_fscore_support(
        true_codes, pred_codes, labels=np.arange(len(index)), zero_division=0)
    mistakes = counts.copy()
    np.fill_diagonal(mistakes, 0)
    worst = mistakes.argmax(axis=1)
    confused_count = mistakes[np.arange(len(index)), worst]
    confused_with = [index[j] if c > 0 else None
                     for j, c in zip(worst, confused_count, strict=True)]
    notes = small_class_notes(list(index), n=counts.sum(axis=1), correct=np.diag(counts))
    return pd.DataFrame({
        "class": list(index), "precision": precision.astype(float),
        "recall": recall.astype(float), "f1": f1.astype(float),
        "support": counts.sum(axis=1).astype(np.int64),
        "predicted": counts.sum(axis=0).astype(np.int64),
        "most_confused_with": pd.Series(confused_with, dtype=object),
        "confused_count": confused_count.astype(np.int64),
        "recall_low": notes["recall_low"], "recall_high": notes["recall_high"],
        "note": notes["note"],
    }, columns=list(REPORT_COLUMNS))
