"""The phantom's tissue map: tissue ids, which of them carry a label, and the canvas they are painted on.

A labelled muscle's tissue id is its label number (``scripts.labels``); every other tissue has an id of 100 or
more. The two multifidi have tissue ids of their own (their fat fraction is higher) and carry the erector spinae +
multifidus label of their side.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from scripts.labels import LABELS, MUSCLES
from scripts.phantom.shapes import Ellipse, Frame


class Tissue(IntEnum):
    """Tissues other than the labelled muscles; a labelled muscle's tissue id is its label number."""

    AIR = 0
    SUBCUTANEOUS_FAT = 101
    VISCERAL_FAT = 102
    BOWEL = 103  # bowel wall and solid contents
    OTHER_MUSCLE = 104  # abdominal wall, gluteal and any unlabelled muscle: muscle signal, background label
    KIDNEY = 105
    MARROW = 106
    DISC = 107
    CSF = 108
    LEFT_MULTIFIDUS = 109  # part of the left ES+M label with its own, higher fat fraction
    RIGHT_MULTIFIDUS = 110
    VESSEL = 111  # aorta, inferior vena cava and the iliac vessels
    BOWEL_FLUID = 112
    BOWEL_GAS = 113
    # Upper-abdominal organs, drawn from a real organ label map (``organ_map``).
    LIVER = 114
    SPLEEN = 115
    STOMACH = 116
    PANCREAS = 117  # also the adrenal glands: small solid organs
    LUNG = 118
    FASCIA = 119  # thoracolumbar fascia between quadratus lumborum and erector spinae: dark in every sequence
    INTERMUSCULAR_FAT = 120  # the fat plane between two adjacent muscles (``borders``)


def tissue_names() -> dict[int, str]:
    """Name of every tissue id of the tissue map: the labelled muscles under their label names, then the others."""
    return {
        **{muscle: LABELS[muscle] for muscle in MUSCLES},
        **{int(t): t.name.lower().replace("_", " ") for t in Tissue},
    }


# Tissue ids with the signal of skeletal muscle, labelled or not.
MUSCLE_TISSUES: tuple[int, ...] = (*MUSCLES, Tissue.OTHER_MUSCLE, Tissue.LEFT_MULTIFIDUS, Tissue.RIGHT_MULTIFIDUS)


def _label(name: str) -> int:
    return next(number for number, label_name in LABELS.items() if label_name == name)


@dataclass(frozen=True)
class Side:
    """One side of the subject: the sign of its world x and the tissue ids of its muscles."""

    sign: float
    psoas: int
    iliacus: int
    quadratus: int
    erector: int
    multifidus: int


def _side(name: str, sign: float, multifidus: Tissue) -> Side:
    muscles = ("psoas", "iliacus", "quadratus lumborum", "erector spinae + multifidus")
    return Side(sign, *(_label(f"{name} {muscle}") for muscle in muscles), int(multifidus))


SIDES = (_side("left", -1.0, Tissue.LEFT_MULTIFIDUS), _side("right", 1.0, Tissue.RIGHT_MULTIFIDUS))


def _label_table() -> np.ndarray:
    table = np.zeros(256, np.uint8)
    table[list(MUSCLES)] = MUSCLES
    for side in SIDES:
        table[side.multifidus] = side.erector
    return table


# LABEL_OF_TISSUE[tissue id] is the label the tissue carries (0 for unlabelled tissues).
LABEL_OF_TISSUE = _label_table()


class TissueMap:
    """Tissue id per voxel and a factor on each voxel's tissue fat fraction; later paint covers earlier."""

    def __init__(self, shape: tuple[int, int, int]):
        self.tissue = np.zeros(shape, np.uint8)
        self.fat_scale = np.ones(shape, np.float32)

    def fill(self, zs: slice, inside: np.ndarray, tissue: int, fat_scale: np.ndarray | float = 1.0) -> None:
        """Set ``tissue`` (and its fat-fraction factor) where ``inside`` is true within slab ``zs``."""
        self.tissue[:, :, zs][inside] = tissue
        self.fat_scale[:, :, zs][inside] = fat_scale

    def paint(self, frame: Frame, shape: Ellipse, tissue: int) -> None:
        """Fill a shape with a tissue of uniform fat fraction."""
        zs, distance = shape.distance(frame)
        self.fill(zs, distance <= 1, tissue)

    def paint_muscle(self, frame: Frame, shape: Ellipse, tissue: int, caudal_fat: np.ndarray | None = None) -> None:
        """Fill a shape with muscle whose fat fraction rises from 0.85x at the centre to 1.3x at the edge (mean
        1x), as fat gathers at the fascia; so the per-voxel truth has mean != median. ``caudal_fat`` is an extra
        factor per slice."""
        zs, distance = shape.distance(frame)
        inside = distance <= 1
        grading = 0.85 + 0.45 * distance**2
        if caudal_fat is not None:
            grading = grading * caudal_fat[zs].astype(np.float32)
        self.fill(zs, inside, tissue, grading[inside])


@dataclass(frozen=True)
class Painted:
    """A painted subject: its tissue map, the vertebral level of each slice and of the iliac crest, and whether it
    has a real pelvis (iliac bone from a label map), so that a pelvic field of view shows something real."""

    tissues: TissueMap
    level: np.ndarray
    crest_level: float
    pelvis: bool
