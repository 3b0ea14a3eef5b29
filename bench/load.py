"""Load: concurrent labelers on one project, and how open / to_pandas cost grows with size.

Usage: ``python bench/load.py [--seconds 30] [--processes 1,2,4] [--sizes 1000,10000,50000]
[--samples 40]``

1. Labeling. For each N in ``--processes``, a fresh project of ``--samples`` tiny images
   and N OS processes that call ``p.annotate`` on random samples (random annotator of
   three per process, random label, 5 % reviews) as fast as they can for ``--seconds``.
   Printed: acknowledged relabels per second (all processes), p50 / p99 latency of one
   ``p.annotate`` call, and the checks at the end: lost writes (history entries stored
   minus entries acknowledged; must be 0) and samples whose consensus differs from the
   replay of their stored history (must be 0). The baseline is N = 1 of the same run.
2. Size. For each size, a project whose samples are inserted directly as documents
   (``store.sample_document`` + ``store.add_samples``, skipping the per-file checks of a
   real import, for speed) pointing at generated 8x8 PNGs, each with three annotators'
   history and two slice fields. A new process then times ``Project.open`` and
   ``to_pandas()``; the baseline is the smallest size (cost per 1k samples).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from neu import machine_line, throwaway_home

CLASSES = ["ok", "scratch", "dent"]

WORKER = r"""
import json, random, sys, time
from pathlib import Path
import workbench as wb

name, index, go, seconds, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), \
    float(sys.argv[4]), Path(sys.argv[5])
p = wb.Project.open(name)
ids, classes = p.dataset.values("id"), p.classes
rng = random.Random(index)
annotators = [f"w{index}-{k}" for k in range(3)]
while not go.exists():
    time.sleep(0.005)
latencies, end = [], time.perf_counter() + seconds
while time.perf_counter() < end:
    review = rng.random() < 0.05
    start = time.perf_counter()
    p.annotate(rng.choice(ids), rng.choice(classes), annotator=f"rev{index}" if review
               else rng.choice(annotators), review=review)
    latencies.append(time.perf_counter() - start)
out.write_text(json.dumps(latencies))
"""

OPEN = r"""
import json, sys, time
import workbench as wb
from workbench.config import fiftyone
start = time.perf_counter()
fiftyone().list_datasets()  # import FiftyOne and connect: paid once per process
connected = time.perf_counter()
p = wb.Project.open(sys.argv[1])
opened = time.perf_counter()
frame = p.to_pandas()
done = time.perf_counter()
print(json.dumps({"connect_s": connected - start, "open_s": opened - connected,
                  "to_pandas_s": done - opened, "rows": len(frame)}))
"""


def labelling_run(n: int, *, samples: int, seconds: float, tmp: Path) -> dict:
    from PIL import Image

    import workbench as wb

    name = f"load-{n}"
    p = wb.Project.create(name, classes=CLASSES, overwrite=True)
    folder = tmp / name
    rng = np.random.default_rng(n)
    for i in range(samples):
        path = folder / CLASSES[i % 3] / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)
    p.import_folder(folder, progress=False)
    initial = samples
    go = tmp / f"go-{n}"
    outs = [tmp / f"lat-{n}-{i}.json" for i in range(n)]
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, name, str(i), str(go),
                                 str(seconds), str(out)]) for i, out in enumerate(outs)]
    time.sleep(1.0)
    if any(w.poll() is not None for w in workers):
        raise SystemExit("a labelling worker died at start")
    go.touch()
    for w in workers:
        w.wait()
    latencies = [x for out in outs for x in json.loads(out.read_text())]
    stored = sum(len(d["annotations"]) for d in p.dataset._sample_collection.find(
        {}, {"annotations": 1}))
    return {"n": n, "acked": len(latencies), "rate": len(latencies) / seconds,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * float(np.percentile(latencies, 99)),
            "lost": initial + len(latencies) - stored, "inconsistent": _inconsistent(p)}


def _inconsistent(project) -> int:
    from workbench.store.labels import DISPUTED_TAG, consensus

    bad = 0
    for doc in project.dataset._sample_collection.find({}, {"annotations": 1,
                                                             "ground_truth": 1, "tags": 1}):
        history = [{"annotator": e["annotator"], "label": e["label"],
                    "review": bool(e.get("review"))} for e in doc["annotations"]]
        label, disputed = None, False
        for k in range(1, len(history) + 1):
            label, disputed = consensus(history[:k], label)
        if ((doc.get("ground_truth") or {}).get("label") != label
                or (DISPUTED_TAG in doc["tags"]) != disputed):
            bad += 1
    return bad


def size_run(size: int, *, tmp: Path) -> dict:
    from PIL import Image

    import workbench as wb
    from workbench.store import _db as store
    from workbench.store.labels import Annotation, now

    name = f"size-{size}"
    p = wb.Project.create(name, classes=CLASSES, overwrite=True)
    store.ensure_slice_fields(p.dataset, ["line", "camera"])
    store.update_project_info(p.dataset, slice_fields=["line", "camera"])
    folder = tmp / name
    folder.mkdir()
    rng = np.random.default_rng(size)
    stamp = now()
    started = time.perf_counter()
    documents = []
    for i in range(size):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)
        history = [Annotation(who, CLASSES[int(rng.integers(3))], stamp)
                   for who in ("alice", "bob", "carol")]
        documents.append(store.sample_document(
            p.dataset, str(path), metadata={"size_bytes": path.stat().st_size,
                                            "mime_type": "image/png", "width": 8,
                                            "height": 8, "num_channels": 3},
            fields={"line": "ABC"[i % 3], "camera": f"cam{i % 2}", "split": "train",
                    "content_hash": f"{i:064x}"}, history=history, stamp=stamp))
        if len(documents) == 5000:
            store.add_samples(p.dataset, documents)
            documents = []
    store.add_samples(p.dataset, documents)
    built = time.perf_counter() - started
    result = json.loads(subprocess.run([sys.executable, "-c", OPEN, name], check=True,
                                       capture_output=True, text=True).stdout.splitlines()[-1])
    assert result["rows"] == size
    return {"size": size, "build_s": built, **result}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--samples", type=int, default=40,
                        help="images in each labelling project (fewer: more contention)")
    args = parser.parse_args(argv)
    throwaway_home("loupe-bench-load-")
    tmp = Path(tempfile.mkdtemp(prefix="loupe-load-media-"))
    print(machine_line([sys.argv[0], *argv]))

    print(f"\n1. concurrent labelling: {args.samples} samples, {args.seconds:.0f} s per row")
    print(f"{'processes':>9} {'relabels':>9} {'per s':>8} {'x vs 1':>7} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'lost':>5} {'inconsistent':>12}")
    base = None
    for n in (int(x) for x in args.processes.split(",")):
        row = labelling_run(n, samples=args.samples, seconds=args.seconds, tmp=tmp)
        base = base or row["rate"]
        print(f"{n:>9} {row['acked']:>9} {row['rate']:>8.1f} {row['rate'] / base:>7.2f} "
              f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['lost']:>5} "
              f"{row['inconsistent']:>12}")

    print("\n2. project size (documents inserted directly; open and to_pandas in a new "
          "process)")
    print(f"{'samples':>8} {'insert s':>9} {'connect s':>9} {'open s':>7} {'to_pandas s':>11} "
          f"{'to_pandas ms / 1k':>17} {'x per-1k vs smallest':>20}")
    per_1k_base = None
    for size in (int(x) for x in args.sizes.split(",")):
        row = size_run(size, tmp=tmp)
        per_1k = 1000 * row["to_pandas_s"] / size * 1000
        per_1k_base = per_1k_base or per_1k
        print(f"{size:>8} {row['build_s']:>9.1f} {row['connect_s']:>9.2f} {row['open_s']:>7.2f} "
              f"{row['to_pandas_s']:>11.2f} {per_1k:>17.1f} {per_1k / per_1k_base:>20.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
