"""The line-side predictors, from the separate ``loupe-edge`` distribution (``edge/``).

``EdgePredictor`` and ``EdgeDetector`` live in :mod:`loupe_edge.predictor`, which needs
numpy, Pillow and onnxruntime only; they are re-exported here so that existing code keeps
working. ``python -m workbench.deploy.edge MODEL IMAGES…`` is ``loupe-edge predict``.
"""

from __future__ import annotations

import sys

from loupe_edge import predictor
from loupe_edge.predictor import *  # noqa: F403 (a re-export)
from loupe_edge.predictor import JIT_DEPRECATION, main

__all__ = [*predictor.__all__, "JIT_DEPRECATION"]

if __name__ == "__main__":
    sys.exit(main())
