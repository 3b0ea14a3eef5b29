"""BoxLabeler in a real browser: Voila serves a notebook, Debian's Chromium draws boxes.

The mouse draws, resizes and deletes boxes, number keys set classes, the wheel zooms,
Shift+drag pans, pre-filled suggestions are corrected and Enter saves; the box history
(read from this process, which shares the session's throwaway database with the Voila
kernel) must then hold the expected box sets. Leaves a screenshot in
``widgets/box_labeler.png`` under ``browser_support.SCREENSHOTS``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import fiftyone as fo
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
from PIL import Image, ImageDraw

import workbench as wb

pytestmark = pytest.mark.browser

SHOT = SCREENSHOTS / "widgets" / "box_labeler.png"
RENDER_TIMEOUT_MS = 150_000
STORE_TIMEOUT_S = 20
TOLERANCE = 0.02  # relative; a few pixels of the 512 px stage
WHO = "box-browser"
#: The model's boxes on the last image (the 0.1 one is below the pre-fill threshold).
PREDICTED = [("scratch", [0.15, 0.3, 0.45, 0.3], 0.8), ("dent", [0.68, 0.6, 0.2, 0.2], 0.6),
             ("dent", [0.1, 0.8, 0.1, 0.1], 0.1)]


def _steel(path: Path, seed: int) -> None:
    """A 128 x 96 grey, brushed-steel-like image with a dark scratch and a dent."""
    rng = np.random.default_rng(seed)
    rows = 150 + 30 * np.linspace(0, 1, 96)[:, None] + rng.normal(0, 6, (96, 128))
    image = Image.fromarray(np.clip(rows, 0, 255).astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.line([(20, 30 + seed), (70, 50 + seed)], fill=(70, 70, 70), width=2)
    draw.ellipse([90, 60, 110, 75], fill=(110, 110, 110))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@pytest.fixture
def det(tmp_path):
    """A detection project of 3 images (128 x 96), none labelled; the last one has
    predictions of a version "v1" (field ``pred_v1``)."""
    name = "bl-browser"
    p = wb.Project.create(name, task="detection", classes=["scratch", "dent"], overwrite=True)
    for i in range(3):
        _steel(tmp_path / "images" / f"img_{i}.png", seed=i)
    p.import_folder(tmp_path / "images", layout="unlabeled", progress=False)
    ids = [sid for _, sid in sorted(zip(*p.dataset.values(["filepath", "id"]), strict=True))]
    p.dataset.add_sample_field("pred_v1", fo.EmbeddedDocumentField,
                               embedded_doc_type=fo.Detections)
    sample = p.dataset[ids[2]]
    sample["pred_v1"] = fo.Detections(detections=[
        fo.Detection(label=label, bounding_box=box, confidence=score, fold=-1)
        for label, box, score in PREDICTED])
    sample.save()
    yield p, ids
    wb.delete_project(name)


def _wait_entry(project, sid: str) -> dict:
    """Poll the store until ``WHO`` has an entry on ``sid``; return it."""
    deadline = time.monotonic() + STORE_TIMEOUT_S
    while time.monotonic() < deadline:
        history = project.box_history(sid)
        if len(history) and history.iloc[-1].annotator == WHO:
            return history.iloc[-1].to_dict()
        time.sleep(0.1)
    pytest.fail(f"no box set by {WHO!r} reached the store for {sid} within "
                f"{STORE_TIMEOUT_S} s; history:\n{project.box_history(sid)}")


def _assert_boxes(stored: list[dict], expected: list[tuple]) -> None:
    assert len(stored) == len(expected), stored
    for box, (label, *coords) in zip(stored, expected, strict=True):
        assert box["label"] == label, stored
        assert box["bounding_box"] == pytest.approx(coords, abs=TOLERANCE), stored


class Stage:
    """Mouse gestures in relative image coordinates (at zoom 1) on the widget's SVG."""

    def __init__(self, page) -> None:
        self.page = page
        self.svg = page.locator(".loupe-boxes svg.loupe-boxes-svg")

    def point(self, rx: float, ry: float) -> tuple[float, float]:
        box = self.svg.bounding_box()
        return box["x"] + rx * box["width"], box["y"] + ry * box["height"]

    def drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        mouse = self.page.mouse
        mouse.move(*self.point(*start))
        mouse.down()
        mouse.move(*self.point(*end), steps=8)
        mouse.up()

    def wait_boxes(self, n: int, selector: str = ".loupe-boxes-box") -> None:
        self.page.wait_for_function(
            "([sel, n]) => document.querySelectorAll(`.loupe-boxes ${sel}`).length === n",
            arg=[selector, n], timeout=10_000)

    def view(self) -> tuple[float, float, float]:
        """(zoom, tx, ty) of the stage, the translation relative to the stage size."""
        zoom, tx, ty, width, height = self.page.evaluate(
            """() => {
                const svg = document.querySelector('.loupe-boxes svg.loupe-boxes-svg');
                const m = svg.querySelector('.loupe-boxes-view').transform.baseVal
                    .consolidate().matrix;
                return [m.a, m.e, m.f, svg.width.baseVal.value, svg.height.baseVal.value];
            }""")
        return zoom, tx / width, ty / height

    def labels(self) -> list[str]:
        return self.page.eval_on_selector_all(
            ".loupe-boxes .loupe-boxes-box", "rects => rects.map(r => r.dataset.label)")


@pytest.mark.slow
def test_draw_relabel_resize_delete_zoom_and_save_reach_the_box_history(det, tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    p, ids = det
    notebook = write_notebook(tmp_path / "boxes.ipynb", [
        "import workbench as wb\nfrom widgets.label.box_labeler import BoxLabeler\n"
        f"p = wb.Project.open({p.name!r})",
        f"BoxLabeler(p, {ids!r}, annotator={WHO!r}, model='v1')",
    ])
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [str(Path(sys.executable).with_name("voila")), str(notebook), f"--port={port}",
               "--no-browser", "--Voila.ip=127.0.0.1", "--show_tracebacks=True"]
    log = tmp_path / "voila.log"
    with serve(command, url, log), sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, wait_until="domcontentloaded", timeout=RENDER_TIMEOUT_MS)
            try:
                page.wait_for_selector(".loupe-boxes svg image[href^='data:image']",
                                       state="attached", timeout=RENDER_TIMEOUT_MS)
            except Exception as err:
                pytest.fail(f"the BoxLabeler did not render ({err}); page text:\n"
                            f"{page.inner_text('body')[:2000]}\nserver output:\n"
                            f"{log_tail(log)}")
            stage = Stage(page)
            title = page.locator(".loupe-boxes .loupe-boxes-title")
            assert title.inner_text().endswith("1 of 3")

            # draw a box (class: the selected one, "scratch"); it is selected
            stage.drag((0.2, 0.2), (0.5, 0.6))
            stage.wait_boxes(1)
            assert stage.labels() == ["scratch"]
            page.wait_for_selector(".loupe-boxes .loupe-boxes-handle-se", timeout=10_000)
            # key 2 gives the selected box the second class
            page.keyboard.press("2")
            page.wait_for_function(
                "() => document.querySelector('.loupe-boxes .loupe-boxes-box')"
                ".dataset.label === 'dent'", timeout=10_000)
            # resize by the bottom-right handle
            stage.drag((0.5, 0.6), (0.7, 0.8))
            # draw a second box elsewhere, then delete it
            stage.drag((0.8, 0.05), (0.95, 0.15))
            stage.wait_boxes(2)
            assert stage.labels() == ["dent", "scratch"]
            page.keyboard.press("Delete")
            stage.wait_boxes(1)
            # a box inside the first one (Alt+drag), then Escape leaves it unselected
            page.keyboard.down("Alt")
            stage.drag((0.3, 0.3), (0.4, 0.4))
            page.keyboard.up("Alt")
            stage.wait_boxes(2)
            page.keyboard.press("Escape")
            stage.wait_boxes(0, ".loupe-boxes-handle")
            page.keyboard.press("Enter")

            entry = _wait_entry(p, ids[0])
            _assert_boxes(entry["boxes"], [("dent", 0.2, 0.2, 0.5, 0.6),
                                           ("scratch", 0.3, 0.3, 0.1, 0.1)])
            page.wait_for_function(
                "() => document.querySelector('.loupe-boxes .loupe-boxes-title')"
                ".textContent.endsWith('2 of 3')", timeout=10_000)
            stage.wait_boxes(0)

            # the wheel zooms around the pointer, Shift+drag pans; a drag still maps to
            # the image pixels under the pointer
            page.mouse.move(*stage.point(0.25, 0.25))
            page.mouse.wheel(0, -270)
            page.wait_for_function(
                "() => document.querySelector('.loupe-boxes .loupe-boxes-zoom-level')"
                ".textContent !== '100%'", timeout=10_000)
            zoom, tx, ty = stage.view()
            assert zoom > 1.2
            assert (0.25 - tx) / zoom == pytest.approx(0.25, abs=0.005)  # fixed point
            page.keyboard.down("Shift")
            stage.drag((0.6, 0.6), (0.5, 0.5))
            page.keyboard.up("Shift")
            zoom, tx2, ty2 = stage.view()
            assert (tx2 - tx, ty2 - ty) == pytest.approx((-0.1, -0.1), abs=0.005)
            stage.wait_boxes(0)  # panning drew nothing
            stage.drag((0.35, 0.35), (0.65, 0.65))
            stage.wait_boxes(1)
            page.keyboard.press("Enter")
            entry = _wait_entry(p, ids[1])
            x, y = (0.35 - tx2) / zoom, (0.35 - ty2) / zoom
            _assert_boxes(entry["boxes"], [("scratch", x, y, 0.3 / zoom, 0.3 / zoom)])
            assert x > 0.3  # the zoom and the pan are not ignored

            # the last image shows the model's boxes as dashed suggestions; a moved one is
            # the annotator's own (solid), Enter accepts what is on screen
            page.wait_for_function(
                "() => document.querySelector('.loupe-boxes .loupe-boxes-title')"
                ".textContent.endsWith('3 of 3')", timeout=10_000)
            stage.wait_boxes(2, ".loupe-boxes-box.loupe-boxes-suggested")
            assert stage.labels() == ["scratch", "dent"]
            stage.drag((0.78, 0.7), (0.73, 0.65))  # the dent, 0.05 up and left
            stage.wait_boxes(1, ".loupe-boxes-box.loupe-boxes-suggested")
            SHOT.parent.mkdir(parents=True, exist_ok=True)
            page.locator(".loupe-boxes").first.screenshot(path=str(SHOT))
            page.keyboard.press("Enter")
            entry = _wait_entry(p, ids[2])
            _assert_boxes(entry["boxes"], [("scratch", 0.15, 0.3, 0.45, 0.3),
                                           ("dent", 0.63, 0.55, 0.2, 0.2)])
            assert "Traceback" not in page.inner_text("body")
        finally:
            browser.close()
    assert SHOT.stat().st_size > 5_000
