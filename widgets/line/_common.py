"""Small pieces the line console's panels share: messages and the name check."""

from __future__ import annotations

from typing import Any

import pandas as pd

from widgets._base.source import require_annotator
from widgets.monitor.drift_banner import local_time
from workbench.text import escape_html

WIDGET = "LineConsole"
NO_NAME = "Type your name at the top of the page first: every action is recorded under it."


def refused(what: str, why: str) -> str:
    """A red "Not done" line with the reason, as HTML (``why`` is escaped)."""
    return (f'<span class="loupe-worse loupe-line-refused">{escape_html(what)}:</span> '
            f"{escape_html(why)}")


def done(text_html: str) -> str:
    """A green confirmation line (``text_html`` is already safe HTML)."""
    return f'<span class="loupe-better loupe-line-done">✓</span> {text_html}'


def person(annotator: str) -> str | None:
    """The typed name, or None when there is none (the caller shows :data:`NO_NAME`)."""
    try:
        return require_annotator(annotator, WIDGET)
    except ValueError:
        return None


def when(value: Any) -> str:
    """A stored time in the server's local time ("—" when missing)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "—"
    return local_time(value)


def table(frame: pd.DataFrame, columns: dict[str, str], *, css: str = "loupe-report",
          row_class: Any = None) -> str:
    """``frame`` as an HTML table with the headers ``columns`` (column → header); every
    cell is escaped; ``row_class(row)`` may give a row a class."""
    head = "".join(f"<th>{escape_html(title)}</th>" for title in columns.values())
    rows = []
    for _, row in frame.iterrows():
        klass = row_class(row) if row_class else ""
        cells = "".join(f"<td>{escape_html(_cell(row[c]))}</td>" for c in columns)
        rows.append(f'<tr class="{klass}">{cells}</tr>' if klass else f"<tr>{cells}</tr>")
    return f'<table class="{css}"><tr>{head}</tr>{"".join(rows)}</table>'


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "—" if value != value else f"{value:.3g}"
    return "—" if value is None else str(value)
