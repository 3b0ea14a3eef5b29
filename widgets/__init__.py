"""Loupe's notebook widgets: render what ``workbench`` computes, send edits back.

Every widget takes a Project, a project name or a FiftyOne view of one, writes label edits
through :meth:`workbench.Project.annotate` under a person's name, and exposes ``.selected``.
The folders follow the loop (``label``, ``analyse``, ``improve``, ``monitor``; shared parts
in ``_base``). The public names are listed once, in ``__init__.pyi``, and imported on first
use, so ``from widgets import LabelingGrid`` loads only what the grid needs.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
