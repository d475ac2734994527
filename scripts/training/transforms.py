"""Transforms used only in training: the label-swapping left-right flip of the published augmentation."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_dst_type

from scripts.data.geometry import closest_array_axis
from scripts.labels import ANNOTATED, SWAP_LEFT_RIGHT


class RandLeftRightFlipd(RandomizableTransform, MapTransform):
    """Mirror the subject left to right and swap left labels (1–4) with right ones (5–8).

    The array is reversed along the axis closest to world x while the affine is kept, so
    the result is a plausible mirrored subject: the muscle now on the subject's left is
    the one labelled left. MONAI's ``RandFlipd`` also flips the affine (so world anatomy
    is unchanged) and knows nothing of sided labels, hence this transform. The label's
    annotation mask (see ``MapLabelsd``) is mirrored the same way.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: Sequence[str] = ("label",),
        prob: float = 0.5,
        allow_missing_keys: bool = True,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.label_keys = tuple(label_keys)

    def __call__(self, data: Mapping[Hashable, MetaTensor]) -> dict[Hashable, MetaTensor]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        keys = list(self.key_iterator(d))
        dim = 1 + closest_array_axis(d[keys[0]].affine.numpy(), 0)  # world x, the subject's left-right; +1: channel
        for key in keys:
            flipped = torch.flip(d[key], dims=(dim,))
            if key in self.label_keys:
                lut = torch.as_tensor(SWAP_LEFT_RIGHT, device=flipped.device)
                flipped = convert_to_dst_type(lut[flipped.as_tensor().long()], dst=flipped)[0]
                if ANNOTATED in flipped.meta:  # a left annotation becomes a right one
                    flipped.meta[ANNOTATED] = flipped.meta[ANNOTATED][SWAP_LEFT_RIGHT]
            d[key] = flipped
        return d
