"""One training run at a time per project and settings: an OS lock on a file beside the
run's folder.

>>> with run_lock(folder / "models" / ".runs" / f"{key}.lock", what="…"):
...     ...                      # a second process gets RunInProgressError naming our pid

The lock is ``flock`` on ``<key>.lock``: the operating system releases it when the process
ends in any way (``kill -9`` included), so ``train(..., resume=True)`` after a crash takes
it at once and goes on from the killed run's saved state. The file is removed when the run
ends; a process that opened it just before is told so by its inode and opens it again.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench.errors import LoupeError


class RunInProgressError(LoupeError, RuntimeError):
    """Another process is already running this training (same project, same settings)."""


@contextmanager
def run_lock(path: Path, *, what: str) -> Iterator[None]:
    """Hold the lock ``path`` for the ``with`` block, or raise :class:`RunInProgressError`.

    ``what`` names the run in the error ("training project 'x' with these settings").
    """
    descriptor = acquire(path, what=what)
    try:
        yield
    finally:
        release(path, descriptor)


def acquire(path: Path, *, what: str) -> int:
    """Take the lock (never waits); the open descriptor that holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(descriptor)
            os.close(descriptor)
            raise RunInProgressError(
                f"already {what} (pid {holder}); this call was not started. Wait for that "
                "run to finish (it writes the next model version), or stop it; a stopped or "
                "killed run's state is kept, and train(..., resume=True) goes on from it. "
                f"Lock file: {str(path)!r}.") from None
        if _still_named(descriptor, path):
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode())
            return descriptor
        os.close(descriptor)  # the holder removed the file as we opened it: open it again


def release(path: Path, descriptor: int) -> None:
    """Remove the lock file (still holding the lock, so nobody else holds this inode), then
    let go."""
    try:
        if _still_named(descriptor, path):
            path.unlink()
    finally:
        os.close(descriptor)


def _still_named(descriptor: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``descriptor``."""
    try:
        named = path.lstat()
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _holder(descriptor: int) -> str:
    """The pid the lock's holder wrote (``"unknown"`` while it has not written it yet)."""
    text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"


__all__ = ["RunInProgressError", "acquire", "release", "run_lock"]
