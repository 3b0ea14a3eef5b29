"""``LabelingGrid``: pages of thumbnails to select and relabel with the keyboard.

An anywidget (plain ES module ``static/grid.js``, no build step). Python owns the state:
which samples the grid covers, the filters, the page, the undo stack; the browser renders
the page it is sent and forwards selections and edits. Every edit is written through
:meth:`workbench.Project.annotate` (``review=True`` by default: the person at the grid
decides) and the page is re-read from the store afterwards, so what the grid shows is what
is stored. Undo appends: it restores the decision in force before the edit, or withdraws it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t

import workbench as wb
from widgets._base import STATIC
from widgets._base.palette import label_colors
from widgets._base.source import annotator_name, require_annotator, resolve_source
from workbench import LoupeError, ProjectError
from workbench.store.labels import latest_per_annotator, latest_review
from workbench.store.thumbnails import data_uris

_STATIC = STATIC
#: Filter value of samples without a label.
UNLABELLED = "(unlabelled)"
#: Most thumbnails one page may show.
MAX_PAGE_SIZE = 1000

EditCallback = Callable[[list[str], "str | None"], None]


class LabelingGrid(anywidget.AnyWidget):
    """Thumbnails of a project (or a view of it), paged, to select and relabel.

    Parameters
    ----------
    source : Project, str or FiftyOne view
        The project, its name, or a view of its dataset (the grid shows the view's samples).
    view : FiftyOne view, optional
        A view restricting ``source`` further.
    annotator : str, optional
        The name every edit is stored under. Without it the
        widget shows everything and refuses to write (no decision under a made-up name).
    page_size : int, default 60
        Thumbnails per page (1 to 1000).
    review : bool, default True
        Store edits as review decisions (they set the label); False stores votes that
        count in the majority over annotators.
    thumb_size : int, default 96
        Longest thumbnail side in pixels.
    sample_ids : sequence of str, optional
        Show these samples, in this order (what :meth:`show` does later).
    captions : mapping of sample id to str, optional
        A line of text under a thumbnail.
    heatmaps : ModelVersion, optional
        An anomaly version: a **heatmap** button (key h) lays its heatmap over every
        thumbnail in red (``mv.heatmap``, computed for the page shown, cached on disk).

    Keyboard (the grid has focus): 1–9 give the n-th class to the selection (or the
    focused image), arrows move, space toggles, u undoes, page up/down pages, Escape clears.
    """

    _esm = _STATIC / "grid.js"
    _css = _STATIC / "grid.css"

    items = t.List(t.Dict()).tag(sync=True)
    classes = t.List(t.Unicode()).tag(sync=True)
    colors = t.Dict().tag(sync=True)
    selected = t.List(t.Unicode()).tag(sync=True)
    page = t.Int(0).tag(sync=True)
    page_count = t.Int(1).tag(sync=True)
    total = t.Int(0).tag(sync=True)
    title = t.Unicode("").tag(sync=True)
    annotator = t.Unicode("").tag(sync=True)
    filters = t.Dict().tag(sync=True)
    filter_options = t.Dict().tag(sync=True)
    message = t.Unicode("").tag(sync=True)
    can_undo = t.Bool(False).tag(sync=True)
    thumb_size = t.Int(96).tag(sync=True)
    edits = t.Int(0).tag(sync=True)
    #: Whether an anomaly version's heatmaps can be laid over the thumbnails, and are.
    has_heatmaps = t.Bool(False).tag(sync=True)
    overlay = t.Bool(False).tag(sync=True)

    def __init__(self, source: Any, view: Any = None, *, annotator: str | None = None,
                 page_size: int = 60, review: bool = True, thumb_size: int = 96,
                 sample_ids: Sequence[str] | None = None,
                 captions: Mapping[str, str] | None = None, heatmaps: Any = None) -> None:
        if isinstance(page_size, bool) or not isinstance(page_size, int) \
                or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"LabelingGrid: page_size must be an integer from 1 to "
                             f"{MAX_PAGE_SIZE}, got {page_size!r}")
        annotator = annotator_name(annotator, "LabelingGrid")
        if heatmaps is not None and getattr(heatmaps, "task", None) != "anomaly":
            raise ValueError("LabelingGrid: heatmaps must be an anomaly version "
                             "(wb.train(p, task='anomaly')), got "
                             f"{getattr(heatmaps, 'name', type(heatmaps).__name__)!r}")
        self.heatmaps = heatmaps
        self._heat: dict[tuple[str, int], str] = {}
        self.project, view_ids = resolve_source(source, view)
        self.page_size = page_size
        self.review = bool(review)
        self._callbacks: list[EditCallback] = []
        self._undo: list[tuple[list[str], str, dict[str, str | None]]] = []
        self._uris: dict[tuple[str, int], str] = {}
        self._captions: dict[str, str] = {}
        self._ids: list[str] = []
        super().__init__(annotator=annotator, thumb_size=thumb_size,
                         has_heatmaps=heatmaps is not None)
        self._reload()
        self._scope = view_ids
        self.on_msg(self._on_front_message)
        self.observe(self._on_filters, names="filters")
        self.observe(lambda _: self._apply_filters(page=self.page), names="overlay")
        self.show(list(sample_ids) if sample_ids is not None else self._all_ids(),
                  captions=captions)

    # -- public API --------------------------------------------------------------------
    @property
    def sample_ids(self) -> list[str]:
        """Ids the grid shows now, over all pages, after filters."""
        return list(self._ids)

    def show(self, sample_ids: Sequence[str], *, title: str = "",
             captions: Mapping[str, str] | None = None) -> None:
        """Show these samples in this order (resets page, filters and selection).

        Ids outside the grid's project (or view) are left out.
        """
        known = set(self._frame.index)
        scope = set(self._scope) if self._scope is not None else None
        self._base = [sid for sid in dict.fromkeys(sample_ids)
                      if sid in known and (scope is None or sid in scope)]
        self._captions = dict(captions or {})
        with self.hold_trait_notifications():
            self.title = title
            self.selected = []
            self.message = ""
            self.filters = {}
            self.filter_options = self._options()
        self._apply_filters(page=0)

    def assign(self, label: str, sample_ids: Sequence[str] | None = None) -> None:
        """Give ``label`` to the selection (or to ``sample_ids``) under the grid's annotator.

        Raises
        ------
        ProjectError
            For an unknown label, no samples, or ids the project does not have; nothing is
            written then.
        """
        ids = list(dict.fromkeys(sample_ids if sample_ids is not None else self.selected))
        if not ids:
            raise ProjectError("LabelingGrid.assign: nothing selected; select images first")
        if label not in self.classes:
            raise ProjectError(f"label {label!r} is not a class of project "
                               f"{self.project.name!r} (classes: {', '.join(self.classes)})")
        before = self._in_force(ids)
        self.project.annotate(ids, label, annotator=self._writer(), review=self.review)
        self._undo.append((ids, label, before))
        self._after_edit(ids, label, f"{self._named(ids)} → {label}")

    def undo(self) -> None:
        """Undo the grid's last edit by appending the decision in force before it."""
        if not self._undo:
            self.message = "nothing to undo"
            return
        ids, label, before = self._undo.pop()
        by_label: dict[str | None, list[str]] = {}
        for sid in ids:
            by_label.setdefault(before.get(sid), []).append(sid)
        for previous, group in by_label.items():
            if previous is None:
                self.project.withdraw(group, annotator=self._writer(), review=self.review)
            else:
                self.project.annotate(group, previous, annotator=self._writer(),
                                      review=self.review)
        self._after_edit(ids, None, f"undid {label} on {self._named(ids)}")

    def _writer(self) -> str:
        """The annotator to store an edit under; refuses when the grid has none."""
        return require_annotator(self.annotator, "LabelingGrid")

    def veto(self, sample_ids: Sequence[str] | None = None) -> int:
        """Take the selected (or given) synthetic images out of the project for good.

        Only synthetic images can be vetoed (:func:`workbench.veto_synthetic`); the veto is
        recorded under the grid's annotator in the recipe's record. Not undoable.
        """
        ids = list(dict.fromkeys(sample_ids if sample_ids is not None else self.selected))
        if not ids:
            raise ProjectError("LabelingGrid.veto: nothing selected; select synthetic images")
        count = wb.veto_synthetic(self.project, ids, annotator=self._writer())
        gone = set(ids)
        self._base = [sid for sid in self._base if sid not in gone]
        self.selected = []
        self.refresh()
        self.message = f"vetoed {count} synthetic image{'s' if count != 1 else ''}"
        for callback in list(self._callbacks):
            callback(ids, None)
        return count

    def refresh(self) -> None:
        """Re-read labels, tags and issues from the store (another user's edits show up)."""
        self._reload()
        self.filter_options = self._options()
        self._apply_filters(page=self.page)

    def on_edit(self, callback: EditCallback) -> None:
        """Call ``callback(ids, label)`` after every stored edit (label None for an undo)."""
        self._callbacks.append(callback)

    def go_to(self, page: int) -> None:
        """Show page ``page`` (0-based; clamped to the pages there are)."""
        self._apply_filters(page=page)

    def filter(self, **filters: Any) -> None:
        """Filter by ``label=``, ``tag=``, ``issue=True``, ``quality=`` (an image-quality issue
        of :func:`workbench.image_issues`, e.g. ``"blurry"``, or ``"any"``) or any slice field
        (``lighting="dim"``).

        None or "" removes a filter. Unknown filter names raise :class:`ProjectError`.
        """
        merged = {**self.filters, **filters}
        self.filters = {k: v for k, v in merged.items() if v not in (None, "", False)}

    # -- state -------------------------------------------------------------------------
    def _reload(self) -> None:
        project = self.project
        frame = project.to_pandas().set_index("sample_id")
        frame["issue"] = False
        issue_key = _latest_issue_run(project)
        if issue_key is not None:
            ids, flags = project.dataset.values(["id", f"{issue_key}.is_issue"])
            flagged = {sid for sid, flag in zip(ids, flags, strict=True) if flag}
            frame["issue"] = frame.index.isin(flagged)
        frame["quality"] = [[] for _ in range(len(frame))]
        if project.dataset.has_sample_field("image_issues"):
            ids, found = project.dataset.values(["id", "image_issues.issues"])
            quality = {sid: list(v) for sid, v in zip(ids, found, strict=True) if v}
            frame["quality"] = [quality.get(sid, []) for sid in frame.index]
        self._frame = frame
        self._slice_fields = [f for f in project.slice_fields if f in frame.columns]
        classes = project.classes
        self.classes = classes
        self.colors = label_colors(classes)

    def _all_ids(self) -> list[str]:
        return list(self._scope) if self._scope is not None else list(self._frame.index)

    def _options(self) -> dict[str, Any]:
        frame = self._frame.loc[self._base]
        labels = [c for c in self.classes if (frame["label"] == c).any()]
        if frame["label"].isna().any():
            labels.append(UNLABELLED)
        tags = sorted({tag for tags in frame["tags"] for tag in (tags or [])})
        slices = {field: sorted(str(v) for v in frame[field].dropna().unique())
                  for field in self._slice_fields}
        quality = sorted({name for names in frame["quality"] for name in names})
        return {"label": labels, "tag": tags, "slices": slices,
                "issue": bool(frame["issue"].any()),
                "quality": ["any", *quality] if quality else []}

    def _on_filters(self, change: dict) -> None:
        self._apply_filters(page=0)

    def _apply_filters(self, *, page: int) -> None:
        frame = self._frame.loc[self._base]
        keep = frame.index.to_series().astype(bool)
        for name, value in self.filters.items():
            if name == "label":
                match = frame["label"].isna() if value == UNLABELLED else frame["label"] == value
            elif name == "tag":
                match = frame["tags"].map(lambda tags, v=value: v in (tags or []))
            elif name == "issue":
                match = frame["issue"]
            elif name == "quality":
                match = frame["quality"].map(lambda found, v=value: bool(found) and (
                    v == "any" or v in found))
            elif name in self._slice_fields:
                match = frame[name].astype(str) == str(value)
            else:
                self.message = (f"unknown filter {name!r}: use label, tag, issue, quality or "
                                f"a slice field ({', '.join(self._slice_fields) or 'none'})")
                raise ProjectError(self.message)
            keep &= match.fillna(False).astype(bool)
        self._ids = list(frame.index[keep.to_numpy()])
        count = max(1, math.ceil(len(self._ids) / self.page_size))
        page = min(max(0, int(page)), count - 1)
        with self.hold_trait_notifications():
            self.total = len(self._ids)
            self.page_count = count
            self.page = page
            self.items = self._page_items(page)
            visible = set(self._ids)
            self.selected = [sid for sid in self.selected if sid in visible]

    def _page_items(self, page: int) -> list[dict[str, Any]]:
        ids = self._ids[page * self.page_size:(page + 1) * self.page_size]
        rows = self._frame.loc[ids]
        uris = self._uris_of(ids, list(rows["filepath"]))
        heat = (self._heat_of(ids, list(rows["filepath"]))
                if self.overlay and self.heatmaps is not None else {})
        items = []
        for sid, row in zip(ids, rows.itertuples(), strict=True):
            label = row.label if isinstance(row.label, str) else None
            items.append({"id": sid, "src": uris[sid], "label": label,
                          "name": Path(row.filepath).name,
                          "caption": self._captions.get(sid, ""),
                          "tags": list(row.tags or []), "issue": bool(row.issue),
                          "heat": heat.get(sid, "")})
        return items

    def _heat_of(self, ids: list[str], paths: list[str]) -> dict[str, str]:
        """Red heatmap overlays at thumbnail size (transparent where normal), per id;
        "" for an image the version cannot read."""
        size = self.thumb_size
        missing = [(sid, path) for sid, path in zip(ids, paths, strict=True)
                   if (sid, size) not in self._heat]
        if missing:
            from widgets._base.heat_overlay import overlay_uri

            try:
                frame = self.heatmaps.predict([path for _, path in missing], progress=False)
            except ValueError:  # an unreadable image: none for this page
                frame = None
            for index, (sid, _) in enumerate(missing):
                self._heat[(sid, size)] = "" if frame is None else overlay_uri(
                    frame["heatmap"].iloc[index], size)
        return {sid: self._heat.get((sid, size), "") for sid in ids}

    def _uris_of(self, ids: list[str], paths: list[str]) -> dict[str, str]:
        """Data URIs of thumbnails, from memory, else the disk cache (built in threads);
        "" for an unreadable image (the page shows "missing" with the file name)."""
        size = self.thumb_size
        missing = [(sid, path) for sid, path in zip(ids, paths, strict=True)
                   if (sid, size) not in self._uris]
        if missing:
            found = data_uris([path for _, path in missing], size=size,
                              cache_dir=self.project.folder / "thumbnails")
            for (sid, _), uri in zip(missing, found, strict=True):
                if uri is not None:
                    self._uris[(sid, size)] = uri
        return {sid: self._uris.get((sid, size), "") for sid in ids}

    def _in_force(self, ids: list[str]) -> dict[str, str | None]:
        """Per sample, the grid annotator's decision in force (to restore on undo)."""
        histories = self.project.histories(ids)
        before: dict[str, str | None] = {}
        for sid in ids:
            history = histories.get(sid, [])
            if self.review:
                decision = latest_review(history)
                before[sid] = decision["label"] if decision is not None else None
            else:
                before[sid] = latest_per_annotator(history).get(self.annotator)
        return before

    def _named(self, ids: Sequence[str], most: int = 3) -> str:
        """The edited images by file name, so the status line says which ones changed."""
        names = [Path(str(self._frame.at[sid, "filepath"])).name if sid in self._frame.index
                 else sid for sid in ids[:most]]
        more = f" and {len(ids) - most} more" if len(ids) > most else ""
        noun = "image" if len(ids) == 1 else f"{len(ids)} images"
        return f"{noun} {', '.join(names)}{more}"

    def _after_edit(self, ids: list[str], label: str | None, message: str) -> None:
        values = self.project.dataset.select(ids).values(["id", "ground_truth.label", "tags"])
        for sid, stored, tags in zip(*values, strict=True):
            self._frame.at[sid, "label"] = stored
            self._frame.at[sid, "tags"] = tags
        with self.hold_trait_notifications():
            self.items = self._page_items(self.page)
            self.can_undo = bool(self._undo)
            self.message = message
            self.edits += 1
        for callback in list(self._callbacks):
            callback(list(ids), label)

    # -- messages from the browser -----------------------------------------------------
    def _on_front_message(self, _widget: Any, content: Mapping[str, Any],
                          _buffers: Sequence[bytes]) -> None:
        kind = content.get("type")
        try:
            if kind == "assign":
                self.assign(str(content.get("label")), content.get("ids") or None)
            elif kind == "undo":
                self.undo()
            elif kind == "page":
                self.go_to(int(content.get("page", 0)))
            elif kind == "refresh":
                self.refresh()
            elif kind == "veto":
                self.veto(content.get("ids") or None)
            else:
                self.message = f"unknown message {kind!r}"
        except (LoupeError, ValueError) as err:  # e.g. DatabaseUnavailableError: shown, not raised
            self.message = str(err)


def _latest_issue_run(project: Any) -> str | None:
    runs = project.analysis_runs()
    runs = runs[(runs["method"] == "label_issues")
                & runs["key"].map(project.dataset.has_sample_field)]
    return None if runs.empty else str(runs.sort_values("time")["key"].iloc[-1])
