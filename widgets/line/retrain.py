"""Retrain: one button that queues a training with the configuration of the version the
line runs, a progress bar read from the job record, and cancel.

The kernel never waits for the training: a worker process runs it (``workbench.jobs``), and
a small front-end timer (:class:`Ticker`) asks the kernel to read the job again every few
seconds while the page is visible.
"""

from __future__ import annotations

from collections.abc import Callable

import anywidget
import ipywidgets as widgets
import traitlets as t

from widgets.line._common import NO_NAME, done, person, refused
from workbench.errors import JobError, LoupeError
from workbench.jobs.queue import Job, list_jobs, submit
from workbench.line.status import OPEN_STATES, retrain_arguments
from workbench.store.project import Project
from workbench.text import escape_html

_TICKER = """
function render({ model, el }) {
  el.style.display = "none";
  const timer = setInterval(() => {
    if (model.get("active") && document.visibilityState === "visible" && el.isConnected) {
      model.send({ type: "tick" });
    }
  }, Math.max(500, model.get("interval_ms")));
  return () => clearInterval(timer);
}
export default { render };
"""


class Ticker(anywidget.AnyWidget):
    """Sends ``{"type": "tick"}`` every ``interval_ms`` while ``active`` and the page is
    visible; :meth:`on_tick` callbacks run in the kernel (which never sleeps for it)."""

    _esm = _TICKER
    active = t.Bool(False).tag(sync=True)
    interval_ms = t.Int(2000).tag(sync=True)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._callbacks: list[Callable[[], None]] = []
        self.on_msg(lambda _w, content, _b: self._tick(content))

    def on_tick(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def _tick(self, content: object) -> None:
        if isinstance(content, dict) and content.get("type") == "tick":
            for callback in self._callbacks:
                callback()


class RetrainPanel(widgets.VBox):
    """Queue a retrain, follow it, cancel it.

    Parameters
    ----------
    project : Project
    line : str
        Its current version's configuration is reused (else the newest version's).
    annotator : str
        Who asks ("": refused with a message).
    on_done : callable, optional
        Called with the job once it ends (the console then compares the new version).
    """

    def __init__(self, project: Project, *, line: str, annotator: str = "",
                 on_done: Callable[[Job], None] | None = None) -> None:
        self.project, self.line, self.annotator = project, line, annotator
        self.on_done = on_done or (lambda _job: None)
        self.job: Job | None = None
        self._announced: set[int] = set()
        self.button = widgets.Button(description="Retrain", icon="cogs",
                                     button_style="primary")
        self.cancel_button = widgets.Button(description="Cancel training", icon="stop",
                                            button_style="danger", disabled=True)
        self.bar = widgets.FloatProgress(value=0, min=0, max=1, description="Progress",
                                         layout=widgets.Layout(width="320px"))
        self.stage = widgets.HTML()
        self.message = widgets.HTML()
        self.message.add_class("loupe-line-retrain-message")
        self.ticker = Ticker()
        self.ticker.on_tick(self.poll)
        self.button.on_click(lambda _b: self.submit())
        self.cancel_button.on_click(lambda _b: self.cancel())
        super().__init__(children=[
            widgets.HTML("<h3>Retrain</h3>"),
            widgets.HBox([self.button, self.cancel_button, self.bar, self.stage],
                         layout=widgets.Layout(flex_flow="row wrap", align_items="center")),
            self.message, self.ticker])
        self.add_class("loupe-line-retrain")
        self._describe()
        self._follow_open_job()

    def _describe(self) -> None:
        try:
            parent, arguments = retrain_arguments(self.project, line=self.line)
        except (LoupeError, ValueError):
            self.button.disabled = True
            self.button.tooltip = "no model version yet: train a first one"
            self.message.value = ("No model version yet: a first training needs a notebook "
                                  "(<code>wb.train(p)</code>) or <code>loupe train</code>.")
            return
        settings = ", ".join(f"{k} {v}" for k, v in arguments.items() if k != "settings")
        self.button.tooltip = (f"train a new version on the current labels, like {parent} "
                               f"({settings}); the training runs beside the page")

    def _follow_open_job(self) -> None:
        jobs = list_jobs(self.project)
        open_jobs = jobs[jobs["state"].isin(OPEN_STATES)]
        if len(open_jobs):
            self.job = Job(int(open_jobs["job_id"].iloc[-1]))
            self.poll()

    def submit(self) -> Job | None:
        """Queue a training like the line's version, under the typed name."""
        name = person(self.annotator)
        if name is None:
            self.message.value = refused("Not started", NO_NAME)
            return None
        if self.job is not None and not self.job.finished:
            self.message.value = refused("Not started", f"job {self.job.id} is still "
                                         f"{self.job.state}; wait for it or cancel it")
            return None
        try:
            parent, arguments = retrain_arguments(self.project, line=self.line)
            self.job = submit(self.project, "train", annotator=name, **arguments)
        except (LoupeError, ValueError) as error:
            self.message.value = refused("Not started", str(error))
            return None
        self.message.value = done(f"Training queued as job {self.job.id} by "
                                  f"{escape_html(name)}, like {escape_html(parent)}. You may "
                                  "close the page: it goes on.")
        self.poll()
        return self.job

    def poll(self) -> None:
        """Read the job again and redraw the bar (the ticker calls this)."""
        job = self.job
        if job is None:
            self.ticker.active = False
            return
        record = job.record()
        self.bar.value = float(record.progress)
        running = record.state in OPEN_STATES
        self.stage.value = (f"job {job.id}: <b>{escape_html(record.state)}</b> "
                            f"{record.progress:.0%} {escape_html(record.stage or '')}")
        self.cancel_button.disabled = not running or bool(record.cancelled_by)
        self.button.disabled = running
        self.bar.bar_style = {"done": "success", "failed": "danger",
                              "cancelled": "warning"}.get(record.state, "info")
        self.ticker.active = running
        if not running and job.id not in self._announced:
            self._announced.add(job.id)
            if record.state == "done":
                self.message.value = done(f"Job {job.id} made <b>{escape_html(record.result)}"
                                          "</b>: compare it with the line below.")
            elif record.state == "failed":
                self.message.value = refused(f"Job {job.id} failed", str(record.error))
            self.on_done(job)

    def cancel(self) -> None:
        """Cancel the running training under the typed name."""
        name = person(self.annotator)
        if name is None:
            self.message.value = refused("Not cancelled", NO_NAME)
            return
        if self.job is None:
            self.message.value = refused("Not cancelled", "no training to cancel")
            return
        try:
            self.job.cancel(annotator=name)
        except JobError as error:
            self.message.value = refused("Not cancelled", str(error))
            return
        stops = ("it had not started: cancelled" if self.job.state == "cancelled"
                 else "the training stops at its next batch")
        self.message.value = done(f"Cancel asked by {escape_html(name)}: {stops}.")
        self.poll()
