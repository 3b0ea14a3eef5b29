"""Server memory over many page visits: ``loupe serve`` must stay flat, holding at most
pool sizes + ``--max-kernels`` kernels however many visits come.

Usage: ``python bench/serving_memory.py [--visits 100] [--max-kernels 6]
[--idle-timeout 120] [--pages review.ipynb,report.ipynb] [--close-pages] [--per-class 10]``

The demo project (``--per-class`` generated images per class, a first probe version so the
report renders) is built in a throwaway database and Loupe home. ``loupe serve`` (preheated
pools: review 2, report 1) then gets ``--visits`` page visits, one after the other, with
``urllib``: a GET of ``/voila/render/<page>`` (pages taken in turn), read to the end, as
``curl`` does: the page's scripts never run, so no visit ever connects to its kernel or
closes it (the worst case: only the idle timeout frees a kernel). With ``--close-pages``
each visit then sends the beacon a browser tab sends when it closes (``POST
/voila/api/shutdown/<kernel>``), as a person opening and closing dashboards does.

Baseline, in the same process first: stock Voila (``python -m voila``, no preheating, no
cap, no culling; the same dashboards, template and project) gets ``--baseline-visits``
visits the same way; each keeps its kernel, so the figures give the kernels and memory one
visit adds when nothing bounds them.

After every 10 visits: HTTP statuses so far (200 page, 503 "server busy"), the kernel
count and the resident memory (RSS, psutil) of the server (``loupe`` + Voila processes)
and of all kernels together. RSS counts pages shared between processes once per process.
"""

from __future__ import annotations

import argparse
import contextlib
import http.cookiejar
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from neu import machine_line, throwaway_home

REPO_ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
POOLS = 3  # workbench.deploy.serve.DEFAULT_POOLS: review 2, report 1


def build_project(name: str, per_class: int) -> None:
    import workbench as wb

    p = wb.demo.create_demo_project(name, n_per_class=per_class, overwrite=True)
    wb.train(p, mode="probe", folds=3, image_size=64, progress=False)


def tree(pid: int) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(server processes, kernel processes) of the process tree under ``pid``."""
    server, kernels = [], []
    root = psutil.Process(pid)
    for proc in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            (kernels if "ipykernel_launcher" in " ".join(proc.cmdline()) else server).append(proc)
    return server, kernels


def rss(procs: list[psutil.Process]) -> float:
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total / GIB


def wait_pools(pid: int, log: Path, limit_s: float = 900.0) -> float:
    """Wait until every pool is filled and its kernels have run their notebook."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        text = log.read_text(errors="replace")
        if text.count("Kernel pool of") >= 2 and len(tree(pid)[1]) >= POOLS:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.cpu_percent(None)
            time.sleep(2.0)
            busy = 0.0
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    busy += proc.cpu_percent(None)
            if busy < 15.0:
                return time.monotonic() - start
        time.sleep(2.0)
    raise TimeoutError(f"the pools were not ready after {limit_s:.0f} s; see {log}")


def visit(base: str, page: str, close: bool) -> int:
    """One page visit; with ``close``, the tab-closing beacon afterwards."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    try:
        with opener.open(f"{base}voila/render/{page}", timeout=600) as response:
            status, body = response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        err.read()
        return err.code
    kernel = re.search(r'"kernelId": "([0-9a-f-]{36})"', body)
    xsrf = next((cookie.value for cookie in jar if cookie.name == "_xsrf"), "")
    if close and kernel:
        data = urllib.parse.urlencode({"_xsrf": xsrf}).encode()
        opener.open(f"{base}voila/api/shutdown/{kernel.group(1)}", data=data, timeout=60)
    return status


def stock_voila(name: str, port: int) -> list[str]:
    """The command of stock Voila on the dashboards, as Loupe served them before issue 20."""
    from workbench.deploy.serve import CONFIG, DASHBOARDS, TEMPLATE

    return [sys.executable, "-m", "voila", str(DASHBOARDS), f"--port={port}", "--no-browser",
            "--Voila.ip=127.0.0.1", f"--template={TEMPLATE}", "--strip_sources=True",
            f"--Voila.config_file_paths={CONFIG}"]


def baseline(name: str, root: Path, visits: int, pages: list[str]) -> tuple[float, float]:
    """Stock Voila after ``visits`` visits: (kernels per visit, GiB per visit)."""
    from browser_support import free_port, stop, wait_for_server

    from workbench.deploy.serve import voila_env

    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    log = root / "stock.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(stock_voila(name, port), cwd=REPO_ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=voila_env(name))
    try:
        wait_for_server(base, proc, log)
        server, kernels = tree(proc.pid)
        before = rss(server) + rss(kernels)
        statuses = [visit(base, pages[n % len(pages)], close=False) for n in range(visits)]
        time.sleep(5.0)
        server, kernels = tree(proc.pid)
        after = rss(server) + rss(kernels)
        print(f"baseline, stock Voila: {visits} visits ({statuses.count(200)} pages) -> "
              f"{len(kernels)} kernels, {after:.2f} GiB (was {before:.2f} GiB before the "
              f"first visit): {len(kernels) / visits:.2f} kernels and "
              f"{(after - before) / visits:.2f} GiB per visit, none ever freed", flush=True)
        return len(kernels) / visits, (after - before) / visits
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visits", type=int, default=100)
    parser.add_argument("--max-kernels", type=int, default=6)
    parser.add_argument("--idle-timeout", type=float, default=120.0)
    parser.add_argument("--pages", default="review.ipynb,report.ipynb")
    parser.add_argument("--close-pages", action="store_true",
                        help="send the tab-closing beacon after each visit")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--baseline-visits", type=int, default=6,
                        help="visits to stock Voila first (each keeps a ~1 GB kernel; 0: skip)")
    args = parser.parse_args()
    print(machine_line(sys.argv), flush=True)
    root = throwaway_home("loupe-serving-bench-")
    name = "serving-bench"
    build_project(name, args.per_class)
    pages = [page.strip() for page in args.pages.split(",") if page.strip()]
    per_visit = (baseline(name, root, args.baseline_visits, pages) if args.baseline_visits
                 else None)
    from browser_support import free_port, stop, wait_for_server

    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "-m", "workbench.cli", "serve", "--project", name, "--port",
               str(port), "--max-kernels", str(args.max_kernels), "--idle-timeout",
               str(args.idle_timeout)]
    log = root / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=dict(os.environ))
    bound = POOLS + args.max_kernels
    try:
        wait_for_server(base, proc, log)
        waited = wait_pools(proc.pid, log)
        server, kernels = tree(proc.pid)
        print(f"pools ready after {waited:.0f} s: {len(kernels)} kernels, server "
              f"{rss(server):.2f} GiB + kernels {rss(kernels):.2f} GiB; bound "
              f"{POOLS} pool + {args.max_kernels} cap = {bound} kernels", flush=True)
        print(f"{'visits':>6} {'200':>4} {'503':>4} {'kernels':>7} {'server GiB':>10} "
              f"{'kernels GiB':>11} {'total GiB':>9} {'elapsed s':>9}", flush=True)
        statuses: list[int] = []
        most = len(kernels)
        start = time.monotonic()
        for n in range(1, args.visits + 1):
            statuses.append(visit(base, pages[(n - 1) % len(pages)], args.close_pages))
            most = max(most, len(tree(proc.pid)[1]))
            if n % 10 == 0 or n == args.visits:
                server, kernels = tree(proc.pid)
                print(f"{n:6d} {statuses.count(200):4d} {statuses.count(503):4d} "
                      f"{len(kernels):7d} {rss(server):10.2f} {rss(kernels):11.2f} "
                      f"{rss(server) + rss(kernels):9.2f} {time.monotonic() - start:9.0f}",
                      flush=True)
        print(f"most kernels seen after a visit: {most} (bound {bound}); other statuses: "
              f"{sorted(set(statuses) - {200, 503})}", flush=True)
        if per_visit is not None:
            server, kernels = tree(proc.pid)
            stock_kernels = per_visit[0] * args.visits
            stock_gib = per_visit[1] * args.visits
            print(f"after {args.visits} visits: Loupe {len(kernels)} kernels, "
                  f"{rss(server) + rss(kernels):.2f} GiB; stock Voila at its measured rate "
                  f"{stock_kernels:.0f} kernels, +{stock_gib:.1f} GiB; ratio of kernels "
                  f"Loupe / stock {len(kernels) / max(stock_kernels, 1):.2f}", flush=True)
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
