"""From the network's class probabilities to the label on the input grid, with work only where muscle can be.

Inference chooses each voxel's label on the case's own input grid: the class probabilities of the network grid
are interpolated trilinearly back to the input grid (MONAI's ``Invertd`` of the preprocessing) and the most
probable class is taken (``AsDiscreted(argmax=True)``); then each muscle keeps only its largest connected piece
(``KeepLargestConnectedComponentd``). Those MONAI steps give the reference result, but on a scan of the published
size they resample 9 channels over 18.5 million voxels and label the whole grid once per muscle (about 9 s of a
15 s scan on 2 CPU cores). The transforms here give the same labels with far less work:

- ``LabelOnInputGridd`` interpolates only inside the box of input voxels where some class other than background
  can win, one axis at a time (the grids differ by axis order, flips, scale and shift only), and takes the argmax
  in slabs, so the full 9-channel volume never exists;
- ``KeepLargestPiecePerMuscled`` runs MONAI's ``KeepLargestConnectedComponent`` for each muscle on that muscle's
  bounding box only.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose, KeepLargestConnectedComponent, MapTransform, Spacingd, allow_missing_keys_mode
from monai.utils import TraceKeys
from scipy import ndimage

from scripts.label_scores import first_argmax
from scripts.labels import MUSCLES

MUSCLE_BOX = "muscle_box"  # label metadata: (start, stop) per array axis of the box that can hold muscle
SURE_BACKGROUND = 0.5  # a background probability above this at every stencil corner leaves no other class a chance
SLAB_ELEMENTS = 2**22  # class-probability values interpolated at once in the last pass (16 MB of float32)


def index_map(network_affine: np.ndarray, grid_affine: np.ndarray) -> tuple[list[int], np.ndarray, np.ndarray]:
    """How input-grid voxel indices map to network-grid indices, axis by axis.

    Returns, for each input array axis j, the network axis it runs along, and the scale and offset with
    network index = scale[j] * input index + offset[j]. Orientation (permute, flip), spacing (scale, shift) and
    padding (shift) map one grid onto the other this way; anything else (a rotation between the grids) is refused.
    """
    mapping = np.linalg.solve(np.asarray(network_affine, np.float64), np.asarray(grid_affine, np.float64))
    linear = mapping[:3, :3]
    axes = [int(np.argmax(np.abs(linear[:, j]))) for j in range(3)]
    scale = np.array([linear[axes[j], j] for j in range(3)])
    off_axis = linear.copy()
    off_axis[axes, range(3)] = 0
    if sorted(axes) != [0, 1, 2] or np.abs(off_axis).max() > 1e-6 * np.abs(scale).min():
        raise ValueError(f"the network grid is not an axis-aligned rescaling of the input grid: {mapping.tolist()}")
    offset = mapping[axes, 3]
    return axes, scale, offset


def _coordinates(scale: float, offset: float, start: int, stop: int, size: int) -> np.ndarray:
    """Network-grid coordinates of input indices start..stop-1, clamped to the grid as ``padding_mode="border"``."""
    return np.clip(scale * np.arange(start, stop) + offset, 0, size - 1)


def muscle_box(
    probabilities: torch.Tensor, axes: list[int], scale: np.ndarray, offset: np.ndarray, shape: Sequence[int]
) -> tuple[tuple[int, int], ...] | None:
    """The input-grid box (start, stop per axis) outside which every voxel is background; None if there is none.

    A voxel's interpolated probabilities are a weighted mean of its up to 8 neighbours on the network grid, so
    where every one of them has a background probability above ``SURE_BACKGROUND`` the voxel's background
    probability is above it too and background wins. The box holds every voxel with a neighbour below that.
    """
    candidates = (probabilities[0] <= SURE_BACKGROUND).numpy()
    if not candidates.any():
        return None
    box = []
    for j in range(3):
        along = candidates.any(axis=tuple(a for a in range(3) if a != axes[j]))
        first, last = np.flatnonzero(along)[[0, -1]]
        coordinate = _coordinates(scale[j], offset[j], 0, shape[j], candidates.shape[axes[j]])
        inside = np.flatnonzero((coordinate > first - 1) & (coordinate < last + 1))
        if inside.size == 0:
            return None
        box.append((int(inside[0]), int(inside[-1]) + 1))
    return tuple(box)


def _stencil(coordinate: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower and upper neighbour indices and the upper neighbour's weight for linear interpolation."""
    lower = np.floor(coordinate).astype(np.int64)
    upper = np.minimum(lower + 1, size - 1)
    weight = (coordinate - lower).astype(np.float32)
    return torch.from_numpy(lower), torch.from_numpy(upper), torch.from_numpy(weight)


def _interpolate_along(values: torch.Tensor, dim: int, coordinate: np.ndarray) -> torch.Tensor:
    """Linear interpolation of ``values`` along ``dim`` at the (clamped) coordinates."""
    lower, upper, weight = _stencil(coordinate, values.shape[dim])
    shape = [1] * values.ndim
    shape[dim] = -1
    low = values.index_select(dim, lower)
    return low.lerp_(values.index_select(dim, upper), weight.view(shape))


def argmax_on_box(
    probabilities: torch.Tensor,
    axes: list[int],
    scale: np.ndarray,
    offset: np.ndarray,
    box: tuple[tuple[int, int], ...],
) -> np.ndarray:
    """The most probable class (uint8) of every input voxel of ``box``, in input axis order.

    Trilinear interpolation is separable: the (C, X', Y', Z') network-grid probabilities are interpolated along
    two network axes first, on the few network voxels the box needs, and along the last one slab by slab, each
    slab reduced to its argmax at once. Ties go to the lower class, as with ``torch.argmax``.
    """
    coordinates = [
        _coordinates(scale[j], offset[j], start, stop, probabilities.shape[1 + axes[j]])
        for j, (start, stop) in enumerate(box)
    ]
    values = probabilities
    for j in range(3):  # crop the network grid to the neighbours the box needs
        dim = 1 + axes[j]
        low, high = int(np.floor(coordinates[j].min())), int(np.ceil(coordinates[j].max())) + 1
        values = values.narrow(dim, low, min(high, values.shape[dim]) - low)
        coordinates[j] = coordinates[j] - low
    last = int(np.argmax([c.size for c in coordinates]))  # the input axis done in slabs
    for j in range(3):
        if j != last:
            values = _interpolate_along(values, 1 + axes[j], coordinates[j])
    dim = 1 + axes[last]
    out_shape = list(values.shape[1:])
    out_shape[axes[last]] = coordinates[last].size
    labels = torch.empty(out_shape, dtype=torch.uint8)
    step = max(1, SLAB_ELEMENTS * values.shape[dim] // values.numel())
    for start in range(0, coordinates[last].size, step):
        chunk = _interpolate_along(values, dim, coordinates[last][start : start + step])
        labels.narrow(dim - 1, start, chunk.shape[dim]).copy_(first_argmax(chunk))
    return labels.permute(*axes).contiguous().numpy()  # input axis j is network axis axes[j]


class LabelOnInputGridd(MapTransform):
    """Replace the class probabilities ``keys`` (C, X', Y', Z') on the network grid by the most probable class
    (uint8, 1 × the input grid) on the grid of ``grid_key`` (an image of the case as loaded).

    The same labels as ``Invertd(keys, transform, orig_keys=orig_key, nearest_interp=False)`` followed by
    ``AsDiscreted(argmax=True)``, up to float rounding at near-ties. What ``transform`` (the preprocessing) did
    after its last ``Spacingd`` (padding, intensity scaling) is undone with MONAI's own inverse, on the small
    network grid; what it did before (reorienting, resampling) is undone as this module's docstring says, with
    the border padding of ``Spacingd``'s inverse. The output carries the metadata of ``orig_key`` with the input
    grid's (that of ``grid_key``), as ``Invertd`` leaves it, and the box that can hold muscle under ``MUSCLE_BOX``.
    """

    def __init__(self, keys: KeysCollection, transform: Compose, grid_key: str, orig_key: str = "image") -> None:
        super().__init__(keys)
        steps = transform.flatten().transforms
        last_resampling = max((i for i, t in enumerate(steps) if isinstance(t, Spacingd)), default=None)
        if last_resampling is None:
            raise ValueError("the preprocessing has no Spacingd: there is no network grid to map back from")
        self.after_resampling = Compose(steps[last_resampling + 1 :])
        self.grid_key, self.orig_key = grid_key, orig_key

    def resampled(self, probabilities: torch.Tensor, image: MetaTensor) -> MetaTensor:
        """The probabilities on the grid ``Spacingd`` made: the later steps of the preprocessing undone."""
        inputs = MetaTensor(
            probabilities, meta=deepcopy(image.meta), applied_operations=deepcopy(image.applied_operations)
        )
        with allow_missing_keys_mode(self.after_resampling):
            inverted = self.after_resampling.inverse({self.orig_key: inputs})[self.orig_key]
        left = [op[TraceKeys.CLASS_NAME] for op in inverted.applied_operations]
        if set(left) - {"Orientation", "SpatialResample"}:
            raise ValueError(f"only reorienting and resampling may come before the last Spacingd, found {left}")
        return inverted

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        grid = d[self.grid_key]
        shape = tuple(grid.shape[1:])
        grid_affine = grid.affine.cpu().numpy()
        for key in self.key_iterator(d):
            probabilities = self.resampled(torch.as_tensor(d[key]).detach().cpu().float(), d[self.orig_key])
            axes, scale, offset = index_map(probabilities.affine.numpy(), grid_affine)
            probabilities = probabilities.as_tensor().contiguous()
            box = muscle_box(probabilities, axes, scale, offset, shape)
            label = np.zeros(shape, np.uint8)
            if box is not None:
                label[tuple(slice(*b) for b in box)] = argmax_on_box(probabilities, axes, scale, offset, box)
            # The loader's metadata of the input grid, plus what the preprocessing added (the case id).
            meta = deepcopy(d[self.orig_key].meta) | deepcopy(grid.meta) | {MUSCLE_BOX: box}
            d[key] = MetaTensor(torch.from_numpy(label)[None], meta=meta)
        return d


class KeepLargestPiecePerMuscled(MapTransform):
    """Keep only the largest connected piece of each muscle in the label ``keys`` (1, X, Y, Z); other voxels of
    that muscle become background, other labels are untouched.

    The result of MONAI's ``KeepLargestConnectedComponentd(applied_labels=muscles, independent=True)``, which this
    runs, but for each muscle on that muscle's bounding box (``scipy.ndimage.find_objects``, one pass) instead of
    the whole grid: a piece never reaches outside its muscle's box.
    """

    def __init__(self, keys: KeysCollection, applied_labels: Sequence[int] = MUSCLES, connectivity: int | None = None):
        super().__init__(keys)
        self.applied_labels = [int(label) for label in applied_labels]
        self.connectivity = connectivity

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key].as_tensor() if isinstance(d[key], MetaTensor) else torch.as_tensor(d[key])
            values = label[0].numpy()
            if not np.issubdtype(values.dtype, np.integer):  # labels as AsDiscreted leaves them: whole floats
                values = values.astype(np.int32)
            boxes = ndimage.find_objects(values, max_label=max(self.applied_labels))
            for muscle in self.applied_labels:
                if boxes[muscle - 1] is None:
                    continue
                part = label[(slice(None), *boxes[muscle - 1])]
                keep = KeepLargestConnectedComponent([muscle], independent=True, connectivity=self.connectivity)
                part.copy_(keep(part.clone()))
        return d
