"""Embedding throughput: the pipeline (decode → resize → forward) against the raw forward.

Usage: ``python bench/embeddings.py [--data ../shared/data/neu_surface_defect] [--n 256]
[--batch-size B] [--image-size 224] [--repeats 3] [--no-sweep]``

Prints images/s of ``embed_paths`` without cache (files decoded with Pillow, resized and
normalised by ``preprocess``, forward in batches), of the raw forward of the same network on
pre-decoded, pre-resized tensors of the same batch size, measured in this process, and their
ratio (goal: >= 0.8); then the time to get the same images back through ``EmbeddingCache``
(all hits: hashing plus one ``.npy`` read). The backbone is built once before timing (0.5 s);
The three forward contestants are timed in turns; ``--sweep`` also times the pipeline
with 0, 1 and 2 DataLoader workers.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from workbench.train.backbones import DEFAULT_BACKBONE, create_backbone, preprocess
from workbench.train.embeddings import EmbeddingCache, _backbone, embed_paths

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "neu_surface_defect"


def image_paths(data: Path, n: int) -> list[Path]:
    return sorted(p for p in data.glob("*/*.jpg") if p.parent.name != "annotations")[:n]


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def raw_forward(model: torch.nn.Module, pixels: torch.Tensor, batch_size: int) -> None:
    with torch.inference_mode():
        for i in range(0, len(pixels), batch_size):
            model(pixels[i:i + batch_size])


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=256, help="first N files, sorted")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: embed_paths' default")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", action="store_true", help="also time num_workers 0, 1, 2")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"data folder not found: {args.data} (see ../shared/data/SOURCE.md)")
    paths = image_paths(args.data, args.n)
    n, size = len(paths), args.image_size
    batch = args.batch_size or embed_paths.__kwdefaults__["batch_size"]
    options = {"image_size": size, "batch_size": batch, "progress": False}

    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads")
    print(f"images: {n} from {args.data} at {size} px; backbone {DEFAULT_BACKBONE}; "
          f"batch {batch}; repeats {args.repeats} (median)")

    print(f"load average before: {os.getloadavg()[0]:.2f}")
    start = time.perf_counter()
    embed_paths(paths[:batch], **options)  # builds the backbone once; warms the page cache
    print(f"first call (backbone build + {batch} images): {time.perf_counter() - start:.2f} s")
    model, spec = _backbone(DEFAULT_BACKBONE, "default")  # the network embed_paths runs
    pixels = preprocess([Image.open(p).convert("RGB") for p in paths], spec, size)
    pixels = pixels.contiguous(memory_format=torch.channels_last)
    plain, _ = create_backbone()  # as create_backbone returns it: NCHW
    nchw_pixels = pixels.contiguous()
    raw_forward(model, pixels[:batch], batch)
    raw_forward(plain, nchw_pixels[:batch], batch)
    contestants = {  # timed in turns, so outside load falls on all of them alike
        "pipeline": lambda: embed_paths(paths, **options),
        "raw": lambda: raw_forward(model, pixels, batch),
        "nchw": lambda: raw_forward(plain, nchw_pixels, batch)}
    times = {name: [] for name in contestants}
    for _ in range(args.repeats):
        for name, run in contestants.items():
            times[name].append(median_seconds(run, 1))
    pipeline, raw, nchw = (statistics.median(times[name]) for name in contestants)

    with tempfile.TemporaryDirectory(prefix="loupe-bench-emb-") as folder:
        cache = EmbeddingCache(folder)
        fill = cache.embed(paths, **options)
        hits = []
        hit = median_seconds(lambda: hits.append(cache.embed(paths, **options)), args.repeats)
        assert fill.n_computed == n and all(h.n_computed == 0 for h in hits)

    print(f"{'contestant':<58}{'median s':>9}{'images/s':>10}")
    for name, seconds in (
            ("pipeline: embed_paths, no cache (decode→resize→forward)", pipeline),
            ("raw forward, same network (channels-last), tensors ready", raw),
            ("raw forward, create_backbone() as returned (NCHW)", nchw),
            ("cache hits: EmbeddingCache.embed, all cached", hit)):
        print(f"{name:<58}{seconds:>9.3f}{n / seconds:>10.1f}")
    print(f"ratio pipeline/raw forward (same network, batch {batch}): {raw / pipeline:.2f} "
          "(goal >= 0.8)")
    print(f"ratio pipeline/raw forward of the NCHW network: {nchw / pipeline:.2f}")
    print(f"cache hit vs pipeline: {pipeline / hit:.0f}x faster")
    if args.sweep:
        for workers in (0, 1, 2):
            seconds = median_seconds(lambda w=workers: embed_paths(
                paths, num_workers=w, **options), args.repeats)
            print(f"pipeline with num_workers={workers}: {n / seconds:.1f} images/s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
