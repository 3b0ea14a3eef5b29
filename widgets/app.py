"""``Workbench``: every Loupe widget as a tab, under one project / version / name picker.

Tabs are built when first opened (a tab's analysis runs only if someone looks at it) and
rebuilt when the project, the version or the person changes. A tab that cannot be built
(no model version yet, one version only for a comparison) says why and what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import ipywidgets as widgets

from widgets._base.name_memory import RememberedName
from widgets._base.source import resolve_source
from widgets.analyse.box_confusion import BoxConfusionDrilldown
from widgets.analyse.compare import ModelCompare
from widgets.analyse.confusion import ConfusionDrilldown
from widgets.analyse.embedding_map import EmbeddingMap
from widgets.analyse.slices import SlicePerformance
from widgets.label.agreement_review import AgreementReview
from widgets.label.box_issue_queue import BoxIssueQueue
from widgets.label.box_labeler import BoxLabeler
from widgets.label.grid import LabelingGrid
from widgets.label.issue_queue import IssueQueue
from widgets.label.label_book import LabelBook
from widgets.monitor.drift_banner import DriftBanner
from widgets.monitor.drift_monitor import DriftMonitor
from workbench import Project, ProjectError, list_projects
from workbench.text import escape_html

Builder = Callable[["Workbench"], widgets.Widget]


def _version_needed(workbench: Workbench) -> str | None:
    if not workbench.version:
        return ("This tab needs a model version. Train one in a notebook: "
                "<code>wb.train(p, folds=5)</code>, then pick it above.")
    return None


def _compare_needed(workbench: Workbench) -> str | None:
    if not workbench.version or not workbench.baseline:
        return ("Comparing needs two model versions: train another with "
                "<code>wb.train(p, folds=5)</code> and pick both above.")
    if workbench.version == workbench.baseline:
        return "Pick two different versions to compare."
    return None


def _classification_only(check: Callable[[Workbench], str | None]
                         ) -> Callable[[Workbench], str | None]:
    """``check``, and on a detection project a note that the tab is for class labels."""
    def checked(workbench: Workbench) -> str | None:
        if workbench.project.task == "detection":
            return ("This tab works on class labels. For boxes, use the Label, Confusion "
                    "and Issues tabs (and <code>wb.detection_report(p, mv)</code>).")
        return check(workbench)
    return checked


def _labeler(workbench: Workbench) -> widgets.Widget:
    if workbench.project.task == "detection":
        return BoxLabeler(workbench.source, annotator=workbench.annotator,
                          model=workbench.version or None)
    version = workbench.project.model(workbench.version) if workbench.version else None
    heat = version if version is not None and version.task == "anomaly" else None
    return LabelingGrid(workbench.source, annotator=workbench.annotator, heatmaps=heat)


def _always(workbench: Workbench) -> str | None:
    return None


#: Tab title → (builder, check returning why it cannot be built, or None). Confusion and
#: Issues open their box versions on a detection project; Label opens a BoxLabeler.
TABS: dict[str, tuple[Builder, Callable[[Workbench], str | None]]] = {
    "Label": (_labeler, _always),
    "Confusion": (lambda w: (BoxConfusionDrilldown if w.project.task == "detection"
                             else ConfusionDrilldown)(w.source, w.version, annotator=w.annotator),
                  _version_needed),
    "Slices": (lambda w: SlicePerformance(w.source, w.version, annotator=w.annotator),
               _classification_only(_version_needed)),
    "Issues": (lambda w: (BoxIssueQueue if w.project.task == "detection"
                          else IssueQueue)(w.source, w.version, annotator=w.annotator),
               _version_needed),
    "Agreement": (lambda w: AgreementReview(w.source, annotator=w.annotator),
                  _classification_only(_always)),
    "Map": (lambda w: EmbeddingMap(w.source, w.version or None, annotator=w.annotator),
            _classification_only(_always)),
    "Compare": (lambda w: ModelCompare(w.source, w.baseline, w.version, annotator=w.annotator),
                _classification_only(_compare_needed)),
    "Label book": (lambda w: LabelBook(w.source, author=w.annotator,
                                       version=w.version or None),
                   _classification_only(_always)),
    "Drift": (lambda w: DriftMonitor(w.source, w.version, annotator=w.annotator),
              _classification_only(_version_needed)),
}


class Workbench(widgets.VBox):
    """All Loupe widgets as tabs with a shared project, version and annotator picker.

    Parameters
    ----------
    source : Project, str or FiftyOne view
        The project to open first (a view restricts every tab to its samples).
    version : str, optional
        The model version to analyse; the newest when None.
    annotator : str, optional
        The name every edit in every tab is stored under.

    Attributes
    ----------
    tabs : ipywidgets.Tab
    built : dict of str to widget
        The tabs built so far, by title (e.g. ``built["Confusion"].grid``).
    """

    def __init__(self, source: Any, *, version: str | None = None,
                 annotator: str | None = None) -> None:
        project, ids = resolve_source(source)
        self.source: Any = source if ids is not None else project
        self.project: Project = project
        self.built: dict[str, widgets.Widget] = {}
        names = list_projects()
        self.project_picker = widgets.Dropdown(options=names, value=project.name,
                                               description="Project")
        self.version_picker = widgets.Dropdown(description="Version")
        self.baseline_picker = widgets.Dropdown(description="Compare to")
        self.annotator_box = widgets.Text(value=annotator or "", description="Your name",
                                          placeholder="needed to save edits",
                                          continuous_update=False)
        # the name typed on an earlier visit of this browser (a name typed in the box wins)
        self.memory = RememberedName().bind(self.annotator_box)
        self.refresh_button = widgets.Button(description="refresh", icon="refresh",
                                             tooltip="re-read the project: others' decisions, "
                                                     "new versions, the latest drift check")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.banner = DriftBanner(project)
        self.status = widgets.HTML()
        self.tabs = widgets.Tab(children=[widgets.VBox() for _ in TABS],
                                titles=list(TABS))
        self._set_versions(version)
        self.project_picker.observe(self._on_project, names="value")
        for picker in (self.version_picker, self.baseline_picker):
            picker.observe(self._on_choice, names="value")
        self.annotator_box.observe(self._on_name, names="value")
        self.tabs.observe(self._on_tab, names="selected_index")
        header = widgets.HBox([self.project_picker, self.version_picker,
                               self.baseline_picker, self.annotator_box, self.refresh_button],
                              layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__(children=[header, self.memory, self.banner, self.status, self.tabs])
        self.add_class("loupe-workbench")
        self.open_tab(list(TABS)[self.tabs.selected_index or 0])

    # -- public --------------------------------------------------------------------------
    @property
    def version(self) -> str | None:
        """The picked model version's name (None when the project has none)."""
        return self.version_picker.value

    @property
    def baseline(self) -> str | None:
        """The version the picked one is compared to."""
        return self.baseline_picker.value

    @property
    def annotator(self) -> str | None:
        """The name edits are stored under (None until one is typed: tabs are read-only)."""
        return self.annotator_box.value.strip() or None

    @property
    def selected(self) -> list[str]:
        """The sample ids selected in the open tab."""
        titles = list(TABS)
        current = self.built.get(titles[self.tabs.selected_index or 0])
        return list(getattr(current, "selected", []) or [])

    def open_tab(self, title: str) -> widgets.Widget:
        """Show tab ``title`` (building it if needed) and return its widget."""
        titles = list(TABS)
        if title not in TABS:
            raise ValueError(f"no tab {title!r}; tabs: {', '.join(titles)}")
        index = titles.index(title)
        if title not in self.built:
            builder, check = TABS[title]
            reason = check(self)
            if reason is not None:
                content: widgets.Widget = widgets.HTML(f'<p class="loupe-note">{reason}</p>')
            else:
                try:
                    content = builder(self)
                except (ProjectError, ValueError) as err:
                    content = widgets.HTML(f'<p class="loupe-note">{escape_html(str(err))}</p>')
            self.built[title] = content
            children = list(self.tabs.children)
            children[index] = widgets.VBox([content])
            self.tabs.children = children
        if self.tabs.selected_index != index:
            self.tabs.selected_index = index
        return self.built[title]

    # -- events --------------------------------------------------------------------------
    def _set_versions(self, preferred: str | None) -> None:
        names = list(self.project.models()["name"])
        newest = names[-1] if names else None
        chosen = preferred if preferred in names else newest
        if preferred is not None and preferred not in names:
            raise ProjectError(f"project {self.project.name!r} has no model version "
                               f"{preferred!r} (versions: {', '.join(names) or 'none'})")
        self.version_picker.options = names
        self.version_picker.value = chosen
        earlier = [n for n in names if n != chosen]
        self.baseline_picker.options = earlier
        self.baseline_picker.value = earlier[-1] if earlier else None
        self.status.value = (f'<span class="loupe-sub">{escape_html(self.project.name)}: '
                             f"{len(self.project)} samples · "
                             f"{len(names)} model version{'s' if len(names) != 1 else ''}"
                             f" · as of {datetime.now():%H:%M}</span>")

    def refresh(self) -> None:
        """Re-read the project (versions, drift, every tab) as it is now in the store."""
        self.project = Project.open(self.project.name)
        if self.source is not self.project and isinstance(self.source, Project):
            self.source = self.project
        self._set_versions(self.version)
        self.banner.project = self.project
        self.banner.refresh()
        self._reset()

    def _on_name(self, change: dict) -> None:
        """A new name: every built tab stores its next decision under it (nothing rebuilt)."""
        name = self.annotator
        for widget in self.built.values():
            for part in (widget, getattr(widget, "grid", None), getattr(widget, "labeler", None)):
                if part is not None and hasattr(part, "annotator"):
                    part.annotator = name or ""
            if hasattr(widget, "author"):
                widget.author = name or ""

    def _reset(self) -> None:
        self.built = {}
        self.tabs.children = [widgets.VBox() for _ in TABS]
        self.open_tab(list(TABS)[self.tabs.selected_index or 0])

    def _on_project(self, change: dict) -> None:
        self.project = Project.open(change["new"])
        self.source = self.project
        self.banner.project = self.project
        self.banner.refresh()
        self._set_versions(None)
        self._reset()

    def _on_choice(self, change: dict) -> None:
        self._reset()

    def _on_tab(self, change: dict) -> None:
        if change["new"] is not None:
            self.open_tab(list(TABS)[change["new"]])
