"""Annotator agreement: consensus labels, per-sample agreement, annotator quality, alpha.

>>> report = annotator_agreement(annotations, classes=["dent", "scratch"])
>>> report.to_review()  # samples whose annotators disagree, least agreement first
>>> report.annotators  # best first; ``most_confused`` says where each one goes wrong

With out-of-fold model probabilities, CROWDLAB (``cleanlab.multiannotator``) decides, weighing
each annotator and the model by estimated trustworthiness; otherwise a majority vote does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Literal

import krippendorff
import numpy as np
import pandas as pd
from cleanlab.multiannotator import get_label_quality_multiannotator

_REQUIRED = ["sample_id", "annotator", "label"]


@dataclass(frozen=True)
class AgreementReport:
    """What :func:`annotator_agreement` found.

    Attributes
    ----------
    samples : pd.DataFrame, one row per sample
        ``sample_id``, ``n_annotators``, ``annotators`` (sorted list), ``labels`` (aligned
        list), ``agreement`` (share of annotators who gave the majority label; 1.0 for one
        annotator), ``consensus``, ``consensus_quality`` (0–1, lower = less sure),
        ``needs_review`` (agreement < threshold). Least agreement, then quality, first.
    annotators : pd.DataFrame, one row per annotator
        ``annotator``, ``n_labels``, ``agreement`` (leave-one-out: share of their labels
        matching the majority of the *other* annotators), ``quality`` (CROWDLAB's with a
        model, else ``agreement``), ``most_confused`` (``"dent → scratch"``: consensus →
        their label, most frequent; None if never wrong). Best quality first.
    classes : pd.DataFrame, one row per class
        ``class``, ``n`` (samples with this consensus), ``agreement`` (their mean),
        ``alpha`` (nominal alpha of the one-vs-rest recoding for the class; NaN if undefined).
    alpha : float
        Krippendorff's nominal alpha over all labels (NaN when undefined).
    threshold : float
    method : {"crowdlab", "majority_vote"}
        "crowdlab" when CROWDLAB decided at least one sample.
    """

    samples: pd.DataFrame
    annotators: pd.DataFrame
    classes: pd.DataFrame
    alpha: float
    threshold: float
    method: Literal["crowdlab", "majority_vote"] = "majority_vote"

    def to_review(self) -> pd.DataFrame:
        """Samples with ``needs_review``, least agreement first."""
        return self.samples[self.samples["needs_review"]].reset_index(drop=True)

    def to_frame(self) -> pd.DataFrame:
        """The per-sample table."""
        return self.samples.copy()


def annotator_agreement(annotations: pd.DataFrame, *, classes: Sequence[str],
                        pred_probs: pd.DataFrame | None = None,
                        threshold: float = 0.8) -> AgreementReport:
    """Consensus, agreement and annotator quality from several annotators' labels.

    Parameters
    ----------
    annotations : pd.DataFrame of shape (n_labels, 3+)
        Columns ``sample_id``, ``annotator``, ``label``: each annotator's latest label of a
        sample, at most one row per (sample_id, annotator). Labels must be in ``classes``.
    classes : sequence of str, length n_classes
        Class names; their order breaks the last ties.
    pred_probs : pd.DataFrame of shape (n_scored, n_classes), optional
        A model's out-of-fold probabilities: index ``sample_id``, one column per class.
        Samples it scores are decided by CROWDLAB (when at least one of them has two
        annotators); the others, and all samples without it, by the rule below.
    threshold : float, default 0.8
        A sample ``needs_review`` when its agreement is below this.

    Returns
    -------
    AgreementReport

    Notes
    -----
    Without a model, the consensus is the majority label. A tie goes to the label whose
    annotators have the higher summed quality, and then to the class listed first in
    ``classes``. Annotator quality is leave-one-out agreement; samples where the other
    annotators tie, or where there are none, do not count. ``consensus_quality`` is the
    quality-weighted share of votes for the consensus; an annotator without a quality
    estimate weighs as the mean annotator.
    """
    classes = _check_classes(classes)
    frame = _check_annotations(annotations, classes)
    if isinstance(threshold, bool) or not isinstance(threshold, Real) \
            or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1] (an agreement share); got "
                         f"{threshold!r}.")
    sample_ids = pd.unique(frame["sample_id"])
    names = sorted(pd.unique(frame["annotator"]), key=str)
    s = pd.Index(sample_ids).get_indexer(frame["sample_id"])
    a = pd.Index(names).get_indexer(frame["annotator"])
    y = pd.Index(classes).get_indexer(frame["label"])
    probs = _check_pred_probs(pred_probs, classes, sample_ids)
    return _compute(sample_ids, names, classes, s, a, y, probs, float(threshold))


def _check_classes(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) == 0 \
            or pd.Index(classes).has_duplicates:
        raise ValueError(f"classes must be a non-empty sequence of unique class names, e.g. "
                         f"['dent', 'scratch']; got {classes!r}.")
    return list(classes)


def _check_annotations(annotations: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    if not isinstance(annotations, pd.DataFrame):
        raise ValueError(f"annotations must be a pandas DataFrame with columns {_REQUIRED}; "
                         f"got {type(annotations).__name__}.")
    missing = [c for c in _REQUIRED if c not in annotations.columns]
    if missing:
        raise ValueError(f"annotations is missing column(s) {missing}; expected {_REQUIRED}, "
                         f"got {list(annotations.columns)}. Rename or add them.")
    if annotations.empty:
        raise ValueError("annotations has no rows; pass at least one label.")
    for column in _REQUIRED:
        if annotations[column].isna().any():
            raise ValueError(f"annotations column {column!r} has "
                             f"{int(annotations[column].isna().sum())} missing value(s); "
                             f"drop those rows first.")
    repeated = annotations.duplicated(["sample_id", "annotator"], keep=False)
    if repeated.any():
        first = annotations.loc[repeated, ["sample_id", "annotator"]].iloc[0].tolist()
        raise ValueError(f"annotations must hold at most one row per (sample_id, annotator); "
                         f"{int(repeated.sum())} rows repeat a pair, e.g. {first}. Keep each "
                         f"annotator's latest label, e.g. drop_duplicates(['sample_id', "
                         f"'annotator'], keep='last').")
    unknown = sorted(set(annotations["label"]) - set(classes), key=str)
    if unknown:
        raise ValueError(f"annotations column 'label' has label(s) {unknown[:5]} that are "
                         f"not in classes {classes}; add them to classes or fix the labels.")
    return annotations[_REQUIRED]


def _check_pred_probs(pred_probs: pd.DataFrame | None, classes: list[str],
                      sample_ids: np.ndarray) -> np.ndarray | None:
    if pred_probs is None:
        return None
    if not isinstance(pred_probs, pd.DataFrame):
        raise ValueError(f"pred_probs must be a DataFrame indexed by sample_id with one "
                         f"column per class; got {type(pred_probs).__name__}.")
    if set(pred_probs.columns) != set(classes) or pred_probs.columns.duplicated().any():
        raise ValueError(f"pred_probs columns must be exactly the classes {classes}; got "
                         f"{list(pred_probs.columns)}. Set the index to sample_id.")
    if pred_probs.index.duplicated().any():
        raise ValueError("pred_probs index (sample_id) has repeated ids; one row per sample.")
    probs = pred_probs.reindex(index=sample_ids, columns=classes).to_numpy(dtype=float)
    scored = probs[~np.isnan(probs).any(axis=1)]
    if ((scored < 0) | (scored > 1)).any() or not np.allclose(scored.sum(axis=1), 1, atol=1e-3):
        raise ValueError("pred_probs rows must be probabilities in [0, 1] that sum to 1; "
                         "apply a softmax to the model's outputs first.")
    return probs


def _compute(sample_ids: np.ndarray, names: list, classes: list[str], s: np.ndarray,
             a: np.ndarray, y: np.ndarray, probs: np.ndarray | None,
             threshold: float) -> AgreementReport:
    n, m, k = len(sample_ids), len(names), len(classes)
    counts = np.zeros((n, k))
    np.add.at(counts, (s, y), 1)
    n_annotators = counts.sum(axis=1)
    agreement = counts.max(axis=1) / n_annotators
    loo = _leave_one_out(counts, s, a, y, m)
    crowd = _crowdlab(s, a, y, probs, n, m)
    quality = loo if crowd is None else np.where(np.isnan(crowd[3]), loo, crowd[3])
    weights = np.nan_to_num(quality, nan=np.nanmean(quality) if np.isfinite(quality).any()
                            else 1.0)
    voted = np.zeros((n, k))
    np.add.at(voted, (s, y), weights[a])
    tied = counts == counts.max(axis=1, keepdims=True)
    consensus = np.where(tied, voted, -np.inf).argmax(axis=1)
    total, rows = voted.sum(axis=1), np.arange(n)
    cq = np.where(total > 0, voted[rows, consensus] / np.where(total > 0, total, 1),
                  counts[rows, consensus] / n_annotators)
    if crowd is not None:
        consensus[crowd[0]], cq[crowd[0]] = crowd[1], crowd[2]
    order = np.lexsort((a, s))
    splits = np.cumsum(n_annotators.astype(int))[:-1]
    samples = pd.DataFrame({
        "sample_id": sample_ids, "n_annotators": n_annotators.astype(int),
        "annotators": [[names[i] for i in part] for part in np.split(a[order], splits)],
        "labels": [[classes[i] for i in part] for part in np.split(y[order], splits)],
        "agreement": agreement, "consensus": [classes[i] for i in consensus],
        "consensus_quality": cq, "needs_review": agreement < threshold,
    }).sort_values(["agreement", "consensus_quality"], kind="stable").reset_index(drop=True)
    annotators = pd.DataFrame({
        "annotator": names, "n_labels": np.bincount(a, minlength=m), "agreement": loo,
        "quality": quality,
        "most_confused": pd.Series(_most_confused(consensus[s], a, y, m, classes), dtype=object),
    }).sort_values("quality", ascending=False, na_position="last", kind="stable")
    table = np.full((m, n), np.nan)
    table[a, s] = y
    table = table[:, n_annotators >= 2]  # a lone label pairs with nothing
    per_class = pd.DataFrame({
        "class": classes, "n": np.bincount(consensus, minlength=k),
        "agreement": [agreement[consensus == c].mean() if (consensus == c).any() else np.nan
                      for c in range(k)],
        "alpha": [_alpha(np.where(np.isnan(table), np.nan, table == c), 2) for c in range(k)],
    })
    return AgreementReport(samples=samples, annotators=annotators.reset_index(drop=True),
                           classes=per_class, alpha=_alpha(table, k), threshold=threshold,
                           method="crowdlab" if crowd is not None else "majority_vote")


def _leave_one_out(counts: np.ndarray, s: np.ndarray, a: np.ndarray, y: np.ndarray,
                   m: int) -> np.ndarray:
    """Per annotator: share of labels equal to the others' unique majority (NaN if none)."""
    others = counts[s] - np.eye(counts.shape[1])[y]
    top = others.max(axis=1, keepdims=True)
    counted = (others.sum(axis=1) > 0) & ((others == top).sum(axis=1) == 1)
    hits = np.bincount(a[counted], weights=others[counted].argmax(axis=1) == y[counted],
                       minlength=m)
    total = np.bincount(a[counted], minlength=m)
    return np.where(total > 0, hits / np.maximum(total, 1), np.nan)


def _crowdlab(s: np.ndarray, a: np.ndarray, y: np.ndarray, probs: np.ndarray | None,
              n: int, m: int) -> tuple[np.ndarray, ...] | None:
    """CROWDLAB on the scored samples: (rows, consensus, quality, annotator quality)."""
    if probs is None:
        return None
    wide = np.full((n, m), np.nan)
    wide[s, a] = y
    rows = np.flatnonzero(~np.isnan(probs).any(axis=1))
    sub = wide[rows]
    active = np.flatnonzero(~np.isnan(sub).all(axis=0))
    sub = sub[:, active]
    if len(active) < 2 or not ((~np.isnan(sub)).sum(axis=1) >= 2).any():
        return None
    out = get_label_quality_multiannotator(pd.DataFrame(sub, columns=active), probs[rows],
                                           verbose=False)
    quality = np.full(m, np.nan)
    stats = out["annotator_stats"]
    quality[stats.index.to_numpy(dtype=int)] = stats["annotator_quality"].to_numpy(float)
    label_quality = out["label_quality"]
    return (rows, label_quality["consensus_label"].to_numpy(dtype=int),
            label_quality["consensus_quality_score"].to_numpy(dtype=float), quality)


def _most_confused(consensus: np.ndarray, a: np.ndarray, y: np.ndarray, m: int,
                   classes: list[str]) -> list[str | None]:
    k = len(classes)
    wrong = consensus != y
    pairs = np.bincount(a[wrong] * k * k + consensus[wrong] * k + y[wrong],
                        minlength=m * k * k).reshape(m, k * k)
    best = pairs.argmax(axis=1)
    return [f"{classes[b // k]} → {classes[b % k]}" if pairs[i, b] > 0 else None
            for i, b in enumerate(best)]


def _alpha(table: np.ndarray, n_values: int) -> float:
    """Krippendorff's nominal alpha of an (annotators, samples) table; NaN when undefined."""
    if table.shape[1] == 0:
        return float("nan")
    try:
        with np.errstate(all="ignore"):
            value = krippendorff.alpha(reliability_data=table.astype(float),
                                       value_domain=list(range(n_values)),
                                       level_of_measurement="nominal")
    except ValueError:
        return float("nan")
    return float(value) if np.isfinite(value) else float("nan")
