"""The body around the lumbar muscles: skin and fat, abdominal wall, bowel, kidneys, great vessels and the spine.

Everything is placed per axial slice against the spine (``Spine``) and the inner outline of the trunk
(``Torso``), which either the procedural phantom derives from the vertebral level or the anatomy phantom measures
from a real muscle label map. The structures the network is known to confuse with muscles (bowel loops, kidneys,
aorta and vena cava, the abdominal wall) are the "confusers"; ``confusers=False`` leaves visceral fat in their
place, for the ablation of docs/README.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scripts.phantom.shapes import Ellipse, Frame, profile
from scripts.phantom.subject import Subject
from scripts.phantom.tissues import SIDES, Tissue, TissueMap

# Positions in mm against the vertebral level (0 the T12/L1 disc, 5 L5/S1): vertebral body centre (lumbar
# lordosis, sacral tilt).
SPINE_Y = ((-1.0, -4.0), (2.5, 4.0), (5.0, 0.0), (6.5, -12.0))
SACRAL_ALA_WIDTH = ((5.0, 50.0), (5.5, 60.0), (6.5, 45.0))
# Iliac wing against levels below the crest: a bone plate from the sacroiliac joint towards the front.
WING_LENGTH = ((0.0, 10.0), (0.15, 30.0), (0.6, 50.0), (3.0, 55.0))
WING_X = ((0.0, 100.0), (0.6, 92.0), (3.0, 88.0))
WING_Y = ((0.0, -22.0), (0.6, -8.0), (3.0, -5.0))
WING_ANGLE = math.radians(40.0)
DISC_HALF_LEVEL = 0.12  # half a disc's height, in levels
AORTIC_BIFURCATION = 4.0  # level of the aortic bifurcation (L4); the vena cava forms a little lower
CAVAL_CONFLUENCE = 4.6


@dataclass(frozen=True)
class Spine:
    """Per-slice vertebral geometry (mm, subject frame) that the other structures are placed against."""

    y: np.ndarray  # vertebral body centre
    half_width: np.ndarray
    half_depth: np.ndarray
    tip_y: np.ndarray  # tip of the spinous process

    @property
    def canal_y(self) -> np.ndarray:
        return self.y - self.half_depth - 10.0


def spine_geometry(level: np.ndarray, y: np.ndarray | None = None) -> Spine:
    """Vertebral bodies widening caudally (about 44 mm at L1 to 51 mm at L5) on a lordotic curve, or centred at
    ``y`` per slice where given; spinous processes about 85 mm behind the body centre (72 at the sacrum)."""
    lumbar = np.clip(level, 0.0, 5.0)
    y = profile(level, SPINE_Y) if y is None else y
    tip = y - np.where(level > 5.0 + DISC_HALF_LEVEL, 72.0, 85.0)
    return Spine(y=y, half_width=21.0 + 1.5 * lumbar, half_depth=16.0 + 0.4 * lumbar, tip_y=tip)


@dataclass(frozen=True)
class Torso:
    """The inner outline of the trunk per slice (inside the subcutaneous fat): a superellipse centred at
    ``(0, cy)`` with semi-axes ``a`` (across) and ``b`` (front to back)."""

    cy: np.ndarray
    a: np.ndarray
    b: np.ndarray


def hip_widening(level: np.ndarray, crest_level: float) -> np.ndarray:
    """0 above the iliac crest rising smoothly to 1 below it: the flanks curve out into the hips."""
    hips = np.clip((level - crest_level + 0.3) / 1.5, 0.0, 1.0)
    return hips * hips * (3 - 2 * hips)


def torso_geometry(level: np.ndarray, spine: Spine, subject: Subject) -> Torso:
    """The procedural trunk: about 25 cm wide and 18 cm deep inside the fat, the back just behind the spinous
    processes, scaled by the subject's body size."""
    a = subject.body_scale * (125.0 + 25.0 * hip_widening(level, subject.crest_level))
    b = np.full_like(a, subject.body_scale * 92.0)
    return Torso(cy=spine.y - 86.0 + b, a=a, b=b)


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


def smooth_texture(frame: Frame, rng: np.random.Generator, waves: int = 6, scale: float = 1.0) -> np.ndarray:
    """Smooth random blobs of about unit variance (sums of products of three cosines along random orthogonal
    axes, wavelengths ``scale`` times 50-110 mm in-plane and 60-150 mm along z)."""
    texture = np.zeros(frame.shape, np.float32)
    for _ in range(waves):
        direction = rng.uniform(0, 2 * math.pi)
        along = math.cos(direction) * frame.u + math.sin(direction) * frame.v
        across = math.cos(direction) * frame.v - math.sin(direction) * frame.u
        k_along, k_across, k_z = (
            2 * math.pi / (scale * rng.uniform(low, high)) for low, high in ((50, 110), (50, 110), (60, 150))
        )
        in_plane = np.cos(k_along * along + rng.uniform(0, 6.3)) * np.cos(k_across * across + rng.uniform(0, 6.3))
        through_plane = np.cos(k_z * frame.z + rng.uniform(0, 6.3)) * math.sqrt(8 / waves)
        texture += in_plane * through_plane.astype(np.float32)
    return texture


def paint_body(
    tissues: TissueMap,
    frame: Frame,
    spine: Spine,
    torso: Torso,
    subject: Subject,
    rng: np.random.Generator,
    confusers: bool = True,
) -> np.ndarray:
    """Subcutaneous fat around the trunk; inside it an abdominal wall of unlabelled muscle and visceral fat mixed
    with bowel loops of three kinds of content (solid, fluid, gas); returns the body mask (outside is air)."""
    fat = subject.fat_thickness
    outer = Ellipse(0.0, torso.cy + 0.1 * fat, torso.a + 1.3 * fat, torso.b + 1.1 * fat, power=2.5)
    inner = Ellipse(0.0, torso.cy, torso.a, torso.b, power=2.5)
    wall = Ellipse(0.0, torso.cy, torso.a - 12.0, torso.b - 12.0, power=2.5)
    everywhere = slice(None)  # these shapes exist in every slice
    body = outer.distance(frame)[1] <= 1
    tissues.fill(everywhere, body, Tissue.SUBCUTANEOUS_FAT)
    inside = inner.distance(frame)[1] <= 1
    tissues.fill(everywhere, inside, Tissue.VISCERAL_FAT)
    if not confusers:
        return body
    # Fat more likely towards the back (retroperitoneum), bowel towards the front.
    fatty = smooth_texture(frame, rng) > ((frame.v - spine.y.astype(np.float32)) / 120.0)
    bowel = inside & ~fatty
    # About 5 % of the bowel each fluid and gas: much more bright fluid and the brightest tissue of the scan is no
    # longer subcutaneous fat, which the fat/water swap check (muscle_metrics) and real abdomens rely on.
    contents = smooth_texture(frame, rng, scale=0.5)
    tissues.fill(everywhere, bowel, Tissue.BOWEL)
    tissues.fill(everywhere, bowel & (contents > 1.6), Tissue.BOWEL_FLUID)
    tissues.fill(everywhere, bowel & (contents < -1.6), Tissue.BOWEL_GAS)
    lateral = frame.v > (spine.y - 40.0).astype(np.float32)  # the obliques end at the thoracolumbar fascia
    tissues.fill(everywhere, inside & (wall.distance(frame)[1] > 1) & lateral, Tissue.OTHER_MUSCLE)
    return body


def paint_kidneys(
    tissues: TissueMap, frame: Frame, centres: tuple[tuple[float, float, float], tuple[float, float, float]]
) -> None:
    """Kidneys (ellipsoids about 11 cm long, tilted 35 degrees) centred at (lateral u, v, z) per side, left then
    right, in each side's mirrored frame."""
    for side, (centre_u, centre_v, centre_z) in zip(SIDES, centres, strict=True):
        extent = np.sqrt(np.clip(1.0 - ((frame.z - centre_z) / 55.0) ** 2, 0.0, 1.0))
        kidney = Ellipse(centre_u, centre_v, 28.0 * extent, 19.0 * extent, angle=math.radians(-35.0))
        tissues.paint(frame.mirrored(side.sign), kidney, Tissue.KIDNEY)


def procedural_kidney_centres(spine: Spine, frame: Frame, top_z: float, pitch: float) -> tuple:
    """Kidneys anterolateral to the quadratus lumborum at L1-L2, the left one higher."""
    centres = []
    for centre_level in (1.35, 1.6):
        centre_z = top_z - centre_level * pitch
        centre_v = float(np.interp(centre_z, frame.z, spine.y)) + 5.0
        centres.append((78.0, centre_v, centre_z))
    return tuple(centres)


def paint_vessels(tissues: TissueMap, frame: Frame, spine: Spine) -> None:
    """Aorta in front of the vertebral bodies, left of the midline, dividing at L4 into the common iliac arteries;
    inferior vena cava to its right, formed a little lower from the common iliac veins. Both run along the
    psoas' medial border, where the network must not take them for muscle."""
    level = frame.level
    front = spine.y + spine.half_depth
    above = level < AORTIC_BIFURCATION
    tissues.paint(
        frame, Ellipse(-14.0, front + 12.0, np.where(above, 11.0, 0.0), np.where(above, 11.0, 0.0)), Tissue.VESSEL
    )
    above = level < CAVAL_CONFLUENCE
    tissues.paint(
        frame, Ellipse(20.0, front + 9.0, np.where(above, 13.0, 0.0), np.where(above, 9.0, 0.0)), Tissue.VESSEL
    )
    for side in SIDES:
        for start, behind in ((AORTIC_BIFURCATION, 0.0), (CAVAL_CONFLUENCE, -8.0)):
            below = np.clip(level - start, 0.0, None)
            radius = np.where(level >= start, 6.5, 0.0)
            iliac = Ellipse(12.0 + 35.0 * below, front + 10.0 + behind + 10.0 * below, radius, radius)
            tissues.paint(frame.mirrored(side.sign), iliac, Tissue.VESSEL)


def paint_spine(tissues: TissueMap, frame: Frame, spine: Spine, slices: slice = slice(None)) -> None:
    """Posterior arch and spinous processes, vertebral bodies and sacrum (marrow), discs and the CSF-filled
    canal, within ``slices`` only (an anatomy phantom whose map has a real sacrum stops above it)."""
    level = frame.level
    keep = np.zeros(level.shape, bool)
    keep[slices] = True
    nearest = np.round(level)
    disc = (np.abs(level - nearest) < DISC_HALF_LEVEL) & (nearest >= 0) & (nearest <= 5)
    sacral = level > 5.0 + DISC_HALF_LEVEL
    canal_y = spine.canal_y

    def where(condition: np.ndarray, size: np.ndarray | float) -> np.ndarray:
        return np.where(condition & keep, size, 0.0)

    tissues.paint(frame, Ellipse(0.0, canal_y, where(True, 21.0), 15.0), Tissue.MARROW)
    between_processes = (np.abs(level - nearest) < 0.2) & ~sacral
    top, tip = canal_y - 12.0, spine.tip_y
    spinous = Ellipse(0.0, (top + tip) / 2, where(~between_processes, 3.5), (top - tip) / 2)
    tissues.paint(frame, spinous, Tissue.MARROW)
    ala = Ellipse(0.0, spine.y - 8.0, where(sacral, profile(level, SACRAL_ALA_WIDTH)), 16.0)
    tissues.paint(frame, ala, Tissue.MARROW)
    tissues.paint(frame, Ellipse(0.0, spine.y, where(~disc, spine.half_width), spine.half_depth), Tissue.MARROW)
    tissues.paint(frame, Ellipse(0.0, spine.y, where(disc, spine.half_width), spine.half_depth), Tissue.DISC)
    canal = Ellipse(0.0, canal_y, where(True, np.where(sacral, 9.0, 11.0)), np.where(sacral, 5.0, 8.0))
    tissues.paint(frame, canal, Tissue.CSF)
