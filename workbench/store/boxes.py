"""Bounding boxes: validation and the consensus rule for box sets (pure functions).

A box is ``{"label": str, "bounding_box": [x, y, w, h]}`` in FiftyOne's convention: the
top-left corner and the size, relative to the image's width and height, all in [0, 1],
``w > 0`` and ``h > 0``. A *box set* is one annotator's full set of boxes for one image
(``[]``: "no defect here").

A sample's box history is a list of entries ``{annotator, time, review, boxes}``, oldest
first, where ``boxes`` is a box set or ``None`` (the withdrawal of that annotator's entry,
or, as a review, of the review in force). The consensus is the box set of the latest review
in force if there is one, else the newest box set still in force (each annotator's latest
non-review entry counts; a withdrawal removes it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

#: Slack allowed past the image border (rounding of relative coordinates); clipped away.
EDGE_TOLERANCE = 1e-6

Box = dict[str, Any]


def check_boxes(boxes: Any, *, classes: Sequence[str] | None = None) -> list[Box]:
    """Validate boxes and return them in the stored form.

    Parameters
    ----------
    boxes : list of mappings, DataFrame, or None
        Each box as ``{"label", "bounding_box": [x, y, w, h]}`` or ``{"label", "x", "y",
        "w", "h"}``, or an object with ``label`` and ``bounding_box`` attributes (a
        ``fo.Detection``); or a DataFrame with columns label, x, y, w, h.
    classes : sequence of str, optional
        When given, every label must be one of them.

    Returns
    -------
    list of dict
        ``{"label": str, "bounding_box": [x, y, w, h]}`` with floats clipped to the image.

    Raises
    ------
    ValueError
        Naming the box index and field, e.g. ``boxes[2].bounding_box: w must be > 0``.
    """
    if boxes is None:
        raise ValueError("boxes must be a list of boxes ([] for an image without defects); "
                         "to withdraw an entry use withdraw_boxes")
    if isinstance(boxes, pd.DataFrame):
        missing = [c for c in ("label", "x", "y", "w", "h") if c not in boxes.columns]
        if missing:
            raise ValueError(f"boxes DataFrame lacks column(s) {', '.join(missing)}; "
                             "expected label, x, y, w, h (relative to the image size)")
        boxes = boxes[["label", "x", "y", "w", "h"]].to_dict("records")
    if isinstance(boxes, (str, bytes, Mapping)) or not isinstance(boxes, Iterable):
        raise ValueError(f"boxes must be a list of boxes, got {type(boxes).__name__}")
    return [_check_box(box, index, classes) for index, box in enumerate(boxes)]


def _check_box(box: Any, index: int, classes: Sequence[str] | None) -> Box:
    where = f"boxes[{index}]"
    if isinstance(box, Mapping):
        label = box.get("label")
        if "bounding_box" in box:
            coords = box["bounding_box"]
        elif all(k in box for k in ("x", "y", "w", "h")):
            coords = [box["x"], box["y"], box["w"], box["h"]]
        else:
            raise ValueError(f"{where}.bounding_box: missing; give 'bounding_box': [x, y, w, h] "
                             "or keys x, y, w, h (relative to the image size)")
    elif hasattr(box, "label") and hasattr(box, "bounding_box"):
        label, coords = box.label, box.bounding_box
    else:
        raise ValueError(f"{where}: expected a dict with label and bounding_box, "
                         f"got {type(box).__name__}")
    if not isinstance(label, str) or not label.strip() or label != label.strip():
        raise ValueError(f"{where}.label: {label!r} is not a valid label (a non-empty string "
                         "without leading or trailing spaces)")
    if classes is not None and label not in classes:
        raise ValueError(f"{where}.label: {label!r} is not a class (classes: "
                         f"{', '.join(classes) or 'none'})")
    return {"label": label, "bounding_box": check_bounding_box(coords, where=where)}


def check_bounding_box(coords: Any, *, where: str = "box") -> list[float]:
    """Validate one relative ``[x, y, w, h]``; returns it as floats clipped to [0, 1].

    Raises
    ------
    ValueError
        Naming ``where`` and the coordinate at fault.
    """
    field = f"{where}.bounding_box"
    if isinstance(coords, (str, bytes)) or not isinstance(coords, Iterable):
        raise ValueError(f"{field}: expected [x, y, w, h], got {coords!r}")
    values = list(coords)
    if len(values) != 4:
        raise ValueError(f"{field}: expected 4 numbers [x, y, w, h], got {len(values)}")
    numbers = []
    for name, value in zip("xywh", values, strict=True):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{field}: {name} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{field}: {name} must be finite, got {value!r}")
        numbers.append(number)
    x, y, w, h = numbers
    for name, value in (("w", w), ("h", h)):
        if value <= 0:
            raise ValueError(f"{field}: {name} must be > 0, got {value}")
    for name, value, size, side in (("x", x, w, "width"), ("y", y, h, "height")):
        if value < -EDGE_TOLERANCE or value > 1:
            raise ValueError(f"{field}: {name} must be in [0, 1] (relative to the image "
                             f"{side}), got {value}")
        if value + size > 1 + EDGE_TOLERANCE:
            raise ValueError(f"{field}: box reaches past the image ({name} + "
                             f"{'w' if name == 'x' else 'h'} = {value + size:.6g} > 1)")
    x, y = max(x, 0.0), max(y, 0.0)
    w, h = min(w, 1.0 - x), min(h, 1.0 - y)
    if w <= 0 or h <= 0:
        raise ValueError(f"{field}: box has no area inside the image")
    return [x, y, w, h]


def latest_box_sets(history: Iterable[Mapping]) -> dict[str, tuple[int, list[Box]]]:
    """Each annotator's box set in force: annotator -> (position in history, boxes).

    Reviews are not counted; an annotator whose latest entry is a withdrawal has none.
    """
    latest: dict[str, tuple[int, list[Box] | None]] = {}
    for position, entry in enumerate(history):
        if not entry.get("review"):
            latest[entry["annotator"]] = (position, entry.get("boxes"))
    return {who: (pos, boxes) for who, (pos, boxes) in latest.items() if boxes is not None}


def box_consensus(history: Iterable[Mapping]) -> list[Box] | None:
    """Consensus box set of one sample, or None when nobody's box set is in force.

    The latest review decides when it is not a withdrawal (a review withdrawal withdraws
    the reviews before it); otherwise the newest box set still in force wins.

    Parameters
    ----------
    history : iterable of mappings with annotator, boxes and optionally review
        The sample's box history, oldest first.
    """
    history = list(history)
    last_review = None
    for entry in history:
        if entry.get("review"):
            last_review = entry
    if last_review is not None and last_review.get("boxes") is not None:
        return list(last_review["boxes"])
    in_force = latest_box_sets(history)
    if not in_force:
        return None
    _, boxes = max(in_force.values(), key=lambda item: item[0])
    return list(boxes)


def same_boxes(a: Sequence[Mapping] | None, b: Sequence[Mapping] | None, *,
               tolerance: float = 1e-6) -> bool:
    """Whether two box sets are the same (labels and coordinates, order ignored)."""
    if a is None or b is None:
        return a is None and b is None
    if len(a) != len(b):
        return False

    def key(box: Mapping) -> tuple:
        return (box["label"], *[round(v, 5) for v in box["bounding_box"]])

    for one, two in zip(sorted(a, key=key), sorted(b, key=key), strict=True):
        if one["label"] != two["label"]:
            return False
        if any(abs(u - v) > tolerance
               for u, v in zip(one["bounding_box"], two["bounding_box"], strict=True)):
            return False
    return True

