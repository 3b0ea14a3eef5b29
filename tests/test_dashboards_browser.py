"""The review and report dashboards, end to end: ``loupe serve`` runs Voila with preheated
kernels and Loupe's offline template; Debian's chromium opens the pages with every request
to anywhere but 127.0.0.1 aborted and recorded.

Two browser contexts (two inspectors, two names) decide an image each from the keyboard at
the same time; both decisions are checked in the store from this process, which shares the
session's throwaway database with the server's kernels.
"""

from __future__ import annotations

import os
import re
import sys
import time
from urllib.parse import urlencode

import pytest
from browser_support import (
    REPO_ROOT,
    SCREENSHOTS,
    chromium,
    free_port,
    log_tail,
    offline_context,
    serve,
)
from PIL import Image, ImageEnhance

from workbench.deploy.landing import PER_PAGE
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
def test_landing_page_links_the_dashboards_offline(dashboard_project, server, browser):
    url, _ = server
    external: list[str] = []
    page = offline_context(browser, external).new_page()
    page.goto(url, wait_until="load")
    links = page.eval_on_selector_all(
        "a.loupe-dashboard-link", "els => els.map(a => a.getAttribute('data-notebook'))")
    assert links == ["review.ipynb", "report.ipynb", "main.ipynb", "line.ipynb"]
    titles = page.eval_on_selector_all("a.loupe-dashboard-link .name",
                                       "els => els.map(e => e.textContent.trim())")
    assert titles == ["Review", "Model report", "Workbench", "Line console"]
    assert "Loupe dashboards" in page.inner_text("body")
    # The served project comes first, with its last drift check (the fixture's) in words.
    first = page.locator(".loupe-project").first
    assert first.get_attribute("data-project") == dashboard_project.name
    assert first.get_attribute("data-drift") in ("drift", "no drift")
    assert "last check" in first.inner_text() and "no line runs a model" in first.inner_text()
    # Many projects: a page at a time, and a search by part of the name.
    total = int(page.locator(".loupe-pager").get_attribute("data-matching"))
    assert total >= 1 and page.locator(".loupe-project").count() == min(total, PER_PAGE)
    page.goto(url + "?" + urlencode({"q": dashboard_project.name.upper()}), wait_until="load")
    names = page.eval_on_selector_all(".loupe-project", "els => els.map(e => e.dataset.project)")
    assert names[0] == dashboard_project.name
    assert all(dashboard_project.name in name for name in names)
    assert page.locator("#loupe-project-q").input_value() == dashboard_project.name.upper()
    assert "projects contain" in page.locator(".loupe-pager").inner_text()
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
    # B decides the next card while A's page stays open: A's page marks it within a poll.
    before = len(_entries_by(p, names[1]))
    pages[1].keyboard.press("1")
    deadline = time.monotonic() + STORE_TIMEOUT_S
    while len(_entries_by(p, names[1])) == before:
        assert time.monotonic() < deadline, "B's second decision did not reach the store"
        time.sleep(0.2)
    pages[0].wait_for_selector(".loupe-review-taken", timeout=30_000)
    assert names[1] in pages[0].inner_text(".loupe-review-taken")
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


@pytest.mark.slow
def test_a_preheated_page_shows_the_store_as_it_is_at_the_visit(dashboard_project, server,
                                                                 browser, tmp_path):
    """The kernels of the pools ran their notebook when the server started (or when a
    visit took the previous one); a version trained, a drift check run and a decision made
    afterwards all show on the next visit, and the page says when it read the store."""
    import workbench as wb
    from workbench.monitor.drift import drift

    url, log = server
    p = dashboard_project
    # Take the report's preheated kernel, and wait until the pool has started its
    # replacement: that kernel exists before anything below changes the store.
    filled = re.compile(r"Kernel pool of \S*report\.ipynb is filled")
    before = len(filled.findall(log.read_text(errors="replace")))
    external: list[str] = []
    early = offline_context(browser, external).new_page()
    early.goto(url + "voila/render/report.ipynb", wait_until="commit",
               timeout=RENDER_TIMEOUT_MS)
    _wait_rendered(early, ".loupe-drift-status", log)
    deadline = time.monotonic() + 120
    while len(filled.findall(log.read_text(errors="replace"))) <= before:
        assert time.monotonic() < deadline, log_tail(log)
        time.sleep(0.5)
    early.close()
    newest = wb.train(p, mode="probe", folds=3, image_size=64, probe_c=0.5, progress=False)
    night = tmp_path / "night"
    night.mkdir()
    for i, path in enumerate(p.dataset.values("filepath")[:16]):
        ImageEnhance.Brightness(Image.open(path)).enhance(0.3).save(night / f"night_{i}.png")
    check = drift(p, newest, night, n_permutations=200)
    assert check.drifted  # a much darker batch
    page = offline_context(browser, external).new_page()
    page.goto(url + "voila/render/report.ipynb", wait_until="commit",
              timeout=RENDER_TIMEOUT_MS)
    _wait_rendered(page, ".loupe-drift-status", log)
    versions = page.eval_on_selector_all(
        ".widget-dropdown select option", "els => els.map(e => e.textContent.trim())")
    assert newest.name in versions, versions
    status = page.inner_text(".loupe-drift-status")
    assert f"{len(p.drift_history())} check(s)" in status and newest.name in status
    assert "as of" in page.inner_text("body")
    # The headline says what it was computed on; the drill-down says its own basis.
    text = page.inner_text("body")
    assert "accuracy at training" in text and "accuracy on current labels" in text
    # The drift flag is at the top of every page, in words and local time.
    flag = page.locator(".loupe-drift-flag").first
    assert flag.is_visible() and "night" in flag.inner_text()
    review = offline_context(browser, external).new_page()
    review.goto(url + "voila/render/review.ipynb", wait_until="commit",
                timeout=RENDER_TIMEOUT_MS)
    _wait_rendered(review, ".loupe-drift-flag", log)
    assert "checked" in review.inner_text(".loupe-drift-flag")
    assert external == [], external


@pytest.mark.slow
def test_the_browser_remembers_the_typed_name(
        dashboard_project, server, browser):
    url, log = server
    external: list[str] = []
    context = offline_context(browser, external)
    first = context.new_page()
    first.goto(url + "voila/render/review.ipynb", wait_until="commit",
               timeout=RENDER_TIMEOUT_MS)
    _wait_rendered(first, ".loupe-name input", log)
    assert first.locator(".loupe-name input").input_value() == ""
    assert not first.locator(".loupe-review").first.is_visible()  # no name, no queue
    who = f"remembered-{os.getpid()}"
    first.locator(".loupe-name input").fill(who)
    first.keyboard.press("Enter")
    first.wait_for_function(
        "key => window.localStorage.getItem(key) !== null", arg="loupe.annotator",
        timeout=RENDER_TIMEOUT_MS)
    # The queue opens once the kernel has the name: the first visit is over, its kernel idle.
    first.locator(".loupe-review").first.wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
    first.close()
    second = context.new_page()  # same browser, a later visit
    second.goto(url + "voila/render/review.ipynb", wait_until="commit",
                timeout=RENDER_TIMEOUT_MS)
    _wait_rendered(second, ".loupe-name input", log)
    # The stored name travels browser -> kernel -> name box: on a loaded 2-core machine that
    # round trip waits behind the notebook still running in the new kernel.
    second.wait_for_function(
        "name => document.querySelector('.loupe-name input').value === name", arg=who,
        timeout=RENDER_TIMEOUT_MS)
    # The name box and the queue are separate widgets: the queue's "shown" arrives just after.
    second.locator(".loupe-review").first.wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
    assert external == [], external


#: Phone, tablet, laptop.
WIDTHS = (390, 768, 1280)
_OVERFLOW = """() => {
    const width = document.documentElement.clientWidth;
    const wide = [...document.querySelectorAll('body *')].filter(e => {
        const box = e.getBoundingClientRect();
        let clipped = false;  // inside a box that scrolls or clips sideways: not the page's
        for (let p = e.parentElement; p && p !== document.body; p = p.parentElement) {
            const style = getComputedStyle(p);
            if (['auto', 'scroll', 'hidden'].includes(style.overflowX)) { clipped = true; break; }
        }
        return !clipped && box.width > 0 && box.right > width + 1;
    }).slice(0, 5).map(e =>
        `${e.tagName}.${e.className} right=${Math.round(e.getBoundingClientRect().right)}`);
    const charts = [...document.querySelectorAll('.js-plotly-plot')]
        .filter(e => e.offsetParent !== null)
        .map(e => Math.round(e.getBoundingClientRect().width));
    return {scroll: document.documentElement.scrollWidth, width, wide, charts};
}"""


@pytest.mark.slow
def test_pages_fit_phone_tablet_and_laptop_widths(dashboard_project, server, browser):
    """No page scrolls sideways at 390, 768 or 1280 px, no chart is squeezed under 40 px,
    and a screenshot of each page at each width is kept."""
    url, log = server
    shots = SCREENSHOTS / "dashboards"
    shots.mkdir(parents=True, exist_ok=True)
    external: list[str] = []
    context = offline_context(browser, external)
    problems = []
    for name, ready in (("review", ".loupe-name input"), ("report", ".loupe-drift-status"),
                        ("main", ".loupe-overview")):
        page = context.new_page()
        page.goto(url + f"voila/render/{name}.ipynb", wait_until="commit",
                  timeout=RENDER_TIMEOUT_MS)
        _wait_rendered(page, ready, log)
        if name == "review":
            page.locator(".loupe-name input").fill(f"narrow-{os.getpid()}")
            page.keyboard.press("Enter")
            page.locator(".loupe-review").first.wait_for(state="visible", timeout=60_000)
        elif name == "report":
            page.wait_for_selector(".loupe-confusion .js-plotly-plot", timeout=60_000)
        else:
            page.wait_for_selector(".loupe-workbench", timeout=60_000)
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            page.wait_for_timeout(600)  # plotly relayouts on resize
            found = page.evaluate(_OVERFLOW)
            if found["scroll"] > found["width"] + 1 or found["wide"]:
                problems.append(f"{name} at {width} px scrolls sideways: {found}")
            if any(w < 40 for w in found["charts"]):
                problems.append(f"{name} at {width} px squeezes a chart: {found['charts']}")
            page.screenshot(path=str(shots / f"{name}_{width}.png"), full_page=True)
        page.close()
    assert problems == []
    assert external == [], external
    assert all((shots / f"{n}_{w}.png").stat().st_size > 5_000
               for n in ("review", "report", "main") for w in WIDTHS)


@pytest.mark.slow
def test_each_fact_has_one_number_on_every_page(dashboard_project, server, browser):
    """Open label issues, open disagreements and disputed images: the review page, the
    report's dataset card and the Workbench overview show the numbers wb.review_counts
    gives, read here from each page's DOM."""
    import workbench as wb

    url, log = server
    external: list[str] = []
    context = offline_context(browser, external)
    shown = {}
    for name in ("review", "report", "main"):
        page = context.new_page()
        page.goto(url + f"voila/render/{name}.ipynb", wait_until="commit",
                  timeout=RENDER_TIMEOUT_MS)
        _wait_rendered(page, ".loupe-facts", log)
        shown[name] = dict(page.eval_on_selector_all(
            ".loupe-facts .loupe-fact",
            "els => els.map(e => [e.dataset.fact, e.dataset.value])"))
        words = page.inner_text(".loupe-facts")
        assert "open label issues" in words and "on current labels" in words, words
        page.close()
    expected = {fact: str(value) for fact, value in
                wb.review_counts(dashboard_project).figures().items()}
    assert shown == {"review": expected, "report": expected, "main": expected}
    assert int(expected["label-issues"]) > 0 and int(expected["disagreements"]) > 0
    assert external == [], external
