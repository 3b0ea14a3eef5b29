"""Thumbnails open at full size in a real page: Voila serves a ConfusionDrilldown, Debian's
Chromium clicks, zooms and closes.

The full image is read by the kernel only when asked: the test replaces a file after the page
has drawn its thumbnail, and the lightbox must show the new file at the cap (2048 px), while
an untouched image shows at its own width. Captions must wrap, never be clipped. Leaves a
screenshot in ``widgets/lightbox.png`` under ``browser_support.SCREENSHOTS``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
from PIL import Image

import workbench as wb
from workbench.store.thumbnails import FULL_SIZE_CAP

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RENDER_TIMEOUT_MS = 150_000
OPEN_TIMEOUT_MS = 30_000
LONG_CAPTION = ("predicted pit_mark_on_a_dark_casing_part · 97 % · a caption long enough "
                "to need several lines under a 96 px thumbnail")
CELLS = [
    "import workbench as wb\nfrom widgets import ConfusionDrilldown\n"
    "p = wb.Project.open('{project}')\n"
    "cd = ConfusionDrilldown(p, '{version}', annotator='lightbox-user')\n"
    "true = max(cd.classes, key=lambda c: cd.matrix.loc[c, c])\n"
    "ids = cd.drill(true, true)\n"
    "cd.grid.show(ids, title='long captions', captions={sid: '''{caption}''' for sid in ids})\n"
    "cd",
]


@pytest.fixture(scope="module")
def trained():
    """A demo project of 320 px images with a probe version."""
    from workbench.demo import create_demo_project

    p = create_demo_project(f"lightbox-browser-{os.getpid()}", n_per_class=3, seed=5,
                            size=320, duplicates=0, overwrite=True)
    version = wb.train(p, mode="probe", folds=2, image_size=64, progress=False)
    yield p, version
    wb.delete_project(p.name)


def _wait_open(page, state: str = "full") -> None:
    page.wait_for_selector(f".loupe-lightbox[data-state='{state}']", timeout=OPEN_TIMEOUT_MS)


def _scale(page) -> float:
    return float(page.get_attribute(".loupe-lightbox", "data-scale"))


def test_a_thumbnail_opens_full_size_zooms_pans_and_closes(trained, tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    p, version = trained
    cells = [cell.replace("{project}", p.name).replace("{version}", version.name)
             .replace("{caption}", LONG_CAPTION) for cell in CELLS]
    notebook = write_notebook(tmp_path / "lightbox.ipynb", cells)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [str(Path(sys.executable).with_name("voila")), str(notebook), f"--port={port}",
               "--no-browser", "--Voila.ip=127.0.0.1", "--show_tracebacks=True"]
    log = tmp_path / "voila.log"
    with serve(command, url, log), sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url, wait_until="domcontentloaded", timeout=RENDER_TIMEOUT_MS)
            try:
                page.wait_for_function(
                    "() => document.querySelectorAll('.loupe-confusion .loupe-tile "
                    ".loupe-lightbox-zoom').length >= 2 || document.body.innerText"
                    ".includes('Traceback')", timeout=RENDER_TIMEOUT_MS)
            except Exception as err:
                pytest.fail(f"the drill-down did not render ({err}); page text:\n"
                            f"{page.inner_text('body')[:2000]}\nserver:\n{log_tail(log)}")
            assert "Traceback" not in page.inner_text("body")
            tiles = page.locator(".loupe-confusion .loupe-tile")
            ids = [tiles.nth(i).get_attribute("data-id") for i in range(2)]
            paths = dict(zip(*p.dataset.select(ids).values(["id", "filepath"]), strict=True))

            # The first image is replaced after its thumbnail was drawn: the lightbox reads
            # the file when asked, and caps it at 2048 px on the long side.
            with Image.open(paths[ids[0]]) as small:
                small.convert("RGB").resize((2600, 1300), Image.Resampling.BICUBIC) \
                    .save(paths[ids[0]])
            with Image.open(paths[ids[1]]) as untouched:
                own_width = untouched.width
            assert own_width == 320

            # 1. the tile's ⤢ button opens the original at its own width, named and captioned
            tiles.nth(1).locator(".loupe-lightbox-zoom").click()
            _wait_open(page)
            natural = page.eval_on_selector(".loupe-lightbox-img", "img => img.naturalWidth")
            assert natural == own_width
            assert page.inner_text(".loupe-lightbox-name") == Path(paths[ids[1]]).name
            assert LONG_CAPTION in page.inner_text(".loupe-lightbox-caption")
            assert f"{own_width} × 320 px" in page.inner_text(".loupe-lightbox-size")
            # the tile was not selected by the button (selection is for relabelling)
            assert "selected" not in (tiles.nth(1).get_attribute("class") or "")

            # 2. the wheel zooms in at the pointer, 0 fits again, + zooms, a drag pans
            fitted = _scale(page)
            box = page.locator(".loupe-lightbox-stage").bounding_box()
            centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.move(*centre)
            page.mouse.wheel(0, -300)
            page.wait_for_function(f"() => Number(document.querySelector('.loupe-lightbox')"
                                   f".dataset.scale) > {fitted}", timeout=5_000)
            assert _scale(page) > fitted
            page.keyboard.press("0")
            assert _scale(page) == pytest.approx(fitted, rel=1e-3)
            page.keyboard.press("+")
            assert _scale(page) == pytest.approx(fitted * 1.25, rel=1e-3)
            before = page.eval_on_selector(".loupe-lightbox-img", "img => img.style.transform")
            page.mouse.move(*centre)
            page.mouse.down()
            page.mouse.move(centre[0] + 80, centre[1] + 40, steps=4)
            page.mouse.up()
            after = page.eval_on_selector(".loupe-lightbox-img", "img => img.style.transform")
            assert after != before
            SCREENSHOTS.joinpath("widgets").mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "widgets" / "lightbox.png"))

            # 3. Esc closes it and gives the focus back to the grid
            page.keyboard.press("Escape")
            page.wait_for_selector(".loupe-lightbox", state="detached", timeout=5_000)
            assert page.evaluate("() => document.activeElement.classList.contains('loupe-grid')")

            # 4. from the keyboard: Enter on the grid opens its focused tile (the first one,
            # replaced above: shown at the cap); Esc closes again
            page.keyboard.press("Enter")
            _wait_open(page)
            size = page.eval_on_selector(".loupe-lightbox-img",
                                         "img => [img.naturalWidth, img.naturalHeight]")
            assert size == [FULL_SIZE_CAP, FULL_SIZE_CAP // 2]
            assert "2600 × 1300 px (shown at 2048 × 1024)" in page.inner_text(
                ".loupe-lightbox-size")
            page.keyboard.press("Escape")
            page.wait_for_selector(".loupe-lightbox", state="detached", timeout=5_000)

            # 5. captions and label badges wrap: nothing clipped, the whole text in a tooltip
            clipped = page.eval_on_selector_all(
                ".loupe-confusion .loupe-tile-caption, .loupe-confusion .loupe-tile-label",
                "parts => parts.filter(p => p.scrollWidth > p.clientWidth"
                " || p.title !== p.textContent).map(p => p.textContent)")
            assert clipped == []
            lines = page.eval_on_selector(
                ".loupe-confusion .loupe-tile-caption",
                "c => Math.round(c.getBoundingClientRect().height"
                " / parseFloat(getComputedStyle(c).lineHeight))")
            assert lines >= 3  # wrapped under the thumbnail, not cut to one line
            page.locator(".loupe-confusion .loupe-grid").screenshot(
                path=str(SCREENSHOTS / "widgets" / "lightbox_grid.png"))
        finally:
            browser.close()
