"""The procedural phantom: muscles drawn as ellipses whose areas follow published values per vertebral level.

Cross-sectional areas in cm² per side at the discs (Ivanac 2026, Med Sci Monit 32:e951651); multifidus grows from
about 2 to 6 cm² from L1 to L5. These are geometric shapes, not real ones: ``label_map_muscles`` puts real muscle
shapes into the same body.
"""

from __future__ import annotations

import math

import numpy as np

from scripts.phantom.body import (
    Spine,
    iliac_wing,
    paint_body,
    paint_kidneys,
    paint_spine,
    paint_vessels,
    procedural_kidney_centres,
    spine_geometry,
    torso_geometry,
    wing_offset,
)
from scripts.phantom.organ_map import OrganSource, paste_organs
from scripts.phantom.shapes import Ellipse, Frame, profile, semi_axes
from scripts.phantom.subject import Subject
from scripts.phantom.tissues import SIDES, Painted, Side, Tissue, TissueMap

# Profiles along the spine as (vertebral level, value) knots; level 0 is the T12/L1 disc, 1 L1/2, ... 5 L5/S1.
PSOAS_AREA = ((-0.4, 0.0), (0.0, 1.5), (1.0, 4.4), (2.0, 9.9), (3.0, 14.6), (4.0, 17.75), (5.0, 15.75), (6.5, 14.0))
QUADRATUS_AREA = ((-1.0, 2.5), (1.0, 3.45), (2.0, 5.3), (3.0, 7.05))
ERECTOR_AREA = ((-1.0, 22.0), (3.0, 22.0), (4.0, 20.0), (5.0, 14.0), (6.5, 8.0))
MULTIFIDUS_AREA = ((0.5, 2.0), (4.5, 6.0), (6.5, 6.5))
ILIACUS_AREA = ((0.0, 0.0), (0.25, 2.0), (1.0, 7.0), (2.0, 13.0), (3.0, 16.0))  # levels below the iliac crest
# Psoas centre in mm relative to the vertebral body centre.
PSOAS_Y = ((0.0, -8.0), (2.0, -3.0), (4.0, 6.0), (5.0, 16.0), (5.6, 28.0), (6.5, 38.0))
GLUTEUS_THICKNESS = ((0.0, 8.0), (1.0, 16.0), (3.0, 26.0))
T12_L1_Z = 115.0  # mm above the field-of-view centre


def paint_gluteus(tissues: TissueMap, frame: Frame, wing: Ellipse, crest_level: float) -> None:
    """The gluteal muscles (unlabelled muscle) on the outer side of the iliac wing of ``frame``'s side."""
    glute_b = np.where(wing.a > 0, profile(frame.level - crest_level, GLUTEUS_THICKNESS), 0.0)
    glute_cx, glute_cy = wing_offset(wing, -(6.0 + glute_b), 0.0)
    tissues.paint(frame, Ellipse(glute_cx, glute_cy, 0.9 * wing.a, glute_b, angle=wing.angle), Tissue.OTHER_MUSCLE)


def paint_muscles(tissues: TissueMap, frame: Frame, spine: Spine, subject: Subject, side: Side) -> None:
    """The side's gluteus (unlabelled), erector spinae, multifidus, quadratus lumborum, iliacus and psoas, in
    ``frame`` mirrored to that side; where they touch, the later one keeps the voxel."""
    level = frame.level
    wing = iliac_wing(level, spine, subject.crest_level)
    paint_gluteus(tissues, frame, wing, subject.crest_level)

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
    # Centre about 20 mm in front of the erector spinae's, as in the real label maps (12-27 mm; the QL abuts it).
    quadratus = Ellipse(64.0 + 0.5 * ql_a, spine.y - 40.0, ql_a, ql_b, angle=math.radians(20.0))
    tissues.paint_muscle(frame, quadratus, side.quadratus)

    il_area = size[side.iliacus] * profile(level - subject.crest_level, ILIACUS_AREA) * (wing.a > 0)
    il_a = 0.7 * wing.a
    il_b = np.divide(100.0 * il_area, math.pi * il_a, out=np.zeros_like(il_a), where=il_a > 0)
    il_cx, il_cy = wing_offset(wing, 6.0 + il_b, 10.0)  # in the iliac fossa, on the wing's inner surface
    tissues.paint_muscle(frame, Ellipse(il_cx, il_cy, il_a, il_b, angle=wing.angle), side.iliacus)

    ps_a, ps_b = semi_axes(size[side.psoas] * profile(level, PSOAS_AREA), 1.1)
    psoas = Ellipse(spine.half_width + ps_a + 2.0, spine.y + profile(level, PSOAS_Y), ps_a, ps_b)
    tissues.paint_muscle(frame, psoas, side.psoas)


def paint_procedural(
    frame: Frame,
    subject: Subject,
    rng: np.random.Generator,
    confusers: bool = True,
    organs: OrganSource | None = None,
    top_z: float = T12_L1_Z,
) -> Painted:
    """The whole procedural subject (its T12/L1 disc at frame height ``top_z``), drawn from the outside in so that
    bone and CSF cover muscle and muscle covers fat; voxels outside the body are air. ``confusers``: bowel,
    kidneys, vessels and abdominal wall; ``organs``: real organs pasted at the levels the source covers."""
    tissues = TissueMap(frame.shape)
    spine = spine_geometry(frame.level)
    torso = torso_geometry(frame.level, spine, subject)
    body = paint_body(tissues, frame, spine, torso, subject, rng, confusers)
    if confusers:
        paint_kidneys(tissues, frame, procedural_kidney_centres(spine, frame, top_z, subject.pitch))
        paint_vessels(tissues, frame, spine)
    if organs is not None:
        paste_organs(tissues, frame, spine.y, organs, rng.uniform(0.9, 1.1) / subject.body_scale)
    for side in SIDES:
        mirrored = frame.mirrored(side.sign)
        paint_muscles(tissues, mirrored, spine, subject, side)
        tissues.paint(mirrored, iliac_wing(frame.level, spine, subject.crest_level), Tissue.MARROW)
    paint_spine(tissues, frame, spine)
    tissues.tissue[~body] = Tissue.AIR
    return Painted(tissues, frame.level, subject.crest_level, pelvis=False)
