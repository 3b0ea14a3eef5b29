"""The open review work as one line of HTML, the same on every dashboard.

Each figure is a ``<span class="loupe-fact" data-fact="…" data-value="…">`` whose text says
what it counts (version, which images) and whose tooltip says it in full, so a person and a
browser test read the same number in the review page, the report and the Workbench.
"""

from __future__ import annotations

from workbench.analyse.open_work import ReviewCounts
from workbench.text import escape_html

_SHORT = {"label-issues": "open label issues", "disagreements": "open disagreements",
          "disputed": "disputed"}


def facts_html(counts: ReviewCounts) -> str:
    """``counts`` as a line of labelled figures (version and threshold in the words)."""
    words, figures = counts.describe(), counts.figures()
    detail = {"label-issues": f"{counts.version}, on current labels" if counts.version
              else "no out-of-fold version yet",
              "disagreements": f"agreement < {counts.threshold:.0%}",
              "disputed": "tied votes"}
    items = []
    for key, value in figures.items():
        shown = "—" if value is None else str(value)
        items.append(
            f'<span class="loupe-fact" data-fact="{key}" data-value="{shown}" '
            f'title="{escape_html(words[key])}"><b>{shown}</b> {_SHORT[key]} '
            f"<small>({escape_html(detail[key])})</small></span>")
    return ('<div class="loupe-facts" style="display:flex;flex-wrap:wrap;gap:4px 16px">'
            + "".join(items) + "</div>")
