"""``LabelBook``: the project's labelling guide, one card per class, edited in place.

Render-only: what a card shows comes from :func:`workbench.store.labelbook.label_book`; every
edit goes through :mod:`workbench.store.labelbook` (``define_label``, ``add_example``,
``remove_example``) under the widget's author and is re-read from the store afterwards.
Suggested examples come from :func:`workbench.improve.examples.suggest_examples`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd
import traitlets as t
from PIL import UnidentifiedImageError

import workbench as wb
from widgets._base import STATIC
from widgets._base.palette import color_of, label_colors
from widgets._base.source import annotator_name, require_annotator, resolve_source
from workbench import (
    ProjectError,
    add_example,
    define_label,
    label_book,
    remove_example,
    suggest_examples,
)
from workbench.store.thumbnails import thumbnail_data_uri
from workbench.text import escape_html

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion

CSS = STATIC / "label_book.css"


class LabelBook(widgets.VBox):
    """One card per class: colour, name, count, definition, canonical example images.

    Parameters
    ----------
    source : Project, str or FiftyOne view
        The project (a view stands for its whole project: the book is the project's).
    author, annotator : str, optional
        The name every edit is stored under (``annotator`` is the name the other widgets
        use; ``author`` the earlier one). Without it the book is shown read-only: an edit
        is refused with a message asking for a name.
    version : ModelVersion or str, optional
        Enables the "suggest" button: confident, correct held-out predictions of the class.
    thumb_size : int, default 72
        Thumbnail side in pixels.
    n_suggest : int, default 4
        Suggestions per click.

    Attributes
    ----------
    book : pandas.DataFrame
        The book as last read (:func:`workbench.store.labelbook.label_book`).
    cards : dict of str to ipywidgets.VBox
        Per class its card; ``cards[label].definition`` (Textarea), ``.save``,
        ``.add_selected``, ``.suggest`` (Buttons, ``suggest`` None without a version),
        ``.examples`` / ``.suggestions`` (boxes of thumbnails with a button each),
        ``.edited`` and ``.message`` (HTML).
    candidates : list of str
        Sample ids the "add selected" buttons add (set it, or :meth:`follow` a widget's
        ``selected``). The buttons appear once there is a selection to take: after
        :meth:`follow`, or once ``candidates`` is set.
    suggestions : dict of str to list of str
        Per class, the suggestions shown.
    selected : list of str
        Every canonical example, in class order.
    """

    candidates = t.List(t.Unicode())
    selected = t.List(t.Unicode())

    def __init__(self, source: Any, *, author: str | None = None,
                 version: ModelVersion | str | None = None, thumb_size: int = 72,
                 n_suggest: int = 4, annotator: str | None = None) -> None:
        if author is not None and annotator is not None and author != annotator:
            raise ProjectError(f"LabelBook: author={author!r} and annotator={annotator!r} "
                               "name two people; pass one (annotator=)")
        writer = annotator_name(annotator, "LabelBook") if annotator is not None \
            else annotator_name(author, "LabelBook", argument="author")
        for name, value in (("thumb_size", thumb_size), ("n_suggest", n_suggest)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LabelBook: {name} must be a positive integer, got {value!r}")
        project, _ = resolve_source(source)
        self.project, self.version = (project, None) if version is None \
            else wb.as_version(project, version)
        self.author = writer
        self.thumb_size = thumb_size
        self.n_suggest = n_suggest
        self.cards: dict[str, _Card] = {}
        self.suggestions: dict[str, list[str]] = {}
        self.has_selection_source = False
        self._paths: dict[str, str] = {}
        self._uris: dict[str, str] = {}
        self.header = widgets.HTML()
        self.body = widgets.VBox()
        style = widgets.HTML(f"<style>{CSS.read_text(encoding='utf-8')}</style>")
        super().__init__(children=[style, self.header, self.body])
        self.add_class("loupe-label-book")
        self.observe(self._on_candidates, names="candidates")
        self.refresh()

    # -- public API --------------------------------------------------------------------
    def _writer(self) -> str:
        """The name to store an edit under; refuses when the book was opened without one."""
        return require_annotator(self.author, "LabelBook")

    def refresh(self) -> None:
        """Re-read the book (and the class list) and redraw every card."""
        self.book = label_book(self.project)
        colors = label_colors(list(self.book["label"]))
        for row in self.book.itertuples(index=False):
            if row.label not in self.cards:
                self.cards[row.label] = _Card(self, row.label, color_of(row.label, colors))
            self.cards[row.label].show(row, reset_text=True)
        self.body.children = [self.cards[label] for label in self.book["label"]]
        self._after_read()

    def save_definition(self, label: str, text: str | None = None) -> None:
        """Store the card's definition (or ``text``) for ``label``."""
        card = self._card(label)
        value = card.definition.value if text is None else text
        define_label(self.project, label, value, author=self._writer())
        card.definition.value = value.strip()
        self._reload_card(label, "definition saved")

    def add_examples(self, label: str, sample_ids: Sequence[str]) -> list[str]:
        """Add samples as canonical examples of ``label``; returns those added.

        Samples that cannot be examples (another label now, not in the project) are left
        out and named in the card's message.
        """
        self._card(label)
        added, refused = [], []
        for sid in dict.fromkeys(sample_ids):
            try:
                add_example(self.project, label, sid, author=self._writer())
            except ProjectError as err:
                refused.append(str(err))
            else:
                added.append(sid)
        if label in self.suggestions:
            self.suggestions[label] = [s for s in self.suggestions[label] if s not in added]
        note = f"added {len(added)} example{'s' if len(added) != 1 else ''}"
        if refused:
            note += f"; refused {len(refused)}: " + " · ".join(refused[:3])
        self._reload_card(label, note, error=bool(refused))
        return added

    def remove_example(self, label: str, sample_id: str) -> None:
        """Remove a canonical example of ``label`` (its history is kept)."""
        self._card(label)
        remove_example(self.project, label, sample_id, author=self._writer())
        self._reload_card(label, "example removed")

    def suggest(self, label: str) -> list[str]:
        """Fill the card's suggestion strip: confident, correct held-out predictions of
        ``label`` that are not examples yet (needs a version)."""
        card = self._card(label)
        if self.version is None:
            raise ProjectError("LabelBook.suggest needs a model version: "
                               "LabelBook(p, version='v2')")
        frame = suggest_examples(self.project, self.version, label, n=self.n_suggest)
        self._paths.update(zip(frame["sample_id"], frame["filepath"], strict=True))
        self.suggestions[label] = list(frame["sample_id"])
        card.show_suggestions(self.suggestions[label])
        card.note(f"{len(frame)} suggestion{'s' if len(frame) != 1 else ''} from "
                  f"{self.version.name}" if len(frame) else
                  f"no more confident, correct predictions of {label} in {self.version.name}")
        return list(self.suggestions[label])

    def follow(self, widget: Any) -> None:
        """Take :attr:`candidates` from another widget's ``selected`` (a grid, the map)."""
        self.has_selection_source = True
        t.dlink((widget, "selected"), (self, "candidates"))
        self._on_candidates({})

    # -- helpers -----------------------------------------------------------------------
    def _card(self, label: str) -> _Card:
        if label not in self.cards:
            self.refresh()  # a class added since the book was drawn
        if label not in self.cards:
            raise ProjectError(f"label {label!r} is not a class of project "
                               f"{self.project.name!r} (classes: {', '.join(self.cards)}).")
        return self.cards[label]

    def _reload_card(self, label: str, note: str, *, error: bool = False) -> None:
        self.book = label_book(self.project)
        row = next(r for r in self.book.itertuples(index=False) if r.label == label)
        card = self.cards[label]
        card.show(row, reset_text=False)
        card.show_suggestions(self.suggestions.get(label, []))
        card.note(note, error=error)
        self._after_read()

    def _after_read(self) -> None:
        self.selected = [sid for ids in self.book["examples"] for sid in ids]
        edited = self.book.dropna(subset=["updated_at"])
        last = ""
        if not edited.empty:
            row = edited.loc[edited["updated_at"].idxmax()]
            last = (f" · last edited by {escape_html(str(row.updated_by))} at "
                    f"{_when(row.updated_at)} ({escape_html(row.label)})")
        n_defined = int((self.book["definition"] != "").sum())
        self.header.value = (
            f'<div class="loupe-book-title"><h3>Label book · {escape_html(self.project.name)}'
            f'</h3><span class="loupe-book-sub">{n_defined} of {len(self.book)} classes '
            f"defined · {len(self.selected)} canonical examples{last}</span></div>")

    def _on_candidates(self, _change: dict) -> None:
        self.has_selection_source = self.has_selection_source or bool(self.candidates)
        for card in self.cards.values():
            card.update_candidates(len(self.candidates))

    def _thumb(self, sample_id: str, *, stale: str | None = None) -> str:
        side = self.thumb_size
        if sample_id not in self._paths:
            ids, paths = self.project.dataset.select([sample_id]).values(["id", "filepath"])
            self._paths.update(zip(ids, paths, strict=True))
        path = self._paths.get(sample_id)
        if path is None:
            return (f'<div class="loupe-book-missing" style="width:{side}px;height:{side}px" '
                    f'title="{escape_html(sample_id)} was deleted">deleted</div>')
        if sample_id not in self._uris:
            try:
                self._uris[sample_id] = thumbnail_data_uri(
                    path, size=side, cache_dir=self.project.folder / "thumbnails")
            except (OSError, UnidentifiedImageError, ValueError) as err:
                reason = escape_html(f"{Path(path).name}: cannot read ({err})")
                return (f'<div class="loupe-book-missing" title="{reason}" '
                        f'style="width:{side}px;height:{side}px">missing</div>')
        title = Path(path).name + (f" — {stale}" if stale else "")
        extra = " loupe-stale" if stale else ""
        return (f'<img class="loupe-book-thumb{extra}" src="{self._uris[sample_id]}" '
                f'title="{escape_html(title)}" '
                f'style="width:{side}px;height:{side}px">')


class _Card(widgets.VBox):
    """One class of the book; its buttons call back into the :class:`LabelBook`."""

    def __init__(self, owner: LabelBook, label: str, color: str) -> None:
        self.owner, self.label, self.color = owner, label, color
        self.stored = ""
        self.head = widgets.HTML()
        self.definition = widgets.Textarea(
            placeholder=f"What counts as {label}? Borderline cases, what it is not…",
            layout=widgets.Layout(width="100%", height="64px"))
        self.save = widgets.Button(description="Save", icon="save",
                                   tooltip=f"store this definition of {label}",
                                   layout=widgets.Layout(width="80px"))
        self.edited = widgets.HTML()
        self.examples = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.add_selected = widgets.Button(description="add selected (0)", icon="plus",
                                           disabled=True,
                                           tooltip=f"add the selected images as examples of "
                                                   f"{label}")
        self.suggest = None
        if owner.version is not None:
            self.suggest = widgets.Button(description="suggest", icon="lightbulb-o",
                                          tooltip=f"confident, correct predictions of {label} "
                                                  f"by {owner.version.name}")
            self.suggest.on_click(lambda _b: self._guard(owner.suggest, label))
        self.suggestions = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.message = widgets.HTML()
        self.empty_hint = widgets.HTML()
        self.save.on_click(lambda _b: self._guard(owner.save_definition, label))
        self.add_selected.on_click(
            lambda _b: self._guard(owner.add_examples, label, list(owner.candidates)))
        self.definition.observe(self._on_text, names="value")
        buttons = [self.add_selected] + ([self.suggest] if self.suggest else [])
        super().__init__(children=[
            self.head, widgets.HBox([self.definition, self.save]), self.edited,
            widgets.HTML('<div class="loupe-book-section">canonical examples</div>'),
            self.examples, widgets.HBox(buttons), self.suggestions, self.message])
        self.add_class("loupe-book-card")
        self.update_candidates(len(owner.candidates))

    def show(self, row: Any, *, reset_text: bool) -> None:
        """Draw the stored state of the class (``row`` of :func:`label_book`)."""
        self.stored = row.definition
        if reset_text:
            self.definition.value = row.definition
        self._on_text(None)
        n = len(row.examples)
        self.head.value = (
            f'<div class="loupe-book-head"><span class="loupe-swatch" '
            f'style="background:{self.color}"></span><span class="loupe-book-name">'
            f'{escape_html(self.label)}</span><span class="loupe-book-count">'
            f"{row.n_labelled} labelled · {n} example{'s' if n != 1 else ''}</span></div>")
        self.edited.value = (
            f'<span class="loupe-book-edited">last edited by {escape_html(str(row.updated_by))}'
            f" at {_when(row.updated_at)}</span>" if isinstance(row.updated_by, str) else
            '<span class="loupe-book-edited">not edited yet</span>')
        stale = set(row.stale_examples)
        cells = [self._thumb_cell(sid, "✕", f"remove from the examples of {self.label}",
                                  self.owner.remove_example,
                                  stale="relabelled or deleted since chosen"
                                  if sid in stale else None)
                 for sid in row.examples]
        self.examples.children = cells or [self.empty_hint]

    def show_suggestions(self, ids: list[str]) -> None:
        self.suggestions.children = [
            self._thumb_cell(sid, "+ add", f"add as an example of {self.label}",
                             lambda label, s: self.owner.add_examples(label, [s]))
            for sid in ids]

    def update_candidates(self, n: int) -> None:
        """Show how many images are selected; no selection source: no button at all."""
        self.add_selected.description = f"add selected ({n})"
        self.add_selected.disabled = n == 0
        self.add_selected.layout.display = "" if self.owner.has_selection_source else "none"
        how = ("select images and click “add selected”" if self.owner.has_selection_source
               else "click “suggest” for the model's most confident correct images"
               if self.suggest is not None else "open the book with a model version to get "
               "suggestions")
        self.empty_hint.value = f'<span class="loupe-empty">no examples yet: {how}</span>'

    def note(self, text: str, *, error: bool = False) -> None:
        kind = "" if error else " loupe-ok"
        self.message.value = f'<span class="loupe-book-message{kind}">{escape_html(text)}</span>'

    def _thumb_cell(self, sid: str, caption: str, tooltip: str, action: Any, *,
                    stale: str | None = None) -> widgets.VBox:
        button = widgets.Button(description=caption, tooltip=tooltip,
                                layout=widgets.Layout(width=f"{self.owner.thumb_size + 4}px"))
        button.on_click(lambda _b: self._guard(action, self.label, sid))
        cell = widgets.VBox([widgets.HTML(self.owner._thumb(sid, stale=stale)), button])
        cell.sample_id = sid
        cell.button = button
        return cell

    def _guard(self, action: Any, *args: Any) -> None:
        """Run a button's action; a refused edit becomes the card's message."""
        try:
            action(*args)
        except (ProjectError, ValueError) as err:
            self.note(str(err), error=True)

    def _on_text(self, _change: dict | None) -> None:
        dirty = self.definition.value.strip() != self.stored
        self.save.button_style = "primary" if dirty else ""


def _when(stamp: Any) -> str:
    if stamp is None or pd.isna(stamp):
        return "—"
    return pd.Timestamp(stamp).tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC")
