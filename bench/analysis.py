"""Runtime of the whole analysis suite on the 1,799 distinct NEU images, embeddings cached.

Usage: ``python bench/analysis.py [--data ../shared/data/neu_surface_defect] [--repeats 2]``

Imports every image (slice field ``folder``: the source release's folder), embeds them and
their mirrors once, trains ``wb.train(p, mode="probe", folds=5)``, then times each analysis
(the best of ``--repeats`` calls; the first call after training warms the FiftyOne and
scikit-learn code paths). Baseline in the same process: 5-fold out-of-fold
``LogisticRegression`` probabilities + ``cleanlab.filter.find_label_issues`` on the same
embeddings — what a hand-written script would run for label issues alone. Goal: the whole
suite under 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import neu


def best_of(repeats: int, call) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=neu.DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"no data folder {args.data} (see its SOURCE.md)")
    root = neu.throwaway_home("loupe-bench-analysis-")
    import workbench as wb
    from workbench.train.embeddings import embed_project

    print(neu.machine_line(sys.argv), flush=True)
    table = neu.manifest(args.data)
    start = time.perf_counter()
    p = neu.project_from_rows("neu", table, root)
    print(f"import: {len(p)} images in {time.perf_counter() - start:.1f} s", flush=True)
    start = time.perf_counter()
    vectors = embed_project(p, progress=False).vectors
    embed_project(p, progress=False, flip=True)
    print(f"embeddings (images and mirrors, once): {time.perf_counter() - start:.0f} s",
          flush=True)
    start = time.perf_counter()
    mv = wb.train(p, mode="probe", folds=5, progress=False)
    print(f"train probe, 5 folds: {time.perf_counter() - start:.1f} s, out-of-fold accuracy "
          f"{mv.metrics['accuracy']:.4f}", flush=True)

    labels = np.array(p.dataset.values("ground_truth.label"))
    pair = wb.confusion(p, mv).stack().drop([(c, c) for c in mv.classes]).idxmax()
    suite = {
        "confusion": lambda: wb.confusion(p, mv),
        "confusion_samples": lambda: wb.confusion_samples(p, mv, true=pair[0], pred=pair[1]),
        "class_report": lambda: wb.class_report(p, mv),
        "slice_report": lambda: wb.slice_report(p, mv, by=["folder"]),
        "discover_slices": lambda: wb.discover_slices(p, mv, k=5),
        "label_issues": lambda: wb.label_issues(p, mv),
        "agreement": lambda: wb.agreement(p, mv),
        "near_duplicates": lambda: wb.near_duplicates(p),
        "outliers": lambda: wb.outliers(p),
        "data_advice": lambda: wb.data_advice(p, mv),
        "datasheet": lambda: wb.datasheet(p),
    }
    print(f"\n| analysis | s (best of {args.repeats}) | result |")
    print("|---|---:|---|")
    total = 0.0
    for name, call in suite.items():
        seconds, result = best_of(args.repeats, call)
        total += seconds
        size = f"{len(result)} rows" if hasattr(result, "__len__") else type(result).__name__
        if name == "datasheet":
            size = f"{len(result.splitlines())} lines of Markdown"
        elif name == "agreement":
            size = f"{len(result.samples)} samples"
        print(f"| `wb.{name}` | {seconds:.2f} | {size} |", flush=True)
    print(f"| **whole suite** | **{total:.1f}** | goal < 10 s |")

    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    classes = sorted(set(labels))
    coded = np.array([classes.index(c) for c in labels])

    def baseline() -> np.ndarray:
        probs = cross_val_predict(LogisticRegression(max_iter=1000), vectors, coded,
                                  cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                  method="predict_proba")
        return find_label_issues(coded, probs)

    seconds, _ = best_of(args.repeats, baseline)
    print(f"\nbaseline, label issues only (5-fold LR + cleanlab): {seconds:.2f} s; the whole "
          f"suite takes {total / seconds:.1f}x that")


if __name__ == "__main__":
    main()
