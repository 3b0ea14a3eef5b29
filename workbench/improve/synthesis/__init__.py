"""Synthetic defect images: procedural painters, seamless paste and augmentation.

Pure functions on uint8 arrays (no FiftyOne, no disk). Every function takes a
``numpy.random.Generator`` and returns a :class:`Painted` (image, mask, params); the params
are plain JSON values that replay the result exactly.

>>> rng = np.random.default_rng(0)
>>> out = paint("scratch", image, rng)           # or PAINTERS["scratch"](image, rng)
>>> moved = paste(base, defect_image, rng)       # Poisson-blended copy of its defect
>>> varied = augment(real_defect_image, rng)     # flips, rotation, jitter
"""

from workbench.improve.synthesis._core import Painted
from workbench.improve.synthesis.augment import augment
from workbench.improve.synthesis.painters import PAINTERS, DefectKind, paint
from workbench.improve.synthesis.paste import defect_region, paste
from workbench.improve.synthesis.sheet import contact_sheet

__all__ = [
    "PAINTERS",
    "DefectKind",
    "Painted",
    "augment",
    "contact_sheet",
    "defect_region",
    "paint",
    "paste",
]
