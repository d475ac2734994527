"""Render a synthetic case afresh from its tissue map with a random contrast: shape is taught, not one contrast.

The idea is SynthSeg's (Billot et al., "SynthSeg: Segmentation of brain MRI scans of any contrast and resolution
without retraining", Medical Image Analysis 2023): draw a random mean and spread of intensity for every tissue each
time a training case is drawn, so that the network cannot lean on any one contrast and has to find the muscles by
their shape and their place among the other tissues. Bias field, blur (slice thickness), noise and gamma come after,
from MONAI's own transforms in the training config. Real scans carry no tissue map and keep their own intensities.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, ScaleIntensityRangePercentiles
from monai.utils import convert_to_dst_type


class RandTissueContrastd(RandomizableTransform, MapTransform):
    """Replace the image by a new rendering of the case's tissue map; drop the tissue map from the case.

    With probability ``prob``, each tissue id present in ``tissue_key`` gets a mean intensity drawn uniformly from
    [0, 1] and a within-tissue spread (standard deviation of independent Gaussian voxel noise) drawn from
    [0, ``max_spread``] of that mean; air (id 0) gets a mean from [0, ``max_air``], because every MR magnitude image
    is dark outside the body and the body outline is a cue real scans always give. With probability
    ``share_prob`` the tissues of each group in ``groups`` share one draw (all skeletal muscle looks alike in a real
    scan, so the network must also learn muscle borders that no intensity step marks). The result is scaled like the
    network's input (1st and 99th percentiles to 0 and 1) and keeps the image's metadata. The label is untouched:
    it comes from the same tissue map. A case without a tissue map is returned as it is; the tissue map is always
    removed, so that cases with and without one can share a batch.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        tissue_key: str = "tissue",
        prob: float = 0.8,
        max_spread: float = 0.15,
        max_air: float = 0.1,
        groups: Sequence[Sequence[int]] = (),
        share_prob: float = 0.5,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        RandomizableTransform.__init__(self, prob)
        self.tissue_key = tissue_key
        self.max_spread, self.max_air, self.share_prob = max_spread, max_air, share_prob
        self.groups = [tuple(int(t) for t in group) for group in groups]
        self.scale = ScaleIntensityRangePercentiles(lower=1, upper=99, b_min=0.0, b_max=1.0, clip=False)

    def draw_intensities(self, tissues: Sequence[int]) -> dict[int, tuple[float, float]]:
        """(mean, standard deviation) of each tissue id."""
        drawn = {}
        for tissue in tissues:
            mean = self.R.uniform(0.0, self.max_air if tissue == 0 else 1.0)
            drawn[tissue] = (mean, mean * self.R.uniform(0.0, self.max_spread))
        for group in self.groups:
            present = [t for t in group if t in drawn]
            if present and self.R.uniform() < self.share_prob:
                for tissue in present[1:]:
                    drawn[tissue] = drawn[present[0]]
        return drawn

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        tissue_map = d.pop(self.tissue_key, None)
        self.randomize(None)
        if tissue_map is None or not self._do_transform:
            return d
        tissue = torch.as_tensor(tissue_map).long()
        ids = torch.unique(tissue).tolist()
        drawn = self.draw_intensities(ids)
        mean, spread = torch.zeros(max(ids) + 1), torch.zeros(max(ids) + 1)
        for t, (m, s) in drawn.items():
            mean[t], spread[t] = m, s
        mean, spread = mean.to(tissue.device), spread.to(tissue.device)
        noise = torch.as_tensor(self.R.standard_normal(tuple(tissue.shape)), dtype=torch.float32, device=tissue.device)
        rendered = self.scale(mean[tissue] + spread[tissue] * noise)
        for key in self.key_iterator(d):
            d[key] = convert_to_dst_type(torch.as_tensor(rendered), dst=d[key], dtype=torch.float32)[0]
        return d
