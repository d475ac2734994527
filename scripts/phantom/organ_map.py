"""Real upper-abdominal organs from a TotalSegmentator label map, pasted into a phantom at the levels they occupy.

At T11-L2 the network confused psoas, iliacus and quadratus lumborum with liver, spleen and kidneys, which the
procedural body lacks or draws as ellipsoids. A TotalSegmentator map ("total" task codes, for example
``../shared/data/organs/upper_abdomen_ct.nii.gz``) holds those organs in their real places and sizes around the
real spine and back muscles. ``read_organ_source`` keeps its organs, ribs and lung bases with, for every map slice,
the vertebral level (from its labelled vertebrae) and the centre of the vertebral body; ``paste_organs`` draws them
into a phantom slice by slice at the same vertebral level, centred on the phantom's own vertebral body and scaled
to its body size. Muscles and the spine are painted after them, so the organs surround the phantom's muscles the
way they surround the real ones. The map is also an anatomy map of its own (``label_map_muscles``): its
"autochthon" is erector spinae + multifidus and its "iliopsoas" the psoas origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from scripts.phantom.shapes import Frame
from scripts.phantom.tissues import Tissue, TissueMap

# TotalSegmentator "total" codes (totalsegmentator/map_to_binary.py) and the phantom tissue each becomes.
TOTALSEGMENTATOR_TISSUES: dict[int, int] = {
    1: Tissue.SPLEEN,
    2: Tissue.KIDNEY,
    3: Tissue.KIDNEY,
    4: Tissue.BOWEL_FLUID,  # gallbladder: bile is fluid
    5: Tissue.LIVER,
    6: Tissue.STOMACH,
    7: Tissue.PANCREAS,
    8: Tissue.PANCREAS,  # adrenal glands
    9: Tissue.PANCREAS,
    **{code: Tissue.LUNG for code in range(10, 15)},
    **{code: Tissue.BOWEL for code in (18, 19, 20)},  # small bowel, duodenum, colon
    **{code: Tissue.VESSEL for code in (52, 63, 64)},  # aorta, inferior vena cava, portal and splenic vein
    79: Tissue.CSF,  # spinal cord, in the canal
    **{code: Tissue.MARROW for code in range(92, 116)},  # ribs
    117: Tissue.DISC,  # costal cartilages
}
TOTALSEGMENTATOR_MUSCLES = {"erector": (86, 87), "psoas": (88, 89)}  # autochthon, iliopsoas
VERTEBRAE = range(26, 50)  # S1 (26), L5 (27) ... L1 (31), T12 (32) ... C1 (50 excluded)


def totalsegmentator_lut(top_code: int) -> np.ndarray:
    """Lookup table from TotalSegmentator code (0..``top_code`` at least) to phantom tissue id, 0 for codes that are
    not organs, ribs, cord or cartilage (muscles and vertebrae are the caller's to map)."""
    lut = np.zeros(max(int(top_code), max(TOTALSEGMENTATOR_TISSUES)) + 1, np.uint8)
    for code, tissue in TOTALSEGMENTATOR_TISSUES.items():
        lut[code] = tissue
    return lut


def vertebral_level(code: int) -> float:
    """Level of a vertebra's centre (0 the T12/L1 disc, 1 L1/2, ...): L1 0.5, T12 -0.5, L5 4.5."""
    return 31.5 - code


def is_totalsegmentator(codes: np.ndarray) -> bool:
    """Whether a label map uses TotalSegmentator's codes (MuscleMap's are 1-8 or 5101 and up)."""
    top = int(codes.max())
    return 8 < top < 1000 and bool(np.isin(codes, list(VERTEBRAE)).any())


def level_knots(codes: np.ndarray, affine: np.ndarray) -> tuple[tuple[float, float], ...]:
    """(world z of its centre, level) of each labelled vertebra, top to bottom."""
    knots = []
    for code in np.unique(codes):
        if int(code) in VERTEBRAE:
            ijk = np.argwhere(codes == code).mean(axis=0)
            knots.append((float(affine[2, :3] @ ijk + affine[2, 3]), vertebral_level(int(code))))
    return tuple(sorted(knots, reverse=True))


def level_line(knots: tuple[tuple[float, float], ...]) -> tuple[float, float]:
    """(slope, intercept) of the vertebral level against world z through the vertebrae's centres; one vertebra
    alone gets the usual 40 mm per level."""
    heights, levels = (np.array(v) for v in zip(*knots, strict=True))
    if heights.size == 1:
        return -1 / 40.0, float(levels[0] + heights[0] / 40.0)
    slope, intercept = np.polyfit(heights, levels, 1)
    return float(slope), float(intercept)


def levels_of(z: np.ndarray, knots: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Vertebral level at world heights ``z``, linear through the vertebrae's centres and beyond them."""
    slope, intercept = level_line(knots)
    return slope * np.asarray(z, float) + intercept


@dataclass(frozen=True)
class OrganSource:
    """Organs of a real map (phantom tissue ids, 0 elsewhere; RAS+ array axes), the level of each map slice and
    the world (x, y) of the vertebral body's centre in it."""

    tissue: np.ndarray
    affine: np.ndarray
    level: np.ndarray
    spine_xy: np.ndarray  # (nz, 2)

    @property
    def level_range(self) -> tuple[float, float]:
        return float(self.level.min()), float(self.level.max())


def read_organ_source(codes: np.ndarray, affine: np.ndarray) -> OrganSource:
    """The organs of a TotalSegmentator map (RAS+ codes and affine) and its per-slice level and spine centre."""
    lut = totalsegmentator_lut(codes.max())
    z = affine[2, 3] + affine[2, 2] * np.arange(codes.shape[2])
    spine = np.isin(codes, list(VERTEBRAE))
    xy = np.full((codes.shape[2], 2), np.nan)
    for k in np.flatnonzero(spine.any(axis=(0, 1))):
        # The vertebral body: the front half of the vertebra's voxels in this slice (the arch lies behind).
        ij = np.argwhere(spine[:, :, k])
        front = ij[ij[:, 1] >= np.median(ij[:, 1])]
        xy[k] = affine[:2, :2] @ front.mean(axis=0) + affine[:2, 3]
    known = ~np.isnan(xy[:, 0])  # z grows with k on a RAS+ grid
    for axis in range(2):
        xy[:, axis] = np.interp(z, z[known], xy[known, axis])
    return OrganSource(lut[codes], affine, levels_of(z, level_knots(codes, affine)), xy)


def read_organ_map(path: str | Path) -> OrganSource:
    """Load a TotalSegmentator label map (any orientation) as an organ source."""
    image = nib.as_closest_canonical(nib.load(str(path)))
    codes = np.rint(np.asarray(image.dataobj)).astype(np.int32)
    if not is_totalsegmentator(codes):
        raise ValueError(f"{path}: not a TotalSegmentator label map (no vertebra code 26-49, values 9-999)")
    return read_organ_source(codes, image.affine)


def paste_organs(tissues: TissueMap, frame: Frame, spine_y: np.ndarray, source: OrganSource, scale: float) -> None:
    """Draw the source's organs into every phantom slice whose vertebral level the source covers: each phantom
    voxel takes the organ (nearest neighbour) at the same level, at the same offset from the vertebral body's
    centre times ``scale`` (map mm per phantom mm). Only voxels inside the body and off the subcutaneous fat are
    painted, and procedural kidneys in those slices give way to the source's; muscles and the spine come later."""
    low, high = source.level_range
    to_map = np.linalg.inv(source.affine)
    order = np.argsort(source.level)
    for k in np.flatnonzero((frame.level >= low) & (frame.level <= high)):
        map_z = np.interp(frame.level[k], source.level[order], np.arange(source.level.size)[order])
        centre = np.array([np.interp(map_z, np.arange(source.level.size), source.spine_xy[:, a]) for a in range(2)])
        x = centre[0] + scale * frame.u[:, :, 0]
        y = centre[1] + scale * (frame.v[:, :, 0] - spine_y[k])
        i = to_map[0, 0] * x + to_map[0, 1] * y + to_map[0, 3]
        j = to_map[1, 0] * x + to_map[1, 1] * y + to_map[1, 3]
        organ = ndimage.map_coordinates(
            source.tissue, np.stack([i, j, np.full_like(i, map_z)]), order=0, mode="constant", cval=0
        )
        slab = tissues.tissue[:, :, k]
        slab[slab == Tissue.KIDNEY] = Tissue.VISCERAL_FAT  # the source's kidneys replace procedural ones
        inside = (organ > 0) & (slab != Tissue.AIR) & (slab != Tissue.SUBCUTANEOUS_FAT)
        slab[inside] = organ[inside]
        tissues.fat_scale[:, :, k][inside] = 1.0
