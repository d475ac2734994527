"""Muscle borders drawn on the scan's own voxels: the outer border moved off the fat around each muscle.

The network decides on a coarse grid (3.75 × 3.75 × 7.8 mm for the shipped weights); interpolated back to a 1 mm
input grid, its border can run through the fat around the muscle, and those fatty voxels raise the muscle's mean
fat fraction. ``FatConnectedBorderd`` takes such voxels off the label, on the input grid, where the Dixon images
say they are fat:

- only the muscle's outer band may change: its voxels within one network voxel of the muscle's border (distances
  measured in network voxels, so 3.75 mm in-plane and 7.8 mm across slices for the shipped weights);
- a band voxel leaves the muscle when it is fatter than the muscle itself, above ``FAT_SHARE`` of the way from the
  muscle's own level (the median of its inner part) to the level of the fat around it (the ``FAT_PERCENTILE``
  percentile of the background within one network voxel outside), **and** it is connected, through voxels that
  fat, to background outside the muscle: fat inside the muscle that does not reach the fat around it stays, and a
  muscle that is fatty through and through keeps its level, as its threshold rises with it.

The image it reads is the fat fraction F / (W + F) where water and fat images are given, else the in-phase image
(fat is bright in it too); both are on the label's grid. Voxels that leave become background; other muscles, the
borders between muscles and the grid's edge (where the field of view cuts a muscle) are left as they are.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import MapTransform
from scipy import ndimage

from scripts.labels import MUSCLES

FAT_SHARE = 0.7  # the threshold's place between the muscle's level (0) and that of the fat around it (1)
FAT_PERCENTILE = 90.0  # of the background next to the muscle: its fat, whatever else lies there too
MIN_INNER_VOXELS = 20  # a muscle thinner than its band takes its level from all its voxels


def fat_image(water: np.ndarray | None, fat: np.ndarray | None, inphase: np.ndarray) -> np.ndarray:
    """The image the border follows (float32): F / (W + F) (0 where W + F is 0) with water and fat, else in-phase."""
    if water is None or fat is None:
        return np.asarray(inphase, np.float32)
    water, fat = np.asarray(water, np.float32), np.asarray(fat, np.float32)
    total = water + fat
    return np.divide(fat, total, out=np.zeros_like(total), where=total > 0)


def fat_connected_border(
    label: np.ndarray, image: np.ndarray, sampling: Sequence[float], muscles: Sequence[int] = MUSCLES
) -> np.ndarray:
    """``label`` (3-D, integer) with each muscle's fat-connected outer band set to background (see the module
    docstring); ``image``: ``fat_image`` on the same grid; ``sampling``: the input voxel size in network voxels
    per array axis. Returns a new array; each muscle is worked on inside its own box."""
    label = label.copy()
    sampling = np.asarray(sampling, np.float64)
    margin = np.ceil(1.0 / sampling).astype(int) + 1
    boxes = ndimage.find_objects(label, max_label=max(muscles))
    for muscle in muscles:
        if boxes[muscle - 1] is None:
            continue
        box = tuple(
            slice(max(b.start - m, 0), min(b.stop + m, n))
            for b, m, n in zip(boxes[muscle - 1], margin, label.shape, strict=True)
        )
        part, values = label[box], image[box]
        inside = part == muscle
        band = inside & (ndimage.distance_transform_edt(inside, sampling=sampling) <= 1.0)
        background = part == 0
        around = background & (ndimage.distance_transform_edt(~inside, sampling=sampling) <= 1.0)
        inner = inside & ~band
        if not around.any():
            continue
        own = float(np.median(values[inner if inner.sum() >= MIN_INNER_VOXELS else inside]))
        surrounding = float(np.percentile(values[around], FAT_PERCENTILE))
        if surrounding <= own:
            continue
        fatty = values > own + FAT_SHARE * (surrounding - own)
        pieces, _ = ndimage.label(fatty & (band | background))
        reaching_out = np.unique(pieces[fatty & background])
        part[band & np.isin(pieces, reaching_out[reaching_out > 0])] = 0
    return label


class FatConnectedBorderd(MapTransform):
    """Move each muscle's outer border of the label ``keys`` (1, X, Y, Z, on the input grid) off the fat around
    it, within one network voxel (``fat_connected_border``). Reads the case's ``water`` and ``fat`` images, else
    its ``inphase`` image, on the same grid; they are not changed. ``network_spacing``: the network grid's voxel
    size in mm (the model card's)."""

    def __init__(
        self,
        keys: KeysCollection,
        network_spacing: Sequence[float],
        water_key: str = "water",
        fat_key: str = "fat",
        inphase_key: str = "inphase",
    ) -> None:
        super().__init__(keys)
        self.network_spacing = np.asarray(network_spacing, np.float64)
        self.water_key, self.fat_key, self.inphase_key = water_key, fat_key, inphase_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)

        def volume(key: str) -> np.ndarray | None:
            return None if d.get(key) is None else torch.as_tensor(d[key])[0].detach().cpu().numpy()

        image = fat_image(volume(self.water_key), volume(self.fat_key), volume(self.inphase_key))
        for key in self.key_iterator(d):
            label = d[key]
            spacing = affine_to_spacing(label.affine, r=3).numpy()
            moved = fat_connected_border(label.as_tensor()[0].numpy(), image, spacing / self.network_spacing)
            d[key] = MetaTensor(torch.from_numpy(moved)[None], meta=label.meta)
        return d
