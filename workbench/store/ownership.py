"""Which FiftyOne datasets are Loupe's projects: valid names and the ownership marker.

Loupe deletes or replaces only datasets it created; another tool's dataset of the same
name is never touched.
"""

from __future__ import annotations

import re

from workbench.config import fiftyone
from workbench.errors import ProjectError
from workbench.store import _db as store

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: Key and value of the marker Loupe puts in ``dataset.info["loupe"]`` of every dataset it
#: creates (projects and restores); only such datasets are ever deleted or replaced.
OWNER_KEY, OWNER = "created_by", "loupe"


def created_by_loupe(name: str) -> bool:
    """Whether the FiftyOne dataset ``name`` is one Loupe created (and may delete or replace).

    Read from the raw database document, without loading the dataset: the marker
    ``info["loupe"]["created_by"] == "loupe"``; or, for projects made before the marker
    existed, the ``loupe`` dataset tag together with Loupe's own bookkeeping
    (``info["loupe"]`` holding ``schema_version`` and ``classes``).
    """
    doc = fiftyone().core.odm.get_db_conn().datasets.find_one(
        {"name": name}, {"tags": 1, "info": 1}) or {}
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    loupe = info.get("loupe")
    if not isinstance(loupe, dict):
        return False
    if loupe.get(OWNER_KEY) == OWNER:
        return True
    tags = doc.get("tags") if isinstance(doc.get("tags"), list) else []
    return store.PROJECT_TAG in tags and {"schema_version", "classes"} <= set(loupe)


def require_loupe_dataset(name: str, action: str) -> None:
    """Raise :class:`ProjectError` unless the dataset ``name`` is one Loupe created."""
    if not created_by_loupe(name):
        raise ProjectError(
            f"the FiftyOne dataset {name!r} was not created by Loupe, so Loupe will not "
            f"{action} it (it may belong to another tool). Choose another project name, or "
            "delete that dataset yourself with FiftyOne if you really mean to")


def check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ProjectError(
            f"invalid project name {name!r}: use 1–64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit")


__all__ = ["OWNER", "OWNER_KEY", "check_name", "created_by_loupe", "require_loupe_dataset"]
