"""The embedded demo: a phone-casing inspection project generated from a seed, offline.

Brushed-metal casings at 128 px in five classes (``ok``, ``scratch``, ``dent``,
``pit_mark``, ``discoloration``), slice fields ``line`` (A/B/C), ``camera`` (cam1/cam2)
and ``lighting`` (bright/dim), and three simulated annotators: ``alice`` and ``bob`` are
careful, ``carol`` often swaps ``dent`` and ``discoloration``. In dim light pit marks are
faint, so a model is weakest there. A few images were exported twice and the copy filed
under the wrong class by everyone (identical pixels, different bytes, conflicting labels).
The generator's own truth is kept in ``demo_truth`` so tutorials can measure how well Loupe
finds wrong labels.

With ``task="detection"`` the same images come with a box around each painted defect and
one ``inspector`` whose boxes hold a few planted mistakes (shifted, dropped, wrong class).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from workbench.config import fiftyone
from workbench.demo.render import CLASSES, render_casing, render_casing_with_boxes
from workbench.store import box_records
from workbench.store.labels import now
from workbench.store.project import Project

LINES = ("A", "B", "C")
CAMERAS = ("cam1", "cam2")
LIGHTINGS = ("bright", "dim")
#: Share of dim-light images.
DIM_SHARE = 0.35
#: Per annotator: probability of a random wrong label, and of the confused pair swap.
ANNOTATORS = {
    "alice": {"noise": 0.03, "swap": 0.0},
    "bob": {"noise": 0.05, "swap": 0.0},
    "carol": {"noise": 0.04, "swap": 0.45},
}
CONFUSED_PAIR = ("dent", "discoloration")
#: Images exported twice, the copy misfiled under another class (default of the demo).
DUPLICATES = 3
#: The one annotator of the detection demo.
INSPECTOR = "inspector"
#: Share of images with defects where the inspector's boxes hold a planted mistake.
BOX_MISTAKE_SHARE = 0.08
#: Kinds of planted box mistakes (``demo_mistake`` of a detection demo project).
BOX_MISTAKES = ("shifted_box", "dropped_box", "wrong_class")
#: Images in the demo's inbox batch, and how much darker than dim light they are.
INBOX_IMAGES = 20
NIGHT_BRIGHTNESS = 0.55
#: Ending of the file beside an inbox batch's folder that holds its true labels.
TRUTH_SUFFIX = ".truth.csv"


def demo_table(*, n_per_class: int = 40, seed: int = 0, duplicates: int = 0) -> pd.DataFrame:
    """The demo's design, one row per image: file name, true label, slice values, the label
    each annotator gives, and ``duplicate_of`` (the original's file name for a misfiled copy,
    else None). Pure: no images are drawn and nothing is written."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in CLASSES:
        for index in range(n_per_class):
            row = {
                "filename": f"{label}_{index:03d}.png",
                "demo_truth": label,
                "line": LINES[rng.integers(len(LINES))],
                "camera": CAMERAS[rng.integers(len(CAMERAS))],
                "lighting": "dim" if rng.random() < DIM_SHARE else "bright",
                "duplicate_of": None,
            }
            for name, habits in ANNOTATORS.items():
                row[name] = _annotate(rng, label, **habits)
            rows.append(row)
    for original in rng.choice(len(rows), size=min(duplicates, len(rows)), replace=False):
        copy = dict(rows[original], filename=rows[original]["filename"].replace(".png",
                                                                                 "_copy.png"),
                    duplicate_of=rows[original]["filename"])
        misfiled = str(rng.choice([c for c in CLASSES if c != copy["demo_truth"]]))
        rows.append({**copy, **dict.fromkeys(ANNOTATORS, misfiled)})
    return pd.DataFrame(rows)


def _annotate(rng: np.random.Generator, truth: str, *, noise: float, swap: float) -> str:
    if truth in CONFUSED_PAIR and rng.random() < swap:
        return CONFUSED_PAIR[1 - CONFUSED_PAIR.index(truth)]
    if rng.random() < noise:
        return str(rng.choice([c for c in CLASSES if c != truth]))
    return truth


def write_demo_images(folder: Path, table: pd.DataFrame, *, seed: int = 0,
                      size: int = 128) -> list[Path]:
    """Render every row of ``table`` to ``folder/<demo_truth>/<filename>``; a duplicate row
    gets its original's pixels, saved with other PNG settings (so other bytes)."""
    return write_demo_images_with_boxes(folder, table, seed=seed, size=size)[0]


def write_demo_images_with_boxes(folder: Path, table: pd.DataFrame, *, seed: int = 0,
                                 size: int = 128) -> tuple[list[Path], list[list[dict]]]:
    """:func:`write_demo_images` (the same files), and each image's true boxes: one
    ``{"label", "bounding_box"}`` per painted defect, ``[]`` for ``ok``."""
    rng = np.random.default_rng([seed, size])
    paths, boxes, drawn = [], [], {}
    for row in table.itertuples(index=False):
        path = folder / row.demo_truth / row.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        original = getattr(row, "duplicate_of", None)
        if isinstance(original, str):
            pixels, truth = drawn[original]
            Image.fromarray(pixels).save(path, optimize=False, compress_level=9)
        else:
            pixels, truth = render_casing_with_boxes(
                rng, row.demo_truth, lighting=row.lighting, line=row.line, camera=row.camera,
                size=size)
            Image.fromarray(pixels).save(path, optimize=False, compress_level=1)
            drawn[row.filename] = (pixels, truth)
        paths.append(path)
        boxes.append(truth)
    return paths, boxes


def write_demo_inbox(project: Project, *, n: int = INBOX_IMAGES, seed: int = 0,
                     size: int = 128, day: date | None = None) -> Path:
    """Put one batch of new images in the project's inbox: ``inbox/night-<day>/``.

    A night shift: every image in dim light, then darkened further (x
    :data:`NIGHT_BRIGHTNESS`), so a drift check on it finds drift. The classes come in
    turn; their true labels are kept beside the batch's folder, in
    :func:`truth_file` (``inbox/night-<day>.truth.csv``: ``filename,label``), where no
    import or drift check sees them (for benchmarks: how well a model does on the night).
    An existing batch of that day is left as it is. Returns the batch's folder.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of images, got {n!r}")
    folder = project.folder / "inbox" / f"night-{(day or date.today()).isoformat()}"
    if folder.is_dir() and any(folder.iterdir()):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 22])
    truth = []
    for index in range(n):
        label = CLASSES[index % len(CLASSES)]
        pixels = render_casing(rng, label, lighting="dim", line=LINES[index % len(LINES)],
                               camera=CAMERAS[index % len(CAMERAS)], size=size)
        night = (pixels.astype(np.float32) * NIGHT_BRIGHTNESS).round().astype(np.uint8)
        partial = folder / f".{index:03d}.png.partial"
        Image.fromarray(night).save(partial, format="PNG")
        partial.replace(folder / f"night_{index:03d}.png")
        truth.append({"filename": f"night_{index:03d}.png", "label": label})
    target = truth_file(folder)
    partial = target.with_name(f".{target.name}.partial")
    pd.DataFrame(truth).to_csv(partial, index=False)
    partial.replace(target)
    return folder


def truth_file(batch_folder: Path) -> Path:
    """The true labels of a demo inbox batch: ``<batch folder>.truth.csv``, beside it."""
    return batch_folder.with_name(batch_folder.name + TRUTH_SUFFIX)


def plant_box_mistakes(truth: list[list[dict]], *, seed: int = 0,
                       share: float = BOX_MISTAKE_SHARE) -> tuple[list[list[dict]], list]:
    """The inspector's boxes: ``truth`` except a few planted mistakes.

    ``round(share × images with defects)`` images (at least one, when any has a defect) get
    one mistake each, the kinds taken in turn: ``shifted_box`` (a box moved by 60-90 % of
    its size), ``dropped_box`` (a box left out), or
    ``wrong_class`` (a box given another defect class). Pure and seeded.

    Returns
    -------
    (boxes, mistakes)
        The inspector's box set per image, and the mistake kind per image (None: none).
    """
    rng = np.random.default_rng([seed, 10])
    boxes = [[dict(b, bounding_box=list(b["bounding_box"])) for b in image] for image in truth]
    mistakes: list[str | None] = [None] * len(truth)
    defective = [i for i, image in enumerate(truth) if image]
    if not defective:
        return boxes, mistakes
    count = max(1, round(share * len(defective)))
    chosen = rng.choice(defective, size=min(count, len(defective)), replace=False)
    kinds = list(BOX_MISTAKES)
    rng.shuffle(kinds)
    for turn, image in enumerate(sorted(int(i) for i in chosen)):
        kind = kinds[turn % len(kinds)]
        which = int(rng.integers(len(boxes[image])))
        box = boxes[image][which]
        if kind == "dropped_box":
            del boxes[image][which]
        elif kind == "wrong_class":
            box["label"] = str(rng.choice([c for c in CLASSES[1:] if c != box["label"]]))
        else:
            box["bounding_box"] = _shifted(rng, box["bounding_box"])
        mistakes[image] = kind
    return boxes, mistakes


def _shifted(rng: np.random.Generator, bbox: list[float]) -> list[float]:
    """The box moved by 60-90 % of its size along its roomier axis (and along the other one
    too when that leaves it overlapping its old place by more than a third), kept in the
    image."""
    fraction = rng.uniform(0.6, 0.9)
    corner, extent = list(bbox[:2]), bbox[2:]

    def move(axis: int) -> None:
        before, after = corner[axis], 1 - corner[axis] - extent[axis]
        step = fraction * extent[axis]
        corner[axis] += min(step, after) if after >= before else -min(step, before)

    ratio = [max(corner[a], 1 - corner[a] - extent[a]) / extent[a] for a in (0, 1)]
    first = int(np.argmax(ratio))
    move(first)
    if _iou([*corner, *extent], bbox) > 1 / 3:
        move(1 - first)
    return [*corner, *extent]


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return w * h / (a[2] * a[3] + b[2] * b[3] - w * h)


def create_demo_project(name: str = "demo", n_per_class: int = 40, seed: int = 0, *,
                        task: str = "classification", overwrite: bool = False,
                        size: int = 128, duplicates: int = DUPLICATES,
                        progress: bool = False) -> Project:
    """Generate the demo images and import them as a project.

    Parameters
    ----------
    name : str
        Project name.
    n_per_class : int
        Images per class (200 in all by default).
    seed : int
        Everything (images, slices, annotator mistakes) follows from it.
    task : {"classification", "detection", "anomaly"}
        ``classification``: three annotators label each image (see the module notes).
        ``anomaly``: a first day at the line, good parts only: the ``ok`` images are
        labelled ``ok`` by one annotator, ``inspector``; the defect images are imported
        unlabelled (the project still lists every class, for when they get labelled); the
        truth of every image is in ``demo_truth``; no duplicates.
        ``detection``: the same images with a box around each painted defect (``ok``
        images have none); one annotator, ``inspector``, whose boxes are the truth except
        a few planted mistakes (see :func:`plant_box_mistakes`, kind per image in
        ``demo_mistake``). The true boxes are in ``demo_truth`` (``fo.Detections``); the
        classes are the four defects.
    overwrite : bool
        Replace an existing project of that name.
    size : int
        Image side in pixels.
    duplicates : int
        Images exported twice, the copy labelled as another class by every annotator (in a
        detection project: its boxes given that class, or none for ``ok``).
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    if task not in ("classification", "detection", "anomaly"):
        raise ValueError(f"task={task!r} is not known; choose 'classification', 'detection' "
                         "or 'anomaly'")
    if task == "detection":
        return _create_detection_demo(name, n_per_class, seed, overwrite=overwrite, size=size,
                                      duplicates=duplicates, progress=progress)
    project = Project.create(name, classes=CLASSES, overwrite=overwrite)
    table = demo_table(n_per_class=n_per_class, seed=seed,
                       duplicates=0 if task == "anomaly" else duplicates)
    image_dir = project.folder / "demo_images"
    write_demo_images(image_dir, table, seed=seed, size=size)
    rows = [
        {"filepath": f"{r['demo_truth']}/{r['filename']}", "label": r[who], "annotator": who,
         "line": r["line"], "camera": r["camera"], "lighting": r["lighting"]}
        for r in table.to_dict("records") for who in ANNOTATORS
    ] if task == "classification" else [
        {"filepath": f"{r['demo_truth']}/{r['filename']}",
         "label": "ok" if r["demo_truth"] == "ok" else "", "annotator": INSPECTOR,
         "line": r["line"], "camera": r["camera"], "lighting": r["lighting"]}
        for r in table.to_dict("records")
    ]
    csv_path = image_dir / "labels.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    project.import_csv(csv_path, progress=progress)
    truth = {str((image_dir / r.demo_truth / r.filename).absolute()): r.demo_truth
             for r in table.itertuples(index=False)}
    project.dataset.set_values("demo_truth", truth, key_field="filepath")
    return project


def _create_detection_demo(name: str, n_per_class: int, seed: int, *, overwrite: bool,
                           size: int, duplicates: int, progress: bool) -> Project:
    fo = fiftyone()
    project = Project.create(name, classes=CLASSES[1:], task="detection", overwrite=overwrite)
    table = demo_table(n_per_class=n_per_class, seed=seed, duplicates=duplicates)
    image_dir = project.folder / "demo_images"
    paths, truth = write_demo_images_with_boxes(image_dir, table, seed=seed, size=size)
    originals = table.duplicate_of.isna().to_numpy()
    planted, kinds = plant_box_mistakes([t if keep else [] for t, keep in
                                         zip(truth, originals, strict=True)], seed=seed)
    for index, row in enumerate(table.itertuples(index=False)):
        if not originals[index]:  # a misfiled copy: every box given the misfiled class
            misfiled = row.alice
            planted[index] = [] if misfiled == "ok" else [
                dict(b, label=misfiled) for b in truth[index]]
            kinds[index] = (None if not truth[index]
                            else "dropped_box" if misfiled == "ok" else "wrong_class")
    frame = table[["line", "camera", "lighting"]].assign(
        filepath=[f"{r.demo_truth}/{r.filename}" for r in table.itertuples(index=False)],
        label="")
    csv_path = image_dir / "images.csv"
    frame[["filepath", "label", "line", "camera", "lighting"]].to_csv(csv_path, index=False)
    project.import_csv(csv_path, progress=progress)
    ids = dict(zip(*project.dataset.values(["filepath", "id"]), strict=True))
    keys = [str(path.absolute()) for path in paths]
    stamp = now()
    box_records.append_box_history(project.dataset, {
        ids[key]: [box_records.box_entry(INSPECTOR, boxes, stamp)]
        for key, boxes in zip(keys, planted, strict=True)})
    detections = {key: fo.Detections(detections=[
        fo.Detection(label=b["label"], bounding_box=b["bounding_box"]) for b in boxes])
        for key, boxes in zip(keys, truth, strict=True)}
    project.dataset.add_sample_field("demo_truth", fo.EmbeddedDocumentField,
                                     embedded_doc_type=fo.Detections)
    project.dataset.set_values("demo_truth", detections, key_field="filepath")
    project.dataset.set_values("demo_mistake", dict(zip(keys, kinds, strict=True)),
                               key_field="filepath")
    return project
