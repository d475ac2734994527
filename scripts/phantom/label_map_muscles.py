"""The anatomy phantom: real muscle shapes from a label map, placed in a body built around them.

The idea is SynthSeg's (Billot et al., Medical Image Analysis 2023): real label maps, rendered with random contrasts,
teach real shapes. A map (MuscleMap's 8-label lumbar scheme or its whole-body codes) gives multifidus, erector
spinae, psoas, quadratus lumborum and, in the whole-body maps, iliacus, ilium, sacrum and unlabelled muscles. Each
side is read from the file's affine (the pair member at larger world x is the subject's right), never from the
code's name. The map is deformed at random (per-axis scale, small rotations, a smooth elastic field) and resampled
to the phantom grid by nearest neighbour. The spine, trunk outline, kidneys and vessels are then placed per slice
from where the real muscles lie (``measure_geometry``), and the muscles are painted last so that they keep their
real shape. Slices the map does not cover are air (a shorter field of view); a muscle the map lacks is listed as
not annotated, so training treats it as unlabelled instead of as background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from scripts.labels import MUSCLES
from scripts.phantom.body import (
    Spine,
    Torso,
    hip_widening,
    iliac_wing,
    paint_body,
    paint_kidneys,
    paint_spine,
    paint_vessels,
    spine_geometry,
)
from scripts.phantom.organ_map import (
    TOTALSEGMENTATOR_MUSCLES,
    TOTALSEGMENTATOR_TISSUES,
    VERTEBRAE,
    OrganSource,
    is_totalsegmentator,
    level_knots,
    level_line,
    levels_of,
    paste_organs,
    totalsegmentator_lut,
)
from scripts.phantom.procedural_muscles import T12_L1_Z, paint_gluteus
from scripts.phantom.shapes import Frame, subject_frame, world_axes
from scripts.phantom.subject import Subject
from scripts.phantom.tissues import LABEL_OF_TISSUE, SIDES, Painted, Tissue, TissueMap

# Codes of each muscle's pair in the two schemes (MuscleMap; see ../shared/data/anatomy/README.md).
EIGHT_LABEL = {"multifidus": (1, 2), "erector": (3, 4), "psoas": (5, 6), "quadratus": (7, 8)}
WHOLE_BODY = {
    "multifidus": (5101, 5102),
    "erector": (5111, 5112),
    "psoas": (5121, 5122),
    "quadratus": (5131, 5132),
    "iliacus": (6141, 6142),
}
ILIUM, SACRUM = (6151, 6152), 6160
# Placeholder ids in the placed map, resolved when painting: bones kept apart until the spine is placed, and the
# voxels the map does not cover.
ILIUM_ID, SACRUM_ID, VERTEBRA_ID, OUTSIDE = 250, 251, 252, 255
BONES = (ILIUM_ID, SACRUM_ID, VERTEBRA_ID)
LABELLED = (*MUSCLES, Tissue.LEFT_MULTIFIDUS, Tissue.RIGHT_MULTIFIDUS)
# The map's unlabelled tissues that are painted as they are: other muscles and, from an organ map, the organs.
KEPT = (Tissue.OTHER_MUSCLE, *sorted(set(TOTALSEGMENTATOR_TISSUES.values())))
LOWEST_CREST = 3.4  # the highest iliac crest a subject is drawn with (``subject``): a map ending above has no iliacus


@dataclass(frozen=True)
class LabelMap:
    """A label map translated to phantom tissue ids (uint8, RAS+ array axes) with its affine, the bundle labels
    it holds (or, for a muscle its field cannot contain, rules out) and, where it labels vertebrae, (world z,
    vertebral level) knots."""

    tissue: np.ndarray
    affine: np.ndarray
    annotated: tuple[int, ...]
    name: str
    level_knots: tuple[tuple[float, float], ...] = ()


def _side_tissue(kind: str, right: bool) -> int:
    side = SIDES[1] if right else SIDES[0]
    return getattr(side, kind)


def read_label_map(path: str | Path) -> LabelMap:
    """Load a MuscleMap or TotalSegmentator label map and translate it: each muscle pair to our left and right
    tissue ids (sides from the affine); MuscleMap's ilium and sacrum to bone and every other code to unlabelled
    muscle; TotalSegmentator's organs to their tissues (``organ_map``), its vertebrae to bone. A TotalSegmentator
    map that ends above the iliac crest declares the iliacus annotated: it cannot be there."""
    image = nib.as_closest_canonical(nib.load(str(path)))
    codes = np.rint(np.asarray(image.dataobj)).astype(np.int32)
    organs = is_totalsegmentator(codes)
    scheme = TOTALSEGMENTATOR_MUSCLES if organs else EIGHT_LABEL if codes.max() <= 8 else WHOLE_BODY
    present = np.unique(codes)
    lut = totalsegmentator_lut(present.max()) if organs else np.zeros(int(present.max()) + 1, np.uint8)
    if organs:
        lut[list(VERTEBRAE)] = VERTEBRA_ID
    else:
        lut[present[present > 0]] = Tissue.OTHER_MUSCLE
    if scheme is WHOLE_BODY:
        lut[[c for c in ILIUM if c < lut.size]] = ILIUM_ID
        if SACRUM < lut.size:
            lut[SACRUM] = SACRUM_ID
    centroid_x = {}
    for code in (c for pair in scheme.values() for c in pair if c in present):
        ijk = np.argwhere(codes == code).mean(axis=0)
        centroid_x[code] = float(image.affine[0, :3] @ ijk + image.affine[0, 3])
    midline = float(np.mean(list(centroid_x.values()))) if centroid_x else 0.0
    for kind, pair in scheme.items():
        found = [c for c in pair if c in centroid_x]
        for code in found:
            other = [c for c in found if c != code]
            right = centroid_x[code] > (centroid_x[other[0]] if other else midline)
            lut[code] = _side_tissue(kind, right)
    tissue = lut[codes]
    annotated = tuple(m for m in MUSCLES if np.any(LABEL_OF_TISSUE[np.unique(tissue)] == m))
    knots = level_knots(codes, image.affine) if organs else ()
    if knots:
        bottom_z = image.affine[2, 3]
        if float(levels_of(np.array(bottom_z), knots)) < LOWEST_CREST - 0.2:
            annotated = tuple(sorted({*annotated, *(side.iliacus for side in SIDES)}))
    return LabelMap(tissue, image.affine, annotated, Path(path).name, knots)


@dataclass(frozen=True)
class Placement:
    """A random deformation of the map into the phantom's world: ``world = rotation @ (scale * (map - anchor)) +
    target + elastic``."""

    anchor: np.ndarray
    target: np.ndarray
    rotation: np.ndarray
    scale: np.ndarray
    elastic_mm: float


def _rotation(angles: Sequence[float]) -> np.ndarray:
    rx, ry, rz = angles
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    about_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    about_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    about_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return about_z @ about_y @ about_x


def _world_centroid(tissue: np.ndarray, affine: np.ndarray, tissues: Sequence[int]) -> np.ndarray | None:
    """World position (mm) of the centre of the voxels holding any of ``tissues``; None where there are none."""
    ijk = np.argwhere(np.isin(tissue, tissues))
    if ijk.size == 0:
        return None
    return affine[:3, :3] @ ijk.mean(axis=0) + affine[:3, 3]


def draw_placement(label_map: LabelMap, rng: np.random.Generator) -> Placement:
    """Anchor the map's lumbar muscles where the procedural phantom has them (psoas centroid about L3/4, 28 mm
    below the field-of-view centre, muscles 38 mm behind it), shifted by up to 5 mm in-plane and 30 mm along the
    spine; rotate by up to 8 degrees about the S-I axis and 4 about the others, scale by 0.85-1.15 in-plane
    (0.95-1.05 more per axis) and 0.9-1.1 along the spine, and bend by a smooth field of about 4 mm."""
    muscles = [int(t) for t in LABELLED]
    anchor = _world_centroid(label_map.tissue, label_map.affine, muscles)
    psoas = _world_centroid(label_map.tissue, label_map.affine, [side.psoas for side in SIDES])
    if anchor is None:
        raise ValueError(f"{label_map.name}: no muscle of the bundle's label map in it")
    target = np.array([0.0, -38.0, 0.0])
    if psoas is not None:
        anchor[2], target[2] = psoas[2], -28.0
    target += [rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(-30, 30)]
    angles = np.radians([rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(-8, 8)])
    size = rng.uniform(0.85, 1.15)
    scale = np.array([size * rng.uniform(0.95, 1.05), size * rng.uniform(0.95, 1.05), rng.uniform(0.9, 1.1)])
    return Placement(anchor, target, _rotation(angles), scale, elastic_mm=rng.uniform(2.0, 6.0))


def elastic_field(shape: Sequence[int], amplitude_mm: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random displacement (3, *shape) in mm: Gaussian control points on a 5 x 5 x 5 grid, cubic
    interpolation between them."""
    coarse = rng.normal(0.0, amplitude_mm, (3, 5, 5, 5))
    zoom = [n / 5 for n in shape]
    return np.stack([ndimage.zoom(c, zoom, order=3, mode="nearest", grid_mode=True) for c in coarse])


def place(
    label_map: LabelMap, shape: Sequence[int], affine: np.ndarray, placement: Placement, rng: np.random.Generator
) -> np.ndarray:
    """The map's tissue ids on the phantom grid (nearest neighbour; ``OUTSIDE`` where the map does not reach),
    pulled back through the placement slab by slab to keep memory small."""
    x, y, z = world_axes(shape, affine)
    elastic = elastic_field(shape, placement.elastic_mm, rng)
    to_map = np.linalg.inv(label_map.affine)
    inverse = np.linalg.inv(placement.rotation) / placement.scale[:, None]  # map offset = S^-1 R^-1 world offset
    out = np.empty(tuple(shape), np.uint8)
    gx, gy = np.meshgrid(x, y, indexing="ij")
    for k in range(shape[2]):
        world = np.stack([gx, gy, np.full_like(gx, z[k])]) + elastic[:, :, :, k] - placement.target[:, None, None]
        mapped = np.tensordot(inverse, world, axes=1) + placement.anchor[:, None, None]
        ijk = np.tensordot(to_map[:3, :3], mapped, axes=1) + to_map[:3, 3, None, None]
        out[:, :, k] = ndimage.map_coordinates(label_map.tissue, ijk, order=0, mode="constant", cval=OUTSIDE)
    return out


def _fill_gaps(values: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Per-slice values with nan where unmeasured: median-smoothed over 5 slices, interpolated between measured
    slices and held constant beyond them; ``fallback`` where nothing was measured at all."""
    known = np.flatnonzero(~np.isnan(values))
    if known.size == 0:
        return fallback
    filled = np.interp(np.arange(values.size), known, values[known])
    return ndimage.median_filter(filled, size=5, mode="nearest")


def _per_slice(mask: np.ndarray, values: np.ndarray, reduce: str) -> np.ndarray:
    """``reduce`` (min, max or mean) of ``values`` (broadcast to the mask) over each slice's masked voxels; nan
    in slices without any."""
    values = np.broadcast_to(values, mask.shape)
    out = np.full(mask.shape[2], np.nan)
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        out[k] = getattr(np, reduce)(values[:, :, k][mask[:, :, k]])
    return out


@dataclass(frozen=True)
class Geometry:
    """Where the body goes around the placed muscles: the subject frame, spine, trunk and kidneys."""

    frame: Frame
    spine: Spine
    torso: Torso
    kidneys: tuple[tuple[float, float, float], tuple[float, float, float]]
    crest_level: float
    top_z: float


def _z_extent(placed: np.ndarray, tissues: Sequence[int], z: np.ndarray) -> tuple[float, float] | None:
    """Height (mm) of the lowest and the highest slice holding any of ``tissues``; None where none does."""
    slices = np.flatnonzero(np.isin(placed, tissues).any(axis=(0, 1)))
    return (float(z[slices[0]]), float(z[slices[-1]])) if slices.size else None


def measure_geometry(
    placed: np.ndarray, affine: np.ndarray, subject: Subject, levels: tuple[float, float] | None = None
) -> Geometry:
    """Derive the subject frame and the per-slice anatomy from the placed muscles.

    - Frame: the midline and the left-right axis through the two erector spinae + multifidus centroids.
    - Vertebral level: ``levels`` (world z of the T12/L1 disc, pitch) where the map labels its vertebrae; else the
      lowest quadratus lumborum slice is the iliac crest (it inserts there), else the top of the ilium or iliacus,
      else the top of the psoas is T12/L1.
    - Vertebral body 40 mm in front of the multifidus' deepest point beside the spinous processes (lamina, canal,
      half a body), else just behind the psoas' centre; its half-width stops 2 mm short of the psoas.
    - Trunk: the back 4 mm behind the muscles, the flanks 25-60 mm (times body size) beyond the outermost muscle.
    - Kidneys: in front of and lateral to the upper quadratus lumborum, about L1/L2.
    """
    z = world_axes(placed.shape, affine)[2]
    left, right = (_world_centroid(placed, affine, (side.erector, side.multifidus)) for side in SIDES)
    if left is not None and right is not None:
        rotation, midline = math.atan2(right[1] - left[1], right[0] - left[0]), float(left[0] + right[0]) / 2
    else:
        rotation, midline = 0.0, float(_world_centroid(placed, affine, LABELLED)[0])

    crest_level, pitch = subject.crest_level, subject.pitch
    quadratus = _z_extent(placed, [s.quadratus for s in SIDES], z)
    wing = _z_extent(placed, [ILIUM_ID, *(s.iliacus for s in SIDES)], z)
    if levels is not None:
        top_z, pitch = levels
    elif quadratus is not None or wing is not None:
        crest_z = quadratus[0] if quadratus is not None else wing[1]
        top_z = crest_z + crest_level * subject.pitch
    else:
        psoas = _z_extent(placed, [s.psoas for s in SIDES], z)
        top_z = psoas[1] if psoas is not None else T12_L1_Z
    frame = subject_frame(placed.shape, affine, (midline, 0.0, 0.0), rotation, top_z, pitch)

    u, v = np.broadcast_to(frame.u, placed.shape), np.broadcast_to(frame.v, placed.shape)
    multifidus = np.isin(placed, [s.multifidus for s in SIDES]) & (np.abs(u) < 35)
    if not multifidus.any():
        multifidus = np.isin(placed, [s.erector for s in SIDES]) & (np.abs(u) < 45)
    psoas = np.isin(placed, [s.psoas for s in SIDES])
    procedural = spine_geometry(frame.level)
    from_back = _per_slice(multifidus, v, "max") + 40.0
    from_psoas = _per_slice(psoas, v, "mean") - 5.0
    spine_y = _fill_gaps(np.where(np.isnan(from_back), from_psoas, from_back), procedural.y)
    half_width = np.clip(_per_slice(psoas, np.abs(u), "min") - 2.0, 16.0, 28.0)
    spine = Spine(
        y=spine_y,
        half_width=np.where(np.isnan(half_width), procedural.half_width, half_width),
        half_depth=procedural.half_depth,
        tip_y=_fill_gaps(_per_slice(multifidus, v, "min") + 6.0, spine_y - 85.0),
    )

    muscle = np.isin(placed, (*LABELLED, Tissue.OTHER_MUSCLE))
    back = _fill_gaps(_per_slice(muscle, v, "min") - 4.0, spine_y - 86.0)
    outermost = _fill_gaps(_per_slice(muscle, np.abs(u), "max"), np.full(z.size, 100.0))
    outermost = ndimage.maximum_filter1d(outermost, size=5, mode="nearest")
    margin = subject.body_scale * (25.0 + 35.0 * hip_widening(frame.level, crest_level)) + 10.0 * subject.body_scale
    half_depth = np.full(z.size, subject.body_scale * 92.0)
    torso = Torso(cy=back + half_depth, a=outermost + margin, b=half_depth)

    kidneys = []
    for side, level in zip(SIDES, (1.35, 1.6), strict=True):
        centre_z = top_z - level * pitch
        quadratus = placed == side.quadratus
        near = quadratus & (np.abs(frame.z - centre_z) < 40.0)[None, None, :]
        if near.any():
            kidneys.append((float(np.abs(u[near]).mean()) + 8.0, float(v[near].mean()) + 28.0, centre_z))
        else:
            kidneys.append((78.0, float(np.interp(centre_z, frame.z, spine_y)) + 5.0, centre_z))
    return Geometry(frame, spine, torso, tuple(kidneys), crest_level, top_z)


def graded_fat(tissue_mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Fat-fraction factor over one muscle's voxels: about 1.3 at its border falling to 0.85 inside (fat gathers
    at the fascia), from the distance to the border in mm."""
    depth = ndimage.distance_transform_edt(tissue_mask, sampling=spacing)[tissue_mask]
    return (0.85 + 0.45 * np.exp(-depth / 3.0)).astype(np.float32)


def covered_slices(placed: np.ndarray, affine: np.ndarray, placement: Placement) -> np.ndarray:
    """Slices whose centre (60 mm around the placed muscles' target) the map covers: elsewhere the phantom ends."""
    x, y, _ = world_axes(placed.shape, affine)
    central = (np.abs(x - placement.target[0]) < 60)[:, None] & (np.abs(y - placement.target[1]) < 60)[None, :]
    return (placed[central] != OUTSIDE).mean(axis=0) > 0.5


def map_levels(label_map: LabelMap, placement: Placement) -> tuple[float, float] | None:
    """World z of the T12/L1 disc and the pitch of one vertebra after the placement, from the map's vertebrae
    (small tilts ignored); None for a map without vertebrae."""
    if not label_map.level_knots:
        return None
    slope, intercept = level_line(label_map.level_knots)
    world_z = placement.scale[2] * (-intercept / slope - placement.anchor[2]) + placement.target[2]
    return float(world_z), float(-placement.scale[2] / slope)


def paint_from_label_map(
    label_map: LabelMap,
    shape: Sequence[int],
    affine: np.ndarray,
    subject: Subject,
    rng: np.random.Generator,
    confusers: bool = True,
    organs: OrganSource | None = None,
) -> Painted:
    """The anatomy phantom's tissue map: body and confusers (kidneys and vessels only where the map has none of
    its own), organs pasted from ``organs`` at the levels they cover, spine, the map's bones, organs and unlabelled
    muscles, then its labelled muscles; air outside the body and beyond the slices the map covers."""
    placement = draw_placement(label_map, rng)
    placed = place(label_map, shape, affine, placement, rng)
    geometry = measure_geometry(placed, affine, subject, map_levels(label_map, placement))
    frame, spine = geometry.frame, geometry.spine
    tissues = TissueMap(tuple(shape))
    body = paint_body(tissues, frame, spine, geometry.torso, subject, rng, confusers)
    if confusers:
        if not np.any(placed == Tissue.KIDNEY):
            paint_kidneys(tissues, frame, geometry.kidneys)
        if not np.any(placed == Tissue.VESSEL):
            paint_vessels(tissues, frame, spine)
    if organs is not None:
        paste_organs(tissues, frame, spine.y, organs, rng.uniform(0.9, 1.1) / subject.body_scale)
    z = world_axes(shape, affine)[2]
    sacrum = _z_extent(placed, [SACRUM_ID], z)
    lumbar = slice(None) if sacrum is None else slice(int(np.searchsorted(z, sacrum[1])), None)
    paint_spine(tissues, frame, spine, lumbar)
    pelvis = bool(np.any(placed == ILIUM_ID))
    if not pelvis:
        for side in SIDES:
            mirrored = frame.mirrored(side.sign)
            wing = iliac_wing(frame.level, spine, geometry.crest_level)
            paint_gluteus(tissues, mirrored, wing, geometry.crest_level)
            tissues.paint(mirrored, wing, Tissue.MARROW)
    everywhere = slice(None)
    for tissue in np.intersect1d(np.unique(placed), KEPT):
        tissues.fill(everywhere, placed == tissue, int(tissue))
    tissues.fill(everywhere, np.isin(placed, BONES), Tissue.MARROW)
    spacing = np.abs(np.diag(affine)[:3])
    caudal_fat = (0.85 + 0.3 * np.clip(frame.level / 5.5, 0.0, 1.0)).astype(np.float32)
    for tissue in LABELLED:
        mask = placed == tissue
        if mask.any():
            grading = graded_fat(mask, spacing)
            if tissue in (s.multifidus for s in SIDES):  # multifidus fat is highest at L5
                grading = grading * np.broadcast_to(caudal_fat, mask.shape)[mask]
            tissues.fill(everywhere, mask, int(tissue), grading)
    body |= np.isin(placed, (*LABELLED, *KEPT, *BONES))
    outside = ~body | ~covered_slices(placed, affine, placement)[None, None, :]
    tissues.tissue[outside] = Tissue.AIR
    tissues.fat_scale[outside] = 1.0
    return Painted(tissues, frame.level, geometry.crest_level, pelvis)
