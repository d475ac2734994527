"""Fields of view that users scan: which vertebral levels a phantom shows, and which muscles that rules out.

Real lumbar Dixon protocols cover T11-L2 (an abdominal scan: liver, spleen, kidneys; psoas only starting; no
iliacus), L1-L5, L3 to the sacrum, or the pelvis (iliac wings, iliacus in the iliac fossa). A phantom is cut to
one of them along the spine: the slices outside are dropped, so its first and last slices cut through the body as a
real scan's do. A muscle the field cannot contain (the iliacus in a field that ends above the iliac crest, the
quadratus lumborum in one that starts below it) is a real "not here": it is declared annotated, so training
teaches background there instead of leaving it out as unlabelled.
"""

from __future__ import annotations

import numpy as np

from scripts.phantom.tissues import SIDES

# Vertebral levels (0 the T12/L1 disc, 1 L1/2, ... 5 L5/S1) at the top and bottom of each field.
FIELDS: dict[str, tuple[float, float]] = {
    "upper": (-1.5, 2.2),  # T11-L2
    "lumbar": (-0.1, 5.3),  # L1-L5
    "lower": (2.0, 6.8),  # L3 to the sacrum
    "pelvis": (4.0, 8.5),  # L5 to the hips
}
FULL = "full"  # the grid as given, no cut
CHOICES = (FULL, *FIELDS, "random")
JITTER = 0.3  # levels each end may move
ILIACUS = tuple(side.iliacus for side in SIDES)
QUADRATUS = tuple(side.quadratus for side in SIDES)


def draw_field(name: str, rng: np.random.Generator, pelvis: bool) -> tuple[str, tuple[float, float] | None]:
    """The field ``name`` (or, for "random", one of full / upper / lumbar / lower and, where the phantom has a real
    pelvis, pelvis) with both ends moved by up to ``JITTER`` levels; None for the full grid."""
    if name == "random":
        names = [FULL, "upper", "lumbar", "lower"] + (["pelvis"] if pelvis else [])
        name = names[int(rng.integers(len(names)))]
    if name == FULL:
        return name, None
    top, bottom = FIELDS[name]
    return name, (top + rng.uniform(-JITTER, JITTER), bottom + rng.uniform(-JITTER, JITTER))


def slices_in(level: np.ndarray, field: tuple[float, float] | None) -> np.ndarray:
    """Indices of the slices whose vertebral level lies inside the field (every slice for the full grid)."""
    if field is None:
        return np.arange(level.size)
    return np.flatnonzero((level >= field[0]) & (level <= field[1]))


def ruled_out(level: np.ndarray, crest_level: float) -> tuple[int, ...]:
    """Muscles the slices at ``level`` cannot hold: iliacus when they all lie above the iliac crest, quadratus
    lumborum when they all lie well below it."""
    out: tuple[int, ...] = ()
    if level.max() < crest_level - 0.2:
        out += ILIACUS
    if level.min() > crest_level + 0.5:
        out += QUADRATUS
    return out
