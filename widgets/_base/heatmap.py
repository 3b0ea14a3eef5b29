"""The given × predicted heat map shared by the class and box confusion widgets."""

from __future__ import annotations

import plotly.graph_objects as go

from workbench.text import escape_plotly

#: Colour scale of the confusion counts (white = none).
COLORSCALE = [[0.0, "#ffffff"], [0.15, "#dbe9f6"], [1.0, "#08519c"]]


def cell_hovertext(rows: list[str], columns: list[str]) -> list[list[str]]:
    """Each heat map cell's "given … · predicted …" hover line, names shown as text."""
    return [[f"given {escape_plotly(r)}<br>predicted {escape_plotly(c)}" for c in columns]
            for r in rows]


def heatmap_figure(*, unit: str, rows: str, size: tuple[int, int],
                   margin: tuple[int, int]) -> go.Figure:
    """An empty given × predicted heat map (filled by the widget's refresh): ``unit`` is what
    a cell counts, ``rows`` the row axis title, ``margin`` the (left, bottom) margins."""
    return go.Figure(
        data=[go.Heatmap(z=[[0]], colorscale=COLORSCALE, showscale=False, xgap=2, ygap=2,
                         texttemplate="%{text}", textfont={"size": 13},
                         hovertemplate=f"%{{hovertext}}<br>%{{z}} {unit}<extra></extra>")],
        layout=go.Layout(width=size[0], height=size[1],
                         margin={"l": margin[0], "r": 10, "t": 30, "b": margin[1]},
                         xaxis={"title": {"text": "predicted"}, "side": "bottom",
                                "type": "category", "tickangle": -30},
                         yaxis={"title": {"text": rows}, "autorange": "reversed",
                                "type": "category"},
                         plot_bgcolor="#ffffff"))
