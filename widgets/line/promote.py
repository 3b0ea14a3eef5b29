"""Compare, promote, roll back: the gate's verdict on the newest version against what the
line runs, in plain words, and the two buttons that change the line.

Promote is enabled only when the gate passed; otherwise the failed checks are listed and a
forced promotion needs a written reason. Both pass ``expected=`` the deployment the gate
compared against, so a change by someone else meanwhile is refused with a clear message.
Roll back asks for a confirmation first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ipywidgets as widgets
import pandas as pd

from widgets.line._common import NO_NAME, done, person, refused, table
from workbench.deploy import line_state
from workbench.deploy.deployments import current_deployment, promote, rollback
from workbench.deploy.gate import GateReport, gate
from workbench.errors import (
    DeploymentConflictError,
    DeploymentError,
    GateFailedError,
    LoupeError,
)
from workbench.line.status import changed_verdicts
from workbench.store.project import Project
from workbench.store.thumbnails import data_uris
from workbench.text import escape_html

#: Each gate check in plain words.
CHECK_WORDS = {
    "frozen_set": "There is a frozen evaluation set",
    "frozen_unseen": "The new version never trained on the frozen or golden images",
    "classes": "Same classes as the line's model",
    "accuracy": "Accuracy on the frozen set is not worse",
    "macro_f1": "Average F1 over classes is not worse",
    "map50": "Box accuracy (mAP@0.5) is not worse",
    "golden": "Every golden (must-pass) image is right",
    "onnx_parity": "The exported file answers like the model",
    "edge_predictor": "The file runs on the line's predictor",
}
#: Most changed-verdict thumbnails drawn.
MAX_TILES = 24


def check_words(check: str) -> str:
    """A gate check's name in plain words (``recall:dent`` → "Recall of dent …")."""
    if check.startswith("recall:"):
        return f"Recall of {check.split(':', 1)[1]} is not worse"
    if check.startswith("ap50:"):
        return f"Box accuracy of {check.split(':', 1)[1]} is not worse"
    return CHECK_WORDS.get(check, check)


class PromotePanel(widgets.VBox):
    """The gate on a candidate version for ``line``, promote and roll back.

    Parameters
    ----------
    project : Project
    line : str
    annotator : str
        Who decides ("": nothing is written, a message says why).
    on_change : callable, optional
        Called after the line changed (the console refreshes its status and timeline).
    n_boot : int, default 1000
        Bootstrap resamples of the gate.
    """

    def __init__(self, project: Project, *, line: str, annotator: str = "",
                 on_change: Callable[[], None] | None = None, n_boot: int = 1000) -> None:
        self.project, self.line, self.annotator = project, line, annotator
        self.on_change = on_change or (lambda: None)
        self.n_boot = n_boot
        self.report: GateReport | None = None
        self.changes = pd.DataFrame()
        self.candidate_picker = widgets.Dropdown(description="Candidate",
                                                 layout=widgets.Layout(width="260px"))
        self.compare_button = widgets.Button(
            description=f"Compare with line {line}", icon="balance-scale",
            button_style="primary", layout=widgets.Layout(width="auto"),
            tooltip="run the gate: frozen set, golden set, exported file")
        self.verdict = widgets.HTML()
        self.checks_html = widgets.HTML()
        self.classes_html = widgets.HTML()
        self.changes_html = widgets.HTML()
        self.promote_button = widgets.Button(description="Promote", icon="check",
                                             button_style="success", disabled=True,
                                             tooltip="compare first: promote needs a "
                                                     "passing gate")
        self.reason = widgets.Textarea(placeholder="why promote although the gate failed "
                                                   "(recorded with your name)",
                                       layout=widgets.Layout(width="420px", height="56px"))
        self.force_button = widgets.Button(description="Force promotion", icon="exclamation",
                                           button_style="warning")
        self.force_box = widgets.HBox([self.reason, self.force_button],
                                      layout=widgets.Layout(display="none",
                                                            flex_flow="row wrap"))
        self.rollback_button = widgets.Button(description="Roll back", icon="undo",
                                              tooltip="go back to the model the line ran "
                                                      "before")
        self.confirm_button = widgets.Button(description="Yes, roll back",
                                             button_style="danger")
        self.keep_button = widgets.Button(description="No, keep it")
        self.confirm_text = widgets.HTML()
        self.confirm_box = widgets.HBox([self.confirm_text, self.confirm_button,
                                         self.keep_button],
                                        layout=widgets.Layout(display="none",
                                                              flex_flow="row wrap"))
        self.message = widgets.HTML()
        self.message.add_class("loupe-line-promote-message")
        self.compare_button.on_click(lambda _b: self.compare())
        self.promote_button.on_click(lambda _b: self.promote())
        self.force_button.on_click(lambda _b: self.force())
        self.rollback_button.on_click(lambda _b: self.ask_rollback())
        self.confirm_button.on_click(lambda _b: self.rollback())
        self.keep_button.on_click(lambda _b: self._hide_confirm())
        self.candidate_picker.observe(lambda _c: self._forget(), names="value")
        super().__init__(children=[
            widgets.HTML(f"<h3>Compare and promote</h3><p class='loupe-model-hint'>The gate "
                         f"scores the candidate against what line {escape_html(line)} runs, "
                         "on the frozen images no model trained on and the golden parts.</p>"),
            widgets.HBox([self.candidate_picker, self.compare_button],
                         layout=widgets.Layout(flex_flow="row wrap")),
            self.verdict, self.checks_html, self.classes_html, self.changes_html,
            widgets.HBox([self.promote_button, self.rollback_button],
                         layout=widgets.Layout(flex_flow="row wrap")),
            self.force_box, self.confirm_box, self.message])
        self.add_class("loupe-line-promote")
        self.refresh()

    # -- state --------------------------------------------------------------------------
    def refresh(self) -> None:
        """List the versions again and re-read the line: a new version is chosen at once,
        otherwise the choice (and the verdict shown) stays."""
        names = list(self.project.models()["name"])[::-1]
        if names != list(self.candidate_picker.options):
            self.candidate_picker.options = names  # resets the choice: _forget
            self.candidate_picker.value = names[0] if names else None
        self.compare_button.disabled = not names
        if not names:
            self.verdict.value = "No model version yet: retrain first."
        pointer = line_state.read_pointer(self.project.folder, self.line)
        self.rollback_button.disabled = pointer is None or len(pointer["stack"]) < 2
        self._enable()

    def _forget(self) -> None:
        """A new candidate or a changed line: the shown verdict no longer holds."""
        self.report = None
        self.changes = pd.DataFrame()
        for html in (self.checks_html, self.classes_html, self.changes_html):
            html.value = ""
        self.verdict.value = ""
        self._enable()

    def _enable(self) -> None:
        report = self.report
        self.promote_button.disabled = report is None or not report.passed
        self.promote_button.tooltip = (
            "compare first: promote needs a passing gate" if report is None else
            f"make {report.candidate} what line {self.line} runs" if report.passed else
            "the gate failed: see the checks; a forced promotion needs a reason")
        can_force = report is not None and not report.passed and not report.hard_failures
        self.force_box.layout.display = "flex" if can_force else "none"

    # -- compare --------------------------------------------------------------------------
    def compare(self) -> GateReport | None:
        """Run the gate on the chosen candidate and show it (reads only)."""
        candidate = self.candidate_picker.value
        if not candidate:
            self.message.value = refused("Not compared", "no model version yet")
            return None
        self.message.value = f"Running the gate on {escape_html(candidate)} …"
        try:
            report = gate(self.project, candidate, line=self.line, n_boot=self.n_boot)
        except (LoupeError, ValueError, OSError) as error:
            self.message.value = refused("Not compared", str(error))
            return None
        self.report = report
        self.message.value = ""
        self._enable()  # the buttons first: the verdict shows when they are ready
        self._draw(report)
        return report

    def _draw(self, report: GateReport) -> None:
        against = (f"what line {escape_html(report.line)} runs: "
                   f"<b>{escape_html(report.champion)}</b>" if report.champion else
                   f"nothing (line {escape_html(report.line)} has no model yet: only the "
                   "absolute checks apply)")
        word = ('<b class="loupe-better">passes</b>' if report.passed
                else '<b class="loupe-worse">fails</b>')
        failed = "".join(f"<li>{escape_html(check_words(r.check))}: {escape_html(r.detail)}"
                         "</li>" for r in report.failed.itertuples(index=False))
        hard = (" The exported file itself is broken: this cannot be forced."
                if report.hard_failures else
                " To promote anyway, write why below and press Force promotion."
                if not report.passed else "")
        self.verdict.value = (
            f'<div class="loupe-line-verdict" data-passed="{str(report.passed).lower()}">'
            f"<b>{escape_html(report.candidate)}</b> against {against}: the gate {word}."
            + (f"<ul class='loupe-line-failed'>{failed}</ul>" if failed else "")
            + escape_html(hard) + "</div>")
        checks = report.checks.assign(
            what=[check_words(c) for c in report.checks["check"]],
            ok=["✓" if p else "✗" for p in report.checks["passed"]])
        self.checks_html.value = "<h4>Checks</h4>" + table(
            checks, {"ok": "", "what": "check", "detail": "in detail"},
            row_class=lambda row: "loupe-better" if row["passed"] else "loupe-worse")
        self.classes_html.value = _classes_html(report)
        self.changes_html.value = self._changes_html(report)

    def _changes_html(self, report: GateReport) -> str:
        if report.champion is None:
            return ""
        try:
            self.changes = changed_verdicts(self.project, report.candidate, report.champion)
        except (LoupeError, ValueError, OSError) as error:
            return f"<p>{refused('Changed answers not shown', str(error))}</p>"
        if not len(self.changes):
            return ("<h4>Changed answers</h4><p>Both models answer the same on every frozen "
                    "image.</p>")
        shown = self.changes.head(MAX_TILES)
        uris = data_uris(list(shown["filepath"]), size=96,
                         cache_dir=self.project.folder / "thumbnails")
        tiles = []
        for row, uri in zip(shown.itertuples(index=False), uris, strict=True):
            caption = (f"{row.change}: {report.champion} {row.champion} → {report.candidate} "
                       f"{row.candidate} (label {row.reference})")
            image = (f'<img src="{uri}" width="96" alt="{escape_html(Path(row.filepath).name)}">'
                     if uri else "<div>unreadable</div>")
            tiles.append(f'<figure class="loupe-line-change {row.change}" title='
                         f'"{escape_html(caption)}" style="width:110px;margin:4px">{image}'
                         f"<figcaption>{escape_html(caption)}</figcaption></figure>")
        counts = self.changes["change"].value_counts()
        return (f"<h4>Changed answers on the frozen set</h4><p>{int(counts.get('fixed', 0))} "
                f"fixed, {int(counts.get('broken', 0))} broken, {int(counts.get('other', 0))} "
                "still wrong differently.</p><div style='display:flex;flex-wrap:wrap'>"
                + "".join(tiles) + "</div>")

    # -- change the line -----------------------------------------------------------------
    def promote(self) -> bool:
        """Promote the compared candidate (the gate must have passed)."""
        return self._promote(force=False)

    def force(self) -> bool:
        """Promote despite a failed gate, with the written reason."""
        return self._promote(force=True)

    def _promote(self, *, force: bool) -> bool:
        name = person(self.annotator)
        if name is None:
            self.message.value = refused("Not promoted", NO_NAME)
            return False
        report = self.report
        if report is None:
            self.message.value = refused("Not promoted", "compare first")
            return False
        if not force and not report.passed:
            self.message.value = refused("Not promoted", "the gate failed; a forced "
                                         "promotion needs a written reason")
            return False
        reason = self.reason.value.strip() or None
        if force and reason is None:
            self.message.value = refused("Not promoted", "a forced promotion needs a written "
                                         "reason: write why in the box, then press Force "
                                         "promotion again")
            return False
        try:
            deployment = promote(self.project, report.candidate, line=self.line,
                                 annotator=name, force=force, reason=reason,
                                 expected=report.champion_deployment, n_boot=self.n_boot)
        except DeploymentConflictError as error:
            self.message.value = refused("Not promoted", f"{error} Compare again.")
            self._forget()
            return False
        except (GateFailedError, DeploymentError, LoupeError, OSError) as error:
            self.message.value = refused("Not promoted", str(error))
            return False
        self.reason.value = ""
        self.message.value = done(
            f"Line {escape_html(self.line)} now runs <b>{escape_html(deployment.version)}</b>"
            f" (promoted by {escape_html(name)}{', forced' if deployment.forced else ''}).")
        self._changed()
        return True

    def ask_rollback(self) -> None:
        """Show the confirmation step (what the line runs now, and what it goes back to)."""
        now = current_deployment(self.project, line=self.line)
        pointer = line_state.read_pointer(self.project.folder, self.line)
        if now is None or pointer is None or len(pointer["stack"]) < 2:
            self.message.value = refused("Not rolled back", "the line has no earlier model")
            return
        before = line_state.load_deployment(self.project.folder, self.line,
                                            pointer["stack"][-2])
        self.confirm_text.value = (f"Line {escape_html(self.line)} runs "
                                   f"<b>{escape_html(now.version)}</b>; go back to "
                                   f"<b>{escape_html(before.version)}</b>?")
        self.confirm_box.layout.display = "flex"

    def rollback(self) -> bool:
        """Roll the line back one step (after :meth:`ask_rollback`)."""
        if self.confirm_box.layout.display != "flex":
            self.message.value = refused("Not rolled back", "press Roll back first, then "
                                         "confirm")
            return False
        name = person(self.annotator)
        if name is None:
            self.message.value = refused("Not rolled back", NO_NAME)
            return False
        self._hide_confirm()
        try:
            back = rollback(self.project, line=self.line, annotator=name)
        except (DeploymentError, LoupeError, OSError) as error:
            self.message.value = refused("Not rolled back", str(error))
            return False
        self.message.value = done(f"Line {escape_html(self.line)} runs "
                                  f"<b>{escape_html(back.version)}</b> again (rolled back by "
                                  f"{escape_html(name)}).")
        self._changed()
        return True

    def _hide_confirm(self) -> None:
        self.confirm_box.layout.display = "none"

    def _changed(self) -> None:
        self._forget()
        self.refresh()
        self.on_change()


def _classes_html(report: GateReport) -> str:
    frame = report.comparison
    if frame is None or not len(frame):
        return ""
    rows = frame.copy()
    rows["measure"] = [m.replace("recall:", "recall of ").replace("ap50:", "AP@0.5 of ")
                       .replace("macro_f1", "macro F1") for m in rows["metric"]]
    rows["change"] = [f"{d:+.3f} ({lo:+.3f} to {hi:+.3f})" if d == d else "—"
                      for d, lo, hi in zip(rows["delta"], rows["delta_low"],
                                           rows["delta_high"], strict=True)]
    return ("<h4>Per class, on the frozen set (change with its 95 % interval)</h4>"
            + table(rows, {"measure": "measure", "n": "images",
                           "champion": report.champion or "champion",
                           "candidate": report.candidate, "change": "change (interval)"},
                    row_class=lambda row: "loupe-worse" if row["delta_high"] < 0 else ""))
