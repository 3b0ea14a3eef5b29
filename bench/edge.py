"""loupe-edge on the line: ``serve`` and ``watch`` throughput against a bare onnxruntime loop
over the same images, latency, memory, the size of a stand-alone environment, and hot swaps
under load.

Usage: ``python bench/edge.py [--requests 400] [--swaps 20] [--no-venv]``

A demo project (8 images per class) with v1 and v2 (probes, 128 px) promoted on line A is
built in a throwaway database and Loupe home. Then, in one run on this machine:

1. **bare loop** (baseline): ``EdgePredictor.predict_pixels`` on one decoded image at a time;
2. ``loupe-edge serve`` with 1 and 8 concurrent clients posting the PNG files (the server
   decodes them; the baseline does not): requests per second, ratio to the bare loop (goal
   >= 0.8 at 8 clients), p50 / p99 latency with 1 client, resident memory of the server
   (goal < 300 MB);
3. ``loupe-edge watch``: images per second from copying ``--requests`` files into the
   watched folder to the last verdict line (goal >= 0.8 of the bare loop);
4. ``--swaps`` hot swaps (the line's pointer switched between v1 and v2 every 0.5 s, as
   ``wb.promote`` and ``wb.rollback`` switch it) under a continuous request loop: failed
   requests (goal 0) and the longest latency;
5. unless ``--no-venv``: the size of a fresh virtual environment holding loupe-edge alone
   against this workbench environment (goal < 10 %).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from neu import machine_line, throwaway_home

REPO_ROOT = Path(__file__).resolve().parents[1]
LINE = "A"


def build(root: Path):
    import workbench as wb
    from workbench.demo import create_demo_project
    from workbench.demo.line_story import prepare_line

    p = create_demo_project("bench-edge", n_per_class=8, overwrite=True)
    first = prepare_line(p, training={"folds": 2})
    second = wb.promote(p, wb.train(p, mode="probe", folds=2, image_size=128,
                                    progress=False, seed=1),
                        line=LINE, annotator="bench", force=True, reason="bench: a 2nd one")
    return p, first, second


def post(url: str, data: bytes) -> tuple[int, float, str]:
    start = time.perf_counter()
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            body = json.loads(answer.read())
            return answer.status, time.perf_counter() - start, body.get("deployment_id", "")
    except Exception as error:  # counted as failed
        return 0, time.perf_counter() - start, str(error)


def load(url: str, images: list[bytes], n: int, clients: int) -> tuple[float, list[float], int]:
    """(requests per second, latencies, failures) for ``n`` requests from ``clients``."""
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda i: post(url, images[i % len(images)]), range(n)))
    wall = time.perf_counter() - start
    return n / wall, [r[1] for r in results], sum(r[0] != 200 for r in results)


def switch(line_folder: Path, deployment_id: str) -> None:
    """Replace the pointer as ``wb.promote`` does: write beside it, then rename."""
    pointer = line_folder / "current.json"
    current = json.loads(pointer.read_text())
    partial = line_folder / ".current.json.bench"
    partial.write_text(json.dumps({**current, "deployment_id": deployment_id}))
    partial.replace(pointer)


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--no-venv", action="store_true")
    args = parser.parse_args()
    root = throwaway_home("loupe-bench-edge-")
    os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
    print(machine_line(sys.argv), flush=True)

    from browser_support import free_port, stop, wait_for_server
    from loupe_edge import EdgePredictor, decode

    p, first, second = build(root)
    deployments = p.folder / "deployments"
    paths = list(p.dataset.values("filepath"))[:40]
    images = [Path(path).read_bytes() for path in paths]
    pixels = [decode(data) for data in images]
    model = EdgePredictor(second.model_path)
    for one in pixels[:5]:
        model.predict_pixels(one[None])  # warm
    start = time.perf_counter()
    for i in range(args.requests):
        model.predict_pixels(pixels[i % len(pixels)][None])
    bare = args.requests / (time.perf_counter() - start)
    print(f"\nbare onnxruntime loop: {bare:.1f} images/s ({pixels[0].shape[1]} px images, "
          f"{second.version})", flush=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = root / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "loupe_edge.cli", "serve",
                                   str(deployments), "--line", LINE, "--port", str(port),
                                   "--poll", "0.2"], stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_for_server(url + "v1/health", server, log)
        load(url + "v1/inspect", images, 20, 1)  # warm
        one, latencies, failed_one = load(url + "v1/inspect", images, args.requests, 1)
        eight, _, failed_eight = load(url + "v1/inspect", images, args.requests, 8)
        rss = sum(proc.memory_info().rss for proc in
                  [psutil.Process(server.pid), *psutil.Process(server.pid).children(True)])
        print(f"serve, 1 client:  {one:.1f} requests/s ({one / bare:.2f} of the bare loop); "
              f"latency p50 {statistics.median(latencies) * 1000:.1f} ms, p99 "
              f"{np.percentile(latencies, 99) * 1000:.1f} ms; failed {failed_one}")
        print(f"serve, 8 clients: {eight:.1f} requests/s ({eight / bare:.2f} of the bare "
              f"loop; goal >= 0.8: {'met' if eight / bare >= 0.8 else 'NOT met'}); failed "
              f"{failed_eight}")
        print(f"serving process resident memory: {rss / 2**20:.0f} MB (goal < 300 MB: "
              f"{'met' if rss < 300 * 2**20 else 'NOT met'})", flush=True)

        # hot swaps under a request loop
        results: list[tuple[int, float, str]] = []
        done = threading.Event()

        def loop() -> None:
            while not done.is_set():
                results.append(post(url + "v1/inspect", images[len(results) % len(images)]))

        worker = threading.Thread(target=loop)
        worker.start()
        time.sleep(1)
        ids = [first.deployment_id, second.deployment_id]
        for index in range(args.swaps):
            switch(deployments / LINE, ids[index % 2])
            time.sleep(0.5)
        time.sleep(1)
        done.set()
        worker.join()
        health = json.loads(urllib.request.urlopen(url + "v1/health", timeout=30).read())
        failed = sum(r[0] != 200 for r in results)
        print(f"{args.swaps} hot swaps under load: {len(results)} requests, {failed} failed "
              f"(goal 0: {'met' if failed == 0 else 'NOT met'}); server counted "
              f"{health['swaps']} swaps; longest latency "
              f"{max(r[1] for r in results) * 1000:.0f} ms (median "
              f"{statistics.median(r[1] for r in results) * 1000:.1f} ms)", flush=True)
    finally:
        stop(server)

    # watch
    incoming, out = root / "incoming", root / "watch-out"
    incoming.mkdir()
    watch = subprocess.Popen([sys.executable, "-m", "loupe_edge.cli", "watch",
                              str(deployments), str(incoming), "--line", LINE, "--out",
                              str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        time.sleep(5)  # loaded
        start = time.perf_counter()
        for index in range(args.requests):
            (incoming / f"part_{index:05d}.png").write_bytes(images[index % len(images)])
        verdicts = out / "verdicts" / "verdicts.jsonl"
        while not verdicts.exists() or \
                len(verdicts.read_text().splitlines()) < args.requests:
            if watch.poll() is not None:
                raise SystemExit(f"watch exited: {watch.stderr.read()}")
            time.sleep(0.1)
        rate = args.requests / (time.perf_counter() - start)
        print(f"watch: {rate:.1f} images/s ({rate / bare:.2f} of the bare loop; goal >= 0.8: "
              f"{'met' if rate / bare >= 0.8 else 'NOT met'})", flush=True)
    finally:
        watch.terminate()
        watch.wait(timeout=30)

    if not args.no_venv:
        wheels, venv = root / "wheels", root / "edge-venv"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", str(REPO_ROOT / "edge"),
                        "-w", str(wheels)], check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                        "--no-index", "--find-links", str(wheels), "loupe-edge"], check=True)
        edge_size = folder_size(venv)
        workbench_size = folder_size(Path(sys.prefix))
        print(f"environment on disk: loupe-edge alone {edge_size / 2**20:.0f} MB, the workbench "
              f"{workbench_size / 2**30:.2f} GB: {edge_size / workbench_size:.1%} (goal < 10 %: "
              f"{'met' if edge_size < 0.1 * workbench_size else 'NOT met'})")
        shutil.rmtree(venv)
    print(f"\nthrowaway folder: {root}")


if __name__ == "__main__":
    main()
