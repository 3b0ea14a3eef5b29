"""Checks and cosine helpers shared by the embedding-based analyses."""

from __future__ import annotations

import numpy as np


def check_vectors(values: np.ndarray, name: str, n: int | None) -> np.ndarray:
    """``values`` as a finite numeric array of shape (n, n_features) with no all-zero row
    (which has no cosine distance); a ValueError naming ``name`` otherwise."""
    matrix = np.asarray(values)
    if matrix.ndim != 2 or (n is not None and matrix.shape[0] != n) \
            or not np.issubdtype(matrix.dtype, np.number):
        rows = "n_samples" if n is None else f"len(sample_ids) = {n}"
        raise ValueError(f"{name} must be a numeric array of shape ({rows}, n_features); got "
                         f"shape {matrix.shape}, dtype {matrix.dtype}. Pass one row per "
                         "sample.")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} holds NaN or infinite values; recompute those rows.")
    zero = np.flatnonzero(~(np.abs(matrix) > 0).any(axis=1))
    if len(zero):
        raise ValueError(f"{name} rows {zero[:5].tolist()} are all zeros, which have no "
                         f"cosine distance; recompute or drop them.")
    return matrix


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32), so a matrix product gives cosine similarities."""
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
