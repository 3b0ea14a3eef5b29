"""Which unlabelled images to label next: coverage and informativeness, from arrays.

>>> quotas = stratified_allocation([40, 25, 5], 12, keys=[("dim",), ("bright",), ("dusk",)])
>>> picks = k_center_greedy(vectors, 12, centres_mask=labelled, groups=codes, quotas=quotas)
>>> margin_scores(probs)["uncertainty"]           # 1 - (top1 - top2)
>>> disagreement_scores(fold_probs)["disagreement"]  # fold models voting differently
>>> greedy_by_score(vectors, scores, 20, centres_mask=labelled)  # best first, kept diverse
>>> typical_clusters(vectors, 12, centres_mask=labelled, seed=0)  # TypiClust: cover first
>>> diverse_top(vectors, scores, 20, centres_mask=labelled)  # top scores, one per cluster

``margin_scores``, ``disagreement_scores`` (:mod:`workbench.metrics.uncertainty`) and
``junk_outliers`` (:mod:`workbench.metrics.outliers`) are importable from here as before.
Vectors are compared by cosine distance (``1 - cosine similarity``, in [0, 2]). The greedy
selections skip near-duplicates as they go: a candidate at least ``duplicate_similarity``
similar to a centre (an already-labelled image) or to an earlier pick is never picked; it
comes back with ``status == "near_duplicate"`` and the row it duplicates, so a person can
decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import pandas as pd

from workbench.metrics.neighbours import NeighbourIndex, use_approximate
from workbench.metrics.outliers import (
    JUNK_FENCE,
    JUNK_MIN_SAMPLES,
    JUNK_NEIGHBOURS,
    junk_outliers,
)
from workbench.metrics.uncertainty import disagreement_scores, margin_scores
from workbench.metrics.vectors import check_vectors, unit_rows

#: Cosine similarity from which two images count as near-duplicates.
NEAR_DUPLICATE_SIMILARITY = 0.98
#: IQR multiple above the third quartile of kNN distances that makes an image look like junk
#: Neighbours averaged for typicality (TypiClust: density = 1 / mean distance to the k nearest).
TYPICAL_NEIGHBOURS = 20
#: Clusters smaller than this get a pick only once every larger one has one (TypiClust).
MIN_CLUSTER_SIZE = 5
#: Most k-means groups per stratum (TypiClust's own cap, ``MAX_NUM_CLUSTERS``): with many
#: labelled images, ``n_labelled + n`` groups would be one per image (80,000 labelled: a
#: k-means into ~6,700 groups per stratum). Above it, picks go to the groups with the
#: fewest labelled images and picks, largest first. Never fewer groups than picks.
MAX_CLUSTERS = 500
#: k-means runs on this many principal components of the unit vectors (faster, as good).
CLUSTER_DIMENSIONS = 64
#: :func:`diverse_top` clusters the ``pre * n`` best-scored candidates into ``n`` groups.
DIVERSE_PRE = 2.0
#: Largest row count clustered by scikit-learn's k-means; faiss above (issue 28: its
#: k-means++ start alone took 88 s for twelve strata of 8,000 rows into ~700 groups).
EXACT_KMEANS_MAX = 5_000
#: Lloyd iterations of the faiss k-means.
FAST_KMEANS_ITERATIONS = 20
#: Centre rows compared at once when computing distances to the nearest centre.
_BLOCK = 2048

_PICK_COLUMNS = ["row", "status", "rank", "distance", "gain", "nearest", "group"]


def k_center_greedy(vectors: np.ndarray, n: int, *, centres_mask: np.ndarray | None = None,
                    candidates_mask: np.ndarray | None = None, seed: int = 0,
                    groups: np.ndarray | None = None, quotas: np.ndarray | None = None,
                    duplicate_similarity: float = NEAR_DUPLICATE_SIMILARITY) -> pd.DataFrame:
    """Greedy k-center (coreset): repeatedly pick the candidate farthest from every centre
    and every earlier pick.

    Parameters
    ----------
    vectors : array-like of shape (n_samples, n_features)
        Embeddings (normalised to unit length here).
    n : int
        Most picks.
    centres_mask : array-like of bool, shape (n_samples,), optional
        Rows already covered (labelled images): never picked, distances start from them.
        Without any, the first pick is drawn at random with ``seed``.
    candidates_mask : array-like of bool, shape (n_samples,), optional
        Rows that may be picked (default: every row that is not a centre).
    seed : int, default 0
        Draws the first pick when there is no centre.
    groups : array-like of int, shape (n_samples,), optional
        Stratum of each row (codes ``0 … n_groups - 1``), with ``quotas``.
    quotas : array-like of int, shape (n_groups,), optional
        Most picks per stratum (e.g. :func:`stratified_allocation`). When the strata with
        quota left have no candidate left, the remaining picks are made from any stratum.
    duplicate_similarity : float, default :data:`NEAR_DUPLICATE_SIMILARITY`

    Returns
    -------
    pd.DataFrame
        One row per decided candidate: picks in pick order, then near-duplicates.
        ``row`` (index into ``vectors``), ``status`` (``"picked"`` or
        ``"near_duplicate"``), ``rank`` (1 = first pick; NA for a near-duplicate),
        ``distance`` (cosine distance to the nearest centre or earlier pick when it was
        picked, NaN for the first pick without centres; for a near-duplicate the distance
        to the image it duplicates), ``gain`` (what the pick maximised: its ``distance``
        here; NaN for a random first pick and for near-duplicates; never increases from one
        pick to the next), ``nearest`` (the nearest centre's or pick's row, -1 when none),
        ``group``.
    """
    unit, centres, candidates, groups, quotas = _check_selection(
        vectors, n, centres_mask, candidates_mask, groups, quotas, duplicate_similarity)
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")
    return _greedy(unit, int(n), centres, candidates, groups=groups, quotas=quotas,
                   dup_distance=1.0 - float(duplicate_similarity),
                   rng=np.random.default_rng(int(seed)), base=None, coverage_weight=1.0)


def greedy_by_score(vectors: np.ndarray, scores: np.ndarray, n: int, *,
                    centres_mask: np.ndarray | None = None,
                    candidates_mask: np.ndarray | None = None, coverage_weight: float = 0.2,
                    duplicate_similarity: float = NEAR_DUPLICATE_SIMILARITY) -> pd.DataFrame:
    """Pick by ``scores`` (higher first) plus a coverage term, updated after every pick so a
    batch does not pile up in one corner of the data.

    Each step picks the candidate maximising ``scores + coverage_weight * coverage``, where
    ``coverage`` is its cosine distance to the nearest centre or earlier pick divided by the
    largest such distance at the start (1 without centres), capped at 1.

    Parameters
    ----------
    vectors : array-like of shape (n_samples, n_features)
    scores : array-like of shape (n_samples,)
        Informativeness of each row (e.g. uncertainty, disagreement); finite.
    n : int
    centres_mask, candidates_mask, duplicate_similarity
        As :func:`k_center_greedy`.
    coverage_weight : float, default 0.2
        Weight of the coverage term (0: the top ``n`` by score, near-duplicates skipped).

    Returns
    -------
    pd.DataFrame
        As :func:`k_center_greedy`; ``gain`` is the maximised ``scores + coverage_weight *
        coverage`` and ``group`` is 0.
    """
    unit, centres, candidates, groups, quotas = _check_selection(
        vectors, n, centres_mask, candidates_mask, None, None, duplicate_similarity)
    base = np.asarray(scores, dtype=np.float64)
    if base.shape != (len(unit),) or not np.isfinite(base).all():
        raise ValueError(f"scores must be {len(unit)} finite numbers, one per vector row; got "
                         f"shape {base.shape}.")
    if isinstance(coverage_weight, bool) or not isinstance(coverage_weight, Real) \
            or coverage_weight < 0:
        raise ValueError(f"coverage_weight must be a number >= 0; got {coverage_weight!r}.")
    return _greedy(unit, int(n), centres, candidates, groups=groups, quotas=quotas,
                   dup_distance=1.0 - float(duplicate_similarity), rng=None, base=base,
                   coverage_weight=float(coverage_weight))


def typicality(vectors: np.ndarray, *, k: int = TYPICAL_NEIGHBOURS) -> np.ndarray:
    """How typical each vector is of its neighbourhood: ``1 / mean cosine distance to its k
    nearest other vectors`` (TypiClust's density; higher = more typical).

    Parameters
    ----------
    vectors : array-like of shape (n_samples, n_features)
    k : int, default :data:`TYPICAL_NEIGHBOURS`
        Fewer when there are fewer other vectors.

    Returns
    -------
    np.ndarray of shape (n_samples,)
        Finite and positive; all ones for a single vector.
    """
    unit = unit_rows(check_vectors(vectors, "vectors", None))
    _check_count(k, "k")
    return _typicality(unit, int(k))


def typical_clusters(vectors: np.ndarray, n: int, *, centres_mask: np.ndarray | None = None,
                     candidates_mask: np.ndarray | None = None, seed: int = 0,
                     groups: np.ndarray | None = None, quotas: np.ndarray | None = None,
                     duplicate_similarity: float = NEAR_DUPLICATE_SIMILARITY,
                     min_cluster_size: int = MIN_CLUSTER_SIZE,
                     neighbours: int = TYPICAL_NEIGHBOURS) -> pd.DataFrame:
    """TypiClust: cluster candidates and centres into ``n_centres + n`` groups (k-means on the
    unit vectors), then take, from each group no centre and no earlier pick covers, its most
    typical candidate (:func:`typicality` within the group); largest groups first.

    The groups are at most :data:`MAX_CLUSTERS` (or ``n``) per stratum, as in TypiClust.
    When every group is covered, the next picks go to the groups with the fewest centres and
    picks, largest first; among equally covered groups, those smaller than
    ``min_cluster_size`` come last. With ``groups``/``quotas`` (strata) the same runs inside
    each stratum for its quota, with the centres of its own stratum (give centres their
    stratum's code too); quota a stratum cannot use goes to the others.

    Parameters
    ----------
    vectors, n, centres_mask, candidates_mask, groups, quotas, duplicate_similarity
        As :func:`k_center_greedy`.
    seed : int, default 0
        Seeds k-means. Same seed, same picks.
    min_cluster_size : int, default :data:`MIN_CLUSTER_SIZE`
    neighbours : int, default :data:`TYPICAL_NEIGHBOURS`

    Returns
    -------
    pd.DataFrame
        As :func:`k_center_greedy` (``distance``: cosine distance to the nearest centre or
        earlier pick, NaN when none), ``gain`` is the pick's typicality, plus
        ``cluster_size`` (rows in its group) and ``cluster_covered`` (centres and earlier
        picks in its group when it was picked).
    """
    unit, centres, candidates, groups, quotas = _check_selection(
        vectors, n, centres_mask, candidates_mask, groups, quotas, duplicate_similarity)
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")
    _check_count(min_cluster_size, "min_cluster_size")
    _check_count(neighbours, "neighbours")
    dup_distance = 1.0 - float(duplicate_similarity)
    state = _Cover(unit, centres, candidates, dup_distance)
    strata = [(candidates, centres, int(n))] if quotas is None else \
        [(candidates & (groups == g), centres & (groups == g), int(q))
         for g, q in enumerate(quotas) if q > 0]
    for mask, covering, quota in strata:
        state.typiclust(mask, covering, quota, int(seed), int(min_cluster_size),
                        int(neighbours))
    if len(state.picks) < n:  # strata ran out: the rest from any stratum
        state.typiclust(candidates, centres | state.picked, int(n) - len(state.picks),
                        int(seed), int(min_cluster_size), int(neighbours))
    return state.frame(groups)


def diverse_top(vectors: np.ndarray, scores: np.ndarray, n: int, *,
                centres_mask: np.ndarray | None = None,
                candidates_mask: np.ndarray | None = None, seed: int = 0,
                pre: float = DIVERSE_PRE, neighbours: int = TYPICAL_NEIGHBOURS,
                duplicate_similarity: float = NEAR_DUPLICATE_SIMILARITY) -> pd.DataFrame:
    """A diverse batch of high scorers: the ``pre * n`` best-scored candidates are clustered
    into ``n`` groups (k-means) and each group gives the candidate with the highest
    ``score * typicality`` (typicality over all candidates, scaled to a maximum of 1), so a
    batch neither piles up in one corner nor chases outliers.

    Parameters
    ----------
    vectors, scores, n, centres_mask, candidates_mask, duplicate_similarity
        As :func:`greedy_by_score`.
    seed : int, default 0
        Seeds k-means.
    pre : float, default :data:`DIVERSE_PRE`
        How many times ``n`` best-scored candidates are clustered (>= 1; 1 = the top ``n``).
    neighbours : int, default :data:`TYPICAL_NEIGHBOURS`

    Returns
    -------
    pd.DataFrame
        As :func:`k_center_greedy`, picks by decreasing ``scores`` (``gain``); a
        near-duplicate of a centre or of a pick is replaced by the next in its group.
    """
    unit, centres, candidates, _, _ = _check_selection(
        vectors, n, centres_mask, candidates_mask, None, None, duplicate_similarity)
    base = np.asarray(scores, dtype=np.float64)
    if base.shape != (len(unit),) or not np.isfinite(base).all():
        raise ValueError(f"scores must be {len(unit)} finite numbers, one per vector row; got "
                         f"shape {base.shape}.")
    if isinstance(pre, bool) or not isinstance(pre, Real) or pre < 1:
        raise ValueError(f"pre must be a number >= 1; got {pre!r}.")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")
    _check_count(neighbours, "neighbours")
    state = _Cover(unit, centres, candidates, 1.0 - float(duplicate_similarity))
    cand = np.flatnonzero(state.open)
    if len(cand):
        typ = _typicality(unit[cand], int(neighbours))
        weight = base[cand] * typ / typ.max()
        top = cand[np.argsort(-base[cand], kind="stable")[:max(int(np.ceil(pre * n)), n)]]
        labels = _kmeans(unit[top], min(int(n), len(top)), int(seed))
        where = {row: i for i, row in enumerate(cand)}
        chosen = []
        for cluster in range(labels.max() + 1 if len(labels) else 0):
            members = top[labels == cluster]
            order = members[np.argsort(-weight[[where[r] for r in members]], kind="stable")]
            chosen.append(list(order))
        # one per group, by score; near-duplicates fall through to the group's next
        firsts = sorted(chosen, key=lambda group: -base[group[0]])
        for group in firsts:
            for row in group:
                if state.open[row]:
                    state.take(row, base[row])
                    break
        rest = list(top[np.argsort(-base[top], kind="stable")])
        for row in rest:
            if len(state.picks) >= n:
                break
            if state.open[row]:
                state.take(row, base[row])
    picks = sorted(state.picks, key=lambda rec: -rec[4])[:int(n)]
    state.picks = picks
    return state.frame(np.zeros(len(unit), dtype=int))


def stratified_allocation(sizes: Sequence[int], n: int, *,
                          keys: Sequence[Sequence] | None = None) -> np.ndarray:
    """Share ``n`` picks among strata in proportion to their sizes, at least one each where
    possible.

    Parameters
    ----------
    sizes : sequence of int, length n_strata
        Candidates in each stratum.
    n : int
        Picks to share (at most ``sum(sizes)`` are given).
    keys : sequence of tuples, length n_strata, optional
        Each stratum's slice values (one per slice field, e.g. ``("A", "cam1", "dim")``).
        When ``n`` is smaller than the number of strata, the single picks go first to the
        strata that bring the most slice values not covered yet (then the larger), so every
        value of every field gets a pick when ``n`` is at least the number of distinct
        (field, value) pairs.

    Returns
    -------
    np.ndarray of int, shape (n_strata,)
        Picks per stratum, never more than its size; largest remainders (then the earlier
        stratum) break ties.
    """
    size = np.asarray(sizes)
    if size.ndim != 1 or not np.issubdtype(size.dtype, np.integer) or (size < 0).any():
        raise ValueError(f"sizes must be a sequence of non-negative integers; got {sizes!r:.80}.")
    _check_count(n, "n")
    if keys is not None and len(keys) != len(size):
        raise ValueError(f"keys must hold one tuple per stratum ({len(size)}); got {len(keys)}.")
    size = size.astype(int)
    total = int(size.sum())
    n = min(int(n), total)
    quota = np.zeros(len(size), dtype=int)
    present = np.flatnonzero(size > 0)
    if n >= len(present):
        quota[present] = 1
    elif keys is not None:
        uncovered = {(i, v) for s in present for i, v in enumerate(keys[s])}
        while quota.sum() < n:
            open_ = [s for s in present if quota[s] == 0]
            gains = [len({(i, v) for i, v in enumerate(keys[s])} & uncovered) for s in open_]
            best = max(range(len(open_)), key=lambda j: (gains[j], size[open_[j]], -j))
            quota[open_[best]] = 1
            uncovered -= {(i, v) for i, v in enumerate(keys[open_[best]])}
    else:
        quota[np.argsort(-size, kind="stable")[:n]] = 1
    share = n * size / max(total, 1)
    while quota.sum() < n:
        deficit = np.where(quota < size, share - quota, -np.inf)
        quota[int(np.argmax(deficit))] += 1
    return quota


# -- internals -------------------------------------------------------------------------------
def _check_count(n: object, name: str) -> None:
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {n!r}.")


def _mask(values: np.ndarray | None, name: str, n: int, default: bool) -> np.ndarray:
    if values is None:
        return np.full(n, default, dtype=bool)
    mask = np.asarray(values)
    if mask.shape != (n,) or mask.dtype != bool:
        raise ValueError(f"{name} must be a boolean array with one entry per vector row "
                         f"({n}); got shape {mask.shape}, dtype {mask.dtype}.")
    return mask


def _check_selection(vectors: np.ndarray, n: object, centres_mask: np.ndarray | None,
                     candidates_mask: np.ndarray | None, groups: np.ndarray | None,
                     quotas: np.ndarray | None, duplicate_similarity: object
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                np.ndarray | None]:
    unit = unit_rows(check_vectors(vectors, "vectors", None))
    _check_count(n, "n")
    rows = len(unit)
    centres = _mask(centres_mask, "centres_mask", rows, False)
    candidates = _mask(candidates_mask, "candidates_mask", rows, True) & ~centres
    if isinstance(duplicate_similarity, bool) or not isinstance(duplicate_similarity, Real) \
            or not -1.0 <= duplicate_similarity <= 1.0:
        raise ValueError(f"duplicate_similarity must be a cosine similarity in [-1, 1] (1 "
                         f"skips exact copies only); got {duplicate_similarity!r}.")
    if (groups is None) != (quotas is None):
        raise ValueError("groups and quotas go together: pass both or neither.")
    if groups is None:
        return unit, centres, candidates, np.zeros(rows, dtype=int), None
    codes, quota = np.asarray(groups), np.asarray(quotas)
    if codes.shape != (rows,) or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"groups must be integer codes, one per vector row ({rows}); got "
                         f"shape {codes.shape}, dtype {codes.dtype}.")
    if quota.ndim != 1 or not np.issubdtype(quota.dtype, np.integer) or (quota < 0).any() \
            or (len(codes) and (codes.min() < 0 or codes.max() >= len(quota))):
        raise ValueError(f"quotas must be non-negative integers, one per group code 0 … "
                         f"{int(codes.max()) if len(codes) else 0}; got {quotas!r:.80}.")
    return unit, centres, candidates, codes.astype(int), quota.astype(int).copy()


def _typicality(unit: np.ndarray, k: int) -> np.ndarray:
    """``1 / mean distance to the k nearest others``; approximate neighbours above
    :data:`~workbench.metrics.neighbours.EXACT_PAIRS` distances."""
    if len(unit) < 2:
        return np.ones(len(unit))
    k = min(k, len(unit) - 1)
    if use_approximate("auto", len(unit), len(unit)):
        mean = NeighbourIndex(unit, search="approximate").search(None, k)[0].mean(axis=1)
        return 1.0 / (np.maximum(mean, 0.0) + 1e-6)
    out = np.empty(len(unit))
    for start in range(0, len(unit), _BLOCK):
        d = 1.0 - (unit[start:start + _BLOCK] @ unit.T).astype(np.float64)
        near = np.partition(d, k, axis=1)[:, :k + 1]  # itself (distance ~0) and k nearest
        mean = (near.sum(axis=1) - near.min(axis=1)) / k
        out[start:start + _BLOCK] = 1.0 / (np.maximum(mean, 0.0) + 1e-6)
    return out


def _kmeans(unit: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster labels of k-means (k groups) on at most :data:`CLUSTER_DIMENSIONS` principal
    components of unit vectors, seeded: scikit-learn up to :data:`EXACT_KMEANS_MAX` rows,
    faiss (PCA fitted on a sample, :data:`FAST_KMEANS_ITERATIONS` iterations) above."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    if k <= 1 or len(unit) <= k:
        return np.arange(len(unit)) if len(unit) <= k else np.zeros(len(unit), dtype=int)
    if len(unit) > EXACT_KMEANS_MAX:
        return _fast_kmeans(unit, k, seed)
    coords = unit.astype(np.float64)
    if coords.shape[1] > CLUSTER_DIMENSIONS and len(coords) > CLUSTER_DIMENSIONS:
        coords = PCA(CLUSTER_DIMENSIONS, random_state=seed).fit_transform(coords)
        coords /= np.maximum(np.linalg.norm(coords, axis=1, keepdims=True), 1e-12)
    return KMeans(k, n_init=1, random_state=seed).fit(coords).labels_


def _fast_kmeans(unit: np.ndarray, k: int, seed: int) -> np.ndarray:
    import faiss
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    sample = unit[np.sort(rng.choice(len(unit), min(len(unit), EXACT_KMEANS_MAX),
                                     replace=False))]
    coords = np.asarray(unit, dtype=np.float32)
    if unit.shape[1] > CLUSTER_DIMENSIONS:
        pca = PCA(CLUSTER_DIMENSIONS, random_state=seed).fit(sample.astype(np.float64))
        basis = pca.components_.T.astype(np.float32)
        shift = (pca.mean_ @ pca.components_.T).astype(np.float32)
        coords = np.concatenate([unit[start:start + 8192] @ basis - shift
                                 for start in range(0, len(unit), 8192)])
        coords /= np.maximum(np.linalg.norm(coords, axis=1, keepdims=True), 1e-12)
    coords = np.ascontiguousarray(coords, dtype=np.float32)
    means = faiss.Kmeans(coords.shape[1], k, niter=FAST_KMEANS_ITERATIONS, seed=seed,
                         max_points_per_centroid=256, min_points_per_centroid=1,
                         verbose=False)  # few rows per group is what TypiClust asks
    means.train(coords)
    return means.index.search(coords, 1)[1][:, 0].astype(int)


def _nearest_centre(unit: np.ndarray, rows: np.ndarray,
                    centre_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distance (inf without centres) and row of each row's nearest centre; by an
    approximate index above :data:`~workbench.metrics.neighbours.EXACT_PAIRS` pairs (20,000
    unlabelled against 80,000 labelled: 23 s exact)."""
    dist, near = np.full(len(rows), np.inf), np.full(len(rows), -1)
    if not len(rows) or not len(centre_rows):
        return dist, near
    if use_approximate("auto", len(rows), len(centre_rows)):
        found, index = NeighbourIndex(unit[centre_rows]).search(unit[rows], 1)
        return found[:, 0], centre_rows[index[:, 0]]
    for start in range(0, len(centre_rows), _BLOCK):
        block = centre_rows[start:start + _BLOCK]
        sims = unit[rows] @ unit[block].T
        best = sims.argmax(axis=1)
        d = 1.0 - sims[np.arange(len(rows)), best].astype(np.float64)
        closer = d < dist
        dist[closer], near[closer] = d[closer], block[best[closer]]
    return dist, near


class _Cover:
    """Picks made so far, distances to the nearest centre or pick, near-duplicates."""

    def __init__(self, unit: np.ndarray, centres: np.ndarray, candidates: np.ndarray,
                 dup_distance: float) -> None:
        self.unit, self.centres, self.dup = unit, centres, dup_distance
        rows = len(unit)
        self.dist, self.near = np.full(rows, np.inf), np.full(rows, -1)
        cand = np.flatnonzero(candidates)
        self.dist[cand], self.near[cand] = _nearest_centre(unit, cand, np.flatnonzero(centres))
        self.open = candidates.copy()
        self.picked = np.zeros(rows, dtype=bool)
        self.picks: list[tuple] = []  # (row, distance, nearest, cluster info, gain)
        self.duplicates: list[tuple] = []
        self._drop(cand[self.dist[cand] <= dup_distance], self.dist, self.near)

    def _drop(self, rows: np.ndarray, dist: np.ndarray, near: np.ndarray) -> None:
        for row in rows:
            if self.open[row]:
                self.open[row] = False
                self.duplicates.append((int(row), max(float(dist[row]), 0.0), int(near[row])))

    def take(self, row: int, gain: float, size: int = 0, covered: int = 0) -> None:
        shown = self.dist[row] if np.isfinite(self.dist[row]) else np.nan
        self.picks.append((int(row), shown, int(self.near[row]), (size, covered), float(gain)))
        self.open[row], self.picked[row] = False, True
        rest = np.flatnonzero(self.open)
        d = 1.0 - (self.unit[rest] @ self.unit[row]).astype(np.float64)
        closer = d < self.dist[rest]
        self.dist[rest[closer]], self.near[rest[closer]] = d[closer], row
        copies = rest[d <= self.dup]
        dist, near = np.full(len(self.unit), np.nan), np.full(len(self.unit), row)
        dist[copies] = d[d <= self.dup]
        self._drop(copies, dist, near)

    def typiclust(self, mask: np.ndarray, covering: np.ndarray, quota: int, seed: int,
                  min_size: int, neighbours: int) -> None:
        cand = np.flatnonzero(mask & self.open)
        covered_rows = np.flatnonzero(covering | (self.picked & mask))
        if quota < 1 or not len(cand):
            return
        rows = np.concatenate([cand, covered_rows])
        groups = min(len(covered_rows) + quota, max(MAX_CLUSTERS, quota), len(rows))
        labels = _kmeans(self.unit[rows], groups, seed)
        k = int(labels.max()) + 1
        sizes = np.bincount(labels, minlength=k)
        covered = np.bincount(labels[len(cand):], minlength=k)
        members = [cand[labels[:len(cand)] == j] for j in range(k)]
        typ: dict[int, np.ndarray] = {}
        taken = 0
        while taken < quota:
            open_ = [j for j in range(k) if self.open[members[j]].any()]
            if not open_:
                break
            j = min(open_, key=lambda c: (covered[c], sizes[c] < min_size, -sizes[c], c))
            if j not in typ:
                group = rows[labels == j]
                values = _typicality(self.unit[group], neighbours)
                typ[j] = dict(zip(group.tolist(), values.tolist(), strict=True))
            options = [r for r in members[j] if self.open[r]]
            best = max(options, key=lambda r: (typ[j][r], -r))
            self.take(best, typ[j][best], int(sizes[j]), int(covered[j]))
            covered[j] += 1
            taken += 1

    def frame(self, groups: np.ndarray) -> pd.DataFrame:
        records = [(row, "picked", rank, dist, gain, near, groups[row], size, cov)
                   for rank, (row, dist, near, (size, cov), gain)
                   in enumerate(self.picks, start=1)]
        records += [(row, "near_duplicate", pd.NA, dist, np.nan, near, groups[row], 0, 0)
                    for row, dist, near in self.duplicates]
        frame = pd.DataFrame(records, columns=[*_PICK_COLUMNS, "cluster_size",
                                               "cluster_covered"])
        return frame.astype({"row": int, "status": object, "rank": "Int64", "distance": float,
                             "gain": float, "nearest": int, "group": int, "cluster_size": int,
                             "cluster_covered": int})


def _greedy(unit: np.ndarray, n: int, centres: np.ndarray, candidates: np.ndarray, *,
            groups: np.ndarray, quotas: np.ndarray | None, dup_distance: float,
            rng: np.random.Generator | None, base: np.ndarray | None,
            coverage_weight: float) -> pd.DataFrame:
    """The engine of both greedy selections, in candidate space (trusts its inputs)."""
    cand = np.flatnonzero(candidates)
    vecs = unit[cand]
    dist, near = _nearest_centre(unit, cand, np.flatnonzero(centres))
    decided = np.zeros(len(cand), dtype=bool)
    records: list[tuple] = []
    duplicates = np.flatnonzero(dist <= dup_distance)
    decided[duplicates] = True
    records += [(cand[i], "near_duplicate", pd.NA, max(dist[i], 0.0), np.nan, near[i],
                 groups[cand[i]]) for i in duplicates]
    finite = dist[np.isfinite(dist) & ~decided]
    scale = float(finite.max()) if len(finite) and finite.max() > 0 else 1.0
    picked = 0
    cand_groups = groups[cand]
    while picked < n:
        eligible = ~decided
        if quotas is not None:
            eligible &= quotas[cand_groups] > 0
            if not eligible.any() and (~decided).any():
                quotas = None  # strata with quota left ran out of candidates
                continue
        options = np.flatnonzero(eligible)
        if not len(options):
            break
        if base is None:
            if np.isinf(dist[options]).all():
                i, gain = int(rng.choice(options)), np.nan
            else:
                best = int(np.argmax(dist[options]))
                i, gain = int(options[best]), float(dist[options[best]])
        else:
            objective = base[cand[options]] + coverage_weight * np.minimum(dist[options] / scale,
                                                                            1.0)
            best = int(np.argmax(objective))
            i, gain = int(options[best]), float(objective[best])
        picked += 1
        shown = dist[i] if np.isfinite(dist[i]) else np.nan
        records.append((cand[i], "picked", picked, shown, gain, near[i], cand_groups[i]))
        decided[i] = True
        if quotas is not None:
            quotas[cand_groups[i]] -= 1
        d = 1.0 - (vecs @ vecs[i]).astype(np.float64)
        closer = d < dist
        dist[closer], near[closer] = d[closer], cand[i]
        copies = np.flatnonzero(~decided & (d <= dup_distance))
        decided[copies] = True
        records += [(cand[j], "near_duplicate", pd.NA, max(d[j], 0.0), np.nan, cand[i],
                     cand_groups[j]) for j in copies]
    frame = pd.DataFrame(records, columns=_PICK_COLUMNS)
    frame = pd.concat([frame[frame["status"] == "picked"],
                       frame[frame["status"] != "picked"]], ignore_index=True)
    return frame.astype({"row": int, "status": object, "rank": "Int64", "distance": float,
                         "gain": float, "nearest": int, "group": int})


__all__ = ["CLUSTER_DIMENSIONS", "DIVERSE_PRE", "JUNK_FENCE", "JUNK_MIN_SAMPLES",
           "JUNK_NEIGHBOURS", "MIN_CLUSTER_SIZE", "NEAR_DUPLICATE_SIMILARITY",
           "TYPICAL_NEIGHBOURS", "disagreement_scores", "diverse_top", "greedy_by_score",
           "junk_outliers", "k_center_greedy", "margin_scores", "stratified_allocation",
           "typical_clusters", "typicality"]
