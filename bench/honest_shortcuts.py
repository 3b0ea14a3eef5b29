"""A planted shortcut on the demo: one class photographed only under dim light.

Usage: ``python bench/honest_shortcuts.py [--seeds 0 1 2] [--per-class 40] [--size 128]
[--dim-class dent] [--train]``

Per seed, two demo projects of the default size (40 images per class, 128 px, three
annotators): *planted*, the demo's design except that every ``--dim-class`` image is taken
in dim light (the others keep the demo's 35 %), and *unplanted*, the demo itself
(``create_demo_project``). ``wb.shortcuts`` should rank lighting (the ``lighting`` slice or
``brightness``) first with p < 0.01 on the planted one, and report nothing at p < 0.01 on the
unplanted one. P-values are Holm-adjusted over the properties tested. With ``--train``, a
probe version (5 folds) is trained on each project first, so the model's errors are tested
too. Part 3 of ``bench/honest.py`` calls :func:`shortcut_benchmark`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

LIGHTING = ("lighting", "brightness")


def planted_demo(name: str, *, seed: int, n_per_class: int = 40, size: int = 128,
                 dim_class: str = "dent"):
    """The demo project of ``seed`` with every ``dim_class`` image taken in dim light."""
    import workbench as wb
    from workbench.demo import ANNOTATORS, CLASSES, demo_table, write_demo_images

    if dim_class not in CLASSES:
        raise ValueError(f"dim_class must be one of {', '.join(CLASSES)}; got {dim_class!r}")
    table = demo_table(n_per_class=n_per_class, seed=seed)
    table.loc[table["demo_truth"] == dim_class, "lighting"] = "dim"
    project = wb.Project.create(name, classes=CLASSES, overwrite=True)
    folder = project.folder / "demo_images"
    write_demo_images(folder, table, seed=seed, size=size)
    rows = [{"filepath": f"{r['demo_truth']}/{r['filename']}", "label": r[who],
             "annotator": who, "line": r["line"], "camera": r["camera"],
             "lighting": r["lighting"]}
            for r in table.to_dict("records") for who in ANNOTATORS]
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    project.import_csv(folder / "labels.csv", progress=False)
    return project


def shortcut_benchmark(seed: int, *, n_per_class: int = 40, size: int = 128,
                       dim_class: str = "dent", train: bool = False) -> dict:
    """``wb.shortcuts`` on the planted and the unplanted demo of one seed.

    Returns
    -------
    dict
        ``seed``; ``lighting_rank`` (1-based rank of the first of ``lighting`` /
        ``brightness`` on the planted demo), ``lighting_p`` and ``brightness_p`` (adjusted),
        ``planted_shortcuts`` (properties flagged), ``planted_note`` (the top row's note);
        ``unplanted_min_p`` with ``unplanted_min_property``, ``unplanted_flagged`` (properties
        at p < 0.01); with ``train``, ``planted_error_p`` and ``unplanted_error_p`` (the
        lighting slice against the version's errors, adjusted) and ``unplanted_error_note``;
        ``passed`` (lighting first at p < 0.01 and nothing at p < 0.01 unplanted); ``seconds``
        (the two ``wb.shortcuts`` calls).
    """
    import workbench as wb
    from workbench.analyse.shortcuts import shortcuts
    from workbench.demo import create_demo_project

    projects = {
        "planted": planted_demo(f"bench-shortcut-planted-{seed}", seed=seed,
                                n_per_class=n_per_class, size=size, dim_class=dim_class),
        "unplanted": create_demo_project(f"bench-shortcut-unplanted-{seed}",
                                         n_per_class=n_per_class, seed=seed, size=size,
                                         overwrite=True),
    }
    tables, seconds = {}, 0.0
    try:
        for kind, project in projects.items():
            if train:
                wb.train(project, mode="probe", folds=5, progress=False)
            start = time.perf_counter()
            tables[kind] = shortcuts(project).set_index("property")
            seconds += time.perf_counter() - start
    finally:
        for project in projects.values():
            wb.delete_project(project.name)
    planted, unplanted = tables["planted"], tables["unplanted"]
    rank = 1 + min(planted.index.get_loc(name) for name in LIGHTING)
    tested = unplanted["p_value"].dropna()
    result = {
        "seed": seed, "lighting_rank": rank,
        "lighting_p": float(planted.loc["lighting", "p_value"]),
        "brightness_p": float(planted.loc["brightness", "p_value"]),
        "planted_shortcuts": list(planted.index[planted["is_shortcut"]]),
        "planted_note": str(planted["note"].iloc[0]),
        "unplanted_min_p": float(tested.min()),
        "unplanted_min_property": str(tested.idxmin()),
        "unplanted_flagged": list(tested.index[tested < 0.01]),
    }
    if train:
        result.update(planted_error_p=float(planted.loc["lighting", "error_p_value"]),
                      unplanted_error_p=float(unplanted.loc["lighting", "error_p_value"]),
                      unplanted_error_note=str(unplanted.loc["lighting", "note"]))
    first = planted.iloc[rank - 1]
    result["passed"] = bool(rank == 1 and first["p_value"] < 0.01
                            and not result["unplanted_flagged"])
    result["seconds"] = round(seconds, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--dim-class", default="dent")
    parser.add_argument("--train", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    import os

    import neu

    if not os.environ.get("FIFTYONE_DATABASE_URI"):
        neu.throwaway_home("loupe-bench-shortcuts-")
    print(neu.machine_line(sys.argv), flush=True)
    rows = [shortcut_benchmark(seed, n_per_class=args.per_class, size=args.size,
                               dim_class=args.dim_class, train=args.train)
            for seed in args.seeds]
    frame = pd.DataFrame(rows)
    columns = ["seed", "lighting_rank", "lighting_p", "brightness_p", "planted_shortcuts",
               "unplanted_min_p", "unplanted_min_property", "unplanted_flagged",
               *(["planted_error_p", "unplanted_error_p"] if args.train else []),
               "passed", "seconds"]
    with pd.option_context("display.width", 200, "display.float_format", "{:.2g}".format):
        print(frame[columns].to_string(index=False))
    for row in rows:
        print(f"seed {row['seed']}, planted, top note: {row['planted_note']}")
        if args.train:
            print(f"seed {row['seed']}, unplanted, lighting: {row['unplanted_error_note']}")
    print(f"passed: {int(frame['passed'].sum())} of {len(frame)} seeds")


if __name__ == "__main__":
    main()
