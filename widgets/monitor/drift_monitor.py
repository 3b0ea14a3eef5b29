"""``DriftMonitor``: every drift check of a project over time, and the evidence of one.

Render-only: the chart is :func:`workbench.drift_history` (one point per check, its
p-value on a log axis, red when it drifted, the false-alarm line dashed); a click on a
point opens that check (:func:`workbench.load_check`): its summary, what moved (image
properties, predicted class mix) and the batch's most out-of-distribution images. Below the
chart, the batches waiting in the server's inbox (:func:`workbench.inbox_batches`; nobody
types a path): "Check drift" runs :func:`workbench.drift` on the chosen one and shows it,
"Import this batch" adds its images to the project, tagged with the batch's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

import workbench as wb
from widgets._base.drill import chart_style
from widgets._base.lightbox import Lightbox, attach, thumb_attributes
from widgets._base.source import annotator_name, require_annotator, resolve_source
from workbench.keywords import renamed
from workbench.monitor.drift import DriftReport, drift, drift_history, load_check
from workbench.store.inbox import INBOX_ENV, inbox_batch, inbox_batches, project_inbox
from workbench.store.thumbnails import data_uris
from workbench.text import escape_html

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion

DRIFT, CALM = "#c81e1e", "#52606d"
#: Smallest p-value drawn (a permutation test cannot go lower than 1/(n+1) anyway).
P_FLOOR = 1e-4
TICKS = [1, 0.1, 0.01, 0.001, 0.0001]
EMPTY_INBOX = "The inbox is empty"
CHOOSE = "Choose a batch of the inbox first."


class DriftMonitor(widgets.VBox):
    """Drift checks as a time series; click a check to see its batch's strangest images.

    Parameters
    ----------
    source : Project, str or FiftyOne view
        The project (a view's restriction does not apply: checks are of new images).
    version : ModelVersion or str, optional
        The version new checks compare against; the newest when None. The chart shows
        the checks of every version (hover names it).
    n_images : int, default 12
        How many of a check's most out-of-distribution images to show.
    thumb_size : int, default 96
    annotator : str, optional
        The name an import is recorded under; without it "Import this batch" is refused
        with a message asking for one (drift checks need no name).

    Attributes
    ----------
    history : pandas.DataFrame
        :func:`workbench.drift_history` as drawn.
    figure : plotly.graph_objects.FigureWidget
    check : DriftReport or None
        The check shown below the chart (the newest at first).
    batches : pandas.DataFrame
        :func:`workbench.inbox_batches` as listed in ``batch_picker`` (value: the path).
    """

    @renamed(mv="version")
    def __init__(self, source: Any, version: ModelVersion | str | None = None, *,
                 n_images: int = 12, thumb_size: int = 96,
                 annotator: str | None = None) -> None:
        project, _ = resolve_source(source)
        self.project = project
        self.annotator = annotator_name(annotator, "DriftMonitor")
        self.version = wb.as_version(project, version)[1] if not project.models().empty else None
        self.n_images, self.thumb_size = n_images, thumb_size
        self.check: DriftReport | None = None
        self.header = widgets.HTML()
        self.detail = widgets.HTML()
        self.batch_picker = widgets.Dropdown(description="Inbox batch",
                                             layout=widgets.Layout(width="440px"))
        self.reload_button = widgets.Button(icon="refresh", tooltip="list the inbox again",
                                            layout=widgets.Layout(width="40px"))
        self.run_button = widgets.Button(description="Check drift", icon="search",
                                         button_style="primary",
                                         tooltip="compare the batch with the training images")
        self.import_button = widgets.Button(description="Import this batch", icon="download",
                                            tooltip="add the batch's images to the project, "
                                                    "tagged with its name (unlabelled)")
        self.reload_button.on_click(lambda _b: self.refresh_inbox())
        self.run_button.on_click(lambda _b: self.check_batch())
        self.import_button.on_click(lambda _b: self.import_batch())
        self.batch_picker.observe(lambda _c: self._enable(), names="value")
        self.message = widgets.HTML()
        self.empty_note = widgets.HTML(
            '<p class="loupe-note loupe-drift-empty">No drift check yet — pick a batch from '
            "the inbox and press Check drift.</p>")
        self.figure = go.Figure(layout=go.Layout(
            height=300, margin={"l": 70, "r": 20, "t": 20, "b": 50}, showlegend=False,
            plot_bgcolor="#ffffff",
            yaxis={"title": {"text": "p-value (lower = more drift)"}, "type": "log",
                   "autorange": "reversed", "tickvals": TICKS,
                   "ticktext": [f"{t:g}" for t in TICKS], "gridcolor": "#eef2f6"},
            xaxis={"title": {"text": "check (oldest first)"}, "tickformat": "d",
                   "gridcolor": "#eef2f6"}))
        # Built with its data: changes to a FigureWidget before it is shown are lost.
        self.refresh()
        self.figure = go.FigureWidget(self.figure)
        self.chart = widgets.Box([self.figure])
        self._show_chart()
        self._bind()
        self.refresh_inbox()
        super().__init__(children=[
            chart_style(), self.header, self.empty_note, self.chart,
            widgets.HBox([self.batch_picker, self.reload_button, self.run_button,
                          self.import_button]), self.message, self.detail])
        self.add_class("loupe-model")
        self.add_class("loupe-drift")
        self.lightbox = attach(self, Lightbox())  # the unusual images open at full size
        if len(self.history):
            self.show(self.history["check_id"].iloc[-1])

    # -- public API --------------------------------------------------------------------
    @property
    def selected(self) -> list[str]:
        """File paths of the out-of-distribution images shown for the current check."""
        if self.check is None:
            return []
        return list(self._strangest(self.check)["filepath"])

    def refresh(self) -> None:
        """Re-read the stored checks and redraw the chart."""
        self.history = drift_history(self.project)
        frame = self.history
        p_values = np.maximum(frame["p_value"].to_numpy(dtype=float), P_FLOOR)
        trace = go.Scatter(
            x=list(range(1, len(frame) + 1)), y=p_values, mode="lines+markers",
            line={"color": "#bcccdc", "width": 1},
            marker={"size": 11, "color": [DRIFT if d else CALM for d in frame["drifted"]],
                    "line": {"color": "#ffffff", "width": 1}},
            customdata=np.stack([frame["time"].dt.strftime("%Y-%m-%d %H:%M").to_numpy(),
                                 frame["version"], frame["n_images"], frame["n_outliers"]],
                                axis=-1) if len(frame) else None,
            hovertemplate="check %{x} · %{customdata[0]} UTC<br>version %{customdata[1]} · "
                          "%{customdata[2]} images · %{customdata[3]} out of distribution"
                          "<br>p = %{y:.3g}<extra></extra>")
        alpha = float(frame["alpha"].iloc[-1]) if len(frame) else 0.01
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.add_trace(trace)
            self.figure.layout.xaxis.dtick = max(1, len(frame) // 10)
            # No check yet: a blank chart that says so, not axes from -1 to 6.
            self.figure.layout.xaxis.visible = bool(len(frame))
            self.figure.layout.yaxis.visible = bool(len(frame))
            self.figure.layout.annotations = [] if len(frame) else [{
                "text": "no drift check yet: run one below", "showarrow": False,
                "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}]
            self.figure.layout.shapes = [{
                "type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": alpha, "y1": alpha,
                "line": {"color": DRIFT, "dash": "dash", "width": 1}}]
        self._bind()
        drifted = int(frame["drifted"].sum()) if len(frame) else 0
        version = self.version.name if self.version is not None else "no model version yet"
        self.header.value = (
            '<div class="loupe-model-header"><h3>Drift checks</h3>'
            f'<span class="loupe-model-sub">{len(frame)} check(s), {drifted} drifted · '
            f"reference: the training images of {escape_html(version)} · dashed line: "
            f"false-alarm rate {alpha:g}</span> <span class=\"loupe-model-hint\">click a point "
            "to see that batch's most unusual images · or check a batch of the inbox below"
            "</span></div>")
        self._show_chart()

    def show(self, check_id: str) -> DriftReport:
        """Open a stored check below the chart."""
        self.check = load_check(self.project, check_id)
        self.detail.value = self._detail_html(self.check)
        return self.check

    def run(self, folder: str) -> DriftReport | None:
        """Check a folder of new images against the version, store it, and show it."""
        if self.version is None:
            self.message.value = "Train a model version first: <code>wb.train(p)</code>."
            return None
        if not str(folder).strip():
            self.message.value = "Choose a batch of the inbox first."
            return None
        self.message.value = f"Checking {escape_html(str(folder))} …"
        try:
            report = drift(self.project, self.version, str(folder).strip())
        except (ValueError, FileNotFoundError, TypeError) as error:
            self.message.value = (f'<span class="loupe-worse">Not checked:</span> '
                                  f"{escape_html(str(error))}")
            return None
        self.message.value = ""
        self.refresh()
        self.show(report.check_id)
        return report

    def refresh_inbox(self) -> pd.DataFrame:
        """List the inbox's batches again (newest first) in :attr:`batch_picker`."""
        chosen = self.batch_picker.value
        try:
            self.batches = inbox_batches(self.project)
        except (ValueError, OSError) as error:  # e.g. $LOUPE_INBOX names no folder
            self.batches = inbox_batches(self.project, environ={})
            self.message.value = (f'<span class="loupe-worse">Inbox:</span> '
                                  f"{escape_html(str(error))}")
        options = [(f"{row.batch} · {row.n_images} image{'s' if row.n_images != 1 else ''} · "
                    f"{row.modified:%Y-%m-%d %H:%M} UTC", row.path)
                   for row in self.batches.itertuples(index=False)]
        self.batch_picker.options = options
        paths = [path for _, path in options]
        self.batch_picker.value = chosen if chosen in paths else (paths[0] if paths else None)
        if options and (self.message.value.startswith(EMPTY_INBOX)
                        or self.message.value == CHOOSE):
            self.message.value = ""
        if not options:
            self.message.value = (
                f"{EMPTY_INBOX}: put a folder of new images into "
                f"<code>{escape_html(str(project_inbox(self.project)))}</code> (or a folder "
                f"listed in <code>${INBOX_ENV}</code>), then press ⟳.")
        self._enable()
        return self.batches

    def check_batch(self) -> DriftReport | None:
        """Run a drift check on the chosen inbox batch, store it, and show it."""
        path = self._chosen()
        return None if path is None else self.run(path)

    def import_batch(self) -> wb.IntakeReport | None:
        """Import the chosen inbox batch (unlabelled, ``batch`` = its folder name) under the
        widget's name with :func:`workbench.import_batch`, which also checks it for drift
        against what the line runs; the message says what was added, rejected and found."""
        try:
            name = require_annotator(self.annotator, "DriftMonitor")
        except ValueError as error:
            self.message.value = (f'<span class="loupe-worse">Not imported:</span> '
                                  f"{escape_html(str(error))}")
            return None
        path = self._chosen()
        if path is None:
            return None
        batch = path.name
        self.message.value = f"Importing {escape_html(batch)} …"
        try:
            report = wb.import_batch(self.project, path, batch=batch, annotator=name)
        except (ValueError, OSError) as error:
            self.message.value = (f'<span class="loupe-worse">Not imported:</span> '
                                  f"{escape_html(str(error))}")
            return None
        imported = report.imported
        why = "; ".join(f"{Path(p).name}: {reason}" for p, reason in imported.rejected[:3])
        if report.drift is not None:
            self.refresh()
            self.show(report.drift.check_id)
            checked = (f" Drift check against {escape_html(report.reference)}: "
                       f"{escape_html(report.drift.summary())}")
        else:
            checked = f" No drift check: {escape_html(report.drift_skipped or '')}"
        self.message.value = (
            f"Imported <b>{escape_html(batch)}</b> as {escape_html(name)}: "
            f"{len(imported.added)} image(s) added, {len(imported.duplicates)} already stored, "
            f"{len(imported.rejected)} rejected" + (f" ({escape_html(why)})" if why else "")
            + f".{checked} "
            f'<span class="loupe-model-hint">find them with the field batch = '
            f"{escape_html(batch)}</span>")
        return report

    # -- events and helpers ----------------------------------------------------------------
    def _chosen(self) -> Path | None:
        """The chosen batch's folder, checked again to lie in the inbox (None: refused)."""
        if not self.batch_picker.value:
            if self.batch_picker.options:  # an empty inbox keeps saying where images go
                self.message.value = CHOOSE
            return None
        try:
            return inbox_batch(self.project, self.batch_picker.value)
        except ValueError as error:
            self.message.value = (f'<span class="loupe-worse">Refused:</span> '
                                  f"{escape_html(str(error))}")
            return None

    def _enable(self) -> None:
        nothing = not self.batch_picker.value
        self.run_button.disabled = nothing or self.version is None
        self.import_button.disabled = nothing

    def _show_chart(self) -> None:
        """No check yet: a sentence instead of empty axes."""
        if not hasattr(self, "chart"):
            return
        empty = not len(self.history)
        self.chart.layout.display = "none" if empty else ""
        self.empty_note.layout.display = "" if empty else "none"

    def _bind(self) -> None:
        if isinstance(self.figure, go.FigureWidget):
            for trace in self.figure.data:
                trace.on_click(self._on_click)

    def _on_click(self, _trace: Any, points: Any, _state: Any) -> None:
        if points.point_inds:
            self.show(self.history["check_id"].iloc[points.point_inds[0]])

    def _strangest(self, report: DriftReport) -> pd.DataFrame:
        return report.per_image.sort_values("ood_score", ascending=False,
                                            kind="mergesort").head(self.n_images)

    def _detail_html(self, report: DriftReport) -> str:
        verdict = ('<span class="loupe-worse">DRIFT</span>' if report.drifted
                   else '<span class="loupe-better">no drift</span>')
        notes = "".join(f"<li>{escape_html(w)}</li>" for w in report.warnings)
        if report.rejected:
            notes += f"<li>{len(report.rejected)} unreadable file(s) skipped</li>"
        moved = ' class="loupe-weak"'
        shift = "".join(
            f"<tr{moved if row.moved else ''}><td>{escape_html(row.property)}"
            f"</td><td>{row.reference:.3g}</td><td>{row.batch:.3g}</td>"
            f"<td>{_percent(row.change)}</td><td>{row.p_value:.2g}</td></tr>"
            for row in report.shift.itertuples(index=False))
        labels = "".join(
            f"<tr><td>{escape_html(str(row[0]))}</td><td>{row[1]:.0%}</td><td>{row[2]:.0%}</td>"
            f"<td>{row[3] * 100:+.0f} pt</td></tr>"
            for row in report.label_shift[["class", "reference_share", "batch_share",
                                           "change"]].itertuples(index=False))
        strangest = self._strangest(report)
        uris = data_uris(list(strangest["filepath"]), size=self.thumb_size,
                         cache_dir=self.project.folder / "thumbnails")
        self.lightbox.clear()
        tiles = "".join(self._tile(i, row, uri) for i, (row, uri) in
                        enumerate(zip(strangest.itertuples(index=False), uris, strict=True)))
        return (
            f'<div class="loupe-drift-detail"><h4>Check {escape_html(report.check_id)}: '
            f"{verdict}</h4><p>{escape_html(report.summary())}</p>"
            f'<p class="loupe-drift-batch">batch: {escape_html(report.batch)}</p>'
            + (f"<ul>{notes}</ul>" if notes else "")
            + '<div class="loupe-drift-tables"><table class="loupe-report"><tr><th>property'
              "</th><th>training</th><th>batch</th><th>change</th><th>p</th></tr>"
            + shift + '</table><table class="loupe-report"><tr><th>class</th><th>training'
              "</th><th>batch (predicted)</th><th>change</th></tr>" + labels + "</table></div>"
            + f"<h4>Most unusual images of the batch ({len(strangest)} of "
              f"{report.n_images}; ⚠ = beyond 99 % of training images)</h4>"
            + f'<div class="loupe-drift-tiles">{tiles}</div>'
            + f'<p class="loupe-model-hint">{escape_html(report.method)}</p></div>')

    def _tile(self, index: int, row: Any, uri: str | None) -> str:
        """One unusual image: a click or Enter opens it at full size in the lightbox."""
        name = Path(str(row.filepath)).name
        caption = (f"{'⚠ ' if row.is_outlier else ''}ood {row.ood_score:.2f} · predicted "
                   f"{row.label} {row.confidence:.0%}")
        if not uri:
            return (f'<figure class="loupe-drift-tile" title="{escape_html(str(row.filepath))}"'
                    f' style="width:{self.thumb_size}px"><div class="loupe-drift-missing">'
                    f"unreadable</div><figcaption>{escape_html(caption)}</figcaption></figure>")
        key = self.lightbox.register(f"drift-{index}", str(row.filepath), caption=caption)
        return (f"<figure class=\"loupe-drift-tile\" "
                f"{thumb_attributes(key, name=name, caption=caption, size=self.thumb_size)}>"
                f'<img src="{uri}" width="{self.thumb_size}" alt="{escape_html(name)}">'
                f"<figcaption>{escape_html(caption)}</figcaption></figure>")


def _percent(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:+.0%}"
