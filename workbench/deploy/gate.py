"""The gate: promote a candidate only when it is not worse than what the line runs.

>>> g = wb.gate(p, "v3", line="A")          # champion: the version line A runs now
>>> g.passed
>>> g.checks                                # check, passed, figure, threshold, detail
>>> print(g.summary())                      # the failed checks, in plain words

Checks, each a row of ``g.checks``:

- ``frozen_set``: the project has a frozen evaluation set (``p.freeze_eval``), and
  ``frozen_unseen``: the candidate never trained on it (nor on the golden set).
- ``classes``: the candidate knows the same classes as the champion.
- ``accuracy``, ``macro_f1``, ``recall:<class>`` (detectors: ``map50``, ``ap50:<class>``):
  on the frozen set, not below the champion's beyond a paired-bootstrap 95 % interval
  (:mod:`workbench.metrics.gate_stats`). The first deployment of a line has no champion:
  these rows then only report the figures.
- ``golden``: every golden image right (detectors: every reference box found at IoU 0.5 with
  confidence >= :data:`GOLDEN_CONFIDENCE`, and no such box on a golden image without defects).
- ``onnx_parity`` and ``edge_predictor``: the ONNX export agrees with the model and the file
  loads and answers in the line-side predictor. These two cannot be forced.

An anomaly candidate (``task="anomaly"``) answers its normal class or ``"anomaly"``: the
frozen and golden references of every other class count as ``"anomaly"``, and its parity
is the relative difference of anomaly scores.

Candidate figures come from the exported file, as the line will run it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbench.deploy import line_state
from workbench.deploy.edge import EdgeDetector, EdgePredictor
from workbench.deploy.export import TOLERANCE, ExportError, export
from workbench.keywords import renamed
from workbench.metrics.gate_stats import paired_bootstrap, paired_map_bootstrap
from workbench.store import eval_sets
from workbench.store.coerce import as_version
from workbench.store.labels import now

if TYPE_CHECKING:
    from workbench.store.project import Project
    from workbench.train.versions import ModelVersion

CHECK_COLUMNS = ["check", "passed", "figure", "threshold", "detail"]
#: Checks a forced promotion cannot override: without them there is no working file.
HARD_CHECKS = ("onnx_parity", "edge_predictor")
#: Confidence a detector's box needs to count on a golden image.
GOLDEN_CONFIDENCE = 0.5
FREEZE_HINT = ("make one with p.freeze_eval(fraction=0.2, annotator='your name'), then "
               "retrain: training leaves those images out")


@dataclass
class GateReport:
    """The gate's verdict on a candidate for a line.

    Attributes
    ----------
    passed : bool
        Every check passed.
    checks : pd.DataFrame
        check, passed, figure, threshold, detail.
    comparison : pd.DataFrame
        The paired deltas on the frozen set (metric, n, champion, candidate, delta,
        delta_low, delta_high); empty without a champion.
    golden_results : pd.DataFrame
        sample_id, reference, predicted, right (one row per golden image).
    """

    project: str
    line: str
    candidate: str
    champion: str | None
    champion_deployment: str | None
    checks: pd.DataFrame
    comparison: pd.DataFrame = field(default_factory=pd.DataFrame)
    golden_results: pd.DataFrame = field(default_factory=pd.DataFrame)
    time: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.checks["passed"].all())

    @property
    def failed(self) -> pd.DataFrame:
        """The rows of the checks that failed."""
        return self.checks[~self.checks["passed"]].reset_index(drop=True)

    @property
    def hard_failures(self) -> list[str]:
        """Failed checks that no forced promotion can override."""
        return [c for c in self.failed["check"] if c in HARD_CHECKS]

    def summary(self) -> str:
        """The verdict and every failed check, one per line, in plain words."""
        against = (f"champion {self.champion}" if self.champion
                   else "no champion (first deployment of the line)")
        head = (f"{self.project}/{self.candidate} for line {self.line} against {against}: "
                f"{'PASSED' if self.passed else 'FAILED'}")
        lines = [f"  - {row.check}: {row.detail}" for row in self.failed.itertuples()]
        return "\n".join([head, *lines])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what ``deployment.json`` keeps)."""
        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return json.loads(frame.to_json(orient="records", default_handler=str))

        return {"project": self.project, "line": self.line, "candidate": self.candidate,
                "champion": self.champion, "champion_deployment": self.champion_deployment,
                "passed": self.passed, "time": self.time, "checks": records(self.checks),
                "comparison": records(self.comparison),
                "golden_results": records(self.golden_results)}

    def __repr__(self) -> str:
        return f"GateReport({self.summary()})"


def _row(check: str, passed: bool, figure: Any = np.nan, threshold: Any = np.nan,
         detail: str = "") -> dict[str, Any]:
    return {"check": check, "passed": bool(passed), "figure": figure, "threshold": threshold,
            "detail": detail}


@renamed(candidate="version", champion="baseline")
def gate(project: Project | str, version: ModelVersion | str,
         baseline: ModelVersion | str | None = None, *, line: str = "A",
         n_boot: int = 1000, seed: int = 0) -> GateReport:
    """Check whether a candidate version may replace what ``line`` runs.

    Parameters
    ----------
    project : Project or str
    version : ModelVersion or str
        The candidate (also accepted as ``candidate=``).
    baseline : ModelVersion or str, optional
        The champion (also ``champion=``); default: the version ``line`` runs now, scored
        through its deployed file. None and no deployment: only the absolute checks apply.
    line : str, default "A"
    n_boot : int, default 1000
        Bootstrap resamples of the frozen set (detectors: a fifth of it).
    seed : int, default 0

    Returns
    -------
    GateReport
    """
    line_state.check_line(line)
    project, candidate = as_version(project, version)
    staging = Path(tempfile.mkdtemp(prefix=".gate-", dir=_scratch(project)))
    try:
        return evaluate(project, candidate, baseline, line=line,
                        model_path=staging / line_state.MODEL, n_boot=n_boot, seed=seed)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _scratch(project: Project) -> Path:
    folder = line_state.root(project.folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def evaluate(project: Project, candidate: ModelVersion, baseline: ModelVersion | str | None,
             *, line: str, model_path: Path, n_boot: int = 1000, seed: int = 0,
             deployment_id: str | None = None) -> GateReport:
    """The gate, exporting the candidate to ``model_path`` (kept there when it works: a
    promotion ships that file). ``deployment_id``: the current deployment the decision is
    taken against (default: the line's current one, read now)."""
    champion, champion_file, champion_dep = _champion(project, baseline, line, deployment_id)
    frozen = _as_anomaly(candidate, eval_sets.references(project, "frozen"))
    golden = _as_anomaly(candidate, eval_sets.references(project, "golden"))
    rows = [_frozen_check(frozen), _unseen_check(candidate, frozen, golden),
            _classes_check(candidate, champion)]
    exported, export_rows = _export(candidate, model_path, [*frozen, *golden], project)
    paths = dict(zip(*project.dataset.select(list({**frozen, **golden})).values(
        ["id", "filepath"]), strict=True)) if frozen or golden else {}
    detect = candidate.task == "detection"
    candidate_predict = _predictor(candidate, model_path if exported and not detect else None)
    champion_predict = None if champion is None else _predictor(champion, champion_file)
    comparison = pd.DataFrame()
    if frozen:
        ids = list(frozen)
        if detect:
            comparison = _detection_deltas(frozen, paths, candidate, champion, n_boot, seed)
        else:
            cand = candidate_predict([paths[s] for s in ids])
            champ = champion_predict([paths[s] for s in ids]) if champion_predict else cand
            classes = list(dict.fromkeys([*candidate.classes,
                                          *(champion.classes if champion else []),
                                          *frozen.values()]))
            comparison = paired_bootstrap(list(frozen.values()), champ, cand, classes=classes,
                                          n_boot=n_boot if champion else 0, seed=seed)
        rows += _comparison_rows(comparison, champion)
    golden_results = _golden(golden, paths, candidate, candidate_predict)
    rows.append(_golden_check(golden_results))
    rows += export_rows
    return GateReport(project=project.name, line=line, candidate=candidate.name,
                      champion=None if champion is None else champion.name,
                      champion_deployment=champion_dep,
                      checks=pd.DataFrame(rows, columns=CHECK_COLUMNS),
                      comparison=comparison if champion is not None else pd.DataFrame(),
                      golden_results=golden_results, time=now().isoformat())


def _as_anomaly(candidate: ModelVersion, references: dict[str, Any]) -> dict[str, Any]:
    """An anomaly candidate answers the normal class or "anomaly": every other reference
    class counts as "anomaly" (so ``recall:anomaly`` is the share of defects caught)."""
    if candidate.task != "anomaly":
        return references
    normal = candidate.config["normal"]
    return {s: label if label == normal else "anomaly" for s, label in references.items()}


def _champion(project: Project, baseline: ModelVersion | str | None, line: str,
              deployment_id: str | None) -> tuple[ModelVersion | None, Path | None, str | None]:
    """(champion version, its deployed file or None, the deployment id or None)."""
    if baseline is not None:
        return as_version(project, baseline)[1], None, None
    pointer = line_state.read_pointer(project.folder, line)
    current = deployment_id if deployment_id is not None else (
        pointer["deployment_id"] if pointer else None)
    if current is None:
        return None, None, None
    deployment = line_state.load_deployment(project.folder, line, current)
    model = deployment.model_path if not deployment.verify() else None
    return project.model(deployment.version), model, current


def _frozen_check(frozen: dict[str, Any]) -> dict[str, Any]:
    if not frozen:
        return _row("frozen_set", False, 0, 1, f"no frozen evaluation set: {FREEZE_HINT}")
    return _row("frozen_set", True, len(frozen), 1,
                f"{len(frozen)} frozen images, scored against their reference labels")


def _unseen_check(candidate: ModelVersion, frozen: dict[str, Any],
                  golden: dict[str, Any]) -> dict[str, Any]:
    seen = set(candidate.snapshot()["sample_id"]) & (set(frozen) | set(golden))
    if seen:
        return _row("frozen_unseen", False, len(seen), 0,
                    f"{candidate.name} was trained on {len(seen)} frozen or golden image(s) "
                    "(it was trained before they were set aside): retrain it, its figures "
                    "on them would flatter it")
    return _row("frozen_unseen", True, 0, 0,
                f"{candidate.name} never trained on a frozen or golden image")


def _classes_check(candidate: ModelVersion, champion: ModelVersion | None) -> dict[str, Any]:
    if champion is None:
        return _row("classes", True, len(candidate.classes), np.nan,
                    "first deployment of the line: no champion to compare classes with")
    ours, theirs = set(candidate.classes), set(champion.classes)
    if ours == theirs:
        return _row("classes", True, len(ours), len(theirs),
                    f"same {len(ours)} classes as the champion")
    parts = []
    if ours - theirs:
        parts.append(f"new: {', '.join(sorted(ours - theirs))}")
    if theirs - ours:
        parts.append(f"missing: {', '.join(sorted(theirs - ours))}")
    return _row("classes", False, len(ours), len(theirs),
                f"classes differ from the champion {champion.name} ({'; '.join(parts)}); "
                "the line's downstream logic may not know them. Promote only with "
                "force=True and a reason")


def _export(candidate: ModelVersion, model_path: Path, ids: list[str],
            project: Project) -> tuple[bool, list[dict[str, Any]]]:
    """Export (with its own parity check), then load the file as the line box does and
    compare its answers with the in-process model on the frozen and golden images."""
    try:
        export(candidate, "onnx", model_path)
    except (ExportError, ValueError, TypeError) as error:
        if isinstance(error.__cause__, OSError):  # a full disk is no verdict on the model
            raise
        return False, [_row("onnx_parity", False, np.nan, TOLERANCE,
                            f"ONNX export failed: {error}"),
                       _row("edge_predictor", False, detail="no exported file to load")]
    paths = list(project.dataset.select(ids).values("filepath"))[:16] if ids else []
    try:
        if candidate.task == "detection":
            answers = EdgeDetector(model_path).predict(paths) if paths else []
            worst = 0.0  # export compared raw scores and boxes, and decoded boxes
        elif candidate.task == "anomaly":  # scores, relative to the version's own
            answers = EdgePredictor(model_path).predict(paths) if paths else []
            inside = (candidate.predict(paths, progress=False)["anomaly_score"].to_numpy()
                      if paths else np.empty(0))
            got = np.array([a["anomaly_score"] for a in answers], dtype=float)
            worst = float((np.abs(got - inside) / np.maximum(np.abs(inside), 1e-12)).max()
                          ) if paths else 0.0
        else:
            edge = EdgePredictor(model_path)
            answers = edge.predict_proba(paths) if paths else np.empty((0, 0))
            inside = (candidate.predict(paths, progress=False)[candidate.classes].to_numpy()
                      if paths else answers)
            worst = float(np.abs(answers - inside).max()) if paths else 0.0
    except Exception as error:  # any failure to load or run is what this check is for
        return False, [_row("onnx_parity", True, np.nan, TOLERANCE,
                            "exported; parity checked on synthetic images"),
                       _row("edge_predictor", False, detail=f"the exported file does not "
                            f"load or answer in the edge predictor: {error}")]
    parity = _row("onnx_parity", worst <= TOLERANCE, worst, TOLERANCE,
                  f"largest difference between the exported file and the model: {worst:.2g}"
                  f" (on synthetic images and {len(paths)} evaluation images)")
    edge_row = _row("edge_predictor", len(answers) == len(paths), len(answers), len(paths),
                    f"the file loads in the line-side predictor and answered for "
                    f"{len(answers)} of {len(paths)} evaluation images")
    return parity["passed"], [parity, edge_row]


def _predictor(version: ModelVersion, model_path: Path | None):
    """Image paths → predicted labels, through the exported file when there is one."""
    def predict(paths: list[str]) -> list[str]:
        if not paths:
            return []
        if model_path is not None:
            edge = EdgePredictor(model_path)
            if version.task == "anomaly":
                return [answer["label"] for answer in edge.predict(paths)]
            probs = edge.predict_proba(paths)
            return [edge.classes[i] for i in probs.argmax(axis=1)]
        return list(version.predict(paths, progress=False)["label"])
    return predict


def _comparison_rows(comparison: pd.DataFrame, champion: ModelVersion | None
                     ) -> list[dict[str, Any]]:
    rows = []
    for r in comparison.itertuples(index=False):
        is_class = ":" in r.metric
        if champion is None:
            if not is_class:
                rows.append(_row(r.metric, True, r.candidate, np.nan,
                                 f"{r.candidate:.3f} on {r.n} frozen images; first deployment "
                                 "of the line: no champion to compare with"))
            continue
        if np.isnan(r.candidate) or np.isnan(r.champion):
            rows.append(_row(r.metric, True, r.candidate, r.champion,
                             "not measured: no frozen image of this class"))
            continue
        worse = bool(r.delta_high < 0)
        verdict = "worse than the champion" if worse else "not worse than the champion"
        rows.append(_row(r.metric, not worse, r.candidate, r.champion,
                         f"{r.candidate:.3f} vs champion {r.champion:.3f} on {r.n} images: "
                         f"{verdict} (difference {r.delta:+.3f}, 95 % interval "
                         f"{r.delta_low:+.3f} to {r.delta_high:+.3f})"))
    return rows


def _golden(golden: dict[str, Any], paths: dict[str, str], candidate: ModelVersion,
            predict: Any) -> pd.DataFrame:
    columns = ["sample_id", "reference", "predicted", "right"]
    if not golden:
        return pd.DataFrame(columns=columns)
    ids = list(golden)
    if candidate.task != "detection":
        predicted = predict([paths[s] for s in ids])
        return pd.DataFrame({"sample_id": ids, "reference": list(golden.values()),
                             "predicted": predicted,
                             "right": [p == golden[s] for s, p in zip(ids, predicted,
                                                                      strict=True)]},
                            columns=columns)
    boxes = candidate.predict([paths[s] for s in ids], progress=False)
    rows = []
    for sid in ids:
        found = boxes[(boxes["filepath"] == paths[sid])
                      & (boxes["confidence"] >= GOLDEN_CONFIDENCE)]
        rows.append({"sample_id": sid, "reference": golden[sid],
                     "predicted": found[["label", "x", "y", "w", "h"]].to_dict("records"),
                     "right": _boxes_right(golden[sid], found)})
    return pd.DataFrame(rows, columns=columns)


def _boxes_right(reference: list[dict[str, Any]], found: pd.DataFrame) -> bool:
    """Every reference box matched by a found box of its class (IoU >= 0.5); none found on
    an image without reference boxes."""
    from workbench.metrics.detection_metrics import iou_matrix

    if not reference:
        return found.empty
    for box in reference:
        same = found[found["label"] == box["label"]]
        if same.empty:
            return False
        x, y, w, h = box["bounding_box"]
        ious = iou_matrix(np.array([[x, y, x + w, y + h]]),
                          np.column_stack([same["x"], same["y"], same["x"] + same["w"],
                                           same["y"] + same["h"]]))
        if ious.max() < 0.5:
            return False
    return True


def _golden_check(results: pd.DataFrame) -> dict[str, Any]:
    if results.empty:
        return _row("golden", True, 0, 0, "no golden set: add challenge images with "
                    "p.golden(add=[...], annotator='your name')")
    right = int(results["right"].sum())
    missed = results.loc[~results["right"].astype(bool), "sample_id"].tolist()
    if missed:
        return _row("golden", False, right, len(results),
                    f"{len(missed)} of {len(results)} golden image(s) wrong: "
                    f"{', '.join(missed[:5])}{' …' if len(missed) > 5 else ''}")
    return _row("golden", True, right, len(results),
                f"all {len(results)} golden images right")


def _detection_deltas(frozen: dict[str, Any], paths: dict[str, str], candidate: ModelVersion,
                      champion: ModelVersion | None, n_boot: int, seed: int) -> pd.DataFrame:
    ids = list(frozen)
    gt = pd.DataFrame([{"sample_id": sid, "label": b["label"], **dict(zip("xywh",
                                                                             b["bounding_box"],
                                                                             strict=True))}
                       for sid in ids for b in frozen[sid]],
                      columns=["sample_id", "label", "x", "y", "w", "h"])
    by_path = {paths[s]: s for s in ids}

    def boxes(version: ModelVersion) -> pd.DataFrame:
        found = version.predict([paths[s] for s in ids], progress=False)
        found.insert(0, "sample_id", found.pop("filepath").map(by_path))
        return found

    cand = boxes(candidate)
    champ = boxes(champion) if champion is not None else cand
    classes = list(dict.fromkeys([*candidate.classes,
                                  *(champion.classes if champion else []), *gt["label"]]))
    return paired_map_bootstrap(gt, champ, cand, sample_ids=ids, classes=classes,
                                n_boot=max(1, n_boot // 5) if champion else 0, seed=seed)


__all__ = ["CHECK_COLUMNS", "GOLDEN_CONFIDENCE", "HARD_CHECKS", "GateReport", "evaluate", "gate"]
