"""Everything a person typed is text, never markup: every dashboard in a real browser.

One small project whose every user-controlled field holds hostile HTML, script or Markdown
(class names, annotator names, slice values, file names, the import folder, label-book
text and author, the drift batch's folder); a drift check and two tiny probe versions give
the report something to show. ``loupe serve`` runs the real Voila server; Debian's chromium
opens the landing page, the review app (typing a hostile name into its name box), the
report and the main workbench (typing a hostile name and opening every tab). On every page
a ``dialog`` listener must stay silent, ``window.__pwned`` must stay undefined, the DOM must
hold no injected event-handler attribute, ``javascript:`` link or script, and the hostile
strings must be *visible as text* (so rendering nothing cannot pass).

Project names refuse markup characters (``project._check_name``): that is asserted, and the
project uses an ordinary name.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from browser_support import (
    REPO_ROOT,
    chromium,
    free_port,
    log_tail,
    offline_context,
    serve,
)
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RENDER_TIMEOUT_MS = 300_000
WIDGET_TIMEOUT_MS = 120_000
#: Class names (any non-empty string without outer spaces is a valid label).
CLASSES = (
    '<img src=x onerror="window.__pwned=1;alert(1)">',
    "<script>window.__pwned=1;alert(2)</script>",
    "[click me](javascript:window.__pwned=1)",
    '"><svg onload="window.__pwned=1;alert(3)">',
)
#: Annotators: the importer's two, and the name typed into the dashboards' name boxes.
ANNOTATORS = ("<img src=y onerror=window.__pwned=1>", "![beacon](javascript:alert(4))")
TYPED_NAME = '<img src=z onerror="window.__pwned=1;alert(5)">'
SLICE_VALUES = ("<b onmouseover=alert(6)>dim</b>", "<iframe src=javascript:alert(7)>")
#: File names cannot hold '/', so no closing tags here.
FILE_PREFIXES = ("<img src=f onerror=alert(8)>", '"><svg onload=alert(9)>')
IMPORT_FOLDER = "<img src=s onerror=alert(10)>"
BATCH_FOLDER = "<img src=b onerror=alert(11)>"
BOOK_TEXT = "<script>alert(12)</script> [see](javascript:alert(13))"
BOOK_AUTHOR = "<img src=a onerror=alert(14)>"
N_PER_CLASS = 6

#: Elements an escape failure would inject: event-handler attributes carrying the payload,
#: ``javascript:`` URLs, scripts that mention it.
INJECTED_JS = """() => {
  const found = [];
  for (const el of document.querySelectorAll('*')) {
    for (const name of el.getAttributeNames()) {
      const value = el.getAttribute(name) || '';
      if (/^on/i.test(name) && /__pwned|alert/.test(value)) {
        found.push(`<${el.tagName.toLowerCase()} ${name}="${value}">`);
      }
      if (/^(href|src|xlink:href|action|formaction)$/i.test(name)
          && /^\\s*javascript:/i.test(value)) {
        found.push(`<${el.tagName.toLowerCase()} ${name}="${value}">`);
      }
    }
    if (el.tagName === 'SCRIPT' && /__pwned|alert\\(/.test(el.textContent)) {
      found.push(`<script>${el.textContent.slice(0, 80)}`);
    }
  }
  return found;
}"""


def _write_images(folder: Path, names: list[str], seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        path = folder / name
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _hostile_project(root: Path, name: str):
    """Build the hostile project (two probe versions, a drift check, a label book)."""
    import workbench as wb
    from workbench.monitor.drift import drift

    folder = root / IMPORT_FOLDER
    rows = []
    for c, label in enumerate(CLASSES):
        names = [f"{FILE_PREFIXES[i % 2]}{c}-{i}.png" for i in range(N_PER_CLASS)]
        for i, path in enumerate(_write_images(folder, names, seed=c)):
            lighting = SLICE_VALUES[i % 2]
            rows.append((path.name, label, ANNOTATORS[0], lighting))
            if i == 0:  # a disagreement for the review app's agreement queue
                rows.append((path.name, CLASSES[(c + 1) % len(CLASSES)], ANNOTATORS[1],
                             lighting))
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filepath", "label", "annotator", "lighting"])
        writer.writerows(rows)
    p = wb.Project.create(name, overwrite=True)
    report = p.import_csv(folder / "labels.csv", progress=False)
    assert report.rejected == [] and len(report.added) == len(CLASSES) * N_PER_CLASS
    assert set(p.classes) == set(CLASSES)
    settings = {"mode": "probe", "folds": 3, "image_size": 64, "progress": False}
    wb.train(p, **settings)
    v2 = wb.train(p, probe_c=0.02, **settings)
    batch = root / BATCH_FOLDER
    _write_images(batch, [f"{FILE_PREFIXES[i % 2]}new-{i}.png" for i in range(8)], seed=99)
    drift(p, v2, batch, n_permutations=100)
    wb.define_label(p, CLASSES[0], BOOK_TEXT, author=BOOK_AUTHOR)
    wb.add_example(p, CLASSES[0], report.added[1], author=BOOK_AUTHOR)
    return p


@pytest.fixture(scope="module")
def hostile_project(tmp_path_factory):
    import workbench as wb

    name = f"esc-browser-{os.getpid()}"
    p = _hostile_project(tmp_path_factory.mktemp("hostile"), name)
    yield p
    wb.delete_project(name)


@pytest.fixture(scope="module")
def server(hostile_project, tmp_path_factory):
    """``loupe serve`` without preheated kernels (each page starts its own)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "loupe-serve.log"
    command = [sys.executable, "-m", "workbench.cli", "serve", "--project",
               hostile_project.name, "--port", str(port), "--no-preheat"]
    url = f"http://127.0.0.1:{port}/"
    with serve(command, url, log, cwd=REPO_ROOT):
        yield url, log


@pytest.fixture(scope="module")
def browser():
    with chromium() as running:
        yield running


class Watched:
    """A page whose dialogs are recorded (and dismissed)."""

    def __init__(self, browser) -> None:
        self.external: list[str] = []
        self.dialogs: list[str] = []
        self.page = offline_context(browser, self.external).new_page()
        self.page.on("dialog", self._on_dialog)

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def open(self, url: str, selector: str, log: Path) -> None:
        self.page.goto(url, wait_until="commit", timeout=RENDER_TIMEOUT_MS)
        try:
            self.page.wait_for_function(
                "sel => document.querySelector(sel) !== null || (document.body !== null"
                " && document.body.innerText.includes('Traceback'))",
                arg=selector, timeout=RENDER_TIMEOUT_MS)
        except Exception as err:
            pytest.fail(f"{selector!r} did not render ({err}); page text:\n"
                        f"{self.page.inner_text('body')[:2000]}\nserver:\n{log_tail(log)}")
        assert "Traceback" not in self.text(), self.text()[:3000]

    def text(self) -> str:
        return self.page.inner_text("body")

    def assert_inert(self, visible: tuple[str, ...] | list[str]) -> None:
        """Nothing ran, nothing was injected, and every string in ``visible`` shows as
        text."""
        self.page.wait_for_timeout(1500)  # let any injected onerror / onload fire
        assert self.dialogs == [], self.dialogs
        assert self.page.evaluate("() => typeof window.__pwned") == "undefined"
        injected = self.page.evaluate(INJECTED_JS)
        assert injected == [], injected
        text = self.text()
        missing = [s for s in visible if s not in text]
        assert missing == [], f"not shown as text: {missing}\npage text:\n{text[:4000]}"
        assert self.external == [], self.external


def test_project_names_refuse_markup():
    import workbench as wb

    for name in ("<img src=x onerror=alert(1)>", "[x](javascript:alert(1))", 'a"><svg'):
        with pytest.raises(wb.ProjectError, match="invalid project name"):
            wb.Project.create(name)


def test_landing_page_runs_nothing(server, browser):
    url, log = server
    watched = Watched(browser)
    watched.open(url, "a.loupe-dashboard-link", log)
    watched.assert_inert(["Loupe dashboards"])


def test_report_shows_every_hostile_field_as_text(hostile_project, server, browser):
    url, log = server
    watched = Watched(browser)
    watched.open(url + "voila/render/report.ipynb", ".loupe-drift-status", log)
    watched.page.wait_for_selector(".loupe-drift-detail", timeout=WIDGET_TIMEOUT_MS)
    watched.page.get_by_text("Datasheet:").wait_for(timeout=WIDGET_TIMEOUT_MS)
    watched.assert_inert([*CLASSES, *ANNOTATORS, *SLICE_VALUES, IMPORT_FOLDER, BATCH_FOLDER,
                          f"classes: {', '.join(hostile_project.classes)}"])


def test_review_app_shows_a_typed_name_as_text(server, browser):
    url, log = server
    watched = Watched(browser)
    watched.open(url + "voila/render/review.ipynb", ".loupe-name input", log)
    watched.page.locator(".loupe-name input").fill(TYPED_NAME)
    watched.page.keyboard.press("Enter")
    watched.page.locator(".loupe-review:has(.loupe-review-image)").first.wait_for(
        state="visible", timeout=WIDGET_TIMEOUT_MS)
    watched.page.get_by_text("Reviewing").wait_for(timeout=WIDGET_TIMEOUT_MS)
    watched.assert_inert([f"as {TYPED_NAME}.", *ANNOTATORS])


#: Workbench tab -> a selector that shows once the tab's widget is built.
TABS = {"Label": ".loupe-grid", "Confusion": ".loupe-confusion", "Slices": ".loupe-slices",
        "Issues": ".loupe-issue-queue", "Agreement": ".loupe-agreement-review",
        "Map": ".loupe-embedding-map", "Compare": ".loupe-compare",
        "Label book": ".loupe-label-book", "Drift": ".loupe-drift-detail"}


def test_main_workbench_shows_every_tab_as_text(server, browser):
    url, log = server
    watched = Watched(browser)
    page = watched.page
    watched.open(url + "voila/render/main.ipynb", ".loupe-workbench .loupe-grid", log)
    name_box = page.locator(".loupe-workbench .widget-text input").first
    name_box.fill(TYPED_NAME)
    name_box.press("Enter")
    for title, selector in TABS.items():
        page.locator(".loupe-workbench .lm-TabBar-tab", has_text=title).first.click()
        try:
            page.locator(f".loupe-workbench {selector}").first.wait_for(
                state="attached", timeout=WIDGET_TIMEOUT_MS)
        except Exception as err:
            pytest.fail(f"tab {title!r} did not show {selector} ({err}):\n"
                        f"{watched.text()[:3000]}\nserver:\n{log_tail(log)}")
        assert "Traceback" not in watched.text(), watched.text()[:3000]
        if title == "Label book":
            definitions = page.eval_on_selector_all(
                ".loupe-book-card textarea", "els => els.map(e => e.value)")
            assert BOOK_TEXT in definitions, definitions
            watched.assert_inert([f"last edited by {BOOK_AUTHOR}", *CLASSES])
    watched.assert_inert([*CLASSES, *SLICE_VALUES, BATCH_FOLDER])
