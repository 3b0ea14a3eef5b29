"""Near-copies and the folds that keep them together.

>>> signatures = np.stack([pixel_signature(Image.open(p)) for p in paths])
>>> pairs = near_copy_pairs(ids, signatures, embeddings=vectors, hashes=hashes)
>>> groups = copy_groups(len(ids), pairs, ids, given=part_ids)
>>> fold = grouped_folds(labels, groups, n_folds=5, seed=0)

A near-copy is the same picture again: the same file (content hash), an image whose
embedding is as close as a re-encoding (:func:`workbench.metrics.find_duplicates`'s
threshold), or one whose grey thumbnail matches after a mirror, a flip or a centred zoom
of up to 12 % (:data:`COPY_CORRELATION`). Measured on 300 NEU steel images with 90 planted
copies (mirror, 4–12 px crop, JPEG quality 70–90): embedding distances of copies (median
0.04–0.06) overlap those of different images (nearest neighbour median 0.077, 5th
percentile 0.032), while the thumbnail correlation of every copy was ≥ 0.99 and of no two
different images above 0.985 (the demo's casings: at most 0.913). A part re-shot from
another angle is found by its embedding only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold

from workbench.metrics.copy_search import APPROXIMATE_FROM, candidate_pixel_pairs
from workbench.metrics.duplicates import EXACT_DISTANCE, find_duplicates

#: Side of the grey thumbnail a signature compares.
SIGNATURE_SIDE = 24
#: Centred crops (share of the side) a signature holds: zooms of up to 12 % still match.
SIGNATURE_SCALES = (1.0, 0.97, 0.94, 0.91, 0.88)
#: Thumbnail correlation (best over zooms, mirror and flips) from which two images are copies.
COPY_CORRELATION = 0.99
#: Rows compared at once in :func:`near_copy_pairs`.
_BLOCK = 512

PAIR_COLUMNS = ["sample_id", "other_id", "distance", "correlation", "kind", "found_by"]


def pixel_signature(image: Image.Image | np.ndarray) -> np.ndarray:
    """Unit-norm, mean-free grey thumbnails of ``image`` at every :data:`SIGNATURE_SCALES`
    crop: float32 array (len(SIGNATURE_SCALES), SIGNATURE_SIDE²)."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    grey = picture.convert("L")
    width, height = grey.size
    rows = []
    for share in SIGNATURE_SCALES:
        w, h = width * share, height * share
        x0, y0 = (width - w) / 2, (height - h) / 2
        small = np.asarray(grey.resize((SIGNATURE_SIDE, SIGNATURE_SIDE), Image.BILINEAR,
                                       box=(x0, y0, x0 + w, y0 + h)), dtype=np.float32)
        small = small.ravel() - small.mean()
        rows.append(small / (np.linalg.norm(small) + 1e-6))
    return np.stack(rows)


def _flips(base: np.ndarray) -> list[np.ndarray]:
    """The full-view thumbnails (n, side²) as they are, mirrored, flipped and both."""
    square = base.reshape(len(base), SIGNATURE_SIDE, SIGNATURE_SIDE)
    return [v.reshape(len(base), -1) for v in
            (square, square[:, :, ::-1], square[:, ::-1, :], square[:, ::-1, ::-1])]


def pixel_pairs(signatures: np.ndarray,
                correlation: float = COPY_CORRELATION) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """Index pairs (i < j) whose thumbnails correlate at least ``correlation`` under some
    zoom of one and some mirror/flip of the other, with that correlation.

    Every pair is compared below :data:`~workbench.metrics.copy_search.APPROXIMATE_FROM`
    images; from there, candidates from faiss inverted lists are (see
    :mod:`workbench.metrics.copy_search`: the same pairs on 10,000 images, 5x faster).
    """
    signatures = np.asarray(signatures, dtype=np.float32)
    if signatures.ndim != 3 or signatures.shape[1:] != (len(SIGNATURE_SCALES),
                                                        SIGNATURE_SIDE ** 2):
        raise ValueError("signatures must be an array (n_samples, "
                         f"{len(SIGNATURE_SCALES)}, {SIGNATURE_SIDE ** 2}) of pixel_signature "
                         f"rows; got shape {signatures.shape}.")
    n = len(signatures)
    if n >= APPROXIMATE_FROM:
        return candidate_pixel_pairs(signatures, correlation)
    flips = _flips(signatures[:, 0])
    found: dict[tuple[int, int], float] = {}
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        best = np.full((stop - start, n), -1.0, dtype=np.float32)
        for scale in range(len(SIGNATURE_SCALES)):
            for flipped in flips:
                np.maximum(best, signatures[start:stop, scale] @ flipped.T, out=best)
        local = np.arange(stop - start)
        best[local, local + start] = -1.0
        for r, c in zip(*np.nonzero(best >= correlation), strict=True):
            key = (min(r + start, c), max(r + start, c))
            found[key] = max(found.get(key, -1.0), float(best[r, c]))
    ordered = sorted(found)
    return (np.array([i for i, _ in ordered], dtype=np.int64),
            np.array([j for _, j in ordered], dtype=np.int64),
            np.array([found[k] for k in ordered], dtype=np.float64))


def near_copy_pairs(sample_ids: Sequence, signatures: np.ndarray, *,
                    embeddings: np.ndarray | None = None,
                    hashes: Sequence[str | None] | None = None,
                    threshold: float | None = None,
                    correlation: float = COPY_CORRELATION) -> pd.DataFrame:
    """Pairs of samples that are copies of each other, by content hash, embedding distance
    (``threshold``: see :func:`workbench.metrics.find_duplicates`) or thumbnail correlation.

    Returns
    -------
    pd.DataFrame
        ``sample_id``, ``other_id`` (input order), ``distance`` (embedding cosine; NaN
        without ``embeddings``), ``correlation`` (best thumbnail correlation), ``kind``
        (``exact``: the same file or embedding; else ``near``), ``found_by`` (``content
        hash``, ``embedding``, ``pixels``, joined with "+" when several). ``attrs
        ["threshold"]`` holds the embedding threshold used.
    """
    ids = [str(s) for s in sample_ids]
    if len(ids) != len(signatures):
        raise ValueError(f"signatures must have one row per sample ({len(ids)}); got "
                         f"{len(signatures)}.")
    pairs: dict[tuple[int, int], dict] = {}
    used = None
    if hashes is not None:
        members: dict[str, list[int]] = {}
        for k, value in enumerate(hashes):
            if value:
                members.setdefault(str(value), []).append(k)
        for group in members.values():
            for a, i in enumerate(group):
                for j in group[a + 1:]:
                    pairs[(i, j)] = {"distance": 0.0, "kind": "exact",
                                     "found_by": ["content hash"]}
    if embeddings is not None:
        found = find_duplicates(range(len(ids)), embeddings, threshold=threshold)
        used = float(found.attrs["threshold"])
        for row in found.itertuples(index=False):
            i, j = sorted((int(row.sample_id), int(row.other_id)))
            entry = pairs.setdefault((i, j), {"distance": float(row.distance),
                                              "kind": row.kind, "found_by": []})
            entry["found_by"].append("embedding")
    i, j, _ = pixel_pairs(signatures, correlation)
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        entry = pairs.setdefault((a, b), {"distance": np.nan, "kind": "near", "found_by": []})
        entry["found_by"].append("pixels")
    rows = []
    vectors = None if embeddings is None else np.asarray(embeddings, dtype=np.float64)
    flips = _flips(np.asarray(signatures, dtype=np.float32)[:, 0])
    for (a, b), entry in sorted(pairs.items()):
        distance = entry["distance"]
        if vectors is not None and np.isnan(distance):
            u, v = vectors[a], vectors[b]
            distance = max(0.0, 1.0 - float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)
                                                        + 1e-12)))
        best = max(float(signatures[a][s] @ f[b]) for s in range(len(SIGNATURE_SCALES))
                   for f in flips)
        kind = "exact" if entry["kind"] == "exact" or distance <= EXACT_DISTANCE else "near"
        rows.append((ids[a], ids[b], distance, best, kind, "+".join(entry["found_by"])))
    frame = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    frame.attrs["threshold"] = used
    return frame


def copy_groups(sample_ids: Sequence, pairs: pd.DataFrame,
                given: Sequence | None = None) -> np.ndarray:
    """Group number of every sample: connected components of the copy ``pairs`` and, when
    ``given``, of equal non-missing ``given`` values (``group_by``)."""
    ids = [str(s) for s in sample_ids]
    index = {s: k for k, s in enumerate(ids)}
    rows = [index[s] for s in pairs["sample_id"]] if len(pairs) else []
    cols = [index[s] for s in pairs["other_id"]] if len(pairs) else []
    if given is not None:
        first: dict[object, int] = {}
        for k, value in enumerate(given):
            if value is None or (np.ndim(value) == 0 and pd.isna(value)):
                continue
            anchor = first.setdefault(value, k)
            if anchor != k:
                rows.append(anchor)
                cols.append(k)
    n = len(ids)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    _, renumbered = np.unique(component, return_inverse=True)
    return renumbered.astype(np.int64)


def grouped_folds(labels: Sequence, groups: np.ndarray, n_folds: int, *, seed: int,
                  describe: dict[int, str] | None = None) -> np.ndarray:
    """Fold (0..n_folds-1) of every sample, stratified by label, never splitting a group
    (scikit-learn's ``StratifiedGroupKFold``). Where no group holds two samples this is
    ``StratifiedKFold`` (``KFold`` for a single label), shuffled by ``seed``: the folds of
    data without copies are what they were before groups existed.

    ``describe`` names groups for errors (group number → words such as ``part_id 'P7'``).
    Raises ValueError when there are fewer groups than folds or a group is larger than a
    fold.
    """
    labels = np.asarray(labels, dtype=object)
    groups = np.asarray(groups)
    words = describe or {}
    sizes = pd.Series(groups).value_counts()
    if len(sizes) < n_folds:
        raise ValueError(f"folds={n_folds} needs at least {n_folds} groups of images, but "
                         f"there are {len(sizes)} (images that are copies of each other, or "
                         "share the group_by value, stay together). Pass fewer folds or a "
                         "finer group_by.")
    fold_size = len(labels) / n_folds
    largest = int(sizes.index[0])
    if sizes.iloc[0] > fold_size:
        name = words.get(largest)
        hint = ("Pass fewer folds or a finer group_by." if name else
                "Look at them (wb.near_duplicates); if they are different parts that only "
                "look alike, train with group_copies=False.")
        raise ValueError(f"{name or f'a set of {int(sizes.iloc[0])} near-copies'} holds "
                         f"{int(sizes.iloc[0])} of {len(labels)} images, more than a fold "
                         f"({fold_size:.0f} with folds={n_folds}): the fold that holds it out "
                         f"would leave too little to train on. {hint}")
    fold = np.full(len(labels), -1, dtype=np.int64)
    values = labels.astype(np.int64) if all(isinstance(v, int | np.integer) for v in labels) \
        else labels.astype(str)
    if sizes.iloc[0] > 1:
        splits = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(
            np.zeros(len(labels)), values, groups)
    elif len(set(values.tolist())) > 1:
        splits = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(
            np.zeros(len(labels)), values)
    else:
        splits = KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(labels)
    with warnings.catch_warnings():  # a class rarer than the folds is fine: it is in fewer
        warnings.simplefilter("ignore", UserWarning)
        for f, (_, held) in enumerate(splits):
            fold[held] = f
    return fold


__all__ = ["COPY_CORRELATION", "PAIR_COLUMNS", "SIGNATURE_SCALES", "SIGNATURE_SIDE",
           "copy_groups", "grouped_folds", "near_copy_pairs", "pixel_pairs", "pixel_signature"]
