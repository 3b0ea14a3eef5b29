"""Two-dimensional maps of embeddings (t-SNE or PCA) for a scatter a person can lasso."""

from __future__ import annotations

from typing import Literal

import numpy as np

Method = Literal["auto", "tsne", "pca"]
Metric = Literal["euclidean", "cosine"]
#: Dimensions PCA keeps before t-SNE (its neighbour search is cheap there, the noise is gone).
PCA_DIMS = 50
#: Fewest samples t-SNE runs on; ``method="auto"`` uses PCA alone below this.
MIN_TSNE_SAMPLES = 5


def project_2d(vectors: np.ndarray, *, method: Method = "auto", metric: Metric = "euclidean",
               seed: int = 0) -> np.ndarray:
    """Project feature vectors to 2-D so that neighbours stay neighbours.

    Parameters
    ----------
    vectors : array-like of shape (n_samples, n_features)
        Finite numbers; one row per sample.
    method : {"auto", "tsne", "pca"}, default "auto"
        ``tsne``: PCA to at most :data:`PCA_DIMS` dimensions, then t-SNE with perplexity
        ``min(30, (n_samples - 1) / 3)`` (it must stay below the sample count). ``pca``: the
        two main components. ``auto``: t-SNE, or PCA for fewer than
        :data:`MIN_TSNE_SAMPLES` samples.
    metric : {"euclidean", "cosine"}, default "euclidean"
        ``cosine`` scales rows to unit length first (then euclidean distance ranks pairs as
        cosine distance does), the distance Loupe's duplicate and outlier checks use.
    seed : int, default 0
        Same vectors, method and seed: the same map. (t-SNE starts from the PCA layout, so
        other seeds give nearly the same map.)

    Returns
    -------
    np.ndarray of shape (n_samples, 2), float64
        Row i places ``vectors[i]``. Fewer than two informative directions (one sample, one
        feature, identical rows) leave the missing coordinates at 0.

    Raises
    ------
    ValueError
        For a non-2-D or non-numeric array, no rows, NaN or infinite values, an unknown
        ``method`` or ``metric``, or ``method="tsne"`` with fewer than 5 samples.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}; "
                         f"got {method!r}.")
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine'; got {metric!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer; got {seed!r}.")
    matrix = _check(vectors)
    if metric == "cosine":  # in float64: t-SNE amplifies float32 rounding into another map
        matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    return _METHODS[method](matrix, int(seed))


def _check(vectors: np.ndarray) -> np.ndarray:
    matrix = np.asarray(vectors)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0 \
            or not np.issubdtype(matrix.dtype, np.number) or np.iscomplexobj(matrix):
        raise ValueError("vectors must be a real numeric array of shape (n_samples, "
                         f"n_features) with at least one row and column; got shape "
                         f"{matrix.shape}, dtype {matrix.dtype}.")
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if len(bad):
        raise ValueError(f"vectors rows {bad[:5].tolist()} hold NaN or infinite values; "
                         "recompute or drop them.")
    return matrix.astype(np.float64)


def _pca(matrix: np.ndarray, seed: int, dims: int = 2) -> np.ndarray:
    """The first ``dims`` principal components, zero-padded where the data has fewer."""
    from sklearn.decomposition import PCA

    n, d = matrix.shape
    out = np.zeros((n, dims))
    keep = min(dims, n, d)
    centred = matrix - matrix.mean(axis=0)
    if n < 2 or not np.any(centred):  # one sample or identical rows: nothing to spread
        return out
    out[:, :keep] = PCA(n_components=keep, random_state=seed).fit_transform(matrix)
    return out


def _tsne(matrix: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    n, d = matrix.shape
    if n < MIN_TSNE_SAMPLES:
        raise ValueError(f"t-SNE needs at least {MIN_TSNE_SAMPLES} samples, got {n}; use "
                         "method='pca' (or 'auto', which does so for small sets).")
    if not np.any(matrix - matrix.mean(axis=0)):
        return np.zeros((n, 2))
    if d > PCA_DIMS:
        matrix = _pca(matrix, seed, dims=min(PCA_DIMS, n))
    perplexity = min(30.0, (n - 1) / 3)
    embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                    random_state=seed).fit_transform(matrix)
    return np.asarray(embedded, dtype=np.float64)


def _auto(matrix: np.ndarray, seed: int) -> np.ndarray:
    return _pca(matrix, seed) if matrix.shape[0] < MIN_TSNE_SAMPLES else _tsne(matrix, seed)


_METHODS = {"auto": _auto, "tsne": _tsne, "pca": _pca}

__all__ = ["MIN_TSNE_SAMPLES", "PCA_DIMS", "project_2d"]
