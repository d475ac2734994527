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


@dataclass(frozen=True)
class RigidRegistration:
    """Rigid (Euler 3D) registration by normalized cross-correlation, coarse to fine.

    The transform starts by superimposing the centres of the two fields of view. Each
    resolution level shrinks both images by ``shrink_factors[i]`` after a Gaussian of
    ``smoothing_sigmas[i]`` voxels (of the full-resolution image); the correlation is
    computed at a random ``sampling_percentage`` of the fixed image's voxels (drawn from
    ``seed``) with linear interpolation of the moving image, and optimised by regular-step
    gradient descent with steps of up to ``learning_rate`` mm (rotations scaled to the
    shift they cause), for at most ``iterations`` per level.

    Fixed-image points that fall outside the moving image are left out of the metric, so the
    optimizer can raise the correlation by sliding the scans apart along S-I, where the body
    looks much the same, until only a self-similar part overlaps (between phantoms of different
    subjects: 50-100 mm). The moving image is therefore padded with empty space along S-I
    (``OVERLAP_PADDING``), which makes lost overlap cost instead; in-plane, the air around the
    body already does.
    """

    sampling_percentage: float = 0.02
    iterations: int = 200
    shrink_factors: Sequence[int] = (4, 2, 1)
    smoothing_sigmas: Sequence[float] = (2.0, 1.0, 0.0)
    learning_rate: float = 2.0
    min_step: float = 1e-3
    seed: int = 0

    def __call__(self, fixed: sitk.Image, moving: sitk.Image) -> tuple[sitk.Euler3DTransform, float]:
        """The transform that maps points of ``fixed`` to the matching points of ``moving`` (so that
        ``resample(moving, fixed, transform)`` lies on ``fixed``), and the final metric value: minus the
        normalized cross-correlation, -1 for a perfect match, 0 for none. Images are not changed."""
        axis, padding = superior_axis(moving), [0, 0, 0]
        padding[axis] = round(moving.GetSize()[axis] * OVERLAP_PADDING)
        moving = sitk.ConstantPad(moving, padding, padding, 0.0)  # keeps world positions
        method = sitk.ImageRegistrationMethod()
        method.SetMetricAsCorrelation()
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(self.sampling_percentage, self.seed)
        method.SetInterpolator(sitk.sitkLinear)
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=self.learning_rate, minStep=self.min_step, numberOfIterations=self.iterations
        )
        method.SetOptimizerScalesFromPhysicalShift()
        method.SetShrinkFactorsPerLevel(list(self.shrink_factors))
        method.SetSmoothingSigmasPerLevel(list(self.smoothing_sigmas))
        method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        transform = sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
        )
        method.SetInitialTransform(transform, inPlace=True)
        method.Execute(fixed, moving)
        return transform, method.GetMetricValue()
