"""Duplicates: pairs of images that are the same picture, found by embedding and hash.

>>> pairs = find_duplicates(sample_ids, vectors, hashes=content_hashes, labels=labels)
>>> pairs[pairs["conflicting"]]  # the same image filed under two labels
>>> pairs.attrs["threshold"]  # the cosine distance that was used

Distances are cosine distances between embeddings, computed in blocks of rows, so 20,000
samples never need a 20,000 × 20,000 matrix. Above that (``search="auto"``, see
:mod:`workbench.metrics.neighbours`) each sample's :data:`APPROXIMATE_NEIGHBOURS` nearest
come from an approximate index, with exact distances: 100,000 samples in well under a
minute on 2 cores instead of ~4 minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from workbench.metrics.neighbours import NeighbourIndex, Search, use_approximate
from workbench.metrics.vectors import check_vectors, unit_rows

#: At most this cosine distance is a duplicate by default, however spread out the data.
MAX_DEFAULT_THRESHOLD = 0.05
#: The default threshold is this share of the median nearest-neighbour distance.
MEDIAN_FRACTION = 0.15
#: Pairs this close are the same image to the network: ``kind == "exact"``.
EXACT_DISTANCE = 1e-4
#: Approximate search: pairs among each sample's this many nearest (a copy with more
#: copies than this still joins their ``group``, through its nearest ones).
APPROXIMATE_NEIGHBOURS = 10
#: Similarities held at once: block rows × n_samples (128 MiB of float32).
_BLOCK_ENTRIES = 2**25

_COLUMNS = ["sample_id", "other_id", "distance", "kind", "group", "label", "other_label",
            "conflicting"]


def find_duplicates(sample_ids: Sequence, embeddings: np.ndarray, *,
                    hashes: Sequence[str | None] | None = None,
                    labels: Sequence | None = None,
                    threshold: float | None = None,
                    search: Search = "auto",
                    index: NeighbourIndex | None = None) -> pd.DataFrame:
    """Pairs of samples that are copies of each other.

    Parameters
    ----------
    sample_ids : sequence of length n_samples
        Unique ids, row for row with ``embeddings``.
    embeddings : array-like of shape (n_samples, n_features)
        Image embeddings (e.g. :func:`workbench.train.embeddings.embed_paths`).
    hashes : sequence of str or None, length n_samples, optional
        Content hashes; two samples with the same non-empty hash are a pair at any distance.
    labels : sequence of length n_samples, optional
        Labels (None or NaN where a sample has none), to flag copies labelled differently.
    threshold : float, optional
        Largest cosine distance (0–2) that makes a pair. Default:
        ``clip(MEDIAN_FRACTION × median nearest-neighbour distance, EXACT_DISTANCE,
        MAX_DEFAULT_THRESHOLD)``, see Notes.
    search : {"auto", "exact", "approximate"}, default "auto"
        ``exact`` compares every pair; ``approximate`` pairs each sample with those of its
        :data:`APPROXIMATE_NEIGHBOURS` nearest (approximate index, exact distances) within
        the threshold; ``auto`` is exact up to
        :data:`~workbench.metrics.neighbours.EXACT_PAIRS` distances.
    index : NeighbourIndex, optional
        An index of these samples' unit vectors another analysis built (e.g.
        :func:`~workbench.metrics.label_issues.knn_probabilities`'s): the approximate search
        reuses it and its candidates instead of building its own.

    Returns
    -------
    pd.DataFrame, one row per pair (sample_id before other_id in input order)
        ``sample_id``, ``other_id``, ``distance`` (cosine, ≥ 0), ``kind`` ("exact" for equal
        hashes or distance ≤ ``EXACT_DISTANCE``, else "near"), ``group`` (connected
        component of the pairs, numbered from 0 in row order), ``label``, ``other_label``
        (None without ``labels``), ``conflicting`` (both labelled, differently).
        Conflicting pairs first, then by distance. ``attrs["threshold"]`` holds the
        threshold used.

    Notes
    -----
    The median nearest-neighbour distance says how close *different* images of this data
    set come, and stays put while fewer than half the samples have a copy; light
    re-encoding moves an image by a small share of it. (A low percentile instead collapses
    to the copies' own distances once ~1 % of samples have one.) Measured with frozen
    tf_efficientnet_lite0 on 120 NEU steel-texture images: median 0.102, default 0.015
    (0.012–0.014 with 12–42 edited copies added); the closest different images were 0.019
    apart, JPEG quality-85 copies 0.007–0.040 and 90 %-resized copies 0.012–0.082 from
    their originals. Fine textures move as much under re-encoding as between neighbouring
    images, so there the default finds only the closest copies (and paired no different
    images); pass ``hashes`` for byte-identical files. On varied photos the cap applies.
    """
    ids = _check_ids(sample_ids)
    vectors = check_vectors(embeddings, "embeddings", len(ids))
    hashes = _check_column(hashes, "hashes", len(ids))
    labels = _check_column(labels, "labels", len(ids))
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, Real)
                                  or not 0.0 <= threshold <= 2.0):
        raise ValueError(f"threshold must be a cosine distance in [0, 2] or None for the "
                         f"data-driven default; got {threshold!r}.")
    unit = unit_rows(vectors)
    cutoff = MAX_DEFAULT_THRESHOLD if threshold is None else float(threshold)
    if index is not None and len(index.reference) != len(ids):
        raise ValueError(f"index must hold the {len(ids)} samples' own unit vectors; it holds "
                         f"{len(index.reference)} rows.")
    if use_approximate(search, len(unit), len(unit)):
        i, j, nearest = _approximate_scan(unit, cutoff, index)
    else:
        i, j, nearest = _scan(unit, cutoff)
    if threshold is None:
        finite = nearest[np.isfinite(nearest)]
        median = float(np.median(finite)) if len(finite) else 1.0
        threshold = float(np.clip(MEDIAN_FRACTION * median, EXACT_DISTANCE,
                                  MAX_DEFAULT_THRESHOLD))
    i, j = _add_hash_pairs(i, j, hashes)
    distance = _pair_distances(vectors, i, j)
    same_hash = np.array([hashes is not None and bool(hashes[p]) and hashes[p] == hashes[q]
                          for p, q in zip(i, j, strict=True)], dtype=bool)
    keep = same_hash | (distance <= threshold)
    i, j, distance, same_hash = i[keep], j[keep], distance[keep], same_hash[keep]
    result = _frame(ids, i, j, distance, same_hash, labels)
    result.attrs["threshold"] = float(threshold)
    return result


def _check_ids(sample_ids: Sequence) -> np.ndarray:
    if isinstance(sample_ids, str) or not hasattr(sample_ids, "__len__"):
        raise ValueError(f"sample_ids must be a sequence of ids, one per embedding row; got "
                         f"{type(sample_ids).__name__}.")
    ids = np.asarray(list(sample_ids), dtype=object)
    repeated = pd.Index(ids)[pd.Index(ids).duplicated()]
    if len(repeated):
        raise ValueError(f"sample_ids must be unique; {list(repeated[:3])} repeat.")
    return ids


def _check_column(values: Sequence | None, name: str, n: int) -> list | None:
    if values is None:
        return None
    if isinstance(values, str) or not hasattr(values, "__len__") or len(values) != n:
        got = len(values) if hasattr(values, "__len__") else type(values).__name__
        raise ValueError(f"{name} must be a sequence with one entry per sample ({n}, in "
                         f"sample_ids order); got {got!r}.")
    return [None if v is None or (np.ndim(v) == 0 and pd.isna(v)) else v for v in values]


def _scan(unit: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) within ``cutoff`` (float32, with slack) and each row's nearest distance."""
    n = len(unit)
    block = max(1, min(2048, _BLOCK_ENTRIES // max(n, 1)))
    nearest = np.full(n, np.inf)
    rows, cols = [], []
    for start in range(0, n, block):
        stop = min(start + block, n)
        dist = unit[start:stop] @ unit.T
        np.subtract(1.0, dist, out=dist)
        local = np.arange(stop - start)
        dist[local, local + start] = np.inf
        nearest[start:stop] = np.maximum(dist.min(axis=1), 0.0)
        r, c = np.nonzero(dist <= cutoff + 1e-5)
        upper = c > r + start
        rows.append(r[upper] + start)
        cols.append(c[upper])
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(rows) if rows else empty, np.concatenate(cols) if cols else empty,
            nearest)


def _approximate_scan(unit: np.ndarray, cutoff: float, shared: NeighbourIndex | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`_scan`, among each row's :data:`APPROXIMATE_NEIGHBOURS` nearest."""
    k = min(APPROXIMATE_NEIGHBOURS, len(unit) - 1)
    if k < 1:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.full(len(unit), np.inf)
    shared = shared or NeighbourIndex(unit, search="approximate")
    dist, index = shared.search(None, k)
    rows = np.repeat(np.arange(len(unit)), k)
    close = dist.ravel() <= cutoff + 1e-5
    low = np.minimum(rows[close], index.ravel()[close])
    high = np.maximum(rows[close], index.ravel()[close])
    pairs = np.unique(np.stack([low, high], axis=1), axis=0) if close.any() else \
        np.zeros((0, 2), dtype=np.int64)
    return pairs[:, 0], pairs[:, 1], dist[:, 0]


def _add_hash_pairs(i: np.ndarray, j: np.ndarray,
                    hashes: list | None) -> tuple[np.ndarray, np.ndarray]:
    pairs = set(zip(i.tolist(), j.tolist(), strict=True))
    if hashes is not None:
        members: dict[str, list[int]] = {}
        for index, value in enumerate(hashes):
            if value:
                members.setdefault(value, []).append(index)
        pairs.update((p, q) for group in members.values() for a, p in enumerate(group)
                     for q in group[a + 1:])
    ordered = sorted(pairs)
    return (np.array([p for p, _ in ordered], dtype=np.int64),
            np.array([q for _, q in ordered], dtype=np.int64))


def _pair_distances(vectors: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cosine distances of pairs, in float64 a few thousand at a time."""
    out = np.empty(len(i))
    for start in range(0, len(i), 4096):
        a = vectors[i[start:start + 4096]].astype(np.float64)
        b = vectors[j[start:start + 4096]].astype(np.float64)
        cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        out[start:start + 4096] = np.maximum(1.0 - cos, 0.0)
    return out


def _frame(ids: np.ndarray, i: np.ndarray, j: np.ndarray, distance: np.ndarray,
           same_hash: np.ndarray, labels: list | None) -> pd.DataFrame:
    label = [None] * len(i) if labels is None else [labels[p] for p in i]
    other = [None] * len(j) if labels is None else [labels[q] for q in j]
    conflicting = np.array([a is not None and b is not None and a != b
                            for a, b in zip(label, other, strict=True)], dtype=bool)
    order = np.lexsort((j, i, distance, ~conflicting))
    i, j, distance, same_hash, conflicting = (x[order] for x in
                                              (i, j, distance, same_hash, conflicting))
    label, other = [label[o] for o in order], [other[o] for o in order]
    n = len(ids)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    renumber: dict[int, int] = {}
    group = [renumber.setdefault(c, len(renumber)) for c in component[i]]
    return pd.DataFrame({
        "sample_id": _strings(ids[i]), "other_id": _strings(ids[j]), "distance": distance,
        "kind": _strings(np.where(same_hash | (distance <= EXACT_DISTANCE), "exact", "near")),
        "group": np.asarray(group, dtype=np.int64),
        "label": pd.Series(label, dtype=object), "other_label": pd.Series(other, dtype=object),
        "conflicting": conflicting,
    }, columns=_COLUMNS)


def _strings(values: np.ndarray) -> list | pd.Series:
    """A column of ids or names; an empty one stays object-typed, not float."""
    return values.tolist() if len(values) else pd.Series([], dtype=object)
