"""``EmbeddingMap``: every image as a point on a 2-D map of its embedding; lasso to relabel.

Render-only: the coordinates come from :func:`workbench.analyse.embedding_map.embedding_map`
(t-SNE of the cached embeddings, cached itself). Points are coloured by current label, by
the version's held-out prediction, or by the version's stored label-issue flag. A lasso or
box selection, or a click on one point, opens those images in a
:class:`~widgets.label.grid.LabelingGrid`; after a relabel there the points are re-coloured from
the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import traitlets as t

import workbench as wb
from widgets._base.drill import chart_style, drill_grid, open_full_size
from widgets._base.palette import UNLABELLED_COLOR, color_of, label_colors
from widgets._base.source import resolve_source
from workbench import ProjectError
from workbench.analyse.embedding_map import embedding_map
from workbench.keywords import renamed
from workbench.text import escape_html, escape_plotly

if TYPE_CHECKING:
    from workbench.metrics.projection import Method
    from workbench.train.versions import ModelVersion

#: What the points can be coloured by.
COLOR_BY = ("label", "prediction", "issue")
#: Legend names of points without a label / prediction.
UNLABELLED = "(unlabelled)"
NO_PREDICTION = "(no prediction)"
#: Issue colouring: suspected label issue, and the rest.
ISSUE, NO_ISSUE = "label issue", "no issue"
ISSUE_COLORS = {ISSUE: "#C81E1E", NO_ISSUE: "#BAC4CE"}
#: Above this many points the traces use WebGL (``Scattergl``).
WEBGL_FROM = 3000
#: Points drawn at most (a seeded sample; suspected label issues always drawn): a browser
#: stays responsive, and a lasso on a dense map still catches hundreds of images.
MAX_POINTS = 20_000
_LEGEND_TITLES = {"label": "label", "issue": "label issues",
                  "prediction": "predicted<br><sub>✕ differs from the label</sub>"}


#: What a projection method is called in a sentence.
_METHOD_NAMES = {"tsne": "t-SNE", "pca": "PCA", "umap": "UMAP"}


class EmbeddingMap(widgets.VBox):
    """A lasso-able scatter of the project's images, and a grid of the selected ones.

    Parameters
    ----------
    source : Project, str or FiftyOne view
        The project, its name, or a view of it (only the view's samples are mapped).
    version : ModelVersion or str, optional
        A model version: enables colouring by its held-out predictions and by its stored
        label issues (``wb.label_issues(p, mv)``), and picks the embeddings it used.
    annotator : str, optional
        Name the grid's relabels are stored under (as review decisions). Without it the
        widget shows everything and refuses to write (no decision under a made-up name).
    method : {"auto", "tsne", "pca"}, default "auto"
        Projection (see :func:`workbench.metrics.projection.project_2d`).
    seed : int, default 0
    thumb_size, page_size : int
        Passed to the grid.
    max_points : int, default :data:`MAX_POINTS`
        Larger projects draw a seeded sample of this many points (every suspected label
        issue among them); the header says how many are drawn.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per mapped sample (:func:`workbench.analyse.embedding_map.embedding_map`), labels
        kept current after edits in the grid.
    drawn : numpy.ndarray of bool
        Which rows of :attr:`frame` are drawn (all of them up to ``max_points``).
    figure : plotly.graph_objects.FigureWidget
        The scatter: one trace per colour group (class, predicted class or issue flag; by
        prediction, a second trace of crosses per class holds the predictions that differ
        from the label); trace ``i`` shows the samples ``trace_ids[i]``.
    color_by : ipywidgets.ToggleButtons
        ``label``, ``prediction`` or ``issue`` (the last two need a version).
    grid : widgets.label.grid.LabelingGrid
        The selected samples.
    selected : list of str
        Sample ids last selected on the map (lasso, box, click or :meth:`select`).
    """

    selected = t.List(t.Unicode())

    @renamed(mv="version")
    def __init__(self, source: Any, version: ModelVersion | str | None = None, *,
                 annotator: str | None = None, method: Method = "auto", seed: int = 0,
                 thumb_size: int = 96, page_size: int = 60,
                 max_points: int = MAX_POINTS) -> None:
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
            raise ValueError(f"max_points must be a positive integer; got {max_points!r}.")
        project, scope = resolve_source(source)
        self.project, self.version = (project, None) if version is None \
            else wb.as_version(project, version)
        self.frame = embedding_map(self.project, self.version, method=method, seed=seed,
                                   sample_ids=scope)
        self.drawn = _drawn_rows(self.frame, max_points, seed)
        self.colors = label_colors(self.project.classes)
        self.trace_ids: list[list[str]] = []
        self._pending: dict[str, list[str]] = {"click": [], "selection": []}
        self.grid = drill_grid(
            self.project, annotator=annotator, thumb_size=thumb_size, page_size=page_size,
            hint="Lasso or box-select points on the map to see their images here")
        self.grid.on_edit(self._on_edit)
        without = "" if self.version is not None else " (needs a model version)"
        self.color_by = widgets.ToggleButtons(
            options=list(COLOR_BY), value="label", description="colour by",
            disabled=self.version is None,
            tooltips=["current label", f"held-out prediction{without}",
                      f"stored label issues{without}"],
            style={"button_width": "90px"})
        self.color_by.observe(self._on_color_by, names="value")
        # The figure is built with its traces: in Voila, changes made to a FigureWidget before
        # the page shows it can be lost (plotly's front-end model may miss replayed messages).
        traces, self.trace_ids = self._traces()
        self.figure = go.FigureWidget(data=traces, layout=go.Layout(
            height=520, dragmode="lasso", hovermode="closest", uirevision="loupe-map",
            margin={"l": 10, "r": 10, "t": 10, "b": 10}, plot_bgcolor="#ffffff",
            legend={"title": {"text": _LEGEND_TITLES["label"]}, "itemsizing": "constant"},
            xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"}))
        self._connect()
        self.header = widgets.HTML(self._header_html())
        style = chart_style()
        super().__init__(children=[style, self.header, self.color_by, self.figure, self.grid])
        self.add_class("loupe-model")
        self.add_class("loupe-embedding-map")
        self.lightbox = open_full_size(self, self.grid)

    # -- public API --------------------------------------------------------------------
    def select(self, sample_ids: Sequence[str]) -> list[str]:
        """Show these samples in the grid, highlight them on the map, set :attr:`selected`.

        Returns
        -------
        list of str
            The ids, in order, without repeats.

        Raises
        ------
        ProjectError
            For ids that are not on the map.
        """
        ids = list(dict.fromkeys(sample_ids))
        on_map = set(self.frame["sample_id"])
        missing = [sid for sid in ids if sid not in on_map]
        if missing:
            raise ProjectError(f"EmbeddingMap.select: {', '.join(missing[:5])} "
                               f"{'is' if len(missing) == 1 else 'are'} not on the map "
                               f"(project {self.project.name!r}).")
        self.selected = ids
        noun = "image" if len(ids) == 1 else "images"
        self.grid.show(ids, title=f"{len(ids)} {noun} selected on the map",
                       captions=self._captions(ids))
        self._highlight()
        return ids

    def refresh(self) -> None:
        """Re-read every mapped sample's label from the store and re-colour the points."""
        self._update_labels(list(self.frame["sample_id"]))
        self.grid.refresh()

    # -- drawing -----------------------------------------------------------------------
    def _groups(self) -> list[tuple[str, str, pd.Series]]:
        """(legend name, colour, row mask) per trace, for the current colouring."""
        frame, mode = self.frame[self.drawn], self.color_by.value
        if mode == "issue":
            flags = frame["is_issue"].astype(bool)
            return [(ISSUE, ISSUE_COLORS[ISSUE], flags),
                    (NO_ISSUE, ISSUE_COLORS[NO_ISSUE], ~flags)]
        column = "predicted" if mode == "prediction" else "label"
        missing = NO_PREDICTION if mode == "prediction" else UNLABELLED
        values = frame[column]
        names = list(self.colors) + sorted({v for v in values.dropna() if v not in self.colors})
        groups = [(name, color_of(name, self.colors), values == name) for name in names]
        return [*groups, (missing, UNLABELLED_COLOR, values.isna())]

    def _traces(self) -> tuple[list[go.Scatter], list[list[str]]]:
        """The traces for the current colouring (per non-empty colour group), and the
        sample ids of each."""
        mode = self.color_by.value
        scatter = go.Scattergl if self.drawn.sum() > WEBGL_FROM else go.Scatter
        frame = self.frame[self.drawn]
        hover = "<b>%{customdata[0]}</b><br>label: %{customdata[1]}"
        if self.version is not None:
            hover += "<br>predicted: %{customdata[2]}"
        traces, trace_ids = [], []
        for name, color, mask in self._groups():
            rows = frame[mask.to_numpy(dtype=bool)]
            parts = [(rows, "circle", True)]
            if mode == "prediction":  # wrong predictions as crosses, in the class's legend entry
                wrong = ~rows["correct"].fillna(True).to_numpy(dtype=bool)
                parts = [(rows[~wrong], "circle", True), (rows[wrong], "x", not (~wrong).any())]
            for part, symbol, legend in parts:
                if part.empty:
                    continue
                custom = np.column_stack([part["filepath"].map(lambda f: Path(f).name),
                                          part["label"].fillna(UNLABELLED),
                                          part["predicted"].fillna("—")]).astype(str)
                custom = np.vectorize(escape_plotly, otypes=[str])(custom)
                traces.append(scatter(
                    x=part["x"].to_numpy(), y=part["y"].to_numpy(), mode="markers",
                    name=escape_plotly(name),
                    legendgroup=name, showlegend=legend, customdata=custom,
                    hovertemplate=hover + "<extra>%{fullData.name}</extra>",
                    marker={"color": color, "size": 8, "symbol": symbol,
                            "line": {"width": 0.5, "color": "#ffffff"}},
                    unselected={"marker": {"opacity": 0.25}}))
                trace_ids.append(list(part["sample_id"]))
        return traces, trace_ids

    def _connect(self) -> None:
        self._pending = {"click": [], "selection": []}
        for trace in self.figure.data:
            trace.on_click(self._on_click)
            trace.on_selection(self._on_selection)

    def _draw(self) -> None:
        """Replace the traces (after a colouring change or an edit) and re-highlight."""
        traces, self.trace_ids = self._traces()
        self.figure.data = []
        self.figure.add_traces(traces)
        self.figure.layout.legend.title.text = _LEGEND_TITLES[self.color_by.value]
        self._connect()
        self._highlight()

    def _highlight(self) -> None:
        chosen = set(self.selected)
        with self.figure.batch_update():
            for trace, ids in zip(self.figure.data, self.trace_ids, strict=True):
                trace.selectedpoints = ([i for i, sid in enumerate(ids) if sid in chosen]
                                        if chosen else None)

    def _header_html(self) -> str:
        attrs = self.frame.attrs
        version = (f" · model {escape_html(self.version.name)}"
                   if self.version is not None else "")
        projection = str(attrs.get("projection", attrs.get("method")))
        chosen = " (chosen automatically)" if attrs.get("method") == "auto" else ""
        drawn = int(self.drawn.sum())
        sampled = "" if drawn == len(self.frame) else \
            f" · {drawn:,} drawn (a seeded sample; every suspected label issue among them)"
        return (f'<div class="loupe-model-header"><h3>Embedding map</h3>'
                f'<span class="loupe-model-sub">{len(self.frame)} images · '
                f"{escape_html(_METHOD_NAMES.get(projection, 'A 2-D projection'))} "
                f"of the {escape_html(attrs['backbone'])} embeddings at {attrs['image_size']} px"
                f"{chosen}{version}{sampled}</span> "
                '<span class="loupe-model-hint">lasso or box-select points (or click one) to '
                "review their images below</span></div>")

    def _captions(self, ids: list[str]) -> dict[str, str]:
        if self.version is None:
            return {}
        rows = self.frame.set_index("sample_id").loc[ids]
        return {sid: f"pred {row.predicted} · {row.confidence:.0%}"
                for sid, row in zip(ids, rows.itertuples(), strict=True)
                if isinstance(row.predicted, str)}

    def _update_labels(self, ids: list[str]) -> None:
        found = dict(zip(*self.project.dataset.select(ids).values(["id", "ground_truth.label"]),
                         strict=True))
        frame = self.frame
        rows = frame["sample_id"].isin(found)
        frame.loc[rows, "label"] = frame.loc[rows, "sample_id"].map(found)
        known = frame["label"].notna() & frame["predicted"].notna()
        correct = pd.Series(pd.NA, index=frame.index, dtype="boolean")
        correct[known] = (frame["label"] == frame["predicted"])[known]
        frame["correct"] = correct
        self._draw()

    # -- events ------------------------------------------------------------------------
    def _collect(self, kind: str, points: Any) -> list[str] | None:
        """Gather one event's points over all traces (plotly calls each trace in turn);
        the ids once the last trace has reported, else None."""
        index = points.trace_index
        self._pending[kind] += [self.trace_ids[index][i] for i in points.point_inds]
        if index < len(self.trace_ids) - 1:
            return None
        ids, self._pending[kind] = self._pending[kind], []
        return ids

    def _on_selection(self, _trace: Any, points: Any, _selector: Any) -> None:
        ids = self._collect("selection", points)
        if ids is not None:
            self.select(ids)

    def _on_click(self, _trace: Any, points: Any, _state: Any) -> None:
        ids = self._collect("click", points)
        if ids:
            self.select(ids[:1])

    def _on_color_by(self, _change: dict) -> None:
        self._draw()

    def _on_edit(self, ids: list[str], _label: str | None) -> None:
        self._update_labels(ids)


def _drawn_rows(frame: pd.DataFrame, max_points: int, seed: int) -> np.ndarray:
    """Rows to draw: all up to ``max_points``, else every issue and a seeded sample."""
    drawn = np.ones(len(frame), dtype=bool)
    if len(frame) <= max_points:
        return drawn
    issues = frame["is_issue"].fillna(False).to_numpy(dtype=bool) if "is_issue" in frame \
        else np.zeros(len(frame), dtype=bool)
    rest = np.flatnonzero(~issues)
    room = max(0, max_points - int(issues.sum()))
    drawn[:] = issues
    drawn[np.random.default_rng(seed).choice(rest, min(room, len(rest)), replace=False)] = True
    return drawn
