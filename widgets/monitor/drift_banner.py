"""``DriftBanner``: a line at the top of every page of a project whose last drift check
drifted, saying what moved and when (server's local time); empty otherwise."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import ipywidgets as widgets
import pandas as pd

import workbench as wb
from widgets._base.source import resolve_source
from workbench.text import escape_html

STYLE = ("background:#fdecea;border:1px solid #c81e1e;color:#7a1010;border-radius:6px;"
         "padding:8px 12px;margin:6px 0;max-width:100%;box-sizing:border-box;")


def local_time(value: Any) -> str:
    """A stored UTC time as the server's local ``YYYY-MM-DD HH:MM`` (with its zone)."""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    local = stamp.tz_convert(datetime.now().astimezone().tzinfo)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or ''}".strip()


class DriftBanner(widgets.HTML):
    """The project's drift flag: shown when its latest check drifted, hidden otherwise.

    Parameters
    ----------
    source : Project, str or FiftyOne view
        The project (a view stands for its project).

    Attributes
    ----------
    drifted : bool
        Whether the latest stored check drifted (False when there is none).
    """

    def __init__(self, source: Any) -> None:
        self.project, _ = resolve_source(source)
        self.drifted = False
        super().__init__()
        self.add_class("loupe-drift-banner")
        self.refresh()

    def refresh(self) -> None:
        """Re-read the drift history (after a check, or on a page's refresh)."""
        checks = wb.drift_history(self.project)
        if len(checks) == 0 or not bool(checks.iloc[-1]["drifted"]):
            self.drifted = False
            self.value = ""
            self.layout.display = "none"
            return
        last = checks.iloc[-1]
        self.drifted = True
        self.layout.display = None
        self.value = (
            f'<div role="alert" class="loupe-drift-flag" style="{STYLE}"><b>Drift</b> on '
            f"{escape_html(self.project.name)}: the batch {escape_html(last['batch'])} "
            f"({int(last['n_images'])} images, checked {escape_html(local_time(last['time']))}"
            f" against {escape_html(last['version'])}) — {escape_html(last['summary'])}</div>")
