"""Object detection: COCO average precision, box confusion, box label issues, per-slice mAP.

Pure functions on Loupe's box frames (one row per box, FiftyOne's relative ``[x, y, w, h]``
convention: top-left corner and size, as fractions of the image width and height):

- ground truth: ``sample_id, label, x, y, w, h`` (optional ``box_id`` / ``box_index``);
- predictions: ``sample_id, label, confidence, x, y, w, h``.

Images without any box still count (a prediction on an image with no given box is a false
positive), so the functions that need the image list take ``sample_ids``. IoU is the same in
relative and pixel coordinates (both axes scale independently), so no image size is needed.

>>> table = detection_map(gt, pred)              # AP50, AP50_95 per class
>>> mean_ap(table)                               # {"map50": ..., "map50_95": ...}
>>> detection_confusion(gt, pred, sample_ids=ids)
>>> box_issues(gt, pred, sample_ids=ids).head()  # the boxes most likely mislabelled

``box_issues`` and ``image_label_quality`` live in :mod:`workbench.metrics.box_issues`
(both also in :mod:`workbench.metrics`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from workbench.metrics.slices import MISSING

GT_COLUMNS = ("sample_id", "label", "x", "y", "w", "h")
PRED_COLUMNS = ("sample_id", "label", "confidence", "x", "y", "w", "h")
#: COCO's IoU thresholds 0.50, 0.55, …, 0.95.
COCO_IOUS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
#: COCO's recall points of the interpolated precision-recall curve.
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
#: COCO keeps the most confident ``maxDets`` predictions per image and class.
MAX_DETECTIONS = 100
BACKGROUND = "background"
ISSUE_KINDS = ("missing_box", "extra_box", "wrong_class", "poor_localisation")
ISSUE_COLUMNS = ("sample_id", "kind", "label", "suggested_label", "iou", "score", "x", "y",
                 "w", "h", "pred_x", "pred_y", "pred_w", "pred_h", "confidence",
                 "image_quality", "rank")
#: Relative boxes are scaled to this many pixels for cleanlab, whose box similarity mixes IoU
#: with exp(-0.1 x centre distance in pixels); Loupe trains detectors at 128-256 px.
CLEANLAB_PIXELS = 128.0
_ID_COLUMNS = ("box_id", "box_index")
_NO_MATCH = -1


# --------------------------------------------------------------------------- validation

def _check_frame(frame: pd.DataFrame, name: str, columns: Sequence[str]) -> pd.DataFrame:
    """A clean copy of a box frame (string ids and labels, float coordinates), or ValueError."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame with columns {list(columns)}, got "
                         f"{type(frame).__name__}.")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; a {name} frame needs "
                         f"{list(columns)} (it has {list(map(str, frame.columns))}).")
    extra = [c for c in _ID_COLUMNS if c in frame.columns]
    out = frame[list(columns) + extra].reset_index(drop=True).copy()
    for column in ("sample_id", "label"):
        if out[column].isna().any():
            row = int(np.flatnonzero(out[column].isna().to_numpy())[0])
            raise ValueError(f"{name} row {row}: {column} is missing; every box needs one.")
        out[column] = out[column].astype(str)
    numeric = [c for c in columns if c not in ("sample_id", "label")]
    for column in numeric:
        values = pd.to_numeric(out[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if column in ("w", "h"):
            bad |= ~(values > 0)
        elif column == "confidence":
            bad |= (values < 0) | (values > 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            expected = {"w": "a number > 0", "h": "a number > 0",
                        "confidence": "a number in [0, 1]"}.get(column, "a finite number")
            raise ValueError(f"{name} row {row}: {column}={frame[column].iloc[row]}; "
                             f"expected {expected} (boxes are relative [x, y, w, h]).")
        out[column] = values
    return out


def _check_ids(sample_ids: Iterable[str] | None, *frames: pd.DataFrame) -> list[str]:
    """The image list: the ids given (order kept, duplicates dropped) or every id in frames."""
    if sample_ids is None:
        ids: Iterable[str] = (s for f in frames for s in f["sample_id"])
    elif isinstance(sample_ids, str):
        raise ValueError(f"sample_ids must be a list of ids, got the string {sample_ids!r}.")
    else:
        ids = map(str, sample_ids)
    return list(dict.fromkeys(ids))


def _check_iou(value: float, name: str, *, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or not (
            low < float(value) <= 1.0):
        raise ValueError(f"{name} must be a number in ({low:g}, 1], got {value!r}; "
                         f"pass e.g. {name}=0.5.")
    return float(value)


def _check_threshold(value: float, name: str = "score_threshold") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or not (
            0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}; pass e.g. 0.3.")
    return float(value)


def _boxes(frame: pd.DataFrame) -> np.ndarray:
    return frame[["x", "y", "w", "h"]].to_numpy(dtype=float).reshape(-1, 4)


def _by_image(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Row positions of each image's boxes."""
    return {str(k): v for k, v in frame.groupby("sample_id", sort=False).indices.items()}


# --------------------------------------------------------------------------- matching

def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` with every box of ``b``.

    Parameters
    ----------
    a : array-like of shape (n, 4)
    b : array-like of shape (m, 4)
        Boxes as ``[x, y, w, h]`` (top-left corner and size, any common unit).

    Returns
    -------
    np.ndarray of shape (n, m)
        Values in [0, 1]; 0 where the boxes do not overlap.
    """
    a = np.asarray(a, dtype=float).reshape(-1, 4)
    b = np.asarray(b, dtype=float).reshape(-1, 4)
    if (a[:, 2:] <= 0).any() or (b[:, 2:] <= 0).any():
        raise ValueError("iou_matrix needs boxes [x, y, w, h] with w > 0 and h > 0.")
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    bottom = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.clip(inter / union, 0.0, 1.0)


def _greedy(ious: np.ndarray, order: np.ndarray, threshold: float,
            taken: np.ndarray | None = None) -> np.ndarray:
    """COCO matching: each prediction (in ``order``) takes the free ground-truth box it
    overlaps most, if that IoU is >= threshold. Returns the matched gt position per
    prediction (-1: none); ``taken`` (gt already matched) is updated in place."""
    threshold = min(threshold, 1 - 1e-10)
    taken = np.zeros(ious.shape[0], dtype=bool) if taken is None else taken
    matched = np.full(ious.shape[1], _NO_MATCH)
    for p in order:
        column = np.where(taken, -1.0, ious[:, p])
        if column.size and column.max() >= threshold:
            g = int(column.argmax())
            taken[g] = True
            matched[p] = g
    return matched


def _confidence_order(confidence: np.ndarray) -> np.ndarray:
    return np.argsort(-confidence, kind="mergesort")


def _match_image(ious: np.ndarray, g_labels: np.ndarray, p_labels: np.ndarray,
                 p_conf: np.ndarray, iou: float, *, eligible: np.ndarray | None = None,
                 across: bool = False) -> np.ndarray:
    """Match one image's predictions (the ``eligible`` ones) to its given boxes: per class
    (COCO), then, with ``across``, the leftovers to any free box. Returns the matched gt
    position per prediction (-1: none)."""
    order = _confidence_order(p_conf)
    if eligible is not None:
        order = order[eligible[order]]
    taken = np.zeros(len(g_labels), dtype=bool)
    matched = np.full(len(p_labels), _NO_MATCH)
    for label in np.unique(p_labels[order]):
        same = ious * (g_labels[:, None] == label)
        found = _greedy(same, order[p_labels[order] == label], iou, taken)
        matched[found != _NO_MATCH] = found[found != _NO_MATCH]
    if across:
        found = _greedy(ious, order[matched[order] == _NO_MATCH], iou, taken)
        matched[found != _NO_MATCH] = found[found != _NO_MATCH]
    return matched


def match_detections(gt: pd.DataFrame, pred: pd.DataFrame, *, iou: float = 0.5) -> pd.DataFrame:
    """Match predictions to ground-truth boxes, COCO style.

    Per image and class, predictions in descending confidence each take the unmatched
    ground-truth box of the same class they overlap most, provided the IoU is >= ``iou``.

    Parameters
    ----------
    gt : pd.DataFrame
        Ground-truth frame (``sample_id, label, x, y, w, h``).
    pred : pd.DataFrame
        Prediction frame (``sample_id, label, confidence, x, y, w, h``).
    iou : float, default 0.5
        Smallest IoU of a match.

    Returns
    -------
    pd.DataFrame
        One row per prediction (``outcome`` "tp" or "fp") and per unmatched ground-truth box
        ("fn"): ``sample_id``, ``label``, ``outcome``, ``gt_index`` and ``pred_index`` (row
        positions in ``gt`` and ``pred``, -1 where absent), ``iou`` (NaN unless matched),
        ``confidence`` (NaN for "fn").
    """
    gt = _check_frame(gt, "gt", GT_COLUMNS)
    pred = _check_frame(pred, "pred", PRED_COLUMNS)
    iou = _check_iou(iou, "iou")
    gt_images, pred_images = _by_image(gt), _by_image(pred)
    g_labels, p_labels = gt["label"].to_numpy(), pred["label"].to_numpy()
    p_conf = pred["confidence"].to_numpy()
    rows = []
    for sid in _check_ids(None, gt, pred):
        g = gt_images.get(sid, np.empty(0, int))
        p = pred_images.get(sid, np.empty(0, int))
        ious = iou_matrix(_boxes(gt.iloc[g]), _boxes(pred.iloc[p]))
        matched = _match_image(ious, g_labels[g], p_labels[p], p_conf[p], iou)
        for j in _confidence_order(p_conf[p]):
            i = matched[j]
            rows.append((sid, p_labels[p[j]], "fp" if i == _NO_MATCH else "tp",
                         _NO_MATCH if i == _NO_MATCH else int(g[i]), int(p[j]),
                         np.nan if i == _NO_MATCH else float(ious[i, j]), float(p_conf[p[j]])))
        for i in np.setdiff1d(np.arange(len(g)), matched):
            rows.append((sid, g_labels[g[i]], "fn", int(g[i]), _NO_MATCH, np.nan, np.nan))
    return pd.DataFrame(rows, columns=["sample_id", "label", "outcome", "gt_index",
                                       "pred_index", "iou", "confidence"]).astype(
        {"gt_index": np.int64, "pred_index": np.int64, "iou": float, "confidence": float})


# --------------------------------------------------------------------------- average precision

def _coco_ap(confidence: np.ndarray, hits: np.ndarray, n_gt: int) -> float:
    """COCO's 101-point interpolated average precision of one class at one IoU threshold.

    ``confidence`` and ``hits`` (bool) are per prediction in image order, each image's
    predictions by descending confidence (pycocotools' order before its stable sort)."""
    if n_gt == 0:
        return np.nan
    if confidence.size == 0:
        return 0.0
    order = np.argsort(-confidence, kind="mergesort")
    tp = np.cumsum(hits[order]).astype(float)
    fp = np.cumsum(~hits[order]).astype(float)
    recall = tp / n_gt
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
    at = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.zeros(len(RECALL_POINTS))
    reached = at < len(precision)
    sampled[reached] = precision[at[reached]]
    return float(np.mean(sampled))


def detection_map(gt: pd.DataFrame, pred: pd.DataFrame, *,
                  sample_ids: Sequence[str] | None = None,
                  iou_thresholds: Sequence[float] = COCO_IOUS,
                  classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Average precision per class, COCO's way (pycocotools' ``COCOeval``, area "all").

    Per image and class, the ``MAX_DETECTIONS`` (100) most confident predictions are
    matched greedily (:func:`match_detections`) at each IoU threshold; AP is the mean of the
    interpolated precision at 101 recall points; ``AP50_95`` averages AP over
    ``iou_thresholds``. A class with no ground-truth box (in ``classes``, or only predicted)
    is reported with ``AP = NaN`` and left out of the means (COCO's -1), since its recall is
    undefined; a class with ground truth but no prediction has AP 0.

    Parameters
    ----------
    gt, pred : pd.DataFrame
        Ground-truth and prediction frames (module docstring).
    sample_ids : sequence of str, optional
        The images evaluated (boxes on other images are ignored); default every image of
        ``gt`` or ``pred``.
    iou_thresholds : sequence of float, default 0.50:0.05:0.95
    classes : sequence of str, optional
        Classes to report, in this order, even without boxes; classes found only in the
        frames follow, sorted.

    Returns
    -------
    pd.DataFrame
        One row per class: ``label``, ``n_gt``, ``n_pred``, ``AP50``, ``AP50_95``. The means
        over classes with ground truth are in ``.attrs["map50"]`` and
        ``.attrs["map50_95"]`` (also :func:`mean_ap`); NaN when no class has ground truth.
    """
    gt = _check_frame(gt, "gt", GT_COLUMNS)
    pred = _check_frame(pred, "pred", PRED_COLUMNS)
    thresholds = [_check_iou(t, "iou_thresholds") for t in iou_thresholds]
    if not thresholds:
        raise ValueError("iou_thresholds must hold at least one IoU, e.g. (0.5,).")
    ids = _check_ids(sample_ids, gt, pred)
    keep = set(ids)
    gt = gt[gt["sample_id"].isin(keep)].reset_index(drop=True)
    pred = pred[pred["sample_id"].isin(keep)].reset_index(drop=True)
    sweep = sorted(set(thresholds) | {0.5})
    names = list(dict.fromkeys([*(classes or ()), *sorted(set(gt["label"]) | set(pred["label"]))]))
    gt_groups = dict(gt.groupby(["sample_id", "label"], sort=False).indices)
    pred_groups = dict(pred.groupby(["sample_id", "label"], sort=False).indices)
    confidence = {c: [] for c in names}
    hits = {c: {t: [] for t in sweep} for c in names}
    g_boxes, p_boxes, p_conf = _boxes(gt), _boxes(pred), pred["confidence"].to_numpy()
    for sid in ids:  # image order, as pycocotools
        for label in names:
            p = pred_groups.get((sid, label))
            if p is None:
                continue
            p = p[_confidence_order(p_conf[p])][:MAX_DETECTIONS]
            g = gt_groups.get((sid, label), np.empty(0, int))
            ious = iou_matrix(g_boxes[g], p_boxes[p])
            confidence[label].append(p_conf[p])
            for t in sweep:
                hits[label][t].append(_greedy(ious, np.arange(len(p)), t) != _NO_MATCH)
    n_gt = gt["label"].value_counts()
    n_pred = pred["label"].value_counts()
    rows = []
    for label in names:
        conf = np.concatenate(confidence[label]) if confidence[label] else np.empty(0)
        count = int(n_gt.get(label, 0))
        ap = {t: _coco_ap(conf, np.concatenate(hits[label][t]) if hits[label][t]
                          else np.empty(0, bool), count) for t in sweep}
        rows.append((label, count, int(n_pred.get(label, 0)), ap[0.5],
                     float(np.mean([ap[t] for t in thresholds])) if count else np.nan))
    table = pd.DataFrame(rows, columns=["label", "n_gt", "n_pred", "AP50", "AP50_95"])
    table.attrs.update(mean_ap(table))
    return table


def mean_ap(table: pd.DataFrame) -> dict[str, float]:
    """``{"map50", "map50_95"}``: the means of a :func:`detection_map` table over the classes
    with ground truth (``n_gt > 0``); NaN when there is none."""
    with_gt = table[table["n_gt"] > 0]
    if with_gt.empty:
        return {"map50": float("nan"), "map50_95": float("nan")}
    return {"map50": float(with_gt["AP50"].mean()), "map50_95": float(with_gt["AP50_95"].mean())}


# --------------------------------------------------------------------------- confusion

def detection_confusion(gt: pd.DataFrame, pred: pd.DataFrame, *,
                        sample_ids: Sequence[str] | None = None, iou: float = 0.5,
                        score_threshold: float = 0.3,
                        classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Box confusion counts with a background row and column.

    Predictions with confidence >= ``score_threshold`` are matched in each image at IoU >=
    ``iou``: first to boxes of their own class (COCO matching), then the rest to any
    unmatched box (a box seen as another class). An unmatched prediction counts in row
    "background" (an extra detection: a false alarm, or a box the label lacks); an unmatched
    given box in column "background" (a missed box).

    Returns
    -------
    pd.DataFrame of int
        Rows ``true`` classes then "background", columns ``predicted`` classes then
        "background"; the corner background × background is 0. Class order: ``classes``,
        then others found, sorted.
    """
    gt = _check_frame(gt, "gt", GT_COLUMNS)
    pred = _check_frame(pred, "pred", PRED_COLUMNS)
    iou = _check_iou(iou, "iou")
    threshold = _check_threshold(score_threshold)
    ids = _check_ids(sample_ids, gt, pred)
    pred = pred[pred["confidence"] >= threshold].reset_index(drop=True)
    names = list(dict.fromkeys([*(classes or ()), *sorted(set(gt["label"]) | set(pred["label"]))]))
    if BACKGROUND in names:
        raise ValueError(f"class name {BACKGROUND!r} is reserved for the confusion's extra "
                         "row and column; rename that class.")
    axis = [*names, BACKGROUND]
    counts = pd.DataFrame(0, index=pd.Index(axis, name="true"),
                          columns=pd.Index(axis, name="predicted"), dtype=np.int64)
    gt_images, pred_images = _by_image(gt), _by_image(pred)
    g_labels, p_labels = gt["label"].to_numpy(), pred["label"].to_numpy()
    for sid in ids:
        g = gt_images.get(sid, np.empty(0, int))
        p = pred_images.get(sid, np.empty(0, int))
        ious = iou_matrix(_boxes(gt.iloc[g]), _boxes(pred.iloc[p]))
        matched = _match_image(ious, g_labels[g], p_labels[p],
                               pred["confidence"].to_numpy()[p], iou, across=True)
        for j, i in enumerate(matched):
            counts.loc[g_labels[g][i] if i != _NO_MATCH else BACKGROUND, p_labels[p][j]] += 1
        for i in np.setdiff1d(np.arange(len(g)), matched):
            counts.loc[g_labels[g][i], BACKGROUND] += 1
    return counts


# --------------------------------------------------------------------------- slices

def slice_map(gt: pd.DataFrame, pred: pd.DataFrame, slices: pd.DataFrame, *,
              sample_ids: Sequence[str] | None = None,
              iou_thresholds: Sequence[float] = COCO_IOUS) -> pd.DataFrame:
    """mAP of the images of each value of each slice field.

    Parameters
    ----------
    gt, pred : pd.DataFrame
        Ground-truth and prediction frames.
    slices : pd.DataFrame
        ``sample_id`` and one column per slice field; missing values form the value
        "(missing)"; values are compared as strings. Images absent from it are "(missing)".
    sample_ids : sequence of str, optional
        The images evaluated; default the ids of ``slices``.
    iou_thresholds : sequence of float
        For ``map50_95``, as :func:`detection_map`.

    Returns
    -------
    pd.DataFrame
        One row per field value: ``slice`` ("lighting=dim"), ``field``, ``value``,
        ``n_images``, ``n_gt``, ``map50``, ``map50_95`` (means over the classes with ground
        truth in the slice; NaN when there is none), ``gap`` (map50 minus the map50 of all
        the images), ``sample_ids``. Worst gap first; NaN last.
    """
    if not isinstance(slices, pd.DataFrame) or "sample_id" not in slices.columns:
        raise ValueError("slices must be a DataFrame with a 'sample_id' column and one "
                         "column per slice field.")
    fields = [c for c in slices.columns if c != "sample_id"]
    if not fields:
        raise ValueError("slices has no slice column besides 'sample_id'; add e.g. "
                         "a 'lighting' column.")
    if slices["sample_id"].duplicated().any():
        dup = slices["sample_id"][slices["sample_id"].duplicated()].iloc[0]
        raise ValueError(f"slices lists sample_id {dup!r} twice; one row per image.")
    gt = _check_frame(gt, "gt", GT_COLUMNS)
    pred = _check_frame(pred, "pred", PRED_COLUMNS)
    ids = _check_ids(slices["sample_id"] if sample_ids is None else sample_ids)
    keys = slices.assign(sample_id=slices["sample_id"].astype(str)).set_index("sample_id")
    keys = keys.reindex(ids)
    overall = detection_map(gt, pred, sample_ids=ids, iou_thresholds=iou_thresholds)
    rows = []
    for field in fields:
        values = keys[field].astype(object).where(keys[field].notna(), MISSING).map(str)
        for value, members in values.groupby(values, sort=True).groups.items():
            members = list(members)
            table = detection_map(gt, pred, sample_ids=members, iou_thresholds=iou_thresholds)
            rows.append({"slice": f"{field}={value}", "field": field, "value": value,
                         "n_images": len(members), "n_gt": int(table["n_gt"].sum()),
                         **mean_ap(table), "sample_ids": members})
    report = pd.DataFrame(rows, columns=["slice", "field", "value", "n_images", "n_gt",
                                         "map50", "map50_95", "sample_ids"])
    report.insert(7, "gap", report["map50"] - overall.attrs["map50"])
    report.attrs.update(overall.attrs)
    return report.sort_values(["gap", "n_images"], ascending=[True, False], na_position="last",
                              kind="mergesort").reset_index(drop=True)


__all__ = ["BACKGROUND", "COCO_IOUS", "ISSUE_KINDS", "detection_confusion", "detection_map",
           "iou_matrix", "match_detections", "mean_ap", "slice_map"]
