"""Borders between adjacent muscles as MR shows them: a fat plane, the thoracolumbar fascia, or nothing at all.

In a real scan the quadratus lumborum lies against the psoas in front, the erector spinae behind (the middle layer
of the thoracolumbar fascia between them, a dark line a millimetre thick, often invisible at 4 mm slices) and the
transversus abdominis aponeurosis outside; a thin plane of fat separates the psoas from the quadratus lumborum in
some people and not in others. Without a visible border, only shape and position tell where one muscle ends. A
phantom whose muscles are always cleanly separated teaches an intensity step that real scans do not have; one
whose muscles always touch teaches nothing about the planes they do have. So each adjacent pair, on each side,
gets at random no border (the muscles touch, same signal), a fat plane one voxel thick, or, between quadratus
lumborum and erector spinae, the fascia; the plane's voxels are taken from one of the two muscles and leave its
label (the border belongs to neither muscle).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from scripts.phantom.tissues import SIDES, Side, Tissue, TissueMap

NO_BORDER, FAT_PLANE = 0.45, 0.4  # probabilities; the rest is fascia where the pair has one, else a fat plane


def adjacent_pairs(side: Side) -> tuple[tuple[tuple[int, ...], tuple[int, ...], bool], ...]:
    """(one muscle's tissues, its neighbour's tissues, whether a fascia runs between them) for one side."""
    back = (side.erector, side.multifidus)
    return (
        ((side.psoas,), (side.quadratus,), False),
        ((side.quadratus,), back, True),
        ((side.psoas,), (side.iliacus,), False),
        ((side.quadratus,), (Tissue.OTHER_MUSCLE,), False),  # the abdominal wall's aponeurosis
        ((side.psoas,), back, False),
    )


def draw_borders(tissues: TissueMap, rng: np.random.Generator) -> dict[str, int]:
    """Draw a random border between each pair of touching muscles (in-plane neighbours, one voxel thick) on each
    side; returns how many pairs got each kind, for truth.json."""
    counts = {"none": 0, "fat plane": 0, "fascia": 0}
    cross = ndimage.generate_binary_structure(2, 1)[:, :, None]  # in-plane: planes run along the spine
    for side in SIDES:
        for first, second, has_fascia in adjacent_pairs(side):
            a, b = np.isin(tissues.tissue, first), np.isin(tissues.tissue, second)
            touching = a & ndimage.binary_dilation(b, cross)
            if not touching.any():
                continue
            draw = rng.uniform()
            if draw < NO_BORDER:
                counts["none"] += 1
                continue
            kind = "fat plane" if draw < NO_BORDER + FAT_PLANE or not has_fascia else "fascia"
            counts[kind] += 1
            # The plane takes its voxels from either muscle: border on the first's side or on the second's.
            border = touching if rng.uniform() < 0.5 else b & ndimage.binary_dilation(a, cross)
            tissues.fill(slice(None), border, Tissue.INTERMUSCULAR_FAT if kind == "fat plane" else Tissue.FASCIA)
    return counts
