"""``loupe-edge watch``: inspect every image that lands in a folder, log a verdict per image,
and set the doubtful ones aside for the workbench (``project.import_feedback``).

::

    OUT_DIR/verdicts/verdicts.jsonl          one JSON line per image (rotated at 10 MB)
    OUT_DIR/feedback/<date>/<image>          doubtful images: low confidence or unfamiliar
    OUT_DIR/feedback/<date>/<image>.json     their verdicts

Each verdict line is written with one ``write`` on a file opened for appending, so a process
killed at any moment leaves every line complete or absent.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from loupe_edge.runtime import BadImageError, Inspector

#: Image files watched (by suffix, lower case).
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: A verdict log is rotated past this size.
ROTATE_BYTES = 10 * 1024 * 1024
#: A file is taken once it was closed after writing, or not modified for this long (s).
SETTLE_S = 0.3
#: Longest wait for a file to settle (seconds): then it is logged as unreadable.
SETTLE_LIMIT_S = 30.0


@dataclass
class Doubt:
    """When an image is sent back: ``confidence`` below ``min_confidence`` or
    ``ood_score`` at or above ``max_ood``."""

    min_confidence: float = 0.6
    max_ood: float = 0.99

    def reasons(self, verdict: dict[str, Any]) -> list[str]:
        found = []
        confidence = verdict.get("confidence")
        if confidence is not None and confidence < self.min_confidence:
            found.append(f"confidence {confidence:.2f} < {self.min_confidence:.2f}")
        ood = verdict.get("ood_score")
        if ood is not None and ood >= self.max_ood:
            found.append(f"unfamiliar {ood:.3f} >= {self.max_ood:.3f}")
        return found


class VerdictLog:
    """Append-only JSON lines in ``folder/verdicts.jsonl``, rotated past ``rotate_bytes``."""

    def __init__(self, folder: Path, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "verdicts.jsonl"
        self.rotate_bytes = rotate_bytes
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, default=str) + "\n").encode()
        with self._lock:
            if self.path.exists() and self.path.stat().st_size + len(line) > self.rotate_bytes:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
                self.path.rename(self.folder / f"verdicts-{stamp}.jsonl")
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(descriptor, line)  # one write: the line is whole or absent
            finally:
                os.close(descriptor)


def read_verdicts(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete verdict line of ``folder`` (rotated logs first, oldest first)."""
    folder = Path(folder)
    files = sorted(folder.glob("verdicts-*.jsonl"))
    if (folder / "verdicts.jsonl").exists():
        files.append(folder / "verdicts.jsonl")
    records = []
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash elsewhere: skipped, never fatal
    return records


@dataclass
class Watcher:
    """Inspect the images of ``incoming`` with ``inspector``; log and sort them into
    ``out``."""

    inspector: Inspector
    incoming: Path
    out: Path
    doubt: Doubt = field(default_factory=Doubt)
    on_verdict: Callable[[dict[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        self.incoming, self.out = Path(self.incoming), Path(self.out)
        if not self.incoming.is_dir():
            raise FileNotFoundError(f"no folder to watch at {self.incoming}")
        self.log = VerdictLog(self.out / "verdicts")
        self.queue: queue.Queue[Path | None] = queue.Queue()
        self.seen: set[Path] = set()
        self.closed: set[Path] = set()  # written and closed (inotify close-write)
        self.done = 0
        self._observer: Any = None
        self._worker: threading.Thread | None = None

    # -- one file ---------------------------------------------------------------------------
    def handle(self, path: Path) -> dict[str, Any] | None:
        """Inspect one file once it stopped growing; log it; set it aside when doubtful."""
        path = Path(path)
        if path in self.seen or path.suffix.lower() not in SUFFIXES \
                or path.name.startswith("."):
            return None
        self.seen.add(path)
        data = _settled(path, self.closed)
        record: dict[str, Any] = {"file": str(path), "time": _now()}
        if data is None:
            record["error"] = "the file vanished or kept changing"
        else:
            try:
                record.update(self.inspector.inspect_bytes(data))
            except BadImageError as error:
                record["error"] = str(error)
        reasons = [] if "error" in record else self.doubt.reasons(record)
        record["doubtful"] = bool(reasons)
        if reasons:
            record["why"] = reasons
            record["feedback"] = str(self._set_aside(path, data, record))
        self.log.append(record)
        self.done += 1
        if self.on_verdict is not None:
            self.on_verdict(record)
        return record

    def _set_aside(self, path: Path, data: bytes | None, record: dict[str, Any]) -> Path:
        folder = self.out / "feedback" / datetime.now(UTC).strftime("%Y-%m-%d")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / path.name
        if target.exists():
            target = folder / f"{path.stem}-{time.time_ns()}{path.suffix}"
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(data or b"")
        partial.replace(target)
        sidecar = target.with_name(target.name + ".json")
        sidecar.write_text(json.dumps(record, default=str))
        return target

    # -- the folder ---------------------------------------------------------------------------
    def start(self) -> None:
        """Inspect what is there already, then every file that lands (watchdog)."""
        watcher = self

        class Handler(FileSystemEventHandler):
            def on_created(self, event: FileSystemEvent) -> None:
                if not event.is_directory:
                    watcher.queue.put(Path(str(event.src_path)))

            def on_moved(self, event: FileSystemEvent) -> None:
                if not event.is_directory:
                    watcher.queue.put(Path(str(event.dest_path)))

            def on_closed(self, event: FileSystemEvent) -> None:
                if not event.is_directory:
                    watcher.closed.add(Path(str(event.src_path)))
                    watcher.queue.put(Path(str(event.src_path)))

        self._observer = Observer()
        self._observer.schedule(Handler(), str(self.incoming), recursive=True)
        self._observer.start()
        for path in sorted(p for p in self.incoming.rglob("*") if p.is_file()):
            self.queue.put(path)
        self._worker = threading.Thread(target=self._work, name="loupe-edge-watch",
                                        daemon=True)
        self._worker.start()

    def _work(self) -> None:
        while True:
            path = self.queue.get()
            if path is None:
                return
            try:
                self.handle(path)
            except OSError as error:  # the disk, not the image: logged, never fatal
                self.log.append({"file": str(path), "time": _now(),
                                 "error": f"{type(error).__name__}: {error}"})

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._worker is not None:
            self.queue.put(None)
            self._worker.join(timeout=30)


def _settled(path: Path, closed: set[Path]) -> bytes | None:
    """The file's bytes once its writer is done: closed after writing (inotify's
    close-write, in ``closed``), or not modified for :data:`SETTLE_S`."""
    deadline = time.monotonic() + SETTLE_LIMIT_S
    while time.monotonic() < deadline:
        try:
            modified = path.stat().st_mtime
        except FileNotFoundError:
            return None
        if path in closed or time.time() - modified >= SETTLE_S:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return None
        time.sleep(0.02)
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


__all__ = ["ROTATE_BYTES", "SUFFIXES", "Doubt", "VerdictLog", "Watcher", "read_verdicts"]
