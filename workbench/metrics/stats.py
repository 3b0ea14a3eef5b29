"""Small statistics shared by the analyses: confidence intervals for proportions."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm


def wilson_interval(
    successes: ArrayLike, n: ArrayLike, *, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion, vectorised.

    Parameters
    ----------
    successes : array-like of int, shape (n_items,) or scalar
        Number of successes (for example correct predictions) per item.
    n : array-like of int, shape (n_items,) or scalar
        Number of trials per item; broadcast against ``successes``. Where ``n == 0`` the
        interval is the uninformative ``(0, 1)``.
    confidence : float, default=0.95
        Two-sided confidence level, strictly between 0 and 1.

    Returns
    -------
    low, high : ndarray of float, shape broadcast(successes, n)
        Lower and upper bounds, within ``[0, 1]``.

    Raises
    ------
    ValueError
        If ``confidence`` is outside (0, 1), ``n`` is negative, or ``successes`` is negative
        or larger than ``n``.
    """
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(
            f"confidence must be strictly between 0 and 1, got {confidence!r}; "
            "pass e.g. confidence=0.95."
        )
    k = np.asarray(successes, dtype=float)
    m = np.asarray(n, dtype=float)
    try:
        k, m = np.broadcast_arrays(k, m)
    except ValueError as error:
        raise ValueError(
            f"successes and n must have broadcastable shapes, got {k.shape} and {m.shape}; "
            "pass arrays of the same length."
        ) from error
    if np.any(~np.isfinite(m)) or np.any(m < 0):
        raise ValueError(f"n must be finite and >= 0, got {n!r}; pass trial counts.")
    if np.any(~np.isfinite(k)) or np.any(k < 0) or np.any(k > m):
        raise ValueError(
            f"successes must lie in [0, n], got successes={successes!r} with n={n!r}; "
            "check that successes were counted within their trials."
        )
    z = float(norm.ppf(0.5 + confidence / 2.0))
    empty = m == 0
    safe_m = np.where(empty, 1.0, m)
    p = k / safe_m
    denom = 1.0 + z**2 / safe_m
    centre = (p + z**2 / (2.0 * safe_m)) / denom
    half = z / denom * np.sqrt(p * (1.0 - p) / safe_m + z**2 / (4.0 * safe_m**2))
    low = np.where(empty, 0.0, np.clip(centre - half, 0.0, 1.0))
    high = np.where(empty, 1.0, np.clip(centre + half, 0.0, 1.0))
    return low, high
