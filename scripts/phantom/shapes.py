"""Geometry the phantom is drawn with: the grid, the subject's frame, profiles along the spine and ellipses.

Array axes are RAS+ (axis 0 towards the subject's right, axis 1 posterior to anterior, axis 2 inferior to
superior) and the affine is diag(spacing) with the volume centred on world (0, 0, 0). Anatomy is described in
millimetres in a per-subject frame (shifted and rotated about the S-I axis), so any grid over the same field of
view shows the same subject.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np


def centred_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """RAS+ affine diag(spacing) whose voxel centres are symmetric about world (0, 0, 0)."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = -0.5 * (np.asarray(shape) - 1) * np.asarray(spacing, float)
    return affine


def world_axes(shape: Sequence[int], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x, y, z (mm) of the voxel centres along each array axis of an axis-aligned affine."""
    return tuple(affine[i, 3] + affine[i, i] * np.arange(shape[i]) for i in range(3))


@dataclass(frozen=True)
class Frame:
    """Voxel centres in the subject's frame: u to the subject's right and v anterior, both (nx, ny, 1)
    float32 mm; z (nz,) mm upwards and the vertebral level of each slice (0 the T12/L1 disc, 5 L5/S1)."""

    u: np.ndarray
    v: np.ndarray
    z: np.ndarray
    level: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.u.shape[0], self.u.shape[1], self.z.size)

    def mirrored(self, sign: float) -> Frame:
        """The frame with u pointing laterally on the side of ``sign``, so one description serves both sides."""
        return replace(self, u=self.u * np.float32(sign))


def subject_frame(
    shape: Sequence[int],
    affine: np.ndarray,
    shift: Sequence[float],
    rotation: float,
    top_z: float,
    pitch: float,
) -> Frame:
    """Undo the subject's shift and S-I rotation (world = R(rotation) * frame + shift); the T12/L1 disc lies at
    frame height ``top_z`` and one vertebra plus its disc spans ``pitch`` mm."""
    x, y, z = (axis - offset for axis, offset in zip(world_axes(shape, affine), shift, strict=True))
    cos, sin = math.cos(rotation), math.sin(rotation)
    u = cos * x[:, None] + sin * y[None, :]
    v = -sin * x[:, None] + cos * y[None, :]
    level = (top_z - z) / pitch
    return Frame(u[..., None].astype(np.float32), v[..., None].astype(np.float32), z, level)


def profile(level: np.ndarray, knots: Sequence[tuple[float, float]]) -> np.ndarray:
    """Piecewise-linear value per slice through (level, value) knots, constant beyond the ends."""
    positions, values = zip(*knots, strict=True)
    return np.interp(level, positions, values)


def semi_axes(area_cm2: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Semi-axes (mm) of an ellipse of the given area whose v semi-axis is ``aspect`` times its u one."""
    a = np.sqrt(100.0 * area_cm2 / (math.pi * aspect))
    return a, aspect * a


@dataclass(frozen=True)
class Ellipse:
    """An axial (super)elliptic cross-section per slice in the subject frame (mm); slices where a semi-axis is
    not positive hold none of it. ``angle`` turns the a axis from +u towards +v."""

    cx: np.ndarray | float
    cy: np.ndarray | float
    a: np.ndarray | float
    b: np.ndarray | float
    angle: float = 0.0
    power: float = 2.0

    def distance(self, frame: Frame) -> tuple[slice, np.ndarray]:
        """The slab of slices that holds the shape and, over it, |u'/a|^p + |v'/b|^p: <= 1 inside, nan in
        slices without the shape."""
        cx, cy, a, b = (
            np.broadcast_to(np.asarray(p, np.float32), frame.z.shape) for p in (self.cx, self.cy, self.a, self.b)
        )
        present = (a > 0) & (b > 0)
        where = np.flatnonzero(present)
        if where.size == 0:
            return slice(0, 0), np.empty(frame.shape[:2] + (0,), np.float32)
        zs = slice(where[0], where[-1] + 1)
        a, b = (np.where(present, axis, np.float32(np.nan))[zs] for axis in (a, b))
        du, dv = frame.u - cx[zs], frame.v - cy[zs]
        if self.angle:
            cos, sin = math.cos(self.angle), math.sin(self.angle)
            du, dv = cos * du + sin * dv, cos * dv - sin * du
        if self.power == 2.0:
            return zs, (du / a) ** 2 + (dv / b) ** 2
        return zs, np.abs(du / a) ** self.power + np.abs(dv / b) ** self.power
