"""Images a line sent back (``loupe-edge watch`` sets doubtful images aside in
``OUT_DIR/feedback/<date>/`` with their verdicts), imported as unlabelled batches with the
line's verdict stored beside each image as ``pred_edge``.

>>> report = p.import_feedback("/mnt/line-a/out")        # batches feedback-<date>
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import fiftyone as fo
import pandas as pd

from workbench.store.ingest.scan import ImportReport

if TYPE_CHECKING:
    from workbench.store.project import Project

#: The field holding the line's verdict on an image it sent back.
FEEDBACK_FIELD = "pred_edge"


def import_feedback(project: Project, out_dir: str | Path, *, batch: str | None = None,
                    progress: bool = True) -> ImportReport:
    """Import ``out_dir/feedback/<date>/`` images as unlabelled batches (``batch``, or
    ``feedback-<date>`` per folder) and store each one's line verdict as ``pred_edge``
    (label, confidence, and the verdict's ``ood_score``, ``deployment_id``, ``why``).
    Images already stored are reported as duplicates and keep what they have."""
    root = Path(out_dir)
    root = root / "feedback" if (root / "feedback").is_dir() else root
    folders = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    if not folders:
        raise ValueError(f"{out_dir} holds no feedback/<date>/ folders: point it at the "
                         "--out folder of loupe-edge watch")
    total = ImportReport()
    for folder in folders:
        report = project.import_folder(folder, layout="unlabeled",
                                       batch=batch or f"feedback-{folder.name}",
                                       exclude=["*.json"], progress=progress)
        total.added += report.added
        total.duplicates += report.duplicates
        total.rejected += report.rejected
        total.converted += report.converted
        total.annotations_added += report.annotations_added
        _store_verdicts(project, folder, report.added)
    return total


def sent_back(project: Project) -> pd.DataFrame:
    """The images a line sent back that nobody labelled yet, least confident first:
    sample_id, filepath, batch, label (the line's), confidence, ood_score, why."""
    columns = ["sample_id", "filepath", "batch", "label", "confidence", "ood_score", "why"]
    dataset = project.dataset
    if not dataset.has_sample_field(FEEDBACK_FIELD):
        return pd.DataFrame(columns=columns)
    view = dataset.exists(FEEDBACK_FIELD).exists("ground_truth", False)
    fields = ["id", "filepath", "batch", f"{FEEDBACK_FIELD}.label",
              f"{FEEDBACK_FIELD}.confidence", f"{FEEDBACK_FIELD}.ood_score",
              f"{FEEDBACK_FIELD}.why"]  # import_feedback always sets the batch
    frame = pd.DataFrame(dict(zip(columns, view.values(fields), strict=True)))
    return frame.sort_values(["confidence", "ood_score"], ascending=[True, False],
                             na_position="last", kind="mergesort").reset_index(drop=True)


def _store_verdicts(project: Project, folder: Path, sample_ids: list[str]) -> None:
    if not sample_ids:
        return
    view = project.dataset.select(sample_ids, ordered=True)
    values = []
    for path in view.values("filepath"):
        verdict = _verdict(folder / Path(path).name)
        if verdict is None or verdict.get("label") is None:
            values.append(None)
            continue
        values.append(fo.Classification(
            label=str(verdict["label"]), confidence=verdict.get("confidence"),
            ood_score=verdict.get("ood_score"), deployment_id=verdict.get("deployment_id"),
            why="; ".join(verdict.get("why") or [])))
    view.set_values(FEEDBACK_FIELD, values)


def _verdict(image: Path) -> dict | None:
    sidecar = image.with_name(image.name + ".json")
    try:
        verdict = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    return verdict if isinstance(verdict, dict) else None


__all__ = ["FEEDBACK_FIELD", "import_feedback", "sent_back"]
