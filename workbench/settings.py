"""Where Loupe keeps its files, and the FiftyOne environment it runs in.

FiftyOne reads its configuration from environment variables when it is first imported,
so :func:`fiftyone` sets Loupe's defaults (offline, no usage tracking, accept the bundled
MongoDB 6.0) before importing it. Everything a user sets explicitly wins:
``FIFTYONE_DATABASE_DIR`` for a private database folder, ``FIFTYONE_DATABASE_URI`` for an
external MongoDB (the scale-out path) and ``LOUPE_HOME`` for project folders.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

FIFTYONE_DEFAULTS = {
    "FIFTYONE_DATABASE_VALIDATION": "false",
    "FIFTYONE_DO_NOT_TRACK": "true",
    "FIFTYONE_SHOW_PROGRESS_BARS": "false",
}


def loupe_home() -> Path:
    """Folder holding every project folder (``$LOUPE_HOME``, default ``~/.loupe``)."""
    return Path(os.environ.get("LOUPE_HOME", Path.home() / ".loupe")).expanduser()


def projects_dir() -> Path:
    """Folder holding one sub-folder per project."""
    return loupe_home() / "projects"


def fiftyone() -> ModuleType:
    """Import FiftyOne with Loupe's environment defaults applied first."""
    for key, value in FIFTYONE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import fiftyone as fo

    return fo
