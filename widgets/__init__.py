"""Loupe's notebook widgets: render what ``workbench`` computes, send edits back."""

from widgets.overview import ProjectOverview

__all__ = ["ProjectOverview"]
