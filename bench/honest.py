"""Honest numbers: do grouped folds say what a held-out set says, are planted image-quality
issues found, and is a planted shortcut named?

Usage: ``python bench/honest.py [--part leak quality shortcuts] [--seeds 5] [--finetune]``

1. **leak** — NEU (``../shared/data/neu_surface_defect``): a stratified draw of 300 images
   (50 per class) plus near-copies of 30 % of them (a third each mirrored, cropped by 4–12 px
   and resized back, re-encoded as JPEG at quality 70–90), labelled as their originals. A
   probe (5 folds) is trained with near-copies grouped (the default) and without
   (``group_copies=False``); its final model predicts the 1,500 NEU images not drawn.
   Goal: grouped out-of-fold accuracy within 1 point of held-out accuracy; printed: how
   optimistic the ungrouped estimate is, and how many planted pairs the grouping found.
   ``--finetune``: the same with ``mode="finetune"`` (5 epochs, 128 px), which can memorise
   single images where a probe hardly does.
2. **quality** — planted dark, over-exposed, blurred and flattened images at 5 % on NEU and
   the demo: precision, recall and F1 per issue type, beside cleanvision's own defaults
   (``bench/honest_quality.py``; seeds from 4 on: the checks were tuned looking at 0–3).
   Goal: F1 >= 0.9 for each.
3. **shortcuts** — the demo with one class photographed only under dim light, and without:
   ``wb.shortcuts`` ranks lighting first at p < 0.01, and reports nothing at p < 0.01 on
   the unplanted demo (``bench/honest_shortcuts.py``).

Every figure is printed per seed, with mean ± std; copy them into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from neu import DEFAULT_DATA, draw, machine_line, manifest, project_from_rows, throwaway_home

COPY_SHARE = 0.3
KINDS = ("mirror", "crop", "jpeg")


def plant_copies(rows: pd.DataFrame, share: float, folder: Path,
                 rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Near-copies of ``share`` of ``rows`` (mirror, crop, JPEG re-encode in turn): the rows
    of the copies and the (original, copy) path pairs."""
    from PIL import Image, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    chosen = rng.choice(len(rows), round(share * len(rows)), replace=False)
    copies, pairs = [], []
    for k, i in enumerate(chosen):
        source = rows.iloc[i]
        image = Image.open(source["filepath"]).convert("RGB")
        kind = KINDS[k % len(KINDS)]
        if kind == "mirror":
            image = ImageOps.mirror(image)
        elif kind == "crop":
            w, h = image.size
            d = int(rng.integers(4, 13))
            image = image.crop((d, d, w - d, h - d)).resize((w, h))
        target = folder / f"copy{k:03d}_{kind}.jpg"
        image.save(target, quality=int(rng.integers(70, 91)))
        copies.append({"filepath": str(target), "label": source["label"]})
        pairs.append((source["filepath"], str(target), kind))
    return pd.DataFrame(copies), pd.DataFrame(pairs, columns=["original", "copy", "kind"])


def leak_run(table: pd.DataFrame, seed: int, root: Path, cache,
             **training: object) -> dict[str, float]:
    """One seed of part 1 (``training``: ``wb.train`` options, a probe by default)."""
    import workbench as wb

    rng = np.random.default_rng(seed)
    drawn = draw(table["label"].to_numpy(), 50, rng)
    rows = table.iloc[drawn][["filepath", "label"]].reset_index(drop=True)
    copies, pairs = plant_copies(rows, COPY_SHARE, root / f"copies-{seed}", rng)
    project = project_from_rows(f"leak-{seed}", pd.concat([rows, copies], ignore_index=True),
                                root, cache_from=cache)
    started = time.time()
    settings = {"mode": "probe", **training}
    grouped = wb.train(project, seed=seed, progress=False, **settings)
    grouped_s = time.time() - started
    loose = wb.train(project, seed=seed, group_copies=False, progress=False, **settings)
    held = table.drop(index=drawn)
    predicted = grouped.predict(list(held["filepath"]), progress=False)
    held_out = float((predicted["label"].to_numpy() == held["label"].to_numpy()).mean())
    ids = dict(zip(*project.dataset.values(["filepath", "id"]), strict=True))
    group = grouped.snapshot().set_index("sample_id")["group"]
    found = np.mean([group[ids[a]] == group[ids[b]] for a, b, _ in pairs.itertuples(
        index=False)])
    leaks = wb.leaks(project, loose)
    oof = grouped.oof_predictions().merge(grouped.snapshot()[["sample_id", "label", "group"]],
                                    on="sample_id", suffixes=("", "_given"))
    per_group = (oof["label"] == oof["label_given"]).groupby(oof["group"]).mean().mean()
    return {"seed": seed, "grouped_oof": grouped.metrics["accuracy"],
            "grouped_oof_per_group": float(per_group),
            "ungrouped_oof": loose.metrics["accuracy"], "held_out": held_out,
            "grouped_gap": grouped.metrics["accuracy"] - held_out,
            "ungrouped_gap": loose.metrics["accuracy"] - held_out,
            "pairs_grouped": float(found),
            "near_copy_pairs": grouped.config["groups"]["near_copy_pairs"],
            "ungrouped_fold_leaks": int(leaks["where"].str.startswith("fold").sum()),
            "train_s": grouped_s}


def part_leak(seeds: list[int], root: Path, **training: object) -> pd.DataFrame:
    import workbench as wb

    table = manifest(DEFAULT_DATA)
    cache = wb.Project.create("neu-cache", overwrite=True)  # every NEU image embedded once
    table[["filepath", "label"]].to_csv(root / "all.csv", index=False)
    cache.import_csv(root / "all.csv", progress=False)
    from workbench.train.embeddings import embed_project

    embed_project(cache, progress=True)
    runs = pd.DataFrame([leak_run(table, seed, root, cache, **training) for seed in seeds])
    print(f"\n## 1. Planted leak on NEU (300 drawn + 90 near-copies; {training or 'probe'}, "
          "5 folds; 1,500 held out)")
    print(runs.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for column in ("grouped_oof", "grouped_oof_per_group", "ungrouped_oof", "held_out",
                   "grouped_gap", "ungrouped_gap"):
        print(f"{column}: {runs[column].mean():.4f} ± {runs[column].std():.4f}")
    worst = runs["grouped_gap"].abs().max()
    print(f"goal |grouped - held-out| <= 0.01: worst seed {worst:.4f} -> "
          f"{'met' if worst <= 0.01 else 'MISSED'}")
    print(f"the ungrouped estimate is optimistic by {runs['ungrouped_gap'].mean():+.4f} "
          f"(grouped: {runs['grouped_gap'].mean():+.4f}); planted pairs grouped: "
          f"{runs['pairs_grouped'].mean():.1%}")
    return runs


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", default=["leak", "quality", "shortcuts"],
                        choices=["leak", "quality", "shortcuts"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--finetune", action="store_true",
                        help="part 1 with a fine-tune (mode='finetune', 5 epochs, 128 px) "
                             "instead of the probe")
    args = parser.parse_args(argv)
    root = throwaway_home("loupe-bench-honest-")
    print(machine_line(sys.argv))
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    if "leak" in args.part:
        part_leak(seeds, root, **({"mode": "finetune", "epochs": 5, "image_size": 128}
                                  if args.finetune else {}))
    if "quality" in args.part:  # seeds from 4: the checks were tuned looking at 0-3
        from honest_quality import report

        print("\n## 2. Planted image-quality issues (5 % each) on NEU and the demo")
        report([4 + seed for seed in seeds])
    if "shortcuts" in args.part:
        from honest_shortcuts import shortcut_benchmark

        print("\n## 3. Planted shortcut: 'dent' only under dim light (demo, 40 per class)")
        rows = pd.DataFrame([shortcut_benchmark(seed) for seed in seeds])
        columns = ["seed", "lighting_rank", "lighting_p", "brightness_p",
                   "planted_shortcuts", "unplanted_min_p", "unplanted_flagged", "passed"]
        with pd.option_context("display.width", 200):
            print(rows[columns].to_string(index=False, float_format=lambda v: f"{v:.2g}"))
        print(f"goal (lighting first at p < 0.01; nothing at p < 0.01 unplanted): "
              f"{int(rows['passed'].sum())}/{len(rows)} seeds")

if __name__ == "__main__":
    main(sys.argv[1:])
