"""Paired bootstrap intervals for the promotion gate: is a candidate worse than the champion?

Both models are scored on the same images; each resample draws images with replacement
(stratified by class for classification, so every class keeps its size) and scores both
models on that draw, so the interval of the *difference* is paired. A candidate is worse on
a metric when the whole 95 % interval of ``candidate - champion`` lies below zero.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from workbench.metrics.compare import per_class_scores
from workbench.metrics.detection_metrics import detection_map

#: Columns of :func:`paired_bootstrap` and :func:`paired_map_bootstrap`.
DELTA_COLUMNS = ("metric", "n", "champion", "candidate", "delta", "delta_low", "delta_high")


def _quantiles(boot: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}")
    tail = (1 - confidence) / 2
    with np.errstate(all="ignore"):
        if boot.size == 0 or np.all(np.isnan(boot)):
            nan = np.full(boot.shape[1:], np.nan)
            return nan, nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return (np.nanquantile(boot, tail, axis=0), np.nanquantile(boot, 1 - tail, axis=0))


def _classification_scores(given: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """accuracy, macro-F1, then recall of each class (NaN for a class with no image)."""
    _, recall, f1, support = per_class_scores(given, predicted, k, absent=np.nan)
    present = support > 0
    macro = float(np.nanmean(f1[present])) if present.any() else np.nan
    accuracy = float((given == predicted).mean()) if len(given) else np.nan
    return np.concatenate([[accuracy, macro], recall])


def paired_bootstrap(given: ArrayLike, champion: ArrayLike, candidate: ArrayLike, *,
                     classes: Sequence[str], n_boot: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> pd.DataFrame:
    """Accuracy, macro-F1 and per-class recall of two classifiers on the same images, with
    paired, class-stratified bootstrap intervals of the difference.

    Parameters
    ----------
    given : array-like of str, shape (n_images,)
        Reference labels.
    champion, candidate : array-like of str, shape (n_images,)
        Each model's predicted label per image (a label outside ``classes`` counts wrong).
    classes : sequence of str
    n_boot : int, default 1000
    confidence : float, default 0.95
    seed : int, default 0

    Returns
    -------
    pd.DataFrame
        :data:`DELTA_COLUMNS`; ``metric`` is ``accuracy``, ``macro_f1``, then
        ``recall:<class>``; ``n`` the images (of that class); NaN where a class has none.
    """
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    given_s = pd.Series(np.asarray(given, dtype=object))
    unknown = sorted(set(given_s) - set(index), key=str)
    if unknown:
        raise ValueError(f"given holds labels {unknown[:5]} that are not in classes {classes}")
    lengths = {len(given_s), len(np.asarray(champion)), len(np.asarray(candidate))}
    if len(lengths) != 1:
        raise ValueError(f"given, champion and candidate must have one entry per image, got "
                         f"lengths {sorted(lengths)}")
    k = len(classes)
    y = given_s.map(index).to_numpy(dtype=int)
    a = pd.Series(np.asarray(champion, dtype=object)).map(index).fillna(-1).to_numpy(int)
    b = pd.Series(np.asarray(candidate, dtype=object)).map(index).fillna(-1).to_numpy(int)
    point_a, point_b = _classification_scores(y, a, k), _classification_scores(y, b, k)
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(y == c) for c in range(k) if (y == c).any()]
    boot = np.empty((n_boot if len(y) else 0, k + 2))
    for r in range(len(boot)):
        draw = np.concatenate([rng.choice(s, len(s), replace=True) for s in strata])
        boot[r] = (_classification_scores(y[draw], b[draw], k)
                   - _classification_scores(y[draw], a[draw], k))
    low, high = _quantiles(boot, confidence)
    counts = np.bincount(y, minlength=k)
    return pd.DataFrame({
        "metric": ["accuracy", "macro_f1", *[f"recall:{c}" for c in classes]],
        "n": [len(y), len(y), *counts.tolist()],
        "champion": point_a, "candidate": point_b, "delta": point_b - point_a,
        "delta_low": low, "delta_high": high}, columns=list(DELTA_COLUMNS))


def _ap50(gt: pd.DataFrame, pred: pd.DataFrame, ids: list[str],
          classes: list[str]) -> np.ndarray:
    """mAP@0.5, then AP@0.5 of each class (NaN for a class without reference boxes)."""
    table = detection_map(gt, pred, sample_ids=ids, iou_thresholds=(0.5,), classes=classes)
    per = table.set_index("label").reindex(classes)
    ap = np.where(per["n_gt"].fillna(0).to_numpy() > 0, per["AP50"].to_numpy(float), np.nan)
    return np.concatenate([[table.attrs["map50"]], ap])


def _resampled(frame: pd.DataFrame, rows_of: list[np.ndarray], draw: np.ndarray
               ) -> pd.DataFrame:
    """The rows of the drawn images, each draw position its own image id ("0", "1", …)."""
    parts = [rows_of[i] for i in draw]
    rows = np.concatenate(parts) if parts else np.empty(0, int)
    out = frame.iloc[rows].copy()
    out["sample_id"] = np.repeat(np.arange(len(draw)), [len(p) for p in parts]).astype(str)
    return out


def paired_map_bootstrap(gt: pd.DataFrame, champion: pd.DataFrame, candidate: pd.DataFrame, *,
                         sample_ids: Sequence[str], classes: Sequence[str], n_boot: int = 200,
                         confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """mAP@0.5 and per-class AP@0.5 of two detectors on the same images, with paired
    bootstrap intervals of the difference (images drawn with replacement).

    Parameters
    ----------
    gt : pd.DataFrame
        Reference boxes: sample_id, label, x, y, w, h (relative).
    champion, candidate : pd.DataFrame
        Predicted boxes: sample_id, label, confidence, x, y, w, h.
    sample_ids : sequence of str
        The images scored (an image without a reference box is a negative).
    classes : sequence of str

    Returns
    -------
    pd.DataFrame
        :data:`DELTA_COLUMNS`; ``metric`` is ``map50`` then ``ap50:<class>``; ``n`` the
        reference boxes (of that class).
    """
    ids, classes = [str(s) for s in sample_ids], list(classes)
    position = {sid: i for i, sid in enumerate(ids)}

    def rows_by_image(frame: pd.DataFrame) -> list[np.ndarray]:
        where = frame["sample_id"].map(position).to_numpy()
        return [np.flatnonzero(where == i) for i in range(len(ids))]

    frames = [gt.reset_index(drop=True), champion.reset_index(drop=True),
              candidate.reset_index(drop=True)]
    groups = [rows_by_image(f) for f in frames]
    point_a = _ap50(frames[0], frames[1], ids, classes)
    point_b = _ap50(frames[0], frames[2], ids, classes)
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot if ids else 0, len(classes) + 1))
    for r in range(len(boot)):
        draw = rng.integers(0, len(ids), len(ids))
        new_ids = [str(j) for j in range(len(ids))]
        g, a, b = (_resampled(f, rows, draw) for f, rows in zip(frames, groups, strict=True))
        boot[r] = _ap50(g, b, new_ids, classes) - _ap50(g, a, new_ids, classes)
    low, high = _quantiles(boot, confidence)
    counts = gt["label"].value_counts()
    return pd.DataFrame({
        "metric": ["map50", *[f"ap50:{c}" for c in classes]],
        "n": [len(gt), *[int(counts.get(c, 0)) for c in classes]],
        "champion": point_a, "candidate": point_b, "delta": point_b - point_a,
        "delta_low": low, "delta_high": high}, columns=list(DELTA_COLUMNS))


__all__ = ["DELTA_COLUMNS", "paired_bootstrap", "paired_map_bootstrap"]
