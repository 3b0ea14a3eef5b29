"""``HonestNumbers``: can a version's figures be trusted? Leaks, shortcuts, image quality and
small classes, in words, on one press.

Render-only (nothing is written): :func:`workbench.leaks`, :func:`workbench.shortcuts`,
the stored :func:`workbench.image_issues` run and the small-class notes of
:func:`workbench.class_report`. The checks read every image once (then the caches), so they
run when asked, not when the page opens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import ipywidgets as widgets

import workbench as wb
from workbench.analyse.leaks import leak_counts
from workbench.text import escape_html

if TYPE_CHECKING:
    from workbench.store.project import Project
    from workbench.train.versions import ModelVersion


class HonestNumbers(widgets.VBox):
    """A **Check** button (key Enter when focused) and what the checks found, per check.

    Parameters
    ----------
    project : Project or str
    version : ModelVersion or str, optional
        The version whose figures are checked; the newest when None.

    Attributes
    ----------
    findings : dict[str, list[str]]
        Per check (``leaks``, ``shortcuts``, ``image quality``, ``small classes``), the
        sentences shown; empty before the first check.
    """

    def __init__(self, project: Project | str, version: ModelVersion | str | None = None
                 ) -> None:
        self.project, self.version = wb.as_version(project, version)
        self.findings: dict[str, list[str]] = {}
        self.button = widgets.Button(description="Check", icon="search",
                                     tooltip="look for leaks, shortcuts, poor images and "
                                             "classes too small to judge")
        self.button.add_class("loupe-honest-check")
        self.report = widgets.HTML("<p>Press <b>Check</b>: near-copies across folds, labels "
                                   "tied to lighting or focus, poor images, small classes.</p>")
        self.button.on_click(lambda _: self.check())
        super().__init__([self.button, self.report])
        self.add_class("loupe-honest")

    def check(self) -> dict[str, list[str]]:
        """Run the checks and show what they found."""
        self.button.disabled, self.button.description = True, "Checking…"
        try:
            self.findings = {name: self._safe(find) for name, find in (
                ("leaks", self._leaks), ("shortcuts", self._shortcuts),
                ("image quality", self._quality), ("small classes", self._small))}
        finally:
            self.button.disabled, self.button.description = False, "Check again"
        self.report.value = "".join(
            f"<h4>{escape_html(name.capitalize())}</h4><ul>"
            + "".join(f"<li>{escape_html(line)}</li>" for line in lines) + "</ul>"
            for name, lines in self.findings.items())
        return self.findings

    @staticmethod
    def _safe(find: Callable[[], list[str]]) -> list[str]:
        try:
            return find()
        except (wb.ProjectError, ValueError) as error:
            return [f"not checked: {error}"]

    def _leaks(self) -> list[str]:
        pairs = wb.leaks(self.project, self.version)
        if pairs.empty:
            return [f"no near-copies across {self.version.name}'s folds or the frozen and "
                    "golden sets."]
        return [f"{n} near-copy pair(s) {where}: figures that rest on them are optimistic "
                "(wb.leaks lists them)." for where, n in leak_counts(pairs).items()]

    def _shortcuts(self) -> list[str]:
        if self.version.task != "classification":
            return [f"checked for classifiers; {self.version.name} is a {self.version.task} "
                    "version."]
        table = wb.shortcuts(self.project, self.version)
        flagged = table[table["is_shortcut"]]
        if flagged.empty:
            return ["no image property or slice goes with the labels (p ≥ 0.01, Holm)."]
        return [str(note) for note in flagged["note"]]

    def _quality(self) -> list[str]:
        dataset = self.project.dataset
        if not dataset.has_sample_field("image_issues"):
            return ["not checked yet: run wb.image_issues(project)."]
        counts = dataset.count_values("image_issues.issues")
        found = [f"{n} {str(name).replace('_', ' ')}" for name, n in sorted(
            counts.items(), key=lambda item: -item[1]) if name and n]
        return [f"images with an issue: {', '.join(found)} (grid filter 'image quality')."
                if found else "no image-quality issue found."]

    def _small(self) -> list[str]:
        if self.version.task != "classification":
            return [f"per-class notes are for classifiers; {self.version.name} is a "
                    f"{self.version.task} version."]
        notes = wb.class_report(self.project, self.version)["note"].dropna()
        return list(notes) or ["every class has enough held-out images to judge."]
