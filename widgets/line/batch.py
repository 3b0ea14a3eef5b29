"""New batch: import a batch of the server's inbox or upload images from the browser, check
it for drift, and label its least familiar images first in a :class:`LabelingGrid`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import ipywidgets as widgets
import pandas as pd

from widgets.label.grid import LabelingGrid
from widgets.line._common import NO_NAME, done, person, refused
from workbench.errors import LoupeError
from workbench.line.intake import IntakeReport, import_batch
from workbench.line.uploads import MAX_UPLOAD_BYTES
from workbench.store.feedback import sent_back
from workbench.store.inbox import inbox_batch, inbox_batches, project_inbox
from workbench.store.project import Project
from workbench.text import escape_html


class BatchPanel(widgets.VBox):
    """Import new images and label them, least familiar first.

    Parameters
    ----------
    project : Project
    line : str
        Its current deployment's version is the drift reference (else the newest version).
    annotator : str
        Who imports and labels ("": shown, nothing written).
    on_change : callable, optional
        Called after an import (the console refreshes its status and timeline).
    max_upload_bytes : int, default :data:`MAX_UPLOAD_BYTES`
    """

    def __init__(self, project: Project, *, line: str, annotator: str = "",
                 on_change: Callable[[], None] | None = None,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self.project, self.line, self.annotator = project, line, annotator
        self.on_change = on_change or (lambda: None)
        self.max_upload_bytes = int(max_upload_bytes)
        self.report: IntakeReport | None = None
        self.ranked: pd.DataFrame = pd.DataFrame(columns=["sample_id", "ood_score"])
        self.batch_picker = widgets.Dropdown(description="Inbox batch",
                                             layout=widgets.Layout(width="420px"))
        self.reload_button = widgets.Button(icon="refresh", tooltip="list the inbox again",
                                            layout=widgets.Layout(width="40px"))
        self.import_button = widgets.Button(
            description="Import this batch", icon="download", button_style="primary",
            tooltip="add the batch's images (unlabelled), check them for drift, label them")
        self.upload = widgets.FileUpload(
            accept="image/*", multiple=True, description="Choose images",
            tooltip=f"images from this computer, at most {_mb(self.max_upload_bytes)} "
                    "together")
        self.upload_button = widgets.Button(description="Import upload", icon="upload",
                                            tooltip="import the chosen images as a batch")
        self.feedback_button = widgets.Button(
            description="Sent back by the line", icon="reply", button_style="warning",
            layout=widgets.Layout(display="none", width="auto"),
            tooltip="images loupe-edge watch found doubtful (p.import_feedback), least "
                    "confident first")
        self.inbox_note = widgets.HTML()
        self.message = widgets.HTML()
        self.message.add_class("loupe-line-batch-message")
        self.grid_box = widgets.VBox()
        self.grid: LabelingGrid | None = None
        self.reload_button.on_click(lambda _b: self.refresh_inbox())
        self.import_button.on_click(lambda _b: self.import_inbox())
        self.upload_button.on_click(lambda _b: self.import_upload())
        self.feedback_button.on_click(lambda _b: self.show_sent_back())
        super().__init__(children=[
            widgets.HTML("<h3>New batch</h3><p class='loupe-model-hint'>Pick a batch the "
                         "line dropped in the inbox, or choose images from this computer; "
                         "after the import its least familiar images come first, to label "
                         "with 1–9 (click the grid first).</p>"),
            widgets.HBox([self.feedback_button]),
            widgets.HBox([self.batch_picker, self.reload_button, self.import_button],
                         layout=widgets.Layout(flex_flow="row wrap")),
            self.inbox_note,
            widgets.HBox([self.upload, self.upload_button],
                         layout=widgets.Layout(flex_flow="row wrap")),
            self.message, self.grid_box])
        self.add_class("loupe-line-batch")
        self.refresh_inbox()

    # -- importing ----------------------------------------------------------------------
    def refresh_inbox(self) -> None:
        """List the inbox's batches again, newest first."""
        try:
            batches = inbox_batches(self.project)
        except (ValueError, OSError) as error:
            batches = inbox_batches(self.project, environ={})
            self.message.value = refused("Inbox", str(error))
        chosen = self.batch_picker.value
        options = [(f"{row.batch} · {row.n_images} image(s) · {row.modified:%Y-%m-%d %H:%M} "
                    "UTC", row.path) for row in batches.itertuples(index=False)]
        self.batch_picker.options = options
        paths = [path for _, path in options]
        self.batch_picker.value = chosen if chosen in paths else (paths[0] if paths else None)
        self.import_button.disabled = not paths
        waiting = len(sent_back(self.project))
        self.feedback_button.description = f"Sent back by the line ({waiting})"
        self.feedback_button.layout.display = "flex" if waiting else "none"
        self.inbox_note.value = "" if paths else (
            "The inbox is empty: the line puts folders of new images into "
            f"<code>{escape_html(str(project_inbox(self.project)))}</code>; or choose "
            "images from this computer.")

    def import_inbox(self) -> IntakeReport | None:
        """Import the chosen inbox batch under the typed name (batch = its folder name)."""
        name = person(self.annotator)
        if name is None:
            self.message.value = refused("Not imported", NO_NAME)
            return None
        if not self.batch_picker.value:
            self.message.value = refused("Not imported", "choose a batch of the inbox first")
            return None
        try:
            folder = inbox_batch(self.project, self.batch_picker.value)
        except ValueError as error:
            self.message.value = refused("Refused", str(error))
            return None
        return self._import(folder, folder.name, name)

    def import_upload(self) -> IntakeReport | None:
        """Import the images chosen in :attr:`upload` as a batch ``upload-<time>``: the same
        checks as any import, and a size limit (:func:`workbench.import_batch`)."""
        name = person(self.annotator)
        if name is None:
            self.message.value = refused("Not imported", NO_NAME)
            return None
        files = list(self.upload.value)
        if not files:
            self.message.value = refused("Not imported", "choose images first (Choose "
                                         "images), then press Import upload")
            return None
        total = sum(int(f.get("size") or len(f["content"])) for f in files)
        if total > self.max_upload_bytes:  # said before the files are even looked at
            self.message.value = refused(
                "Not imported", f"the {len(files)} file(s) are {_mb(total)} together; the "
                f"page takes at most {_mb(self.max_upload_bytes)}. Upload fewer at a time, "
                "or put the folder into the server's inbox.")
            return None
        report = self._import(tuple(files), f"upload-{datetime.now():%Y%m%d-%H%M%S}", name)
        if report is not None:
            self.upload.value = ()
        return report

    def _import(self, source: Path | tuple, batch: str, name: str) -> IntakeReport | None:
        try:
            report = import_batch(self.project, source, batch=batch, annotator=name,
                                  line=self.line, max_upload_bytes=self.max_upload_bytes)
        except (LoupeError, ValueError, OSError) as error:
            self.message.value = refused("Not imported", str(error))
            return None
        self.report = report
        imported = report.imported
        why = "; ".join(f"{Path(p).name}: {reason}" for p, reason in imported.rejected[:3])
        text = (f"Imported <b>{escape_html(batch)}</b> as {escape_html(name)}: "
                f"{len(imported.added)} image(s) added, {len(imported.duplicates)} already "
                f"stored, {len(imported.rejected)} rejected"
                + (f" ({escape_html(why)})" if why else "") + ".")
        if report.drift is None:
            text += f" No drift check: {escape_html(str(report.drift_skipped))}."
        else:
            verdict = ("<b class='loupe-worse'>DRIFT</b>" if report.drift.drifted
                       else "no drift")
            text += (f" Drift check against {escape_html(report.reference)}: {verdict} — "
                     f"{escape_html(report.drift.summary().rstrip('.'))}.")
        self._rank(report)
        self.message.value = done(text + " Least familiar images first.")
        self.on_change()
        return report

    # -- after an import: least familiar first ------------------------------------------
    def _rank(self, report: IntakeReport) -> None:
        ids = list(report.imported.added)
        scores: dict[str, float] = {}
        if report.drift is not None and ids:
            paths = dict(zip(*self.project.dataset.select(ids).values(["filepath", "id"]),
                             strict=True))
            per_image = report.drift.per_image
            scores = {paths[p]: float(s) for p, s in
                      zip(per_image["filepath"], per_image["ood_score"], strict=True)
                      if p in paths}
        order = sorted(ids, key=lambda sid: -scores.get(sid, 0.0))  # stable: import order
        self.ranked = pd.DataFrame({"sample_id": order,
                                    "ood_score": [scores.get(s) for s in order]})
        self.show_grid()

    def show_sent_back(self) -> None:
        """The images the line sent back and nobody labelled yet, least confident first,
        each captioned with the line's answer."""
        frame = sent_back(self.project)
        self.ranked = frame[["sample_id", "ood_score"]]
        self.show_grid(captions={row.sample_id: f"line: {row.label} {row.confidence:.2f}"
                                 for row in frame.itertuples(index=False)},
                       title=f"{len(frame)} image(s) sent back by the line, least confident "
                             "first")

    def show_grid(self, *, captions: dict[str, str] | None = None,
                  title: str | None = None) -> None:
        """The last imported batch in a labelling grid, least familiar first."""
        if captions is None:
            captions = {row.sample_id: f"unfamiliar {row.ood_score:.2f}"
                        for row in self.ranked.itertuples(index=False)
                        if row.ood_score is not None and row.ood_score == row.ood_score}
        ids = list(self.ranked["sample_id"])
        title = title or f"{len(ids)} new image(s), least familiar first"
        if self.grid is not None:
            self.grid.close()
        # A new grid each time: a grid knows the samples that existed when it was built.
        self.grid = LabelingGrid(self.project, annotator=self.annotator or None,
                                 sample_ids=ids, captions=captions)
        self.grid.title = title
        self.grid_box.children = [self.grid]

    def set_annotator(self, name: str) -> None:
        """Record later imports and labels under ``name``."""
        self.annotator = name
        if self.grid is not None:
            self.grid.annotator = name


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"
