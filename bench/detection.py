"""Defect localisation: mAP@0.5 after training on 50 images, training time on this machine,
and how many planted box errors the issue ranking finds.

Usage: ``python bench/detection.py [--data ../shared/data/neu_surface_defect] [--train 50]
[--test 150] [--folds 3] [--epochs N] [--image-size N] [--planted 0.2] [--only demo|neu]``

Two datasets, the same steps:

- **demo**: the generated casing images (``create_demo_project(task="detection")``, 128 px,
  four defect classes plus defect-free "ok" images), true boxes from ``demo_truth``.
- **neu**: NEU-DET (200 px greyscale steel, six classes, Pascal VOC boxes from
  ``annotations/``), a class-stratified draw, imported with ``p.import_voc`` from a
  temporary folder of copies.

1. *mAP@0.5*: ``wb.train(p, task="detection", model="retinanet")`` on ``--train`` images with
   their true boxes (k-fold out-of-fold predictions, then a final model on all of them),
   then mAP@0.5 and mAP@[.5:.95] of the final model on ``--test`` other images. Baseline,
   same images, same process: what a classifier alone gives — a probe (``wb.train(...,
   mode="probe")``) on the same training images with their image class, predicting one box
   covering the whole image with its class and confidence.
2. *Training time*: wall clock of that ``wb.train`` call (all folds and the final model).
3. *Planted errors*: ``--planted`` of the training images with boxes get one error each,
   stored as a review (history kept) — a box shifted by half its size, a box dropped, or a
   wrong class, in turn. Retrain, ``wb.detection_report``; recall of the planted images
   among the top-k images of the issue ranking (k = number planted, and 2k), against a
   random ranking of the same images (mean of 1,000 shuffles).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from neu import DEFAULT_DATA, machine_line, throwaway_home

KINDS = ("shifted", "dropped", "wrong_class")


# -- datasets --------------------------------------------------------------------------------
def demo_sets(train: int, test: int, seed: int):
    """(training project with true boxes, test frame of true boxes, test paths, classes)."""
    from workbench.demo import create_demo_project

    per_class = max(1, round(train / 5))
    p = create_demo_project("bench-det-demo", n_per_class=per_class, seed=seed,
                            task="detection", duplicates=0, overwrite=True)
    set_truth_from_field(p)
    held = create_demo_project("bench-det-demo-test", n_per_class=max(1, round(test / 5)),
                               seed=seed + 1000, task="detection", duplicates=0,
                               overwrite=True)
    truth = field_boxes(held, "demo_truth")
    paths = list(held.dataset.values("filepath"))
    return p, truth, paths, list(p.classes)


def set_truth_from_field(p) -> None:
    """Make the demo's true boxes (``demo_truth``) the consensus, as a review."""
    frame = field_boxes(p, "demo_truth")
    for sid in p.dataset.values("id"):
        rows = frame[frame["sample_id"] == sid]
        p.annotate_boxes(sid, rows[["label", "x", "y", "w", "h"]], annotator="truth",
                         review=True)


def field_boxes(p, field: str) -> pd.DataFrame:
    """Boxes of a fo.Detections field as a frame keyed by file path (test sets) or id."""
    rows = []
    ids, paths, dets = p.dataset.values(["id", "filepath", f"{field}.detections"])
    for sid, path, found in zip(ids, paths, dets, strict=True):
        for d in found or []:
            x, y, w, h = d["bounding_box"]
            rows.append({"sample_id": sid, "filepath": path, "label": d["label"],
                         "x": x, "y": y, "w": w, "h": h})
    return pd.DataFrame(rows, columns=["sample_id", "filepath", "label", "x", "y", "w", "h"])


def neu_sets(data: Path, train: int, test: int, seed: int, work: Path):
    import workbench as wb

    xml = sorted((data / "annotations").glob("*.xml"))
    table = pd.DataFrame({"xml": xml, "label": [x.stem.rsplit("_", 1)[0] for x in xml]})
    rng = np.random.default_rng(seed)
    classes = sorted(table["label"].unique())
    chosen = {"train": [], "test": []}
    for i, label in enumerate(classes):
        rows = rng.permutation(np.flatnonzero(table["label"].to_numpy() == label))
        n_train = train // len(classes) + (i < train % len(classes))
        n_test = test // len(classes) + (i < test % len(classes))
        chosen["train"] += list(rows[:n_train])
        chosen["test"] += list(rows[n_train:n_train + n_test])
    projects = {}
    for part, rows in chosen.items():
        images, notes = work / part / "images", work / part / "annotations"
        notes.mkdir(parents=True)
        for row in table.iloc[rows].itertuples():
            label = row.label
            image = next((data / label).rglob(f"{row.xml.stem}.jpg"), None)
            if image is None:
                continue
            (images / label).mkdir(parents=True, exist_ok=True)
            shutil.copy(image, images / label / image.name)
            shutil.copy(row.xml, notes / row.xml.name)
        p = wb.Project.create(f"bench-det-neu-{part}", task="detection", overwrite=True)
        report = p.import_voc(images, notes, annotator="truth", progress=False)
        if report.rejected:
            print(f"  neu {part}: {len(report.rejected)} rejected, e.g. {report.rejected[0]}")
        projects[part] = p
    held = projects["test"]
    truth = held.boxes().assign(sample_id=lambda f: f["filepath"])
    paths = list(held.dataset.values("filepath"))
    return projects["train"], truth, paths, list(projects["train"].classes)


# -- measurements ----------------------------------------------------------------------------
def test_map(truth: pd.DataFrame, pred: pd.DataFrame, paths: list[str]) -> dict[str, float]:
    from workbench.metrics.detection_metrics import detection_map, mean_ap

    truth = truth.assign(sample_id=truth["filepath"])
    pred = pred.assign(sample_id=pred["filepath"])
    return mean_ap(detection_map(truth, pred, sample_ids=paths))


def whole_image_baseline(p, paths: list[str], *, image_size: int) -> pd.DataFrame:
    """A probe on the image classes of the training images; one whole-image box each."""
    import workbench as wb

    frame = p.to_pandas()
    boxes = p.boxes()
    first = boxes.groupby("sample_id")["label"].agg(lambda s: s.mode().iloc[0])
    image_class = frame["sample_id"].map(first).fillna("ok")
    rows = pd.DataFrame({"filepath": frame["filepath"], "label": image_class,
                         "annotator": "truth"})
    folder = p.folder / "baseline"
    folder.mkdir(exist_ok=True)
    rows.to_csv(folder / "labels.csv", index=False)
    classifier = wb.Project.create(f"{p.name}-cls", overwrite=True)
    classifier.import_csv(folder / "labels.csv", progress=False)
    folds = int(min(3, rows["label"].value_counts().min()))
    mv = wb.train(classifier, mode="probe", folds=max(folds, 2), image_size=image_size,
                  progress=False)
    pred = mv.predict(paths, progress=False)
    pred = pred[pred["label"] != "ok"]
    return pd.DataFrame({"filepath": pred["filepath"], "label": pred["label"],
                         "confidence": pred["confidence"], "x": 0.0, "y": 0.0, "w": 1.0,
                         "h": 1.0})


def plant_errors(p, share: float, seed: int) -> dict[str, str]:
    """One error in ``share`` of the images with boxes (a review by "planted"); id -> kind."""
    rng = np.random.default_rng(seed)
    boxes = p.boxes()
    ids = sorted(boxes["sample_id"].unique())
    chosen = rng.choice(ids, max(1, round(share * len(ids))), replace=False)
    classes = list(p.classes)
    planted = {}
    for turn, sid in enumerate(sorted(chosen)):
        rows = boxes[boxes["sample_id"] == sid][["label", "x", "y", "w", "h"]].copy()
        rows = rows.reset_index(drop=True)
        kind = KINDS[turn % len(KINDS)]
        i = int(rng.integers(len(rows)))
        if kind == "shifted":
            box = rows.loc[i]
            dx = 0.5 * box.w * rng.choice([-1, 1])
            dy = 0.5 * box.h * rng.choice([-1, 1])
            rows.loc[i, "x"] = float(np.clip(box.x + dx, 0, 1 - box.w))
            rows.loc[i, "y"] = float(np.clip(box.y + dy, 0, 1 - box.h))
        elif kind == "dropped":
            rows = rows.drop(index=i)
        else:
            rows.loc[i, "label"] = rng.choice([c for c in classes if c != rows.loc[i, "label"]])
        p.annotate_boxes(sid, rows, annotator="planted", review=True)
        planted[sid] = kind
    return planted


def ranking_recall(report, planted: dict[str, str], ids: list[str], seed: int) -> dict:
    issues = report.issues.sort_values("score", ascending=False, kind="stable")
    ranked = list(dict.fromkeys(issues["sample_id"]))
    k = len(planted)
    truth = set(planted)
    out = {}
    for factor in (1, 2):
        top = set(ranked[:factor * k])
        out[f"loupe@{factor}k"] = len(top & truth) / k
        rng = np.random.default_rng(seed)
        out[f"random@{factor}k"] = float(np.mean(
            [len(set(rng.permutation(ids)[:factor * k]) & truth) / k for _ in range(1000)]))
    out["by_kind"] = {kind: float(np.mean([sid in set(ranked[:k]) for sid, kd in planted.items()
                                           if kd == kind]))
                      for kind in KINDS if kind in planted.values()}
    return out


def run(name: str, sets, args, image_size: int) -> None:
    import workbench as wb

    p, truth, paths, classes = sets
    n_images = len(p)
    n_boxes = len(p.boxes())
    print(f"\n== {name}: {n_images} training images ({n_boxes} boxes, classes "
          f"{', '.join(classes)}), {len(paths)} test images ==")
    settings = {"folds": args.folds, "epochs": args.epochs, "image_size": image_size,
                "seed": args.seed, "progress": False}
    start = time.perf_counter()
    mv = wb.train(p, task="detection", model="retinanet", backbone="tf_efficientnet_lite0",
                  **settings)
    seconds = time.perf_counter() - start
    loupe = test_map(truth, mv.predict(paths, progress=False), paths)
    baseline = test_map(truth, whole_image_baseline(p, paths, image_size=image_size),
                        paths)
    print(f"training: {seconds:.0f} s for {args.folds} folds + final model "
          f"({mv.config['epochs']} epochs, {image_size} px, {n_images} images)")
    print(f"test mAP@0.5      RetinaNet {loupe['map50']:.3f}   whole-image classifier "
          f"{baseline['map50']:.3f}   ratio {ratio(loupe['map50'], baseline['map50'])}")
    print(f"test mAP@[.5:.95] RetinaNet {loupe['map50_95']:.3f}   whole-image classifier "
          f"{baseline['map50_95']:.3f}")
    oof = mv.metrics.get("map50")
    if oof is not None:
        print(f"out-of-fold mAP@0.5 on the training images: {oof:.3f}")
    planted = plant_errors(p, args.planted, args.seed)
    start = time.perf_counter()
    noisy = wb.train(p, task="detection", model="retinanet", **settings)
    retrain = time.perf_counter() - start
    report = wb.detection_report(p, noisy)
    ids = list(p.dataset.values("id"))
    recall = ranking_recall(report, planted, ids, args.seed)
    counts = pd.Series(planted).value_counts().to_dict()
    print(f"planted errors: {len(planted)} images ({counts}); retrain {retrain:.0f} s")
    print(f"recall of planted images in the top k={len(planted)}: Loupe "
          f"{recall['loupe@1k']:.2f}   random {recall['random@1k']:.2f}   ratio "
          f"{ratio(recall['loupe@1k'], recall['random@1k'])}")
    print(f"recall in the top 2k={2 * len(planted)}: Loupe {recall['loupe@2k']:.2f}   "
          f"random {recall['random@2k']:.2f}")
    print("recall@k by kind: " + ", ".join(f"{k} {v:.2f}" for k, v in recall["by_kind"].items()))
    print(f"report: {report.summary()}")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a (baseline 0)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train", type=int, default=50)
    parser.add_argument("--test", type=int, default=150)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: wb.train's (about 400 optimiser steps, 12-30 epochs)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="pixels the detector sees (default: 128 demo, 224 NEU-DET)")
    parser.add_argument("--planted", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("demo", "neu"))
    args = parser.parse_args()
    root = throwaway_home("loupe-bench-detection-")
    print(machine_line(sys.argv))
    try:
        if args.only in (None, "demo"):
            run("demo", demo_sets(args.train, args.test, args.seed), args,
                args.image_size or 128)
        if args.only in (None, "neu"):
            if (args.data / "annotations").is_dir():
                run("NEU-DET", neu_sets(args.data, args.train, args.test, args.seed,
                                        root / "neu"), args, args.image_size or 224)
            else:
                print(f"NEU-DET skipped: {args.data / 'annotations'} not found")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
