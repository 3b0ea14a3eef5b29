"""The k nearest neighbours of embeddings by cosine distance, exact or approximate.

Exact: NumPy similarities in row blocks, up to :data:`EXACT_PAIRS` query × reference
distances (about 16,000 samples against themselves). Approximate above (``search="auto"``):
faiss IVF on a PCA projection finds candidates, whose cosine distances are then computed
exactly on the full vectors. On clustered 1,280-d embeddings (bench/scale_metrics.py) it
finds ~98 % of the true 10 nearest neighbours of 100,000 samples; a distance it reports is
never below the exact one. Used by outliers, duplicates, coverage, label issues and drift.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np

Search = Literal["auto", "exact", "approximate"]
#: ``search="auto"`` is exact up to this many query × reference distances (e.g. 15,800
#: samples against themselves: ~10 s on 2 cores), approximate above.
EXACT_PAIRS = 250_000_000
#: Approximate search looks for neighbours among this many principal components ...
APPROX_DIMS = 128
#: ... fitted on at most this many reference rows (seeded sample; 5,000 rows give the same
#: neighbours as 20,000 on clustered 1,280-d embeddings, at a quarter of the covariance).
APPROX_TRAIN_ROWS = 5_000
#: Candidates re-ranked on the full vectors per neighbour asked for (2k + 1 for k).
APPROX_CANDIDATES = 2
#: Similarities held at once by the exact search: block rows × n_reference (128 MiB float32).
_BLOCK_ENTRIES = 2**25


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
    (fitted on :data:`APPROX_TRAIN_ROWS` seeded reference rows), a faiss IVF index of 8-bit
    codes with ``4 √n_reference`` lists (k-means, 5 iterations) searches ``n_lists / 32`` of them
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
        self._candidates: np.ndarray | None = None  # the reference's own, widest search kept

    def search(self, queries: np.ndarray | None, k: int, *,
               groups: np.ndarray | None = None,
               rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Distances (float64, ascending, ≥ 0) and reference rows (int64) of the ``k`` nearest,
        each of shape (n_queries, k).

        ``queries=None`` searches the reference itself, leaving out each row's own group
        (``groups``, one code per reference row; default: just the row itself, i.e. leave one
        out); ``rows`` (reference row numbers) limits that to those rows, in that order.
        ``k`` must not exceed the rows available to every query.
        """
        self_search = queries is None
        if rows is not None and not self_search:
            raise ValueError("rows= picks reference rows to search for; pass queries=None.")
        if self_search:
            rows = np.arange(len(self.reference)) if rows is None else \
                np.asarray(rows, dtype=np.int64)
            if groups is None:
                groups = np.arange(len(self.reference))
        count = len(rows) if self_search else len(queries)
        if use_approximate(self.mode, count, len(self.reference)):
            return self._approximate(queries, k, groups if self_search else None, rows)
        if self_search:
            return self._exact(self.reference[rows], rows, k, groups)
        return self._exact(queries, np.arange(count), k, None)

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
                # 8-bit codes: a quarter of the memory a search streams through, the same
                # candidates (they are re-ranked on the full vectors anyway)
                ivf = faiss.IndexIVFScalarQuantizer(quantizer, projected.shape[1], lists,
                                                    faiss.ScalarQuantizer.QT_8bit)
                ivf.cp.niter, ivf.cp.seed = 5, self.seed
                ivf.cp.max_points_per_centroid = 16
                ivf.cp.min_points_per_centroid = 4
                rng = np.random.default_rng(self.seed + 1)
                train = projected[np.sort(rng.choice(len(projected),
                                                     min(len(projected), 16 * lists),
                                                     replace=False))]
                ivf.train(train)
                ivf.add(projected)
                ivf.nprobe = max(1, lists // 32)
            self._ivf, self._projected = ivf, projected
        return self._ivf

    def _self_candidates(self, wanted: int) -> np.ndarray:
        """The reference rows' own ``wanted`` IVF candidates, from the widest search so far
        (faiss returns them nearest first, so a narrower search is its first columns): two
        analyses sharing an index (label issues: the kNN vote and identical images) search
        once."""
        if self._candidates is None or self._candidates.shape[1] < wanted:
            self._candidates = _searched(self._ivf, self._projected, wanted)
        return self._candidates[:, :wanted]

    def _approximate(self, queries: np.ndarray | None, k: int, groups: np.ndarray | None,
                     rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        ivf = self._index()
        self_search = queries is None
        every = self_search and len(rows) == len(self.reference) and bool(
            (rows == np.arange(len(rows))).all())
        vectors = self.reference if every else self.reference[rows] if self_search else queries
        projected = self._projected if every else \
            self._projected[rows] if self_search else self._project(queries)
        wanted = APPROX_CANDIDATES * k + 1
        if groups is not None:  # room for the rows of the query's own group
            largest = np.unique(groups, return_counts=True)[1].max() / len(groups)
            wanted = min(len(self.reference), int(np.ceil(wanted / max(1 - largest, 0.05))) + 1)
        candidates = self._self_candidates(wanted) if every else \
            _searched(ivf, projected, wanted)
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
                own = groups[rows[start:start + len(cand)]]
                invalid |= groups[np.maximum(cand, 0)] == own[:, None]
            sims[invalid] = -np.inf
            order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            best = np.take_along_axis(sims, order, axis=1)
            index[start:start + len(cand)] = np.take_along_axis(cand, order, axis=1)
            dist[start:start + len(cand)] = np.maximum(1.0 - best.astype(np.float64), 0.0)
            short.extend(start + np.flatnonzero(~np.isfinite(best[:, -1])))
        if short:  # too few candidates in the probed lists: search those rows exactly
            where = np.asarray(short, dtype=np.int64)
            dist[where], index[where] = self._exact(
                vectors[where], rows[where] if self_search else where, k, groups)
        return dist, index


def _searched(ivf: object, projected: np.ndarray, wanted: int) -> np.ndarray:
    with _faiss_threads():
        return ivf.search(projected, wanted)[1]


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


__all__ = ["APPROX_CANDIDATES", "APPROX_DIMS", "APPROX_TRAIN_ROWS", "EXACT_PAIRS",
           "NeighbourIndex", "Search", "use_approximate"]
