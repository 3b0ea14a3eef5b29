"""``ConfusionDrilldown``: which classes a model version confuses, and the images behind it.

Render-only: the counts come from :func:`workbench.metrics.confusion_matrix` and
:func:`workbench.metrics.class_report` on the version's held-out predictions (the same as
``wb.confusion`` / ``wb.class_report``, restricted to the widget's view); a click on a cell
opens its samples (:func:`workbench.metrics.confusion_cell`, as ``wb.confusion_samples``)
in a :class:`~widgets.label.grid.LabelingGrid`, where they can be relabelled. After each relabel
the matrix is re-read from the store: the given labels change, the predictions do not.

A detection project has its own widget,
:class:`~widgets.analyse.box_confusion.BoxConfusionDrilldown` (the box confusion with background
rows and columns, AP per class, a cell's images with their boxes); the
:class:`~widgets.app.Workbench` picks by task. ``ConfusionDrilldown(detection_project, ...)``
still opens one, with a ``FutureWarning``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

import workbench as wb
from widgets._base.drill import chart_style, drill_grid, in_scope, open_full_size
from widgets._base.heatmap import cell_hovertext, heatmap_figure
from widgets._base.palette import color_of, label_colors
from widgets._base.source import is_detection_source, resolve_source
from widgets.analyse.box_confusion import BoxConfusionDrilldown
from workbench import ProjectError
from workbench import metrics as analysis
from workbench.analyse.classification import class_order, held_out
from workbench.keywords import renamed
from workbench.text import escape_html, escape_plotly

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion


class ConfusionDrilldown(widgets.VBox):
    """A confusion heatmap whose cells open their images in a labelling grid.

    Parameters
    ----------
    source : Project, str or FiftyOne view
        The project, its name, or a view of it (only the view's samples are counted).
    version : ModelVersion or str, optional
        The model version (``"v2"``); the newest when None.
    annotator : str, optional
        Name the grid's relabels are stored under (as review decisions). Without it the
        widget shows everything and refuses to write (no decision under a made-up name).
    thumb_size : int, default 96
        Thumbnail side in the grid.
    page_size : int, default 60
        Thumbnails per grid page.

    Attributes
    ----------
    matrix : pandas.DataFrame
        Counts, rows = given label (index ``true``), columns = predicted label; class order
        of the version (then the project's other classes).
    report : pandas.DataFrame
        Per class precision, recall, f1, support (as ``wb.class_report``).
    figure : plotly.graph_objects.FigureWidget
        The heatmap (trace 0); ``z`` holds :attr:`matrix`.
    grid : widgets.label.grid.LabelingGrid
        The drilled-into samples.
    lightbox : widgets._base.lightbox.Lightbox
        Opens the grid's thumbnails at full size (⤢, double click or Enter).
    cell : tuple of (str, str) or None
        The (given, predicted) cell shown in the grid.
    """

    def __new__(cls, source: Any = None, *args: Any, **kwargs: Any) -> Any:
        """A :class:`BoxConfusionDrilldown` for a detection project (deprecated shortcut)."""
        if cls is ConfusionDrilldown and is_detection_source(source):
            warnings.warn("ConfusionDrilldown on a detection project: use "
                          "BoxConfusionDrilldown(p, version, annotator=...) (this shortcut "
                          "goes in a later release)", FutureWarning, stacklevel=2)
            return BoxConfusionDrilldown(source, *args, **kwargs)  # not a subclass: one init
        return super().__new__(cls)

    @renamed(mv="version")
    def __init__(self, source: Any, version: ModelVersion | str | None = None, *,
                 annotator: str | None = None, thumb_size: int = 96, page_size: int = 60) -> None:
        project, self._scope = resolve_source(source)
        self.project, self.version = wb.as_version(project, version)
        predictions = self.version.oof_predictions()
        self._predictions = predictions.set_index("sample_id")[["label", "confidence"]]
        self.cell: tuple[str, str] | None = None
        self.grid = drill_grid(
            self.project, annotator=annotator, thumb_size=thumb_size, page_size=page_size,
            hint="Click a cell of the matrix to see its images")
        self.grid.on_edit(self._on_edit)
        self.figure = heatmap_figure(unit="images", rows="given label", size=(460, 420),
                                     margin=(110, 90))
        self.header = widgets.HTML()
        self.table = widgets.HTML()
        # Built with its data: changes made to a FigureWidget before the page shows it are
        # lost (plotly sends them as one-off messages), so draw first, then wrap.
        self.refresh()
        self.figure = go.FigureWidget(self.figure)
        self.figure.data[0].on_click(self._on_click)
        style = chart_style()
        super().__init__(children=[style, self.header, widgets.HBox([self.figure, self.table]),
                                   self.grid])
        self.add_class("loupe-model")
        self.add_class("loupe-confusion")
        self.lightbox = open_full_size(self, self.grid)

    # -- public API --------------------------------------------------------------------
    @property
    def selected(self) -> list[str]:
        """Sample ids selected in the grid."""
        return list(self.grid.selected)

    @property
    def classes(self) -> list[str]:
        """Rows and columns of the matrix, in order."""
        return list(self.matrix.index)

    def refresh(self) -> None:
        """Re-read the current labels and redraw the matrix and the per-class table."""
        frame, classes = self._held_out()
        if frame.empty:
            raise ProjectError(f"ConfusionDrilldown: no labelled sample in view was held out "
                               f"by {self.version.name!r}; widen the view or retrain.")
        self.matrix = analysis.confusion_matrix(frame["given"], frame["predicted"],
                                                classes=classes)
        self.report = analysis.class_report(frame["given"], frame["predicted"], classes=classes)
        colors = label_colors(self.project.classes)
        counts = self.matrix.to_numpy().tolist()
        ticks = [f'<span style="color:{color_of(c, colors)}">{escape_plotly(c)}</span>'
                 for c in classes]
        with self.figure.batch_update():
            trace = self.figure.data[0]
            trace.x, trace.y, trace.z, trace.text = classes, classes, counts, counts
            trace.hovertext = cell_hovertext(classes, classes)
            for axis in (self.figure.layout.xaxis, self.figure.layout.yaxis):
                axis.tickvals, axis.ticktext = classes, ticks
        n, correct = len(frame), int((frame["given"] == frame["predicted"]).sum())
        accuracy = f"{correct / n:.1%}" if n else "n/a"
        self.header.value = (
            f'<div class="loupe-model-header"><h3>Confusion of {escape_html(self.version.name)}'
            f"</h3><span class=\"loupe-model-sub\">accuracy on current labels {accuracy} · "
            f"{n} images held out at training"
            '</span> <span class="loupe-model-hint">rows: given label · columns: predicted · '
            "click a cell to review its images</span></div>")
        self.table.value = _report_html(self.report, colors)

    def drill(self, true: str, predicted: str) -> list[str]:
        """Show the samples given ``true`` and predicted ``predicted`` in the grid, the most
        confident predictions first (for an off-diagonal cell: the most confident mistakes).

        Returns
        -------
        list of str
            The sample ids shown, in order.

        Raises
        ------
        ProjectError
            If ``true`` or ``predicted`` is not a class of the matrix.
        """
        frame, classes = self._held_out()
        for name, value in (("true", true), ("predicted", predicted)):
            if value not in classes:
                raise ProjectError(f"ConfusionDrilldown.drill: {name}={value!r} is not a class "
                                   f"of {self.version.name!r} (classes: {', '.join(classes)})")
        present = (frame["given"] == true) & (frame["predicted"] == predicted)
        ids = (list(analysis.confusion_cell(frame, true=true, pred=predicted)["sample_id"])
               if present.any() else [])
        self.cell = (true, predicted)
        kind = "correct" if true == predicted else "mistakes, most confident first"
        title = (f"given {true} · predicted {predicted} · {len(ids)} "
                 f"image{'s' if len(ids) != 1 else ''} ({kind})")
        self.grid.show(ids, title=title, captions=self._captions(ids))
        return ids

    # -- events ------------------------------------------------------------------------
    def _on_click(self, _trace: Any, points: Any, _state: Any) -> None:
        if points.point_inds:
            self.drill(str(points.ys[0]), str(points.xs[0]))

    def _on_edit(self, _ids: list[str], _label: str | None) -> None:
        self.refresh()

    # -- helpers -----------------------------------------------------------------------
    def _held_out(self) -> tuple[pd.DataFrame, list[str]]:
        frame = held_out(self.project, self.version)
        frame = in_scope(frame, self._scope)
        return frame, class_order(self.project, self.version)

    def _captions(self, ids: list[str]) -> dict[str, str]:
        found = self._predictions.reindex(ids)
        return {sid: f"{row.label} · {row.confidence:.0%}"
                for sid, row in zip(ids, found.itertuples(), strict=True)
                if isinstance(row.label, str)}


def _report_html(report: pd.DataFrame, colors: dict[str, str]) -> str:
    """The per-class precision / recall / F1 table, weak recall in red; a class with too few
    images to judge shows its recall's 95 % interval and a note under the table."""
    rows, notes = [], []
    for row in report.itertuples(index=False):
        weak = ' class="loupe-weak"' if row.support and row.recall < 0.8 else ""
        dot = f'<span class="loupe-dot" style="background:{color_of(row[0], colors)}"></span>'
        recall = f"{row.recall:.2f}"
        note = getattr(row, "note", None)
        if isinstance(note, str):
            recall += (f' <span class="loupe-few" title="{escape_html(note)}">'
                       f"({row.recall_low:.2f}–{row.recall_high:.2f})*</span>")
            notes.append(f"<li>{escape_html(note)}</li>")
        rows.append(f"<tr><td>{dot}{escape_html(str(row[0]))}</td><td>{row.precision:.2f}</td>"
                    f"<td{weak}>{recall}</td><td>{row.f1:.2f}</td>"
                    f"<td>{row.support}</td></tr>")
    said = (f'<ul class="loupe-few-notes">* too few images to judge: {"".join(notes)}</ul>'
            if notes else "")
    return ('<table class="loupe-report"><thead><tr><th>class</th><th>precision</th>'
            f"<th>recall</th><th>F1</th><th>n</th></tr></thead><tbody>{''.join(rows)}"
            f"</tbody></table>{said}")
