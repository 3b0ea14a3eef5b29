"""``ReviewQueue``: one image at a time, decided with one key.

The base of :class:`~widgets.label.issue_queue.IssueQueue` and
:class:`~widgets.label.agreement_review.AgreementReview`. A subclass builds the *cards* (one per
sample to review: the given label, a suggested label, why, each annotator's vote); this
class shows them through the ES module ``static/review.js`` and turns a decision into a
review entry of the sample's history::

    accept()        the suggested label     (keys a, Enter)
    keep()          the given label          (key k)
    choose(label)   any class                (keys 1–9)
    move(index)     another card             (keys ←, →, a click on the strip)
    undo()          the last decision        (key u)

Every decision is ``p.annotate(sid, label, annotator=..., review=True)``; undo appends the
review that was in force before (or a review withdrawal), so nothing is ever deleted. The
browser only sends messages (``{"type": "decide" | "undo" | "move", ...}``); Python answers
by updating the synced traits. An error (an unknown label, say) is shown in the widget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t
from PIL import UnidentifiedImageError

from widgets._base import STATIC
from widgets._base.palette import label_colors
from widgets._base.source import annotator_name, require_annotator, resolve_source, run_message
from workbench import ProjectError
from workbench.store.labels import latest_per_annotator, latest_review
from workbench.store.thumbnails import thumbnail_data_uri

_STATIC = STATIC
#: The decisions a ``decide`` message may carry.
ACTIONS = ("accept", "keep", "label")

EditCallback = Callable[[list[str], "str | None"], None]


class ReviewQueue(anywidget.AnyWidget):
    """A queue of review cards decided with the keyboard (base class).

    Subclasses implement :meth:`_load_cards`, returning one dict per sample to review, in
    the order to review them, with keys ``sample_id``, ``filepath``, ``given`` and
    ``suggested`` (labels or None) and optionally ``probability`` (float, named by
    ``probability_name``), ``score`` (float, named by ``score_name``), ``reason`` (str) and
    ``annotators`` (list of ``{"annotator", "label"}``; filled from the history when
    missing). Samples with a review decision in force are left out by :meth:`refresh`.

    Parameters
    ----------
    source : Project, str or FiftyOne view
        The project, its name, or a view of its dataset (only its samples are queued).
    annotator : str, optional
        The name every decision is stored under. Without it the
        widget shows everything and refuses to write (no decision under a made-up name).
    image_size : int, default 256
        Longest side of the current card's image, in pixels.
    thumb_size : int, default 64
        Longest side of the strip's thumbnails, in pixels.
    strip_size : int, default 8
        How many of the next cards the strip shows.

    Attributes
    ----------
    cards : list of dict
        The queue (synced; JSON-safe). Rebuilt by :meth:`refresh` only.
    index : int
        Position of the current card.
    decisions : dict of str to dict
        Sample id → ``{"action", "label"}`` of the decisions taken in this queue.
    decided : int
        How many cards are decided.
    selected : list of str
        The current card's sample id (empty when the queue is empty).
    message, error : str
        What the last action did; why it failed (empty when it did not).
    """

    _esm = _STATIC / "review.js"
    _css = _STATIC / "review.css"

    title = t.Unicode("").tag(sync=True)
    cards = t.List(t.Dict()).tag(sync=True)
    index = t.Int(0).tag(sync=True)
    classes = t.List(t.Unicode()).tag(sync=True)
    colors = t.Dict().tag(sync=True)
    decisions = t.Dict().tag(sync=True)
    decided = t.Int(0).tag(sync=True)
    annotator = t.Unicode("").tag(sync=True)
    image = t.Unicode("").tag(sync=True)
    image_error = t.Unicode("").tag(sync=True)
    strip = t.List(t.Dict()).tag(sync=True)
    selected = t.List(t.Unicode()).tag(sync=True)
    message = t.Unicode("").tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    can_undo = t.Bool(False).tag(sync=True)
    #: Card key → "decided by … meanwhile" for cards someone else decided while this queue
    #: was open (checked when the page polls, every few seconds).
    taken = t.Dict().tag(sync=True)
    image_size = t.Int(256).tag(sync=True)
    thumb_size = t.Int(64).tag(sync=True)
    #: An anomaly version's heatmap over the current image (key h shows and hides it).
    heat = t.Unicode("").tag(sync=True)
    has_heatmaps = t.Bool(False).tag(sync=True)
    overlay = t.Bool(True).tag(sync=True)
    #: The anomaly version whose heatmaps are laid over the images (a subclass sets it).
    heatmaps: Any = None

    def __init__(self, source: Any, *, annotator: str | None = None, image_size: int = 256,
                 thumb_size: int = 64, strip_size: int = 8) -> None:
        name = type(self).__name__
        for argument, value in (("image_size", image_size), ("thumb_size", thumb_size),
                                ("strip_size", strip_size)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 2048:
                raise ValueError(f"{name}: {argument} must be an integer from 1 to 2048, "
                                 f"got {value!r}")
        annotator = annotator_name(annotator, name)
        self.project, self._scope = resolve_source(source)
        self.strip_size = strip_size
        #: (card key, the review in force before the decision, the decision it replaced).
        self._undo: list[tuple[str, Any, dict | None]] = []
        self._callbacks: list[EditCallback] = []
        self._handlers: dict[str, Callable[[Mapping], None]] = {
            "decide": self._on_decide, "undo": lambda _: self.undo(),
            "move": lambda content: self.move(content.get("index")),
            "poll": lambda _: self.check_others(),
        }
        super().__init__(annotator=annotator, image_size=image_size,
                         thumb_size=thumb_size)
        self.on_msg(self._on_front_message)
        self.observe(lambda _: self._show(), names=["index", "overlay"])
        self.refresh()

    # -- public API --------------------------------------------------------------------
    @property
    def current(self) -> dict | None:
        """The current card (None when the queue is empty)."""
        return self.cards[self.index] if self.cards else None

    @property
    def sample_ids(self) -> list[str]:
        """The queued sample ids, in review order."""
        return [card["sample_id"] for card in self.cards]

    def refresh(self) -> None:
        """Rebuild the queue from the store (decided samples drop out; undo is kept)."""
        classes = self.project.classes
        cards = self._load_cards()
        if self._scope is not None:
            scope = set(self._scope)
            cards = [card for card in cards if card["sample_id"] in scope]
        histories = self.project.histories([c["sample_id"] for c in cards])
        cards = [_card(card, histories.get(card["sample_id"], [])) for card in cards
                 if latest_review(histories.get(card["sample_id"], [])) is None]
        self._publish(cards, classes)

    def check_others(self) -> dict[str, str]:
        """Mark the cards another person decided since the queue was built (their review
        in force is not this queue's); returns the marks (card key → what they decided)."""
        mine = set(self.decisions)
        open_ = [card for card in self.cards if card["sample_id"] not in mine]
        marks = self._decided_by_others(open_)
        if marks != self.taken:
            new = len(set(marks) - set(self.taken))
            with self.hold_trait_notifications():
                self.taken = marks
                if new:
                    who = sorted({text.split(" decided")[0] for text in marks.values()})
                    self.message = (f"{', '.join(who)} decided {len(marks)} card"
                                    f"{'s' if len(marks) != 1 else ''} of this queue meanwhile "
                                    "(marked; refresh to drop them)")
        return marks

    def _decided_by_others(self, cards: list[dict]) -> dict[str, str]:
        """Card key → "<who> decided <label>" for cards with someone else's review."""
        histories = self.project.histories([card["sample_id"] for card in cards])
        marks = {}
        for card in cards:
            review = latest_review(histories.get(card["sample_id"], []))
            if review is not None and review["annotator"] != self.annotator:
                marks[card["sample_id"]] = f"{review['annotator']} decided {review['label']}"
        return marks

    def _publish(self, cards: list[dict], classes: list[str], **traits: Any) -> None:
        """Show a new queue from its first card (``traits``: more traits to set with it)."""
        with self.hold_trait_notifications():
            self.classes = classes
            self.colors = label_colors(classes)
            self.cards = cards
            self.decisions = {}
            self.decided = 0
            self.taken = {}
            self.index = 0
            self.error = ""
            self.message = "" if cards else "nothing to review"
            for name, value in traits.items():
                setattr(self, name, value)
        self._show()

    def accept(self, *, sample_id: str | None = None) -> str:
        """Store the card's suggested label as a review decision; returns the label.

        ``sample_id`` names the card (default: the current one).
        """
        card = self._card_of(sample_id)
        if card["suggested"] is None:
            raise ProjectError(f"sample {card['sample_id']} has no suggested label to "
                               "accept; keep it or choose a class")
        if card["suggested"] not in self.classes:  # an anomaly version's "anomaly"
            raise ProjectError(f"{card['suggested']!r} is not a class of project "
                               f"{self.project.name!r}: the model cannot say which defect it "
                               "is; choose its class (keys 1–9) or keep the given label (k)")
        return self._decide(card, card["suggested"], "accept")

    def keep(self, *, sample_id: str | None = None) -> str:
        """Store the card's given label as a review decision (it leaves the queue)."""
        card = self._card_of(sample_id)
        if card["given"] is None:
            raise ProjectError(f"sample {card['sample_id']} has no given label to keep; "
                               "accept the suggestion or choose a class")
        return self._decide(card, card["given"], "keep")

    def choose(self, label: str, *, sample_id: str | None = None) -> str:
        """Store ``label`` (a class of the project) as the card's review decision."""
        card = self._card_of(sample_id)
        if label not in self.classes:
            raise ProjectError(f"label {label!r} is not a class of project "
                               f"{self.project.name!r} (classes: {', '.join(self.classes)})")
        return self._decide(card, label, "label")

    def move(self, index: int) -> None:
        """Make card ``index`` (0-based) the current one."""
        if isinstance(index, bool) or not isinstance(index, int) \
                or not 0 <= index < len(self.cards):
            raise ValueError(f"move: index must be an integer from 0 to {len(self.cards) - 1}"
                             f", got {index!r}")
        self.error = ""
        self.index = index

    def undo(self) -> str | None:
        """Undo the last decision: re-append the review in force before it, or withdraw.

        Returns the sample id undone (None when there was nothing to undo).
        """
        if not self._undo:
            self.message = "nothing to undo"
            return None
        key, previous, shown = self._undo[-1]
        restored = self._restore(key, previous)
        self._undo.pop()
        position = self._position(key)
        decisions = {k: v for k, v in self.decisions.items() if k != key}
        if shown is not None and position is not None:
            decisions[key] = shown
        with self.hold_trait_notifications():
            self.decisions = decisions
            self.decided = len(decisions)
            self.can_undo = bool(self._undo)
            self.error = ""
            self.message = f"undone: {_name(self.cards, position, key)} is back to {restored}"
            if position is not None:
                self.index = position
        self._notify([self._sample_of(key)], None)
        return key

    def _restore(self, sample_id: str, previous: Any) -> str:
        """Re-append the review ``previous`` was (None: withdraw the review); returns what
        the sample is back to, for the message."""
        if previous is None:
            self.project.withdraw(sample_id, annotator=self._writer(), review=True)
            return "its votes"
        self.project.annotate(sample_id, previous, annotator=self._writer(), review=True)
        return previous

    def _writer(self) -> str:
        """The annotator to store a decision under; refuses when the queue has none."""
        return require_annotator(self.annotator, type(self).__name__)

    def _sample_of(self, key: str) -> str:
        """The sample id of a card's key (the same here; an issue id in subclasses)."""
        return key

    def on_edit(self, callback: EditCallback) -> None:
        """Call ``callback(ids, label)`` after every stored decision (label None: an undo)."""
        self._callbacks.append(callback)

    # -- subclass hook -----------------------------------------------------------------
    def _load_cards(self) -> list[dict]:
        raise NotImplementedError(f"{type(self).__name__} must implement _load_cards(); use "
                                  "IssueQueue or AgreementReview")

    # -- decisions ---------------------------------------------------------------------
    def _card_of(self, sample_id: str | None) -> dict:
        if not self.cards:
            raise ProjectError("the queue is empty: nothing to decide")
        if sample_id is None:
            return self.cards[self.index]
        position = self._position(sample_id)
        if position is None:
            raise ProjectError(f"sample {sample_id!r} is not in this review queue")
        return self.cards[position]

    def _position(self, sample_id: str) -> int | None:
        return next((i for i, card in enumerate(self.cards) if card["sample_id"] == sample_id),
                    None)

    def _decide(self, card: dict, label: str, action: str) -> str:
        sample_id = card["sample_id"]
        history = self.project.histories([sample_id]).get(sample_id, [])
        in_force = latest_review(history)
        self.project.annotate(sample_id, label, annotator=self._writer(), review=True)
        self._undo.append((sample_id, in_force["label"] if in_force else None,
                           self.decisions.get(sample_id)))
        decisions = {**self.decisions, sample_id: {"action": action, "label": label}}
        position = self._position(sample_id)
        verb = {"accept": "accepted", "keep": "kept", "label": "relabelled"}[action]
        with self.hold_trait_notifications():
            self.decisions = decisions
            self.decided = len(decisions)
            self.can_undo = True
            self.error = ""
            self.message = f"{_name(self.cards, position, sample_id)}: {verb} {label}"
            self.index = self._next_open(position if position is not None else self.index)
        self._notify([sample_id], label)
        return label

    def _next_open(self, after: int) -> int:
        """The first undecided card after ``after`` (wrapping); ``after`` if none."""
        n = len(self.cards)
        for step in range(1, n + 1):
            position = (after + step) % n
            if self.cards[position]["sample_id"] not in self.decisions:
                return position
        return after

    def _notify(self, ids: list[str], label: str | None) -> None:
        for callback in self._callbacks:
            callback(list(ids), label)

    # -- front-end ---------------------------------------------------------------------
    def _on_front_message(self, _widget: Any, content: Any, _buffers: Sequence) -> None:
        """Handle a custom message of ``review.js``; failures land in :attr:`error`."""
        error = run_message(self._handlers, content)
        if error:
            self.error = error

    def _on_decide(self, content: Mapping) -> None:
        action, sample_id = content.get("action"), content.get("sample_id")
        if action not in ACTIONS:
            raise ProjectError(f"decide: action must be one of {', '.join(ACTIONS)}, "
                               f"got {action!r}")
        if sample_id is not None and not isinstance(sample_id, str):
            raise ProjectError(f"decide: sample_id must be a string, got {sample_id!r}")
        if action == "accept":
            self.accept(sample_id=sample_id)
        elif action == "keep":
            self.keep(sample_id=sample_id)
        else:
            self.choose(content.get("label"), sample_id=sample_id)

    def _current(self) -> int | None:
        """Index of the card to show (clamped); None, with the image cleared, without cards."""
        if not self.cards:
            with self.hold_trait_notifications():
                self.image, self.image_error, self.strip, self.selected = "", "", [], []
            return None
        return min(max(self.index, 0), len(self.cards) - 1)

    def _show(self) -> None:
        """Send the current card's image, the strip's thumbnails and the selection."""
        index = self._current()
        if index is None:
            return
        card = self.cards[index]
        image, problem = self._uri(card["filepath"], self.image_size)
        strip = []
        for position in range(index + 1, min(index + 1 + self.strip_size, len(self.cards))):
            other = self.cards[position]
            thumb, _ = self._uri(other["filepath"], self.thumb_size)
            strip.append({"index": position, "sample_id": other["sample_id"],
                          "thumb": thumb, "given": other["given"], "name": other["name"]})
        with self.hold_trait_notifications():
            self.image, self.image_error, self.strip = image, problem, strip
            self.selected = [card["sample_id"]]
            self.has_heatmaps = self.heatmaps is not None
            self.heat = self._heat(card["filepath"]) if image and self.overlay else ""

    def _heat(self, filepath: str) -> str:
        """The anomaly version's heatmap of ``filepath`` as a red overlay ("" without one)."""
        if self.heatmaps is None:
            return ""
        from widgets._base.heat_overlay import overlay_uri

        try:
            png = self.heatmaps.predict([filepath], progress=False)["heatmap"].iloc[0]
        except ValueError:  # unreadable: the image error already says so
            return ""
        return overlay_uri(png, self.image_size)

    def _uri(self, filepath: str, size: int) -> tuple[str, str]:
        try:
            uri = thumbnail_data_uri(filepath, size=size,
                                     cache_dir=self.project.folder / "thumbnails")
        except (OSError, UnidentifiedImageError, ValueError) as error:
            return "", f"{Path(filepath).name}: cannot read ({error})"
        return uri, ""


def _card(card: Mapping, history: list[dict]) -> dict:
    """A JSON-safe card with every key the front-end reads."""
    annotators = card.get("annotators")
    if annotators is None:
        annotators = [{"annotator": who, "label": label}
                      for who, label in sorted(latest_per_annotator(history).items())]
    return {
        "sample_id": str(card["sample_id"]),
        "filepath": str(card["filepath"]),
        "name": Path(str(card["filepath"])).name,
        "given": _label(card.get("given")),
        "suggested": _label(card.get("suggested")),
        "probability": _number(card.get("probability")),
        "probability_name": str(card.get("probability_name", "probability")),
        "score": _number(card.get("score")),
        "score_name": str(card.get("score_name", "score")),
        "reason": str(card.get("reason") or ""),
        "annotators": [{"annotator": str(a["annotator"]), "label": _label(a["label"])}
                       for a in annotators],
    }


def _label(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _name(cards: list[dict], position: int | None, sample_id: str) -> str:
    return cards[position]["name"] if position is not None else sample_id
