"""The widgets in a real browser: Voila and JupyterLab serve notebooks, Chromium drives them.

Keyboard relabels in the page must reach the store (checked from this process, which shares
the session's throwaway database with the servers' kernels), and a click on a confusion
cell must fill the drill-down grid. Screenshots of each widget go to ``widgets/`` under
``browser_support.SCREENSHOTS``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from browser_support import (
    SCREENSHOTS,
    free_port,
    launch,
    log_tail,
    require_chromium,
    serve,
    write_notebook,
)

from workbench.store import _db as store

pytestmark = pytest.mark.browser

SHOTS = SCREENSHOTS / "widgets"
RENDER_TIMEOUT_MS = 150_000
STORE_TIMEOUT_S = 20


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _wait_stored(project, sid: str, annotator: str, n_before: int) -> dict:
    """Poll the store until ``annotator`` has a new entry on ``sid``; return it."""
    deadline = time.monotonic() + STORE_TIMEOUT_S
    while time.monotonic() < deadline:
        history = project.history(sid)
        if len(history) > n_before and history.iloc[-1].annotator == annotator:
            return history.iloc[-1].to_dict()
        time.sleep(0.1)
    pytest.fail(f"no entry by {annotator!r} reached the store for {sid} within "
                f"{STORE_TIMEOUT_S} s; history:\n{project.history(sid)}")


def _entries_by(project, annotator: str) -> int:
    histories = store.histories(project.dataset, project.dataset.values("id"))
    return sum(entry["annotator"] == annotator for history in histories.values()
               for entry in history)


def _wait_for_widgets(page, selector: str, n: int, log: Path) -> None:
    try:
        page.wait_for_function(
            "([sel, n]) => [...document.querySelectorAll(sel)]"
            ".filter(img => img.complete && img.naturalWidth > 0).length >= n"
            " || (document.body !== null && document.body.innerText.includes('Traceback'))",
            arg=[selector, n], timeout=RENDER_TIMEOUT_MS)
    except Exception as err:
        pytest.fail(f"{n} images for {selector!r} did not render ({err}); page text:\n"
                    f"{page.inner_text('body')[:2000]}\nserver output:\n{log_tail(log)}")
    text = page.inner_text("body")
    assert "Traceback" not in text, text[:3000]


def _relabel_first_tile(page, project, annotator: str, root: str = "") -> tuple[str, str]:
    """Click the first tile of the grid, press the digit of another class; return (id, label)."""
    tile = page.locator(f"{root} .loupe-grid .loupe-tile").first
    sid = tile.get_attribute("data-id")
    shown = tile.locator(".loupe-tile-label").inner_text()
    classes = project.classes
    target = next(c for c in classes if c != shown)
    n_before = len(project.history(sid))
    total_before = _entries_by(project, annotator)
    tile.click()
    page.keyboard.press(str(classes.index(target) + 1))
    entry = _wait_stored(project, sid, annotator, n_before)
    assert entry["label"] == target and entry["review"]
    time.sleep(0.5)
    assert _entries_by(project, annotator) == total_before + 1  # that image, and only it
    page.wait_for_function(
        "([sid, label]) => document.querySelector(`.loupe-tile[data-id='${sid}']"
        " .loupe-tile-label`).textContent === label", arg=[sid, target], timeout=10_000)
    return sid, target


def _run_all_cells(page, n_cells: int) -> None:
    """Run a JupyterLab notebook's cells from the keyboard (select the first, Shift+Enter)
    once its kernel is connected; presses made before that are dropped, so retry."""
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=RENDER_TIMEOUT_MS)
    for _ in range(5):
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.keyboard.press("Escape")
        for _ in range(n_cells):
            page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function(
                "() => /\\[(\\d+|\\*)\\]/.test(document.querySelector("
                "'.jp-Notebook .jp-InputPrompt').textContent)", timeout=10_000)
            return
        except Exception:
            continue
    pytest.fail("JupyterLab did not run the notebook's cells")


def _cells(cells: list[str], **names: str) -> list[str]:
    out = []
    for cell in cells:
        for key, value in names.items():
            cell = cell.replace("{" + key + "}", value)
        out.append(cell)
    return out


GRID_CELLS = [
    "import workbench as wb\nfrom widgets import LabelingGrid\n"
    "p = wb.Project.open('{project}')",
    "grid = LabelingGrid(p, annotator='{annotator}', page_size=60)\ngrid",
]


ALL_CELLS = [
    *GRID_CELLS,
    "from widgets import (ConfusionDrilldown, SlicePerformance, IssueQueue, AgreementReview,\n"
    "                     EmbeddingMap, ModelCompare, LabelBook, Workbench)\n"
    "ConfusionDrilldown(p, 'v1', annotator='{annotator}')",
    "SlicePerformance(p, 'v1', by=['lighting', 'line'])",
    "IssueQueue(p, 'v1', annotator='{annotator}')",
    "AgreementReview(p, annotator='{annotator}')",
    "EmbeddingMap(p, 'v1', annotator='{annotator}')",
    "ModelCompare(p, 'v1', 'v2', annotator='{annotator}')",
    "LabelBook(p, author='{annotator}', version='v1')",
    "import pathlib, tempfile\nfrom PIL import Image, ImageEnhance\n"
    "from widgets import DriftMonitor\n"
    "dark = pathlib.Path(tempfile.mkdtemp())\n"
    "for i, path in enumerate(p.dataset.take(20, seed=2).values('filepath')):\n"
    "    ImageEnhance.Brightness(Image.open(path)).enhance(0.5).save(dark / f'{i}.png')\n"
    "wb.drift(p, 'v1', p.dataset.take(20, seed=1))\nwb.drift(p, 'v1', dark)\n"
    "DriftMonitor(p, 'v1', n_images=8)",
    "Workbench(p, annotator='{annotator}')",
]
#: Widget root → screenshot file (under SCREENSHOTS/widgets).
SCREENSHOT_OF = {
    ".loupe-confusion": "confusion_drilldown.png",
    ".loupe-slices": "slice_performance.png",
    ".loupe-issue-queue": "issue_queue.png",
    ".loupe-agreement-review": "agreement_review.png",
    ".loupe-embedding-map": "embedding_map.png",
    ".loupe-compare": "model_compare.png",
    ".loupe-label-book": "label_book.png",
    ".loupe-drift": "drift_monitor.png",
    ".loupe-workbench": "workbench.png",
}


def _click_confusion_cell(page, given: str, predicted: str) -> None:
    """Click the heatmap cell (given, predicted) where a person would, in pixels."""
    point = page.evaluate(
        """([given, predicted]) => {
            const gd = document.querySelector('.loupe-confusion .js-plotly-plot');
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            const box = gd.getBoundingClientRect();
            return {x: box.left + xa._offset + xa.d2p(predicted),
                    y: box.top + ya._offset + ya.d2p(given)};
        }""", [given, predicted])
    page.mouse.click(point["x"], point["y"])


@pytest.mark.slow
def test_voila_widgets_keyboard_relabel_review_and_confusion_click(widget_demo, tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    import workbench as wb

    p, v1, _ = widget_demo
    who = "voila-inspector"
    notebook = write_notebook(tmp_path / "widgets.ipynb",
                              _cells(ALL_CELLS, project=p.name, annotator=who))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [_bin("voila"), str(notebook), f"--port={port}", "--no-browser",
               "--Voila.ip=127.0.0.1", "--show_tracebacks=True"]
    log = tmp_path / "voila.log"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with serve(command, url, log), sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, wait_until="domcontentloaded", timeout=RENDER_TIMEOUT_MS)
            _wait_for_widgets(page, ".loupe-grid .loupe-tile img", min(60, len(p)), log)
            page.wait_for_selector(".loupe-workbench", timeout=RENDER_TIMEOUT_MS)

            # 1. keyboard relabel in the grid reaches the store; u appends a withdrawal
            sid, _ = _relabel_first_tile(page, p, who, root="")
            n_before = len(p.history(sid))
            page.keyboard.press("u")
            assert _wait_stored(p, sid, who, n_before)["label"] is None

            # 1b. keys act where the eye is: an arrow moves the selection, a digit labels
            # what is selected now (not the tile clicked before), shift extends it, and the
            # status line names the images changed. Every stored entry matches the intent.
            tiles = page.locator(".loupe-grid .loupe-tile")
            ids = [tiles.nth(i).get_attribute("data-id") for i in range(4)]
            names = {sid: Path(path).name for sid, path in
                     zip(*p.dataset.select(ids).values(["id", "filepath"]), strict=True)}
            start = _entries_by(p, who)
            before = {sid: len(p.history(sid)) for sid in ids}
            tiles.nth(0).click()
            page.keyboard.press("ArrowRight")
            page.keyboard.press("2")
            assert _wait_stored(p, ids[1], who, before[ids[1]])["label"] == p.classes[1]
            page.wait_for_function(
                "name => document.querySelector('.loupe-grid .loupe-grid-message')"
                ".textContent.includes(name)", arg=names[ids[1]], timeout=10_000)
            page.keyboard.press("Shift+ArrowRight")
            page.keyboard.press("Shift+ArrowRight")
            page.keyboard.press("1")
            deadline = time.monotonic() + STORE_TIMEOUT_S
            while _entries_by(p, who) < start + 4 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.5)
            intended = {ids[0]: [], ids[1]: [p.classes[1], p.classes[0]],
                        ids[2]: [p.classes[0]], ids[3]: [p.classes[0]]}
            for sid, labels in intended.items():
                new = p.history(sid).iloc[before[sid]:]
                assert list(new["annotator"]) == [who] * len(labels), sid
                assert list(new["label"]) == labels, sid
            assert _entries_by(p, who) == start + 4

            # 2. a click on a confusion cell fills the drill-down grid with exactly its images
            matrix = wb.confusion(p, v1)
            off = matrix.where(~np.eye(len(matrix), dtype=bool), 0)
            given, predicted = off.stack().idxmax()
            expected = set(wb.confusion_samples(p, v1, true=given, pred=predicted))
            page.locator(".loupe-confusion .js-plotly-plot").scroll_into_view_if_needed()
            _click_confusion_cell(page, given, predicted)
            page.wait_for_function(
                "n => document.querySelectorAll('.loupe-confusion .loupe-tile').length === n",
                arg=len(expected), timeout=30_000)
            shown = set(page.eval_on_selector_all(".loupe-confusion .loupe-tile",
                                                  "tiles => tiles.map(t => t.dataset.id)"))
            assert shown == expected

            # 3. the issue queue decides from the keyboard: "a" accepts the suggestion
            queue = page.locator(".loupe-issue-queue .loupe-review").first
            card = queue.locator(".loupe-review-card").first
            card_id = card.get_attribute("data-sample-id")
            suggested = card.locator(".loupe-review-suggested .loupe-review-badge") \
                .get_attribute("data-label")
            n_before = len(p.history(card_id))
            queue.click(position={"x": 5, "y": 5})
            page.keyboard.press("a")
            entry = _wait_stored(p, card_id, who, n_before)
            assert entry["review"] and entry["label"] == suggested

            # 4. the drift monitor draws its checks and shows the last batch's images
            page.wait_for_selector(".loupe-drift .js-plotly-plot .point",
                                   timeout=RENDER_TIMEOUT_MS)
            assert page.locator(".loupe-drift .loupe-drift-tile img").count() == 8
            assert "DRIFT" in page.locator(".loupe-drift .loupe-drift-detail h4").first \
                .inner_text()

            for selector, name in SCREENSHOT_OF.items():
                element = page.locator(selector).first
                element.scroll_into_view_if_needed()
                element.screenshot(path=str(SHOTS / name))
            page.locator(".loupe-grid").first.screenshot(path=str(SHOTS / "labeling_grid.png"))
        finally:
            browser.close()
    for name in [*SCREENSHOT_OF.values(), "labeling_grid.png"]:
        assert (SHOTS / name).stat().st_size > 5_000, name


@pytest.mark.slow
def test_jupyterlab_grid_keyboard_relabel_reaches_the_store(widget_demo, tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    p, _, _ = widget_demo
    cells = _cells(GRID_CELLS, project=p.name, annotator="lab-user")
    write_notebook(tmp_path / "grid.ipynb", cells)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [_bin("jupyter"), "lab", "--no-browser", f"--port={port}",
               "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=",
               "--ServerApp.password=", f"--ServerApp.root_dir={tmp_path}",
               "--ServerApp.allow_root=True", "--LabApp.news_url=",
               "--LabApp.check_for_updates_class="
               "jupyterlab.NeverCheckForUpdate"]
    log = tmp_path / "lab.log"
    with serve(command, f"{base}/lab", log), sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/grid.ipynb", wait_until="domcontentloaded",
                      timeout=RENDER_TIMEOUT_MS)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=RENDER_TIMEOUT_MS)
            _run_all_cells(page, len(cells))
            _wait_for_widgets(page, ".loupe-tile img", min(60, len(p)), log)
            _relabel_first_tile(page, p, "lab-user")
            # the digit went to the grid, not to JupyterLab (no cell became a heading)
            assert page.locator(".jp-Notebook .jp-MarkdownCell").count() == 0
        finally:
            browser.close()
