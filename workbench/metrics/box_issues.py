"""Which boxes look mislabelled: missing, extra, wrong-class and badly placed boxes, ranked
by cleanlab's per-box scores, and a label-quality score per image (box frames in, frames
out; the frame conventions of :mod:`workbench.metrics.detection_metrics`).

>>> box_issues(gt, pred, sample_ids=ids).head()   # the boxes most likely mislabelled
>>> image_label_quality(gt, pred, sample_ids=ids)  # 0 (surely wrong) .. 1 per image
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from workbench.metrics.detection_metrics import (
    _ID_COLUMNS,
    _NO_MATCH,
    CLEANLAB_PIXELS,
    GT_COLUMNS,
    ISSUE_COLUMNS,
    PRED_COLUMNS,
    _boxes,
    _by_image,
    _check_frame,
    _check_ids,
    _check_iou,
    _check_threshold,
    _confidence_order,
    _match_image,
    iou_matrix,
)


def _cleanlab_inputs(gt: pd.DataFrame, pred: pd.DataFrame, ids: Sequence[str]
                     ) -> tuple[list[dict], list[list[np.ndarray]]]:
    """Boxes in cleanlab's object-detection format (pixel-like xyxy, class indices)."""
    names = sorted(set(gt["label"]) | set(pred["label"]))
    index = {c: i for i, c in enumerate(names)}
    gt_images, pred_images = _by_image(gt), _by_image(pred)

    def xyxy(boxes: np.ndarray) -> np.ndarray:
        return np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]]) * CLEANLAB_PIXELS

    labels, predictions = [], []
    for sid in ids:
        g = gt_images.get(sid, np.empty(0, int))
        labels.append({"bboxes": xyxy(_boxes(gt.iloc[g])),
                       "labels": gt["label"].iloc[g].map(index).to_numpy(dtype=int)})
        p = pred.iloc[pred_images.get(sid, np.empty(0, int))]
        per_class = [np.zeros((0, 5)) for _ in names]
        for label, part in p.groupby("label"):
            per_class[index[label]] = np.column_stack(
                [xyxy(_boxes(part)), part["confidence"].to_numpy()])
        predictions.append(per_class)
    return labels, predictions


def image_label_quality(gt: pd.DataFrame, pred: pd.DataFrame, *,
                        sample_ids: Sequence[str] | None = None,
                        low_probability_threshold: float | None = None,
                        high_probability_threshold: float | None = None) -> pd.Series:
    """cleanlab's ObjectLab label quality per image (0–1, lower: more likely mislabelled).

    Without thresholds this is ``cleanlab.object_detection.rank.get_label_quality_scores``
    as published (badly located boxes judged against predictions above 0.5, overlooked and
    swapped ones against predictions above 0.95). With thresholds it is the same score built
    from cleanlab's public per-box scores (``compute_overlooked_box_scores``,
    ``compute_badloc_box_scores``, ``compute_swap_box_scores``), softmin-pooled per image
    (``pool_box_scores_per_image``) and combined by the same equal-weight geometric mean:
    a small detector trained on a few hundred images is rarely 95 % sure of anything, and
    would otherwise only ever be judged on box placement.

    Returns
    -------
    pd.Series
        Indexed by ``sample_id`` (order of ``sample_ids``), named ``image_quality``.
    """
    from cleanlab.object_detection import rank

    gt = _check_frame(gt, "gt", GT_COLUMNS)
    pred = _check_frame(pred, "pred", PRED_COLUMNS)
    ids = _check_ids(sample_ids, gt, pred)
    if not ids:
        return pd.Series([], index=pd.Index([], name="sample_id"), name="image_quality",
                         dtype=float)
    labels, predictions = _cleanlab_inputs(gt, pred, ids)
    if not predictions[0]:  # no class at all: nothing to judge
        return pd.Series(1.0, index=pd.Index(ids, name="sample_id"), name="image_quality")
    if low_probability_threshold is None and high_probability_threshold is None:
        scores = rank.get_label_quality_scores(labels, predictions, verbose=False)
    else:
        low = _check_threshold(low_probability_threshold if low_probability_threshold
                               is not None else 0.5, "low_probability_threshold")
        high = _check_threshold(high_probability_threshold if high_probability_threshold
                                is not None else 0.95, "high_probability_threshold")
        parts = [
            rank.compute_overlooked_box_scores(labels=labels, predictions=predictions,
                                               high_probability_threshold=high),
            rank.compute_badloc_box_scores(labels=labels, predictions=predictions,
                                           low_probability_threshold=low),
            rank.compute_swap_box_scores(labels=labels, predictions=predictions,
                                         high_probability_threshold=high)]
        pooled = [rank.pool_box_scores_per_image(p) for p in parts]
        scores = np.exp(np.mean([np.log(1e-100 + s) for s in pooled], axis=0))
    return pd.Series(np.asarray(scores, dtype=float), index=pd.Index(ids, name="sample_id"),
                     name="image_quality")


def _class_recall(gt: pd.DataFrame, matched_gt: np.ndarray) -> dict[str, float]:
    """Per class, the rule-of-succession share of given boxes the model finds:
    (found + 1) / (boxes + 1), i.e. the chance it finds the next real box of that class."""
    found = pd.Series(matched_gt, index=gt.index).groupby(gt["label"]).agg(["sum", "size"])
    return {str(k): (row["sum"] + 1) / (row["size"] + 1) for k, row in found.iterrows()}


def box_issues(gt: pd.DataFrame, pred: pd.DataFrame, *,
               sample_ids: Sequence[str] | None = None, iou: float = 0.5,
               score_threshold: float = 0.3, localisation_iou: float = 0.1) -> pd.DataFrame:
    """Boxes whose label is probably wrong, ranked by the model's evidence, worst first.

    Predictions should be out-of-fold (made by a model that never trained on the image).
    In each image the confident predictions (confidence >= ``score_threshold``) are matched
    to the given boxes of their class at IoU >= ``iou`` (COCO matching); what is left over
    is judged, and every suspect gets a ``score`` in [0, 1] that estimates the chance the
    label is wrong, on one scale for all kinds:

    - ``missing_box``: a confident prediction overlapping no given box (IoU <
      ``localisation_iou``): the label lacks a box. score = its confidence. Overlapping
      suspects (IoU >= ``iou``) are reported once.
    - ``wrong_class``: a given box that a confident prediction of another class covers (IoU
      >= ``iou``; or >= ``localisation_iou`` when nothing of its own class does), with more
      confidence than any prediction of the given class. score = c_other × (1 − c_given).
    - ``poor_localisation``: a given box whose best free prediction of its class overlaps
      only between ``localisation_iou`` and ``iou``: the box is off. score = c × (1 −
      IoU / ``iou``), so a box just under the match threshold scores near 0.
    - ``extra_box``: a given box no confident free prediction overlaps at all: nothing is
      there, or a duplicate. score = r × (1 − s), where s is the highest confidence of any
      free prediction on it and r = (found + 1) / (boxes + 1) the model's recall on its
      class: a box unseen by a model that finds most boxes of its class is suspect, one
      unseen by a model that finds few is not.

    These rules, not cleanlab's per-box scores, decide the kind and the score: cleanlab's
    ObjectLab has no extra-box score (it cannot tell a spurious box from a missed one), and
    its badly-located and swap scores ignore the model's confidence once above a threshold.
    cleanlab's image-level quality (:func:`image_label_quality`, with both thresholds set
    to ``score_threshold``) is added as ``image_quality`` and breaks ties in the ranking:
    among equally scored boxes, those in images ObjectLab finds worse come first.

    Returns
    -------
    pd.DataFrame
        One row per suspected error: ``sample_id``, ``kind``, ``label`` (the given class;
        None for missing_box), ``suggested_label`` (None for extra_box: delete it), ``iou``
        (of the given box with the predicted box shown, or for extra/missing boxes the
        largest IoU with any box of the other side), ``score``, ``x, y, w, h`` (the given
        box), ``pred_x, pred_y, pred_w, pred_h`` (the prediction; NaN where absent),
        ``confidence`` (of that prediction), ``image_quality``, ``rank`` (1 = most likely
        an error), and ``box_id`` / ``box_index`` when ``gt`` has them.
    """
    gt = _check_frame(gt, "gt", GT_COLUMNS)
    pred = _check_frame(pred, "pred", PRED_COLUMNS)
    iou = _check_iou(iou, "iou")
    loc_iou = _check_iou(localisation_iou, "localisation_iou")
    if loc_iou >= iou:
        raise ValueError(f"localisation_iou ({loc_iou}) must be smaller than iou ({iou}).")
    threshold = _check_threshold(score_threshold)
    ids = _check_ids(sample_ids, gt, pred)
    gt = gt[gt["sample_id"].isin(set(ids))].reset_index(drop=True)
    pred = pred[pred["sample_id"].isin(set(ids))].reset_index(drop=True)
    gt_images, pred_images = _by_image(gt), _by_image(pred)
    g_labels, p_labels = gt["label"].to_numpy(), pred["label"].to_numpy()
    p_conf = pred["confidence"].to_numpy()
    # pass 1: per-class COCO matching of the confident predictions
    images, matched_gt = {}, np.zeros(len(gt), dtype=bool)
    for sid in ids:
        g = gt_images.get(sid, np.empty(0, int))
        p = pred_images.get(sid, np.empty(0, int))
        ious = iou_matrix(_boxes(gt.iloc[g]), _boxes(pred.iloc[p]))
        match = _match_image(ious, g_labels[g], p_labels[p], p_conf[p], iou,
                             eligible=p_conf[p] >= threshold)
        matched_gt[g[match[match != _NO_MATCH]]] = True
        images[sid] = (g, p, ious, match)
    recall = _class_recall(gt, matched_gt)
    rows = []

    def add(sid, kind, label, suggested, overlap, score, g_row, p_row) -> None:
        given = _boxes(gt.iloc[[g_row]])[0] if g_row is not None else [np.nan] * 4
        shown = _boxes(pred.iloc[[p_row]])[0] if p_row is not None else [np.nan] * 4
        extra = {c: gt[c].iloc[g_row] if g_row is not None else None
                 for c in _ID_COLUMNS if c in gt.columns}
        rows.append({"sample_id": sid, "kind": kind, "label": label,
                     "suggested_label": suggested, "iou": overlap, "score": float(score),
                     **dict(zip(("x", "y", "w", "h"), given, strict=True)),
                     **dict(zip(("pred_x", "pred_y", "pred_w", "pred_h"), shown, strict=True)),
                     "confidence": p_conf[p_row] if p_row is not None else np.nan, **extra})

    for sid, (g, p, ious, match) in images.items():
        confident = p_conf[p] >= threshold
        for i, g_row in enumerate(g):
            label = g_labels[g_row]
            mine = np.flatnonzero(match == i)
            free = confident & ((match == _NO_MATCH) | (match == i))
            same, other = p_labels[p] == label, p_labels[p] != label
            c_same = float(p_conf[p][mine].max()) if mine.size else float(
                np.max(p_conf[p][same & (ious[i] >= loc_iou) & (match == _NO_MATCH)],
                       initial=0.0))
            strong = np.flatnonzero(free & other & (ious[i] >= iou))
            weak = np.flatnonzero(free & other & (ious[i] >= loc_iou))
            near = np.flatnonzero(free & same & (ious[i] >= loc_iou) & (ious[i] < iou))
            rival = strong if strong.size or mine.size or near.size else weak
            if rival.size:
                j = rival[np.argmax(p_conf[p][rival])]
                if p_conf[p][j] > c_same:
                    add(sid, "wrong_class", label, p_labels[p][j], ious[i, j],
                        p_conf[p][j] * (1 - c_same), g_row, p[j])
                    continue
            if mine.size:
                continue
            if near.size:
                j = near[np.argmax(ious[i, near])]
                add(sid, "poor_localisation", label, label, ious[i, j],
                    p_conf[p][j] * (1 - ious[i, j] / iou), g_row, p[j])
            elif not (free & (ious[i] >= loc_iou)).any():
                unmatched = (match == _NO_MATCH) & (ious[i] >= loc_iou)
                support = float(np.max(p_conf[p][unmatched], initial=0.0))
                add(sid, "extra_box", label, None, float(np.max(ious[i], initial=0.0)),
                    recall.get(label, 0.5) * (1 - support), g_row, None)
        lonely = [j for j in _confidence_order(p_conf[p]) if confident[j]
                  and match[j] == _NO_MATCH and np.max(ious[:, j], initial=0.0) < loc_iou]
        kept: list[int] = []
        pred_boxes = _boxes(pred.iloc[p])
        for j in lonely:
            if kept and iou_matrix(pred_boxes[[j]], pred_boxes[kept]).max() >= iou:
                continue
            kept.append(j)
            add(sid, "missing_box", None, p_labels[p][j], float(np.max(ious[:, j], initial=0)),
                p_conf[p][j], None, p[j])
    extra_columns = [c for c in _ID_COLUMNS if c in gt.columns]
    issues = pd.DataFrame(rows, columns=[*ISSUE_COLUMNS[:-3], "confidence", *extra_columns])
    issues = issues.astype(dict.fromkeys(ISSUE_COLUMNS[4:15], float))
    for column in ("label", "suggested_label"):
        issues[column] = issues[column].astype(object).where(issues[column].notna(), None)
    quality = image_label_quality(gt, pred, sample_ids=ids, low_probability_threshold=threshold,
                                  high_probability_threshold=threshold) if len(issues) else {}
    issues["image_quality"] = issues["sample_id"].map(quality).astype(float)
    issues = issues.sort_values(["score", "image_quality", "sample_id"],
                                ascending=[False, True, True], kind="mergesort")
    issues["rank"] = np.arange(1, len(issues) + 1)
    return issues[[*ISSUE_COLUMNS, *extra_columns]].reset_index(drop=True)
