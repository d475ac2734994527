"""Synthetic lumbar Dixon MRI phantoms: reproducible test and demo data for the bundle.

A phantom is an axial stack from about T12/L1 down to S1. Array axes are RAS+ (axis 0 towards the subject's
right, axis 1 posterior to anterior, axis 2 inferior to superior) and the affine is diag(spacing) with the
volume centred on world (0, 0, 0). The images are the Dixon water and fat images and the in-phase (W + F) and
opposed-phase (|W - F|) images made from them, with a smooth B1-like bias field and Rician noise, in arbitrary
scanner units (subcutaneous fat about 1000). The label image holds the bundle's label map (``scripts.labels``):
left and right psoas, iliacus, quadratus lumborum and erector spinae + multifidus, background elsewhere.
Images and labels come from one tissue map, so a label always lies on muscle signal. The tissue map is written too
(``tissue.nii.gz``, one integer per tissue, names in ``truth.json``), so training can render the same anatomy with
other contrasts (``scripts.tissue_contrast``).

The anatomy is built in millimetres in a per-subject frame (shifted and rotated about the S-I axis), so any
grid over the same field of view shows the same subject. Muscle areas per vertebral level, fat fractions and
relative signals follow the design notes' facts for a realistic phantom.

    python -m scripts.phantom OUT --n 6 [--seed 0] [--shape 96 80 40] [--spacing 3.75 3.75 7.8]
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from enum import IntEnum
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from scripts.labels import LABELS, LEFT_RIGHT_PAIRS, MUSCLES, NUM_CLASSES

DEFAULT_SHAPE = (400, 320, 145)
DEFAULT_SPACING = (0.9375, 0.9375, 1.95)
IMAGES = ("inphase", "outphase", "water", "fat")
SIGNAL_SCALE = 1000.0  # in-phase intensity of subcutaneous fat before bias, arbitrary scanner units


class Tissue(IntEnum):
    """Tissues other than the labelled muscles; a labelled muscle's tissue id is its label number."""

    AIR = 0
    SUBCUTANEOUS_FAT = 101
    VISCERAL_FAT = 102
    BOWEL = 103
    OTHER_MUSCLE = 104  # abdominal wall and gluteal muscles: muscle signal, background label
    KIDNEY = 105
    MARROW = 106
    DISC = 107
    CSF = 108
    LEFT_MULTIFIDUS = 109  # part of the left ES+M label with its own, higher fat fraction
    RIGHT_MULTIFIDUS = 110


def tissue_names() -> dict[int, str]:
    """Name of every tissue id of the tissue map: the labelled muscles under their label names, then the others."""
    return {
        **{muscle: LABELS[muscle] for muscle in MUSCLES},
        **{int(t): t.name.lower().replace("_", " ") for t in Tissue},
    }


# Tissue ids with the signal of skeletal muscle, labelled or not.
MUSCLE_TISSUES: tuple[int, ...] = (*MUSCLES, Tissue.OTHER_MUSCLE, Tissue.LEFT_MULTIFIDUS, Tissue.RIGHT_MULTIFIDUS)


# (in-phase T2 TSE signal relative to subcutaneous fat, fat fraction) of the tissues with fixed properties.
TISSUE_SIGNAL: dict[Tissue, tuple[float, float]] = {
    Tissue.SUBCUTANEOUS_FAT: (1.0, 0.90),
    Tissue.VISCERAL_FAT: (0.95, 0.88),
    Tissue.BOWEL: (0.35, 0.05),
    Tissue.OTHER_MUSCLE: (0.17, 0.08),
    Tissue.KIDNEY: (1.1, 0.02),
    Tissue.MARROW: (0.6, 0.40),
    Tissue.DISC: (0.5, 0.02),
    Tissue.CSF: (2.0, 0.0),
}
MUSCLE_SIGNAL = 0.17
# Per-subject fat fraction ranges, kept inside the published ones (psoas 4-7 %, ES 10-20 %, multifidus
# 16-32 %) so that each muscle's mean stays inside them after the within-muscle grading.
PSOAS_FF = (0.047, 0.062)
ILIACUS_FF = (0.05, 0.12)
QUADRATUS_FF = (0.06, 0.15)
ERECTOR_FF = (0.11, 0.19)
MULTIFIDUS_FF = (0.17, 0.29)

# Profiles along the spine as (vertebral level, value) knots; level 0 is the T12/L1 disc, 1 L1/2, ... 5 L5/S1.
# Cross-sectional areas in cm² per side (Ivanac 2026 at the discs; multifidus ~2 -> ~6 cm² from L1 to L5).
PSOAS_AREA = ((-0.4, 0.0), (0.0, 1.5), (1.0, 4.4), (2.0, 9.9), (3.0, 14.6), (4.0, 17.75), (5.0, 15.75), (6.5, 14.0))
QUADRATUS_AREA = ((-1.0, 2.5), (1.0, 3.45), (2.0, 5.3), (3.0, 7.05))
ERECTOR_AREA = ((-1.0, 22.0), (3.0, 22.0), (4.0, 20.0), (5.0, 14.0), (6.5, 8.0))
MULTIFIDUS_AREA = ((0.5, 2.0), (4.5, 6.0), (6.5, 6.5))
ILIACUS_AREA = ((0.0, 0.0), (0.25, 2.0), (1.0, 7.0), (2.0, 13.0), (3.0, 16.0))  # levels below the iliac crest
# Positions in mm: vertebral body centre (lumbar lordosis, sacral tilt) and psoas relative to it.
SPINE_Y = ((-1.0, -4.0), (2.5, 4.0), (5.0, 0.0), (6.5, -12.0))
PSOAS_Y = ((0.0, -8.0), (2.0, -3.0), (4.0, 6.0), (5.0, 16.0), (5.6, 28.0), (6.5, 38.0))
SACRAL_ALA_WIDTH = ((5.0, 50.0), (5.5, 60.0), (6.5, 45.0))
# Iliac wing against levels below the crest: a bone plate from the sacroiliac joint towards the front.
WING_LENGTH = ((0.0, 10.0), (0.15, 30.0), (0.6, 50.0), (3.0, 55.0))
WING_X = ((0.0, 100.0), (0.6, 92.0), (3.0, 88.0))
WING_Y = ((0.0, -22.0), (0.6, -8.0), (3.0, -5.0))
GLUTEUS_THICKNESS = ((0.0, 8.0), (1.0, 16.0), (3.0, 26.0))
WING_ANGLE = math.radians(40.0)
T12_L1_Z = 115.0  # mm above the field-of-view centre
DISC_HALF_LEVEL = 0.12  # half a disc's height, in levels


@dataclass(frozen=True)
class Side:
    """One side of the subject: the sign of its world x and the tissue ids of its muscles."""

    sign: float
    psoas: int
    iliacus: int
    quadratus: int
    erector: int
    multifidus: int


def _label(name: str) -> int:
    return next(number for number, label_name in LABELS.items() if label_name == name)


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


LABEL_OF_TISSUE = _label_table()


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


def centred_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """RAS+ affine diag(spacing) whose voxel centres are symmetric about world (0, 0, 0)."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = -0.5 * (np.asarray(shape) - 1) * np.asarray(spacing, float)
    return affine


def world_axes(shape: Sequence[int], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x, y, z (mm) of the voxel centres along each array axis of an axis-aligned affine."""
    return tuple(affine[i, 3] + affine[i, i] * np.arange(shape[i]) for i in range(3))


@dataclass(frozen=True)
class Frame:
    """Voxel centres in the subject's frame: u to the subject's right and v anterior, both (nx, ny, 1)
    float32 mm; z (nz,) mm upwards and the vertebral level of each slice."""

    u: np.ndarray
    v: np.ndarray
    z: np.ndarray
    level: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.u.shape[0], self.u.shape[1], self.z.size)

    def mirrored(self, sign: float) -> Frame:
        """The frame with u pointing laterally on the side of ``sign``, so one description serves both sides."""
        return replace(self, u=self.u * np.float32(sign))


def anatomy_frame(shape: Sequence[int], affine: np.ndarray, subject: Subject) -> Frame:
    """Undo the subject's shift and S-I rotation: world = R(rotation) * anatomy + shift."""
    x, y, z = (axis - offset for axis, offset in zip(world_axes(shape, affine), subject.shift, strict=True))
    cos, sin = math.cos(subject.rotation), math.sin(subject.rotation)
    u = cos * x[:, None] + sin * y[None, :]
    v = -sin * x[:, None] + cos * y[None, :]
    level = (T12_L1_Z - z) / subject.pitch
    return Frame(u[..., None].astype(np.float32), v[..., None].astype(np.float32), z, level)


def profile(level: np.ndarray, knots: Sequence[tuple[float, float]]) -> np.ndarray:
    """Piecewise-linear value per slice through (level, value) knots, constant beyond the ends."""
    positions, values = zip(*knots, strict=True)
    return np.interp(level, positions, values)


def semi_axes(area_cm2: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Semi-axes (mm) of an ellipse of the given area whose v semi-axis is ``aspect`` times its u one."""
    a = np.sqrt(100.0 * area_cm2 / (math.pi * aspect))
    return a, aspect * a


@dataclass(frozen=True)
class Ellipse:
    """An axial (super)elliptic cross-section per slice in the subject frame (mm); slices where a semi-axis is
    not positive hold none of it. ``angle`` turns the a axis from +u towards +v."""

    cx: np.ndarray | float
    cy: np.ndarray | float
    a: np.ndarray | float
    b: np.ndarray | float
    angle: float = 0.0
    power: float = 2.0

    def distance(self, frame: Frame) -> tuple[slice, np.ndarray]:
        """The slab of slices that holds the shape and, over it, |u'/a|^p + |v'/b|^p: <= 1 inside, nan in
        slices without the shape."""
        cx, cy, a, b = (
            np.broadcast_to(np.asarray(p, np.float32), frame.z.shape) for p in (self.cx, self.cy, self.a, self.b)
        )
        present = (a > 0) & (b > 0)
        where = np.flatnonzero(present)
        if where.size == 0:
            return slice(0, 0), np.empty(frame.shape[:2] + (0,), np.float32)
        zs = slice(where[0], where[-1] + 1)
        a, b = (np.where(present, axis, np.float32(np.nan))[zs] for axis in (a, b))
        du, dv = frame.u - cx[zs], frame.v - cy[zs]
        if self.angle:
            cos, sin = math.cos(self.angle), math.sin(self.angle)
            du, dv = cos * du + sin * dv, cos * dv - sin * du
        if self.power == 2.0:
            return zs, (du / a) ** 2 + (dv / b) ** 2
        return zs, np.abs(du / a) ** self.power + np.abs(dv / b) ** self.power


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
class Spine:
    """Per-slice vertebral geometry (mm) that the other structures are placed against."""

    y: np.ndarray  # vertebral body centre
    half_width: np.ndarray
    half_depth: np.ndarray

    @property
    def canal_y(self) -> np.ndarray:
        return self.y - self.half_depth - 10.0


def spine_geometry(level: np.ndarray) -> Spine:
    """Vertebral bodies widening caudally (about 44 mm at L1 to 51 mm at L5) on a lordotic curve."""
    lumbar = np.clip(level, 0.0, 5.0)
    return Spine(y=profile(level, SPINE_Y), half_width=21.0 + 1.5 * lumbar, half_depth=16.0 + 0.4 * lumbar)


def iliac_wing(level: np.ndarray, spine: Spine, crest_level: float) -> Ellipse:
    """One iliac wing in the side's mirrored frame: a thin plate below the crest, lengthening caudally."""
    below = level - crest_level
    length = np.where(below > 0, profile(below, WING_LENGTH), 0.0)
    return Ellipse(profile(below, WING_X), spine.y + profile(below, WING_Y), length, 6.0, angle=WING_ANGLE)


def wing_offset(wing: Ellipse, across: np.ndarray | float, along: float) -> tuple[np.ndarray, np.ndarray]:
    """A point ``across`` mm from the wing's mid-plane towards its inner (anteromedial) side and ``along`` mm
    along the wing towards the front."""
    cos, sin = math.cos(WING_ANGLE), math.sin(WING_ANGLE)
    return wing.cx - sin * across + cos * along, wing.cy + cos * across + sin * along


def visceral_texture(frame: Frame, rng: np.random.Generator, waves: int = 6) -> np.ndarray:
    """Smooth random blobs of about unit variance (sums of products of three cosines along random orthogonal
    axes) that split the abdomen into visceral fat and bowel."""
    texture = np.zeros(frame.shape, np.float32)
    for _ in range(waves):
        direction = rng.uniform(0, 2 * math.pi)
        along = math.cos(direction) * frame.u + math.sin(direction) * frame.v
        across = math.cos(direction) * frame.v - math.sin(direction) * frame.u
        k_along, k_across, k_z = (
            2 * math.pi / rng.uniform(low, high) for low, high in ((50, 110), (50, 110), (60, 150))
        )
        in_plane = np.cos(k_along * along + rng.uniform(0, 6.3)) * np.cos(k_across * across + rng.uniform(0, 6.3))
        through_plane = np.cos(k_z * frame.z + rng.uniform(0, 6.3)) * math.sqrt(8 / waves)
        texture += in_plane * through_plane.astype(np.float32)
    return texture


def paint_body(
    tissues: TissueMap, frame: Frame, spine: Spine, subject: Subject, rng: np.random.Generator
) -> np.ndarray:
    """Subcutaneous fat, an abdominal wall of unlabelled muscle and visceral fat mixed with bowel inside it;
    returns the body mask (everything outside is air)."""
    hips = np.clip((frame.level - subject.crest_level + 0.3) / 1.5, 0.0, 1.0)
    hips = hips * hips * (3 - 2 * hips)  # smoothstep: the flanks curve out into the hips
    a_in, b_in = subject.body_scale * (125.0 + 25.0 * hips), subject.body_scale * 92.0
    cy_in = spine.y - 86.0 + b_in  # the back lies just behind the spinous processes
    fat = subject.fat_thickness
    outer = Ellipse(0.0, cy_in + 0.1 * fat, a_in + 1.3 * fat, b_in + 1.1 * fat, power=2.5)
    inner = Ellipse(0.0, cy_in, a_in, b_in, power=2.5)
    wall = Ellipse(0.0, cy_in, a_in - 12.0, b_in - 12.0, power=2.5)
    everywhere = slice(None)  # these shapes exist in every slice
    body = outer.distance(frame)[1] <= 1
    tissues.fill(everywhere, body, Tissue.SUBCUTANEOUS_FAT)
    inside = inner.distance(frame)[1] <= 1
    # Fat more likely towards the back (retroperitoneum), bowel towards the front.
    fatty = visceral_texture(frame, rng) > ((frame.v - spine.y.astype(np.float32)) / 120.0)
    tissues.fill(everywhere, inside & fatty, Tissue.VISCERAL_FAT)
    tissues.fill(everywhere, inside & ~fatty, Tissue.BOWEL)
    lateral = frame.v > (spine.y - 40.0).astype(np.float32)  # the obliques end at the thoracolumbar fascia
    tissues.fill(everywhere, inside & (wall.distance(frame)[1] > 1) & lateral, Tissue.OTHER_MUSCLE)
    return body


def paint_kidneys(tissues: TissueMap, frame: Frame, spine: Spine, subject: Subject) -> None:
    """Kidneys (ellipsoids about 11 cm long) anterolateral to the quadratus lumborum, the left one higher."""
    for side, centre_level in zip(SIDES, (1.35, 1.6), strict=True):
        centre_z = T12_L1_Z - centre_level * subject.pitch
        extent = np.sqrt(np.clip(1.0 - ((frame.z - centre_z) / 55.0) ** 2, 0.0, 1.0))
        kidney = Ellipse(78.0, spine.y + 5.0, 28.0 * extent, 19.0 * extent, angle=math.radians(-35.0))
        tissues.paint(frame.mirrored(side.sign), kidney, Tissue.KIDNEY)


def paint_muscles(tissues: TissueMap, frame: Frame, spine: Spine, subject: Subject, side: Side) -> None:
    """The side's gluteus (unlabelled), erector spinae, multifidus, quadratus lumborum, iliacus and psoas, in
    ``frame`` mirrored to that side; where they touch, the later one keeps the voxel."""
    level = frame.level
    wing = iliac_wing(level, spine, subject.crest_level)
    glute_b = np.where(wing.a > 0, profile(level - subject.crest_level, GLUTEUS_THICKNESS), 0.0)
    glute_cx, glute_cy = wing_offset(wing, -(6.0 + glute_b), 0.0)
    tissues.paint(frame, Ellipse(glute_cx, glute_cy, 0.9 * wing.a, glute_b, angle=WING_ANGLE), Tissue.OTHER_MUSCLE)

    size = subject.muscle_area
    mf_a, mf_b = semi_axes(size[side.erector] * profile(level, MULTIFIDUS_AREA), 1.3)
    es_a, es_b = semi_axes(size[side.erector] * profile(level, ERECTOR_AREA), 0.6)
    erector = Ellipse(4.0 + 2 * mf_a + 0.8 * es_a, spine.y - 60.0, es_a, es_b)
    tissues.paint_muscle(frame, erector, side.erector)
    multifidus = Ellipse(4.0 + mf_a, spine.y - 62.0, mf_a, mf_b)  # beside the spinous process, on the lamina
    caudal_fat = 0.85 + 0.3 * np.clip(level / 5.5, 0.0, 1.0)  # multifidus fat is highest at L5
    tissues.paint_muscle(frame, multifidus, side.multifidus, caudal_fat)

    above_crest = level < subject.crest_level
    ql_a, ql_b = semi_axes(size[side.quadratus] * profile(level, QUADRATUS_AREA) * above_crest, 0.45)
    quadratus = Ellipse(64.0 + 0.5 * ql_a, spine.y - 28.0, ql_a, ql_b, angle=math.radians(20.0))
    tissues.paint_muscle(frame, quadratus, side.quadratus)

    il_area = size[side.iliacus] * profile(level - subject.crest_level, ILIACUS_AREA) * (wing.a > 0)
    il_a = 0.7 * wing.a
    il_b = np.divide(100.0 * il_area, math.pi * il_a, out=np.zeros_like(il_a), where=il_a > 0)
    il_cx, il_cy = wing_offset(wing, 6.0 + il_b, 10.0)  # in the iliac fossa, on the wing's inner surface
    tissues.paint_muscle(frame, Ellipse(il_cx, il_cy, il_a, il_b, angle=WING_ANGLE), side.iliacus)

    ps_a, ps_b = semi_axes(size[side.psoas] * profile(level, PSOAS_AREA), 1.1)
    psoas = Ellipse(spine.half_width + ps_a + 2.0, spine.y + profile(level, PSOAS_Y), ps_a, ps_b)
    tissues.paint_muscle(frame, psoas, side.psoas)


def paint_spine(tissues: TissueMap, frame: Frame, spine: Spine) -> None:
    """Posterior arch and spinous processes, vertebral bodies and sacrum (marrow), discs and the CSF-filled
    canal, painted over any muscle they touch."""
    level = frame.level
    nearest = np.round(level)
    disc = (np.abs(level - nearest) < DISC_HALF_LEVEL) & (nearest >= 0) & (nearest <= 5)
    sacral = level > 5.0 + DISC_HALF_LEVEL
    canal_y = spine.canal_y
    tissues.paint(frame, Ellipse(0.0, canal_y, 21.0, 15.0), Tissue.MARROW)
    between_processes = (np.abs(level - nearest) < 0.2) & ~sacral
    top, tip = canal_y - 12.0, spine.y - np.where(sacral, 72.0, 85.0)
    spinous = Ellipse(0.0, (top + tip) / 2, np.where(between_processes, 0.0, 3.5), (top - tip) / 2)
    tissues.paint(frame, spinous, Tissue.MARROW)
    tissues.paint(
        frame, Ellipse(0.0, spine.y - 8.0, np.where(sacral, profile(level, SACRAL_ALA_WIDTH), 0.0), 16.0), Tissue.MARROW
    )
    tissues.paint(frame, Ellipse(0.0, spine.y, np.where(disc, 0.0, spine.half_width), spine.half_depth), Tissue.MARROW)
    tissues.paint(frame, Ellipse(0.0, spine.y, np.where(disc, spine.half_width, 0.0), spine.half_depth), Tissue.DISC)
    tissues.paint(frame, Ellipse(0.0, canal_y, np.where(sacral, 9.0, 11.0), np.where(sacral, 5.0, 8.0)), Tissue.CSF)


def paint_tissues(frame: Frame, subject: Subject, rng: np.random.Generator) -> TissueMap:
    """The subject's tissue map, drawn from the outside in so that bone and CSF cover muscle and muscle
    covers fat; voxels outside the body are air."""
    tissues = TissueMap(frame.shape)
    spine = spine_geometry(frame.level)
    body = paint_body(tissues, frame, spine, subject, rng)
    paint_kidneys(tissues, frame, spine, subject)
    for side in SIDES:
        mirrored = frame.mirrored(side.sign)
        paint_muscles(tissues, mirrored, spine, subject, side)
        tissues.paint(mirrored, iliac_wing(frame.level, spine, subject.crest_level), Tissue.MARROW)
    paint_spine(tissues, frame, spine)
    tissues.tissue[~body] = Tissue.AIR
    return tissues


def tissue_tables(subject: Subject) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables from tissue id to relative in-phase signal and to fat fraction."""
    signal, fat_fraction = np.zeros(256, np.float32), np.zeros(256, np.float32)
    for tissue, (tissue_signal, tissue_fat) in TISSUE_SIGNAL.items():
        signal[tissue], fat_fraction[tissue] = tissue_signal, tissue_fat
    for tissue, tissue_fat in subject.fat_fraction.items():
        signal[tissue], fat_fraction[tissue] = MUSCLE_SIGNAL, tissue_fat
    return signal, fat_fraction


def bias_field(shape: Sequence[int], affine: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative B1-like field in scanner coordinates: a broad bump plus linear gradients,
    scaled into a random range within 0.6-1.1."""
    x, y, z = world_axes(shape, affine)
    centre_x, centre_y = rng.uniform(-100, 100, 2)
    width = rng.uniform(80, 160)
    bump = rng.choice((-1.0, 1.0)) * np.exp(
        -((x[:, None] - centre_x) ** 2 + (y[None, :] - centre_y) ** 2) / (2 * width**2)
    )
    gradient = rng.uniform(-1, 1, 3) / 300.0  # up to about one bump height across the field of view
    in_plane = bump + gradient[0] * x[:, None] + gradient[1] * y[None, :]
    through_plane = gradient[2] * z
    low, high = rng.uniform(0.6, 0.75), rng.uniform(0.95, 1.1)
    span = np.ptp(in_plane) + np.ptp(through_plane)
    in_plane = (low + (high - low) * (in_plane - in_plane.min()) / span).astype(np.float32)
    through_plane = ((high - low) * (through_plane - through_plane.min()) / span).astype(np.float32)
    return in_plane[:, :, None] + through_plane


def rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of standard deviation ``sigma`` per channel."""
    real = image + np.float32(sigma) * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = np.float32(sigma) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.hypot(real, imaginary)


def muscle_truth(label: np.ndarray, fat_fraction: np.ndarray, spacing: Sequence[float]) -> dict[str, dict]:
    """Per muscle label ("1".."8"): name, voxel count, volume (mL) and mean noise-free fat fraction."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(label.ravel(), minlength=NUM_CLASSES)
    fat_sums = np.bincount(label.ravel(), weights=fat_fraction.ravel(), minlength=NUM_CLASSES)
    return {
        str(muscle): {
            "name": LABELS[muscle],
            "voxels": int(counts[muscle]),
            "volume_ml": int(counts[muscle]) * voxel_ml,
            "mean_fat_fraction": float(fat_sums[muscle] / counts[muscle]) if counts[muscle] else None,
        }
        for muscle in MUSCLES
    }


@dataclass(eq=False)
class Phantom:
    """One synthetic case: Dixon images (float32, arbitrary units), label map (uint8), tissue map (uint8, ids of
    ``tissue_names``), noise-free per-voxel fat fraction F/(W+F) (float32, 0 outside the body), RAS+ affine and
    the truth written to truth.json."""

    water: np.ndarray
    fat: np.ndarray
    inphase: np.ndarray
    outphase: np.ndarray
    label: np.ndarray
    tissue: np.ndarray
    fat_fraction: np.ndarray
    affine: np.ndarray
    truth: dict


def _checked_grid(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    shape, spacing = tuple(int(n) for n in shape), tuple(float(s) for s in spacing)
    if len(shape) != 3 or len(spacing) != 3 or min(shape) < 1 or min(spacing) <= 0:
        raise ValueError(f"need 3 positive sizes and 3 positive spacings, got shape {shape} and spacing {spacing}")
    return shape, spacing


def make_phantom(
    shape: Sequence[int] = DEFAULT_SHAPE, spacing: Sequence[float] = DEFAULT_SPACING, seed: int = 0
) -> Phantom:
    """Generate one synthetic lumbar Dixon case on a grid of ``shape`` voxels of ``spacing`` mm (RAS+, centred
    on world (0, 0, 0)); the same seed gives the same arrays."""
    shape, spacing = _checked_grid(shape, spacing)
    rng = np.random.default_rng(seed)
    subject = draw_subject(rng)
    affine = centred_affine(shape, spacing)
    tissues = paint_tissues(anatomy_frame(shape, affine, subject), subject, rng)
    signal_table, fat_table = tissue_tables(subject)
    fat_fraction = np.minimum(fat_table[tissues.tissue] * tissues.fat_scale, np.float32(1.0))
    signal = np.float32(SIGNAL_SCALE) * signal_table[tissues.tissue] * bias_field(shape, affine, rng)
    # Noise of a good 3T Dixon exam; much more and magnitude noise visibly biases the low fat fraction of lean
    # muscle upwards (about +3 points in psoas at 1 % of the fat signal), a bias the truth would not share.
    sigma = SIGNAL_SCALE * rng.uniform(0.001, 0.003)
    water = rician(signal * (1 - fat_fraction), sigma, rng)
    fat = rician(signal * fat_fraction, sigma, rng)
    label = LABEL_OF_TISSUE[tissues.tissue]
    truth = {
        **muscle_truth(label, fat_fraction, spacing),
        "shape": list(shape),
        "spacing": list(spacing),
        "seed": seed,
        "tissues": {str(tissue): name for tissue, name in tissue_names().items()},
    }
    return Phantom(water, fat, water + fat, np.abs(water - fat), label, tissues.tissue, fat_fraction, affine, truth)


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)  # scanner coordinates
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def write_phantom(phantom: Phantom, case_dir: str | Path) -> None:
    """Write inphase/outphase/water/fat.nii.gz (float32), label.nii.gz and tissue.nii.gz (uint8) and truth.json to
    ``case_dir``."""
    case_dir = Path(case_dir)
    case_dir.mkdir(parents=True, exist_ok=True)
    for name in IMAGES:
        _save(getattr(phantom, name), phantom.affine, case_dir / f"{name}.nii.gz")
    _save(phantom.label, phantom.affine, case_dir / "label.nii.gz")
    _save(phantom.tissue, phantom.affine, case_dir / "tissue.nii.gz")
    (case_dir / "truth.json").write_text(json.dumps(phantom.truth, indent=2), encoding="utf-8")


def validation_count(n: int) -> int:
    """Cases held out for validation: a third of ``n``, at least one, leaving at least one to train on.

    A single case (``n=1``) is a sample scan: it is listed under ``testing`` only.
    """
    if n < 1:
        raise ValueError(f"a cohort needs at least 1 case, got n={n}")
    return 0 if n == 1 else max(1, round(n / 3))


def datalist_entry(case_id: str, with_label: bool = True) -> dict[str, str]:
    """A decathlon-style entry with paths relative to the dataset folder; ``image`` is the in-phase image. Labelled
    entries also name the tissue map, which the robust training recipe renders with random contrasts."""
    entry = {"id": case_id, "image": f"{case_id}/inphase.nii.gz"}
    entry.update({name: f"{case_id}/{name}.nii.gz" for name in ("outphase", "water", "fat")})
    if with_label:
        entry["label"] = f"{case_id}/label.nii.gz"
        entry["tissue"] = f"{case_id}/tissue.nii.gz"
    return entry


def _write_case(case_dir: Path, shape: Sequence[int], spacing: Sequence[float], seed: int) -> None:
    write_phantom(make_phantom(shape, spacing, seed=seed), case_dir)


def make_cohort(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    workers: int = 1,
) -> Path:
    """Write ``n`` phantoms (sub01, sub02, ...; case i uses seed ``seed * 1000 + i``) and datalist.json: the
    last third for validation, the first ones for training, and the validation cases without label for
    testing (a single case goes to testing only). ``workers`` processes write cases in parallel. Returns
    the datalist path."""
    n_validation = validation_count(n)
    out_dir = Path(out_dir)
    case_ids = [f"sub{i:02d}" for i in range(1, n + 1)]
    jobs = [(out_dir / case_id, shape, spacing, seed * 1000 + i) for i, case_id in enumerate(case_ids, start=1)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for _ in tqdm(pool.map(_write_case, *zip(*jobs)), total=n, desc="phantoms", unit="case"):
            pass
    if n == 1:
        datalist = {"testing": [datalist_entry(case_ids[0], with_label=False)]}
    else:
        training, validation = case_ids[: n - n_validation], case_ids[n - n_validation :]
        datalist = {
            "training": [datalist_entry(case_id) for case_id in training],
            "validation": [datalist_entry(case_id) for case_id in validation],
            "testing": [datalist_entry(case_id, with_label=False) for case_id in validation],
        }
    path = out_dir / "datalist.json"
    path.write_text(json.dumps(datalist, indent=2), encoding="utf-8")
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.phantom",
        description="Write a cohort of synthetic lumbar Dixon MRI phantoms with labels and a MONAI datalist.",
    )
    parser.add_argument("out", type=Path, help="output folder (created); receives subNN/ and datalist.json")
    parser.add_argument("--n", type=int, default=6, help="number of cases; 1 makes a testing-only sample (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed; case i uses seed*1000+i (default 0)")
    parser.add_argument("--shape", type=int, nargs=3, default=DEFAULT_SHAPE, metavar=("X", "Y", "Z"))
    parser.add_argument("--spacing", type=float, nargs=3, default=DEFAULT_SPACING, metavar=("X", "Y", "Z"))
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="parallel processes")
    args = parser.parse_args(argv)
    try:
        validation_count(args.n)
        _checked_grid(args.shape, args.spacing)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    path = make_cohort(args.out, args.n, seed=args.seed, shape=args.shape, spacing=args.spacing, workers=args.workers)
    print(f"wrote {args.n} phantoms and {path}")


if __name__ == "__main__":
    main()
