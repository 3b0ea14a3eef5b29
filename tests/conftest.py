"""Test isolation: a throwaway FiftyOne database and Loupe home for the whole session.

The variables are set in ``pytest_configure``, before any test module imports FiftyOne, and
are inherited by subprocesses (CLI, Voila, second-process tests). The user's
``~/.fiftyone`` and ``~/.loupe`` are never touched.

``LOUPE_TEST_DATABASE_URI=mongodb://127.0.0.1:PORT`` runs the session against a MongoDB
you started (an empty one): a second session beside a running one would otherwise attach
to the first one's database service.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_SESSION_ROOT: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _SESSION_ROOT
    _SESSION_ROOT = Path(tempfile.mkdtemp(prefix="loupe-tests-"))
    os.environ["FIFTYONE_DATABASE_DIR"] = str(_SESSION_ROOT / "fiftyone-db")
    os.environ["LOUPE_HOME"] = str(_SESSION_ROOT / "loupe-home")
    own = os.environ.get("LOUPE_TEST_DATABASE_URI")
    if own:
        os.environ["FIFTYONE_DATABASE_URI"] = own
    else:
        os.environ.pop("FIFTYONE_DATABASE_URI", None)
    os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's folder (database, projects: about 0.5 GB after a full run) once
    its database server has exited, which happens after this process ends: a detached
    process waits for that. ``LOUPE_KEEP_TEST_DATA=1`` keeps the folder for a post-mortem."""
    if _SESSION_ROOT is None or os.environ.get("LOUPE_KEEP_TEST_DATA"):
        return
    subprocess.Popen([sys.executable, "-c", _REMOVE_WHEN_UNUSED, str(_SESSION_ROOT)],
                     start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_REMOVE_WHEN_UNUSED = """
import os, shutil, sys, time
import psutil
root, deadline = sys.argv[1], time.time() + 300
def in_use():
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid != os.getpid() and root in " ".join(proc.info["cmdline"] or []):
            return True
    return False
while in_use() and time.time() < deadline:
    time.sleep(0.5)
shutil.rmtree(root, ignore_errors=True)
"""


@pytest.fixture(scope="session")
def session_root() -> Path:
    """The session's throwaway folder (database and project folders live under it)."""
    assert _SESSION_ROOT is not None
    return _SESSION_ROOT


@pytest.fixture(scope="session")
def demo_project():
    """A small demo project shared by read-only tests (10 images per class)."""
    from workbench.demo import create_demo_project

    return create_demo_project("demo-small", n_per_class=10, seed=1, overwrite=True)


@pytest.fixture
def project(request):
    """A fresh, empty project named after the test."""
    import workbench as wb

    name = "t-" + request.node.name.replace("[", "-").replace("]", "")[:50]
    name = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)
    p = wb.Project.create(name, overwrite=True)
    yield p
    wb.delete_project(name)


@pytest.fixture(scope="session")
def widget_demo():
    """A demo project (10 images per class) that widget tests may write labels to, with two
    probe versions: ``v1`` (3 folds) and ``v2`` (3 folds, much stronger regularisation, so
    the two differ on some images).

    Each test that writes must only assert on the samples it wrote to."""
    import workbench as wb
    from workbench.demo import create_demo_project

    # Named per process: concurrent pytest sessions on one machine share the database server.
    p = create_demo_project(f"widget-demo-{os.getpid()}", n_per_class=10, seed=1,
                            overwrite=True)
    settings = {"mode": "probe", "folds": 3, "image_size": 128, "progress": False}
    v1 = wb.train(p, **settings)
    v2 = wb.train(p, probe_c=0.02, **settings)
    return p, v1, v2
