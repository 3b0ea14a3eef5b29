"""Label history and the consensus rule: pure functions on lists of annotations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

#: Tag of a sample whose annotators are tied (its consensus is the earlier one, kept).
DISPUTED_TAG = "disputed"


@dataclass(frozen=True)
class Annotation:
    """One label given by one annotator at one time (an entry of the append-only history)."""

    annotator: str
    label: str
    time: datetime

    def to_dict(self) -> dict:
        """The form stored in a sample's ``annotations`` list."""
        return {"annotator": self.annotator, "label": self.label, "time": self.time}


def now() -> datetime:
    """Current time in UTC, to the millisecond (the precision MongoDB keeps)."""
    stamp = datetime.now(UTC)
    return stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)


def latest_per_annotator(history: Iterable[Mapping]) -> dict[str, str]:
    """Map each annotator to the label they gave last (history in the order it was written)."""
    latest: dict[str, str] = {}
    for entry in history:
        latest[entry["annotator"]] = entry["label"]
    return latest


def consensus(history: Iterable[Mapping], previous: str | None = None) -> tuple[str | None, bool]:
    """Consensus label of one sample and whether it is disputed.

    The rule: a majority vote over the latest label of each annotator. On a tie the earlier
    consensus ``previous`` is kept when it is among the tied labels (otherwise the tied label
    given first) and the sample is disputed.

    Parameters
    ----------
    history : iterable of mappings with ``annotator`` and ``label``
        Every annotation of the sample, oldest first.
    previous : str or None
        The consensus before the newest annotations.

    Returns
    -------
    (label, disputed) : tuple of (str or None, bool)
        ``(None, False)`` when nobody has labelled the sample.
    """
    history = list(history)
    votes = Counter(latest_per_annotator(history).values())
    if not votes:
        return None, False
    top = max(votes.values())
    tied = [label for label, count in votes.items() if count == top]
    if len(tied) == 1:
        return tied[0], False
    if previous in tied:
        return previous, True
    first_given = next(entry["label"] for entry in history if entry["label"] in tied)
    return first_given, True
