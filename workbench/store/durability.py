"""Acknowledged means durable: journaled writes, database outages as one clear error, and
retries that never store an entry twice.

:mod:`workbench.store._db` writes every label history through :func:`durable` collections and
raises :func:`outage_error` when the server goes away mid-write; public calls are wrapped
in :func:`translate_outages`. An entry whose write was under way when the server went away
(stored or not: unknown) is remembered, and a retry of the same entry reuses it, time stamp
included, so the conditional write finds it in the history when it did land.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from pymongo.errors import ConnectionFailure

from workbench.config import database_address, fiftyone
from workbench.errors import DatabaseUnavailableError

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: What an interrupted call stored, when nothing was.
NOTHING_STORED = "nothing of this change was stored"


def durable(collection: Any) -> Any:
    """The collection with a journaled write concern: ``j=True``, and ``w="majority"`` when
    the server is a replica set or a sharded cluster (``w=1`` on a standalone server).

    A write acknowledged under it is on disk (on most members), so it survives a
    ``kill -9`` of the server.
    """
    from pymongo import WriteConcern

    return collection.with_options(
        write_concern=WriteConcern(w="majority" if _replicated(collection) else 1, j=True))


def _replicated(collection: Any) -> bool:
    client = collection.database.client
    description = client.topology_description
    if not description.has_known_servers:
        client.admin.command("ping")  # learn the topology (or fail fast when unreachable)
        description = client.topology_description
    if description.topology_type_name != "Single":
        return True  # a replica set, a sharded cluster or a load balancer
    kinds = {server.server_type_name for server in description.server_descriptions().values()}
    return bool(kinds & {"RSPrimary", "Mongos"})


def outage_error(error: BaseException, stored: str = NOTHING_STORED) -> DatabaseUnavailableError:
    """The error a person sees when the database does not answer.

    ``stored`` says what of the interrupted change is in the database.
    """
    detail = re.sub(r"\s*\(configured timeouts:[^)]*\)", "", str(error)).split(",")[0][:120]
    return DatabaseUnavailableError(
        f"the database at {database_address()} is unreachable ({type(error).__name__}: "
        f"{detail}); {stored}; try again when it is back (the same call made again stores "
        "each entry exactly once)")


@contextmanager
def outages_reported(*, check_first: bool = False) -> Iterator[None]:
    """Turn pymongo's connection failures (``ServerSelectionTimeoutError``, ``AutoReconnect``,
    ``NetworkTimeout``, ``ConnectionFailure``) into :class:`DatabaseUnavailableError`.

    ``check_first``: ping the server before the block, so that a call made while the server
    is down fails after one wait of ``$LOUPE_DB_TIMEOUT_S`` (FiftyOne's own reads, such as
    ``dataset.reload()``, may wait more than once).
    """
    try:
        if check_first:
            fiftyone()  # Loupe's settings (the bounded wait) before any connection
            from fiftyone.core.odm import database

            database.get_db_client().admin.command("ping")
        yield
    except ConnectionFailure as error:
        raise outage_error(error) from error


def translate_outages(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate a public call so that a database outage is a :class:`DatabaseUnavailableError`
    (the call's own, more precise error when it raised one); a server that is already down
    is found by one ping, before anything is read or written."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with outages_reported(check_first=True):
            return function(*args, **kwargs)

    return wrapper


#: Entries whose write was under way when the database went away (stored or not: unknown),
#: by (collection name, sample id). A retry of the same entry reuses it, time stamp included,
#: and finds it in the history when it did land: it is never stored twice.
_unconfirmed: dict[tuple[str, str], list[dict]] = {}
#: Seconds an unconfirmed entry waits for its retry (later, a retry is a new entry).
UNCONFIRMED_TTL_S = 600.0


def _identity(entry: Mapping) -> tuple:
    """What a retry of an entry repeats: who, what, whether a review (not when)."""
    boxes = entry.get("boxes")
    return (entry.get("annotator"), entry.get("label"), bool(entry.get("review")),
            None if boxes is None else tuple((b.get("label"), tuple(b.get("bounding_box") or ()))
                                             for b in boxes))


def _stamp(entry: Mapping) -> datetime | None:
    stamp = entry.get("time")
    return stamp.replace(tzinfo=None) if isinstance(stamp, datetime) else None


def reuse_unconfirmed(collection_name: str, sid: str, items: list[dict]) -> list[dict]:
    """``items`` with each entry that repeats a recent unconfirmed one replaced by that one."""
    oldest = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=UNCONFIRMED_TTL_S)
    waiting = [w for w in _unconfirmed.get((collection_name, sid), [])
               if (_stamp(w) or oldest) > oldest]
    _unconfirmed[(collection_name, sid)] = waiting
    if not waiting:
        _unconfirmed.pop((collection_name, sid), None)
        return items
    out = []
    for item in items:
        match = next((w for w in waiting if _identity(w) == _identity(item)), None)
        if match is not None:
            waiting.remove(match)
        out.append(match or item)
    if not waiting:
        _unconfirmed.pop((collection_name, sid), None)
    return out


def not_stored(history: Sequence[Mapping], items: list[dict]) -> list[dict]:
    """The ``items`` that are not in ``history`` (an earlier, interrupted write stored them)."""
    stored = {(_identity(e), _stamp(e)) for e in history}
    return [item for item in items if (_identity(item), _stamp(item)) not in stored]


def remember_unconfirmed(collection_name: str, items_by_sample: Mapping[str, list[dict]]
                         ) -> None:
    """Keep the entries of a write whose outcome is unknown, for :func:`reuse_unconfirmed`."""
    for sid, items in items_by_sample.items():
        _unconfirmed.setdefault((collection_name, sid), []).extend(items)


def stored_note(written: int, total: int, uncertain: bool) -> str:
    """What of an interrupted write of ``total`` samples is stored, for :func:`outage_error`."""
    if written:
        return (f"{written} of {total} sample(s) got their entries before it went away, the "
                "other(s) did not")
    return ("nothing of this change is confirmed stored (the write under way may have landed)"
            if uncertain else NOTHING_STORED)
