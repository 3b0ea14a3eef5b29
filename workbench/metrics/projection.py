"""Two-dimensional maps of embeddings (t-SNE or PCA) for a scatter a person can lasso.

Up to :data:`EXACT_TSNE_MAX` samples scikit-learn's Barnes-Hut t-SNE maps every sample.
Above, openTSNE (FFT-accelerated gradients, approximate neighbours) maps a seeded sample of
:data:`MAP_FIT_ROWS`, and every other sample is placed at the median of its nearest mapped
neighbours (openTSNE's ``prepare_partial``): 100,000 samples in about a minute on 2 cores
instead of a quarter of an hour, with the same clusters (bench/scale_metrics.py).
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np

Method = Literal["auto", "tsne", "pca"]
Metric = Literal["euclidean", "cosine"]
#: Dimensions PCA keeps before t-SNE (its neighbour search is cheap there, the noise is gone).
PCA_DIMS = 50
#: Largest sample count scikit-learn's t-SNE maps whole; openTSNE on a sample above.
EXACT_TSNE_MAX = 10_000
#: Samples openTSNE fits above :data:`EXACT_TSNE_MAX`; the others are placed among them.
MAP_FIT_ROWS = 20_000
#: Mapped neighbours whose median places a sample outside the fitted ones.
PLACE_NEIGHBOURS = 10
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
        :data:`MIN_TSNE_SAMPLES` samples. Above :data:`EXACT_TSNE_MAX` samples t-SNE fits
        :data:`MAP_FIT_ROWS` of them and places the rest (module docstring).
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
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.maximum(norms, 1e-12).astype(matrix.dtype)
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
    # large sets stay float32 (a float64 copy of 100,000 embeddings is 1 GB); their map is
    # a sampled one anyway
    return matrix.astype(np.float64 if len(matrix) <= EXACT_TSNE_MAX else np.float32)


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
    if n > EXACT_TSNE_MAX:
        return _sampled_tsne(matrix, seed)
    if not np.any(matrix - matrix.mean(axis=0)):
        return np.zeros((n, 2))
    if d > PCA_DIMS:
        matrix = _pca(matrix, seed, dims=min(PCA_DIMS, n))
    perplexity = min(30.0, (n - 1) / 3)
    embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                    random_state=seed).fit_transform(matrix)
    return np.asarray(embedded, dtype=np.float64)


def _sampled_tsne(matrix: np.ndarray, seed: int) -> np.ndarray:
    """openTSNE on :data:`MAP_FIT_ROWS` seeded rows (PCA to :data:`PCA_DIMS` fitted on
    them); every other row at the median position of its :data:`PLACE_NEIGHBOURS` nearest
    fitted rows in the PCA space (openTSNE's ``prepare_partial(initialization="median")``,
    done here by blocked NumPy, 5× faster than its approximate neighbour queries)."""
    from openTSNE import TSNE
    from sklearn.decomposition import PCA

    n = len(matrix)
    rng = np.random.default_rng(seed)
    fitted = np.zeros(n, dtype=bool)
    fitted[rng.choice(n, min(MAP_FIT_ROWS, n), replace=False)] = True
    sample = matrix[fitted].astype(np.float64)
    if not np.any(sample - sample.mean(axis=0)):
        return np.zeros((n, 2))
    dims = min(PCA_DIMS, *sample.shape)
    pca = PCA(dims, random_state=seed).fit(sample)
    basis = pca.components_.T.astype(np.float32)
    shift = (pca.mean_ @ pca.components_.T).astype(np.float32)
    coords = np.concatenate([matrix[start:start + 8192].astype(np.float32) @ basis - shift
                             for start in range(0, n, 8192)])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    tsne = TSNE(n_components=2, perplexity=30, initialization="pca", n_jobs=max(1, cores or 1),
                random_state=seed, neighbors="annoy", negative_gradient_method="fft")
    out = np.empty((n, 2))
    out[fitted] = np.asarray(tsne.fit(coords[fitted].astype(np.float64)))
    rest, anchors = np.flatnonzero(~fitted), coords[fitted]
    anchor_xy, anchor_norms = out[fitted], np.einsum("ij,ij->i", anchors, anchors)
    k = min(PLACE_NEIGHBOURS, len(anchors))
    for start in range(0, len(rest), 4096):
        rows = rest[start:start + 4096]
        squared = anchor_norms[None, :] - 2.0 * (coords[rows] @ anchors.T)  # + |q|², same rank
        nearest = np.argpartition(squared, k - 1, axis=1)[:, :k]
        out[rows] = np.median(anchor_xy[nearest], axis=1)
    return out


def _auto(matrix: np.ndarray, seed: int) -> np.ndarray:
    return _pca(matrix, seed) if matrix.shape[0] < MIN_TSNE_SAMPLES else _tsne(matrix, seed)


_METHODS = {"auto": _auto, "tsne": _tsne, "pca": _pca}

__all__ = ["EXACT_TSNE_MAX", "MAP_FIT_ROWS", "MIN_TSNE_SAMPLES", "PCA_DIMS", "PLACE_NEIGHBOURS",
           "project_2d"]
