"""Dashboard opening time: navigation to the first interactive review widget, with preheated
kernels against the same page without them.

Usage: ``python bench/dashboards.py [--per-class 40] [--repeats 3]``

The demo project (``--per-class`` images per class, 5 generated classes) with a first probe
version (5 folds, 128 px) is built in a throwaway database and Loupe home, as ``loupe demo``
builds it. Then, one server at a time so they never compete for the CPUs:

1. ``loupe serve`` (Voila, Loupe's template, ``review.ipynb`` with a pool of 2 preheated
   kernels);
2. the same command with ``--no-preheat`` (Voila starts a kernel and runs the notebook when
   the page is asked for: what a plain ``voila`` does).

``LOUPE_ANNOTATOR`` is set for the server, so the review queues show without typing a name.
Each server is warm before timing: it has served the page once, and every visit starts when
the server's processes are idle (for the preheated one: the pool is refilled and its kernels
have run the notebook). Time: from ``page.goto`` (Debian chromium, Playwright) until the
first review queue is rendered with its image and has the keyboard focus; per repeat, a
visit in a new browser context (empty cache: ~100 scripts to fetch and parse) and a second
visit in the same context (cached, as an inspector's browser is on later days). Every
request leaving 127.0.0.1 is aborted and counted (must be 0).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from neu import machine_line, throwaway_home

REPO_ROOT = Path(__file__).resolve().parents[1]
QUEUE = ".loupe-review:has(.loupe-review-image)"
TIMEOUT_MS = 300_000
GOAL_S = 3.0


def build_project(name: str, per_class: int) -> None:
    import workbench as wb

    start = time.perf_counter()
    p = wb.demo.create_demo_project(name, n_per_class=per_class, overwrite=True)
    wb.train(p, mode="probe", folds=5, image_size=128, progress=False)
    print(f"project {name!r}: {len(p)} images, probe v1 trained in "
          f"{time.perf_counter() - start:.0f} s", flush=True)


def wait_idle(pid: int, *, below: float = 15.0, quiet_s: float = 3.0,
              limit_s: float = 300.0) -> float:
    """Wait until the process tree of ``pid`` uses under ``below`` % CPU for ``quiet_s``."""
    start = time.monotonic()
    quiet_since = None
    root = psutil.Process(pid)
    while time.monotonic() - start < limit_s:
        procs = [root, *root.children(recursive=True)]
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.cpu_percent(None)
        time.sleep(1.0)
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.cpu_percent(None)
        if total < below:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= quiet_s:
                return time.monotonic() - start
        else:
            quiet_since = None
    return time.monotonic() - start


def open_review(context, url: str) -> float:
    """Seconds from navigation to a focused review queue, in a new page of ``context``."""
    page = context.new_page()
    try:
        start = time.perf_counter()
        page.goto(url, wait_until="commit", timeout=TIMEOUT_MS)
        queue = page.locator(QUEUE).first
        queue.wait_for(state="visible", timeout=TIMEOUT_MS)
        queue.focus()
        page.wait_for_function(
            "sel => document.activeElement === document.querySelector(sel)",
            arg=QUEUE, timeout=TIMEOUT_MS)
        return time.perf_counter() - start
    finally:
        page.close()


def measure(label: str, command: list[str], env: dict, port: int, repeats: int, browser,
            log: Path) -> tuple[list[float], list[float]]:
    from browser_support import offline_context, stop, wait_for_server

    url = f"http://127.0.0.1:{port}/voila/render/review.ipynb"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    external: list[str] = []
    cold, warm = [], []
    try:
        wait_for_server(f"http://127.0.0.1:{port}/", proc, log)
        waited = wait_idle(proc.pid)
        context = offline_context(browser, external)
        first = open_review(context, url)  # warms the server and its caches
        context.close()
        print(f"{label}: server idle after {waited:.0f} s; first page {first:.1f} s "
              "(not counted)", flush=True)
        for _ in range(repeats):
            context = offline_context(browser, external)  # an empty browser cache
            try:
                wait_idle(proc.pid)
                cold.append(open_review(context, url))
                wait_idle(proc.pid)
                warm.append(open_review(context, url))  # the same browser, a later visit
            finally:
                context.close()
            print(f"  {label}: {cold[-1]:.2f} s (empty browser cache), {warm[-1]:.2f} s "
                  "(cached)", flush=True)
    finally:
        stop(proc)
    if external:
        raise SystemExit(f"{label}: the page asked for external URLs: {sorted(set(external))}")
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    root = throwaway_home("loupe-bench-dashboards-")
    os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
    print(machine_line(sys.argv))
    name = "bench-dashboards"
    build_project(name, args.per_class)

    from browser_support import free_port, launch
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "LOUPE_ANNOTATOR": "bench"}
    results = {}
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            for label, extra in (("preheated", []), ("not preheated", ["--no-preheat"])):
                port = free_port()
                command = [sys.executable, "-m", "workbench.cli", "serve", "--project", name,
                           "--port", str(port), *extra]
                results[label] = measure(label, command, env, port, args.repeats, browser,
                                         root / f"serve-{label.replace(' ', '-')}.log")
        finally:
            browser.close()

    print(f"\nnavigation -> focused review queue (review.ipynb, {args.per_class * 5} demo "
          f"images + duplicates; warm server, offline; median of {args.repeats}):")
    print(f"  {'':28s} {'empty browser cache':>20s} {'cached (later visit)':>21s}")
    for label, server in (("preheated", "loupe serve"), ("not preheated", "--no-preheat")):
        cold, warm = results[label]
        print(f"  {label + ' (' + server + ')':28s} {statistics.median(cold):18.2f} s "
              f"{statistics.median(warm):19.2f} s")
    for column, name in ((0, "empty browser cache"), (1, "cached")):
        hot = statistics.median(results["preheated"][column])
        slow = statistics.median(results["not preheated"][column])
        print(f"  {name}: {slow / hot:.1f}x faster with preheating; goal < {GOAL_S:.0f} s "
              f"{'met' if hot < GOAL_S else 'NOT met'} ({hot:.2f} s)")
    print("  requests outside 127.0.0.1: 0")

if __name__ == "__main__":
    main()
