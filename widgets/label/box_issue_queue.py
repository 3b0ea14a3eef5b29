"""``BoxIssueQueue``: the boxes a detector finds most likely mislabelled, one at a time.

The review queue of a detection project. Cards come from
:func:`workbench.analyse.detection` (``report.issues``, worst first), one per suspected box
error: a missing box, an extra box, a box of the wrong class or a badly placed box. The
card's image shows the boxes on the thumbnail: the given box solid in its class colour, the
model's box dashed, the image's other boxes thin and grey. The front-end is the review
queue's (``static/review.js``), so the keys are the same::

    accept()        apply the model's suggestion           (keys a, Enter)
    keep()          keep the boxes as they are              (key k)
    choose(label)   the issue's box, with class ``label``   (keys 1–9)
    undo()          the last decision                       (key u)

Every decision stores the image's *full* box set as a review entry
(``p.annotate_boxes(sid, boxes, annotator=..., review=True)``): accept adds the predicted
box (missing box), removes the given box (extra box), relabels it (wrong class) or replaces
it by the predicted box (poor localisation); keep stores the boxes unchanged. Undo appends
the review in force before the decision (or withdraws the review), so nothing is deleted.
Decisions are applied to the image's boxes as they are when deciding, so several cards of
one image combine.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import UnidentifiedImageError

import workbench as wb
from widgets._base.palette import UNLABELLED_COLOR, color_of, label_colors
from widgets._base.review_queue import ReviewQueue
from workbench import ProjectError
from workbench.keywords import renamed
from workbench.store.boxes import box_consensus, latest_box_sets
from workbench.store.thumbnails import draw_boxes, thumbnail

if TYPE_CHECKING:
    from workbench.analyse.detection import DetectionReport
    from workbench.train.versions import ModelVersion

#: What a card shows where an issue has no box on one side (missing box / extra box).
NO_BOX = "no box"
#: Two boxes with coordinates this close (relative units) are the same box.
TOLERANCE = 1e-5
_KIND_TEXT = {"missing_box": "missing box", "extra_box": "extra box",
              "wrong_class": "wrong class", "poor_localisation": "poor localisation"}


class BoxIssueQueue(ReviewQueue):
    """Review the suspected box errors of a detection version with the keyboard.

    Parameters
    ----------
    source : Project, str or FiftyOne view
        A detection project, its name, or a view of it (only its samples are queued).
    version : ModelVersion or str, optional
        The detection version whose out-of-fold boxes judge the labels (default: the newest).
    annotator : str, optional
        The name every decision is stored under. Without it the
        widget shows everything and refuses to write (no decision under a made-up name).
    report : DetectionReport, optional
        A report already computed for ``mv`` (``wb.detection_report(p, mv)``); by default
        the queue computes one, and :meth:`refresh` recomputes it on the current boxes.
    iou, score_threshold : float
        Passed to :func:`workbench.analyse.detection` when the queue computes the report.
    image_size, thumb_size, strip_size : int
        See :class:`~widgets._base.review_queue.ReviewQueue`.

    Attributes
    ----------
    cards : list of dict
        One per issue. ``sample_id`` is the issue's id (``"<sample id>/<rank>"``, what the
        front-end sends back); ``image_id`` the sample id; ``kind``, ``label``,
        ``suggested_label``, ``iou``, ``box`` and ``pred_box`` (``{x, y, w, h}`` or None)
        come from the report; ``given`` and ``suggested`` are what the card shows.
    sample_ids : list of str
        The queued images, one per card (an image with two issues appears twice).
    decisions : dict of str to dict
        Issue id → ``{"action", "label", "n_boxes"}`` of the decisions taken.

    Notes
    -----
    Images whose boxes have a review decision in force are not queued: a person has
    decided them.
    """

    @renamed(mv="version")
    def __init__(self, source: Any, version: ModelVersion | str | None = None, *,
                 annotator: str | None = None,
                 report: DetectionReport | None = None, iou: float = 0.5,
                 score_threshold: float = 0.3, image_size: int = 256, thumb_size: int = 64,
                 strip_size: int = 8) -> None:
        self._report_arg = report
        self._report_options = {"iou": iou, "score_threshold": score_threshold}
        self._version_arg = version
        super().__init__(source, annotator=annotator, image_size=image_size,
                         thumb_size=thumb_size, strip_size=strip_size)
        self.add_class("loupe-box-issue-queue")

    # -- public API --------------------------------------------------------------------
    @property
    def sample_ids(self) -> list[str]:
        """The queued images, in review order (one entry per card)."""
        return [card["image_id"] for card in self.cards]

    @property
    def issue_ids(self) -> list[str]:
        """The queued issues' ids (``"<sample id>/<rank>"``), in review order."""
        return [card["sample_id"] for card in self.cards]

    def refresh(self) -> None:
        """Recompute the report on the current boxes (unless one was given) and rebuild the
        queue; images with a review in force drop out; undo is kept."""
        if self.project.task != "detection":
            raise ProjectError(f"{type(self).__name__} needs a detection project; "
                               f"{self.project.name!r} is a {self.project.task} project "
                               "(use IssueQueue)")
        cards = self._load_cards()
        if self._scope is not None:
            scope = set(self._scope)
            cards = [card for card in cards if card["image_id"] in scope]
        histories = self.project.box_histories(list(dict.fromkeys(c["image_id"] for c in cards)))
        cards = [_with_annotators(card, histories.get(card["image_id"], [])) for card in cards
                 if review_in_force(histories.get(card["image_id"], [])) is None]
        self._publish(cards, self.project.classes, can_undo=bool(self._undo))

    def accept(self, *, sample_id: str | None = None) -> list[dict]:
        """Apply the card's suggestion; returns the image's new box set (stored as a review).

        ``sample_id`` names the card: an issue id, or a sample id (its first undecided
        card); default the current card.
        """
        card = self._card_of(sample_id)
        if card["kind"] == "missing_box":
            target = _box(card["suggested_label"], card["pred_box"])
        elif card["kind"] == "extra_box":
            target = None
        elif card["kind"] == "wrong_class":
            target = _box(card["suggested_label"], card["box"])
        else:
            target = _box(card["label"], card["pred_box"])
        return self._decide_boxes(card, target, "accept")

    def keep(self, *, sample_id: str | None = None) -> list[dict]:
        """Keep the card's boxes as given (stored as a review); returns the box set."""
        card = self._card_of(sample_id)
        target = None if card["kind"] == "missing_box" else _box(card["label"], card["box"])
        return self._decide_boxes(card, target, "keep")

    def choose(self, label: str, *, sample_id: str | None = None) -> list[dict]:
        """Give the card's box class ``label`` (the predicted box for a missing box, the
        given box otherwise); returns the stored box set."""
        card = self._card_of(sample_id)
        if label not in self.classes:
            raise ProjectError(f"label {label!r} is not a class of project "
                               f"{self.project.name!r} (classes: {', '.join(self.classes)})")
        where = card["pred_box"] if card["kind"] == "missing_box" else card["box"]
        return self._decide_boxes(card, _box(label, where), "label")

    def _restore(self, key: str, previous: Any) -> str:
        """Re-append the box set of the review in force before (None: withdraw)."""
        sid = self._sample_of(key)
        if previous is None:
            self.project.withdraw_boxes(sid, annotator=self._writer(), review=True)
            return "its annotators"
        self.project.annotate_boxes(sid, previous, annotator=self._writer(), review=True)
        return f"{_count(previous)} (review)"

    def _sample_of(self, key: str) -> str:
        position = self._position(key)
        if position is not None:
            return self.cards[position]["image_id"]
        return key.rsplit("/", 1)[0]

    def _decided_by_others(self, cards: list[dict]) -> dict[str, str]:
        """Issue id → "<who> decided <n> boxes" for images someone else reviewed."""
        histories = self.project.box_histories(list(dict.fromkeys(c["image_id"] for c in cards)))
        marks = {}
        for card in cards:
            reviews = [e for e in histories.get(card["image_id"], []) if e.get("review")]
            if reviews and reviews[-1].get("boxes") is not None \
                    and reviews[-1]["annotator"] != self.annotator:
                marks[card["sample_id"]] = (f"{reviews[-1]['annotator']} decided "
                                            f"{_count(reviews[-1]['boxes'])}")
        return marks

    # -- cards -------------------------------------------------------------------------
    def detection_report(self) -> DetectionReport:
        """The detection report the cards come from (computed on the current boxes unless
        one was given)."""
        if self._report_arg is not None:
            made_by = self._report_arg.config.get("version")
            if made_by != self.version.name:
                raise ProjectError(f"report= was computed for version {made_by!r}, not "
                                   f"{self.version.name!r}; pass the same version as mv")
            return self._report_arg
        return wb.detection_report(self.project, self.version, write=False,
                                   **self._report_options)

    def _load_cards(self) -> list[dict]:
        _, self.version = wb.as_version(self.project, self._version_arg)
        issues = self.detection_report().issues
        if "filepath" not in issues.columns:
            paths = dict(zip(*self.project.dataset.values(["id", "filepath"]), strict=True))
            issues = issues.assign(filepath=issues["sample_id"].map(paths))
        self.title = f"Box issues of {self.version.name} — {self.project.name}"
        return [_issue_card(row) for row in issues.to_dict("records")]

    def _card_of(self, sample_id: str | None) -> dict:
        if self.cards and sample_id is not None and self._position(sample_id) is None:
            images = [i for i, card in enumerate(self.cards) if card["image_id"] == sample_id]
            if images:
                open_ = [i for i in images if self.cards[i]["sample_id"] not in self.decisions]
                return self.cards[(open_ or images)[0]]
        return super()._card_of(sample_id)

    # -- decisions ---------------------------------------------------------------------
    def _decide_boxes(self, card: dict, target: dict | None, action: str) -> list[dict]:
        """Store the image's boxes with the card's box replaced by ``target`` (None: no
        box) as a review; remember what undo needs."""
        key, sid = card["sample_id"], card["image_id"]
        history = self.project.box_histories([sid]).get(sid, [])
        current = box_consensus(history) or []
        boxes = replace_box(current, [card["box"], card["pred_box"]], target)
        in_force = review_in_force(history)
        self.project.annotate_boxes(sid, boxes, annotator=self._writer(), review=True)
        self._undo.append((key, in_force, self.decisions.get(key)))
        shown = target["label"] if target is not None else NO_BOX
        decisions = {**self.decisions,
                     key: {"action": action, "label": shown, "n_boxes": len(boxes)}}
        position = self._position(key)
        verb = {"accept": "accepted", "keep": "kept", "label": "relabelled"}[action]
        with self.hold_trait_notifications():
            self.decisions = decisions
            self.decided = len(decisions)
            self.can_undo = True
            self.error = ""
            self.message = (f"{card['name']}: {verb} {_KIND_TEXT[card['kind']]} → "
                            f"{_count(boxes)}")
            self.index = self._next_open(position if position is not None else self.index)
        self._notify([sid], shown)
        return boxes

    # -- images ------------------------------------------------------------------------
    def _show(self) -> None:
        """Send the current card's boxed image, the strip's boxed thumbnails, the selection."""
        index = self._current()
        if index is None:
            return
        card = self.cards[index]
        shown = range(index + 1, min(index + 1 + self.strip_size, len(self.cards)))
        ids = list(dict.fromkeys([card["image_id"], *(self.cards[i]["image_id"]
                                                      for i in shown)]))
        consensus = {sid: box_consensus(history) or []
                     for sid, history in self.project.box_histories(ids).items()}
        image, problem = self._boxed(card, consensus.get(card["image_id"], []), self.image_size)
        strip = []
        for position in shown:
            other = self.cards[position]
            thumb, _ = self._boxed(other, consensus.get(other["image_id"], []), self.thumb_size)
            strip.append({"index": position, "sample_id": other["sample_id"], "thumb": thumb,
                          "given": other["given"], "name": other["name"]})
        with self.hold_trait_notifications():
            self.image, self.image_error, self.strip = image, problem, strip
            self.selected = [card["image_id"]]

    def _boxed(self, card: Mapping, boxes: Sequence[Mapping], size: int) -> tuple[str, str]:
        """The card's image with its issue drawn over the image's other boxes."""
        colors = label_colors(self.project.classes)
        try:
            uri = boxed_image(card["filepath"], issue_boxes(card, colors),
                              others=[b for b in boxes if not _matches(b, [card["box"],
                                                                          card["pred_box"]])],
                              size=size, cache_dir=self.project.folder / "thumbnails")
        except (OSError, UnidentifiedImageError, ValueError) as error:
            return "", f"{Path(card['filepath']).name}: cannot read ({error})"
        return uri, ""


# -- helpers shared with the confusion widget ---------------------------------------------
def boxed_image(filepath: str | Path, boxes: Sequence[dict], *, size: int, cache_dir: Path,
                others: Sequence[Mapping] = ()) -> str:
    """A thumbnail data URI with ``others`` (stored boxes ``{label, bounding_box}``) drawn
    thin and grey, then ``boxes`` (see :func:`workbench.store.thumbnails.draw_boxes`) on top."""
    data = thumbnail(filepath, size=size, cache_dir=cache_dir)
    if others:
        data = draw_boxes(data, [{**dict(zip("xywh", b["bounding_box"], strict=True)),
                                  "color": UNLABELLED_COLOR} for b in others], width=1)
    if boxes:
        data = draw_boxes(data, boxes, width=max(2, size // 128 + 1))
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def issue_boxes(card: Mapping, colors: dict[str, str]) -> list[dict]:
    """The boxes that show an issue: the given box solid in its class colour, the model's
    box dashed in the colour of the class it suggests."""
    drawn = []
    if card.get("box"):
        drawn.append({**card["box"], "color": color_of(card.get("label"), colors)})
    if card.get("pred_box"):
        label = card.get("suggested_label") or card.get("label")
        drawn.append({**card["pred_box"], "color": color_of(label, colors), "dashed": True})
    return drawn


def review_in_force(history: Sequence[Mapping]) -> list[dict] | None:
    """The box set of the review in force (None: no review, or it was withdrawn)."""
    reviews = [entry for entry in history if entry.get("review")]
    if not reviews or reviews[-1].get("boxes") is None:
        return None
    return [{"label": b["label"], "bounding_box": list(b["bounding_box"])}
            for b in reviews[-1]["boxes"]]


def replace_box(boxes: Sequence[Mapping], where: Sequence[Mapping | None],
                target: Mapping | None) -> list[dict]:
    """``boxes`` without the boxes at the coordinates ``where`` (``{x, y, w, h}`` or None,
    any label), with ``target`` (``{label, bounding_box}``; None: nothing) in the place of
    the first one removed, or appended. Idempotent, so deciding a card twice is harmless."""
    out: list[dict] = []
    placed = target is None
    for box in boxes:
        if _matches(box, where):
            if not placed:
                out.append(dict(target))
                placed = True
            continue
        out.append({"label": box["label"], "bounding_box": list(box["bounding_box"])})
    if not placed:
        out.append(dict(target))
    return out


def _matches(box: Mapping, where: Sequence[Mapping | None]) -> bool:
    coords = box["bounding_box"]
    return any(spot is not None and all(abs(float(a) - spot[k]) <= TOLERANCE
                                        for a, k in zip(coords, "xywh", strict=True))
               for spot in where)


def _box(label: str | None, where: Mapping | None) -> dict:
    if label is None or where is None:
        raise ProjectError("this issue has no box to apply; keep it or choose a class")
    return {"label": label, "bounding_box": [where[k] for k in "xywh"]}


def _clip(x: float, y: float, w: float, h: float) -> dict | None:
    """A relative box clipped to the image (None when a coordinate is missing)."""
    if any(v is None or not math.isfinite(v) for v in (x, y, w, h)):
        return None
    x, y = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
    return {"x": x, "y": y, "w": min(w, 1.0 - x), "h": min(h, 1.0 - y)}


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _label(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(boxes: Sequence | None) -> str:
    n = len(boxes or [])
    return f"{n} box{'es' if n != 1 else ''}"


def _issue_card(row: Mapping) -> dict:
    """A JSON-safe card of one row of ``report.issues``."""
    sid, kind = str(row["sample_id"]), str(row["kind"])
    label, suggested = _label(row.get("label")), _label(row.get("suggested_label"))
    box = _clip(*(_number(row.get(k)) for k in ("x", "y", "w", "h")))
    pred_box = _clip(*(_number(row.get(k)) for k in ("pred_x", "pred_y", "pred_w", "pred_h")))
    overlap, confidence = _number(row.get("iou")), _number(row.get("confidence"))
    given = NO_BOX if kind == "missing_box" else label
    shown = {"missing_box": suggested, "extra_box": NO_BOX, "wrong_class": suggested,
             "poor_localisation": f"{label} (model's box)"}.get(kind, suggested)
    sure = f"confidence {confidence:.2f}" if confidence is not None else "no confidence"
    at = f"IoU {overlap:.2f}" if overlap is not None else "IoU n/a"
    reason = {
        "missing_box": f"the model finds a {suggested} ({sure}) where no box is given: add it?",
        "extra_box": f"no confident prediction overlaps this {label} box: delete it?",
        "wrong_class": f"the model sees this {label} box as a {suggested} ({sure})",
        "poor_localisation": f"the model's {label} box ({sure}) overlaps this one too little: "
                             "use the model's box?",
    }.get(kind, kind)
    rank = row.get("rank")
    filepath = str(row.get("filepath") or "")
    return {"sample_id": f"{sid}/{int(rank) if _number(rank) is not None else 0}",
            "image_id": sid, "filepath": filepath, "name": Path(filepath).name,
            "kind": kind, "label": label, "suggested_label": suggested, "iou": overlap,
            "box": box, "pred_box": pred_box, "given": given, "suggested": shown,
            "probability": confidence, "probability_name": "model confidence",
            "score": _number(row.get("score")), "score_name": "issue score",
            "reason": f"{_KIND_TEXT.get(kind, kind)} · {at} — {reason}", "annotators": []}


def _with_annotators(card: dict, history: Sequence[Mapping]) -> dict:
    """The card with each annotator's box count in force (the badges under the image)."""
    latest = latest_box_sets(history)
    return {**card, "annotators": [{"annotator": who, "label": _count(boxes)}
                                   for who, (_, boxes) in sorted(latest.items())]}


__all__ = ["BoxIssueQueue", "boxed_image", "issue_boxes", "replace_box", "review_in_force"]

