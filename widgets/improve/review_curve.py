"""``ReviewCurve``: what a review budget buys — accuracy against share of labels reviewed.

Render-only: :func:`workbench.improve.review_curve.review_curve` simulates a careful reviewer (the
oracle) correcting labels in each strategy's order and retrains; the widget runs it on a
click and draws :meth:`workbench.improve.review_curve.ReviewCurve.plot` with the summary table. The
simulation never writes to the project's labels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import plotly.graph_objects as go

from widgets._base.drill import chart_style
from widgets._base.source import resolve_source
from workbench.improve.review_curve import ReviewCurve as CurveResult
from workbench.improve.review_curve import review_curve
from workbench.text import escape_html

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion

#: The demo's generator truth: the oracle used when none is given and the field exists.
DEMO_ORACLE = "demo_truth"


class ReviewCurve(widgets.VBox):
    """A Run button, then accuracy against share reviewed per strategy, and a table.

    Parameters
    ----------
    source : Project, str, FiftyOne view, or a computed
    ``workbench.improve.review_curve.ReviewCurve``
        The project (a view stands for its whole project: the simulation needs every
        labelled sample), or a result to draw as is.
    version : ModelVersion or str, optional
        The k-fold version whose configuration is retrained; the newest when None.
    oracle : dict of str to str, or str, optional
        The true labels (sample id -> label, or a field name). Default: the demo's
        ``demo_truth`` field when the project has it; otherwise Run stays disabled.
    budgets, seeds, strategies, eval_share
        As :func:`workbench.improve.review_curve.review_curve` takes them.

    Attributes
    ----------
    curve : workbench.improve.review_curve.ReviewCurve or None
        The last result.
    figure : plotly.graph_objects.FigureWidget
        One line per strategy, then the noisy and clean lines (empty before a run).
    run_button : ipywidgets.Button
    status : ipywidgets.HTML
        What is running, how long the last run took, or what went wrong.
    table : ipywidgets.HTML
        The summary: mean accuracy, recovered share and labels fixed per strategy and budget.
    """

    def __init__(self, source: Any, version: ModelVersion | str | None = None,
                 oracle: Mapping[str, str] | str | None = None, *,
                 budgets: Sequence[float] = (0.02, 0.05, 0.10, 0.20), seeds: int = 3,
                 strategies: Sequence[Any] = ("loupe", "random", "low_confidence"),
                 eval_share: float = 0.3) -> None:
        self.curve: CurveResult | None = None
        self.project = None
        if isinstance(source, CurveResult):
            self.curve = source
        else:
            self.project, _ = resolve_source(source)
            if oracle is None and self.project.dataset.has_sample_field(DEMO_ORACLE):
                oracle = DEMO_ORACLE
        self.version, self.oracle = version, oracle
        self.options = {"budgets": tuple(budgets), "seeds": seeds,
                        "strategies": tuple(strategies), "eval_share": eval_share}
        self.run_button = widgets.Button(
            description="Run simulation", icon="play", button_style="primary",
            tooltip="retrain once per strategy, budget and seed on a copy of the labels",
            disabled=self.project is None or oracle is None)
        self.run_button.on_click(lambda _button: self.run())
        self.status = widgets.HTML()
        self.table = widgets.HTML()
        self.header = widgets.HTML(self._header_html())
        figure = self.curve.plot() if self.curve is not None else _empty_figure()
        # Built with its data: changes made to a FigureWidget before the page shows it are
        # lost (plotly sends them as one-off messages), so draw first, then wrap.
        self.figure = go.FigureWidget(figure)
        if self.curve is not None:
            self._show(self.curve)
        elif oracle is None:
            self.status.value = ('<span class="loupe-model-hint">no oracle: pass oracle= (a '
                                 "dict sample_id -> true label, or a field holding it)</span>")
        else:
            self.status.value = ('<span class="loupe-model-hint">press Run: it retrains '
                                 f"{self._n_fits()} probe heads (labels are never "
                                 "written)</span>")
        super().__init__(children=[chart_style(), self.header,
                                   widgets.HBox([self.run_button, self.status]), self.figure,
                                   self.table])
        self.add_class("loupe-model")
        self.add_class("loupe-review-curve")

    # -- public API --------------------------------------------------------------------
    def run(self) -> CurveResult | None:
        """Run the simulation and redraw; returns the result (None after an error, which the
        status line shows)."""
        if self.project is None or self.oracle is None:
            self.status.value = "nothing to run: give a project and an oracle"
            return None
        self.run_button.disabled = True
        self.status.value = (f"running: embedding (cached), Loupe's queue, {self._n_fits()} "
                             "retrains …")
        started = time.perf_counter()
        try:
            curve = review_curve(self.project, self.version, self.oracle, progress=False,
                                 **self.options)
        except ValueError as error:  # ProjectError too
            self.status.value = f'<span class="loupe-weak">{escape_html(str(error))}</span>'
            return None
        finally:
            self.run_button.disabled = False
        self.curve = curve
        self._show(curve)
        self.status.value = f"done in {time.perf_counter() - started:.0f} s"
        return curve

    # -- helpers -----------------------------------------------------------------------
    def _n_fits(self) -> int:
        options = self.options
        return int(options["seeds"]) * (len(options["strategies"]) * len(options["budgets"])
                                        + 2)

    def _show(self, curve: CurveResult) -> None:
        fresh = curve.plot()
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.add_traces(list(fresh.data))
            self.figure.layout = fresh.layout
        self.header.value = self._header_html()
        self.table.value = _summary_html(curve)

    def _header_html(self) -> str:
        name = self.project.name if self.project is not None else (
            self.curve.version if self.curve is not None else "")
        notes = " ".join(self.curve.notes[:1]) if self.curve is not None else (
            "Simulates a careful reviewer fixing labels in each strategy's order, on a copy "
            "of the labels in memory; the project's labels are never written.")
        return (f'<div class="loupe-model-header"><h3>Review efficiency · '
                f"{escape_html(str(name))}</h3><span class=\"loupe-model-sub\">"
                f"{escape_html(notes)}</span></div>")


def _empty_figure() -> go.Figure:
    return go.Figure(layout=go.Layout(
        height=380, margin={"l": 60, "r": 20, "t": 40, "b": 50}, plot_bgcolor="#ffffff",
        xaxis={"title": {"text": "share of the pool reviewed"}, "tickformat": ".0%"},
        yaxis={"title": {"text": "accuracy on the clean evaluation split"},
               "tickformat": ".0%"}))


def _summary_html(curve: CurveResult) -> str:
    """Strategy × budget: mean accuracy, recovered share and labels fixed."""
    base = curve.baselines
    rows = []
    for row in curve.summary().itertuples(index=False):
        recovered = ("–" if isinstance(row.recovered_share, float)
                     and math.isnan(row.recovered_share) else f"{row.recovered_share:.0%}")
        rows.append(f"<tr><td>{escape_html(str(row.strategy))}</td><td>{row.budget:.0%}</td>"
                    f"<td>{row.n_reviewed:.0f}</td><td>{row.labels_fixed:.1f}</td>"
                    f"<td>{row.accuracy:.1%} ± {row.accuracy_std:.1%}</td>"
                    f"<td>{recovered}</td></tr>")
    caption = (f"noisy labels {base['noisy_accuracy'].mean():.1%} · clean labels "
               f"{base['clean_accuracy'].mean():.1%} · pool {base['n_pool'].mean():.0f} "
               f"({base['n_wrong_in_pool'].mean():.1f} wrong) · evaluation "
               f"{base['n_eval'].mean():.0f} · {len(base)} seed(s)")
    return (f'<div class="loupe-model-sub">{escape_html(caption)}</div>'
            '<table class="loupe-report" style="margin-top:8px"><thead><tr><th>strategy</th>'
            "<th>budget</th><th>reviewed</th><th>labels fixed</th><th>accuracy</th>"
            f"<th>recovered</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
