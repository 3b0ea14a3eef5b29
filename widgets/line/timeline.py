"""The timeline: imports, drift checks, label edits, trainings, promotions and rollbacks."""

from __future__ import annotations

import ipywidgets as widgets

from widgets.line._common import table, when
from workbench.line.timeline import line_timeline
from workbench.store.project import Project
from workbench.text import escape_html

#: Rows drawn (the newest); the whole history is ``wb.line_timeline(p)``.
SHOWN = 200


class TimelinePanel(widgets.HTML):
    """:func:`workbench.line_timeline` of a project and line as a table, newest first."""

    def __init__(self, project: Project, *, line: str) -> None:
        super().__init__()
        self.project, self.line = project, line
        self.add_class("loupe-line-timeline")
        self.refresh()

    def refresh(self) -> None:
        """Re-read every record and redraw."""
        self.frame = line_timeline(self.project, line=self.line)
        shown = self.frame.head(SHOWN).copy()
        shown["when"] = [when(t) for t in shown["time"]]
        shown["who"] = shown["who"].replace("", "—")
        more = (f"<p class='loupe-model-hint'>the newest {SHOWN} of {len(self.frame)} events"
                "</p>" if len(self.frame) > SHOWN else "")
        if not len(shown):
            self.value = "<p>Nothing happened yet.</p>"
            return
        self.value = (f"<p class='loupe-model-hint'>{len(self.frame)} event(s), newest first; "
                      f"times in the server's local time; project "
                      f"{escape_html(self.project.name)}</p>"
                      + table(shown, {"when": "when", "kind": "what happened", "who": "who",
                                      "what": "detail"},
                              row_class=lambda row: "loupe-line-event "
                              + row["kind"].replace(" ", "-"))
                      + more)
