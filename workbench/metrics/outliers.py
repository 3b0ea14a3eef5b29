"""Outliers: how unusual each image is, by its distance to its nearest neighbours.

>>> scores = outlier_scores(sample_ids, vectors)  # most unusual first
>>> outlier_scores(new_ids, new_vectors, reference=train_vectors)  # a new batch vs training

``ood_score`` is the mean cosine distance to the ``k`` nearest reference embeddings;
``outlier_score = exp(-ood_score / scale)`` with ``scale`` the median of the reference's
leave-one-out scores, as ``cleanlab.outlier.OutOfDistribution`` (2.9) maps distances to
[0, 1]. Reference scores are always leave-one-out, so a batch scored against the reference
is on the same scale as the reference itself.

Nearest neighbours (:class:`NeighbourIndex`, also used by duplicates, coverage, label issues
and drift): exact NumPy search in row blocks up to :data:`EXACT_PAIRS` query × reference
distances (about 16,000 samples against themselves), approximate above (``search="auto"``):
faiss IVF on a PCA projection finds candidates, whose cosine distances are then computed
exactly on the full vectors. On clustered 1,280-d embeddings (bench/scale_metrics.py) it
finds ~98 % of the true 10 nearest neighbours of 100,000 samples; the mean distance it
reports is never below the exact one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from numbers import Integral, Real
from typing import Literal

import numpy as np
import pandas as pd

from workbench.metrics.vectors import check_vectors, unit_rows

Search = Literal["auto", "exact", "approximate"]
#: ``search="auto"`` is exact up to this many query × reference distances (e.g. 15,800
#: samples against themselves: ~10 s on 2 cores), approximate above.
EXACT_PAIRS = 250_000_000
#: Approximate search looks for neighbours among this many principal components ...
APPROX_DIMS = 128
#: ... fitted on at most this many reference rows (seeded sample).
APPROX_TRAIN_ROWS = 20_000
#: Candidates re-ranked on the full vectors per neighbour asked for (2k + 1 for k).
APPROX_CANDIDATES = 2

#: IQR multiple above the third quartile that makes an outlier (Tukey's fences).
IQR_FENCE = 1.5
#: Distances held at once: block rows × n_reference (128 MiB of float32).
_BLOCK_ENTRIES = 2**25

_COLUMNS = ["sample_id", "ood_score", "outlier_score", "is_outlier", "rank"]

#: (Tukey's "far out" fence; the ordinary 1.5 would drop rare but real defects).
JUNK_FENCE = 3.0
#: Neighbours averaged for the junk score: a genuine rare class has a few look-alikes.
JUNK_NEIGHBOURS = 3
#: Fewer images than this give no reliable spread of distances: nothing is called junk.
JUNK_MIN_SAMPLES = 20


def outlier_scores(sample_ids: Sequence, embeddings: np.ndarray, *,
                   reference: np.ndarray | None = None, k: int = 10,
                   contamination: float | None = None,
                   search: Search = "auto") -> pd.DataFrame:
    """Score each sample by its mean cosine distance to its k nearest reference samples.

    Parameters
    ----------
    sample_ids : sequence of length n_samples
        Ids, row for row with ``embeddings``.
    embeddings : array-like of shape (n_samples, n_features)
    reference : array-like of shape (n_reference, n_features), optional
        Embeddings to compare against (e.g. the training set's). Default: the samples
        themselves, each without itself. A sample that is also in ``reference`` finds
        itself at distance 0, so score a batch against a reference it is not part of.
    k : int, default 10
        Neighbours averaged; at most ``n_reference - 1`` are used.
    contamination : float in (0, 1), optional
        Flag as outliers the samples that would fall in the reference's top
        ``contamination`` share of scores (ties at the cut are all flagged), instead of
        Tukey's fence ``Q3 + 1.5 IQR`` of the reference's scores.
    search : {"auto", "exact", "approximate"}, default "auto"
        How neighbours are found (:class:`NeighbourIndex`): ``auto`` is exact up to
        :data:`EXACT_PAIRS` distances per search, approximate above (100,000 samples: ~30 s
        instead of ~7 min on 2 cores; a score can only come out a little higher).

    Returns
    -------
    pd.DataFrame of shape (n_samples, 5), most unusual first
        ``sample_id``, ``ood_score`` (mean kNN cosine distance; higher = more unusual),
        ``outlier_score`` (0–1, lower = more atypical), ``is_outlier``, ``rank`` (1 = most
        unusual). ``attrs`` holds ``k``, ``scale`` and ``ood_cutoff``, the ``ood_score``
        above which (``contamination``: from which) a sample is an outlier.
    """
    ids = _check_ids(sample_ids)
    vectors = unit_rows(check_vectors(embeddings, "embeddings", len(ids)))
    if reference is None:
        ref = vectors
    else:
        ref = unit_rows(check_vectors(reference, "reference", None))
        if ref.shape[1] != vectors.shape[1]:
            raise ValueError(f"reference must have the embeddings' {vectors.shape[1]} "
                             f"features per row; got {ref.shape[1]}. Embed both with the "
                             f"same backbone.")
    if len(ref) < 2:
        raise ValueError(f"reference needs at least 2 samples to compare neighbours; got "
                         f"{len(ref)}.")
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise ValueError(f"k must be a positive integer number of neighbours; got {k!r}.")
    if contamination is not None and (isinstance(contamination, bool)
                                      or not isinstance(contamination, Real)
                                      or not 0.0 < contamination < 1.0):
        raise ValueError(f"contamination must be a share in (0, 1), e.g. 0.05, or None for "
                         f"the IQR fence; got {contamination!r}.")
    k = min(int(k), len(ref) - 1)
    if use_approximate(search, len(ref), len(ref)) or (
            reference is not None and use_approximate(search, len(vectors), len(ref))):
        index = NeighbourIndex(ref, search="approximate")
        baseline = index.search(None, k)[0].mean(axis=1)
        ood = baseline if reference is None else index.search(vectors, k)[0].mean(axis=1)
    else:
        baseline = _mean_knn(ref, ref, k, leave_one_out=True)
        ood = baseline if reference is None else _mean_knn(vectors, ref, k,
                                                           leave_one_out=False)
    scale = max(float(np.median(baseline)), 100 * np.finfo(np.float64).eps)
    if contamination is None:
        q1, q3 = np.percentile(baseline, [25, 75])
        cutoff = float(q3 + IQR_FENCE * (q3 - q1))
        flagged = ood > cutoff
    else:
        top = math.ceil(contamination * len(baseline))
        cutoff = float(np.sort(baseline)[::-1][top - 1])
        flagged = ood >= cutoff
    order = np.argsort(-ood, kind="stable")
    result = pd.DataFrame({
        "sample_id": ids[order].tolist(), "ood_score": ood[order],
        "outlier_score": np.exp(-ood[order] / scale), "is_outlier": flagged[order],
        "rank": np.arange(1, len(ids) + 1),
    }, columns=_COLUMNS)
    result.attrs.update(k=k, scale=scale, ood_cutoff=cutoff)
    return result


def junk_outliers(vectors: np.ndarray, *, k: int = JUNK_NEIGHBOURS, fence: float = JUNK_FENCE,
                  min_samples: int = JUNK_MIN_SAMPLES, search: Search = "auto") -> pd.DataFrame:
    """Images so far from every other that they look like junk (blank frames, wrong
    camera, a finger on the lens), by the mean cosine distance to their ``k`` nearest.

    Parameters
    ----------
    vectors : array-like of shape (n_samples, n_features)
    k : int, default :data:`JUNK_NEIGHBOURS`
    fence : float, default :data:`JUNK_FENCE`
        An image is junk when its score exceeds ``Q3 + fence * IQR`` of all scores.
    min_samples : int, default :data:`JUNK_MIN_SAMPLES`
        With fewer rows nothing is flagged.
    search : {"auto", "exact", "approximate"}, default "auto"
        As :func:`outlier_scores`.

    Returns
    -------
    pd.DataFrame of shape (n_samples, 2), row order
        ``ood_score`` (mean kNN cosine distance) and ``is_junk``; ``attrs["cutoff"]`` holds
        the fence (inf when nothing could be flagged).
    """
    matrix = check_vectors(vectors, "vectors", None)
    if isinstance(fence, bool) or not isinstance(fence, Real) or fence < 0:
        raise ValueError(f"fence must be a number >= 0; got {fence!r}.")
    if len(matrix) < max(int(min_samples), 2):
        frame = pd.DataFrame({"ood_score": np.full(len(matrix), np.nan),
                              "is_junk": np.zeros(len(matrix), dtype=bool)})
        frame.attrs["cutoff"] = float("inf")
        return frame
    scores = outlier_scores(np.arange(len(matrix)), matrix, k=k, search=search)
    ood = np.empty(len(matrix))
    ood[scores["sample_id"].to_numpy(dtype=np.int64)] = scores["ood_score"].to_numpy()
    q1, q3 = np.percentile(ood, [25, 75])
    cutoff = float(q3 + fence * (q3 - q1))
    frame = pd.DataFrame({"ood_score": ood, "is_junk": ood > cutoff})
    frame.attrs["cutoff"] = cutoff
    return frame


def _check_ids(sample_ids: Sequence) -> np.ndarray:
    if isinstance(sample_ids, str) or not hasattr(sample_ids, "__len__") \
            or len(sample_ids) == 0:
        raise ValueError(f"sample_ids must be a non-empty sequence of ids, one per embedding "
                         f"row; got {sample_ids!r:.80}.")
    return np.asarray(list(sample_ids), dtype=object)


def _mean_knn(queries: np.ndarray, ref: np.ndarray, k: int, *,
              leave_one_out: bool) -> np.ndarray:
    """Mean cosine distance of each query to its k nearest ``ref`` rows, in row blocks."""
    out = np.empty(len(queries))
    block = max(1, min(2048, _BLOCK_ENTRIES // len(ref)))
    for start in range(0, len(queries), block):
        stop = min(start + block, len(queries))
        dist = queries[start:stop] @ ref.T
        np.subtract(1.0, dist, out=dist)
        np.maximum(dist, 0.0, out=dist)
        if leave_one_out:
            local = np.arange(stop - start)
            dist[local, local + start] = np.inf
        nearest = np.partition(dist, k - 1, axis=1)[:, :k]
        out[start:stop] = nearest.astype(np.float64).mean(axis=1)
    return out


# -- nearest neighbours ------------------------------------------------------------------------
def use_approximate(search: Search, n_queries: int, n_reference: int) -> bool:
    """Whether ``search`` means the approximate index for this many queries and references:
    ``"approximate"``, or ``"auto"`` above :data:`EXACT_PAIRS` distances."""
    if search not in ("auto", "exact", "approximate"):
        raise ValueError(f"search must be 'auto', 'exact' or 'approximate'; got {search!r}.")
    return search == "approximate" or (search == "auto"
                                       and n_queries * n_reference > EXACT_PAIRS)


class NeighbourIndex:
    """The k nearest reference rows of query rows by cosine distance, exact or approximate.

    Exact: similarities in blocks of rows (at most ``_BLOCK_ENTRIES`` at once), the k largest
    by partition. Approximate (above :data:`EXACT_PAIRS` distances with ``search="auto"``):
    the unit vectors are projected on their first :data:`APPROX_DIMS` principal components
    (fitted on :data:`APPROX_TRAIN_ROWS` seeded reference rows), a faiss ``IndexIVFFlat``
    with ``4 √n_reference`` lists (k-means, 10 iterations) searches ``n_lists / 32`` of them
    for ``APPROX_CANDIDATES × k + 1`` candidates per query, and those are re-ranked by their
    exact cosine distance on the full vectors; a query left with fewer than ``k`` candidates
    (outside its own group) is searched exactly. So every distance returned is exact, and a
    missed neighbour can only make the k-th distance larger. On 100,000 clustered 1,280-d
    embeddings: 98 % of the true 10 nearest found, ~30 s on 2 cores (exact: ~7 min).

    Parameters
    ----------
    reference : np.ndarray of shape (n_reference, n_features)
        Unit rows, float32 (:func:`workbench.metrics.vectors.unit_rows`); not copied.
    search : {"auto", "exact", "approximate"}, default "auto"
        ``auto`` decides per :meth:`search` call: approximate when the queries times
        ``n_reference`` exceed :data:`EXACT_PAIRS` (the index is built then, once).
    seed : int, default 0
        Seeds the PCA sample and k-means: same input, same neighbours.
    """

    def __init__(self, reference: np.ndarray, *, search: Search = "auto", seed: int = 0) -> None:
        use_approximate(search, 0, 0)  # validates
        self.reference, self.mode, self.seed = reference, search, seed
        self._ivf = None
        self._projection: tuple[np.ndarray, np.ndarray] | None = None
        self._projected: np.ndarray | None = None

    def search(self, queries: np.ndarray | None, k: int, *,
               groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Distances (float64, ascending, ≥ 0) and reference rows (int64) of the ``k`` nearest,
        each of shape (n_queries, k).

        ``queries=None`` searches the reference itself, leaving out each row's own group
        (``groups``, one code per reference row; default: just the row itself, i.e. leave one
        out). ``k`` must not exceed the rows available to every query.
        """
        self_search = queries is None
        rows = len(self.reference) if self_search else len(queries)
        if self_search and groups is None:
            groups = np.arange(rows)
        if use_approximate(self.mode, rows, len(self.reference)):
            return self._approximate(queries, k, groups if self_search else None)
        return self._exact(self.reference if self_search else queries, np.arange(rows), k,
                           groups if self_search else None)

    # exact ---------------------------------------------------------------------------------
    def _exact(self, queries: np.ndarray, rows: np.ndarray, k: int,
               groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact search of ``queries`` (``rows``: their reference rows for ``groups``)."""
        ref = self.reference
        dist = np.empty((len(queries), k))
        index = np.empty((len(queries), k), dtype=np.int64)
        block = max(1, min(2048, _BLOCK_ENTRIES // max(len(ref), 1)))
        for start in range(0, len(queries), block):
            sims = queries[start:start + block] @ ref.T
            if groups is not None:
                own = groups[rows[start:start + block]]
                sims[own[:, None] == groups[None, :]] = -np.inf
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(ref) else \
                np.broadcast_to(np.arange(len(ref)), (len(sims), len(ref))).copy()
            best = np.take_along_axis(sims, top, axis=1)
            order = np.argsort(-best, axis=1, kind="stable")
            index[start:start + block] = np.take_along_axis(top, order, axis=1)
            dist[start:start + block] = np.maximum(
                1.0 - np.take_along_axis(best, order, axis=1).astype(np.float64), 0.0)
        return dist, index

    # approximate ---------------------------------------------------------------------------
    def _project(self, vectors: np.ndarray) -> np.ndarray:
        if self._projection is None:
            ref = self.reference
            rng = np.random.default_rng(self.seed)
            sample = ref[np.sort(rng.choice(len(ref), min(len(ref), APPROX_TRAIN_ROWS),
                                            replace=False))]
            mean = sample.mean(axis=0, dtype=np.float64)
            if ref.shape[1] <= APPROX_DIMS:
                basis = np.eye(ref.shape[1])
            else:
                centred = sample - mean.astype(np.float32)
                _, vectors_ = np.linalg.eigh((centred.T @ centred).astype(np.float64))
                basis = vectors_[:, ::-1][:, :APPROX_DIMS]
            self._projection = (mean.astype(np.float32), basis.astype(np.float32))
        mean, basis = self._projection
        out = np.empty((len(vectors), basis.shape[1]), dtype=np.float32)
        shift = mean @ basis
        for start in range(0, len(vectors), 8192):
            np.subtract(vectors[start:start + 8192] @ basis, shift, out=out[start:start + 8192])
        return out

    def _index(self) -> object:
        if self._ivf is None:
            import faiss

            projected = self._project(self.reference)
            lists = int(np.clip(4 * np.sqrt(len(projected)), 1, 4096))
            with _faiss_threads():
                quantizer = faiss.IndexFlatL2(projected.shape[1])
                ivf = faiss.IndexIVFFlat(quantizer, projected.shape[1], lists)
                ivf.cp.niter, ivf.cp.seed = 10, self.seed
                ivf.cp.max_points_per_centroid = 32
                ivf.cp.min_points_per_centroid = 4
                rng = np.random.default_rng(self.seed + 1)
                train = projected[np.sort(rng.choice(len(projected),
                                                     min(len(projected), 32 * lists),
                                                     replace=False))]
                ivf.train(train)
                ivf.add(projected)
                ivf.nprobe = max(1, lists // 32)
            self._ivf, self._projected = ivf, projected
        return self._ivf

    def _approximate(self, queries: np.ndarray | None, k: int,
                     groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        ivf = self._index()
        self_search = queries is None
        vectors = self.reference if self_search else queries
        projected = self._projected if self_search else self._project(queries)
        wanted = APPROX_CANDIDATES * k + 1
        if groups is not None:  # room for the rows of the query's own group
            largest = np.unique(groups, return_counts=True)[1].max() / len(groups)
            wanted = min(len(self.reference), int(np.ceil(wanted / max(1 - largest, 0.05))) + 1)
        with _faiss_threads():
            candidates = ivf.search(projected, wanted)[1]
        dist = np.empty((len(vectors), k))
        index = np.empty((len(vectors), k), dtype=np.int64)
        short = []
        ref = self.reference
        for start in range(0, len(vectors), 256):
            cand = candidates[start:start + 256]
            sims = np.matmul(ref[np.maximum(cand, 0)],
                             vectors[start:start + 256, :, None])[:, :, 0]
            invalid = cand < 0
            if groups is not None:
                own = groups[np.arange(start, start + len(cand))]
                invalid |= groups[np.maximum(cand, 0)] == own[:, None]
            sims[invalid] = -np.inf
            order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            best = np.take_along_axis(sims, order, axis=1)
            index[start:start + len(cand)] = np.take_along_axis(cand, order, axis=1)
            dist[start:start + len(cand)] = np.maximum(1.0 - best.astype(np.float64), 0.0)
            short.extend(start + np.flatnonzero(~np.isfinite(best[:, -1])))
        if short:  # too few candidates in the probed lists: search those rows exactly
            rows = np.asarray(short, dtype=np.int64)
            dist[rows], index[rows] = self._exact(vectors[rows], rows, k, groups)
        return dist, index


@contextmanager
def _faiss_threads() -> Iterator[None]:
    """faiss on the cores this process may use (its default may count the whole machine)."""
    import faiss

    before = faiss.omp_get_max_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    faiss.omp_set_num_threads(max(1, cores or 1))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
