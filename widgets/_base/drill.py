"""What the chart widgets share: a grid below the chart that shows what was clicked.

``ConfusionDrilldown``, ``SlicePerformance``, ``ModelCompare`` and ``EmbeddingMap`` draw a
plotly chart over a :class:`~widgets.label.grid.LabelingGrid`; a click or a selection on the chart
fills the grid, and a relabel in the grid redraws the chart from the store. The grid's
thumbnails open at full size in a :class:`~widgets._base.lightbox.Lightbox`
(:func:`open_full_size`).
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import pandas as pd

from widgets._base import STATIC
from widgets._base.lightbox import Lightbox, attach, grid_lightbox
from widgets.label.grid import LabelingGrid

CSS = STATIC / "charts.css"


def drill_grid(project: Any, *, annotator: str, thumb_size: int, page_size: int,
               hint: str) -> LabelingGrid:
    """An empty grid whose relabels are review decisions, titled with what to click."""
    grid = LabelingGrid(project, annotator=annotator, review=True, thumb_size=thumb_size,
                        page_size=page_size, sample_ids=[])
    grid.title = hint
    return grid


def open_full_size(box: widgets.Box, grid: LabelingGrid) -> Lightbox:
    """Let ``grid``'s thumbnails (inside ``box``) open at full size: the tile's ⤢ button,
    a double click or Enter on the focused tile; the lightbox goes last among the children."""
    return attach(box, grid_lightbox(grid))


def in_scope(frame: pd.DataFrame, scope: list[str] | None) -> pd.DataFrame:
    """The rows of ``frame`` whose ``sample_id`` is in the widget's view (all without one);
    ``frame.attrs`` are kept."""
    if scope is None:
        return frame
    kept = frame[frame["sample_id"].isin(set(scope))].reset_index(drop=True)
    kept.attrs.update(frame.attrs)
    return kept


def chart_style() -> widgets.HTML:
    """The charts' stylesheet, as a widget to put first among the children."""
    return widgets.HTML(f"<style>{CSS.read_text(encoding='utf-8')}</style>")
