"""``ProjectOverview``: what is in a project, at a glance.

Render-only: it reads :meth:`workbench.Project.to_pandas` and
:attr:`workbench.Project.classes`, counts, and draws a header, count tables and a
thumbnail grid (one row per class). No analysis and no writes happen here; the counts
are exposed as :attr:`ProjectOverview.table` so tests can check them without a browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as widgets
import pandas as pd
from PIL import UnidentifiedImageError

from widgets._base import STATIC
from widgets._base.facts import facts_html
from workbench.store.labels import DISPUTED_TAG
from workbench.store.thumbnails import thumbnail_data_uri
from workbench.text import escape_html

if TYPE_CHECKING:
    from workbench.analyse.open_work import ReviewCounts
    from workbench.store.project import Project

_CSS = STATIC / "overview.css"
#: Row name for samples without a consensus label.
UNLABELLED = "(unlabelled)"
#: Name of the totals row and column of :attr:`ProjectOverview.table`.
TOTAL = "total"
_TOTAL_CELL = ' class="loupe-total"'


class ProjectOverview(widgets.VBox):
    """A header, per-class × split counts, slice counts and a thumbnail grid.

    Parameters
    ----------
    project : workbench.Project
        The project to show.
    per_class : int, default 8
        Thumbnails per class row (the first images of that class, in dataset order).
    thumb_size : int, default 96
        Longest side of a thumbnail in pixels.
    counts : workbench.ReviewCounts, optional
        The open review work (:func:`workbench.review_counts`), shown under the header with
        the same figures as the review page; without it only the disputed badge shows.

    Attributes
    ----------
    table : pandas.DataFrame
        Sample counts, one row per class (in :attr:`Project.classes` order, then
        ``"(unlabelled)"`` if any sample has no label) and one column per split, plus a
        ``"total"`` row and column.
    slice_counts : dict of str to pandas.Series
        For each slice field, the number of samples per value (missing values as
        ``"(missing)"``).
    n_disputed : int
        Samples tagged ``disputed``.
    thumbnails : dict of str to list of str
        Per class, the sample ids shown in the grid, in order.
    """

    def __init__(self, project: Project, *, per_class: int = 8, thumb_size: int = 96,
                 counts: ReviewCounts | None = None) -> None:
        for name, value in (("per_class", per_class), ("thumb_size", thumb_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ProjectOverview: {name} must be a positive integer, "
                                 f"got {value!r}")
        self.project = project
        self.per_class = per_class
        self.thumb_size = thumb_size

        frame = project.to_pandas()
        classes = project.classes
        slice_fields = [f for f in project.slice_fields if f in frame.columns]
        self.table = _count_table(frame, classes)
        self.slice_counts = {field: _value_counts(frame[field]) for field in slice_fields}
        self.n_disputed = int(frame["tags"].map(lambda tags: DISPUTED_TAG in (tags or [])).sum())
        self.thumbnails = {
            label: frame.loc[frame["label"] == label, "sample_id"].head(per_class).tolist()
            for label in classes
        }

        cache_dir = project.folder / "thumbnails"
        self.header = widgets.HTML(self._header_html(len(frame), len(classes))
                                   + (facts_html(counts) if counts is not None else ""))
        self.counts = widgets.HTML(self._tables_html())
        self.grid = widgets.HTML(self._grid_html(frame, classes, cache_dir))
        style = widgets.HTML(f"<style>{_CSS.read_text(encoding='utf-8')}</style>")
        super().__init__(children=[style, self.header, self.counts, self.grid])
        self.add_class("loupe-overview")

    # -- html --------------------------------------------------------------------------
    def _header_html(self, n_samples: int, n_classes: int) -> str:
        name = escape_html(self.project.name)
        badge_class = "loupe-disputed" + ("" if self.n_disputed else " loupe-none")
        noun = "sample" if self.n_disputed == 1 else "samples"
        return (
            f'<div class="loupe-header"><h2>{name}</h2>'
            f'<span class="loupe-sub">{n_samples} samples · {n_classes} classes · '
            f"{len(self.slice_counts)} slice fields</span>"
            f'<span class="{badge_class}">{self.n_disputed} disputed {noun}</span></div>'
        )

    def _tables_html(self) -> str:
        parts = ['<div class="loupe-tables">',
                 "<div><h3>Samples per class and split</h3>",
                 _frame_html(self.table, total=TOTAL), "</div>"]
        for field, counts in self.slice_counts.items():
            frame = counts.rename("samples").rename_axis(None).to_frame()
            parts += [f"<div><h3>{escape_html(field)}</h3>", _frame_html(frame), "</div>"]
        parts.append("</div>")
        return "".join(parts)

    def _grid_html(self, frame: pd.DataFrame, classes: list[str], cache_dir: Path) -> str:
        by_id = frame.set_index("sample_id")
        rows = ["<div><h3>Examples per class</h3>"]
        for label in classes:
            n_label = int(self.table.at[label, TOTAL]) if label in self.table.index else 0
            cells = []
            for sample_id in self.thumbnails[label]:
                cells.append(self._thumb_html(by_id.at[sample_id, "filepath"], label,
                                              cache_dir))
            if not cells:
                cells.append('<span class="loupe-empty">no images yet</span>')
            rows.append(
                '<div class="loupe-grid-row"><div class="loupe-grid-label">'
                f"{escape_html(label)}<small>{n_label} images</small></div>"
                f"{''.join(cells)}</div>"
            )
        rows.append("</div>")
        return "".join(rows)

    def _thumb_html(self, filepath: str, label: str, cache_dir: Path) -> str:
        title = escape_html(f"{Path(filepath).name} — {label}")
        side = self.thumb_size
        try:
            uri = thumbnail_data_uri(filepath, size=side, cache_dir=cache_dir)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            reason = escape_html(f"{Path(filepath).name}: cannot read ({err})")
            return (f'<div class="loupe-missing" title="{reason}" '
                    f'style="width:{side}px;height:{side}px">missing</div>')
        return (f'<img class="loupe-thumb" src="{uri}" title="{title}" alt="{title}" '
                f'style="width:{side}px;height:{side}px" loading="lazy">')


def _count_table(frame: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    labels = frame["label"].fillna(UNLABELLED)
    splits = frame["split"].fillna("(none)")
    table = pd.crosstab(labels, splits)
    rows = list(classes) + ([UNLABELLED] if (labels == UNLABELLED).any() else [])
    rows += [label for label in table.index if label not in rows]  # labels outside schema
    preferred = [s for s in ("train", "val", "test") if s in table.columns]
    columns = preferred + sorted(c for c in table.columns if c not in preferred)
    table = table.reindex(index=rows, columns=columns, fill_value=0).astype(int)
    table[TOTAL] = table.sum(axis=1)
    table.loc[TOTAL] = table.sum(axis=0)
    table.index.name = "label"
    table.columns.name = "split"
    return table


def _value_counts(column: pd.Series) -> pd.Series:
    counts = column.fillna("(missing)").astype(str).value_counts()
    return counts.sort_index()


def _frame_html(frame: pd.DataFrame, *, total: str | None = None) -> str:
    head = "".join(f"<th>{escape_html(str(c))}</th>" for c in frame.columns)
    corner = escape_html(str(frame.index.name or ""))
    body = []
    for index, row in frame.iterrows():
        row_class = ' class="loupe-total"' if total is not None and index == total else ""
        cells = "".join(
            f"<td{_TOTAL_CELL if total is not None and col == total else ''}>{value}</td>"
            for col, value in row.items()
        )
        body.append(f"<tr{row_class}><th>{escape_html(str(index))}</th>{cells}</tr>")
    return (f'<table class="loupe-counts"><thead><tr><th>{corner}</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")
