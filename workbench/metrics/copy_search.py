"""Thumbnail near-copies among many images, without comparing every pair.

:func:`workbench.metrics.near_copies.pixel_pairs` compares every thumbnail with every
other under 5 zooms and 4 mirrors/flips: 20 n² products, about 45 s at 10,000 images and
over an hour at 100,000. From :data:`APPROXIMATE_FROM` images it calls
:func:`candidate_pixel_pairs` instead:

1. the thumbnails (576 values) are projected on their first :data:`COMPONENTS` principal
   axes. A projection never lengthens a difference, so two thumbnails that correlate at
   least ``c`` (squared distance 2 − 2c between unit vectors) are within that distance
   after it too: the candidates are a superset of the copies;
2. faiss inverted lists (``IndexIVFFlat``, :data:`PROBES` of ``4·√N`` lists searched) find
   the candidates within that distance, each zoom of each image against the mirrored and
   flipped full views of all the others;
3. every candidate's correlation is computed exactly on the full thumbnails and kept when
   it reaches ``c``.

What can be missed is a pair whose two projections fall in lists not searched together:
measured on the scale benchmark's planted copies, none was (docs/benchmarks.md, "Scale").
"""

from __future__ import annotations

import math
import os

import numpy as np

#: From this many images on, near-copies are searched with :func:`candidate_pixel_pairs`.
APPROXIMATE_FROM = 5_000
#: Principal axes the candidate search works in.
COMPONENTS = 64
#: Inverted lists searched per query.
PROBES = 24
#: Queries per faiss call (bounds the memory of one range search).
_CHUNK = 4096


def _views(full: np.ndarray, side: int) -> list[np.ndarray]:
    """The full-view thumbnails (n, side²) as they are, mirrored, flipped and both."""
    square = full.reshape(len(full), side, side)
    return [np.ascontiguousarray(v.reshape(len(full), -1)) for v in
            (square, square[:, :, ::-1], square[:, ::-1, :], square[:, ::-1, ::-1])]


def candidate_pixel_pairs(signatures: np.ndarray, correlation: float, *,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (i < j) whose thumbnails correlate at least ``correlation`` under some
    zoom of one and some mirror/flip of the other, with that correlation; ``signatures``
    of shape (n, n_scales, side²) as :func:`~workbench.metrics.near_copies.pixel_pairs`
    takes them."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    signatures = np.asarray(signatures, dtype=np.float32)
    n, n_scales, width = signatures.shape
    side = math.isqrt(width)
    base = np.concatenate(_views(signatures[:, 0], side))
    views = [base[k * n:(k + 1) * n] for k in range(4)]  # no second copy
    rng = np.random.default_rng(seed)
    sample = base[rng.choice(len(base), size=min(len(base), 50_000), replace=False)]
    pca = faiss.PCAMatrix(width, min(COMPONENTS, width))
    pca.train(sample)
    lists = int(max(1, min(4096, 4 * math.sqrt(len(base)), len(sample) // 40)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(pca.d_out), pca.d_out, lists)
    index.cp.seed = seed
    index.train(pca.apply(sample))
    index.add(pca.apply(base))
    index.nprobe = min(PROBES, lists)
    radius = 2.0 - 2.0 * correlation + 1e-4  # squared distance of unit vectors, with slack
    first: list[np.ndarray] = []
    second: list[np.ndarray] = []
    for scale in range(n_scales):
        queries = np.ascontiguousarray(signatures[:, scale])
        for start in range(0, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            limits, _, found = index.range_search(pca.apply(queries[start:stop]), radius)
            rows = start + np.repeat(np.arange(stop - start), np.diff(limits).astype(np.int64))
            others = found.astype(np.int64) % n
            keep = rows != others
            first.append(rows[keep])
            second.append(others[keep])
    if not first or not sum(len(a) for a in first):
        empty = np.array([], dtype=np.int64)
        return empty, empty, np.array([], dtype=np.float64)
    low = np.minimum(np.concatenate(first), np.concatenate(second)).astype(np.int64)
    high = np.maximum(np.concatenate(first), np.concatenate(second)).astype(np.int64)
    pairs = np.unique(low * n + high)
    low, high = pairs // n, pairs % n
    best = np.full(len(pairs), -1.0, dtype=np.float32)
    for start in range(0, len(pairs), 65_536):  # exact correlation of every candidate
        a, b = low[start:start + 65_536], high[start:start + 65_536]
        for one, other in ((a, b), (b, a)):
            for scale in range(n_scales):
                for view in views:
                    score = np.einsum("ij,ij->i", signatures[one, scale], view[other])
                    np.maximum(best[start:start + 65_536], score,
                               out=best[start:start + 65_536])
    keep = best >= correlation
    return low[keep], high[keep], best[keep].astype(np.float64)
