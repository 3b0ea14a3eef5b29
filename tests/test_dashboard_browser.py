"""The main dashboard, end to end: ``loupe demo`` serves Voila, Chromium renders it.

Runs the real command in a subprocess (it builds the demo project into the session's
throwaway database, set up by ``conftest.py``, then serves the dashboards folder with Voila
on 127.0.0.1, without preheated kernels here) and drives
Debian's chromium through Playwright. Leaves a screenshot ``dashboard.png`` in
``browser_support.SCREENSHOTS`` (``make screenshots``: for the README).
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from browser_support import (
    REPO_ROOT,
    SCREENSHOTS,
    launch,
    log_tail,
    require_chromium,
    stop,
    wait_for_server,
)
from browser_support import free_port as _free_port

SCREENSHOT = SCREENSHOTS / "dashboard.png"
RENDER_TIMEOUT_S = 120

pytestmark = pytest.mark.browser


@pytest.fixture
def dashboard_url(tmp_path):
    """``loupe demo`` on a free port; yields the base URL, then stops the whole group."""
    port = _free_port()
    log = tmp_path / "loupe-demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "demo", "--port", str(port), "--no-preheat"],
            cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_server(url, proc, log)
        yield url, log
    finally:
        stop(proc)


@pytest.mark.slow
def test_main_dashboard_renders_thumbnails(dashboard_url):
    require_chromium()
    from playwright.sync_api import sync_playwright

    from widgets import ProjectOverview
    from workbench.demo.render import CLASSES

    url, log = dashboard_url
    per_class = inspect.signature(ProjectOverview).parameters["per_class"].default
    expected = len(CLASSES) * per_class
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url + "voila/render/main.ipynb", wait_until="domcontentloaded",
                      timeout=RENDER_TIMEOUT_S * 1000)
            try:
                # Thumbnails, or a traceback (fail at once instead of waiting it out).
                page.wait_for_function(
                    "() => document.querySelector('img.loupe-thumb') !== null"
                    " || (document.body !== null && document.body.innerText.includes('Traceback'))",
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
                            f"server output:\n{log_tail(log)}\nscreenshot: {failed}")
            # The workbench under the overview opens on its labelling grid.
            page.wait_for_selector(".loupe-workbench .loupe-grid .loupe-tile img",
                                   timeout=RENDER_TIMEOUT_S * 1000)
            workbench_tabs = page.inner_text(".loupe-workbench .lm-TabBar, "
                                             ".loupe-workbench .widget-tab-bar")
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
    assert all(tab in workbench_tabs for tab in ("Label", "Confusion", "Issues", "Compare"))
    assert SCREENSHOT.stat().st_size > 10_000
