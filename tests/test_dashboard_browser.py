"""The main dashboard, end to end: ``loupe demo`` serves Voila, Chromium renders it.

Runs the real command in a subprocess (it builds the demo project into the session's
throwaway database, set up by ``conftest.py``, then serves Voila on 127.0.0.1) and drives
Debian's chromium through Playwright. Leaves a screenshot in ``docs/img/dashboard.png``
for the README.
"""

from __future__ import annotations

import inspect
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO_ROOT / "docs" / "img" / "dashboard.png"
SERVER_TIMEOUT_S = 180
RENDER_TIMEOUT_S = 120

pytestmark = pytest.mark.browser


def _require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing and CI is set: browser tests must run in CI. "
                    "Install Debian's chromium (make chromium).")
    pytest.skip(f"{CHROMIUM} not found; install it with 'make chromium' "
                "(apt-get install chromium) to run browser tests")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log: Path, n: int = 40) -> str:
    lines = log.read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"loupe demo exited with code {proc.returncode} before serving "
                        f"{url}; its output ends with:\n{_log_tail(log)}")
        # HEAD is answered (405) without starting a kernel, unlike GET of the dashboard.
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                        timeout=5):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means the server is up
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    pytest.fail(f"{url} did not answer within {SERVER_TIMEOUT_S} s; loupe demo's output "
                f"ends with:\n{_log_tail(log)}")


def _stop(proc: subprocess.Popen) -> None:
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


@pytest.fixture
def dashboard_url(tmp_path):
    """``loupe demo`` on a free port; yields the base URL, then stops the whole group."""
    port = _free_port()
    log = tmp_path / "loupe-demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "demo", "--port", str(port)],
            cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_server(url, proc, log)
        yield url, log
    finally:
        _stop(proc)


def test_main_dashboard_renders_thumbnails(dashboard_url):
    _require_chromium()
    from playwright.sync_api import sync_playwright

    from widgets import ProjectOverview
    from workbench.demo_render import CLASSES

    url, log = dashboard_url
    per_class = inspect.signature(ProjectOverview).parameters["per_class"].default
    expected = len(CLASSES) * per_class
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url, wait_until="domcontentloaded", timeout=RENDER_TIMEOUT_S * 1000)
            try:
                # Thumbnails, or a traceback (fail at once instead of waiting it out).
                page.wait_for_function(
                    "() => document.querySelector('img.loupe-thumb') !== null"
                    " || document.body.innerText.includes('Traceback')",
                    timeout=RENDER_TIMEOUT_S * 1000)
                page.wait_for_function(
                    "n => [...document.querySelectorAll('img.loupe-thumb')]"
                    ".filter(img => img.complete && img.naturalWidth > 0).length >= n",
                    arg=expected, timeout=30_000)
            except Exception as err:
                failed = log.with_name("dashboard-failed.png")
                page.screenshot(path=str(failed), full_page=True)
                pytest.fail(f"the dashboard did not show {expected} thumbnails ({err}); "
                            f"page text:\n{page.inner_text('body')[:2000]}\n"
                            f"server output:\n{_log_tail(log)}\nscreenshot: {failed}")
            decoded = page.evaluate(
                "() => [...document.querySelectorAll('img.loupe-thumb')]"
                ".filter(img => img.naturalWidth > 0).length")
            titles = page.evaluate(
                "() => [...document.querySelectorAll('img.loupe-thumb')].map(i => i.title)")
            text = page.inner_text("body")
            # Voila's page scrolls inside a container, so full_page alone would cut the
            # grid: grow the viewport to the overview's height instead.
            bottom = page.evaluate(
                "() => document.querySelector('.loupe-overview')"
                ".getBoundingClientRect().bottom + window.scrollY")
            page.set_viewport_size({"width": 1280, "height": min(int(bottom) + 32, 4000)})
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()

    assert "Loupe — demo" in text
    assert decoded >= expected
    assert all(title.endswith(tuple(f" — {c}" for c in CLASSES)) for title in titles)
    assert "Samples per class and split" in text
    assert "Traceback" not in text
    assert SCREENSHOT.stat().st_size > 10_000
