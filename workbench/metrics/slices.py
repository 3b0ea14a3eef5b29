"""Accuracy per metadata slice: a full one- and two-field report, and SliceLine discovery."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from sliceline import Slicefinder

from workbench.metrics.stats import wilson_interval

MISSING = "(missing)"
DISCOVER_COLUMNS = ("slice", "level", "size", "errors", "error_rate", "score", "accuracy",
                    "ci_low", "ci_high", "gap")


def _check_frame(frame: pd.DataFrame, fields: Sequence[str], *, argument: str,
                 correct: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Validate; return the slice columns as strings (missing → "(missing)") and correctness."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame must be a pandas DataFrame, got {type(frame).__name__}; "
                         f"build one with a boolean {correct!r} column and the slice columns.")
    if isinstance(fields, str) or len(fields) == 0:
        raise ValueError(f"{argument} must be a non-empty list of column names, got "
                         f"{fields!r}; pass e.g. {argument}=['lighting'].")
    if len(set(fields)) != len(fields):
        raise ValueError(f"{argument} repeats a field: {list(fields)}; list each field once.")
    missing = [f for f in [*fields, correct] if f not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing} (from {argument} or correct); the "
                         f"frame has {list(map(str, frame.columns))}. Pick from those.")
    flags = frame[correct]
    if flags.isna().any() or not flags.isin([True, False]).all():
        raise ValueError(f"column correct={correct!r} must hold only True/False, got values "
                         f"{sorted(map(str, pd.unique(flags)))[:5]}; compare given == predicted.")
    keys = pd.DataFrame({f: frame[f].astype(object).where(frame[f].notna(), MISSING).map(str)
                         for f in fields}, dtype=object).reset_index(drop=True)
    return keys, flags.to_numpy(dtype=bool)


def _name(pairs: Iterable[tuple[str, str]]) -> str:
    return " & ".join(f"{field}={value}" for field, value in pairs)


def _add_accuracy(table: pd.DataFrame, k: np.ndarray, n: np.ndarray, *, prefix: str = "",
                  confidence: float = 0.95) -> None:
    """Set ``{prefix}accuracy`` (NaN where n == 0) and its Wilson interval, in place."""
    table[f"{prefix}accuracy"] = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    low, high = wilson_interval(k, n, confidence=confidence)
    table[f"{prefix}ci_low"], table[f"{prefix}ci_high"] = low, high


def _add_sample_ids(table: pd.DataFrame, frame: pd.DataFrame, positions: list) -> None:
    if "sample_id" in frame.columns:
        ids = frame["sample_id"].to_numpy(dtype=object)
        table["sample_ids"] = pd.Series([ids[p].tolist() for p in positions], dtype=object)


def _check_count(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}; pass e.g. {name}=5.")


def slice_report(frame: pd.DataFrame, *, by: Sequence[str], correct: str = "correct",
                 confidence: float = 0.95, min_size: int = 1) -> pd.DataFrame:
    """Accuracy of every value of each field, and of every value pair of two fields.

    Parameters
    ----------
    frame : pandas.DataFrame of shape (n_samples, n_columns)
        A boolean column ``correct`` and the slice columns in ``by``; missing values form the
        slice value ``"(missing)"``; values are compared as strings. With a ``sample_id``
        column, each row lists its samples.
    by : sequence of str
        Fields to slice on: each alone (level 1) and each pair (level 2).
    correct : str, default="correct"
        Name of the per-sample correctness column.
    confidence : float, default=0.95
        Level of the Wilson intervals.
    min_size : int, default=1
        Slices with fewer samples are dropped.

    Returns
    -------
    pandas.DataFrame of shape (n_slices, 15 or 16)
        Columns ``slice`` ("lighting=dim & line=B"), ``fields``, ``values`` (tuples),
        ``level``, ``n``, ``n_correct``, ``accuracy``, ``ci_low``, ``ci_high``, ``rest_n``,
        ``rest_accuracy``, ``rest_ci_low``, ``rest_ci_high`` (all samples outside the
        slice; NaN accuracy when none), ``gap`` (accuracy − rest_accuracy),
        ``excludes_rest`` (rest_accuracy outside the slice's interval) and ``sample_ids``.
        Sorted by ``gap`` ascending (worst first), ties by ``n`` descending.

    Raises
    ------
    ValueError
        If ``by`` is empty, a column is missing, ``correct`` is not boolean, or an option is bad.
    """
    keys, flags = _check_frame(frame, by, argument="by", correct=correct)
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}; pass e.g. 0.95.")
    _check_count(min_size, "min_size")
    rows, positions = [], []
    for fields in [(f,) for f in by] + list(combinations(by, 2)):
        for values, where in sorted(keys.groupby(list(fields)).indices.items()):
            values = values if isinstance(values, tuple) else (values,)
            rows.append((_name(zip(fields, values, strict=True)), tuple(fields), values,
                         len(fields), len(where), int(flags[where].sum())))
            positions.append(where)
    report = pd.DataFrame(rows, columns=["slice", "fields", "values", "level", "n", "n_correct"])
    report[["n", "n_correct", "level"]] = report[["n", "n_correct", "level"]].astype(np.int64)
    n, k = report["n"].to_numpy(), report["n_correct"].to_numpy()
    rest_n, rest_k = len(flags) - n, int(flags.sum()) - k
    _add_accuracy(report, k, n, confidence=confidence)
    report["rest_n"] = rest_n.astype(np.int64)
    _add_accuracy(report, rest_k, rest_n, prefix="rest_", confidence=confidence)
    report["gap"] = report["accuracy"] - report["rest_accuracy"]
    rest = report["rest_accuracy"]  # NaN when the slice is everything: never "excludes"
    report["excludes_rest"] = (rest < report["ci_low"]) | (rest > report["ci_high"])
    _add_sample_ids(report, frame, positions)
    report = report[report["n"] >= min_size]
    return report.sort_values(["gap", "n"], ascending=[True, False], na_position="last",
                              kind="mergesort").reset_index(drop=True)


def discover_slices(frame: pd.DataFrame, *, fields: Sequence[str], correct: str = "correct",
                    k: int = 5, max_level: int = 3, min_support: int | None = None,
                    alpha: float = 0.95) -> pd.DataFrame:
    """Find the worst slices, over conjunctions of up to ``max_level`` fields, with SliceLine.

    Parameters
    ----------
    frame : pandas.DataFrame of shape (n_samples, n_columns)
        As in :func:`slice_report`, with the columns in ``fields``.
    fields : sequence of str
        Candidate fields for the slice predicates.
    correct : str, default="correct"
        Name of the per-sample correctness column; SliceLine's errors are ``1 - correct``.
    k : int, default=5
        At most this many slices are returned (SliceLine's ties are cut).
    max_level : int, default=3
        Most predicates per slice.
    min_support : int or None, default=None
        Smallest slice size; None means ``max(5, ceil(0.02 * n_samples))``.
    alpha : float, default=0.95
        SliceLine's weight of the error rate against the slice size, in (0, 1].

    Returns
    -------
    pandas.DataFrame of shape (<= k, 10 or 11)
        Columns ``slice`` ("a=x & b=y"), ``level``, ``size``, ``errors``, ``error_rate``,
        ``score`` (SliceLine's), ``accuracy``, ``ci_low``, ``ci_high`` (Wilson, 95 %),
        ``gap`` (accuracy − overall accuracy) and ``sample_ids``; worst (highest score)
        first. Empty, with these columns, when no slice is worse than average.

    Raises
    ------
    ValueError
        As :func:`slice_report`, for ``fields`` in place of ``by``.
    """
    keys, flags = _check_frame(frame, fields, argument="fields", correct=correct)
    for name, value in (("k", k), ("max_level", max_level), ("min_support", min_support)):
        if value is not None or name != "min_support":
            _check_count(value, name)
    if not 0.0 < float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}; pass e.g. alpha=0.95.")
    columns = [*DISCOVER_COLUMNS, *(["sample_ids"] if "sample_id" in frame.columns else [])]
    errors = (~flags).astype(float)
    if errors.sum() == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    support = max(5, math.ceil(0.02 * len(flags))) if min_support is None else int(min_support)
    finder = Slicefinder(alpha=float(alpha), k=int(k), max_l=int(max_level),
                         min_sup=support, verbose=False)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        finder.fit(keys.to_numpy(dtype=object), errors)
    rows, positions = [], []  # SliceLine may return more than k on ties: cut to k
    for predicates, stats in zip(finder.top_slices_[:k], finder.top_slices_statistics_[:k],
                                 strict=True):
        used = [(f, v) for f, v in zip(fields, predicates, strict=True) if v is not None]
        where = np.flatnonzero(np.all([keys[f].to_numpy() == v for f, v in used], axis=0))
        rows.append((_name(used), len(used), len(where), int(errors[where].sum()),
                     float(stats["slice_score"])))
        positions.append(where)
    found = pd.DataFrame(rows, columns=["slice", "level", "size", "errors", "score"]).astype(
        {"level": np.int64, "size": np.int64, "errors": np.int64})
    size, n_errors = found["size"].to_numpy(), found["errors"].to_numpy()
    found["error_rate"] = n_errors / np.maximum(size, 1)
    _add_accuracy(found, size - n_errors, size)
    found["gap"] = found["accuracy"] - float(flags.mean())
    _add_sample_ids(found, frame, positions)
    return found[columns]
