"""``LineConsole``: one page to close the loop on a line without code — see what it runs,
import a new batch and label it, retrain, compare, promote or roll back, and look back."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from widgets._base.source import annotator_name, resolve_source
from widgets.line.batch import BatchPanel
from widgets.line.operating_point import OperatingPoint
from widgets.line.promote import PromotePanel
from widgets.line.retrain import RetrainPanel
from widgets.line.status import StatusStrip
from widgets.line.timeline import TimelinePanel
from workbench.deploy import line_state
from workbench.jobs.queue import Job
from workbench.line.status import LineStatus, line_status


class LineConsole(widgets.VBox):
    """The line console of a project.

    Parameters
    ----------
    project : Project, str or FiftyOne view
        The project (a view stands for its project).
    line : str, default "A"
        The production line (1–32 letters, digits, ``_`` or ``-``).
    annotator : str, optional
        Who acts. Without a name the console shows everything and refuses every write with
        a message (set :attr:`annotator` once the person typed it).
    n_boot : int, default 1000
        Bootstrap resamples of the gate.

    Attributes
    ----------
    status : LineStatus
        What the strip shows (:func:`workbench.line_status`).
    strip, batch, retrain, promote, timeline
        The parts: :class:`StatusStrip`, :class:`BatchPanel`, :class:`RetrainPanel`,
        :class:`PromotePanel`, :class:`TimelinePanel`.
    operating_point : OperatingPoint or None
        The cost panel, once its accordion was opened.
    """

    def __init__(self, project: Any, *, line: str = "A", annotator: str | None = None,
                 n_boot: int = 1000) -> None:
        self.project, _ = resolve_source(project)
        self.line = line_state.check_line(line)
        name = annotator_name(annotator, "LineConsole")
        self.strip = StatusStrip()
        self.batch = BatchPanel(self.project, line=self.line, annotator=name,
                                on_change=self.refresh)
        self.retrain = RetrainPanel(self.project, line=self.line, annotator=name,
                                    on_done=self._trained)
        self.promote = PromotePanel(self.project, line=self.line, annotator=name,
                                    on_change=self.refresh, n_boot=n_boot)
        self.timeline = TimelinePanel(self.project, line=self.line)
        self.status: LineStatus = line_status(self.project, line=self.line)
        self.strip.show(self.status)
        timeline = widgets.Accordion(children=[self.timeline], titles=("Timeline",))
        #: Built when first opened (it reads the newest version's held-out predictions).
        self.operating_point: OperatingPoint | None = None
        self.cost = widgets.Accordion(children=[widgets.VBox()],
                                      titles=("Pass or reject: the operating point",))
        self.cost.selected_index = None
        self.cost.observe(lambda c: c["new"] is not None and self._open_cost(), "selected_index")
        super().__init__(children=[self.strip, self.batch, self.retrain, self.promote,
                                   self.cost, timeline])
        self.add_class("loupe-line-console")
        self._annotator = name

    @property
    def annotator(self) -> str:
        """The name every action is recorded under ("" : none yet, nothing is written)."""
        return self._annotator

    @annotator.setter
    def annotator(self, value: str | None) -> None:
        name = annotator_name(value or None, "LineConsole")
        self._annotator = name
        self.batch.set_annotator(name)
        self.retrain.annotator = name
        self.promote.annotator = name
        if self.operating_point is not None:
            self.operating_point.annotator = name

    def refresh(self) -> None:
        """Re-read the line, the versions, the inbox and the timeline."""
        self.status = line_status(self.project, line=self.line)
        self.strip.show(self.status)
        self.promote.refresh()
        self.batch.refresh_inbox()
        self.timeline.refresh()
        if self.cost.selected_index is not None:
            self._open_cost()

    def _open_cost(self) -> None:
        """Build the operating-point panel for the newest version (again after a retrain)."""
        try:
            panel: widgets.Widget = OperatingPoint(self.project, annotator=self._annotator or None)
        except Exception as error:  # no version yet, …: say so in the panel
            panel = widgets.HTML(f"<p>{type(error).__name__}: {error}</p>")
        else:
            self.operating_point = panel
        self.cost.children = [panel]

    def _trained(self, _job: Job) -> None:
        self.refresh()
