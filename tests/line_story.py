"""The 3 a.m. story, driven through the line console (``line.ipynb``) in chromium, the way an
inspector does it: type a name, import the night batch, label the flagged images, retrain,
compare, promote, roll back.

Shared by ``tests/test_line_story_browser.py`` (small settings, the store checked after each
step) and ``bench/line_loop.py`` (the demo, timed). :class:`StoryDriver` counts every key
and click beyond the label keys themselves (:attr:`StoryDriver.actions`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: How long the page may take to render (a cold kernel on 2 busy cores).
RENDER_TIMEOUT_MS = 240_000
#: How long one step (import with its drift check, the gate) may take.
STEP_TIMEOUT_MS = 300_000
#: How long a retrain may take in the worker.
TRAIN_TIMEOUT_S = 1_500
#: How long a label key may take to reach the store.
STORE_TIMEOUT_S = 30.0


class StoryError(AssertionError):
    """A step of the story did not end as it should (the message says what the page showed)."""


@dataclass
class StoryDriver:
    """One inspector at the line console.

    Parameters
    ----------
    page : playwright Page
    url : str
        The server's root (``http://127.0.0.1:PORT/``).
    log : Path, optional
        The server's output, quoted when a step fails.
    """

    page: object
    url: str
    log: Path | None = None
    actions: int = 0
    labels: int = 0
    steps: list[tuple[str, float]] = field(default_factory=list)

    # -- counted input ------------------------------------------------------------------
    def click(self, locator) -> None:
        locator.click()
        self.actions += 1

    def press(self, key: str) -> None:
        self.page.keyboard.press(key)
        self.actions += 1

    def type(self, text: str) -> None:
        self.page.keyboard.type(text)
        self.actions += len(text)

    def _step(self, name: str, start: float) -> None:
        self.steps.append((name, time.perf_counter() - start))

    def fail(self, what: str) -> StoryError:
        tail = ""
        if self.log is not None and self.log.exists():
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        return StoryError(f"{what}; page text:\n{self.page.inner_text('body')[:3000]}\n"
                          f"server output:\n{tail}")

    def wait(self, script: str, arg: object = None, timeout: int = STEP_TIMEOUT_MS,
             what: str = "") -> None:
        try:
            self.page.wait_for_function(script, arg=arg, timeout=timeout)
        except Exception as error:  # playwright's TimeoutError and page errors
            raise self.fail(f"{what or script} did not happen ({error})") from error

    def outcome(self, selector: str, done: str, refused: str, what: str,
                timeout: int = STEP_TIMEOUT_MS) -> str:
        """Wait until the message ``selector`` says ``done`` or ``refused`` (regular
        expressions); return it, or fail with it when it does not say ``done``."""
        self.wait("([sel, pattern]) => { const m = document.querySelector(sel);"
                  " return m !== null && new RegExp(pattern).test(m.innerText); }",
                  arg=[selector, f"{done}|{refused}"], timeout=timeout, what=what)
        message = self.text(selector)
        if not re.search(done, message):
            raise self.fail(f"{what}: {message}")
        return message

    def text(self, selector: str) -> str:
        return self.page.locator(selector).first.inner_text()

    # -- the story ------------------------------------------------------------------------
    def open(self) -> None:
        """Open the line console (navigation is not counted: the inspector's bookmark)."""
        start = time.perf_counter()
        self.page.goto(self.url + "voila/render/line.ipynb", wait_until="commit",
                       timeout=RENDER_TIMEOUT_MS)
        self.wait("() => document.querySelector('.loupe-line-status .loupe-line-fact') "
                  "!== null || (document.body !== null && "
                  "document.body.innerText.includes('Traceback'))",
                  timeout=RENDER_TIMEOUT_MS, what="the line console's status strip")
        if "Traceback" in self.page.inner_text("body"):
            raise self.fail("the line console shows a traceback")
        self._step("open the console", start)

    def sign(self, name: str) -> None:
        """Type the name once (the browser keeps it)."""
        start = time.perf_counter()
        self.click(self.page.locator(".loupe-name input"))
        self.type(name)
        self.press("Enter")
        self.page.get_by_text(f"acting as {name}").wait_for(timeout=30_000)
        self._step("type the name", start)

    def fact(self, name: str) -> str:
        """The ``data-value`` of a status-strip fact (deployment, drift, jobs)."""
        return self.page.locator(f".loupe-line-fact[data-fact='{name}']").get_attribute(
            "data-value") or ""

    def import_batch(self, batch: str) -> str:
        """Import the inbox batch whose name starts the picker's entry (it is preselected
        when it is the newest); return the message."""
        start = time.perf_counter()
        picker = self.page.locator(".loupe-line-batch select").first
        chosen = picker.evaluate("s => s.options[s.selectedIndex].text")
        if not chosen.startswith(batch):
            option = next(text for text in picker.evaluate(
                "s => [...s.options].map(o => o.text)") if text.startswith(batch))
            picker.select_option(label=option)  # one choice
            self.actions += 1
        self.click(self.page.locator("button", has_text="Import this batch"))
        message = self.outcome(".loupe-line-batch-message", "Imported", "Not imported|Refused",
                               "the import")
        self.wait("() => document.querySelectorAll('.loupe-line-batch .loupe-tile').length > 0",
                  what="the new images in the labelling grid")
        self._step("import the batch", start)
        return message

    def label(self, n: int, truth: Callable[[str], str], classes: list[str],
              stored: Callable[[str, str], bool]) -> list[str]:
        """Label the first ``n`` images of the batch's grid (least familiar first): click
        the first, then per image its class digit (a label: not counted) and → to the next.
        ``truth(sample_id)`` is what the inspector sees; ``stored(sample_id, label)`` says
        whether the store has it. Returns the labelled ids in order."""
        start = time.perf_counter()
        grid = ".loupe-line-batch .loupe-grid"
        self.click(self.page.locator(f"{grid} .loupe-tile").first)
        done: list[str] = []
        for index in range(n):
            sid = self.page.locator(f"{grid} .loupe-tile.focused").first.get_attribute(
                "data-id")
            if sid in done:
                raise self.fail(f"the grid's focus did not move on from {sid}")
            label = truth(sid)
            self.page.keyboard.press(str(classes.index(label) + 1))
            self.labels += 1
            deadline = time.monotonic() + STORE_TIMEOUT_S
            while not stored(sid, label):
                if time.monotonic() > deadline:
                    raise self.fail(f"label {label!r} of {sid} did not reach the store")
                time.sleep(0.1)
            self.wait("([sid, label]) => { const t = document.querySelector("
                      "`.loupe-tile[data-id='${sid}'] .loupe-tile-label`);"
                      " return t && t.textContent === label; }", arg=[sid, label],
                      timeout=30_000, what=f"the tile of {sid} showing {label}")
            done.append(sid)
            if index < n - 1:
                self.press("ArrowRight")
        self._step(f"label {n} images", start)
        return done

    def retrain(self, timeout_s: float = TRAIN_TIMEOUT_S) -> str:
        """Press Retrain and wait for the job; return the new version's name."""
        start = time.perf_counter()
        self.click(self.page.locator("button", has_text=re.compile(r"^\s*Retrain\s*$")))
        message = self.outcome(".loupe-line-retrain-message", "made", "failed|Not started",
                               "the training job", timeout=int(timeout_s * 1000))
        found = re.search(r"made (\S+):", message)
        if found is None:
            raise self.fail(f"the retrain did not make a version: {message}")
        self._step("retrain", start)
        return found.group(1)

    def compare(self, candidate: str) -> bool:
        """Compare ``candidate`` (chosen at once after the training) with the line; return
        whether the gate passed."""
        start = time.perf_counter()
        picker = self.page.locator(".loupe-line-promote select").first
        self.wait("([v]) => { const s = document.querySelector('.loupe-line-promote select');"
                  " return s && s.value !== '' && s.options[s.selectedIndex].text === v; }",
                  arg=[candidate], timeout=60_000, what=f"{candidate} as the candidate")
        assert picker.evaluate("s => s.options[s.selectedIndex].text") == candidate
        self.click(self.page.locator("button", has_text="Compare with line"))
        self.wait("([v]) => { const d = document.querySelector('.loupe-line-verdict');"
                  " return d && d.innerText.startsWith(v); }", arg=[candidate],
                  what="the gate's verdict")
        passed = self.page.locator(".loupe-line-verdict").get_attribute("data-passed")
        self._step("compare", start)
        return passed == "true"

    def promote(self) -> str:
        """Press Promote (the gate passed); return the message."""
        start = time.perf_counter()
        button = self.page.locator("button", has_text=re.compile(r"^\s*Promote\s*$"))
        deadline = time.monotonic() + 30
        while button.is_disabled():
            if time.monotonic() > deadline:
                raise self.fail("Promote stayed disabled")
            time.sleep(0.2)
        self.click(button)
        message = self.outcome(".loupe-line-promote-message", "now runs", "Not promoted",
                               "the promotion")
        self._step("promote", start)
        return message

    def rollback(self) -> str:
        """Press Roll back and confirm; return the message."""
        start = time.perf_counter()
        self.click(self.page.locator("button", has_text=re.compile(r"^\s*Roll back\s*$")))
        confirm = self.page.locator("button", has_text="Yes, roll back")
        confirm.wait_for(state="visible", timeout=30_000)
        self.click(confirm)
        message = self.outcome(".loupe-line-promote-message", "again", "Not rolled back",
                               "the rollback")
        self._step("roll back", start)
        return message

    def shot(self, path: Path, at: str | None = None) -> None:
        """A screenshot at ``path``, scrolled to the element ``at`` (a CSS selector)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if at is not None:
            self.page.locator(at).first.scroll_into_view_if_needed()
        self.page.screenshot(path=str(path), full_page=True)
