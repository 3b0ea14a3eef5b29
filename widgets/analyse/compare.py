"""``ModelCompare``: what changed from one model version to another, image by image.

Render-only: :func:`workbench.analyse.compare.compare` pairs the two versions' held-out
predictions per sample (``better``, ``worse``, ``same_right``, ``same_wrong``) and
:func:`workbench.metrics.compare.per_class_deltas` gives recall and F1 per class. The
widget draws a summary line and the per-class change; the outcome buttons and a click on a
class bar open those images in a :class:`~widgets.label.grid.LabelingGrid`. Relabels there are
re-read from the store (both versions are judged against the current labels).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from widgets._base.drill import chart_style, drill_grid, in_scope, open_full_size
from widgets._base.palette import color_of, label_colors
from widgets._base.source import resolve_source
from workbench import ProjectError
from workbench.analyse.compare import compare
from workbench.keywords import renamed
from workbench.metrics.compare import OUTCOMES, per_class_deltas
from workbench.text import escape_html, escape_plotly

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion

#: Outcome buttons: (label, outcome).
BUTTONS = (("better", "better"), ("worse", "worse"), ("same wrong", "same_wrong"))
#: Class picker entry for no class filter.
ALL_CLASSES = "all classes"


#: How the header names the images compared, by ``on``.
_ON_TEXT = {"both": "samples held out by both",
            "either": "labelled samples either version saw (unseen ones predicted fresh)"}

class ModelCompare(widgets.VBox):
    """Two versions side by side: which images got better or worse, per class.

    Parameters
    ----------
    source : Project, str or FiftyOne view
        The project, its name, or a view of it (only the view's samples are compared).
    baseline, version : ModelVersion or str
        The version compared from (``"v1"``) and the one compared to (``"v2"``); ``a`` and
        ``b`` are their earlier names.
    annotator : str, optional
        Name the grid's relabels are stored under (as review decisions). Without it the
        widget shows everything and refuses to write (no decision under a made-up name).
    thumb_size, page_size : int
        Thumbnail side and thumbnails per page in the grid.
    on : {"both", "either"}, default "both"
        The images compared (:func:`workbench.compare`): those both versions held out, or
        every labelled image either trained on (a retrain on a new batch is judged on it
        too); a toggle above the chart switches.

    Attributes
    ----------
    frame : pandas.DataFrame
        Per sample held out by both versions (in view): ``sample_id``, ``given``,
        ``predicted_a``, ``predicted_b``, ``confidence_a``, ``confidence_b``, ``outcome``.
    deltas : pandas.DataFrame
        Per class ``n``, recall and F1 under both versions and their change.
    figure : plotly.graph_objects.FigureWidget
        Per-class change of recall (trace 0) and F1 (trace 1), bars in class colours.
    buttons : dict of str to ipywidgets.Button
        One per outcome (``better``, ``worse``, ``same_wrong``), labelled with its count.
    class_picker : ipywidgets.Dropdown
        The given class to restrict to (``""``: all), as a click on a class bar does.
    outcome : str
        The outcome the grid shows (or shows next when a class is picked).
    label : str or None
        The given class the grid is restricted to.

    Raises
    ------
    ProjectError
        For an unknown version, the same version twice, or a version without held-out
        predictions.
    """

    @renamed(a="baseline", b="version")
    def __init__(self, source: Any, baseline: ModelVersion | str,
                 version: ModelVersion | str, *,
                 annotator: str | None = None, thumb_size: int = 96, page_size: int = 60,
                 on: str = "both") -> None:
        self.project, self._scope = resolve_source(source)
        self.on = on
        self.frame = self._load(baseline, version)
        self.a, self.b = self.frame.attrs["a"], self.frame.attrs["b"]
        self._a, self._b = baseline, version
        self.outcome = "worse"
        self.label: str | None = None
        self._picking = False
        self.grid = drill_grid(
            self.project, annotator=annotator, thumb_size=thumb_size, page_size=page_size,
            hint="Pick an outcome, or click a class bar, to see those images")
        self.grid.on_edit(self._on_edit)
        self.buttons = {}
        for text, outcome in BUTTONS:
            button = widgets.Button(description=text, tooltip=f"show the {text} images")
            button.on_click(lambda _button, outcome=outcome: self.drill(outcome, self.label))
            self.buttons[outcome] = button
        self.class_picker = widgets.Dropdown(
            options=[(ALL_CLASSES, "")] + [(c, c) for c in self.frame.attrs["classes"]],
            value="", description="given", layout=widgets.Layout(width="220px"))
        self.class_picker.observe(self._on_pick, names="value")
        self.figure = go.Figure(layout=go.Layout(
            height=320, margin={"l": 60, "r": 20, "t": 30, "b": 80}, barmode="group",
            yaxis={"title": {"text": f"change {self.a} → {self.b}"}, "tickformat": "+.0%",
                   "zeroline": True, "zerolinecolor": "#334e68"},
            xaxis={"type": "category"}, plot_bgcolor="#ffffff",
            legend={"orientation": "h", "y": 1.12}))
        self.summary = widgets.HTML()
        self.on_picker = widgets.ToggleButtons(
            options=[("images both held out", "both"), ("every image either saw", "either")],
            value=on, description="compare on", style={"button_width": "auto"},
            tooltips=["out-of-fold predictions of both versions",
                      "a version's prediction of an image it never trained on is a fresh one"])
        self.on_picker.observe(self._on_scope, names="value")
        # Built with its data: changes made to a FigureWidget before the page shows it are
        # lost (plotly sends them as one-off messages), so draw first, then wrap.
        self._draw()
        self.figure = go.FigureWidget(self.figure)
        for trace in self.figure.data:
            trace.on_click(self._on_click)
        style = chart_style()
        super().__init__(children=[style, self.summary, self.on_picker, self.figure,
                                   widgets.HBox([*self.buttons.values(), self.class_picker]),
                                   self.grid])
        self.add_class("loupe-model")
        self.add_class("loupe-compare")
        self.lightbox = open_full_size(self, self.grid)

    # -- public API --------------------------------------------------------------------
    @property
    def selected(self) -> list[str]:
        """Sample ids selected in the grid."""
        return list(self.grid.selected)

    @property
    def counts(self) -> dict[str, int]:
        """Number of samples per outcome."""
        counts = self.frame["outcome"].value_counts()
        return {outcome: int(counts.get(outcome, 0)) for outcome in OUTCOMES}

    def refresh(self) -> None:
        """Re-read the current labels and redraw."""
        self.frame = self._load(self._a, self._b)
        self._draw()

    def drill(self, outcome: str, label: str | None = None) -> list[str]:
        """Show the samples with this outcome (of given class ``label``) in the grid.

        Parameters
        ----------
        outcome : {"better", "worse", "same_wrong", "same_right"}
            ``"same wrong"`` is accepted for ``"same_wrong"``.
        label : str, optional
            Only samples given this class.

        Returns
        -------
        list of str
            The ids shown, the most confident wrong prediction first (``a``'s for
            ``better``, ``b``'s otherwise).

        Raises
        ------
        ValueError
            For an unknown outcome.
        ProjectError
            For a label that is not a class of the comparison.
        """
        outcome = str(outcome).replace(" ", "_")
        if outcome not in OUTCOMES:
            raise ValueError(f"ModelCompare.drill: outcome={outcome!r} is not one of "
                             f"{', '.join(OUTCOMES)}")
        classes = self.frame.attrs["classes"]
        if label is not None and label not in classes:
            raise ProjectError(f"ModelCompare.drill: label={label!r} is not a class of "
                               f"{self.a}/{self.b} (classes: {', '.join(classes)})")
        rows = self.frame[self.frame["outcome"] == outcome]
        if label is not None:
            rows = rows[rows["given"] == label]
        key = "confidence_a" if outcome == "better" else "confidence_b"
        rows = rows.sort_values(key, ascending=False, kind="mergesort")
        ids = list(rows["sample_id"])
        captions = {r.sample_id: f"{self.a}: {r.predicted_a} → {self.b}: {r.predicted_b}"
                    for r in rows.itertuples(index=False)}
        self.outcome, self.label = outcome, label
        if self.class_picker.value != (label or ""):
            self._picking = True  # keep the picker in step without drilling twice
            try:
                self.class_picker.value = label or ""
            finally:
                self._picking = False
        scope = f" given {label}" if label is not None else ""
        self.grid.show(ids, title=f"{outcome.replace('_', ' ')}{scope} from {self.a} to "
                                  f"{self.b}: {len(ids)} image{'s' if len(ids) != 1 else ''}",
                       captions=captions)
        return ids

    # -- events ------------------------------------------------------------------------
    def _on_click(self, _trace: Any, points: Any, _state: Any) -> None:
        if points.point_inds:
            self.drill(self.outcome, str(points.xs[0]))

    def _on_pick(self, change: dict) -> None:
        if not self._picking:
            self.drill(self.outcome, change["new"] or None)

    def _on_edit(self, _ids: list[str], _label: str | None) -> None:
        self.refresh()

    # -- helpers -----------------------------------------------------------------------
    def _on_scope(self, change: dict) -> None:
        self.on = change["new"]
        self.refresh()

    def _load(self, a: ModelVersion | str, b: ModelVersion | str) -> pd.DataFrame:
        return in_scope(compare(self.project, a, b, on=self.on), self._scope)

    def _draw(self) -> None:
        classes = self.frame.attrs["classes"]
        deltas = per_class_deltas(self.frame, classes=classes)
        self.deltas = deltas[deltas["n"] > 0].reset_index(drop=True)
        colors = label_colors(self.project.classes)
        bar_colors = [color_of(c, colors) for c in self.deltas["class"]]
        traces = []
        for metric, opacity, pattern in (("recall", 1.0, ""), ("f1", 0.55, "/")):
            name = "recall" if metric == "recall" else "F1"
            traces.append(go.Bar(
                x=list(self.deltas["class"]), y=self.deltas[f"{metric}_delta"], name=f"{name} Δ",
                marker={"color": bar_colors, "opacity": opacity,
                        "pattern": {"shape": pattern}},
                customdata=self.deltas[["n", f"{metric}_a", f"{metric}_b"]].to_numpy(),
                hovertext=[escape_plotly(c) for c in self.deltas["class"]],
                hovertemplate=f"%{{hovertext}} (%{{customdata[0]}} images)<br>{name} "
                              f"{self.a} %{{customdata[1]:.2f}} → {self.b} "
                              "%{customdata[2]:.2f}<extra></extra>"))
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.add_traces(traces)
            self.figure.layout.xaxis.tickvals = list(self.deltas["class"])
            self.figure.layout.xaxis.ticktext = [escape_plotly(c) for c in self.deltas["class"]]
        for trace in self.figure.data:
            trace.on_click(self._on_click)
        counts = self.counts
        for text, outcome in BUTTONS:
            self.buttons[outcome].description = f"{counts[outcome]} {text}"
        self.summary.value = self._summary_html(counts)

    def _summary_html(self, counts: dict[str, int]) -> str:
        n = len(self.frame)
        if n:
            accuracy_a = float((self.frame["predicted_a"] == self.frame["given"]).mean())
            accuracy_b = float((self.frame["predicted_b"] == self.frame["given"]).mean())
            accuracy = f"accuracy {accuracy_a:.1%} → {accuracy_b:.1%}"
        else:
            accuracy = "no sample to compare on"
        a, b = escape_html(self.a), escape_html(self.b)
        return (f'<div class="loupe-model-header"><h3>{a} → {b}</h3>'
                f'<span class="loupe-model-sub">{n} {_ON_TEXT.get(self.on, "samples")} · '
                f'<span class="loupe-better">{counts["better"]} better</span> · '
                f'<span class="loupe-worse">{counts["worse"]} worse</span> · '
                f"{counts['same_right']} same right · {counts['same_wrong']} same wrong · "
                f"{accuracy} on current labels</span>{self._trained_html()} "
                '<span class="loupe-model-hint">pick an outcome, then a '
                "class (bar or menu) to review those images</span></div>")

    def _trained_html(self) -> str:
        """How each version was trained: a difference in image size or images explains
        much of a difference in accuracy."""
        rows = []
        for name in (self.a, self.b):
            version = self.project.model(name)
            config = version.config
            rows.append(f"<li><b>{escape_html(name)}</b>: {escape_html(version.mode)} on "
                        f"{escape_html(config.get('backbone'))} at "
                        f"{escape_html(config.get('image_size'))} px, "
                        f"{len(version.snapshot())} images trained on</li>")
        return f'<ul class="loupe-trained-how">{"".join(rows)}</ul>'

