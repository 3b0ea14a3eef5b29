"""Calibrated probabilities: temperature scaling fitted on out-of-fold predictions, the
expected-calibration error and the reliability table behind a reliability diagram.

Everything takes probabilities (n, n_classes) and integer labels; the temperature divides
the log-probabilities (the logits up to a constant per row), so it is fitted on what a
version stores, with no network run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar

#: Bins of the expected-calibration error and of the reliability table.
ECE_BINS = 15
#: Temperatures searched (log-uniform bounds).
TEMPERATURE_RANGE = (0.05, 20.0)
_EPS = 1e-12


def _checked(probs: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must have shape (n, n_classes >= 2), got {probs.shape}")
    if labels.shape != (len(probs),):
        raise ValueError(f"labels must have one entry per row of probs ({len(probs)}), got "
                         f"shape {labels.shape}")
    if len(probs) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must be class indices 0..{probs.shape[1] - 1}")
    return probs, labels.astype(int)


def apply_temperature(probs: ArrayLike, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / temperature)``, row by row (float32)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)


def log_loss(probs: ArrayLike, labels: ArrayLike) -> float:
    """Mean negative log-likelihood of the labels."""
    probs, labels = _checked(probs, labels)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], _EPS, None))))


def fit_temperature(probs: ArrayLike, labels: ArrayLike) -> float:
    """The temperature that minimises the log-loss of ``labels`` (1.0 with no rows)."""
    probs, labels = _checked(probs, labels)
    if not len(probs):
        return 1.0
    logits = np.log(np.clip(probs, _EPS, None))
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, labels]))

    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    found = minimize_scalar(nll, bounds=(low, high), method="bounded",
                            options={"xatol": 1e-4})
    return float(np.exp(found.x)) if nll(found.x) < nll(0.0) else 1.0


def reliability_table(probs: ArrayLike, labels: ArrayLike, *, bins: int = ECE_BINS
                      ) -> pd.DataFrame:
    """Top-label confidence in ``bins`` equal-width bins: ``low``, ``high``, ``n``,
    ``confidence`` (mean), ``accuracy`` (share correct); empty bins have n = 0 and NaN."""
    probs, labels = _checked(probs, labels)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == labels) if len(probs) else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        rows.append({"low": edges[b], "high": edges[b + 1], "n": n,
                     "confidence": float(confidence[inside].mean()) if n else np.nan,
                     "accuracy": float(correct[inside].mean()) if n else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, *,
                               bins: int = ECE_BINS) -> float:
    """Weighted mean gap between confidence and accuracy over the reliability bins (top
    label, equal-width bins); NaN with no rows."""
    table = reliability_table(probs, labels, bins=bins)
    total = table["n"].sum()
    if not total:
        return float("nan")
    used = table[table["n"] > 0]
    return float((used["n"] * (used["confidence"] - used["accuracy"]).abs()).sum() / total)


__all__ = ["ECE_BINS", "apply_temperature", "expected_calibration_error", "fit_temperature",
           "log_loss", "reliability_table"]
