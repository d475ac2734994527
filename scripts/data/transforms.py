"""Dictionary transforms that MONAI does not provide, for every stage that reads a case: one geometry for all of a
case's images, labels mapped to the bundle's map, in-phase image synthesis."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type

from scripts.data.geometry import Grid
from scripts.errors import InputError
from scripts.labels import ANNOTATED, MUSCLES, NUM_CLASSES, label_file_problems

logger = logging.getLogger(__name__)


def _source(img: MetaTensor) -> str:
    return str(img.meta.get("filename_or_obj", "<in memory>"))


class MatchCaseGeometryd(MapTransform):
    """Give every image of one case the voxel-to-world header of its reference image.

    Dixon water, fat, in-phase and label files of one case come from one acquisition, yet
    exported headers often disagree (a missing sform, an origin of zero, spacing rounded
    differently). The rule:

    - same array shape, directions within 1e-3 and spacing within 1 %
      (``scripts.data.geometry``): the arrays are the same voxels. Any remaining header difference
      (typically the origin) is logged as a warning and the reference header is copied,
      so the images and the label stay voxel-aligned;
    - a different shape, direction or spacing: the images truly differ, and the case is
      refused with an error naming both files.

    The reference is the first of ``keys`` present in the case; image data is untouched.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, MetaTensor]) -> dict[Hashable, MetaTensor]:
        d = dict(data)
        present = list(self.key_iterator(d))
        reference = d[present[0]]
        ref_grid = Grid.from_affine(tuple(reference.shape[1:]), reference.affine.numpy())
        for key in present[1:]:
            img = d[key]
            names = f"{key} {_source(img)} vs {present[0]} {_source(reference)}"
            difference = Grid.from_affine(tuple(img.shape[1:]), img.affine.numpy()).header_difference(ref_grid, names)
            if difference:
                logger.warning("%s; using the header of %s", difference, present[0])
            img.affine = reference.affine.clone()
        return d


class MapLabelsd(MapTransform):
    """Translate a label file's values into this bundle's label map and record which muscles it annotates.

    A case may carry ``label_map`` (its file's values → ours, e.g. ``{"1": 8, "2": 8}``)
    and ``annotated`` (the muscles someone drew, e.g. ``[4, 8]``). Without ``label_map``
    the file must already use labels 0–8; without ``annotated`` every muscle counts as
    drawn. Value 0 is background; muscles of ours that no file value maps to are simply
    absent. A file value that is neither 0 nor in ``label_map`` (or outside 0–8) is an
    error naming the file and the values. The two keys are removed from the case, and a
    boolean mask over the 9 classes (background always true) is stored in the label's
    metadata under ``annotated`` for the partial-label loss.
    """

    def __init__(self, label_key: str = "label") -> None:
        super().__init__([label_key], allow_missing_keys=True)
        self.label_key = label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        label_map = d.pop("label_map", None)
        annotated = d.pop("annotated", None)
        if self.label_key not in d:
            return d
        label = d[self.label_key]
        values = {int(v) for v in torch.unique(label.as_tensor())}
        if problems := label_file_problems(values, label_map, annotated):
            raise InputError(f"label {_source(label)}: " + "; ".join(problems))
        lut = torch.zeros(max(values | {NUM_CLASSES - 1}) + 1, dtype=torch.long)
        mapping = {k: k for k in range(NUM_CLASSES)} if label_map is None else label_map
        for k, v in mapping.items():
            lut[int(k)] = int(v)
        mapped = lut[label.as_tensor().long()]
        label = convert_to_dst_type(mapped, dst=label, dtype=label.dtype)[0]
        drawn = list(MUSCLES) if annotated is None else [int(a) for a in annotated]
        mask = torch.zeros(NUM_CLASSES, dtype=torch.bool)
        mask[[0, *drawn]] = True
        label.meta[ANNOTATED] = mask
        d[self.label_key] = label
        return d


class InPhaseFromWaterFatd(MapTransform):
    """Add ``image`` = water + fat (the Dixon in-phase magnitude) to a case that has no in-phase image.

    The new image shares the water image's header; water and fat are left as they are.
    """

    def __init__(self, image_key: str = "image", water_key: str = "water", fat_key: str = "fat") -> None:
        super().__init__([image_key, water_key, fat_key], allow_missing_keys=True)
        self.image_key, self.water_key, self.fat_key = image_key, water_key, fat_key

    def __call__(self, data: Mapping[Hashable, MetaTensor]) -> dict[Hashable, MetaTensor]:
        d = dict(data)
        if self.image_key not in d:
            d[self.image_key] = d[self.water_key] + d[self.fat_key]
        return d
