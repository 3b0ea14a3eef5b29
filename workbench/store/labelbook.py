"""The label book: a living labelling guide, one definition and a few canonical images per class.

Stored with the project's dataset (``dataset.info["loupe_label_book"]``), so everyone who
opens the project reads the same guide. Every edit is appended to the book's history,
which is never rewritten.

>>> define_label(p, "pit_mark", "Round dark pits under 1 mm; clusters count once.",
...              author="alice")
>>> add_example(p, "pit_mark", sample_id, author="alice")
>>> label_book(p)       # label, definition, examples, updated_by, updated_at, n_labelled, …
>>> book_history(p)     # who changed what, when

The book is read, changed and saved in one step after a reload (as the project's other
bookkeeping is); two people saving in the same instant may lose one edit, never corrupt
the book.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

from workbench.store import _db as store
from workbench.store.coerce import as_project
from workbench.store.labels import now
from workbench.store.project import Project, ProjectError

if TYPE_CHECKING:
    pass

#: Key of the book in the dataset's ``info``.
BOOK_KEY = "loupe_label_book"
BOOK_SCHEMA_VERSION = 1
_BOOK_COLUMNS = ["label", "definition", "examples", "updated_by", "updated_at", "n_labelled",
                 "stale_examples"]
_HISTORY_COLUMNS = ["label", "field", "action", "value", "author", "time"]


def _open(project: Project | str) -> Project:
    return as_project(project)


def _read(project: Project) -> dict[str, Any]:
    project.dataset.reload()
    return copy.deepcopy(dict(project.dataset.info.get(BOOK_KEY) or {}))


def label_book(project: Project | str) -> pd.DataFrame:
    """The label book, one row per class of the project (in the project's class order).

    Returns
    -------
    pd.DataFrame
        ``label``, ``definition`` (``""`` until written), ``examples`` (list of sample ids,
        in the order they were added), ``updated_by`` and ``updated_at`` (last edit of that
        class; None / NaT if never edited), ``n_labelled`` (samples whose consensus is the
        class now), ``stale_examples`` (examples relabelled or deleted since they were
        chosen: review them).
    """
    project = _open(project)
    entries = _read(project).get("labels", {})
    classes = project.classes
    counts = project.dataset.count_values("ground_truth.label")
    examples = [sid for label in classes for sid in entries.get(label, {}).get("examples", [])]
    current = _labels_of(project, examples)
    rows = []
    for label in classes:
        entry = entries.get(label, {})
        chosen = list(entry.get("examples", []))
        rows.append({
            "label": label, "definition": entry.get("definition", ""), "examples": chosen,
            "updated_by": entry.get("updated_by"),
            "updated_at": pd.Timestamp(entry["updated_at"]) if entry.get("updated_at")
            else pd.NaT,
            "n_labelled": int(counts.get(label, 0)),
            "stale_examples": [sid for sid in chosen if current.get(sid) != label]})
    frame = pd.DataFrame(rows, columns=_BOOK_COLUMNS)
    frame["updated_by"] = frame["updated_by"].astype(object).where(
        frame["updated_by"].notna(), None)
    return frame


def book_history(project: Project | str) -> pd.DataFrame:
    """Every edit of the label book, oldest first.

    Returns
    -------
    pd.DataFrame
        ``label``, ``field`` (``"definition"`` or ``"examples"``), ``action`` (``"set"``,
        ``"add"`` or ``"remove"``), ``value`` (the new definition, or the sample id added or
        removed), ``author``, ``time`` (UTC).
    """
    history = _read(_open(project)).get("history", [])
    frame = pd.DataFrame(history, columns=_HISTORY_COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame


def define_label(project: Project | str, label: str, definition: str, *, author: str) -> None:
    """Write (or replace) the definition of a class; an unchanged text records nothing.

    Raises
    ------
    ProjectError
        For a label that is not a class of the project, a definition that is not a string,
        or an empty ``author``.
    """
    project = _open(project)
    _check_author(author)
    _check_label(project, label)
    if not isinstance(definition, str):
        raise ProjectError(f"definition must be a string, got {type(definition).__name__}.")
    text = definition.strip()

    def change(entry: dict[str, Any]) -> dict[str, Any] | None:
        if entry.get("definition", "") == text:
            return None
        entry["definition"] = text
        return {"field": "definition", "action": "set", "value": text}

    _edit(project, label, author, change)


def add_example(project: Project | str, label: str, sample_id: str, *, author: str) -> None:
    """Add a sample as a canonical example of ``label`` (no-op if it already is one).

    Raises
    ------
    ProjectError
        For an unknown label, a sample id not in the project, an empty ``author``, or a
        sample whose current consensus label is not ``label`` (a guide must not show a
        mislabelled example: relabel the sample first, or choose another).
    """
    project = _open(project)
    _check_author(author)
    _check_label(project, label)
    current = _labels_of(project, [sample_id])
    if sample_id not in current:
        raise ProjectError(f"sample id {sample_id!r} is not in project {project.name!r}.")
    if current[sample_id] != label:
        shown = "unlabelled" if current[sample_id] is None else \
            f"labelled {current[sample_id]!r}"
        raise ProjectError(f"sample {sample_id} is {shown}, not {label!r}: an example of "
                           f"{label!r} must carry that label. Relabel it first "
                           f"(p.annotate([{sample_id!r}], {label!r}, annotator=...)) or choose "
                           "another image.")

    def change(entry: dict[str, Any]) -> dict[str, Any] | None:
        examples = entry.setdefault("examples", [])
        if sample_id in examples:
            return None
        examples.append(sample_id)
        return {"field": "examples", "action": "add", "value": sample_id}

    _edit(project, label, author, change)


def remove_example(project: Project | str, label: str, sample_id: str, *, author: str) -> None:
    """Remove a canonical example of ``label`` (the history keeps that it was one).

    Raises
    ------
    ProjectError
        For an unknown label, an empty ``author``, or a sample that is not an example of
        ``label``.
    """
    project = _open(project)
    _check_author(author)
    _check_label(project, label)

    def change(entry: dict[str, Any]) -> dict[str, Any] | None:
        examples = entry.get("examples", [])
        if sample_id not in examples:
            raise ProjectError(f"sample {sample_id!r} is not an example of {label!r} "
                               f"(examples: {', '.join(examples) or 'none'}).")
        examples.remove(sample_id)
        return {"field": "examples", "action": "remove", "value": sample_id}

    _edit(project, label, author, change)


def current_examples(project: Project, label: str) -> list[str]:
    """The sample ids chosen as examples of ``label`` (ProjectError for a label that is not
    a class of the project)."""
    _check_label(project, label)
    return list(_read(project).get("labels", {}).get(label, {}).get("examples", []))


def _edit(project: Project, label: str, author: str,
          change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
    """Reload the book, apply ``change`` to the label's entry, append its record, save."""
    book = _read(project)
    entry = book.setdefault("labels", {}).setdefault(label, {})
    record = change(entry)
    if record is None:
        return
    stamp = now().isoformat()
    entry.update(updated_by=author, updated_at=stamp)
    book.setdefault("history", []).append({"label": label, **record, "author": author,
                                           "time": stamp})
    book["schema_version"] = BOOK_SCHEMA_VERSION
    info = dict(project.dataset.info)
    info[BOOK_KEY] = book
    project.dataset.info = info
    project.dataset.save()


def _labels_of(project: Project, sample_ids: list[str]) -> dict[str, str | None]:
    """Current consensus label of each sample id that exists."""
    present = store.existing_ids(project.dataset, sample_ids)
    if not present:
        return {}
    ids, labels = project.dataset.select(list(present)).values(["id", "ground_truth.label"])
    return dict(zip(ids, labels, strict=True))


def _check_author(author: object) -> None:
    if not isinstance(author, str) or not author.strip():
        raise ProjectError(f"author must be a non-empty name, e.g. author='alice'; "
                           f"got {author!r}.")


def _check_label(project: Project, label: object) -> None:
    classes = project.classes
    if label not in classes:
        raise ProjectError(f"label {label!r} is not a class of project {project.name!r} "
                           f"(classes: {', '.join(classes) or 'none'}).")


__all__ = [
    "BOOK_KEY",
    "add_example",
    "book_history",
    "current_examples",
    "define_label",
    "label_book",
    "remove_example",
]
