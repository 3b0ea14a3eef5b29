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
from workbench.store import pages
from workbench.store.labels import latest_per_annotator, latest_review
from workbench.store.pages import UNLABELLED  # noqa: F401  (the grid's filter value)
from workbench.store.thumbnails import data_uris

_STATIC = STATIC
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
        self._ids: list[str] | None = None  # every id after filters, read when asked
        self._rows = pages.rows(self.project, [], None)  # the page shown
        self._scope = view_ids
        super().__init__(annotator=annotator, thumb_size=thumb_size,
                         has_heatmaps=heatmaps is not None)
        self._reload()
        self.on_msg(self._on_front_message)
        self.observe(self._on_filters, names="filters")
        self.observe(lambda _: self._apply_filters(page=self.page), names="overlay")
        self._show(None if sample_ids is None else list(sample_ids), captions=captions)

    # -- public API --------------------------------------------------------------------
    @property
    def sample_ids(self) -> list[str]:
        """Ids the grid shows now, over all pages, after filters."""
        if self._ids is None:
            self._ids = pages.matching_ids(self.project, self._pages, self._match)
        return list(self._ids)

    def show(self, sample_ids: Sequence[str], *, title: str = "",
             captions: Mapping[str, str] | None = None) -> None:
        """Show these samples in this order (resets page, filters and selection).

        Ids outside the grid's project (or view) are left out.
        """
        self._show(list(sample_ids), title=title, captions=captions)

    def _show(self, sample_ids: list[str] | None, *, title: str = "",
              captions: Mapping[str, str] | None = None) -> None:
        """``sample_ids`` None: the whole project (or view), paged by the database."""
        if sample_ids is None:
            base = None if self._scope is None else list(self._scope)
        else:
            scope = set(self._scope) if self._scope is not None else None
            wanted = [sid for sid in dict.fromkeys(sample_ids)
                      if scope is None or sid in scope]
            stored = set(pages.matching_ids(self.project, pages.Scope(tuple(wanted)), {
                "_id": {"$in": pages.object_ids(wanted)}})) if wanted else set()
            base = [sid for sid in wanted if sid in stored]
        self._base = base
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
        if self._base is not None:
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
        self.filter_options = self._options(fresh=True)
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
        self._issue_key = pages.latest_issue_run(project)
        self._slice_fields = project.slice_fields
        classes = project.classes
        self.classes = classes
        self.colors = label_colors(classes)

    @property
    def _pages(self) -> pages.Scope:
        return pages.Scope(None if self._base is None else tuple(self._base), self._issue_key)

    def _options(self, *, fresh: bool = False) -> dict[str, Any]:
        return pages.filter_options(self.project, self._pages, self.classes,
                                    self._slice_fields, fresh=fresh)

    def _on_filters(self, change: dict) -> None:
        self._apply_filters(page=0)

    def _apply_filters(self, *, page: int) -> None:
        try:
            self._match = pages.query(self.project, self._pages, self.filters,
                                      self._slice_fields)
        except ProjectError as error:
            self.message = str(error)
            raise
        self._ids = None
        total = pages.count(self.project, self._match)
        count = max(1, math.ceil(total / self.page_size))
        page = min(max(0, int(page)), count - 1)
        ids = pages.page_ids(self.project, self._pages, self._match, page, self.page_size)
        with self.hold_trait_notifications():
            self.total = total
            self.page_count = count
            self.page = page
            self.items = self._page_items(ids)
            if self.selected:
                chosen = {"_id": {"$in": pages.object_ids(self.selected)}}
                kept = set(pages.matching_ids(self.project, pages.Scope(), {
                    "$and": [self._match, chosen]} if self._match else chosen))
                self.selected = [sid for sid in self.selected if sid in kept]

    def _page_items(self, ids: list[str]) -> list[dict[str, Any]]:
        rows = pages.rows(self.project, ids, self._issue_key)
        self._rows = rows
        ids = list(rows.index)
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
        found = pages.rows(self.project, list(ids[:most]), None)
        names = [Path(str(found.at[sid, "filepath"])).name if sid in found.index else sid
                 for sid in ids[:most]]
        more = f" and {len(ids) - most} more" if len(ids) > most else ""
        noun = "image" if len(ids) == 1 else f"{len(ids)} images"
        return f"{noun} {', '.join(names)}{more}"

    def _after_edit(self, ids: list[str], label: str | None, message: str) -> None:
        with self.hold_trait_notifications():  # the same page, re-read: what is stored
            self.items = self._page_items(list(self._rows.index))
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

