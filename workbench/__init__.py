"""Loupe's headless core: projects, ingest, labels, the demo dataset.

>>> import workbench as wb
>>> p = wb.Project.create("casing")
>>> report = p.import_folder("images/", layout="class_folders")
"""

from workbench import demo
from workbench.ingest import ImportReport
from workbench.project import Project, ProjectError, delete_project, list_projects

__all__ = ["ImportReport", "Project", "ProjectError", "delete_project", "demo", "list_projects"]
__version__ = "0.1.0"
