"""The line console page (``line.ipynb``) in chromium, served by ``loupe serve`` with its
preheated pool: the status strip renders, the typed name is remembered by the browser, and
Promote stays disabled while the gate fails (here: the project has no frozen set)."""

from __future__ import annotations

import os

import pytest
from browser_support import chromium, log_tail, offline_context, serve_project

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RENDER_TIMEOUT_MS = 240_000
GATE_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def line_project():
    """A small demo project with one probe and no frozen set: the gate cannot pass."""
    import workbench as wb
    from workbench.demo import create_demo_project

    p = create_demo_project(f"line-browser-{os.getpid()}", n_per_class=6, seed=2, size=64,
                            overwrite=True)
    wb.train(p, mode="probe", folds=3, image_size=64, progress=False)
    yield p
    wb.delete_project(p.name)


@pytest.fixture(scope="module")
def server(line_project, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "loupe-serve.log"
    with serve_project(line_project.name, log) as url:
        yield url, log


def _open(page, url: str, log) -> None:
    page.goto(url + "voila/render/line.ipynb", wait_until="commit", timeout=RENDER_TIMEOUT_MS)
    _rendered(page, log)


def _rendered(page, log) -> None:
    try:
        page.wait_for_function(
            "() => document.querySelector('.loupe-line-status .loupe-line-fact') !== null"
            " || (document.body !== null && document.body.innerText.includes('Traceback'))",
            timeout=RENDER_TIMEOUT_MS)
    except Exception as err:
        pytest.fail(f"the line console did not render ({err}); page text:\n"
                    f"{page.inner_text('body')[:2000]}\nserver output:\n{log_tail(log)}")
    assert "Traceback" not in page.inner_text("body")


def test_the_line_console_renders_remembers_the_name_and_gates_promote(line_project, server):
    url, log = server
    name = f"erin-{os.getpid()}"
    with chromium() as browser:
        external: list[str] = []
        context = offline_context(browser, external)
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        _open(page, url, log)
        strip = page.locator(".loupe-line-status").inner_text()
        assert "Line A runs no model yet" in strip and "No training running" in strip
        assert "until then nothing is written" in page.inner_text("body")
        page.locator(".loupe-name input").fill(name)
        page.keyboard.press("Enter")
        page.get_by_text(f"acting as {name}").wait_for(timeout=30_000)

        page.reload(wait_until="commit", timeout=RENDER_TIMEOUT_MS)  # a new visit
        _rendered(page, log)
        # browser -> kernel -> name box: waits behind the new kernel's notebook when loaded
        try:
            page.wait_for_function(
                "name => document.querySelector('.loupe-name input').value === name",
                arg=name, timeout=RENDER_TIMEOUT_MS)
        except Exception as err:
            stored = page.evaluate("() => window.localStorage.getItem('loupe.annotator')")
            pytest.fail(f"the name did not come back ({err}); stored: {stored!r}; name box: "
                        f"{page.locator('.loupe-name input').input_value()!r}\nconsole:\n"
                        + "\n".join(console[-30:]) + f"\nserver output:\n{log_tail(log)}")
        page.get_by_text(f"acting as {name}").wait_for(timeout=60_000)  # and the page says so

        promote = page.locator("button", has_text="Promote")
        assert promote.is_disabled()  # nothing compared yet
        page.locator("button", has_text="Compare with line A").click()
        verdict = page.locator(".loupe-line-verdict")
        verdict.wait_for(timeout=GATE_TIMEOUT_MS)
        assert verdict.get_attribute("data-passed") == "false"
        assert "There is a frozen evaluation set" in verdict.inner_text()
        assert promote.is_disabled()
        page.locator("button", has_text="Force promotion").wait_for(
            state="visible", timeout=GATE_TIMEOUT_MS)  # a separate widget from the verdict
        assert external == []
    import workbench as wb

    assert wb.current_deployment(line_project, line="A") is None  # nothing was written
