"""Two-sample tests for drift: has a batch of images moved away from the training images?

Everything here is pure: embeddings and per-image property tables in, numbers and
DataFrames out. :func:`workbench.monitor.drift.drift` gathers the inputs from a project.

- :func:`mmd_test`: maximum mean discrepancy between two sets of vectors with a Gaussian
  kernel, and its permutation p-value (exact false-alarm rate for any sample size);
  :func:`combined_test` runs it on the embeddings and on the image properties.
- :func:`knn_ood_scores`: how far each batch image is from its nearest training images,
  and the distance above which an image is an outlier.
- :func:`property_shift` and :func:`label_shift`: which simple image properties and which
  predicted classes moved, for a person to read.
- :func:`camera_monitor_test`: the baseline a plain camera monitor runs (mean brightness
  and contrast), kept for the benchmark and for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from loupe_edge.stats import COMPARED, PROPERTIES, image_properties
from scipy import stats

from workbench.metrics.neighbours import NeighbourIndex

#: The properties :func:`property_mmd_test` compares by default (the edge compares the same;
#: :data:`PROPERTIES` and :func:`image_properties` come from ``loupe_edge.stats`` too).
TESTED_PROPERTIES = COMPARED

#: :func:`mmd_test` compares at most this many rows of each set (a seeded sample).
MMD_MAX_ROWS = 4_000
#: Largest side at which sharpness is measured (bigger images are reduced first).
_SHARPNESS_SIDE = 512


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def _check_sets(reference: np.ndarray, batch: np.ndarray) -> None:
    for name, value in (("reference", reference), ("batch", batch)):
        if np.ndim(value) != 2 or len(value) < 2:
            raise ValueError(f"{name} must be a 2-D array of at least 2 vectors, got shape "
                             f"{np.shape(value)}")
    if reference.shape[1] != batch.shape[1]:
        raise ValueError(f"reference vectors have {reference.shape[1]} features, batch "
                         f"vectors {batch.shape[1]}: embed both with the same backbone")


def mmd_test(reference: np.ndarray, batch: np.ndarray, *, n_permutations: int = 1000,
             seed: int = 0, normalise: bool = True,
             max_rows: int | None = MMD_MAX_ROWS) -> tuple[float, float]:
    """Maximum mean discrepancy between two sets of vectors, with a permutation test.

    With ``normalise`` (embeddings) vectors are L2-normalised first; the kernel is Gaussian
    with the median squared pairwise distance of the pooled sets as bandwidth. The p-value
    is the share of random relabellings of the pooled set (plus the observed one) whose
    MMD² is at least the observed one, so under no drift ``P(p <= alpha) <= alpha`` for any
    batch size. Sets larger than ``max_rows`` (each) are compared through a seeded random
    sample of that many rows: a sample of a set has the set's distribution, so the test
    stays valid, and the pooled kernel stays under ``(2 * max_rows)²`` entries (10,000 rows
    against 10,000: 2.6 GB and a minute otherwise; None: every row).

    Returns
    -------
    (statistic, p_value)
        The (biased) MMD² estimate and its permutation p-value.
    """
    _check_sets(reference, batch)
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    if max_rows is not None:
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 2:
            raise ValueError(f"max_rows must be an integer >= 2 or None, got {max_rows!r}")
        sampler = np.random.default_rng(seed + 7919)
        if len(reference) > max_rows:
            reference = np.asarray(reference)[np.sort(sampler.choice(
                len(reference), max_rows, replace=False))]
        if len(batch) > max_rows:
            batch = np.asarray(batch)[np.sort(sampler.choice(len(batch), max_rows,
                                                             replace=False))]
    pooled = np.vstack([reference, batch]).astype(np.float64)
    if normalise:
        pooled = _normalise(pooled)
    sq_norms = np.einsum("ij,ij->i", pooled, pooled)
    squared = np.clip(sq_norms[:, None] + sq_norms[None, :] - 2.0 * pooled @ pooled.T, 0.0,
                      None)
    upper = squared[np.triu_indices(len(pooled), k=1)]
    bandwidth = float(np.median(upper[upper > 0])) if np.any(upper > 0) else 1.0
    kernel = np.exp(-squared / bandwidth)
    n, total = len(batch), len(pooled)
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_permutations + 1, total))
    masks[0, len(reference):] = 1.0
    for row in masks[1:]:
        row[rng.choice(total, n, replace=False)] = 1.0
    statistics = _mmd_squared(kernel, masks, n)
    observed = float(statistics[0])
    p_value = float((1 + np.sum(statistics[1:] >= observed - 1e-12)) / (1 + n_permutations))
    return observed, p_value


def _mmd_squared(kernel: np.ndarray, masks: np.ndarray, n: int) -> np.ndarray:
    """Biased MMD² for every row of ``masks`` (1 marks the n batch members)."""
    m = kernel.shape[0] - n
    k_masks = masks @ kernel                                   # (P, N)
    within_batch = np.einsum("pn,pn->p", k_masks, masks)       # z'Kz
    row_sums = k_masks.sum(axis=1)                             # z'K1
    everything = kernel.sum()
    between = row_sums - within_batch                          # z'K(1-z)
    within_reference = everything - 2 * row_sums + within_batch
    return within_batch / n**2 + within_reference / m**2 - 2 * between / (n * m)


def property_mmd_test(reference: pd.DataFrame, batch: pd.DataFrame, *,
                      properties: Sequence[str] = TESTED_PROPERTIES,
                      n_permutations: int = 1000, seed: int = 0) -> tuple[float, float]:
    """:func:`mmd_test` on image properties, each standardised by the reference's mean and
    standard deviation: catches what a backbone is trained to ignore (a darker lamp, a
    softer focus). Returns (statistic, p_value)."""
    missing = [name for name in properties if name not in reference or name not in batch]
    if missing:
        raise ValueError(f"properties {missing} are missing from the reference or batch table")
    ref = reference[list(properties)].to_numpy(float)
    new = batch[list(properties)].to_numpy(float)
    mean, spread = ref.mean(axis=0), ref.std(axis=0)
    spread = np.where(spread > 0, spread, 1.0)
    return mmd_test((ref - mean) / spread, (new - mean) / spread,
                    n_permutations=n_permutations, seed=seed, normalise=False)


def combined_test(reference_vectors: np.ndarray, batch_vectors: np.ndarray,
                  reference_properties: pd.DataFrame, batch_properties: pd.DataFrame, *,
                  n_permutations: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Both MMD tests: on the embeddings (what the images show) and on the image properties
    (how they were taken). The overall p-value is the smaller one times two (Bonferroni),
    so the false-alarm rate stays at most ``alpha``.

    Returns
    -------
    pd.DataFrame
        ``test`` (``"embeddings"``, ``"image statistics"``), ``statistic``, ``p_value``;
        ``attrs["p_value"]`` holds the combined p-value.
    """
    rows = [("embeddings", *mmd_test(reference_vectors, batch_vectors,
                                     n_permutations=n_permutations, seed=seed)),
            ("image statistics", *property_mmd_test(reference_properties, batch_properties,
                                                    n_permutations=n_permutations,
                                                    seed=seed + 1))]
    frame = pd.DataFrame(rows, columns=["test", "statistic", "p_value"])
    frame.attrs["p_value"] = float(min(1.0, len(frame) * frame["p_value"].min()))
    return frame


def knn_ood_scores(reference: np.ndarray, batch: np.ndarray, *, k: int = 5,
                   quantile: float = 0.99) -> tuple[np.ndarray, float]:
    """Out-of-distribution score of each batch vector, and the outlier threshold.

    The score is the mean cosine distance to the ``k`` nearest reference vectors. The
    threshold is the ``quantile`` of the same score of every reference vector against the
    others (leave one out), so about 1 % of training-like images exceed it. Neighbours
    are approximate above :data:`~workbench.metrics.neighbours.EXACT_PAIRS` distances.
    """
    _check_sets(reference, batch)
    k = max(1, min(k, len(reference) - 1))
    index = NeighbourIndex(_normalise(reference))
    scores = index.search(_normalise(batch), k)[0].mean(axis=1)
    own_scores = index.search(None, k)[0].mean(axis=1)
    return scores, float(np.quantile(own_scores, quantile))


def property_shift(reference: pd.DataFrame, batch: pd.DataFrame, *, alpha: float = 0.01,
                   properties: Sequence[str] = PROPERTIES) -> pd.DataFrame:
    """Which image properties moved, and by how much.

    Per property: the reference and batch means, the relative change of the mean, a
    two-sample Kolmogorov–Smirnov p-value, and ``moved`` when that p-value is below
    ``alpha`` divided by the number of properties (Bonferroni) and the mean changed by at
    least 2 %. (Means, not medians: lighting slices make brightness bimodal, and the median
    of a small bimodal batch jumps between the modes.)
    """
    rows = []
    for name in properties:
        if name not in reference or name not in batch:
            raise ValueError(f"property {name!r} is missing from the "
                             f"{'reference' if name not in reference else 'batch'} table")
        ref, new = reference[name].to_numpy(float), batch[name].to_numpy(float)
        ref_mean, new_mean = float(np.mean(ref)), float(np.mean(new))
        change = (new_mean - ref_mean) / abs(ref_mean) if ref_mean else np.nan
        if np.ptp(np.concatenate([ref, new])) == 0:
            p_value = 1.0
        else:
            p_value = float(stats.ks_2samp(ref, new).pvalue)
        rows.append({"property": name, "reference": ref_mean, "batch": new_mean,
                     "change": change, "p_value": p_value})
    frame = pd.DataFrame(rows, columns=["property", "reference", "batch", "change", "p_value"])
    frame["moved"] = ((frame["p_value"] < alpha / max(len(frame), 1))
                      & (frame["change"].abs().fillna(0) >= 0.02))
    return frame


def label_shift(reference_labels: Sequence[str], batch_labels: Sequence[str],
                classes: Sequence[str]) -> pd.DataFrame:
    """Share of each class among the reference labels and the batch's predicted labels.

    ``attrs["total_variation"]`` is half the sum of the absolute changes (0: same mix,
    1: no class in common).
    """
    ref = pd.Series(list(reference_labels), dtype=object).value_counts(normalize=True)
    new = pd.Series(list(batch_labels), dtype=object).value_counts(normalize=True)
    frame = pd.DataFrame({"class": list(classes),
                          "reference_share": [float(ref.get(c, 0.0)) for c in classes],
                          "batch_share": [float(new.get(c, 0.0)) for c in classes]})
    frame["change"] = frame["batch_share"] - frame["reference_share"]
    frame.attrs["total_variation"] = float(frame["change"].abs().sum() / 2)
    return frame


def camera_monitor_test(reference: pd.DataFrame, batch: pd.DataFrame, *,
                        alpha: float = 0.01) -> tuple[bool, float]:
    """The baseline: Welch t-tests on mean brightness and on mean contrast, Bonferroni
    corrected. Returns (drifted, smallest corrected p-value)."""
    p_values = []
    for name in ("brightness", "contrast"):
        ref, new = reference[name].to_numpy(float), batch[name].to_numpy(float)
        if np.ptp(np.concatenate([ref, new])) == 0:
            p_values.append(1.0)
            continue
        p_values.append(float(stats.ttest_ind(ref, new, equal_var=False).pvalue))
    corrected = min(1.0, 2 * min(p_values))
    return corrected < alpha, corrected


__all__ = ["PROPERTIES", "TESTED_PROPERTIES", "camera_monitor_test", "combined_test",
           "image_properties", "knn_ood_scores", "label_shift", "mmd_test", "property_mmd_test",
           "property_shift"]
