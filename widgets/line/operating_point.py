"""``OperatingPoint``: where the line rejects, chosen by the cost of each mistake.

A quality engineer types what an escape (a defective part passed) and a false reject (a
good part rejected) cost; the curve shows the expected cost per 10,000 parts over the
threshold with its 95 % band, and the least-cost point. The slider moves the point by hand
(arrow keys work); the figures under the curve say what that point costs. **Use this point**
stores it with the version under the person's name: the next promotion takes it to the line.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go

from widgets._base.source import annotator_name, resolve_source
from widgets.line._common import NO_NAME, done, person, refused
from workbench.analyse.decisions import OperatingPoint as Point
from workbench.analyse.decisions import operating_point
from workbench.errors import LoupeError
from workbench.metrics.costs import PER
from workbench.text import escape_html

#: Bootstrap resamples while a person edits (the stored point uses the default 1000).
LIVE_BOOT = 300


class OperatingPoint(widgets.VBox):
    """Two cost inputs, the cost curve and the chosen point of a version.

    Parameters
    ----------
    project : Project, str or FiftyOne view
    version : ModelVersion or str, optional
        The newest version by default.
    annotator : str, optional
        Who chooses; without a name the widget shows and refuses to store.
    normal : str, default "ok"
        The good class (classifiers).
    escape, false_reject : float, optional
        Starting costs (the version's stored point's, else 50 and 1).

    Attributes
    ----------
    point : workbench.OperatingPoint or None
        What the curve shows now (None when the version cannot have one: the message says
        why).
    """

    def __init__(self, project: Any, version: Any = None, *, annotator: str | None = None,
                 normal: str = "ok", escape: float | None = None,
                 false_reject: float | None = None) -> None:
        self.project, _ = resolve_source(project)
        self.version = self.project.model(version) if version is None or \
            isinstance(version, str) else version
        self.annotator = annotator_name(annotator, "OperatingPoint")
        stored = self.version.operating_point or {}
        costs = stored.get("costs") or {}
        stored_escape = costs.get("escape")
        self.normal = stored.get("normal") or normal
        self.point: Point | None = None
        self.escape_input = widgets.BoundedFloatText(
            value=escape or (stored_escape if isinstance(stored_escape, int | float) else 50),
            min=0.0001, max=1e9, description="Escape costs", style={"description_width":
                                                                    "initial"},
            layout=widgets.Layout(width="200px"),
            tooltip="the cost of one defective part that passes")
        self.false_reject_input = widgets.BoundedFloatText(
            value=false_reject or costs.get("false_reject", 1), min=0.0001, max=1e9,
            description="False reject costs", style={"description_width": "initial"},
            layout=widgets.Layout(width="220px"),
            tooltip="the cost of one good part rejected")
        self.slider = widgets.FloatSlider(value=0.5, min=0, max=1, step=0.005,
                                          description="Threshold", readout_format=".3f",
                                          continuous_update=False,
                                          layout=widgets.Layout(width="420px"))
        self.best_button = widgets.Button(description="Least cost", icon="bullseye",
                                          tooltip="put the point at the least expected cost")
        self.save_button = widgets.Button(description="Use this point", icon="check",
                                          button_style="success",
                                          tooltip="store it with the version (recorded under "
                                                  "your name); the next promotion takes it "
                                                  "to the line")
        self.summary = widgets.HTML()
        self.summary.add_class("loupe-operating-point-summary")
        self.message = widgets.HTML()
        self.message.add_class("loupe-operating-point-message")
        self.figure: go.FigureWidget | None = None
        self.figure_box = widgets.Box()
        self._moving = False
        for field in (self.escape_input, self.false_reject_input):
            field.observe(lambda _c: self.recompute(), names="value")
        self.slider.observe(lambda c: self.move(c["new"]), names="value")
        self.best_button.on_click(lambda _b: self.move(None))
        self.save_button.on_click(lambda _b: self.save())
        super().__init__(children=[
            widgets.HTML(f"<h3>Pass or reject — {escape_html(self.version.name)}</h3><p "
                         "class='loupe-model-hint'>What does each mistake cost? The curve is "
                         f"the expected cost per {PER:,} parts, from the images the model "
                         "never trained on.</p>"),
            widgets.HBox([self.escape_input, self.false_reject_input],
                         layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox([self.slider, self.best_button],
                         layout=widgets.Layout(flex_flow="row wrap")),
            self.summary, self.figure_box, self.save_button, self.message])
        self.add_class("loupe-operating-point")
        self.recompute(threshold=stored.get("threshold"))

    # -- what a person does -----------------------------------------------------------------
    def recompute(self, threshold: float | None = None) -> None:
        """New costs: the table and the least-cost point again (``threshold``: keep it)."""
        try:
            self.point = operating_point(
                self.project, self.version,
                costs={"escape": self.escape_input.value,
                       "false_reject": self.false_reject_input.value},
                normal=self.normal, threshold=threshold, write=False, n_boot=LIVE_BOOT)
        except (LoupeError, ValueError) as error:
            self.point = None
            self.summary.value = refused("No operating point", str(error))
            self.save_button.disabled = True
            return
        self.save_button.disabled = False
        self._draw()

    def move(self, threshold: float | None) -> None:
        """Put the point at ``threshold`` (None: the least-cost one)."""
        if self._moving or self.point is None:
            return
        if threshold is not None and abs(threshold - self.point.threshold) < 1e-9:
            return
        self.recompute(threshold=threshold)

    def save(self) -> Point | None:
        """Store the shown point with the version under the typed name."""
        name = person(self.annotator)
        if name is None:
            self.message.value = refused("Not stored", NO_NAME)
            return None
        if self.point is None:
            return None
        moved = abs(self.point.threshold - self.point.best_threshold) > 1e-9
        try:
            self.point = operating_point(
                self.project, self.version, costs=self.point.costs.to_json(),
                normal=self.normal, threshold=self.point.threshold if moved else None,
                annotator=name, write=True)
        except (LoupeError, ValueError) as error:
            self.message.value = refused("Not stored", str(error))
            return None
        self.message.value = done(
            f"Stored for {escape_html(self.version.name)} by {escape_html(name)}: reject when "
            f"{escape_html(self.point.score_words)} ≥ {self.point.threshold:.3f}. The next "
            "promotion takes it to the line.")
        return self.point

    # -- drawing ----------------------------------------------------------------------------
    def _draw(self) -> None:
        point = self.point
        assert point is not None
        e = point.expected
        self._moving = True
        try:
            self.slider.value = round(min(1.0, point.threshold), 3)
        finally:
            self._moving = False
        where = "the least-cost point" if abs(point.threshold - point.best_threshold) < 1e-9 \
            else f"moved by hand (least cost at {point.best_threshold:.3f})"
        self.summary.value = (
            f"<p>Reject when <b>{escape_html(point.score_words)} ≥ {point.threshold:.3f}</b> "
            f"({where}). Per {PER:,} parts: <b>{e['escapes']:.0f}</b> escapes "
            f"(95 %: {e['escapes_low']:.0f}–{e['escapes_high']:.0f}), "
            f"<b>{e['false_rejects']:.0f}</b> false rejects ({e['false_rejects_low']:.0f}–"
            f"{e['false_rejects_high']:.0f}), cost <b>{e['cost']:.0f}</b> "
            f"({e['cost_low']:.0f}–{e['cost_high']:.0f}); from {point.n_normal} normal and "
            f"{point.n_defect} defective held-out images, defect rate "
            f"{point.defect_rate:.1%}.</p>")
        # A new FigureWidget built with its data: changes to one before the page shows it
        # are lost (plotly sends them as one-off messages).
        self.figure = go.FigureWidget(point.plot())
        self.figure_box.children = (self.figure,)

__all__ = ["OperatingPoint"]
