"""The bundle's label map, the single source every other module leans on, and the published grid it was drawn on.

Left and right are the subject's sides as given by the image affine (RAS+: world x grows
towards the subject's right), never by array index.
"""

from __future__ import annotations

import numpy as np

BACKGROUND = 0
LABELS: dict[int, str] = {
    0: "background",
    1: "left psoas",
    2: "left iliacus",
    3: "left quadratus lumborum",
    4: "left erector spinae + multifidus",
    5: "right psoas",
    6: "right iliacus",
    7: "right quadratus lumborum",
    8: "right erector spinae + multifidus",
}
# The column names of the published Table 1.
ABBREVIATIONS: dict[int, str] = {1: "LP", 2: "LI", 3: "LQL", 4: "LES+M", 5: "RP", 6: "RI", 7: "RQL", 8: "RES+M"}
MUSCLES: tuple[int, ...] = tuple(range(1, 9))
NUM_CLASSES = len(LABELS)
# The published method's voxel size (mm, x y z): 400x320x145 voxels after its 2x in-plane downsampling.
PUBLISHED_SPACING: tuple[float, float, float] = (0.9375, 0.9375, 1.95)
# Label metadata key of a case's annotation mask: which of the 9 classes were drawn (partial labels).
ANNOTATED = "annotated"
# Each left muscle and its right partner.
LEFT_RIGHT_PAIRS: tuple[tuple[int, int], ...] = ((1, 5), (2, 6), (3, 7), (4, 8))
# One hue per muscle, strong on the left side and light on the right (ColorBrewer "Paired"), in LEFT_RIGHT_PAIRS
# order: the QC figure's outlines and the viewers' colour tables.
PAIR_COLOURS = (("#1f78b4", "#a6cee3"), ("#33a02c", "#b2df8a"), ("#e31a1c", "#fb9a99"), ("#ff7f00", "#fdbf6f"))
MUSCLE_COLOURS: dict[int, str] = {
    label: colour
    for pair, colours in zip(LEFT_RIGHT_PAIRS, PAIR_COLOURS, strict=True)
    for label, colour in zip(pair, colours, strict=True)
}


def mirrored_label(label: int) -> int:
    """The label of the same muscle on the other side (background stays background)."""
    for left, right in LEFT_RIGHT_PAIRS:
        if label == left:
            return right
        if label == right:
            return left
    return label


# Lookup table: SWAP_LEFT_RIGHT[label] is the label after a left-right mirror.
SWAP_LEFT_RIGHT: np.ndarray = np.array([mirrored_label(i) for i in range(NUM_CLASSES)], dtype=np.int64)


def label_file_problems(
    values: set[int], label_map: dict[str, int] | None = None, annotated: list[int] | None = None
) -> list[str]:
    """Why a label file holding ``values`` cannot be read with its entry's ``label_map`` and ``annotated``: value
    0 is background; without ``label_map`` the file must use this map's labels 0-8, with one every other value
    must be a key of it and its targets labels 0-8; ``annotated`` must list muscles 1-8. Empty when usable."""
    problems = []
    if label_map is None:
        allowed, expected = set(range(NUM_CLASSES)), "0..8"
    else:
        targets = sorted({int(v) for v in label_map.values()})
        if not set(targets) <= set(range(NUM_CLASSES)):
            problems.append(f"label_map targets {targets} outside 0..8")
        allowed = {0, *(int(k) for k in label_map)}
        expected = f"0 or a key of label_map {sorted(allowed - {0})}"
    if unknown := sorted(values - allowed):
        problems.append(f"label values {unknown} are not {expected}")
    if annotated is not None and not {int(a) for a in annotated} <= set(MUSCLES):
        problems.append(f"annotated {sorted(int(a) for a in annotated)} must be muscles of 1..8")
    return problems
