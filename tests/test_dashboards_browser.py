"""The review and report dashboards, end to end: ``loupe serve`` runs Voila with preheated
kernels and Loupe's offline template; Debian's chromium opens the pages with every request
to anywhere but 127.0.0.1 aborted and recorded.

Two browser contexts (two inspectors, two names) decide an image each from the keyboard at
the same time; both decisions are checked in the store from this process, which shares the
session's throwaway database with the server's kernels.
"""

from __future__ import annotations

import os
import sys
import time

import pytest
from browser_support import (
    REPO_ROOT,
    chromium,
    free_port,
    log_tail,
    offline_context,
    serve,
)

from workbench.store import _db as store

pytestmark = pytest.mark.browser

RENDER_TIMEOUT_MS = 240_000
STORE_TIMEOUT_S = 30
REPORT_SECTIONS = ("Headline", "Confusion drill-down", "Slices", "Compared with", "Drift",
                   "Drift checks", "Dataset card")


@pytest.fixture(scope="module")
def dashboard_project():
    """A small demo project with two probe versions (report compares them) and a drift
    check (report plots the history)."""
    import workbench as wb
    from workbench.demo import create_demo_project
    from workbench.monitor.drift import drift

    p = create_demo_project(f"dash-browser-{os.getpid()}", n_per_class=10, seed=1,
                            overwrite=True)
    settings = {"mode": "probe", "folds": 3, "image_size": 64, "progress": False}
    wb.train(p, **settings)
    v2 = wb.train(p, probe_c=0.02, **settings)
    drift(p, v2, p.dataset.values("filepath")[:12], n_permutations=200)
    yield p
    wb.delete_project(p.name)


@pytest.fixture(scope="module")
def server(dashboard_project, tmp_path_factory):
    """``loupe serve`` (preheated kernels) on a free port; yields (base URL, log)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "loupe-serve.log"
    command = [sys.executable, "-m", "workbench.cli", "serve", "--project",
               dashboard_project.name, "--port", str(port)]
    url = f"http://127.0.0.1:{port}/"
    with serve(command, url, log, cwd=REPO_ROOT):
        yield url, log


@pytest.fixture
def browser():
    with chromium() as running:
        yield running


def _wait_rendered(page, selector: str, log) -> None:
    try:
        page.wait_for_function(
            "sel => document.querySelector(sel) !== null"
            " || (document.body !== null"
            "     && document.body.innerText.includes('Traceback'))",
            arg=selector, timeout=RENDER_TIMEOUT_MS)
    except Exception as err:
        pytest.fail(f"{selector!r} did not render ({err}); page text:\n"
                    f"{page.inner_text('body')[:2000]}\nserver output:\n{log_tail(log)}")
    text = page.inner_text("body")
    assert "Traceback" not in text, text[:3000]


def _entries_by(project, annotator: str) -> list[dict]:
    histories = store.histories(project.dataset, project.dataset.values("id"))
    return [dict(entry, sample_id=sid) for sid, history in histories.items()
            for entry in history if entry["annotator"] == annotator]


def _wait_entry(project, annotator: str) -> dict:
    deadline = time.monotonic() + STORE_TIMEOUT_S
    while time.monotonic() < deadline:
        entries = _entries_by(project, annotator)
        if entries:
            return entries[-1]
        time.sleep(0.2)
    pytest.fail(f"no decision by {annotator!r} reached the store within {STORE_TIMEOUT_S} s")


@pytest.mark.slow
def test_landing_page_links_the_dashboards_offline(server, browser):
    url, _ = server
    external: list[str] = []
    page = offline_context(browser, external).new_page()
    page.goto(url, wait_until="load")
    links = page.eval_on_selector_all(
        "a.loupe-dashboard-link", "els => els.map(a => a.getAttribute('data-notebook'))")
    assert links == ["review.ipynb", "report.ipynb", "main.ipynb"]
    assert "Loupe dashboards" in page.inner_text("body")
    assert external == []


@pytest.mark.slow
def test_two_inspectors_review_concurrently_from_the_keyboard(dashboard_project, server,
                                                             browser):
    url, log = server
    p = dashboard_project
    external: list[str] = []
    names = [f"inspector-a-{os.getpid()}", f"inspector-b-{os.getpid()}"]
    pages = [offline_context(browser, external).new_page() for _ in names]
    for page in pages:  # both open the app at once, each on its own (preheated) kernel
        page.goto(url + "voila/render/review.ipynb", wait_until="commit",
                  timeout=RENDER_TIMEOUT_MS)
    decided = []
    for page, who in zip(pages, names, strict=True):
        _wait_rendered(page, ".loupe-name input", log)
        # Nothing to decide with until a name is given.
        assert not page.locator(".loupe-review").first.is_visible()
        page.locator(".loupe-name input").fill(who)
        page.keyboard.press("Enter")
        queue = page.locator(".loupe-review:has(.loupe-review-image)").first
        queue.wait_for(state="visible", timeout=60_000)
        queue.focus()
        page.keyboard.press("1")  # the first class, as a review decision
        decided.append(p.classes[0])
    # Icons come from Voila's own bundle, not a CDN.
    icon = pages[0].evaluate(
        "() => { const i = document.querySelector('button .fa-refresh, button .fa');"
        " return i && getComputedStyle(i, '::before').fontFamily; }")
    fonts_ok = pages[0].evaluate(
        "() => document.fonts.ready.then(() =>"
        " document.fonts.check('900 14px \"Font Awesome 5 Free\"'))")
    for who, label in zip(names, decided, strict=True):
        entry = _wait_entry(p, who)
        assert entry["label"] == label and entry["review"]
    for page in pages:
        page.wait_for_function(
            "() => [...document.querySelectorAll('.loupe-review-message')]"
            ".some(m => m.textContent.includes('relabelled'))", timeout=30_000)
    assert external == [], external
    assert icon and "Font Awesome" in icon
    assert fonts_ok


@pytest.mark.slow
def test_report_renders_every_section_offline(server, browser):
    url, log = server
    external: list[str] = []
    page = offline_context(browser, external).new_page()
    page.goto(url + "voila/render/report.ipynb", wait_until="commit",
              timeout=RENDER_TIMEOUT_MS)
    _wait_rendered(page, ".loupe-drift-status", log)
    page.wait_for_selector(".loupe-confusion .js-plotly-plot", timeout=60_000)
    text = page.inner_text("body")
    for title in REPORT_SECTIONS:
        assert title in text, f"{title!r} missing from the report:\n{text[:3000]}"
    assert "1 check(s)" in text
    assert "not available" not in text, text[:3000]
    assert external == [], external
