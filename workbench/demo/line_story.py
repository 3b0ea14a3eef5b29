"""The demo's 3 a.m. story, set up: the exam sets, a first model on line A, a night batch.

>>> prepare_line(p)          # frozen + golden sets, v1 trained and promoted on line "A"

After :func:`prepare_line` the demo holds what the line console needs: a frozen evaluation
set (20 %, drawn before any training, so v1 never saw it), a golden set of four clear
images (two good parts, two clearly defective ones), v1 promoted on line ``A`` through the
gate, and (from :func:`workbench.demo.write_demo_inbox`) a batch of darker night-shift
images in the inbox with their true labels beside the batch's folder
(:func:`workbench.demo.truth_file`). Each step is
skipped when it is already done, so running it again changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbench.deploy.deployments import current_deployment, promote
from workbench.train.backbones import DEFAULT_BACKBONE
from workbench.train.classification.train import train
from workbench.train.embeddings import EmbeddingCache

if TYPE_CHECKING:
    from workbench.deploy.line_state import Deployment
    from workbench.store.project import Project

#: Who sets the demo's sets aside and promotes its first version.
DEMO_PERSON = "demo"
#: The demo's line.
DEMO_LINE = "A"
#: Share of the labelled images frozen for evaluation.
EVAL_FRACTION = 0.2
#: Golden images per class: known-good parts and clearly defective ones, in bright light.
GOLDEN = {"ok": 2, "scratch": 1, "dent": 1}
#: How the demo's first version is trained (a probe on frozen embeddings: seconds on a CPU).
FIRST_TRAINING = {"mode": "probe", "folds": 5, "image_size": 128}


def set_aside(project: Project, *, annotator: str = DEMO_PERSON,
              image_size: int = FIRST_TRAINING["image_size"],
              progress: bool = False) -> tuple[list[str], list[str]]:
    """Freeze :data:`EVAL_FRACTION` of the labelled images and pick the golden set
    (:func:`golden_candidates` at ``image_size``), unless the project has them already.
    Returns ``(frozen ids, golden ids)``."""
    frozen = project.eval_ids()
    if not frozen:
        frozen = project.freeze_eval(fraction=EVAL_FRACTION, annotator=annotator)
    golden = project.golden()
    if not golden:
        golden = project.golden(add=golden_candidates(project, exclude=frozen,
                                                      image_size=image_size,
                                                      progress=progress),
                                annotator=annotator)
    return frozen, golden


def golden_candidates(project: Project, *, exclude: Iterable[str] = (),
                      image_size: int = FIRST_TRAINING["image_size"],
                      progress: bool = False) -> list[str]:
    """Clear, typical images for the golden set, chosen without any model: real images in
    bright light whose label is the true one; per class, the :data:`GOLDEN` images nearest
    their class's centre and farthest from the others' (cosine, in the embeddings the
    first training uses, so they are computed once)."""
    if not project.dataset.has_sample_field("demo_truth"):
        raise ValueError(f"project {project.name!r} is not a demo project (no demo_truth "
                         "field): pick its golden images yourself with p.golden(add=...)")
    ids, paths, lighting, truth = project.dataset.values(
        ["id", "filepath", "lighting", "demo_truth"])
    labels = project.to_pandas().set_index("sample_id")["label"]
    frame = pd.DataFrame({"sample_id": ids, "filepath": paths, "lighting": lighting,
                          "demo_truth": truth})
    frame = frame[~frame["sample_id"].isin(set(exclude)) & (frame["lighting"] == "bright")
                  & ~frame["filepath"].str.endswith("_copy.png")
                  & (frame["sample_id"].map(labels) == frame["demo_truth"])
                  ].sort_values("filepath").reset_index(drop=True)
    vectors = EmbeddingCache(project.folder / "embeddings").embed(
        list(frame["filepath"]), backbone=DEFAULT_BACKBONE,
        image_size=image_size, progress=progress).vectors
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    classes = sorted(set(frame["demo_truth"]))
    centres = np.stack([vectors[(frame["demo_truth"] == c).to_numpy()].mean(axis=0)
                        for c in classes])
    similarity = vectors @ (centres / np.linalg.norm(centres, axis=1, keepdims=True)).T
    own = np.array([classes.index(c) for c in frame["demo_truth"]])
    others = similarity.copy()
    others[np.arange(len(own)), own] = -np.inf
    frame["margin"] = similarity[np.arange(len(own)), own] - others.max(axis=1)
    chosen: list[str] = []
    for label, count in GOLDEN.items():
        chosen += list(frame[frame["demo_truth"] == label]
                       .sort_values("margin", ascending=False, kind="mergesort")
                       ["sample_id"].head(count))
    return chosen


def prepare_line(project: Project, *, line: str = DEMO_LINE, annotator: str = DEMO_PERSON,
                 training: dict[str, Any] | None = None,
                 progress: bool = False) -> Deployment:
    """Set the exam sets aside, train a first version on the rest and promote it to
    ``line`` through the gate; each step only when not done yet.

    Parameters
    ----------
    project : Project
        A demo project (:func:`workbench.demo.create_demo_project`).
    line, annotator : str
    training : dict, optional
        ``wb.train`` keywords (default :data:`FIRST_TRAINING`).
    progress : bool, default False

    Returns
    -------
    Deployment
        The line's current deployment.
    """
    settings = {**FIRST_TRAINING, "progress": progress, **(training or {})}
    frozen, golden = set_aside(project, annotator=annotator,
                               image_size=settings["image_size"], progress=progress)
    deployment = current_deployment(project, line=line)
    if deployment is not None:
        return deployment
    held_back = set(frozen) | set(golden)
    version = next((project.model(name) for name in reversed(list(project.models()["name"]))
                    if not held_back & set(project.model(name).snapshot()["sample_id"])), None)
    if version is None:  # none yet, or only versions trained before the sets were set aside
        version = train(project, **settings)
    return promote(project, version, line=line, annotator=annotator)


__all__ = ["DEMO_LINE", "DEMO_PERSON", "EVAL_FRACTION", "FIRST_TRAINING", "GOLDEN",
           "golden_candidates", "prepare_line", "set_aside"]
