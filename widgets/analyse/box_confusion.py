"""``BoxConfusionDrilldown``: which boxes a detector confuses, and the images behind them.

What ``ConfusionDrilldown(p, mv)`` opens on a detection project. The heat map is the box
confusion of :func:`workbench.analyse.detection` (its out-of-fold boxes against the current
consensus, restricted to the widget's view): rows are the given box classes plus
"background" (a detection where no box is given), columns the predicted classes plus
"background" (a given box the model missed). Beside it, average precision per class. A
click on a cell shows its images as thumbnails with the cell's boxes drawn (the given boxes
of the cell's row class solid, the predictions of its column class dashed, the image's other
boxes thin and grey) and opens them in a
:class:`~widgets.label.box_labeler.BoxLabeler`, whose saves (review decisions) redraw the matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import UnidentifiedImageError

import workbench as wb
from widgets._base.drill import chart_style
from widgets._base.heatmap import cell_hovertext, heatmap_figure
from widgets._base.lightbox import Lightbox, attach, thumb_attributes
from widgets._base.palette import UNLABELLED_COLOR, color_of, label_colors
from widgets._base.source import annotator_name, resolve_source
from widgets.label.box_issue_queue import boxed_image
from workbench import ProjectError
from workbench.analyse.classification import class_order
from workbench.keywords import renamed
from workbench.metrics import detection_metrics as dm
from workbench.store.boxes import box_consensus
from workbench.text import escape_html, escape_plotly

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion

BACKGROUND = dm.BACKGROUND
CELL_COLUMNS = ["sample_id", "true", "predicted", "n"]


class BoxConfusionDrilldown(widgets.VBox):
    """A box confusion heat map (with background) whose cells open their images.

    Parameters
    ----------
    source : Project, str or FiftyOne view
        A detection project, its name, or a view of it (only the view's images count).
    version : ModelVersion or str, optional
        The detection version (``"v2"``); the newest when None.
    annotator : str, optional
        Name the labeler's corrections are stored under (as review decisions). Without it the
        widget shows everything and refuses to write (no decision under a made-up name).
    iou : float, default 0.5
        IoU of a match between a given and a predicted box.
    score_threshold : float, default 0.3
        Predictions below this confidence are left out (as in ``wb.detection_report``).
    thumb_size : int, default 96
        Thumbnail side in the gallery.
    page_size : int, default 60
        Thumbnails shown per cell (the first ones).
    labeler : bool, default True
        Open a cell's images in a :class:`~widgets.label.box_labeler.BoxLabeler` below the
        gallery.

    Attributes
    ----------
    matrix : pandas.DataFrame
        Box counts, rows ``true`` (classes, then "background"), columns ``predicted``
        (classes, then "background"); equals ``wb.detection_report(p, mv).confusion`` on
        the whole project.
    report : pandas.DataFrame
        Average precision per class (``label, n_gt, n_pred, AP50, AP50_95``).
    cells : pandas.DataFrame
        Which images make each cell (:func:`cell_counts`): ``sample_id, true, predicted,
        n``.
    figure : plotly.graph_objects.FigureWidget
        The heat map (trace 0); ``z`` holds :attr:`matrix`.
    gallery : ipywidgets.HTML
        The thumbnails of the drilled cell (a click or Enter opens one at full size, with
        the same boxes, in :attr:`lightbox`).
    lightbox : widgets._base.lightbox.Lightbox
    labeler : BoxLabeler or None
        The drilled cell's images, to correct their boxes.
    cell : tuple of (str, str) or None
        The (given, predicted) cell shown.
    shown : list of str
        The sample ids of the drilled cell, in gallery order.
    """

    @renamed(mv="version")
    def __init__(self, source: Any, version: ModelVersion | str | None = None, *,
                 annotator: str | None = None, iou: float = 0.5, score_threshold: float = 0.3,
                 thumb_size: int = 96, page_size: int = 60, labeler: bool = True) -> None:
        for name, value, low in (("iou", iou, 0.05), ("score_threshold", score_threshold, 0.0)):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not low <= value <= 1:
                raise ValueError(f"BoxConfusionDrilldown: {name} must be a number from {low:g} "
                                 f"to 1, got {value!r}")
        for name, value in (("thumb_size", thumb_size), ("page_size", page_size)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 2048:
                raise ValueError(f"BoxConfusionDrilldown: {name} must be an integer from 1 to "
                                 f"2048, got {value!r}")
        annotator = annotator_name(annotator, "BoxConfusionDrilldown")
        project, self._scope = resolve_source(source)
        wb.require_task(project, "detection", "BoxConfusionDrilldown",
                        instead="ConfusionDrilldown")
        self.project, self.version = wb.as_version(project, version)
        if self.version.task != "detection":
            raise ProjectError(f"model version {self.version.name!r} is a {self.version.task} "
                               "model; train a detector with wb.train(p, task='detection')")
        self.annotator, self.iou, self.score_threshold = annotator, iou, score_threshold
        self.thumb_size, self.page_size, self._with_labeler = thumb_size, page_size, labeler
        self.cell: tuple[str, str] | None = None
        self.shown: list[str] = []
        self.labeler = None
        self.figure = heatmap_figure(unit="boxes", rows="given box", size=(500, 460),
                                     margin=(120, 100))
        self.header = widgets.HTML()
        self.table = widgets.HTML()
        self.gallery = widgets.HTML(
            '<div class="loupe-model-hint">Click a cell of the matrix to see its images</div>')
        self.labeler_box = widgets.VBox([])
        self.lightbox = Lightbox()
        self.refresh()  # draw before wrapping: a FigureWidget's early changes are lost
        self.figure = go.FigureWidget(self.figure)
        self.figure.data[0].on_click(self._on_click)
        super().__init__(children=[
            chart_style(), self.header, widgets.HBox([self.figure, self.table]), self.gallery,
            self.labeler_box])
        self.add_class("loupe-model")
        self.add_class("loupe-confusion")
        self.add_class("loupe-box-confusion")
        attach(self, self.lightbox)

    # -- public API --------------------------------------------------------------------
    @property
    def selected(self) -> list[str]:
        """The labeler's current image (the drilled cell's images without a labeler)."""
        if self.labeler is not None:
            return list(self.labeler.selected)
        return list(self.shown)

    @property
    def classes(self) -> list[str]:
        """Rows of the matrix (the classes and background), in order."""
        return list(self.matrix.index)

    @property
    def per_class(self) -> pd.DataFrame:
        """Average precision per class (same as :attr:`report`)."""
        return self.report

    def refresh(self) -> None:
        """Re-read the current boxes; redraw the matrix, the AP table and the gallery."""
        from workbench.analyse.detection import evaluation_frames

        gt, pred, ids = evaluation_frames(self.project, self.version)
        if self._scope is not None:
            scope = set(self._scope)
            ids = [sid for sid in ids if sid in scope]
            gt = gt[gt["sample_id"].isin(scope)].reset_index(drop=True)
            pred = pred[pred["sample_id"].isin(scope)].reset_index(drop=True)
        if not ids:
            raise ProjectError(f"BoxConfusionDrilldown: no labelled image in view was held out "
                               f"by {self.version.name!r}; widen the view or retrain.")
        classes = class_order(self.project, self.version)
        self.matrix = dm.detection_confusion(gt, pred, sample_ids=ids, iou=self.iou,
                                             score_threshold=self.score_threshold,
                                             classes=classes)
        self.report = dm.detection_map(gt, pred, sample_ids=ids, classes=classes)
        self.cells = cell_counts(gt, pred, sample_ids=ids, iou=self.iou,
                                 score_threshold=self.score_threshold, classes=classes)
        self._gt = gt
        self._pred = pred[pred["confidence"] >= self.score_threshold].reset_index(drop=True)
        colors = label_colors(self.project.classes)
        rows, columns = list(self.matrix.index), list(self.matrix.columns)
        counts = self.matrix.to_numpy().tolist()
        with self.figure.batch_update():
            trace = self.figure.data[0]
            trace.x, trace.y, trace.z, trace.text = columns, rows, counts, counts
            trace.hovertext = cell_hovertext(rows, columns)
            for axis, names in ((self.figure.layout.xaxis, columns),
                                (self.figure.layout.yaxis, rows)):
                axis.tickvals = names
                axis.ticktext = [f'<span style="color:{color_of(c, colors)}">'
                                 f"{escape_plotly(c)}</span>" for c in names]
        self.header.value = (
            f'<div class="loupe-model-header"><h3>Box confusion of '
            f"{escape_html(self.version.name)}</h3><span class=\"loupe-model-sub\">"
            f"{len(ids)} held-out images · mAP@0.5 {_fmt(self.report.attrs.get('map50'))} · "
            f"mAP@[.5:.95] {_fmt(self.report.attrs.get('map50_95'))} · IoU ≥ {self.iou:g}, "
            f"confidence ≥ {self.score_threshold:g}</span> <span class=\"loupe-model-hint\">"
            "rows: given box (background: a detection with no box) · columns: predicted "
            "(background: a missed box) · click a cell to see its images</span></div>")
        self.table.value = _ap_html(self.report, colors)
        if self.cell is not None:
            self._render(*self.cell, self._cell_ids(*self.cell))

    def drill(self, true: str, predicted: str) -> list[str]:
        """Show the images of cell (``true``, ``predicted``) with the cell's boxes drawn, the
        most confident predictions first (missed boxes: the images missing most first).

        Returns
        -------
        list of str
            The sample ids shown, in order.

        Raises
        ------
        ProjectError
            If ``true`` is not a row or ``predicted`` not a column of the matrix.
        """
        for name, value, names in (("true", true, self.matrix.index),
                                   ("predicted", predicted, self.matrix.columns)):
            if value not in names:
                raise ProjectError(f"BoxConfusionDrilldown.drill: {name}={value!r} is not a "
                                   f"{'row' if name == 'true' else 'column'} of the matrix "
                                   f"(classes: {', '.join(map(str, names))})")
        self.cell = (true, predicted)
        ids = self._cell_ids(true, predicted)
        self._render(true, predicted, ids)
        if self._with_labeler:
            self._open_labeler(ids)
        return ids

    # -- helpers -----------------------------------------------------------------------
    def _on_click(self, _trace: Any, points: Any, _state: Any) -> None:
        if points.point_inds:
            self.drill(str(points.ys[0]), str(points.xs[0]))

    def _cell_ids(self, true: str, predicted: str) -> list[str]:
        cell = self.cells[(self.cells["true"] == true) & (self.cells["predicted"] == predicted)]
        if cell.empty:
            return []
        found = self._pred[self._pred["label"] == predicted]
        confidence = found.groupby("sample_id")["confidence"].max()
        order = cell.assign(confidence=cell["sample_id"].map(confidence)).sort_values(
            ["confidence", "n"], ascending=[False, False], kind="mergesort",
            na_position="last")
        return list(order["sample_id"])

    def _render(self, true: str, predicted: str, ids: list[str]) -> None:
        """Fill the gallery with the cell's images: the given boxes of class ``true``
        solid, the predictions of class ``predicted`` dashed, the other boxes grey."""
        colors = label_colors(self.project.classes)
        page = ids[: self.page_size]
        counts = self.cells[(self.cells["true"] == true)
                            & (self.cells["predicted"] == predicted)].set_index("sample_id")["n"]
        found = self.project.dataset.select(page)
        paths = dict(zip(*found.values(["id", "filepath"]), strict=True))
        consensus = {sid: box_consensus(h) or []
                     for sid, h in self.project.box_histories(page).items()}
        given = self._gt[self._gt["label"] == true].groupby("sample_id")
        guessed = self._pred[self._pred["label"] == predicted].groupby("sample_id")
        given, guessed = dict(list(given)), dict(list(guessed))
        tiles = []
        self.lightbox.clear()
        for sid in page:
            mine = given.get(sid, self._gt.iloc[:0])
            theirs = guessed.get(sid, self._pred.iloc[:0])
            drawn = [{"x": r.x, "y": r.y, "w": r.w, "h": r.h, "color": color_of(true, colors)}
                     for r in mine.itertuples()]
            drawn += [{"x": r.x, "y": r.y, "w": r.w, "h": r.h, "dashed": True,
                       "color": color_of(predicted, colors)} for r in theirs.itertuples()]
            solid = [(r.x, r.y, r.w, r.h) for r in mine.itertuples()]
            others = [b for b in consensus.get(sid, [])
                      if not any(np.allclose(b["bounding_box"], g, atol=1e-6) for g in solid)]
            name = Path(paths.get(sid, sid)).name
            try:
                uri = boxed_image(paths[sid], drawn, others=others, size=self.thumb_size,
                                  cache_dir=self.project.folder / "thumbnails")
                image = f'<img src="{uri}" alt="{escape_html(name)}">'
            except (KeyError, OSError, UnidentifiedImageError, ValueError):
                image = (f'<div class="loupe-drift-missing" style="width:{self.thumb_size}px;'
                         f'height:{self.thumb_size}px">?</div>')
            best = theirs["confidence"].max() if len(theirs) else float("nan")
            n = int(counts.get(sid, 0))
            caption = f"{n} box{'es' if n != 1 else ''}" + (
                f" · confidence {best:.2f}" if math.isfinite(best) else "")
            if sid in paths:
                grey = [{**dict(zip("xywh", b["bounding_box"], strict=True)),
                         "color": UNLABELLED_COLOR} for b in others]
                self.lightbox.register(sid, paths[sid], name=name, boxes=[*grey, *drawn],
                                       caption=f"given {true} (solid) · predicted {predicted} "
                                               f"(dashed) · {caption}")
            opens = thumb_attributes(sid, name=name, caption=caption, size=self.thumb_size) \
                if sid in paths else ""
            tiles.append(f'<figure class="loupe-drift-tile loupe-box-tile" data-sample-id='
                         f'"{escape_html(sid)}" {opens}>{image}<figcaption>{escape_html(name)}'
                         f"<br>{escape_html(caption)}</figcaption></figure>")
        kind = ("correct" if true == predicted else
                "missed boxes" if predicted == BACKGROUND else
                "detections without a given box" if true == BACKGROUND else
                "seen as another class")
        more = (f" (first {len(page)} shown)" if len(ids) > len(page) else "")
        title = (f"given {true} · predicted {predicted} · {len(ids)} "
                 f"image{'s' if len(ids) != 1 else ''} ({kind}){more}")
        body = ("".join(tiles) if tiles else
                '<div class="loupe-model-hint">No image in this cell.</div>')
        self.shown = list(ids)
        self.gallery.value = (f'<div class="loupe-box-gallery"><h4>{escape_html(title)}</h4>'
                              f'<div class="loupe-drift-tiles">{body}</div></div>')

    def _open_labeler(self, ids: list[str]) -> None:
        """A BoxLabeler on the cell's images (review decisions); a save redraws the matrix."""
        from widgets.label.box_labeler import BoxLabeler

        if not ids:
            self.labeler = None
            self.labeler_box.children = []
            return
        self.labeler = BoxLabeler(self.project, ids, annotator=self.annotator, review=True)
        self.labeler.on_save(lambda _sid, _boxes: self.refresh())
        self.labeler_box.children = [self.labeler]


def cell_counts(gt: pd.DataFrame, pred: pd.DataFrame, *, sample_ids: Sequence[str],
                iou: float = 0.5, score_threshold: float = 0.3,
                classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Which images make each cell of
    :func:`~workbench.metrics.detection_metrics.detection_confusion`: the same function,
    one image at a time.

    Returns
    -------
    pd.DataFrame
        ``sample_id, true, predicted, n`` (a class or "background"; ``n`` > 0 boxes of the
        image in that cell). Summing ``n`` per (true, predicted) gives the matrix.
    """
    gt_parts = dict(list(gt.groupby("sample_id", sort=False)))
    pred_parts = dict(list(pred.groupby("sample_id", sort=False)))
    rows = []
    for sid in dict.fromkeys(map(str, sample_ids)):
        one = dm.detection_confusion(gt_parts.get(sid, gt.iloc[:0]),
                                     pred_parts.get(sid, pred.iloc[:0]), sample_ids=[sid],
                                     iou=iou, score_threshold=score_threshold, classes=classes)
        counts = one.stack()
        rows.extend((sid, true, predicted, int(n))
                    for (true, predicted), n in counts[counts > 0].items())
    return pd.DataFrame(rows, columns=CELL_COLUMNS).astype({"n": np.int64})


def _fmt(value: Any) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _ap_html(report: pd.DataFrame, colors: dict[str, str]) -> str:
    """The per-class AP table, weak AP50 (< 0.5) in red."""
    rows = []
    for row in report.itertuples(index=False):
        weak = ' class="loupe-weak"' if row.n_gt and not row.AP50 >= 0.5 else ""
        dot = f'<span class="loupe-dot" style="background:{color_of(row.label, colors)}"></span>'
        rows.append(f"<tr><td>{dot}{escape_html(str(row.label))}</td>"
                    f"<td{weak}>{_fmt(row.AP50)}</td><td>{_fmt(row.AP50_95)}</td>"
                    f"<td>{row.n_gt}</td><td>{row.n_pred}</td></tr>")
    return ('<table class="loupe-report"><thead><tr><th>class</th><th>AP50</th>'
            "<th>AP50:95</th><th>boxes</th><th>predicted</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


__all__ = ["BoxConfusionDrilldown", "cell_counts"]
