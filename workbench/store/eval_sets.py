"""The frozen evaluation set and the golden set: images no training may use.

>>> p.freeze_eval(fraction=0.2, annotator="erin")     # a stratified, seeded draw
>>> p.eval_ids()                                     # the frozen set's sample ids
>>> p.golden(add=[sid], annotator="erin")            # challenge parts that must stay right
>>> p.eval_sets()                                    # reference vs current label, per image
>>> p.update_eval_reference([sid], annotator="erin", reason="re-reviewed under the lamp")

Both sets live in the project's dataset (``dataset.info["loupe_eval_sets"]``) with the label
each image had when it was set aside: the *reference* the gate scores against. A later
review of a frozen image changes its consensus, not its reference; the reference moves only
with :meth:`EvalSets.update_eval_reference`, which records who decided and why. Every change
is appended to the sets' history (:meth:`EvalSets.eval_history`), never rewritten.

Both trainers leave these images out (:func:`exclude_held_back`): a model is never scored on
an image it saw.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbench.errors import ProjectError
from workbench.store import _db as store
from workbench.store.labels import now

if TYPE_CHECKING:
    import fiftyone as fo

    from workbench.store.project import Project

#: Key of the sets in the dataset's ``info``.
SETS_KEY = "loupe_eval_sets"
SETS_SCHEMA_VERSION = 1
SETS = ("frozen", "golden")
_HISTORY_COLUMNS = ["set", "action", "n_images", "sample_ids", "annotator", "time", "reason"]


# -- reading ------------------------------------------------------------------------------------
def read_sets(dataset: fo.Dataset) -> dict[str, Any]:
    """The stored sets (a copy): ``{"frozen": {sid: entry}, "golden": {…}, "history": […]}``;
    an entry holds ``reference`` (label, or list of boxes), ``by`` and ``at``."""
    dataset.reload()
    sets = copy.deepcopy(dict(dataset.info.get(SETS_KEY) or {}))
    for name in SETS:
        sets.setdefault(name, {})
    sets.setdefault("history", [])
    return sets


def held_back_ids(dataset: fo.Dataset) -> list[str]:
    """Sample ids of the frozen and the golden set (what no training may use)."""
    sets = read_sets(dataset)
    return list(dict.fromkeys([*sets["frozen"], *sets["golden"]]))


def exclude_held_back(project: Project, collection: fo.DatasetView | fo.Dataset
                      ) -> fo.DatasetView | fo.Dataset:
    """``collection`` without the frozen and golden images (unchanged when there are none)."""
    ids = held_back_ids(project.dataset)
    return collection.exclude(ids) if ids else collection


def references(project: Project, which: str) -> dict[str, Any]:
    """Sample id → reference of the ``"frozen"`` or ``"golden"`` set, for images that still
    exist, in the order they were added."""
    entries = read_sets(project.dataset)[which]
    present = store.existing_ids(project.dataset, list(entries))
    return {sid: entry["reference"] for sid, entry in entries.items() if sid in present}


def current_labels(project: Project, sample_ids: list[str]) -> dict[str, Any]:
    """Current consensus of the samples: a label (classification) or a list of
    ``{label, bounding_box}`` (detection; ``[]`` for "no defect"); None when unlabelled."""
    if not sample_ids:
        return {}
    view = project.dataset.select(sample_ids)
    if project.task == "detection":
        ids, gt = view.values(["id", "ground_truth"])
        return {sid: None if value is None else
                [{"label": d.label, "bounding_box": list(d.bounding_box)}
                 for d in value.detections]
                for sid, value in zip(ids, gt, strict=True)}
    ids, labels = view.values(["id", "ground_truth.label"])
    return dict(zip(ids, labels, strict=True))


# -- writing ------------------------------------------------------------------------------------
def _save(project: Project, sets: dict[str, Any], *, which: str, action: str,
          sample_ids: list[str], annotator: str, reason: str | None = None) -> None:
    sets["history"].append({"set": which, "action": action, "n_images": len(sample_ids),
                            "sample_ids": list(sample_ids), "annotator": annotator,
                            "time": now().isoformat(), "reason": reason})
    sets["schema_version"] = SETS_SCHEMA_VERSION
    info = dict(project.dataset.info)
    info[SETS_KEY] = sets
    project.dataset.info = info
    project.dataset.save()


def _check_annotator(annotator: object) -> str:
    if not isinstance(annotator, str) or not annotator.strip():
        raise ProjectError(f"annotator must be a non-empty name, e.g. annotator='erin'; got "
                           f"{annotator!r}.")
    return annotator


def _labelled(project: Project, sample_ids: Iterable[str], argument: str) -> dict[str, Any]:
    """Current labels of ``sample_ids``, all of which must exist and be labelled."""
    if isinstance(sample_ids, str):
        sample_ids = [sample_ids]
    ids = list(dict.fromkeys(sample_ids))
    if not ids:
        raise ProjectError(f"{argument} is empty; pass the sample ids to set aside.")
    missing = sorted(set(ids) - store.existing_ids(project.dataset, ids))
    if missing:
        raise ProjectError(f"{argument}: sample id(s) not in project {project.name!r}: "
                           f"{', '.join(missing[:5])}")
    labels = current_labels(project, ids)
    unlabelled = [sid for sid in ids if labels.get(sid) is None]
    if unlabelled:
        raise ProjectError(f"{argument}: {len(unlabelled)} image(s) have no label yet (e.g. "
                           f"{unlabelled[0]}); an evaluation image needs its reviewed label. "
                           "Label them first, or choose others.")
    return {sid: labels[sid] for sid in ids}


def _stratum(reference: Any) -> str:
    """A detection image's rarest-first class key; a classification label as it is."""
    if isinstance(reference, list):
        return min((b["label"] for b in reference), default="")
    return str(reference)


def draw(project: Project, fraction: float, seed: int, exclude: Iterable[str]) -> list[str]:
    """A stratified draw of ``fraction`` of the labelled real images (not synthetic, not in
    ``exclude``): per class, round(fraction × n), at least one of a class with two or more."""
    if not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise ProjectError(f"fraction must be between 0 and 1 (e.g. 0.2), got {fraction!r}.")
    dataset = project.dataset
    labelled = dataset.exists("ground_truth").match_tags(store.SYNTHETIC_TAG, bool=False)
    ids = [sid for sid in labelled.values("id") if sid not in set(exclude)]
    labels = current_labels(project, ids)
    groups: dict[str, list[str]] = {}
    for sid in ids:
        groups.setdefault(_stratum(labels[sid]), []).append(sid)
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for key in sorted(groups):
        members = groups[key]
        n = round(fraction * len(members))
        n = max(n, 1) if len(members) >= 2 else n
        chosen += [members[i] for i in sorted(rng.choice(len(members), n, replace=False))]
    if not chosen:
        raise ProjectError(f"project {project.name!r} has too few labelled images to set "
                           f"{fraction:.0%} aside; label more first.")
    return chosen


class EvalSets:
    """The frozen and golden sets as methods of :class:`~workbench.store.project.Project`."""

    dataset: fo.Dataset
    name: str
    task: str

    def freeze_eval(self, sample_ids: Iterable[str] | None = None, fraction: float = 0.2, *,
                    annotator: str, seed: int = 0, replace: bool = False) -> list[str]:
        """Set labelled images aside as the frozen evaluation set; returns its sample ids.

        Parameters
        ----------
        sample_ids : iterable of str, optional
            These images (added to an existing set). Default: a stratified draw of
            ``fraction`` of the labelled real images, seeded by ``seed``.
        fraction : float, default 0.2
        annotator : str
            Who decided (recorded).
        replace : bool, default False
            Start a new set (the old one's images go back to training). Without it, a
            draw is refused when a set exists.

        Their current labels become the reference the gate scores against; no training
        uses these images from now on.
        """
        project: Any = self
        _check_annotator(annotator)
        sets = read_sets(self.dataset)
        if sets["frozen"] and sample_ids is None and not replace:
            raise ProjectError(
                f"project {self.name!r} already has a frozen set of {len(sets['frozen'])} "
                "images; add images with p.freeze_eval(sample_ids=[...], annotator=...), or "
                "draw a new set with replace=True (its images go back to training).")
        old = {} if replace else sets["frozen"]
        if sample_ids is None:
            chosen = _labelled(project, draw(project, fraction, seed, sets["golden"]),
                               "sample_ids")
            how = f"stratified draw of {fraction:g} (seed {seed})"
        else:
            chosen = _labelled(project, sample_ids, "sample_ids")
            how = None
        stamp = now().isoformat()
        new = {sid: ref for sid, ref in chosen.items() if sid not in old}
        sets["frozen"] = {**old, **{sid: {"reference": ref, "by": annotator, "at": stamp}
                                    for sid, ref in new.items()}}
        _save(project, sets, which="frozen", action="replace" if replace else "freeze",
              sample_ids=list(new), annotator=annotator, reason=how)
        return list(sets["frozen"])

    def eval_ids(self) -> list[str]:
        """Sample ids of the frozen evaluation set, in the order they were set aside."""
        return list(read_sets(self.dataset)["frozen"])

    def golden(self, add: Iterable[str] | None = None, *, remove: Iterable[str] | None = None,
               annotator: str | None = None) -> list[str]:
        """Add (or remove) challenge images that every promoted model must get right;
        returns the golden set's ids. Their current labels become the reference; no
        training uses them. ``annotator`` is required to change the set."""
        project: Any = self
        sets = read_sets(self.dataset)
        if add is None and remove is None:
            return list(sets["golden"])
        _check_annotator(annotator)
        if add is not None:
            chosen = _labelled(project, add, "add")
            stamp = now().isoformat()
            new = [sid for sid in chosen if sid not in sets["golden"]]
            sets["golden"].update({sid: {"reference": chosen[sid], "by": annotator,
                                         "at": stamp} for sid in new})
            _save(project, sets, which="golden", action="add", sample_ids=new,
                  annotator=str(annotator))
        if remove is not None:
            ids = [remove] if isinstance(remove, str) else list(remove)
            unknown = [sid for sid in ids if sid not in sets["golden"]]
            if unknown:
                raise ProjectError(f"remove: {unknown[0]!r} is not in the golden set of "
                                   f"{self.name!r}; see p.golden().")
            for sid in ids:
                del sets["golden"][sid]
            _save(project, sets, which="golden", action="remove", sample_ids=ids,
                  annotator=str(annotator))
        return list(sets["golden"])

    def update_eval_reference(self, sample_ids: Iterable[str] | None = None, *,
                              annotator: str, reason: str) -> list[str]:
        """Make the current labels of frozen or golden images their new reference (a
        recorded decision: who and why); returns the ids whose reference changed.

        ``sample_ids`` default: every frozen or golden image whose label changed since.
        """
        project: Any = self
        _check_annotator(annotator)
        if not isinstance(reason, str) or not reason.strip():
            raise ProjectError("reason must say why the reference changes, e.g. "
                               "reason='re-reviewed with the supervisor'.")
        sets = read_sets(self.dataset)
        known = {**sets["golden"], **sets["frozen"]}
        ids = list(known) if sample_ids is None else (
            [sample_ids] if isinstance(sample_ids, str) else list(sample_ids))
        outside = [sid for sid in ids if sid not in known]
        if outside:
            raise ProjectError(f"sample_ids: {outside[0]!r} is in neither the frozen nor the "
                               f"golden set of {self.name!r}.")
        current = current_labels(project, ids)
        changed = [sid for sid in ids if current.get(sid) is not None
                   and current[sid] != known[sid]["reference"]]
        stamp = now().isoformat()
        for which in SETS:
            for sid in changed:
                if sid in sets[which]:
                    sets[which][sid] = {"reference": current[sid], "by": annotator,
                                        "at": stamp}
        _save(project, sets, which="frozen+golden", action="update_reference",
              sample_ids=changed, annotator=annotator, reason=reason)
        return changed

    def eval_sets(self) -> pd.DataFrame:
        """One row per frozen or golden image: sample_id, frozen, golden (bools), reference,
        current (the consensus now), changed (a review since: decide with
        :meth:`update_eval_reference`), set_by, set_at."""
        project: Any = self
        sets = read_sets(self.dataset)
        ids = list(dict.fromkeys([*sets["frozen"], *sets["golden"]]))
        current = current_labels(project, [s for s in ids if s in
                                           store.existing_ids(self.dataset, ids)])
        rows = []
        for sid in ids:
            entry = sets["frozen"].get(sid) or sets["golden"][sid]
            rows.append({"sample_id": sid, "frozen": sid in sets["frozen"],
                         "golden": sid in sets["golden"], "reference": entry["reference"],
                         "current": current.get(sid),
                         "changed": current.get(sid) != entry["reference"],
                         "set_by": entry["by"], "set_at": pd.Timestamp(entry["at"])})
        return pd.DataFrame(rows, columns=["sample_id", "frozen", "golden", "reference",
                                           "current", "changed", "set_by", "set_at"])

    def eval_history(self) -> pd.DataFrame:
        """Every change of the frozen and golden sets, oldest first: set, action, n_images,
        sample_ids, annotator, time, reason."""
        frame = pd.DataFrame(read_sets(self.dataset)["history"], columns=_HISTORY_COLUMNS)
        frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
        return frame


__all__ = ["SETS_KEY", "EvalSets", "current_labels", "draw", "exclude_held_back",
           "held_back_ids", "read_sets", "references"]
