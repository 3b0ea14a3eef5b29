"""The status strip: what a line runs, the last drift check, the open training jobs."""

from __future__ import annotations

import ipywidgets as widgets

from widgets.line._common import when
from workbench.line.status import LineStatus
from workbench.text import escape_html


class StatusStrip(widgets.HTML):
    """One line per fact of :func:`workbench.line_status`, redrawn by :meth:`show`."""

    def __init__(self) -> None:
        super().__init__()
        self.add_class("loupe-line-status")

    def show(self, status: LineStatus) -> None:
        """Draw ``status``."""
        self.value = ('<div class="loupe-line-strip" style="display:flex;flex-wrap:wrap;'
                      'gap:4px 24px">' + _deployment(status) + _drift(status)
                      + _jobs(status) + "</div>")


def _deployment(status: LineStatus) -> str:
    line = escape_html(status.line)
    dep = status.deployment
    if dep is None:
        return (f'<span class="loupe-line-fact" data-fact="deployment" data-value="">'
                f"<b>Line {line}</b> runs no model yet: compare a version below and "
                "promote it.</span>")
    forced = (f' <span class="loupe-worse">forced: {escape_html(dep.reason or "")}</span>'
              if dep.forced else "")
    accuracy = ("frozen-set accuracy not measured" if status.frozen_accuracy is None
                else f"frozen-set accuracy <b>{status.frozen_accuracy:.1%}</b>"
                + (f" on {status.frozen_n} images" if status.frozen_n else ""))
    return (f'<span class="loupe-line-fact" data-fact="deployment" '
            f'data-value="{escape_html(dep.version)}"><b>Line {line}</b> runs '
            f"<b>{escape_html(dep.version)}</b> since {escape_html(when(dep.promoted_at))}, "
            f"promoted by {escape_html(dep.promoted_by)}{forced} · {accuracy}</span>")


def _drift(status: LineStatus) -> str:
    check = status.last_drift
    if check is None:
        return ('<span class="loupe-line-fact" data-fact="drift" data-value="none">'
                "No drift check yet.</span>")
    flag = ('<b class="loupe-worse">DRIFT</b>' if check.get("drifted")
            else '<b class="loupe-better">no drift</b>')
    return (f'<span class="loupe-line-fact" data-fact="drift" '
            f'data-value="{"drift" if check.get("drifted") else "calm"}">Last drift check: '
            f"{flag} on batch {escape_html(str(check.get('batch')))} "
            f"({escape_html(when(check.get('time')))}): "
            f"{escape_html(str(check.get('summary') or ''))}</span>")


def _jobs(status: LineStatus) -> str:
    jobs = status.jobs
    if not len(jobs):
        return ('<span class="loupe-line-fact" data-fact="jobs" data-value="0">'
                "No training running.</span>")
    items = ", ".join(f"job {row.job_id} {row.state} {row.progress:.0%} "
                      f"(by {row.submitted_by})" for row in jobs.itertuples(index=False))
    return (f'<span class="loupe-line-fact" data-fact="jobs" data-value="{len(jobs)}">'
            f"Training: {escape_html(items)}</span>")
