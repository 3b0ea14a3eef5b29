"""Files written under a temporary name, and the clean-up of those a killed process left.

An export (archive, ONNX, TorchScript) and a restore write under a hidden name that carries
the writer's host and process id (``.casing.tar.3f2a9c1e-41235-9b8d7a6c.partial``). A
failure removes it at once; a process killed with ``SIGKILL`` cannot, so the next export
into the same folder (and the next restore, for its staging folders) removes every such
leftover whose process is gone.

>>> partial = partial_path(Path("backups/casing.tar"))   # write here, then replace()
>>> remove_stale(Path("backups"))                         # at the start of the next export
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
import uuid
from pathlib import Path

from workbench.store.safe_paths import remove_inside

#: Leftovers of another host (a shared folder) are removed once they are this old (seconds).
FOREIGN_MAX_AGE = 24 * 3600
_LEFTOVER = re.compile(r"^\..*\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}\.partial"
                       r"(?:\.[A-Za-z0-9]+)?$")


def host_id() -> str:
    """Eight hex digits naming this machine (its host name hashed)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def owner_tag() -> str:
    """``<host>-<pid>-<random>``: who writes a temporary file, unique per call."""
    return f"{host_id()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def partial_path(path: Path, *, keep_suffix: bool = False) -> Path:
    """The hidden temporary name to write ``path`` under (same folder: ``replace`` is atomic).

    ``keep_suffix`` ends the name with ``path``'s suffix (``.onnx``), for writers and
    loaders that pick a format by it.
    """
    suffix = path.suffix if keep_suffix else ""
    stem = path.stem if keep_suffix else path.name
    return path.with_name(f".{stem}.{owner_tag()}.partial{suffix}")


def process_alive(host: str, pid: int) -> bool:
    """Whether process ``pid`` of ``host`` may still run (always True for another host)."""
    if host != host_id():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def is_stale(path: Path) -> bool:
    """Whether ``path`` is a leftover temporary file whose writer is gone."""
    match = _LEFTOVER.match(path.name)
    if match is None:
        return False
    if match["host"] != host_id():
        try:
            return time.time() - path.lstat().st_mtime > FOREIGN_MAX_AGE
        except OSError:
            return False
    return not process_alive(match["host"], int(match["pid"]))


def remove_stale(folder: Path) -> list[Path]:
    """Remove the leftover temporary files and folders in ``folder``; returns them."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if is_stale(entry):
            try:
                remove_inside(folder, entry, what="leftover temporary file")
            except OSError:
                continue
            removed.append(entry)
    return removed


__all__ = ["FOREIGN_MAX_AGE", "host_id", "is_stale", "owner_tag", "partial_path",
           "process_alive", "remove_stale"]
