"""``SlicePerformance``: accuracy per metadata slice, and the mistakes inside a slice.

Render-only: :func:`workbench.metrics.slice_report` on the version's held-out predictions
(as ``wb.slice_report``, restricted to the widget's view) draws one bar per slice value with
its Wilson interval; a bar is redder the further it falls below the overall accuracy. A
click on a bar opens the slice's errors (held-out samples whose prediction differs from the
given label) in a :class:`~widgets.label.grid.LabelingGrid`; relabels there redraw the bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

import workbench as wb
from widgets._base.drill import chart_style, drill_grid, in_scope, open_full_size
from widgets._base.source import resolve_source
from workbench import ProjectError
from workbench import metrics as analysis
from workbench.analyse.classification import check_slice_fields, held_out
from workbench.keywords import renamed
from workbench.metrics.slices import MISSING
from workbench.text import escape_html, escape_plotly

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion

#: Bar colour at or above the overall accuracy, and at ``FULL_RED`` or more below it.
NEUTRAL, RED = "#9fb3c8", "#c81e1e"
FULL_RED = 0.3


class SlicePerformance(widgets.VBox):
    """Accuracy per value of each slice field, bars that open the slice's mistakes.

    Parameters
    ----------
    source : Project, str or FiftyOne view
        The project, its name, or a view of it (only the view's samples are counted).
    version : ModelVersion or str, optional
        The model version; the newest when None.
    by : sequence of str or str, optional
        Slice fields to break accuracy down by (e.g. ``["lighting", "line"]``); default all
        of the project's slice fields.
    pairs : bool, default False
        Also show every pair of values of two fields (``lighting=dim & line=B``).
    confidence : float, default 0.95
        Level of the Wilson intervals drawn as error bars.
    annotator : str, optional
        Name the grid's relabels are stored under (as review decisions). Without it the
        widget shows everything and refuses to write (no decision under a made-up name).
    thumb_size, page_size : int
        Thumbnail side and thumbnails per page in the grid.

    Attributes
    ----------
    report : pandas.DataFrame
        The slice report drawn (columns as :func:`workbench.metrics.slice_report`).
    overall : float
        Accuracy over all held-out samples in view (the reference line).
    figure : plotly.graph_objects.FigureWidget
        One bar trace per field (and one for the pairs).
    grid : widgets.label.grid.LabelingGrid
        The errors of the drilled-into slice.
    lightbox : widgets._base.lightbox.Lightbox
        Opens the grid's thumbnails at full size (⤢, double click or Enter).
    slice : tuple of (tuple of str, tuple of str) or None
        Fields and values of the slice shown in the grid.

    Raises
    ------
    ProjectError
        If a field of ``by`` is not a slice field of the project.
    """

    @renamed(mv="version")
    def __init__(self, source: Any, version: ModelVersion | str | None = None, *,
                 by: Sequence[str] | str | None = None, pairs: bool = False,
                 confidence: float = 0.95, annotator: str | None = None, thumb_size: int = 96,
                 page_size: int = 60) -> None:
        project, self._scope = resolve_source(source)
        self.project, self.version = wb.as_version(project, version)
        self.by = check_slice_fields(self.project, by)
        self.pairs = bool(pairs) and len(self.by) > 1
        self.confidence = confidence
        self.slice: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._keys: list[list[tuple[tuple[str, ...], tuple[str, ...]]]] = []
        self.grid = drill_grid(
            self.project, annotator=annotator, thumb_size=thumb_size, page_size=page_size,
            hint="Click a bar to see that slice's mistakes")
        self.grid.on_edit(self._on_edit)
        self.figure = go.Figure(layout=go.Layout(
            height=360, margin={"l": 60, "r": 20, "t": 30, "b": 110}, bargap=0.25,
            yaxis={"title": {"text": "accuracy"}, "range": [0, 1.05], "tickformat": ".0%"},
            xaxis={"type": "category", "tickangle": -30}, showlegend=False,
            plot_bgcolor="#ffffff"))
        self.header = widgets.HTML()
        # Built with its data: changes made to a FigureWidget before the page shows it are
        # lost (plotly sends them as one-off messages), so draw first, then wrap.
        self.refresh()
        self.figure = go.FigureWidget(self.figure)
        for trace in self.figure.data:
            trace.on_click(self._on_click)
        style = chart_style()
        super().__init__(children=[style, self.header, self.figure, self.grid])
        self.add_class("loupe-model")
        self.add_class("loupe-slices")
        self.lightbox = open_full_size(self, self.grid)

    # -- public API --------------------------------------------------------------------
    @property
    def selected(self) -> list[str]:
        """Sample ids selected in the grid."""
        return list(self.grid.selected)

    def refresh(self) -> None:
        """Re-read the current labels and redraw the bars."""
        frame = self._held_out()
        self.overall = float(frame["correct"].mean()) if len(frame) else float("nan")
        self.report = analysis.slice_report(frame, by=self.by, confidence=self.confidence)
        fields_of = self.report["fields"].map(" & ".join)  # strings: no tuple broadcasting
        groups = [((field,), self.report[fields_of == field]) for field in self.by]
        if self.pairs:
            groups.append((None, self.report[self.report["level"] == 2]))
        traces, self._keys = [], []
        for fields, rows in groups:
            rows = rows.sort_values("slice", kind="mergesort")
            traces.append(self._bars(fields, rows))
            self._keys.append([(tuple(r.fields), tuple(r.values))
                               for r in rows.itertuples(index=False)])
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.add_traces(traces)
            names = [name for trace in traces for name in trace.x or ()]
            self.figure.layout.xaxis.tickvals = names
            self.figure.layout.xaxis.ticktext = [escape_plotly(n) for n in names]
            self.figure.layout.shapes = [] if np.isnan(self.overall) else [{
                "type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": self.overall,
                "y1": self.overall, "line": {"color": "#334e68", "dash": "dash", "width": 1}}]
        for trace in self.figure.data:
            trace.on_click(self._on_click)
        shown = f"{self.overall:.1%}" if not np.isnan(self.overall) else "n/a"
        self.header.value = (
            f'<div class="loupe-model-header"><h3>Accuracy per slice of '
            f"{escape_html(self.version.name)}</h3><span class=\"loupe-model-sub\">"
            f"{len(frame)} images held out at training · accuracy on current labels {shown} "
            "(dashed line) · "
            f"bars: {int(self.confidence * 100)} % Wilson intervals</span> "
            '<span class="loupe-model-hint">redder = further below overall · click a bar to '
            "review that slice's mistakes</span></div>")

    def drill(self, field: str | Sequence[str], value: Any) -> list[str]:
        """Show the errors of one slice in the grid, the most confident mistakes first.

        Parameters
        ----------
        field : str or sequence of str
            A field of ``by`` (``"lighting"``), or two of them for a pair.
        value : str or sequence of str
            Its value (``"dim"``), or one value per field; ``"(missing)"`` for no value.

        Returns
        -------
        list of str
            The ids shown: held-out samples of the slice whose prediction differs from
            their given label.

        Raises
        ------
        ProjectError
            For a field outside ``by`` or a value the slice field does not take.
        """
        fields = (field,) if isinstance(field, str) else tuple(field)
        values = (value,) if isinstance(value, str) or not isinstance(value, Sequence) \
            else tuple(value)
        if len(fields) != len(values) or not fields:
            raise ValueError(f"SlicePerformance.drill: give one value per field, got fields "
                             f"{list(fields)} and values {list(values)}")
        for name in fields:
            if name not in self.by:
                raise ProjectError(f"SlicePerformance.drill: field {name!r} is not shown "
                                   f"(by={self.by}; project slice fields: "
                                   f"{', '.join(self.project.slice_fields)})")
        frame = self._held_out()
        mask = np.ones(len(frame), dtype=bool)
        for name, wanted in zip(fields, values, strict=True):
            keys = frame[name].astype(object).where(frame[name].notna(), MISSING).map(str)
            if str(wanted) not in set(keys):
                raise ProjectError(f"SlicePerformance.drill: {name}={wanted!r} has no held-out "
                                   f"samples (values: {', '.join(sorted(set(keys)))})")
            mask &= (keys == str(wanted)).to_numpy()
        errors = frame[mask & ~frame["correct"].to_numpy(dtype=bool)]
        errors = errors.sort_values("confidence", ascending=False, kind="mergesort")
        ids = list(errors["sample_id"])
        captions = {row.sample_id: f"predicted {row.predicted} · {row.confidence:.0%}"
                    for row in errors.itertuples(index=False)}
        self.slice = (fields, tuple(str(v) for v in values))
        name = " & ".join(f"{f}={v}" for f, v in zip(*self.slice, strict=True))
        self.grid.show(ids, title=f"{name}: {len(ids)} mistake{'s' if len(ids) != 1 else ''} "
                                  f"of {int(mask.sum())} images, most confident first",
                       captions=captions)
        return ids

    # -- events ------------------------------------------------------------------------
    def _on_click(self, _trace: Any, points: Any, _state: Any) -> None:
        if points.point_inds:
            fields, values = self._keys[points.trace_index][points.point_inds[0]]
            self.drill(fields, values)

    def _on_edit(self, _ids: list[str], _label: str | None) -> None:
        self.refresh()

    # -- helpers -----------------------------------------------------------------------
    def _held_out(self) -> pd.DataFrame:
        return in_scope(held_out(self.project, self.version), self._scope)

    def _bars(self, fields: tuple[str, ...] | None, rows: pd.DataFrame) -> go.Bar:
        accuracy = rows["accuracy"].to_numpy(dtype=float)
        return go.Bar(
            x=list(rows["slice"]), y=accuracy,
            name=" & ".join(self.by) if fields is None else fields[0],
            marker={"color": [_shortfall_color(self.overall - a) for a in accuracy],
                    "line": {"color": "#334e68", "width": 0.5}},
            error_y={"type": "data", "symmetric": False, "color": "#334e68", "thickness": 1,
                     "array": rows["ci_high"].to_numpy(dtype=float) - accuracy,
                     "arrayminus": accuracy - rows["ci_low"].to_numpy(dtype=float)},
            customdata=np.stack([rows["n"], rows["n"] - rows["n_correct"]], axis=-1)
            if len(rows) else None,
            hovertext=[escape_plotly(s) for s in rows["slice"]],
            hovertemplate="%{hovertext}<br>accuracy %{y:.0%} of %{customdata[0]} images"
                          "<br>%{customdata[1]} mistakes<extra></extra>")


def _shortfall_color(shortfall: float) -> str:
    """Grey-blue at or above the overall accuracy, to red at ``FULL_RED`` below it."""
    if not np.isfinite(shortfall) or shortfall <= 0:
        return NEUTRAL
    t = min(1.0, shortfall / FULL_RED)
    start = [int(NEUTRAL[i:i + 2], 16) for i in (1, 3, 5)]
    end = [int(RED[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(start, end, strict=True))
