"""Targeted data for one weak class: synthesize images of it, and take them out again.

>>> rep = wb.synthesize(p, target="pit_mark", n=60, base="ok", method="procedural")
>>> rep.added                    # new sample ids, tagged "synthetic"
>>> p.remove_synthetic(rep.recipe_id)
>>> out = wb.improve_class(p, target="pit_mark", n=60, method="paste", base_version="v2")
>>> out.compare                  # per class parent vs child on real held-out images, with CIs

Every synthetic sample is tagged ``synthetic`` and carries its recipe in the field
``synthetic`` (recipe id, method, the painter's parameters, the source sample ids, seed,
index, and the path of its defect mask, a PNG beside the image), so it can be replayed,
filtered (``LabelingGrid`` tag filter) and vetoed. Its label is a vote by
``synthesis:<recipe id>``, never a person's; training never holds it out, so every score is
measured on real images only. The recipe record lives in the project's
bookkeeping; the images in ``<project folder>/synthetic/<recipe id>/``.
"""

from __future__ import annotations

import hashlib
import io
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from workbench.keywords import renamed
from workbench.store import _db as store
from workbench.store import synthetic
from workbench.store.coerce import as_project
from workbench.store.ingest.images import to_native_mode
from workbench.store.labels import Annotation, now
from workbench.store.project import Project, ProjectError
from workbench.store.safe_paths import remove_inside

Method = Literal["procedural", "paste", "augment"]
METHODS = ("procedural", "paste", "augment")
#: Most images one call may make.
MAX_N = 10_000


@dataclass
class SynthesisReport:
    """What :func:`synthesize` made.

    Attributes
    ----------
    recipe_id : str
        Pass it to :meth:`Project.remove_synthetic` to take the images out again.
    added : list of str
        The new sample ids, in the order they were made.
    recipe : dict
        Method, target, base, n, seed, time: what the project's bookkeeping records.
    """

    recipe_id: str
    added: list[str] = field(default_factory=list)
    recipe: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"SynthesisReport({self.recipe_id}: {len(self.added)} {self.recipe.get('target')}"
                f" images by {self.recipe.get('method')})")


def synthesize(project: Project | str, target: str, n: int = 60, base: str | None = "ok",
               method: Method = "procedural", seed: int = 0, *, painter: str | None = None,
               progress: bool = True) -> SynthesisReport:
    """Make ``n`` images of class ``target`` and add them to the project as synthetic samples.

    Parameters
    ----------
    project : Project or str
    target : str
        The class to make images of (a class of the project).
    n : int, default 60
    base : str or None, default "ok"
        The class whose real images are painted on (``procedural``, ``paste``); ignored by
        ``augment``.
    method : {"procedural", "paste", "augment"}
        ``procedural``: a painter draws the defect (scratch, pit_mark, dent, discoloration)
        with random shape, size, contrast and position. ``paste``: the defect region of a
        real ``target`` image, scaled and rotated, blended onto a base image (Poisson).
        ``augment``: label-preserving transforms of real ``target`` images.
    seed : int, default 0
        Everything random follows from it; the recipe replays.
    painter : str, optional
        The procedural painter to use when the class is named differently (a class
        ``"scratches"`` drawn by the ``"scratch"`` painter); default: the target's name.

    Raises
    ------
    ProjectError
        For an unknown class or method, a class without real labelled images to start from,
        or a target without a painter for ``procedural`` (naming the painters there are).
    """
    from workbench.improve import synthesis

    project = as_project(project)
    classes = project.classes
    painter = painter or target
    _check(project, classes, target, n, base, method, painter, synthesis.PAINTERS)
    real = _real_samples(project)
    sources = real.get(target, []) if method in ("paste", "augment") else []
    bases = real.get(base, []) if method in ("procedural", "paste") else []
    if method in ("paste", "augment") and not sources:
        raise ProjectError(f"method={method!r} starts from real {target!r} images, and project "
                           f"{project.name!r} has none labelled; label a few, or use "
                           "method='procedural'")
    if method in ("procedural", "paste") and not bases:
        raise ProjectError(f"base={base!r}: project {project.name!r} has no real labelled "
                           f"{base!r} images to paint on; pass another base class")

    recipe_id = f"syn-{now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    folder = project.folder / "synthetic" / recipe_id
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    slice_fields = project.slice_fields
    rows = _rows(project, list(dict.fromkeys([*sources, *bases])), slice_fields)
    stamp = now()
    author = f"synthesis:{recipe_id}"
    documents = []
    try:
        for index in tqdm(range(n), desc=f"synthesize {target}", unit="img",
                          disable=not progress, leave=False):
            painted, used = _make_one(method, painter, rng, rows, bases, sources, synthesis)
            pixels = Image.fromarray(painted.image)
            path = folder / f"{target}_{index:04d}.png"
            data = _png(pixels)
            path.write_bytes(data)
            mask_path = folder / "masks" / path.name
            mask_path.parent.mkdir(exist_ok=True)
            Image.fromarray(painted.mask.astype(np.uint8) * 255).save(mask_path)
            first = rows[used[0]]
            documents.append(store.sample_document(
                project.dataset, str(path),
                metadata={"size_bytes": len(data), "mime_type": "image/png",
                          "width": pixels.width, "height": pixels.height,
                          "num_channels": 1 if painted.image.ndim == 2 else 3},
                fields={**{f: first.get(f) for f in slice_fields},
                        "content_hash": hashlib.sha256(data).hexdigest(),
                        "source_path": str(path), "split": "train", "imported_at": stamp,
                        store.SYNTHETIC_FIELD: {
                            "_cls": "DynamicEmbeddedDocument", "recipe": recipe_id,
                            "method": method, "target": target, "painter":
                            painter if method == "procedural" else None,
                            "params": painted.params,
                            "sources": used, "seed": seed, "index": index,
                            "mask": str(mask_path)}},
                history=[Annotation(author, target, stamp)], stamp=stamp))
            documents[-1]["tags"] = [store.SYNTHETIC_TAG]
    except BaseException:
        remove_inside(project.folder / "synthetic", folder, what="recipe folder")
        raise
    store.ensure_synthetic_field(project.dataset)
    added = store.add_samples(project.dataset, documents)
    recipe = {"method": method, "target": target, "base": base if bases else None, "n": n,
              "seed": seed, "time": stamp.isoformat(), "folder": str(folder)}
    recipes = dict(store.project_info(project.dataset).get("synthetic", {}))
    recipes[recipe_id] = recipe
    store.update_project_info(project.dataset, synthetic=recipes)
    return SynthesisReport(recipe_id, added, recipe)


@dataclass
class Improvement:
    """What :func:`improve_class` did and found.

    Attributes
    ----------
    synthesis : SynthesisReport
    parent, child : ModelVersion
        The version retrained from, and the one trained with the synthetic images.
    compare : pandas.DataFrame
        Per class (and ``macro``): ``n`` real held-out images, precision / recall / F1 of
        parent and child, their deltas, and paired-bootstrap 95 % intervals of the recall
        and F1 deltas (``*_delta_low``, ``*_delta_high``). Only real images are scored.
    """

    synthesis: SynthesisReport
    parent: Any
    child: Any
    compare: Any

    @property
    def target_recall_delta(self) -> float:
        """Change of the target class's recall (child − parent)."""
        row = self.compare.set_index("class").loc[self.synthesis.recipe["target"]]
        return float(row["recall_delta"])

    def __repr__(self) -> str:
        target = self.synthesis.recipe["target"]
        row = self.compare.set_index("class")
        return (f"Improvement({target}: recall {row.at[target, 'recall_parent']:.2f} → "
                f"{row.at[target, 'recall_child']:.2f}, macro F1 "
                f"{row.at['macro', 'f1_parent']:.3f} → {row.at['macro', 'f1_child']:.3f}; "
                f"{self.parent.name} → {self.child.name})")


@renamed(base_version="version")
def improve_class(project: Project | str, target: str, n: int = 60,
                  method: Method = "paste", base: str | None = "ok",
                  version: Any = None, seed: int = 0, *, painter: str | None = None,
                  progress: bool = True) -> Improvement:
    """Synthesize images of ``target``, retrain with the parent's settings, and compare the
    two versions on the real images both held out.

    Parameters
    ----------
    version : ModelVersion or str, optional
        The parent (default: the newest version). It must have out-of-fold predictions.
    target, n, method, base, seed, painter
        As :func:`synthesize`.

    Returns
    -------
    Improvement
        ``.compare`` is the honest answer: real images only, with bootstrap intervals.
    """
    from workbench.analyse.classification import held_out, resolve
    from workbench.metrics.compare import class_comparison, compare_predictions
    from workbench.train.classification.finetune import FinetuneSettings
    from workbench.train.classification.probe import DEFAULT_C
    from workbench.train.classification.train import train

    project = as_project(project)
    project, parent = resolve(project, version)
    config = parent.config
    if config.get("folds", 0) < 2:
        raise ProjectError(f"{parent.name!r} was validated on a split; improve_class compares "
                           "out-of-fold predictions: retrain the parent with folds >= 2")
    synthesis = synthesize(project, target, n=n, base=base, method=method, seed=seed,
                           painter=painter, progress=progress)
    weights = config.get("weights")
    child = train(project, backbone=config["backbone"], mode=config["mode"],
                  folds=config["folds"], epochs=config["epochs"],
                  image_size=config["image_size"], seed=config["seed"],
                  weights=None if weights == "None" else weights,
                  settings=FinetuneSettings(**config["finetune"]) if config.get("finetune")
                  else None, probe_c=config.get("probe_c", DEFAULT_C), progress=progress)
    columns = ["sample_id", "given", "predicted", "confidence"]
    compared = compare_predictions(held_out(project, parent)[columns],
                                   held_out(project, child)[columns])
    classes = [c for c in parent.classes if c in set(compared["given"])]
    table = class_comparison(compared, classes=classes).rename(columns=lambda c: (
        c[:-2] + "_parent" if c.endswith("_a") else c[:-2] + "_child" if c.endswith("_b")
        else c))
    return Improvement(synthesis, parent, child, table)


def synthetic_recipes(project: Project | str) -> dict[str, dict[str, Any]]:
    """Recipe id → record (method, target, base, n, seed, time, folder) of every synthesis."""
    return synthetic.recipe_records(as_project(project))


def remove_synthetic(project: Project | str, recipe_id: str) -> int:
    """Delete the samples and images of one synthesis; returns how many samples went
    (see :func:`workbench.store.synthetic.remove_recipe`)."""
    return synthetic.remove_recipe(as_project(project), recipe_id)


def veto_synthetic(project: Project | str, sample_ids: Sequence[str], *, annotator: str) -> int:
    """Take out synthetic images a person judged bad; returns how many went.

    The veto (who, when, which recipe, the image's parameters) is kept in the recipe's record
    (``wb.synthetic_recipes(p)[recipe]["vetoed"]``); the image file is deleted with its sample.
    See :func:`workbench.store.synthetic.veto` for the errors.
    """
    return synthetic.veto(as_project(project), sample_ids, annotator=annotator)


# -- helpers ------------------------------------------------------------------------------
def _check(project: Project, classes: list[str], target: str, n: object, base: str | None,
           method: str, painter: str, painters: dict) -> None:
    if target not in classes:
        raise ProjectError(f"target={target!r} is not a class of project {project.name!r} "
                           f"(classes: {', '.join(classes)})")
    if method not in METHODS:
        raise ProjectError(f"method={method!r} is not known; choose one of {', '.join(METHODS)}")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise ProjectError(f"n must be an integer from 1 to {MAX_N}, got {n!r}")
    if method in ("procedural", "paste"):
        if base not in classes:
            raise ProjectError(f"base={base!r} is not a class of project {project.name!r} "
                               f"(classes: {', '.join(classes)})")
        if base == target:
            raise ProjectError(f"base and target are both {target!r}: paint on images of "
                               "another class (usually the defect-free one)")
    if method == "procedural" and painter not in painters:
        raise ProjectError(f"no procedural painter for {painter!r} (painters: "
                           f"{', '.join(painters)}); pass painter=, or use method='paste' or "
                           "'augment'")


def _real_samples(project: Project) -> dict[str, list[str]]:
    samples = store.labelled_samples(project.dataset)
    by_class: dict[str, list[str]] = {}
    for sid, label, fake in zip(samples["sample_id"], samples["label"], samples["synthetic"],
                                strict=True):
        if not fake:
            by_class.setdefault(label, []).append(sid)
    return by_class


def _rows(project: Project, ids: Sequence[str], fields: Sequence[str]) -> dict[str, dict]:
    keys = ["id", "filepath", *fields]
    values = project.dataset.select(list(ids)).values(keys)
    return {row[0]: dict(zip(keys, row, strict=True)) for row in zip(*values, strict=True)}


def _pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        image = to_native_mode(image)
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        return np.asarray(image).copy()


def _make_one(method: str, painter: str, rng: np.random.Generator, rows: dict[str, dict],
              bases: list[str], sources: list[str], synthesis: Any) -> tuple[Any, list[str]]:
    if method == "procedural":
        base_id = bases[rng.integers(len(bases))]
        return synthesis.paint(painter, _pixels(rows[base_id]["filepath"]), rng), [base_id]
    if method == "paste":
        base_id = bases[rng.integers(len(bases))]
        source_id = sources[rng.integers(len(sources))]
        painted = synthesis.paste(_pixels(rows[base_id]["filepath"]),
                                  _pixels(rows[source_id]["filepath"]), rng)
        return painted, [base_id, source_id]
    source_id = sources[rng.integers(len(sources))]
    return synthesis.augment(_pixels(rows[source_id]["filepath"]), rng), [source_id]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
