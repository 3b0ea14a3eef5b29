"""Job records: one SQLite file under the Loupe home that every process on the machine reads.

``<LOUPE_HOME>/jobs/jobs.sqlite3`` holds a ``jobs`` table (the queue itself: what to run,
its state, progress, result or error, who submitted and who cancelled it, when), the last
:data:`LOG_LINES` log lines of each job, and the workers that are running. The file is in
WAL mode, so a dashboard polling it never blocks a worker writing progress; every change is
one short ``BEGIN IMMEDIATE`` transaction.

States: ``queued`` → ``running`` → ``done`` | ``failed`` | ``cancelled``; a running job whose
worker stopped goes back to ``queued`` and resumes from its saved training state.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from workbench.config import loupe_home

State = Literal["queued", "running", "done", "failed", "cancelled"]
STATES: tuple[str, ...] = ("queued", "running", "done", "failed", "cancelled")
#: States a job never leaves.
FINAL_STATES = frozenset({"done", "failed", "cancelled"})
#: Log lines kept per job (older ones are dropped).
LOG_LINES = 500
#: Seconds a worker's heartbeat may be old before it no longer counts as running.
WORKER_FRESH_S = 15.0
_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    kind TEXT NOT NULL,
    arguments TEXT NOT NULL,
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT '',
    submitted_by TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    heartbeat_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker_pid INTEGER,
    result TEXT,
    error TEXT,
    cancelled_by TEXT,
    cancelled_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_project ON jobs (project, id);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, id);
CREATE TABLE IF NOT EXISTS job_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    at REAL NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_log_by_job ON job_log (job_id, seq);
CREATE TABLE IF NOT EXISTS workers (
    pid INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);
"""


def jobs_dir() -> Path:
    """Folder of the job queue (``<LOUPE_HOME>/jobs``): the database, locks, job logs."""
    return loupe_home() / "jobs"


def database_path() -> Path:
    """The queue's SQLite file."""
    return jobs_dir() / "jobs.sqlite3"


def lock_path(job_id: int) -> Path:
    """The lock a worker holds while it runs job ``job_id`` (released when it ends)."""
    return jobs_dir() / "locks" / f"{job_id}.lock"


def output_path(job_id: int) -> Path:
    """The full output (progress bars, tracebacks) of every attempt of job ``job_id``."""
    return jobs_dir() / "logs" / f"{job_id}.log"


@dataclass(frozen=True)
class JobRecord:
    """One row of the ``jobs`` table; times are UTC ``datetime`` (``None``: not yet)."""

    id: int
    project: str
    kind: str
    arguments: dict[str, Any]
    state: str
    progress: float
    stage: str
    submitted_by: str
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    attempts: int
    worker_pid: int | None
    result: str | None
    error: str | None
    cancelled_by: str | None
    cancelled_at: datetime | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRecord:
        values = dict(row)
        values["arguments"] = json.loads(values["arguments"])
        for name in ("submitted_at", "started_at", "finished_at", "heartbeat_at",
                     "cancelled_at"):
            values[name] = _datetime(values[name])
        return cls(**values)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(JobRecord))

_local = threading.local()


def connect() -> sqlite3.Connection:
    """This thread's connection to the queue (made, with the schema, on first use)."""
    path = database_path()
    cached = getattr(_local, "connections", None)
    if cached is None:
        cached = _local.connections = {}
    connection = cached.get(str(path))
    if connection is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA busy_timeout=30000")
        if connection.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
            connection.executescript(_SCHEMA)  # every statement is IF NOT EXISTS
            connection.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        cached[str(path)] = connection
    return connection


@contextmanager
def transaction(connection: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
    """One write transaction (``BEGIN IMMEDIATE``: writers queue up, readers go on)."""
    connection = connect() if connection is None else connection
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def insert(*, project: str, kind: str, arguments: dict[str, Any], submitted_by: str) -> int:
    """A new queued job; its id."""
    with transaction() as db:
        cursor = db.execute(
            "INSERT INTO jobs (project, kind, arguments, state, submitted_by, submitted_at) "
            "VALUES (?, ?, ?, 'queued', ?, ?)",
            (project, kind, json.dumps(arguments, sort_keys=True), submitted_by, time.time()))
        job_id = int(cursor.lastrowid)
        _log(db, job_id, f"submitted by {submitted_by}")
    return job_id


def get(job_id: int) -> JobRecord | None:
    """The record of job ``job_id`` (``None`` if there is none)."""
    row = connect().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else JobRecord.from_row(row)


def select(*, project: str | None = None, states: Sequence[str] = ()) -> list[JobRecord]:
    """Records, oldest first, of one project (or all) and some states (or all)."""
    query, values = "SELECT * FROM jobs WHERE 1", []
    if project is not None:
        query += " AND project = ?"
        values.append(project)
    if states:
        query += f" AND state IN ({', '.join('?' * len(states))})"
        values.extend(states)
    rows = connect().execute(query + " ORDER BY id", values).fetchall()
    return [JobRecord.from_row(row) for row in rows]


def update(job_id: int, *, only_if: Sequence[str] = (), log: str | None = None,
           db: sqlite3.Connection | None = None, **values: Any) -> bool:
    """Set columns of a job (only while its state is one of ``only_if``, when given), and
    append ``log``; whether the row changed."""
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise KeyError(f"not job columns: {sorted(unknown)}")
    with _maybe_transaction(db) as conn:
        query = f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?"
        params: list[Any] = [*values.values(), job_id]
        if only_if:
            query += f" AND state IN ({', '.join('?' * len(only_if))})"
            params.extend(only_if)
        changed = conn.execute(query, params).rowcount > 0 if values else True
        if changed and log:
            _log(conn, job_id, log)
    return changed


def append_log(job_id: int, line: str, db: sqlite3.Connection | None = None) -> None:
    """Add one line to a job's log."""
    with _maybe_transaction(db) as conn:
        _log(conn, job_id, line)


def log_tail(job_id: int, n: int = 20) -> list[str]:
    """The last ``n`` log lines of a job, oldest first, each ``HH:MM:SS line`` (UTC)."""
    rows = connect().execute("SELECT at, line FROM job_log WHERE job_id = ? ORDER BY seq DESC "
                             "LIMIT ?", (job_id, max(0, int(n)))).fetchall()
    return [f"{datetime.fromtimestamp(at, UTC):%H:%M:%S} {line}" for at, line in rows[::-1]]


def live_workers(db: sqlite3.Connection | None = None) -> list[int]:
    """Pids of the workers that sent a heartbeat in the last :data:`WORKER_FRESH_S` s."""
    conn = connect() if db is None else db
    rows = conn.execute("SELECT pid FROM workers WHERE heartbeat_at > ? ORDER BY pid",
                        (time.time() - WORKER_FRESH_S,)).fetchall()
    return [row[0] for row in rows]


def worker_alive(db: sqlite3.Connection | None = None) -> bool:
    """Whether some worker sent a heartbeat in the last :data:`WORKER_FRESH_S` seconds."""
    return bool(live_workers(db))


def worker_heartbeat(pid: int, *, started_at: float) -> None:
    """Record that worker ``pid`` is alive (and forget workers silent for an hour)."""
    stamp = time.time()
    with transaction() as db:
        db.execute("INSERT INTO workers (pid, started_at, heartbeat_at) VALUES (?, ?, ?) "
                   "ON CONFLICT (pid) DO UPDATE SET started_at = excluded.started_at, "
                   "heartbeat_at = excluded.heartbeat_at", (pid, started_at, stamp))
        db.execute("DELETE FROM workers WHERE heartbeat_at < ?", (stamp - 3600,))


def worker_gone(pid: int) -> None:
    """Remove worker ``pid`` (it stopped)."""
    with transaction() as db:
        db.execute("DELETE FROM workers WHERE pid = ?", (pid,))


def _log(db: sqlite3.Connection, job_id: int, line: str) -> None:
    db.execute("INSERT INTO job_log (job_id, at, line) VALUES (?, ?, ?)",
               (job_id, time.time(), str(line)[:2000]))
    db.execute("DELETE FROM job_log WHERE job_id = ? AND seq <= (SELECT seq FROM job_log "
               "WHERE job_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
               (job_id, job_id, LOG_LINES))


@contextmanager
def _maybe_transaction(db: sqlite3.Connection | None) -> Iterator[sqlite3.Connection]:
    if db is not None:
        yield db
    else:
        with transaction() as conn:
            yield conn


def _datetime(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def private_folders() -> None:
    """Make the queue's folders (locks, job output), private to this user (0700)."""
    for folder in (jobs_dir(), jobs_dir() / "locks", jobs_dir() / "logs"):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)


__all__ = ["COLUMNS", "FINAL_STATES", "STATES", "JobRecord", "State", "append_log", "connect",
           "database_path", "get", "insert", "jobs_dir", "live_workers", "lock_path", "log_tail",
           "output_path", "private_folders", "select", "transaction", "update",
           "worker_alive", "worker_gone", "worker_heartbeat"]
