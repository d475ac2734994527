"""Rigid registration of one subject to the reference subject, and resampling onto the cohort's common grid.

The published method registers every scan to one reference scan (SimpleITK, rigid, normalized
cross-correlation) and then halves the in-plane resolution. Here the two steps share one
resampling: each image is mapped through its subject's transform straight onto the target grid,
the reference's field of view sampled at the target spacing, so it is interpolated only once.

SimpleITK works in LPS world coordinates; poses are reported in the bundle's RAS+ convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

# LPS <-> RAS: world x and y change sign. Conjugating a rotation by this flip negates its angles about x and y,
# so one sign vector converts both the Euler angles and the translation.
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
# Empty space added before and after the moving image along S-I, as a share of its extent (see RigidRegistration).
OVERLAP_PADDING = 0.25


def superior_axis(image: sitk.Image) -> int:
    """The voxel axis that runs closest to world S-I (z in both LPS and RAS)."""
    return int(np.argmax(np.abs(np.asarray(image.GetDirection()).reshape(3, 3)[2])))


def target_grid(reference: sitk.Image, spacing: Sequence[float]) -> sitk.Image:
    """An empty image (no voxel data worth reading) that covers the reference's field of view, from the outer
    edge of its first voxel to that of its last, along the reference's axes at ``spacing`` mm."""
    old_spacing = np.asarray(reference.GetSpacing())
    new_spacing = np.asarray(spacing, dtype=float)
    size = np.maximum(1, np.round(np.asarray(reference.GetSize()) * old_spacing / new_spacing)).astype(int)
    direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    # Voxel centres sit half a voxel inside the field of view's corner, so the first centre moves with the spacing.
    origin = np.asarray(reference.GetOrigin()) + direction @ ((new_spacing - old_spacing) / 2)
    grid = sitk.Image([int(n) for n in size], sitk.sitkUInt8)
    grid.SetSpacing(new_spacing.tolist())
    grid.SetOrigin(origin.tolist())
    grid.SetDirection(reference.GetDirection())
    return grid


def resample(image: sitk.Image, grid: sitk.Image, transform: sitk.Transform, is_label: bool = False) -> sitk.Image:
    """``image`` moved by ``transform`` onto ``grid``: an image by linear interpolation as float32, a label by
    nearest neighbour as uint8 (so no new label values appear); voxels outside ``image`` become 0."""
    if is_label:
        return sitk.Resample(image, grid, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.Resample(image, grid, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


@dataclass(frozen=True)
class Pose:
    """Where a subject lies relative to the reference, in RAS+ world coordinates: rotation angles (degrees)
    about x, y and z, composed as ``sitk.Euler3DTransform`` does (matrix Rz·Rx·Ry: about y first, then x,
    then z) about the centre of the reference's field of view, and the displacement (mm) of that centre."""

    angles_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]

    @classmethod
    def of(cls, transform: sitk.Euler3DTransform) -> Pose:
        # + 0.0 turns the -0.0 of a flipped zero into 0.0
        angles = np.degrees([transform.GetAngleX(), transform.GetAngleY(), transform.GetAngleZ()]) * LPS_TO_RAS + 0.0
        translation = np.asarray(transform.GetTranslation()) * LPS_TO_RAS + 0.0
        return cls(tuple(angles.tolist()), tuple(translation.tolist()))

    def transform(self, centre: Sequence[float]) -> sitk.Euler3DTransform:
        """The transform of this pose about ``centre`` (LPS, mm): the inverse of ``Pose.of``."""
        angles = np.radians(self.angles_deg) * LPS_TO_RAS
        translation = np.asarray(self.translation_mm, dtype=float) * LPS_TO_RAS
        return sitk.Euler3DTransform([float(c) for c in centre], *angles.tolist(), translation.tolist())


INITIALIZERS = {
    "geometry": sitk.CenteredTransformInitializerFilter.GEOMETRY,
    "moments": sitk.CenteredTransformInitializerFilter.MOMENTS,
}


def field_of_view_centre(image: sitk.Image) -> np.ndarray:
    """World point (LPS, mm) at the centre of ``image``'s voxel grid."""
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))


def recentred(transform: sitk.Euler3DTransform, centre: Sequence[float]) -> sitk.Euler3DTransform:
    """The same mapping as ``transform``, expressed as a rotation about ``centre`` and the shift of ``centre``."""
    moved = np.asarray(transform.TransformPoint([float(c) for c in centre]))
    angles = (transform.GetAngleX(), transform.GetAngleY(), transform.GetAngleZ())
    return sitk.Euler3DTransform([float(c) for c in centre], *angles, (moved - np.asarray(centre)).tolist())


@dataclass(frozen=True)
class RigidRegistration:
    """Rigid (Euler 3D) registration, coarse to fine, by Mattes mutual information or normalized cross-correlation.

    The transform starts by superimposing the centres of the two fields of view (``initializer="geometry"``) or
    the two images' centres of mass (``"moments"``). The coarsest level runs from there ``starts`` times, each
    with its own random samples, and the start that ends with the best metric on the finest level's samples goes
    on to the finer levels: between phantoms of different body sizes, one sample draw in two ended with the
    muscles at Dice 0.43-0.49 to the reference's, the other at 0.90-0.92, and its metric told them apart. Five
    starts, because with three one subject in five of ``scripts.tools.registration_benchmark``'s cohort still came back
    34 mm off (caught by the check), with five none did; initializing by the centres of mass instead made two of
    five wander. Each resolution level shrinks both images by ``shrink_factors[i]`` after a Gaussian of
    ``smoothing_sigmas[i]`` voxels (of the full-resolution image); the metric is computed at a random
    ``sampling_percentage`` of the fixed image's voxels (drawn from ``seed``) with linear interpolation of the
    moving image, and optimised by regular-step gradient descent with steps of up to ``learning_rate`` mm
    (rotations scaled to the shift they cause), for at most ``iterations`` per level.

    ``metric="mattes"`` (``histogram_bins`` bins) is the default; the published method's ``"correlation"`` found
    poses with a higher correlation but muscles further apart than no registration at all between phantoms of
    different body sizes: subcutaneous fat 4-45 mm thick, bodies that fill the field of view or not, make the
    correlation of in-phase intensities a poor guide across subjects (measured with
    ``scripts.tools.registration_benchmark``; see the README).

    Fixed-image points that fall outside the moving image are left out of the metric, so the
    optimizer can raise it by sliding the scans apart along S-I, where the body looks much the
    same, until only a self-similar part overlaps (between phantoms of different subjects:
    50-100 mm). The moving image is therefore padded with empty space along S-I
    (``OVERLAP_PADDING``), which makes lost overlap cost instead; in-plane, the air around the
    body already does.
    """

    sampling_percentage: float | Sequence[float] = 0.02
    iterations: int = 200
    shrink_factors: Sequence[int] = (4, 2, 1)
    smoothing_sigmas: Sequence[float] = (2.0, 1.0, 0.0)
    learning_rate: float = 2.0
    min_step: float = 1e-3
    seed: int = 0
    metric: str = "mattes"
    histogram_bins: int = 32
    initializer: str = "geometry"
    starts: int = 5

    def __post_init__(self) -> None:
        if self.metric not in ("mattes", "correlation"):
            raise ValueError(f"registration metric must be 'mattes' or 'correlation', not {self.metric!r}")
        if self.initializer not in INITIALIZERS:
            raise ValueError(
                f"registration initializer must be one of {sorted(INITIALIZERS)}, not {self.initializer!r}"
            )

    def method(self, levels: slice, seed: int) -> sitk.ImageRegistrationMethod:
        """The registration method of these settings over the resolution ``levels``, sampling from ``seed``."""
        method = sitk.ImageRegistrationMethod()
        if self.metric == "mattes":
            method.SetMetricAsMattesMutualInformation(self.histogram_bins)
        else:
            method.SetMetricAsCorrelation()
        method.SetMetricSamplingStrategy(method.RANDOM)
        percentages = self.sampling_percentage
        if isinstance(percentages, int | float):
            percentages = [percentages] * len(self.shrink_factors)
        # SimpleITK takes a seed of 0 to mean "from the clock": shifted by one, every seed repeats its samples
        method.SetMetricSamplingPercentagePerLevel([float(p) for p in percentages][levels], seed + 1)
        method.SetInterpolator(sitk.sitkLinear)
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=self.learning_rate, minStep=self.min_step, numberOfIterations=self.iterations
        )
        method.SetOptimizerScalesFromPhysicalShift()
        method.SetShrinkFactorsPerLevel(list(self.shrink_factors)[levels])
        method.SetSmoothingSigmasPerLevel(list(self.smoothing_sigmas)[levels])
        method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        return method

    def __call__(self, fixed: sitk.Image, moving: sitk.Image) -> tuple[sitk.Euler3DTransform, float]:
        """The transform that maps points of ``fixed`` to the matching points of ``moving`` (so that
        ``resample(moving, fixed, transform)`` lies on ``fixed``), as a rotation about the centre of ``fixed``'s
        field of view, and the final metric value: minus the mutual information (nats) or minus the normalized
        cross-correlation (-1 for a perfect match); 0 for none. Images are not changed."""
        axis, padding = superior_axis(moving), [0, 0, 0]
        padding[axis] = round(moving.GetSize()[axis] * OVERLAP_PADDING)
        moving = sitk.ConstantPad(moving, padding, padding, 0.0)  # keeps world positions
        initial = sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Euler3DTransform(), INITIALIZERS[self.initializer]
        )
        # The coarsest level, where the optimiser wanders off when it does, once per start (each its own samples);
        # the start that ends best on common samples of the full images goes on to the finer levels.
        judge = self.method(slice(-1, None), self.seed)
        candidates = []
        for start in range(self.starts):
            transform = sitk.Euler3DTransform(initial)
            coarse = self.method(slice(0, 1), self.seed + start)
            coarse.SetInitialTransform(transform, inPlace=True)
            coarse.Execute(fixed, moving)
            judge.SetInitialTransform(transform)
            candidates.append((judge.MetricEvaluate(fixed, moving), start, transform, coarse))
        _, _, transform, method = min(candidates)
        if len(self.shrink_factors) > 1:
            method = self.method(slice(1, None), self.seed)
            method.SetInitialTransform(transform, inPlace=True)
            method.Execute(fixed, moving)
        return recentred(transform, field_of_view_centre(fixed)), method.GetMetricValue()


def tissue_classes(image: sitk.Image, levels: Sequence[float]) -> sitk.Image:
    """``image`` cut into classes at ``levels`` (shares of its 99th percentile, rising), uint8: 0 below the
    first, 1 up to the second, and so on. With (0.05, 0.4) on an in-phase image: air 0; lean tissue (muscle,
    organs, vessels; muscle sits at about 0.17 of subcutaneous fat) 1; fat, marrow, fluid 2."""
    scale = float(np.percentile(sitk.GetArrayViewFromImage(image), 99))
    classes = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    classes.CopyInformation(image)
    for level in levels:
        classes += sitk.Cast(image > level * scale, sitk.sitkUInt8)
    return classes


def rotation_degrees(transform: sitk.Euler3DTransform) -> float:
    """The angle (degrees) of ``transform``'s rotation, about whichever axis it turns."""
    matrix = np.asarray(transform.GetMatrix()).reshape(3, 3)
    return float(np.degrees(np.arccos(np.clip((np.trace(matrix) - 1) / 2, -1.0, 1.0))))


def overlap(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> float:
    """Dice, over all their values but 0 together, of classes or labels ``fixed`` and ``moving`` moved by
    ``transform`` onto them (``resample``)."""
    measures = sitk.LabelOverlapMeasuresImageFilter()
    measures.Execute(fixed, resample(moving, fixed, transform, is_label=True))
    return measures.GetDiceCoefficient()


@dataclass(frozen=True)
class RegistrationCheck:
    """Whether a registration result is possible, judged by what it does rather than by the metric it reached.

    Fails a transform that rotates by more than ``max_rotation_deg``; that leaves the fixed field of view's centre
    further from the moving field of view's centre than ``max_shift_fraction`` of the fixed field of view's
    extent along any of its axes (the fields of view must still largely overlap); or after which the tissues
    (``tissue_classes`` at ``tissue_levels``: the body split into lean and bright tissue), or the labels where
    both scans have one, overlap less (Dice over their classes) than with no registration at all (the scans as
    the world coordinates of their headers place them), by more than ``overlap_tolerance``.

    Tissues rather than the whole body: between phantoms of different body sizes, registrations that took the
    muscles from a Dice of 0.75 to 0.30-0.53 to the reference's raised the overlap of the body masks, and lowered
    that of the tissue classes by 0.02-0.05 (``scripts.tools.registration_benchmark``). The tolerance is 0: in that
    cohort the correct registrations raised the tissue overlap by 0.007-0.24, one that moved the muscles from 0.69
    to 0.62 lowered it by 0.007, and registering a phantom to a copy of itself moved by 0.3 degrees and 0.5 mm
    left it where it was.
    """

    max_rotation_deg: float = 15.0
    max_shift_fraction: float = 0.25
    tissue_levels: Sequence[float] = (0.05, 0.4)
    overlap_tolerance: float = 0.0

    def __call__(
        self,
        fixed: sitk.Image,
        moving: sitk.Image,
        transform: sitk.Euler3DTransform,
        fixed_label: sitk.Image | None = None,
        moving_label: sitk.Image | None = None,
    ) -> dict:
        """``tissue_dice_before``/``_after`` and, given both labels, ``label_dice_before``/``_after``, and
        ``reason``: why the result fails, or None."""
        masks = {"tissue": (tissue_classes(fixed, self.tissue_levels), tissue_classes(moving, self.tissue_levels))}
        if fixed_label is not None and moving_label is not None:
            masks["label"] = (fixed_label, moving_label)
        found, reasons = {}, []
        for name, (fixed_mask, moving_mask) in masks.items():
            before = found[f"{name}_dice_before"] = overlap(fixed_mask, moving_mask, sitk.Euler3DTransform())
            after = found[f"{name}_dice_after"] = overlap(fixed_mask, moving_mask, transform)
            if after < before - self.overlap_tolerance:
                reasons.append(
                    f"{name} overlap (Dice) {after:.3f} after registration is worse than {before:.3f} without"
                )
        direction = np.asarray(fixed.GetDirection()).reshape(3, 3)
        extent = np.asarray(fixed.GetSize()) * np.asarray(fixed.GetSpacing())
        centre = field_of_view_centre(fixed)
        # the offset, along the fixed grid's axes, from the moving field of view's centre to where the fixed one's
        # landed in the moving scan
        offset = direction.T @ (np.asarray(transform.TransformPoint(centre.tolist())) - field_of_view_centre(moving))
        if (angle := rotation_degrees(transform)) > self.max_rotation_deg:
            reasons.insert(0, f"rotation {angle:.1f} deg exceeds {self.max_rotation_deg:g} deg")
        if np.any(np.abs(offset) > self.max_shift_fraction * extent):
            reasons.insert(
                0,
                f"fields of view {np.round(np.abs(offset)).astype(int).tolist()} mm apart along the reference's axes "
                f"exceed {self.max_shift_fraction:g} of its extent {np.round(extent).astype(int).tolist()} mm",
            )
        return found | {"reason": "; ".join(reasons) or None}
