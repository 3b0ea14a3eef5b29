"""Loupe's headless core: projects, ingest, labels, training, analysis, export, the demo.

>>> import workbench as wb
>>> p = wb.Project.create("casing")
>>> report = p.import_folder("images/", layout="class_folders")
>>> mv = wb.train(p)                       # "v1": k-fold, out-of-fold predictions
>>> wb.label_issues(p, mv).head(10)      # the labels most likely wrong
>>> wb.export(mv, "onnx", "casing.onnx")   # for the line-side box: wb.EdgePredictor

The folders follow the loop: ``store`` (projects, labels, imports, archives) < ``train``
< ``analyse`` < ``improve`` | ``monitor`` | ``deploy``, with pure ``metrics`` below them
all (docs/architecture.md). The public names are listed once, in ``__init__.pyi``, and
imported on first use, so ``from workbench.deploy.edge import EdgePredictor`` on an edge
box pulls in neither FiftyOne nor torch.
"""

import lazy_loader

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
