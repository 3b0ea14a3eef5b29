"""Where Loupe keeps its files, and the FiftyOne environment it runs in.

FiftyOne reads its configuration from environment variables when it is first imported,
so :func:`fiftyone` sets Loupe's defaults (offline, no usage tracking, accept the bundled
MongoDB 6.0) before importing it. Everything a user sets explicitly wins:
``FIFTYONE_DATABASE_DIR`` for a private database folder, ``FIFTYONE_DATABASE_URI`` for an
external MongoDB (the scale-out path) and ``LOUPE_HOME`` for project folders.

A database that does not answer is given up on after :func:`db_timeout_s` seconds
(``$LOUPE_DB_TIMEOUT_S``, default 5), not pymongo's 30 s: Loupe then raises
:class:`workbench.errors.DatabaseUnavailableError` instead of keeping a person waiting.
"""

from __future__ import annotations

import os
import re
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


#: Seconds to wait for an unreachable database, unless ``$LOUPE_DB_TIMEOUT_S`` says otherwise.
DEFAULT_DB_TIMEOUT_S = 5.0

_waits_bounded = False


def db_timeout_s() -> float:
    """Seconds a database call waits for an unreachable server (``$LOUPE_DB_TIMEOUT_S``).

    Read when FiftyOne first connects; set the variable before the first database call.
    """
    raw = os.environ.get("LOUPE_DB_TIMEOUT_S", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_DB_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not 0 < value < 3600:
        raise ValueError(f"LOUPE_DB_TIMEOUT_S={raw!r} must be a number of seconds between 0 "
                         f"and 3600 (default {DEFAULT_DB_TIMEOUT_S:g}); fix or unset it")
    return value


def fiftyone() -> ModuleType:
    """Import FiftyOne with Loupe's environment defaults applied first."""
    for key, value in FIFTYONE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import fiftyone as fo

    if not _waits_bounded:
        _bound_database_waits(fo)
    return fo


def _bound_database_waits(fo: ModuleType) -> None:
    """Give FiftyOne's client a server-selection timeout of :func:`db_timeout_s` (and a
    connect timeout of at least 10 s) before it connects, unless the URI sets its own.

    FiftyOne passes its module-level connection keywords to ``pymongo.MongoClient`` when it
    first connects; once connected, the client's options are fixed.
    """
    global _waits_bounded
    from fiftyone.core.odm import database

    _waits_bounded = True
    if database._client is not None:
        return
    uri = (fo.config.database_uri or "").lower()
    seconds = db_timeout_s()
    for option, value in (("serverSelectionTimeoutMS", seconds),
                          ("connectTimeoutMS", max(seconds, 10.0))):
        if option.lower() not in uri:
            database._connection_kwargs.setdefault(option, int(value * 1000))


def database_address() -> str:
    """Where the database is, for messages (credentials and options left out)."""
    fo = fiftyone()
    uri = fo.config.database_uri
    if uri:
        return re.sub(r"^(mongodb(?:\+srv)?://)[^@/]*@", r"\1", uri).split("?")[0]
    port = os.environ.get("FIFTYONE_PRIVATE_DATABASE_PORT", "?")
    return f"127.0.0.1:{port} (FiftyOne's own MongoDB)"
