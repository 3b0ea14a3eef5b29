"""The dashboards' browser console: no webpack "Unsatisfied version" warnings.

Voila 0.5.13's page provides JupyterLab 4.2.5's core packages; the widget extensions ask
for newer ones (``^4.6.2``), and webpack logged one warning per package, 13-14 per page.
``workbench.deploy.voila_server.CoreRangeExtensionHandler`` serves their ``remoteEntry``
with the ranges widened to the major version; this checks that every dashboard renders its
widgets and logs none.
"""

from __future__ import annotations

import os
import sys

import pytest
from browser_support import REPO_ROOT, chromium, free_port, log_tail, offline_context, serve

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RENDER_TIMEOUT_MS = 240_000
#: Dashboard → an element that shows its widgets were rendered by the widget manager.
PAGES = {"review.ipynb": ".loupe-name input", "report.ipynb": ".loupe-drift-status",
         "main.ipynb": ".loupe-workbench"}


@pytest.fixture(scope="module")
def console_project():
    import workbench as wb
    from workbench.demo import create_demo_project

    p = create_demo_project(f"console-browser-{os.getpid()}", n_per_class=6, seed=2,
                            overwrite=True)
    wb.train(p, mode="probe", folds=3, image_size=64, progress=False)
    yield p
    wb.delete_project(p.name)


@pytest.fixture(scope="module")
def server(console_project, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "loupe-serve.log"
    command = [sys.executable, "-m", "workbench.cli", "serve", "--project",
               console_project.name, "--port", str(port), "--no-preheat"]
    url = f"http://127.0.0.1:{port}/"
    with serve(command, url, log, cwd=REPO_ROOT):
        yield url, log


@pytest.mark.parametrize("notebook", list(PAGES))
def test_a_dashboard_logs_no_unsatisfied_version_warning(server, notebook):
    url, log = server
    with chromium() as browser:
        external: list[str] = []
        page = offline_context(browser, external).new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.goto(url + f"voila/render/{notebook}", wait_until="commit",
                  timeout=RENDER_TIMEOUT_MS)
        try:
            page.wait_for_selector(PAGES[notebook], state="attached",
                                   timeout=RENDER_TIMEOUT_MS)
        except Exception as err:
            pytest.fail(f"{notebook}: {PAGES[notebook]!r} did not render ({err}); page text:\n"
                        f"{page.inner_text('body')[:2000]}\nserver output:\n{log_tail(log)}")
        page.wait_for_timeout(1000)  # late extensions log while their plugins activate
        assert "Traceback" not in page.inner_text("body")
        unsatisfied = [line for line in console
                       if "Unsatisfied version" in line or "No satisfying version" in line]
        assert unsatisfied == [], "\n".join(unsatisfied)
        assert external == [], external
