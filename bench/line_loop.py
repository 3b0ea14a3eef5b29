"""The 3 a.m. loop on the demo, driven through the line console in chromium: from "the night
batch arrives" to "the new deployment is current".

Usage: ``python bench/line_loop.py [--per-class 40] [--label 10] [--eval-night 100]
[--first-training probe|finetune]``

The demo project is built in a throwaway database and Loupe home as ``loupe demo`` builds it
(``--per-class`` images per class, frozen and golden sets, v1 promoted on line A, the night
batch of 20 darker images in the inbox). ``--first-training finetune`` makes v1 a fine-tuned
network (3 folds, 128 px, brightness augmentation widened to x0.35–1.3:
``FinetuneSettings(brightness=...)``) instead of the demo's probe; the Retrain button always
reuses the configuration of the version the line runs.

Then ``loupe serve`` (its worker included) and one inspector in Debian chromium
(``tests/line_story.py``): open the line console, type a name, import the night batch, label
the first ``--label`` images of the grid (least familiar first) with their true labels,
Retrain, Compare, Promote. Printed:

- keys and clicks beyond the label keys themselves (goal <= 30);
- wall time from opening the console to the promotion's confirmation, and the share the
  training took in the worker (goal: the whole loop <= 10 minutes);
- accuracy of the champion (v1) and the promoted version on the night batch's held-out part
  (the images not labelled) and on ``--eval-night`` further night images of the same
  renderer that no step saw; "lost" is the champion's frozen-set accuracy minus its night
  accuracy, and the goal is that the promoted version wins back >= 80 % of it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dashboards import wait_idle
from neu import machine_line, throwaway_home

REPO_ROOT = Path(__file__).resolve().parents[1]
NAME = "demo"
PERSON = "erin"
GOAL_ACTIONS = 30
GOAL_WALL_S = 600.0
GOAL_RECOVERED = 0.80
#: ``--first-training finetune``: a fine-tune that sees a wide range of light.
NIGHT_LIGHT = (0.35, 1.3)


def build(per_class: int, first_training: str, eval_night: int, root: Path):
    """The demo as ``loupe demo`` sets it up, plus a set of night images no step sees."""
    import workbench as wb
    from workbench.demo import truth_file, write_demo_inbox
    from workbench.demo.line_story import prepare_line

    start = time.perf_counter()
    p = wb.demo.create_demo_project(NAME, n_per_class=per_class, overwrite=True)
    batch = write_demo_inbox(p)
    extra = write_demo_inbox(p, n=eval_night, seed=7, day=date(2000, 1, 1))
    evaluation = root / "night-evaluation"
    shutil.move(extra, evaluation)  # out of the inbox: only this script sees it
    shutil.move(truth_file(extra), truth_file(evaluation))
    training = None
    if first_training == "finetune":
        from workbench.train.classification.finetune import FinetuneSettings

        training = {"mode": "finetune", "folds": 3, "image_size": 128,
                    "settings": FinetuneSettings(brightness=NIGHT_LIGHT)}
    deployment = prepare_line(p, training=training)
    print(f"demo project: {len(p)} images, {len(p.eval_ids())} frozen, {len(p.golden())} "
          f"golden; line A runs {deployment.version} "
          f"({p.model(deployment.version).config['mode']}); night batch "
          f"{batch.name} ({len(list(batch.glob('*.png')))} images); set-up "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return p, batch, evaluation


def truth_frame(folder: Path) -> pd.DataFrame:
    from workbench.demo import truth_file

    frame = pd.read_csv(truth_file(folder))
    frame["filepath"] = [str(folder / name) for name in frame["filename"]]
    return frame


def accuracy(project, version: str, frame: pd.DataFrame) -> float:
    if not len(frame):
        return float("nan")
    predicted = project.model(version).predict(list(frame["filepath"]))
    return float((predicted["label"].to_numpy() == frame["label"].to_numpy()).mean())


def run_story(p, batch: Path, n_label: int, root: Path):
    from browser_support import free_port, launch, offline_context, stop, wait_for_server
    from line_story import StoryDriver
    from playwright.sync_api import sync_playwright

    port = free_port()
    log = root / "serve.log"
    command = [sys.executable, "-m", "workbench.cli", "serve", "--project", NAME,
               "--port", str(port)]
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    truth = truth_frame(batch)
    by_file = dict(zip(truth["filepath"], truth["label"], strict=True))
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_server(url, server, log)
        print(f"server idle after {wait_idle(server.pid):.0f} s", flush=True)
        with sync_playwright() as playwright:
            browser = launch(playwright)
            external: list[str] = []
            story = StoryDriver(offline_context(browser, external).new_page(), url, log)
            start = time.perf_counter()
            story.open()
            story.sign(PERSON)
            story.import_batch(batch.name)
            p.dataset.reload()
            ids = dict(zip(*p.dataset.values(["id", "filepath"]), strict=True))

            def stored(sid: str, label: str) -> bool:
                history = p.history(sid)
                return bool(len(history)) and history.iloc[-1]["label"] == label

            labelled = story.label(n_label, lambda sid: by_file[ids[sid]], p.classes, stored)
            version = story.retrain()
            passed = story.compare(version)
            if not passed:
                raise SystemExit(f"the gate failed on {version}: "
                                 f"{story.text('.loupe-line-verdict')}")
            story.promote()
            wall = time.perf_counter() - start
            browser.close()
            if external:
                raise SystemExit(f"the page asked for external URLs: {sorted(set(external))}")
    finally:
        stop(server)
    return story, wall, version, {ids[sid] for sid in labelled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--label", type=int, default=10)
    parser.add_argument("--eval-night", type=int, default=100)
    parser.add_argument("--first-training", choices=("probe", "finetune"), default="probe")
    args = parser.parse_args()

    root = throwaway_home("loupe-bench-line-")
    os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
    print(machine_line(sys.argv), flush=True)
    import workbench as wb

    p, batch, evaluation = build(args.per_class, args.first_training, args.eval_night, root)
    story, wall, version, labelled = run_story(p, batch, args.label, root)

    current = wb.current_deployment(p, line="A")
    assert current is not None and current.version == version, current
    job = wb.jobs.list(p).iloc[-1]
    training = (job["finished_at"] - job["started_at"]).total_seconds()
    queued = (job["started_at"] - job["submitted_at"]).total_seconds()
    print("\nsteps (wall seconds):")
    for name, seconds in story.steps:
        print(f"  {name:20s} {seconds:7.1f}")
    print(f"\nkeys and clicks beyond the {story.labels} label keys: {story.actions} "
          f"(goal <= {GOAL_ACTIONS}: {'met' if story.actions <= GOAL_ACTIONS else 'NOT met'})")
    print(f"night batch arrives -> {version} current on line A: {wall:.0f} s "
          f"(goal <= {GOAL_WALL_S:.0f} s: {'met' if wall <= GOAL_WALL_S else 'NOT met'}); "
          f"training {training:.0f} s in the worker ({training / wall:.0%} of it; queued "
          f"{queued:.1f} s), mode {p.model(version).config['mode']}")

    night = truth_frame(batch)
    held_out = night[~night["filepath"].isin(labelled)]
    extra = truth_frame(evaluation)
    frozen_ids = set(p.eval_ids())
    ids, paths, truth = p.dataset.values(["id", "filepath", "demo_truth"])
    frozen = pd.DataFrame({"filepath": paths, "label": truth})[
        [sid in frozen_ids for sid in ids]]
    print(f"\naccuracy (v1 = champion, {version} = promoted):")
    rows = {"frozen set (day)": frozen, f"night batch, held out ({len(held_out)})": held_out,
            f"further night images ({len(extra)})": extra}
    scores = {name: (accuracy(p, "v1", frame), accuracy(p, version, frame))
              for name, frame in rows.items()}
    for name, (before, after) in scores.items():
        print(f"  {name:32s} v1 {before:.3f}   {version} {after:.3f}")
    day = scores["frozen set (day)"][0]
    for name in list(rows)[1:]:
        before, after = scores[name]
        lost = day - before
        share = (after - before) / lost if lost > 0 else float("nan")
        verdict = "met" if share >= GOAL_RECOVERED else "NOT met"
        print(f"  {name}: v1 lost {lost:.3f} against its day accuracy; {version} wins back "
              f"{share:.0%} of it (goal >= {GOAL_RECOVERED:.0%}: {verdict})")
    print(f"\nthrowaway folder: {root}")


if __name__ == "__main__":
    main()
