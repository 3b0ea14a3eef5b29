"""``BoxLabeler``: draw, correct and save the defect boxes of a detection project.

An anywidget (plain ES module ``static/box_labeler.js``, no build step). One image at a
time, scaled to fit ``display_size`` pixels, with its consensus boxes coloured by class.
The browser draws and edits boxes and sends them back; Python owns everything else: which
image is shown, what is pre-filled, and every write, which is one call of
:meth:`workbench.Project.annotate_boxes` (the annotator's full box set for the image,
appended to the sample's box history)::

    save()          store the boxes on screen, go to the next image   (Enter, "Save")
    no_defect()     store "no defect here" (zero boxes), go on          (n, "No defect")
    skip()/next()   the next image without storing                      (s, →)
    previous()      the previous image                                  (←)
    set_boxes(...)  replace the boxes on screen (what the mouse does)

Pre-fill: with ``model=`` (a :class:`~workbench.train.versions.ModelVersion` or a version name),
an image that has no consensus yet shows the model's boxes with confidence at least
``prefill_threshold`` as dashed *suggestions*; saving accepts what is on screen, so the
person corrects the model instead of drawing from scratch. Predictions come from the
sample field ``pred_<version>`` when it holds some, else from ``model.predict``.

Errors from the project (an invalid box, an unknown class) are shown in the widget's error
line; nothing is stored then.
"""

from __future__ import annotations

import base64
import inspect
import io
import math
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import anywidget
import pandas as pd
import traitlets as t
from PIL import Image, UnidentifiedImageError

import workbench as wb
from widgets._base import STATIC
from widgets._base.palette import label_colors
from widgets._base.source import annotator_name, require_annotator, run_message
from workbench import LoupeError, Project, ProjectError
from workbench.store.thumbnails import thumbnail

_STATIC = STATIC

SaveCallback = Callable[[str, list[dict]], None]


class BoxLabeler(anywidget.AnyWidget):
    """Label the defect boxes of a detection project, one image at a time.

    Parameters
    ----------
    project : Project or str
        A detection project (``Project.create(name, task="detection")``) or its name.
    sample_ids : sequence of str or FiftyOne view, optional
        The images to label, in this order (default: every sample of the project).
    annotator : str, optional
        The name every box set is stored under. Without it the labeler shows the images
        and refuses to save (no box set under a made-up name).
    model : ModelVersion or str, optional
        A detector version (or its name, e.g. ``"v2"``) whose boxes pre-fill images that
        have no consensus yet.
    review : bool, default False
        Store box sets as review decisions (they set the consensus whatever the other
        annotators drew).
    prefill_threshold : float, default 0.3
        Smallest confidence of a pre-filled suggestion, in [0, 1].
    display_size : int, default 512
        Longest side of the shown image, in pixels (64 to 2048).

    Attributes
    ----------
    boxes : list of dict
        The boxes on screen: ``label``, ``x``, ``y``, ``w``, ``h`` (relative to the image
        size, top-left corner and size), ``suggested`` (a model suggestion not yet touched)
        and ``confidence`` (of a suggestion; None otherwise). Synced: the browser's edits
        land here.
    classes : list of str
        The project's classes; keys 1–9 pick the n-th.
    selected_class : str
        The class of the next box drawn.
    selected_box : int
        Index of the selected box in :attr:`boxes` (-1: none).
    index, total : int
        Position of the current image in :attr:`sample_ids`, and their number.
    sample_id, name : str
        The current image's sample id and file name.
    labelled : bool
        The current image has a consensus box set (an empty one means "no defect").
    suggested : bool
        Some boxes on screen are model suggestions not yet touched.
    saved : int
        Box sets stored through this widget.
    message, error : str
        What the last action did; why it failed (empty when it did not).
    """

    _esm = _STATIC / "box_labeler.js"
    _css = _STATIC / "box_labeler.css"

    boxes = t.List(t.Dict()).tag(sync=True)
    classes = t.List(t.Unicode()).tag(sync=True)
    colors = t.Dict().tag(sync=True)
    selected_class = t.Unicode("").tag(sync=True)
    selected_box = t.Int(-1).tag(sync=True)
    index = t.Int(0).tag(sync=True)
    total = t.Int(0).tag(sync=True)
    sample_id = t.Unicode("").tag(sync=True)
    name = t.Unicode("").tag(sync=True)
    image = t.Unicode("").tag(sync=True)
    image_width = t.Int(0).tag(sync=True)
    image_height = t.Int(0).tag(sync=True)
    image_error = t.Unicode("").tag(sync=True)
    labelled = t.Bool(False).tag(sync=True)
    suggested = t.Bool(False).tag(sync=True)
    annotator = t.Unicode("").tag(sync=True)
    review = t.Bool(False).tag(sync=True)
    model_name = t.Unicode("").tag(sync=True)
    prefill_threshold = t.Float(0.3).tag(sync=True)
    display_size = t.Int(512).tag(sync=True)
    saved = t.Int(0).tag(sync=True)
    message = t.Unicode("").tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    #: Bumped after every message from the browser is handled (it ends the "busy" state).
    revision = t.Int(0).tag(sync=True)

    def __init__(self, project: Project | str, sample_ids: Sequence[str] | Any = None, *,
                 annotator: str | None = None, model: Any = None, review: bool = False,
                 prefill_threshold: float = 0.3, display_size: int = 512) -> None:
        annotator = annotator_name(annotator, "BoxLabeler")
        if isinstance(prefill_threshold, bool) or not isinstance(prefill_threshold, int | float) \
                or not 0.0 <= prefill_threshold <= 1.0:
            raise ValueError("BoxLabeler: prefill_threshold must be a number from 0 to 1, "
                             f"got {prefill_threshold!r}")
        if isinstance(display_size, bool) or not isinstance(display_size, int) \
                or not 64 <= display_size <= 2048:
            raise ValueError("BoxLabeler: display_size must be an integer from 64 to 2048, "
                             f"got {display_size!r}")
        self.project = wb.as_project(project)
        wb.require_task(self.project, "detection", "BoxLabeler",
                        instead="LabelingGrid")
        self._ids = self._resolve_ids(sample_ids)
        self._version, model_name = self._resolve_model(model)
        self._predicted: dict[str, list[dict]] = {}
        self._callbacks: list[SaveCallback] = []
        classes = self.project.classes
        super().__init__(annotator=annotator, review=bool(review),
                         prefill_threshold=float(prefill_threshold), display_size=display_size,
                         model_name=model_name, classes=classes, colors=label_colors(classes),
                         selected_class=classes[0] if classes else "", total=len(self._ids))
        self._handlers: dict[str, Callable[[Mapping], None]] = {
            "save": self._on_save, "no_defect": self._on_no_defect,
            "move": self._on_move, "skip": lambda _: self.skip(),
        }
        self.on_msg(self._on_front_message)
        self.observe(self._on_boxes, names="boxes")
        if self._ids:
            self._show(0)
        else:
            self.message = "no images to label"

    # -- public API --------------------------------------------------------------------
    @property
    def sample_ids(self) -> list[str]:
        """The images to label, in order."""
        return list(self._ids)

    @property
    def selected(self) -> list[str]:
        """The current image's sample id (empty when there are no images)."""
        return [self.sample_id] if self.sample_id else []

    def go(self, index: int) -> None:
        """Show image ``index`` (0-based) of :attr:`sample_ids`; unsaved edits are dropped."""
        if isinstance(index, bool) or not isinstance(index, int) \
                or not 0 <= index < len(self._ids):
            raise ValueError(f"BoxLabeler.go: index must be an integer from 0 to "
                             f"{len(self._ids) - 1}, got {index!r}")
        self._show(index)

    def next(self) -> bool:
        """Show the next image (unsaved edits are dropped); False at the last one."""
        if self.index + 1 >= len(self._ids):
            self.message = "this is the last image"
            return False
        self.go(self.index + 1)
        return True

    def previous(self) -> bool:
        """Show the previous image (unsaved edits are dropped); False at the first one."""
        if self.index <= 0:
            self.message = "this is the first image"
            return False
        self.go(self.index - 1)
        return True

    def skip(self) -> bool:
        """Go to the next image without storing anything."""
        name = self.name
        moved = self.next()
        if moved:
            self.message = f"skipped {name}"
        return moved

    def reload(self) -> None:
        """Re-read the current image's boxes from the store (drops unsaved edits)."""
        if self._ids:
            self._show(self.index)

    def set_boxes(self, boxes: Any) -> None:
        """Replace the boxes on screen (nothing is stored until :meth:`save`).

        Parameters
        ----------
        boxes : list of dict or pd.DataFrame
            Each box ``{"label", "bounding_box": [x, y, w, h]}`` or ``{"label", "x", "y",
            "w", "h"}``, relative coordinates; a DataFrame with columns label, x, y, w, h.

        Raises
        ------
        ValueError
            If a box lacks its label or a coordinate, or a coordinate is not a number
            (the message names the box index). Ranges are checked by the project on save.
        """
        boxes = _normalise(boxes)
        with self.hold_sync():
            self.boxes = boxes
            self.selected_box = -1

    def save(self) -> bool:
        """Store the boxes on screen as the annotator's box set for the current image.

        Calls ``project.annotate_boxes(sample_id, boxes, annotator=..., review=...)`` and
        moves to the next image. A :class:`~workbench.ProjectError` (an invalid box, an
        unknown class) is shown in :attr:`error` instead; nothing is stored then.

        Returns
        -------
        bool
            True when the boxes were stored.
        """
        if not self.sample_id:
            self.error = "nothing to save: there are no images"
            return False
        sample_id, name = self.sample_id, self.name
        try:
            boxes = [{"label": box["label"],
                      "bounding_box": [box["x"], box["y"], box["w"], box["h"]]}
                     for box in _normalise(self.boxes)]
            self.project.annotate_boxes(
                sample_id, boxes, annotator=require_annotator(self.annotator, "BoxLabeler"),
                review=self.review)
        except (ValueError, LoupeError) as error:  # ProjectError, DatabaseUnavailableError
            self.error = f"not saved: {error}"
            return False
        self._predicted.pop(sample_id, None)
        self.saved += 1
        for callback in list(self._callbacks):
            callback(sample_id, boxes)
        what = f"{len(boxes)} box{'es' if len(boxes) != 1 else ''}" if boxes else "no defect"
        last = self.index + 1 >= len(self._ids)
        with self.hold_sync():
            self._show(self.index if last else self.index + 1)
            self.message = f"saved {what} on {name}" + ("; that was the last image" if last
                                                          else "")
        return True

    def no_defect(self) -> bool:
        """Store "no defect here" (zero boxes) for the current image and go on."""
        self.set_boxes([])
        return self.save()

    def on_save(self, callback: SaveCallback) -> None:
        """Call ``callback(sample_id, boxes)`` after every stored box set."""
        self._callbacks.append(callback)

    # -- loading -----------------------------------------------------------------------
    def _resolve_ids(self, sample_ids: Any) -> list[str]:
        known = self.project.dataset.values("id")
        if sample_ids is None:
            return list(known)
        if hasattr(sample_ids, "values") and hasattr(sample_ids, "dataset_name"):
            if sample_ids.dataset_name != self.project.dataset.name:
                raise ProjectError(f"BoxLabeler: the view is of dataset "
                                   f"{sample_ids.dataset_name!r}, not of project "
                                   f"{self.project.name!r}")
            return list(sample_ids.values("id"))
        if isinstance(sample_ids, str):
            sample_ids = [sample_ids]
        ids = list(dict.fromkeys(str(sid) for sid in sample_ids))
        unknown = [sid for sid in ids if sid not in set(known)]
        if unknown:
            raise ProjectError(f"BoxLabeler: {len(unknown)} sample id(s) are not in project "
                               f"{self.project.name!r}, e.g. {unknown[0]!r}")
        return ids

    def _resolve_model(self, model: Any) -> tuple[Any, str]:
        """(ModelVersion or None, version name) for ``model=``."""
        if model is None:
            return None, ""
        if isinstance(model, str):
            name, version = model, None
        elif isinstance(getattr(model, "name", None), str) and hasattr(model, "predict"):
            name, version = model.name, model
        else:
            raise ValueError("BoxLabeler: model must be a ModelVersion or a version name "
                             f"such as 'v1', got {type(model).__name__}")
        if version is None and not self.project.dataset.has_sample_field(f"pred_{name}"):
            version = self.project.model(name)  # ProjectError naming the versions
        if version is not None:
            task = getattr(version, "task", None) or version.record.get("task")
            if task != "detection":
                raise ProjectError(f"BoxLabeler: model {name!r} is a {task or 'classification'}"
                                   " model; pre-filling boxes needs a detector "
                                   "(wb.train(p, task='detection'))")
        return version, name

    def _show(self, index: int) -> None:
        """Show image ``index``: its picture, its consensus boxes or the suggestions."""
        sample_id = self._ids[index]
        view = self.project.dataset.select([sample_id])
        filepath, truth = (values[0] for values in view.values(["filepath", "ground_truth"]))
        labelled = truth is not None
        error = ""
        if labelled:
            boxes = _consensus(self.project.boxes(view))
        else:
            boxes = []
            if self.model_name:
                try:
                    boxes = self._suggestions(sample_id, filepath)
                except Exception as problem:  # a failing model must not stop the labelling
                    error = f"no suggestions from {self.model_name}: {problem}"
        image, width, height, image_error = self._image(filepath)
        with self.hold_sync():
            self.index = index
            self.sample_id = sample_id
            self.name = Path(filepath).name
            self.image, self.image_width, self.image_height = image, width, height
            self.image_error = image_error
            self.labelled = labelled
            self.boxes = boxes
            self.selected_box = -1
            self.error = error
            self.message = ""

    def _suggestions(self, sample_id: str, filepath: str) -> list[dict]:
        """The model's boxes for one image, confidence >= the threshold."""
        if sample_id not in self._predicted:
            self._predicted[sample_id] = self._predictions(sample_id, filepath)
        return [box for box in self._predicted[sample_id]
                if box["confidence"] >= self.prefill_threshold]

    def _predictions(self, sample_id: str, filepath: str) -> list[dict]:
        field = f"pred_{self.model_name}"
        dataset = self.project.dataset
        stored = None
        if dataset.has_sample_field(field):
            stored = dataset.select([sample_id]).values(field)[0]
        if stored is not None:
            return [_suggestion(d.label, d.bounding_box, d.confidence)
                    for d in stored.detections]
        if self._version is None:
            if self.model_name not in self.project.models()["name"].tolist():
                return []
            self._version = self.project.model(self.model_name)
        kwargs = ({"progress": False}
                  if "progress" in inspect.signature(self._version.predict).parameters else {})
        frame = self._version.predict([filepath], **kwargs)
        return [_suggestion(row.label, [row.x, row.y, row.w, row.h], row.confidence)
                for row in frame.itertuples()]

    def _image(self, filepath: str) -> tuple[str, int, int, str]:
        """(data URL, width, height, error) of the image scaled to ``display_size``."""
        try:
            data = thumbnail(filepath, size=self.display_size,
                             cache_dir=self.project.folder / "thumbnails")
            with Image.open(io.BytesIO(data)) as decoded:
                width, height = decoded.size
        except (OSError, UnidentifiedImageError, ValueError) as error:
            return "", 0, 0, f"{Path(filepath).name}: cannot read ({error})"
        uri = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        return uri, width, height, ""

    # -- front-end ---------------------------------------------------------------------
    def _on_front_message(self, _widget: Any, content: Any, _buffers: Sequence) -> None:
        """Handle a message of ``box_labeler.js``; failures land in :attr:`error`."""
        try:
            error = run_message(self._handlers, content)
            if error:
                self.error = error
        finally:
            self.revision += 1

    def _on_boxes(self, change: Mapping) -> None:
        """Suggestions stay suggestions until edited (the browser clears their flag)."""
        self.suggested = any(box.get("suggested") for box in change["new"])

    def _check_current(self, content: Mapping) -> None:
        sample_id = content.get("sample_id")
        if sample_id is not None and sample_id != self.sample_id:
            raise ProjectError(f"not saved: the edits were made on sample {sample_id!r} but "
                               f"{self.sample_id!r} is shown now; redo them")

    def _on_save(self, content: Mapping) -> None:
        self._check_current(content)
        if "boxes" in content:
            self.boxes = _normalise(content["boxes"])
        self.save()

    def _on_no_defect(self, content: Mapping) -> None:
        self._check_current(content)
        self.no_defect()

    def _on_move(self, content: Mapping) -> None:
        to = content.get("to")
        if to == "next":
            self.next()
        elif to == "previous":
            self.previous()
        else:
            self.go(to)


def _consensus(frame: pd.DataFrame) -> list[dict]:
    """Boxes of a :meth:`Project.boxes` frame, in box order."""
    if "box_index" in frame.columns:
        frame = frame.sort_values("box_index")
    return [_box(row.label, row.x, row.y, row.w, row.h) for row in frame.itertuples()]


def _suggestion(label: str, bounding_box: Sequence[float], confidence: Any) -> dict:
    x, y, w, h = bounding_box
    score = float(confidence) if confidence is not None else 1.0
    return _box(label, x, y, w, h, suggested=True, confidence=score)


def _box(label: str, x: float, y: float, w: float, h: float, *, suggested: bool = False,
         confidence: float | None = None) -> dict:
    return {"label": str(label), "x": float(x), "y": float(y), "w": float(w), "h": float(h),
            "suggested": suggested, "confidence": confidence}


def _normalise(boxes: Any) -> list[dict]:
    """Boxes in the :attr:`BoxLabeler.boxes` format; ValueError naming a malformed box."""
    if isinstance(boxes, pd.DataFrame):
        missing = [c for c in ("label", "x", "y", "w", "h") if c not in boxes.columns]
        if missing:
            raise ValueError(f"boxes: the DataFrame lacks column(s) {', '.join(missing)} "
                             "(expected label, x, y, w, h)")
        boxes = boxes.to_dict("records")
    if isinstance(boxes, Mapping | str) or not isinstance(boxes, Sequence):
        raise ValueError(f"boxes must be a list of dicts or a DataFrame, got "
                         f"{type(boxes).__name__}")
    out = []
    for i, box in enumerate(boxes):
        if not isinstance(box, Mapping):
            raise ValueError(f"box {i}: expected a dict with label and bounding_box (or x, y, "
                             f"w, h), got {type(box).__name__}")
        label = box.get("label")
        if not isinstance(label, str) or not label:
            raise ValueError(f"box {i}: 'label' must be a class name, got {label!r}")
        if "bounding_box" in box:
            coords = box["bounding_box"]
            if isinstance(coords, str) or not isinstance(coords, Sequence) \
                    or len(coords) != 4:
                raise ValueError(f"box {i}: 'bounding_box' must be [x, y, w, h], got "
                                 f"{coords!r}")
            coords = dict(zip("xywh", coords, strict=True))
        else:
            coords = {key: box.get(key) for key in "xywh"}
        numbers = {}
        for key, value in coords.items():
            if isinstance(value, bool) or not isinstance(value, Real) \
                    or not math.isfinite(value):
                raise ValueError(f"box {i}: '{key}' must be a finite number, got {value!r}")
            numbers[key] = float(value)
        confidence = box.get("confidence")
        suggested = bool(box.get("suggested", False))
        out.append(_box(label, **numbers, suggested=suggested,
                        confidence=float(confidence) if suggested and isinstance(
                            confidence, Real) else None))
    return out
