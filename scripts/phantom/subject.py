"""The random make-up of one synthetic subject: body size, pose, spine proportions, muscle sizes and fat."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scripts.labels import LEFT_RIGHT_PAIRS
from scripts.phantom.tissues import SIDES

# Per-subject fat fraction ranges, kept inside the published ones (psoas 4-7 %, ES 10-20 %, multifidus
# 16-32 %) so that each muscle's mean stays inside them after the within-muscle grading.
PSOAS_FF = (0.047, 0.062)
ILIACUS_FF = (0.05, 0.12)
QUADRATUS_FF = (0.06, 0.15)
ERECTOR_FF = (0.11, 0.19)
MULTIFIDUS_FF = (0.17, 0.29)


@dataclass(frozen=True)
class Subject:
    """The random make-up of one synthetic subject (lengths in mm, angles in radians)."""

    body_scale: float  # size of the body inside its subcutaneous fat
    fat_thickness: float  # subcutaneous fat behind the spine; thicker at the sides and the front
    shift: tuple[float, float, float]  # world position of the subject frame's origin (on the vertebral axis)
    rotation: float  # about the S-I axis
    pitch: float  # height of one vertebra plus its disc
    crest_level: float  # vertebral level of the iliac crest
    muscle_area: dict[int, float]  # area factor per labelled muscle: build times left-right asymmetry
    fat_fraction: dict[int, float]  # per muscle tissue (labelled muscles and the multifidi)


def draw_subject(rng: np.random.Generator) -> Subject:
    """Draw body size, pose, spine proportions, muscle sizes and muscle fat fractions of one subject."""
    build = rng.uniform(0.85, 1.15)
    muscle_area = {}
    for left, right in LEFT_RIGHT_PAIRS:
        asymmetry = rng.uniform(-0.1, 0.1)
        muscle_area[left], muscle_area[right] = build * (1 + asymmetry / 2), build * (1 - asymmetry / 2)
    fat_fraction = {}
    for side in SIDES:
        for tissue, bounds in (
            (side.psoas, PSOAS_FF),
            (side.iliacus, ILIACUS_FF),
            (side.quadratus, QUADRATUS_FF),
            (side.erector, ERECTOR_FF),
            (side.multifidus, MULTIFIDUS_FF),
        ):
            fat_fraction[tissue] = rng.uniform(*bounds)
    return Subject(
        body_scale=rng.uniform(0.8, 1.25),  # slim to large adults
        fat_thickness=rng.uniform(4.0, 45.0),  # lean to obese
        shift=(rng.uniform(-5, 5), -8.0 + rng.uniform(-5, 5), rng.uniform(-5, 5)),  # -8: centres the body
        rotation=math.radians(rng.uniform(-5, 5)),
        pitch=rng.uniform(39.0, 44.0),
        crest_level=rng.uniform(3.4, 4.0),
        muscle_area=muscle_area,
        fat_fraction=fat_fraction,
    )
