"""Turning folders and CSV files into import candidates, and the report an import returns.

Nothing here touches the store: these functions list what *would* be imported (one
:class:`Candidate` per file, with its labels and slice values) and say which inputs are
unusable. :meth:`workbench.Project.import_folder` does the rest.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

Layout = Literal["class_folders", "unlabeled"]
LAYOUTS: tuple[str, ...] = ("class_folders", "unlabeled")

#: Slice field names that would clash with fields Loupe manages.
RESERVED_FIELDS = frozenset({
    "id", "_id", "sample_id", "filepath", "label", "annotator", "tags", "metadata", "split",
    "ground_truth", "annotations", "content_hash", "source_path", "imported_at",
    "created_at", "last_modified_at", "filename", "media_type",
})


@dataclass
class Candidate:
    """One file an import will consider, with every label the input gives it."""

    path: Path
    labels: list[tuple[str, str]] = field(default_factory=list)  # (annotator, label)
    fields: dict[str, object] = field(default_factory=dict)


@dataclass
class ImportReport:
    """What an import did.

    Attributes
    ----------
    added : list of str
        Sample ids of the new samples.
    duplicates : list of (str, str)
        ``(path, sample_id)``: files whose content is already stored as ``sample_id``.
    rejected : list of (str, str)
        ``(path, reason)``: files or rows that were not imported, and why.
    converted : list of (str, str)
        ``(path, what was done)``: files imported after conversion (mode, rotation, name).
    annotations_added : int
        Labels appended to histories, new samples and duplicates together.
    """

    added: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    converted: list[tuple[str, str]] = field(default_factory=list)
    annotations_added: int = 0

    def summary(self) -> str:
        """One line for a terminal or a log."""
        return (f"added {len(self.added)}, duplicates {len(self.duplicates)}, "
                f"rejected {len(self.rejected)}, converted {len(self.converted)}, "
                f"annotations added {self.annotations_added}")

    def __repr__(self) -> str:
        return f"ImportReport({self.summary()})"


#: Field naming the batch an image came in with (``import_folder(..., batch=)``).
BATCH_FIELD = "batch"
#: Longest batch name kept.
MAX_BATCH_LENGTH = 200


def check_batch(batch: object) -> str | None:
    """``batch`` as stored (stripped), None for None; a clear error for anything else."""
    if batch is None:
        return None
    if not isinstance(batch, str) or not batch.strip() or _has_control(batch) \
            or len(batch.strip()) > MAX_BATCH_LENGTH:
        raise ValueError(f"batch must be a short non-empty name without control characters "
                         f"(e.g. batch='night-2026-11-26'), got {batch!r}")
    return batch.strip()


def display_path(path: Path | str) -> str:
    """A path as text that any store can hold: bytes that are not UTF-8 become ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_utf8_path(path: Path) -> bool:
    """Whether the path's bytes are valid UTF-8 (so it can be stored as it is)."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def scan_folder(
    root: Path, *, layout: str, annotator: str, follow_symlinks: bool = False,
    exclude: Sequence[str] = (),
) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """List the files under ``root`` as candidates.

    Parameters
    ----------
    root : Path
        The folder to import.
    layout : {"class_folders", "unlabeled"}
        ``class_folders``: the first-level folder name is the label. ``unlabeled``: no labels.
    annotator : str
        Whom labels taken from folder names are attributed to.
    follow_symlinks : bool
        Links pointing outside ``root`` (to files or folders) are rejected unless this is
        true; a linked folder is then entered once (never in a cycle).
    exclude : sequence of str
        Glob patterns of paths relative to ``root`` (``annotations``, ``*.csv``,
        ``ok/old_*``) to skip silently; a folder that matches is not entered at all.

    Returns
    -------
    (candidates, rejected)
        Every entry that is skipped, except those ``exclude`` names, is in ``rejected`` with
        its reason: hidden files and folders (name starting with ``.``), links leaving
        ``root``, linked folders not entered. Special files (FIFOs, devices, sockets) are
        refused when read, before they are opened
        (:func:`workbench.store.ingest.images.read_bytes`).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not known; choose one of {', '.join(LAYOUTS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"import folder not found: {display_path(root)}")
    real_root = root.resolve()
    candidates: list[Candidate] = []
    rejected: list[tuple[str, str]] = []
    entered: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_symlinks):
        entered.add(Path(dirpath).resolve())
        relative_dir = os.path.relpath(dirpath, root)
        prefix = "" if relative_dir == "." else relative_dir.replace(os.sep, "/") + "/"
        kept = []
        for name in sorted(dirnames):
            if _excluded(prefix + name, exclude):
                continue
            path = Path(dirpath, name)
            reason = _folder_problem(path, real_root, follow_symlinks, entered)
            if reason:
                rejected.append((display_path(path), reason))
            else:
                kept.append(name)
        dirnames[:] = kept
        label = prefix.split("/", 1)[0] if prefix else None
        for name in sorted(filenames):
            if _excluded(prefix + name, exclude):
                continue
            path = Path(dirpath, name)
            reason = (HIDDEN_FILE if name.startswith(".")
                      else _link_problem(path, real_root, follow_symlinks))
            if reason:
                rejected.append((display_path(path), reason))
            elif layout == "unlabeled":
                candidates.append(Candidate(path))
            elif label is None:
                rejected.append((display_path(path), "not inside a class folder (layout="
                                 "'class_folders' takes the label from the folder name)"))
            else:
                candidates.append(Candidate(path, labels=[(annotator, label)]))
    return candidates, rejected


#: Reasons of entries a folder import skips.
HIDDEN_FILE = "hidden file (name starts with '.'): not imported; rename it to import it"
HIDDEN_FOLDER = "hidden folder (name starts with '.'): not entered; rename it to import it"


def _folder_problem(path: Path, real_root: Path, follow_symlinks: bool,
                    entered: set[Path]) -> str | None:
    """Why the walk does not enter the sub-folder ``path``, or None when it does."""
    if path.name.startswith("."):
        return HIDDEN_FOLDER
    link = path.is_symlink()
    if not link and not follow_symlinks:
        return None
    target = path.resolve()
    if link and not follow_symlinks:
        if target == real_root or real_root in target.parents:
            return (f"symbolic link to a folder inside the import folder "
                    f"({display_path(target)}): not entered, its files are imported from there")
        return (f"symbolic link pointing outside the import folder ({display_path(target)}); "
                "pass follow_symlinks=True to import it")
    if target in entered:  # a cycle, or a folder reached twice through links
        return (f"folder already imported ({display_path(target)}, reached again through a "
                "symbolic link): not entered again")
    entered.add(target)
    return None


def _excluded(relative: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(relative, pattern) for pattern in patterns)


def _link_problem(path: Path, real_root: Path, follow_symlinks: bool) -> str | None:
    if follow_symlinks or not path.is_symlink():
        return None
    target = path.resolve()
    if target == real_root or real_root in target.parents:
        return None
    return (f"symbolic link pointing outside the import folder ({display_path(target)}); "
            "pass follow_symlinks=True to import it")


def read_label_csv(
    csv_path: Path, *, default_annotator: str
) -> tuple[list[Candidate], list[tuple[str, str]], list[str]]:
    """Read a ``filepath,label[,annotator][,slice columns…]`` CSV into candidates.

    Relative file paths are taken relative to the CSV's folder and must stay inside it: a
    row whose path climbs out with ``..`` (``../../etc/passwd``) or through a symbolic link
    is rejected, so a CSV that came with a folder of images cannot reach other files. An
    absolute path is the user's explicit choice and is read where it is. Rows for the same
    file are merged into one candidate with several labels (an exact duplicate row adds
    nothing). Rows with an empty file path are rejected.

    Returns
    -------
    (candidates, rejected, slice_columns)

    Raises
    ------
    ValueError
        Naming the file and the missing column when ``filepath`` or ``label`` is absent.
    """
    table = _read_csv(csv_path)
    missing = [c for c in ("filepath", "label") if c not in table.columns]
    if missing:
        raise ValueError(
            f"{display_path(csv_path)}: missing column(s) {', '.join(missing)}; found "
            f"{', '.join(table.columns) or 'none'}. Expected filepath,label[,annotator][,...]"
        )
    slice_columns = _slice_columns(csv_path, table, skip={"filepath", "label", "annotator"})
    base = Path(csv_path).parent
    inside = _InsideFolder(base)
    by_path: dict[Path, Candidate] = {}
    rejected: list[tuple[str, str]] = []
    for row_number, row in enumerate(table.to_dict("records"), start=2):
        raw = (row["filepath"] or "").strip()
        if not raw:
            rejected.append((f"{display_path(csv_path)}:{row_number}", "empty filepath"))
            continue
        if "\x00" in raw:
            rejected.append((f"{display_path(csv_path)}:{row_number}",
                             "filepath contains a NUL character"))
            continue
        absolute = os.path.isabs(raw)  # noqa: PTH117 (strings: per-row speed)
        path = Path(raw) if absolute else base / raw
        escape = None if absolute else inside.escape(raw)
        if escape:
            rejected.append((f"{display_path(csv_path)}:{row_number}",
                             f"filepath {raw!r} {escape}; relative paths must stay inside the "
                             "CSV's folder (write an absolute path to import a file elsewhere)"))
            continue
        candidate = by_path.setdefault(path, Candidate(path))
        label = (row["label"] or "").strip()
        annotator = (row.get("annotator") or "").strip() or default_annotator
        control = next((text for text in (label, annotator) if _has_control(text)), None)
        if control is not None:
            rejected.append((f"{display_path(csv_path)}:{row_number}",
                             f"label or annotator {control!r} contains control characters"))
            continue
        if label and (annotator, label) not in candidate.labels:
            candidate.labels.append((annotator, label))
        candidate.fields.update({c: row[c] for c in slice_columns if row[c] not in (None, "")})
    return list(by_path.values()), rejected, slice_columns


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


class _InsideFolder:
    """Whether relative CSV paths stay inside the CSV's folder, lexically and after links.

    String operations, one ``lstat`` per row and one ``realpath`` per directory (cached): a
    file that is not itself a link resolves to its resolved directory joined with its name
    (100,000 rows: ~0.3 s instead of ~25 s of ``Path.resolve``)."""

    def __init__(self, base: Path) -> None:
        self.base = os.path.normpath(os.path.abspath(base))  # noqa: PTH100 (strings: per-row speed)
        self.real_base = os.path.realpath(self.base)
        self._real_dirs: dict[str, str] = {}

    def escape(self, raw: str) -> str | None:
        """Why ``raw`` (relative to the folder) leads outside it, or None when it does not."""
        lexical = os.path.normpath(os.path.join(self.base, raw))  # noqa: PTH118 (strings: per-row speed)
        if not _within(lexical, self.base):
            return "climbs out of the CSV's folder with '..'"
        target = os.path.join(self.base, raw)  # noqa: PTH118 (strings: per-row speed)
        try:
            link = stat.S_ISLNK(os.lstat(target).st_mode)
        except (OSError, ValueError):
            return None  # missing: the import reports it as unreadable
        if link:
            real = os.path.realpath(target)
        else:
            folder, name = os.path.split(target)
            if folder not in self._real_dirs:
                self._real_dirs[folder] = os.path.realpath(folder)
            real = os.path.join(self._real_dirs[folder], name)  # noqa: PTH118 (strings: per-row speed)
        if not _within(real, self.real_base):
            return f"is a link to {display_path(Path(real))}, outside the CSV's folder"
        return None


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def read_metadata_csv(csv_path: Path) -> tuple[dict[str, dict[str, object]], list[str]]:
    """Read slice fields keyed by file name from a CSV with a ``filename`` (or ``filepath``)
    column.

    Returns
    -------
    (fields_by_file_name, slice_columns)
    """
    table = _read_csv(csv_path)
    key = "filename" if "filename" in table.columns else "filepath"
    if key not in table.columns:
        raise ValueError(
            f"{display_path(csv_path)}: needs a 'filename' (or 'filepath') column to join on; "
            f"found {', '.join(table.columns) or 'none'}"
        )
    columns = _slice_columns(csv_path, table, skip={"filename", "filepath"})
    fields: dict[str, dict[str, object]] = {}
    for row in table.to_dict("records"):
        name = Path((row[key] or "").strip()).name
        if name:
            fields[name] = {c: row[c] for c in columns if row[c] not in (None, "")}
    return fields, columns


def _read_csv(csv_path: Path) -> pd.DataFrame:
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"CSV file not found: {display_path(csv_path)}")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{display_path(csv_path)}: not a readable CSV file ({err})") from None
    table.columns = [str(c).strip() for c in table.columns]
    return table.replace({"": None})


def _slice_columns(csv_path: Path, table: pd.DataFrame, *, skip: set[str]) -> list[str]:
    columns = [c for c in table.columns if c not in skip]
    for column in columns:
        if column in RESERVED_FIELDS or not column.isidentifier():
            raise ValueError(
                f"{display_path(csv_path)}: column {column!r} cannot be a slice field "
                "(reserved by Loupe, or not a Python identifier); rename it"
            )
    return columns
