"""Importing candidate files into a project's dataset: read, hash, check, convert, add.

Files are read and checked on a reader thread (:data:`READ_THREADS`), in input order, while
this thread builds the documents and a writer thread inserts the previous batch. A bad file
never aborts the import: it lands in the report's ``rejected`` list.
A file whose content is already stored is a duplicate; new labels it brings are appended to
the stored sample's history, so re-running an import changes nothing.
"""

from __future__ import annotations

import gc
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pymongo.errors import ConnectionFailure
from tqdm.auto import tqdm

from workbench.store import _db as store
from workbench.store.ingest.images import (
    CheckedImage,
    ImageRejectedError,
    check_image,
    content_hash,
    read_bytes,
)
from workbench.store.ingest.scan import Candidate, ImportReport, display_path, is_utf8_path
from workbench.store.labels import Annotation, latest_per_annotator, now

if TYPE_CHECKING:
    import fiftyone as fo

#: Samples inserted per database round trip.
BATCH_SIZE = 500
#: Files read and checked per thread task.
CHUNK = 64
#: Threads reading and checking files. One: the checks are mostly Python (Pillow's parser), so
#: more threads only fight over the interpreter lock (10,000 local PNGs: 1.9 s on one thread,
#: 3.1 s on two, 3.3 s on four); the thread still overlaps the documents built here and the
#: database's writes.
READ_THREADS = 1
#: Share of images (by content hash) assigned to the ``val`` split; the rest are ``train``.
VAL_SHARE = 0.2


@dataclass
class _Prepared:
    candidate: Candidate
    digest: str | None = None
    image: CheckedImage | None = None
    error: str | None = None


def import_candidates(
    dataset: fo.Dataset,
    media_dir: Path,
    candidates: Sequence[Candidate],
    *,
    report: ImportReport,
    workers: int | None = None,
    thorough: bool = False,
    progress: bool = True,
) -> list[str]:
    """Add ``candidates`` to ``dataset``, filling ``report``; returns labels seen, in order.

    Converted images and files whose names are not UTF-8 are stored as PNG/copies in
    ``media_dir`` (named by content hash); every other file is referenced where it is.

    Raises
    ------
    DatabaseUnavailableError
        The database went away; the message says how many new images were stored before
        (running the import again adds exactly the rest).
    """
    try:
        with _collector_paused():
            return _import_all(dataset, media_dir, candidates, report=report,
                               workers=workers, thorough=thorough, progress=progress)
    except ConnectionFailure as error:
        stored = (f"{len(report.added)} new image(s) of this import were stored before it went "
                  "away, the rest were not" if report.added else store.NOTHING_STORED)
        raise store.outage_error(error, stored) from error


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while an import builds its documents: they hold no
    cycles, but their millions of small objects trigger full collections whose cost grows
    with everything else alive in the process (a notebook's models): 25 % of an import of
    10,000 files (bench/scale.py). Cycles made meanwhile are collected once it is back on."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _import_all(dataset: fo.Dataset, media_dir: Path, candidates: Sequence[Candidate], *,
                report: ImportReport, workers: int | None, thorough: bool,
                progress: bool) -> list[str]:
    known = store.hashes(dataset)
    new_by_hash: dict[str, tuple[Path, str]] = {}
    pending: list[dict] = []
    extra_history: dict[str, list[Annotation]] = {}
    labels_seen: list[str] = []
    stamp = now()

    prepared_all = _prepare_all(candidates, known, workers=workers, thorough=thorough,
                                progress=progress)
    with _Inserter(dataset, report) as inserter:
        for prepared in prepared_all:
            _take(prepared, dataset, media_dir, stamp, report, known=known,
                  new_by_hash=new_by_hash, pending=pending, extra_history=extra_history,
                  labels_seen=labels_seen)
            if len(pending) == BATCH_SIZE:  # written while the next documents are built
                inserter.add(pending)
                pending = []
        inserter.add(pending)
    _append_new_labels(dataset, extra_history, report)
    return labels_seen


class _Inserter:
    """Inserts batches of documents on one background thread, one batch in flight, in order:
    building the next batch (Python) overlaps the database's write of the last. An error
    (the database went away) comes out of the next :meth:`add` or the block's end."""

    def __init__(self, dataset: fo.Dataset, report: ImportReport) -> None:
        self.dataset, self.report = dataset, report
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loupe-insert")
        self._last: Future | None = None

    def __enter__(self) -> _Inserter:
        return self

    def add(self, documents: list[dict]) -> None:
        self._wait()
        if documents:
            self._last = self._pool.submit(store.add_samples, self.dataset, documents)

    def _wait(self) -> None:
        if self._last is not None:
            last, self._last = self._last, None
            self.report.added.extend(last.result())

    def __exit__(self, *exc: object) -> None:
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)


def _take(prepared: _Prepared, dataset: fo.Dataset, media_dir: Path, stamp: object,
          report: ImportReport, *, known: dict[str, str],
          new_by_hash: dict[str, tuple[Path, str]], pending: list[dict],
          extra_history: dict[str, list[Annotation]], labels_seen: list[str]) -> None:
    """Sort one prepared file: rejected, a duplicate (its labels kept) or a new document."""
    cand = prepared.candidate
    path_text = display_path(cand.path)
    for _, label in cand.labels:
        if label not in labels_seen:
            labels_seen.append(label)
    if prepared.error:
        report.rejected.append((path_text, prepared.error))
    elif prepared.digest in known:
        sid = known[prepared.digest]
        report.duplicates.append((path_text, sid))
        extra_history.setdefault(sid, []).extend(
            Annotation(who, label, stamp) for who, label in cand.labels)
    elif prepared.digest in new_by_hash:
        first, sid = new_by_hash[prepared.digest]
        report.duplicates.append((path_text, f"(same content as {display_path(first)})"))
        extra_history.setdefault(sid, []).extend(  # its labels are kept, not dropped
            Annotation(who, label, stamp) for who, label in cand.labels)
    else:
        document = _build_sample(dataset, cand, prepared.image, prepared.digest,
                                 media_dir, stamp, report)
        new_by_hash[prepared.digest] = (cand.path, str(document["_id"]))
        pending.append(document)
        report.annotations_added += len(cand.labels)


def _prepare_all(candidates: Sequence[Candidate], known: dict[str, str], *,
                 workers: int | None, thorough: bool,
                 progress: bool) -> Iterator[_Prepared]:
    """Read, hash and check candidates in input order, a chunk of files per thread task."""

    def prepare(chunk: Sequence[Candidate]) -> list[_Prepared]:
        results = []
        for candidate in chunk:
            try:
                data = read_bytes(candidate.path)
                digest = content_hash(data)
                image = None if digest in known else check_image(data, thorough=thorough,
                                                                      digest=digest)
                results.append(_Prepared(candidate, digest, image))
            except ImageRejectedError as err:
                results.append(_Prepared(candidate, error=err.reason))
        return results

    chunks = [candidates[i:i + CHUNK] for i in range(0, len(candidates), CHUNK)]
    with ThreadPoolExecutor(max_workers=workers or READ_THREADS) as pool, \
            tqdm(total=len(candidates), desc="import", unit="img", disable=not progress,
                 leave=False) as bar:
        for results in pool.map(prepare, chunks):
            bar.update(len(results))
            yield from results


def _append_new_labels(dataset: fo.Dataset, extra: dict[str, list[Annotation]],
                       report: ImportReport) -> None:
    """Append to existing samples only labels that differ from that annotator's latest."""
    if not extra:
        return
    current = store.histories(dataset, list(extra))
    fresh: dict[str, list[Annotation]] = {}
    for sid, items in extra.items():
        latest = latest_per_annotator(current.get(sid, []))
        for item in items:
            if latest.get(item.annotator) != item.label:
                fresh.setdefault(sid, []).append(item)
                latest[item.annotator] = item.label
    store.append_history(dataset, fresh)
    report.annotations_added += sum(len(v) for v in fresh.values())


def _build_sample(dataset: fo.Dataset, cand: Candidate, image: CheckedImage, digest: str,
                  media_dir: Path, stamp, report: ImportReport) -> dict:
    filepath = str(cand.path.absolute())
    utf8 = is_utf8_path(cand.path)
    path_text = filepath if utf8 else display_path(filepath)
    notes = []
    if image.converted is not None:
        target = media_dir / f"{digest[:20]}.png"
        _write_atomic_png(image.converted, target)
        filepath = str(target)
        notes.append(image.conversion)
    elif not utf8:
        target = media_dir / f"{digest[:20]}{_safe_suffix(cand.path)}"
        if not target.exists():
            media_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cand.path, target)
        filepath = str(target)
        notes.append("file name is not valid UTF-8: stored a copy named by content")
    if notes:
        report.converted.append((path_text, "; ".join(notes)))
    fields = {
        **cand.fields,
        "content_hash": digest,
        "source_path": path_text,
        "split": "val" if int(digest[:8], 16) / 0xFFFFFFFF < VAL_SHARE else "train",
        "imported_at": stamp,
    }
    metadata = {"size_bytes": image.size_bytes, "mime_type": image.mime_type,
                "width": image.width, "height": image.height,
                "num_channels": image.num_channels}
    history = [Annotation(who, label, stamp) for who, label in cand.labels]
    return store.sample_document(dataset, filepath, metadata=metadata, fields=fields,
                                 history=history, stamp=stamp)


def _write_atomic_png(image, target: Path) -> None:
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    image.save(partial, format="PNG")
    partial.replace(target)


def _safe_suffix(path: Path) -> str:
    suffix = display_path(path.suffix)
    return suffix if suffix.isascii() and suffix[1:].isalnum() else ""
