"""``DriftMonitor``: every drift check of a project over time, and the evidence of one.

Render-only: the chart is :func:`workbench.drift_history` (one point per check, its
p-value on a log axis, red when it drifted, the false-alarm line dashed); a click on a
point opens that check (:func:`workbench.load_check`): its summary, what moved (image
properties, predicted class mix) and the batch's most out-of-distribution images. A folder
box runs a new check with :func:`workbench.drift` and shows it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

import workbench as wb
from widgets._base.drill import chart_style
from widgets._base.source import resolve_source
from workbench.keywords import renamed
from workbench.monitor.drift import DriftReport, drift, drift_history, load_check
from workbench.store.thumbnails import data_uris
from workbench.text import escape_html

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion

DRIFT, CALM = "#c81e1e", "#52606d"
#: Smallest p-value drawn (a permutation test cannot go lower than 1/(n+1) anyway).
P_FLOOR = 1e-4
TICKS = [1, 0.1, 0.01, 0.001, 0.0001]


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

    Attributes
    ----------
    history : pandas.DataFrame
        :func:`workbench.drift_history` as drawn.
    figure : plotly.graph_objects.FigureWidget
    check : DriftReport or None
        The check shown below the chart (the newest at first).
    """

    @renamed(mv="version")
    def __init__(self, source: Any, version: ModelVersion | str | None = None, *,
                 n_images: int = 12, thumb_size: int = 96) -> None:
        project, _ = resolve_source(source)
        self.project = project
        self.version = wb.as_version(project, version)[1] if not project.models().empty else None
        self.n_images, self.thumb_size = n_images, thumb_size
        self.check: DriftReport | None = None
        self.header = widgets.HTML()
        self.detail = widgets.HTML()
        self.folder = widgets.Text(placeholder="folder of new images, e.g. incoming/today",
                                   layout=widgets.Layout(width="420px"))
        self.run_button = widgets.Button(description="Check folder", icon="search",
                                         button_style="primary",
                                         disabled=self.version is None)
        self.run_button.on_click(lambda _b: self.run(self.folder.value))
        self.message = widgets.HTML()
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
        self._bind()
        super().__init__(children=[
            chart_style(), self.header, self.figure,
            widgets.HBox([self.folder, self.run_button]), self.message, self.detail])
        self.add_class("loupe-model")
        self.add_class("loupe-drift")
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
            "to see that batch's most unusual images · or check a folder below</span></div>")

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
            self.message.value = "Type the folder of the new images first."
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

    # -- events and helpers ----------------------------------------------------------------
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
        tiles = "".join(
            f'<figure class="loupe-drift-tile" title="{escape_html(str(row.filepath))}">'
            + (f'<img src="{uri}" width="{self.thumb_size}">' if uri else
               '<div class="loupe-drift-missing">unreadable</div>')
            + f"<figcaption>{'⚠ ' if row.is_outlier else ''}ood {row.ood_score:.2f}<br>"
              f"{escape_html(str(row.label))} {row.confidence:.0%}</figcaption></figure>"
            for row, uri in zip(strangest.itertuples(index=False), uris, strict=True))
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


def _percent(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:+.0%}"
