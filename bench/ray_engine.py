"""Embedding on Ray against embedding here (issue 28, heavy steps beyond one machine).

Usage: ``python bench/ray_engine.py [--n 2000] [--workers 2] [--image-size 224]
[--repeats 1]``

Makes a demo project of about ``--n`` images rendered at 96 px in a throwaway Loupe home
(FiftyOne's database too, unless ``FIFTYONE_DATABASE_URI`` names one), then times
``embed_project`` in this process (torch's own threads, every core; then one thread, what
one worker has) against ``wb.embed(engine="ray")`` on a local Ray of ``--workers`` CPUs
(one 1-thread actor per worker), the project's embedding cache deleted before every run.
Each Ray run includes starting its actor pool (every actor imports torch and builds the
backbone); starting Ray itself is timed apart. Prints images/s of each, the ratio of Ray to
the local default, the Ray path's images/s per worker against one local thread, and the
largest difference between the vectors of the local runs and the Ray run.

On a machine other jobs also load, several torch threads in one process wait on each
other and lose far more than 1-thread processes do: compare runs made at the same load.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from neu import machine_line, throwaway_home


def timed(run, repeats: int, clear) -> tuple[float, object]:
    """Median seconds of ``run()`` over ``repeats``, ``clear()`` before each, and the last
    result."""
    times, result = [], None
    for _ in range(repeats):
        clear()
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images in the project (about)")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors, one CPU each")
    parser.add_argument("--image-size", type=int, default=224, help="embedding input side")
    parser.add_argument("--repeats", type=int, default=1, help="runs per engine (median)")
    args = parser.parse_args(argv)
    print(machine_line(sys.argv))
    root = throwaway_home("loupe-bench-ray-")
    try:
        run(args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    import ray
    import torch

    import workbench as wb
    from workbench.demo import CLASSES, create_demo_project
    from workbench.train.embeddings import embed_project

    start = time.perf_counter()
    project = create_demo_project("bench-ray", n_per_class=max(1, args.n // len(CLASSES)),
                                  size=96, overwrite=True)
    n = len(project.dataset)
    print(f"project: {n} images at 96 px, made in {time.perf_counter() - start:.0f} s; "
          f"embedding at {args.image_size} px")
    cache = project.folder / "embeddings"

    def clear() -> None:
        shutil.rmtree(cache, ignore_errors=True)

    def local_run():
        return embed_project(project, image_size=args.image_size, progress=False)

    threads = torch.get_num_threads()
    local_s, local = timed(local_run, args.repeats, clear)
    torch.set_num_threads(1)
    single_s, single = timed(local_run, args.repeats, clear)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    ray_start_s = time.perf_counter() - start
    try:
        ray_s, remote = timed(lambda: wb.embed(project, engine="ray", workers=args.workers,
                                               image_size=args.image_size, progress=False),
                              args.repeats, clear)
    finally:
        ray.shutdown()
    assert local.n_computed == remote.n_computed == n
    local_rate, single_rate, ray_rate = n / local_s, n / single_s, n / ray_s
    print(f"local, one process ({threads} torch threads): {local_s:.1f} s, "
          f"{local_rate:.1f} images/s")
    print(f"local, one process (1 torch thread): {single_s:.1f} s, {single_rate:.1f} images/s")
    print(f"ray, {args.workers} workers x 1 thread: {ray_s:.1f} s, {ray_rate:.1f} images/s "
          f"(starting Ray: {ray_start_s:.1f} s, not counted)")
    print(f"ray / local ({threads} threads): {ray_rate / local_rate:.2f}x")
    print(f"per worker: {ray_rate / args.workers:.1f} images/s, "
          f"{ray_rate / args.workers / single_rate:.2f}x one local thread")
    print(f"max abs difference of the vectors: "
          f"{float(np.abs(remote.vectors - single.vectors).max()):.2e} against the local "
          f"1-thread run (the arithmetic a worker does), "
          f"{float(np.abs(remote.vectors - local.vectors).max()):.2e} against the "
          f"{threads}-thread run (float32 sums in another order; largest |value| "
          f"{float(np.abs(local.vectors).max()):.2f})")
    wb.delete_project(project.name)


if __name__ == "__main__":
    main(sys.argv[1:])
