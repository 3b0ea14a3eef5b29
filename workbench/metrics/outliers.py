"""Outliers: how unusual each image is, by its distance to its nearest neighbours.

>>> scores = outlier_scores(sample_ids, vectors)  # most unusual first
>>> outlier_scores(new_ids, new_vectors, reference=train_vectors)  # a new batch vs training

``ood_score`` is the mean cosine distance to the ``k`` nearest reference embeddings;
``outlier_score = exp(-ood_score / scale)`` with ``scale`` the median of the reference's
leave-one-out scores, as ``cleanlab.outlier.OutOfDistribution`` (2.9) maps distances to
[0, 1]. Reference scores are always leave-one-out, so a batch scored against the reference
is on the same scale as the reference itself.

Neighbours come from :class:`workbench.metrics.neighbours.NeighbourIndex` (exact up to
:data:`~workbench.metrics.neighbours.EXACT_PAIRS` distances, approximate above).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import pandas as pd

from workbench.metrics.neighbours import NeighbourIndex, Search, use_approximate
from workbench.metrics.vectors import check_vectors, unit_rows

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
#: :func:`junk_outliers` with ``rows``: the fence's quartiles from a sample of this many rows.
FENCE_ROWS = 10_000


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
                  min_samples: int = JUNK_MIN_SAMPLES, search: Search = "auto",
                  rows: np.ndarray | None = None, seed: int = 0) -> pd.DataFrame:
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
    rows : array of int, optional
        Only these rows need a verdict (e.g. the unlabelled candidates of
        ``suggest_labels``). Each is still scored against every row; when the others are
        many, the fence comes from a seeded sample of :data:`FENCE_ROWS` of all rows
        instead of every score (100,000 rows, 20,000 asked: 30,000 searches, not 100,000).
    seed : int, default 0
        Draws that sample.

    Returns
    -------
    pd.DataFrame of shape (n_samples, 2), row order
        ``ood_score`` (mean kNN cosine distance; NaN for a row not scored) and ``is_junk``;
        ``attrs["cutoff"]`` holds the fence (inf when nothing could be flagged).
    """
    matrix = check_vectors(vectors, "vectors", None)
    if isinstance(fence, bool) or not isinstance(fence, Real) or fence < 0:
        raise ValueError(f"fence must be a number >= 0; got {fence!r}.")
    if len(matrix) < max(int(min_samples), 2):
        frame = pd.DataFrame({"ood_score": np.full(len(matrix), np.nan),
                              "is_junk": np.zeros(len(matrix), dtype=bool)})
        frame.attrs["cutoff"] = float("inf")
        return frame
    asked = None if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
    if asked is not None and len(asked) and (asked[0] < 0 or asked[-1] >= len(matrix)):
        raise ValueError(f"rows must be row numbers in 0 … {len(matrix) - 1}; got "
                         f"{asked[0]} … {asked[-1]}.")
    ood = np.full(len(matrix), np.nan)
    if asked is None or len(matrix) <= len(asked) + FENCE_ROWS:
        scores = outlier_scores(np.arange(len(matrix)), matrix, k=k, search=search)
        ood[scores["sample_id"].to_numpy(dtype=np.int64)] = scores["ood_score"].to_numpy()
        fenced = ood
    else:
        sample = np.random.default_rng(seed).choice(len(matrix), FENCE_ROWS, replace=False)
        scored = np.union1d(asked, sample)
        k = min(int(k), len(matrix) - 1)
        index = NeighbourIndex(unit_rows(matrix), search=search)
        ood[scored] = index.search(None, k, rows=scored)[0].mean(axis=1)
        fenced = ood[sample]
    q1, q3 = np.percentile(fenced, [25, 75])
    cutoff = float(q3 + fence * (q3 - q1))
    frame = pd.DataFrame({"ood_score": ood, "is_junk": ood > cutoff})
    if asked is not None:
        frame.loc[np.setdiff1d(np.arange(len(matrix)), asked), "is_junk"] = False
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
