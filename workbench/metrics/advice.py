"""Which class needs more data: per-class learning curves and a power-law extrapolation.

:func:`learning_curve` refits a logistic-regression probe on frozen embeddings with growing
shares of the training data and records each class's held-out recall; :func:`data_advice`
fits ``error(n) = a * n**-b`` per class to that curve and turns the slope into "collect ~N
more images of this class". Both are pure: arrays and DataFrames in, DataFrames out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import RepeatedStratifiedKFold
from threadpoolctl import threadpool_limits

__all__ = ["data_advice", "learning_curve"]

CURVE_COLUMNS = ("fraction", "class", "n_train", "recall")
CURRENT_COLUMNS = ("class", "n", "recall")
_MAX_SLOPE = 2.0
#: Fitted slopes smaller than this are a flat curve (least squares leaves rounding noise).
_FLAT_SLOPE = 1e-9
_CAP_FACTOR = 10
# One BLAS thread: the probe's matrix products are skinny (n x d times d x k), so threads
# gain little, and on a busy machine oversubscribed OpenBLAS threads made fits ~4x slower.
_BLAS_THREADS = 1
# tol 1e-3 instead of sklearn's 1e-4: 2-3x fewer L-BFGS steps on noisy labels, and >97% of
# held-out predictions unchanged, which is plenty for a learning curve.
_TOL = 1e-3
_MAX_ITER = 1000


def learning_curve(
    features: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    *,
    classes: Sequence[str],
    fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    folds: int = 5,
    repeats: int = 1,
    seed: int = 0,
    c: float = 1.0,
) -> pd.DataFrame:
    """Per-class held-out recall of a linear probe trained on growing shares of the data.

    Features are standardised once over all samples (unsupervised, so no label leaks).
    For each fold of a shuffled stratified k-fold (``repeats`` times), the training part is
    subsampled per class to each fraction (at least one image per class; the subsets are
    nested, so each fit warm-starts from the previous fraction's), a
    ``LogisticRegression(C=c)`` is fitted and the held-out fold is predicted.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Frozen embeddings.
    labels : array-like of str, shape (n_samples,)
        One class name per sample, each in ``classes``.
    classes : sequence of str
        The class names; each needs at least 2 labelled samples.
    fractions : sequence of float, default (0.25, 0.5, 0.75, 1.0)
        Shares of each training fold to fit on, each in (0, 1].
    folds : int, default 5
        Number of stratified folds (>= 2).
    repeats : int, default 1
        How many times the k-fold is repeated with a new shuffle.
    seed : int, default 0
        Seed for the fold shuffle and the subsampling.
    c : float, default 1.0
        Inverse L2 regularisation strength of the probe.

    Returns
    -------
    pandas.DataFrame of shape (len(fractions) * len(classes), 4)
        Long frame, sorted by fraction then class order, with columns ``fraction``,
        ``class``, ``n_train`` (mean training count of the class at that fraction over all
        folds and repeats) and ``recall`` (the class's recall over all held-out predictions
        at that fraction, pooled across folds and repeats).

    Raises
    ------
    ValueError
        If shapes disagree, a label is not in ``classes``, a class has fewer than 2
        samples, or an option is out of range.
    """
    x, y, names, fracs = _check_curve_inputs(features, labels, classes, fractions, folds,
                                             repeats, c)
    std = x.std(axis=0)
    x = ((x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)
    k = len(names)
    n_train = np.zeros((len(fracs), k))
    correct = np.zeros((len(fracs), k))
    total = np.zeros(k)
    rng = np.random.default_rng(seed)
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    with warnings.catch_warnings(), threadpool_limits(limits=_BLAS_THREADS, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        for train, test in splitter.split(x, y):
            orders = [rng.permutation(train[y[train] == j]) for j in range(k)]
            total += np.bincount(y[test], minlength=k)
            model = LogisticRegression(C=c, max_iter=_MAX_ITER, tol=_TOL, warm_start=True)
            for i, frac in enumerate(fracs):
                take = [o[: max(1, round(frac * len(o)))] if len(o) else o for o in orders]
                subset = np.concatenate(take)
                n_train[i] += [len(t) for t in take]
                model.fit(x[subset], y[subset])
                hit = model.predict(x[test]) == y[test]
                correct[i] += np.bincount(y[test][hit], minlength=k)
    return pd.DataFrame({"fraction": np.repeat(fracs, k),
                         "class": np.tile(np.asarray(names, dtype=object), len(fracs)),
                         "n_train": (n_train / (folds * repeats)).ravel(),
                         "recall": (correct / np.maximum(total, 1)).ravel()})


def data_advice(
    curve: pd.DataFrame,
    *,
    current: pd.DataFrame,
    target_recall: float = 0.95,
    factor: float = 2.0,
) -> pd.DataFrame:
    """Rank classes by how much more data would raise their recall.

    Per class, ``error(n) = a * n**-b`` is fitted by least squares in log-log over the
    curve's ``(n_train, 1 - recall)`` points (error clipped to at least ``0.5 / n_train``;
    ``b`` clipped to [0, 2], so a flat or rising curve gives ``b = 0``, and a curve at
    recall 1 everywhere gives ``b = 1`` from the clip alone). The law is applied
    relative to the current recall: ``recall(m) = 1 - (1 - recall) * (m / n)**-b``.

    Parameters
    ----------
    curve : pandas.DataFrame
        Output of :func:`learning_curve`: columns ``fraction``, ``class``, ``n_train``,
        ``recall``.
    current : pandas.DataFrame of shape (n_classes, >= 3)
        Columns ``class``, ``n`` (labelled count now, >= 1) and ``recall`` (the model's
        current recall, e.g. from out-of-fold predictions). Every class must be in ``curve``.
    target_recall : float, default 0.95
        Recall to reach, in (0, 1).
    factor : float, default 2.0
        Data multiple for the ``recall_at_2x`` estimate (> 1).

    Returns
    -------
    pandas.DataFrame of shape (n_classes, 9)
        One row per class of ``current``, ranked by ``gain`` descending, with columns
        ``class``, ``n``, ``recall``, ``recall_at_2x`` (estimated recall at ``factor * n``;
        the name is kept for any ``factor``), ``gain`` (``recall_at_2x - recall``),
        ``collect`` (extra images to reach ``target_recall`` by the fitted law, rounded up;
        0 when already there; at most ``10 * n``), ``capped`` (True when the law does not
        reach the target within ``10 * n`` extra images and ``collect`` reports that cap),
        ``recommendation`` (a sentence) and ``slope`` (``b``).

    Raises
    ------
    ValueError
        If a column is missing, a class of ``current`` is not in ``curve``, or an option or
        value is out of range.
    """
    _check_advice_inputs(curve, current, target_recall, factor)
    slopes = {str(name): _fit_slope(group) for name, group in curve.groupby("class", sort=False)}
    rows = [
        _advise(str(row["class"]), int(row["n"]), float(row["recall"]),
                slopes[str(row["class"])], target_recall, factor)
        for _, row in current.iterrows()
    ]
    columns = ["class", "n", "recall", "recall_at_2x", "gain", "collect", "capped",
               "recommendation", "slope"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["gain", "recall"], ascending=[False, True], kind="stable",
                             ignore_index=True)


def _fit_slope(points: pd.DataFrame) -> float:
    """The power-law exponent ``b`` of ``error = a * n**-b``, clipped to [0, 2]."""
    n = points["n_train"].to_numpy(dtype=float)
    keep = n > 0
    n = n[keep]
    if len(np.unique(n)) < 2:
        return 0.0
    error = np.maximum(1.0 - points["recall"].to_numpy(dtype=float)[keep], 0.5 / n)
    slope = -np.polyfit(np.log(n), np.log(error), 1)[0]
    if abs(slope) < _FLAT_SLOPE:  # a flat curve fits a slope of rounding noise (5e-17)
        return 0.0
    return float(np.clip(slope, 0.0, _MAX_SLOPE))


def _advise(name: str, n: int, recall: float, b: float, target: float, factor: float) -> dict:
    at_factor = 1.0 - (1.0 - recall) * factor ** (-b)
    cap = _CAP_FACTOR * n
    capped = False
    if recall >= target:
        collect = 0
        text = f"enough data: recall {recall:.2f}"
    else:
        try:  # a slope near 0 needs more data than any float holds: the cap
            needed = math.inf if b <= 0 else n * ((1.0 - recall) / (1.0 - target)) ** (1.0 / b)
        except OverflowError:
            needed = math.inf
        collect = max(1, math.ceil(needed - n - 1e-9)) if math.isfinite(needed) else cap + 1
        trend = f"recall {recall:.2f} → ~{at_factor:.2f} at {factor:g}×"
        if collect > cap:
            collect, capped = cap, True
            text = (f"collect over {cap} more '{name}' ({trend}); the fitted curve does not "
                    f"reach {target:.2f} within {_CAP_FACTOR}× the data, so check its labels "
                    "and class definition")
        else:
            text = f"collect ~{collect} more '{name}' ({trend})"
    return {"class": name, "n": n, "recall": recall, "recall_at_2x": at_factor,
            "gain": at_factor - recall, "collect": collect, "capped": capped,
            "recommendation": text, "slope": b}


def _check_curve_inputs(features, labels, classes, fractions, folds, repeats, c):
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"features: expected a finite 2-D array (n_samples, n_features), got "
                         f"shape {x.shape}; pass one embedding row per sample without NaNs.")
    y_names = np.asarray(labels, dtype=object).ravel()
    if len(y_names) != len(x):
        raise ValueError(f"labels: expected {len(x)} labels (one per features row), got "
                         f"{len(y_names)}; pass the labels of the same samples.")
    names = [str(name) for name in classes]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"classes: expected a non-empty list of distinct names, got {names!r}.")
    index = {name: j for j, name in enumerate(names)}
    unknown = sorted({str(v) for v in y_names} - set(index))
    if unknown:
        raise ValueError(f"labels: expected names in classes {names}, got {unknown[:5]}; "
                         "add them to classes or drop those samples.")
    y = np.array([index[str(v)] for v in y_names], dtype=np.int64)
    counts = np.bincount(y, minlength=len(names))
    for name, count in zip(names, counts, strict=True):
        if count < 2:
            raise ValueError(f"labels: class '{name}' has {count} sample(s), a learning curve "
                             "needs at least 2; label more of it or drop it from classes.")
    fracs = np.sort(np.unique(np.asarray(fractions, dtype=float)))
    if fracs.size == 0 or fracs[0] <= 0 or fracs[-1] > 1:
        raise ValueError(f"fractions: expected values in (0, 1], got {list(fractions)}.")
    if not 2 <= int(folds) <= counts.max():
        raise ValueError(f"folds: expected 2..{counts.max()} (the largest class size), got "
                         f"{folds}; lower folds or label more samples.")
    if int(repeats) < 1 or not c > 0:
        raise ValueError(f"repeats and c: expected repeats >= 1 and c > 0, got repeats="
                         f"{repeats}, c={c}.")
    return x, y, names, fracs


def _check_advice_inputs(curve, current, target_recall, factor):
    for arg, frame, columns in (("curve", curve, CURVE_COLUMNS),
                                ("current", current, CURRENT_COLUMNS)):
        missing = [col for col in columns if col not in getattr(frame, "columns", ())]
        if missing:
            raise ValueError(f"{arg}: expected columns {list(columns)}, missing {missing}; "
                             + ("pass the output of learning_curve." if arg == "curve" else
                                "build it from the labelled counts and out-of-fold recall."))
    extra = sorted(set(current["class"].astype(str)) - set(curve["class"].astype(str)))
    if extra:
        raise ValueError(f"current: classes {extra} are not in curve (which has "
                         f"{sorted(curve['class'].astype(str).unique())}); compute the learning "
                         "curve with those classes or drop them from current.")
    if (current["n"] < 1).any() or not current["recall"].between(0, 1).all():
        raise ValueError("current: expected n >= 1 and recall in [0, 1] for every class, got "
                         f"n={current['n'].tolist()}, recall={current['recall'].tolist()}.")
    if not 0 < target_recall < 1:
        raise ValueError(f"target_recall: expected a value in (0, 1), got {target_recall}.")
    if not factor > 1:
        raise ValueError(f"factor: expected a data multiple > 1, got {factor}.")
