"""Per-muscle volume, cross-sectional area and fat fraction of one segmented Dixon case, in the image's own space.

Nothing is resampled: every function takes the label array as stored and its 4×4 affine (voxel → world mm, RAS+),
so the numbers hold for the voxels the user gave. The "axial" slices are those across the array axis closest to
world z (superior–inferior), whatever the array order. The results are plain Python numbers (``json.dumps`` works):

- ``fat_fraction_map``: the voxel fat fraction F/(W+F) from the Dixon images, NaN where the signal is noise;
- ``measure``: the case counted once (label × slice tallies of the muscles and their cores), for the two below;
- ``muscle_report``: per muscle of ``scripts.labels`` volume, fat fraction (of the whole muscle and of its core),
  lean volume, largest axial area and its level, plus the left/right asymmetry of each pair (the content of
  ``<id>_metrics.json``);
- ``slice_rows``: per axial slice each muscle's area and mean fat fraction (whole and core);
- ``cohort_row``: one flat row of a report for the cohort's ``metrics.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_erosion, find_objects

from scripts.data.geometry import closest_array_axis, spacing_and_direction
from scripts.labels import ABBREVIATIONS, LABELS, LEFT_RIGHT_PAIRS, MUSCLES, NUM_CLASSES

DEFAULT_NOISE_FLOOR = 0.02
NOISE_FLOOR_PERCENTILE = 99.0  # a bright-tissue signal level that a few hot voxels cannot move
DECIMALS = 3
NO_FAT_FRACTION_MAP = "no fat fraction map was given"
# The core fat fraction leaves out the muscle's outer ~2 mm, where voxels share signal with the fat around it.
CORE_EROSION_MM = 2.0


def _pair_name(left: int) -> str:
    """The pair's key: "left erector spinae + multifidus" -> "erector_spinae_multifidus"."""
    return LABELS[left].removeprefix("left ").replace(" + ", "_").replace(" ", "_")


PAIR_NAMES: dict[tuple[int, int], str] = {(left, right): _pair_name(left) for left, right in LEFT_RIGHT_PAIRS}


def fat_fraction_map(
    water: np.ndarray | None = None,
    fat: np.ndarray | None = None,
    inphase: np.ndarray | None = None,
    outphase: np.ndarray | None = None,
    noise_floor: float = DEFAULT_NOISE_FLOOR,
) -> tuple[np.ndarray | None, str | None]:
    """The voxel fat fraction F/(W+F) (float32, 0..1) of co-registered Dixon magnitude images of one shape.

    Water and fat images are used when both are given. Otherwise the in-phase (IP = W + F) and opposed-phase
    (OP = |W - F|) images give W = (IP + OP)/2 and F = (IP - OP)/2; this takes W >= F in every voxel, true in
    muscle (fat fraction well below 50 %) but not in fatty tissue, where W and F swap. Voxels whose W + F is below
    ``noise_floor`` times the 99th percentile of W + F over the whole image hold noise, not tissue: they are NaN
    (excluded from every mean). Magnitude noise (Rician) still biases F/(W+F) upwards where F is near the noise
    level, as in lean muscle. The result is clipped to 0..1.

    Returns ``(fat_fraction, None)``, or ``(None, note)`` saying why no fat fraction can be computed.
    """
    if water is not None and fat is not None:
        water, fat = _same_shape_float(water, fat)
    elif inphase is not None and outphase is not None:
        inphase, outphase = _same_shape_float(inphase, outphase)
        water, fat = (inphase + outphase) / 2, (inphase - outphase) / 2
    else:
        images = {"water": water, "fat": fat, "in-phase": inphase, "opposed-phase": outphase}
        given = [name for name, image in images.items() if image is not None]
        return None, (
            f"fat fraction not computed: it needs water and fat images, or in-phase and opposed-phase images; "
            f"given: {', '.join(given) or 'none'}"
        )
    # The percentile may reorder ``total`` in place (no copy of a whole volume); W + F is then summed again.
    total = water + fat
    floor = noise_floor * float(np.percentile(total, NOISE_FLOOR_PERCENTILE, overwrite_input=True))
    np.add(water, fat, out=total)
    signal = (total >= floor) & (total > 0)  # the second keeps 0/0 out of an all-dark image
    fat_fraction = np.full(total.shape, np.nan, np.float32)
    np.divide(fat, total, out=fat_fraction, where=signal)
    np.clip(fat_fraction, 0.0, 1.0, out=fat_fraction)
    return fat_fraction, None


def _same_shape_float(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    first, second = np.asarray(first, np.float32), np.asarray(second, np.float32)
    if first.shape != second.shape:
        raise ValueError(f"Dixon images differ in shape: {first.shape} vs {second.shape}")
    return first, second


def core_erosion_voxels(voxel_size_mm: tuple[float, ...]) -> tuple[int, ...]:
    """Per array axis, the whole number of voxels nearest to ``CORE_EROSION_MM`` (a half rounds down): 2 at 1 mm,
    1 at 3.75 mm, 0 at 4 mm, so that no axis is eroded by much more than 2 mm."""
    return tuple(max(int(np.ceil(CORE_EROSION_MM / size - 0.5)), 0) for size in voxel_size_mm)


def _ellipsoid(radii: tuple[int, ...]) -> np.ndarray:
    """Boolean structuring element: the voxel offsets inside the ellipsoid of semi-axes ``radii`` (voxels); an axis
    of radius 0 has no extent."""
    offsets = np.meshgrid(*(np.arange(-r, r + 1) for r in radii), indexing="ij")
    distance = np.zeros(offsets[0].shape)
    for offset, radius in zip(offsets, radii, strict=True):
        if radius > 0:
            distance += (offset / radius) ** 2
    return distance <= 1.0 + 1e-9


def core_label(label: np.ndarray, radii: tuple[int, ...]) -> np.ndarray:
    """``label`` with every muscle eroded by the ellipsoid of semi-axes ``radii`` (voxels per array axis): a voxel
    stays where the whole ellipsoid around it lies in its own muscle. The grid's edge counts as inside (it is
    where the field of view cuts the muscle, not where the muscle ends). Each muscle is eroded inside its own
    box, so the cost follows the muscles' size, not the image's."""
    core = np.zeros_like(label)
    structure = _ellipsoid(radii)
    for muscle, box in zip(MUSCLES, find_objects(label, max_label=max(MUSCLES))):  # entry i: label value i + 1
        if box is None:
            continue
        grown = tuple(
            slice(max(b.start - r, 0), min(b.stop + r, n)) for b, r, n in zip(box, radii, label.shape, strict=True)
        )
        mask = binary_erosion(label[grown] == muscle, structure, border_value=1)
        core[grown][mask] = muscle
    return core


def slice_axis(affine: np.ndarray) -> int:
    """The array axis whose direction is closest to world z (S–I): the axis across which axial slices lie."""
    return closest_array_axis(_checked_affine(affine), 2)


def _checked_affine(affine: np.ndarray) -> np.ndarray:
    affine = np.asarray(affine, np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or np.linalg.det(affine[:3, :3]) == 0:
        raise ValueError(f"need a finite, invertible 4×4 voxel-to-world affine, got {affine.tolist()}")
    return affine


@dataclass(frozen=True)
class SliceGeometry:
    """Voxel sizes along the array axes, the slice axis, the in-plane voxel area and each slice's world z (mm)."""

    axis: int
    voxel_size_mm: tuple[float, float, float]
    voxel_volume_mm3: float
    pixel_area_mm2: float
    z_mm: np.ndarray


def slice_geometry(shape: tuple[int, ...], affine: np.ndarray) -> SliceGeometry:
    """Geometry of an image of ``shape`` with ``affine``; a slice's z is that of its centre voxel (the in-plane
    centre), which is the whole slice's z unless the slices are tilted."""
    affine = _checked_affine(affine)
    axis = slice_axis(affine)
    voxel_size, _ = spacing_and_direction(affine)
    centre = (np.asarray(shape, np.float64) - 1) / 2
    z_mm = affine[2, :3] @ centre + affine[2, 3] + affine[2, axis] * (np.arange(shape[axis]) - centre[axis])
    return SliceGeometry(
        axis=axis,
        voxel_size_mm=tuple(float(size) for size in voxel_size),
        voxel_volume_mm3=float(abs(np.linalg.det(affine[:3, :3]))),
        pixel_area_mm2=float(np.prod(np.delete(voxel_size, axis))),
        z_mm=z_mm,
    )


@dataclass(frozen=True)
class Tally:
    """Per label (rows 0..8) and slice: voxels, voxels with a fat fraction, and the sum of their fat fractions
    (float64); the two fat-fraction tables are None without a fat fraction map."""

    voxels: np.ndarray
    fat_voxels: np.ndarray | None
    fat_sum: np.ndarray | None


@dataclass(frozen=True)
class MuscleVoxels:
    """The label, slice index and fat fraction (NaN where excluded; None without a map) of every muscle voxel."""

    label: np.ndarray
    slice: np.ndarray
    fat_fraction: np.ndarray | None


def muscle_voxels(label: np.ndarray, axis: int, fat_fraction: np.ndarray | None, first_slice: int = 0) -> MuscleVoxels:
    """Gather the voxels of labels 1..8 only: muscle is a small part of the image, so the later counting runs
    over far fewer values than the whole grid. ``label`` may be a crop whose first slice is ``first_slice``."""
    inside = (label >= min(MUSCLES)) & (label <= max(MUSCLES))
    where = np.nonzero(inside)
    values = None if fat_fraction is None else fat_fraction[where].astype(np.float64)
    return MuscleVoxels(label[where].astype(np.intp), where[axis] + first_slice, values)


def muscle_region(label: np.ndarray, margin: tuple[int, ...]) -> tuple[slice, ...]:
    """The box that holds every muscle voxel, grown by ``margin`` voxels per array axis within the grid (empty
    when no muscle is labelled). Everything measured depends only on the label inside it."""
    boxes = [box for box in find_objects(label, max_label=max(MUSCLES)) if box is not None]
    if not boxes:
        return tuple(slice(0, 0) for _ in label.shape)
    return tuple(
        slice(max(min(b[a].start for b in boxes) - m, 0), min(max(b[a].stop for b in boxes) + m, n))
        for a, (m, n) in enumerate(zip(margin, label.shape, strict=True))
    )


def tally(voxels: MuscleVoxels, n_slices: int) -> Tally:
    """Count label × slice with one ``np.bincount`` over the combined index label * n_slices + slice."""
    index = voxels.label * n_slices + voxels.slice
    size = NUM_CLASSES * n_slices
    counts = np.bincount(index, minlength=size).astype(np.float64).reshape(NUM_CLASSES, n_slices)
    if voxels.fat_fraction is None:
        return Tally(counts, None, None)
    valid = ~np.isnan(voxels.fat_fraction)
    fat_voxels = np.bincount(index[valid], minlength=size).astype(np.float64).reshape(NUM_CLASSES, n_slices)
    fat_sum = np.bincount(index[valid], weights=voxels.fat_fraction[valid], minlength=size)
    return Tally(counts, fat_voxels, fat_sum.reshape(NUM_CLASSES, n_slices))


def _checked_inputs(label: np.ndarray, fat_fraction: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    label = np.asarray(label)
    if label.ndim != 3:
        raise ValueError(f"need a 3-D label array, got shape {label.shape}")
    if not np.issubdtype(label.dtype, np.integer):
        rounded = np.rint(label)
        if not np.array_equal(rounded, label):
            raise ValueError("label array holds non-integer values")
        label = rounded.astype(np.int16)
    if fat_fraction is not None:
        fat_fraction = np.asarray(fat_fraction)
        if fat_fraction.shape != label.shape:
            raise ValueError(f"fat fraction map shape {fat_fraction.shape} differs from label shape {label.shape}")
    return label, fat_fraction


@dataclass(frozen=True)
class Measured:
    """One case counted: its geometry, the muscle voxels, their tally, and the tally of the muscles' cores (None
    without a fat fraction map: the core is only there for its fat fraction)."""

    geometry: SliceGeometry
    voxels: MuscleVoxels
    counts: Tally
    core_radii: tuple[int, ...]
    core_counts: Tally | None


def measure(label: np.ndarray, affine: np.ndarray, fat_fraction: np.ndarray | None) -> Measured:
    """Count ``label`` (values of ``scripts.labels``; other values are ignored) on its own voxel grid with ``affine``:
    ``fat_fraction`` is a map from ``fat_fraction_map`` (0..1, NaN excluded) or None. ``muscle_report`` and
    ``slice_rows`` both read the result, so a case is counted once for its report and its slice table."""
    label, fat_fraction = _checked_inputs(label, fat_fraction)
    geometry = slice_geometry(label.shape, affine)
    n_slices = label.shape[geometry.axis]
    radii = core_erosion_voxels(geometry.voxel_size_mm)
    # Only the muscles' box, with room for the core's erosion, is read: the same numbers at a fraction of the work.
    region = muscle_region(label, radii)
    label = label[region]
    fat_fraction = None if fat_fraction is None else fat_fraction[region]
    first_slice = region[geometry.axis].start
    voxels = muscle_voxels(label, geometry.axis, fat_fraction, first_slice)
    core_counts = None
    if fat_fraction is not None:
        core = muscle_voxels(core_label(label, radii), geometry.axis, fat_fraction, first_slice)
        core_counts = tally(core, n_slices)
    return Measured(geometry, voxels, tally(voxels, n_slices), radii, core_counts)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), DECIMALS)


def _ratio_percent(numerator: float, denominator: float) -> float | None:
    return 100.0 * numerator / denominator if denominator > 0 else None


def asymmetry_index(left: float | None, right: float | None) -> float | None:
    """100·(L − R)/((L + R)/2) in percent: positive when the left side is larger; None when a value is missing
    or L + R = 0."""
    if left is None or right is None or left + right == 0:
        return None
    return 100.0 * (left - right) / ((left + right) / 2)


def _muscle_entry(muscle: int, measured: Measured) -> dict:
    """One muscle's metrics (unrounded). Lean volume = volume × (1 − mean fat fraction): voxels excluded by the
    noise floor count as muscle of the mean fat fraction, the same as summing (1 − ff) over the valid voxels
    and scaling to all of the muscle's voxels. The core fat fraction is the mean over the muscle's core
    (``core_label``), None without a map or where no core voxel is left."""
    geometry, voxels, counts, core = measured.geometry, measured.voxels, measured.counts, measured.core_counts
    per_slice = counts.voxels[muscle]
    volume_ml = per_slice.sum() * geometry.voxel_volume_mm3 / 1000.0
    entry = {"label": muscle, "name": LABELS[muscle], "volume_ml": volume_ml}
    mean = median = lean = None
    if counts.fat_sum is not None:
        mean = _ratio_percent(counts.fat_sum[muscle].sum(), counts.fat_voxels[muscle].sum())
    if mean is not None:
        values = voxels.fat_fraction[voxels.label == muscle]
        median = 100.0 * float(np.nanmedian(values))
        lean = volume_ml * (1.0 - mean / 100.0)
    core_mean = core_volume = None
    if core is not None:
        core_mean = _ratio_percent(core.fat_sum[muscle].sum(), core.fat_voxels[muscle].sum())
        core_volume = core.voxels[muscle].sum() * geometry.voxel_volume_mm3 / 1000.0
    entry |= {
        "fat_fraction_mean_percent": mean,
        "fat_fraction_median_percent": median,
        "core_fat_fraction_mean_percent": core_mean,
        "core_volume_ml": core_volume,
        "lean_volume_ml": lean,
    }
    present = per_slice.any()
    peak = int(np.argmax(per_slice))  # the lowest slice index among equal maxima
    entry |= {
        "max_area_cm2": per_slice[peak] * geometry.pixel_area_mm2 / 100.0,
        "max_area_slice": peak if present else None,
        "max_area_z_mm": float(geometry.z_mm[peak]) if present else None,
    }
    return entry


def muscle_report(measured: Measured, fat_fraction_note: str | None = None) -> dict:
    """Metrics of every muscle of a case ``measure`` counted; without a fat fraction map every fat-fraction field
    is None and ``fat_fraction_note`` says why.

    Volumes in mL, fat fractions in percent, areas in cm² on the axial slices (across ``slice_axis``), the level
    of the largest area as slice index and world z (mm); a muscle absent from the label has volume and area 0 and
    None elsewhere. Lean volume = volume × (1 − mean fat fraction), see ``_muscle_entry``. The core fat fraction is
    the mean over the muscle eroded by about ``CORE_EROSION_MM`` (``core_erosion_voxels`` per array axis, given
    as ``core_erosion_voxels``), with the core's volume. Asymmetry per left/right pair: ``asymmetry_index`` of the
    volumes and the mean fat fractions. Floats are rounded to 3 decimals.
    """
    geometry = measured.geometry
    entries = {muscle: _muscle_entry(muscle, measured) for muscle in MUSCLES}
    asymmetry = {
        name: {
            metric: _rounded(asymmetry_index(entries[left][key], entries[right][key]))
            for metric, key in (("volume_percent", "volume_ml"), ("fat_fraction_percent", "fat_fraction_mean_percent"))
        }
        for (left, right), name in PAIR_NAMES.items()
    }
    if measured.voxels.fat_fraction is None and fat_fraction_note is None:
        fat_fraction_note = NO_FAT_FRACTION_MAP
    return {
        "voxel_size_mm": [_rounded(size) for size in geometry.voxel_size_mm],
        "slice_axis": geometry.axis,
        "fat_fraction_note": fat_fraction_note,
        "core_erosion_voxels": list(measured.core_radii),
        "muscles": {
            ABBREVIATIONS[muscle]: {
                key: _rounded(value) if isinstance(value, float) else value for key, value in entry.items()
            }
            for muscle, entry in entries.items()
        },
        "asymmetry": asymmetry,
    }


def slice_rows(measured: Measured) -> list[dict]:
    """One row per axial slice that holds any muscle of a case ``measure`` counted, from the lowest slice index up:
    the slice index, its world z (mm) and, for each muscle, its area (cm²), mean fat fraction and that of its core
    (percent; None where the muscle or its core is absent from the slice, all its voxels there are excluded, or no
    map is given)."""
    geometry, counts, core = measured.geometry, measured.counts, measured.core_counts
    area = counts.voxels * geometry.pixel_area_mm2 / 100.0
    rows = []
    for index in np.flatnonzero(counts.voxels[list(MUSCLES)].any(axis=0)):
        row = {"slice": int(index), "z_mm": _rounded(geometry.z_mm[index])}
        for muscle in MUSCLES:
            name = ABBREVIATIONS[muscle]
            mean = core_mean = None
            if counts.fat_sum is not None:
                mean = _ratio_percent(counts.fat_sum[muscle, index], counts.fat_voxels[muscle, index])
                core_mean = _ratio_percent(core.fat_sum[muscle, index], core.fat_voxels[muscle, index])
            row |= {
                f"{name}_area_cm2": _rounded(area[muscle, index]),
                f"{name}_fat_fraction_percent": _rounded(mean),
                f"{name}_core_fat_fraction_percent": _rounded(core_mean),
            }
        rows.append(row)
    return rows


def cohort_row(case_id: str, report: dict) -> dict:
    """Flatten a ``muscle_report`` into one CSV row: ``id``, then ``<abbreviation>_<metric>`` for every muscle and
    metric, then ``asym_<pair>_<metric>``; missing values stay None (an empty CSV cell)."""
    row = {"id": case_id}
    for name, entry in report["muscles"].items():
        row |= {
            f"{name}_{key}": value
            for key, value in entry.items()
            if key not in ("label", "name") and not isinstance(value, dict)  # a nested dict stays in the JSON
        }
    for pair, metrics in report["asymmetry"].items():
        row |= {f"asym_{pair}_{metric}": value for metric, value in metrics.items()}
    row["fat_water_swap_suspected"] = report.get("fat_water_swap_suspected")
    return row


BRIGHT_TISSUE_PERCENTILE = 90.0  # the brightest tenth of the body in W + F: mostly subcutaneous fat
SWAP_THRESHOLD_PERCENT = 50.0


def fat_water_swap_check(water: np.ndarray, fat: np.ndarray, fat_fraction: np.ndarray) -> dict:
    """Does the fat image look like water? (a fat/water swap of the Dixon reconstruction or of the file names)

    The brightest tenth of the body's W + F voxels (above the noise floor) is mostly
    subcutaneous fat, whose fat fraction is about 90 %; its median fat fraction below 50 %
    means water and fat are very likely swapped. Returns the median (percent) and the flag.
    Not meaningful for in-phase/opposed-phase input, whose fat fraction cannot exceed 50 %.
    W + F is summed in float32, as the images come: on TUM02, its water/fat swap and 15 phantoms the median read the
    same as in float64, at half the memory (the check runs beside the next case's segmentation).
    """
    body = ~np.isnan(fat_fraction)
    signal = np.asarray(water, np.float32)[body] + np.asarray(fat, np.float32)[body]  # W + F of the body only
    bright = signal >= np.percentile(signal, BRIGHT_TISSUE_PERCENTILE)
    median = 100.0 * float(np.median(fat_fraction[body][bright]))
    return {
        "bright_tissue_fat_fraction_percent": _rounded(median),
        "fat_water_swap_suspected": median < SWAP_THRESHOLD_PERCENT,
    }
