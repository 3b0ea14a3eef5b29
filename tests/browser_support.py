"""Shared by the browser tests: Debian chromium, servers on free ports, small notebooks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
REPO_ROOT = Path(__file__).resolve().parents[1]
#: Where browser tests leave their screenshots: a temporary folder, or the folder named by
#: ``$LOUPE_SCREENSHOTS`` (``make screenshots`` sets it to ``docs/img``).
SCREENSHOTS = REPO_ROOT / os.environ.get(
    "LOUPE_SCREENSHOTS", str(Path(tempfile.gettempdir()) / f"loupe-screenshots-{os.getuid()}"))
SERVER_TIMEOUT_S = 180


def require_chromium() -> None:
    """Skip without chromium, except in CI, where browser tests must run."""
    if CHROMIUM.is_file():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing and CI is set: browser tests must run in CI. "
                    "Install Debian's chromium (make chromium).")
    pytest.skip(f"{CHROMIUM} not found; install it with 'make chromium' "
                "(apt-get install chromium) to run browser tests")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(log: Path, n: int = 40) -> str:
    lines = log.read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


def wait_for_server(url: str, proc: subprocess.Popen, log: Path) -> None:
    """Wait until ``url`` answers anything over HTTP (HEAD starts no kernel)."""
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with code {proc.returncode} before serving "
                        f"{url}; its output ends with:\n{log_tail(log)}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                        timeout=5):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means the server is up
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    pytest.fail(f"{url} did not answer within {SERVER_TIMEOUT_S} s; the server's output "
                f"ends with:\n{log_tail(log)}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started in its own session, with everything it started."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@contextmanager
def serve(command: Sequence[str], url: str, log: Path, cwd: Path = REPO_ROOT,
          env: dict[str, str] | None = None) -> Iterator[str]:
    """Run a server command in its own process group until the block ends."""
    with log.open("wb") as out:
        proc = subprocess.Popen(list(command), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
    try:
        wait_for_server(url, proc, log)
        yield url
    finally:
        stop(proc)


@contextmanager
def serve_project(project: str, log: Path, *extra: str) -> Iterator[str]:
    """``loupe serve --project PROJECT`` (preheated pools, job worker) on a free port of
    127.0.0.1 until the block ends; yields the server's root URL."""
    port = free_port()
    command = [sys.executable, "-m", "workbench.cli", "serve", "--project", project,
               "--port", str(port), *extra]
    with serve(command, f"http://127.0.0.1:{port}/", log) as url:
        yield url


def write_notebook(path: Path, cells: Sequence[str]) -> Path:
    """A notebook of code cells (Python 3 kernel)."""
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}",
                   "metadata": {}, "outputs": [], "source": source}
                  for i, source in enumerate(cells)],
        "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)",
                                    "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook, indent=1))
    return path


def launch(playwright):
    """Headless Debian chromium."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=CHROMIUM_ARGS)


@contextmanager
def chromium() -> Iterator:
    """A running headless Debian chromium (skips the test where it is not installed)."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


def offline_context(browser, external: list[str]):
    """A browser context where every request leaving 127.0.0.1 is aborted and recorded in
    ``external`` (the dashboards must work on a machine with no network)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})

    def route(request_route):
        target = request_route.request.url
        if target.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")):
            request_route.continue_()
        else:
            external.append(target)
            request_route.abort()

    context.route("**/*", route)
    return context
