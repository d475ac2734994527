"""Voxel grids: their size, spacing, axis directions and origin, and the rule for "the same voxels"."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scripts.errors import InputError

SPACING_RTOL = 0.01  # exports of one acquisition round the voxel size differently (TUM02: 1.018 vs 1.019 mm)
DIRECTION_TOL = 1e-3
ORIGIN_TOL_MM = 0.1


def spacing_and_direction(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxel size (mm) and unit direction columns of a 4×4 voxel-to-world affine."""
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    return spacing, linear / spacing


def closest_array_axis(affine: np.ndarray, world_axis: int) -> int:
    """The array axis whose direction runs closest to world axis ``world_axis`` (0 x, 1 y, 2 z; RAS+)."""
    _, direction = spacing_and_direction(affine)
    return int(np.argmax(np.abs(direction[world_axis])))


@dataclass(frozen=True)
class Grid:
    """Where an image's voxels lie: array shape, voxel size (mm), direction cosines and origin (mm)."""

    shape: tuple[int, ...]
    spacing: np.ndarray
    direction: np.ndarray
    origin: np.ndarray

    @classmethod
    def from_affine(cls, shape: tuple[int, ...], affine: np.ndarray) -> Grid:
        spacing, direction = spacing_and_direction(affine)
        return cls(tuple(shape), spacing, direction, np.asarray(affine, np.float64)[:3, 3])

    def header_difference(self, reference: Grid, names: str) -> str | None:
        """Compare with the grid of another file of the same case.

        Same shape, directions within ``DIRECTION_TOL`` and spacing within ``SPACING_RTOL``
        are the same voxels: returns None when the headers agree too, else a warning naming
        what differs (typically the origin), for the caller to copy the reference's header.
        Anything else means the files truly differ: ``InputError`` naming them (``names``).
        """
        if self.shape != reference.shape:
            raise InputError(f"{names}: shapes differ ({self.shape} vs {reference.shape})")
        if np.abs(self.direction - reference.direction).max() > DIRECTION_TOL:
            raise InputError(f"{names}: orientations differ (directions {self.direction} vs {reference.direction})")
        if np.abs(self.spacing / reference.spacing - 1).max() > SPACING_RTOL:
            raise InputError(f"{names}: voxel sizes differ ({self.spacing} vs {reference.spacing} mm)")
        shift = float(np.abs(self.origin - reference.origin).max())
        if shift <= ORIGIN_TOL_MM and np.allclose(self.spacing, reference.spacing, rtol=1e-6):
            return None
        return (
            f"{names}: same voxel grid but headers differ (origin by up to {shift:.1f} mm, spacing "
            f"{np.round(self.spacing, 4)} vs {np.round(reference.spacing, 4)} mm)"
        )
