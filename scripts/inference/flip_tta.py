"""Left-right flip test-time augmentation: segment the scan and its mirror image, and average the two."""

from __future__ import annotations

from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

from scripts.data.geometry import closest_array_axis
from scripts.label_scores import FLIP_AGREEMENT, flip_agreement
from scripts.labels import SWAP_LEFT_RIGHT


class LeftRightFlipInferer(Inferer):
    """Run ``inferer`` on the batch and on its left-right mirror, and return the log of the mean probabilities.

    The mirror reverses the array axis closest to world x (the subject's left-right, read from the batch's affine;
    array axis 0 when the input carries none, as after ``Orientationd`` to RAS). In the mirrored scan the subject's
    left muscles lie where the right ones were, so its class scores are mirrored back and its left and right
    channels swapped (1-4 with 5-8) before the softmax probabilities of both passes are averaged. The output is the
    log of that average, so a softmax downstream (as in the bundle's postprocessing) gives the average itself and an
    argmax picks the same label. MONAI's ``TestTimeAugmentation`` inverts random transforms of the input but knows
    nothing of sided labels, hence this class. How well the two passes agree on each muscle (``flip_agreement``,
    one row of 8 Dice values per case) is left in the output's metadata under ``FLIP_AGREEMENT`` for the
    muscle confidence (``scripts.report.confidence``).
    """

    def __init__(self, inferer: Inferer) -> None:
        super().__init__()
        self.inferer = inferer

    @staticmethod
    def mirror_dim(inputs: torch.Tensor) -> int:
        """The tensor dimension (batch, channel, x, y, z) that holds the subject's left-right."""
        if isinstance(inputs, MetaTensor):
            affine = inputs.affine
            affine = affine[0] if affine.ndim == 3 else affine
            return 2 + closest_array_axis(affine.cpu().numpy(), 0)
        return 2

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        dim = self.mirror_dim(inputs)
        direct = torch.softmax(self.inferer(inputs, network, *args, **kwargs).float(), dim=1)
        mirrored = self.inferer(torch.flip(inputs, dims=(dim,)), network, *args, **kwargs)
        swap = torch.as_tensor(SWAP_LEFT_RIGHT, device=mirrored.device)
        mirrored = torch.softmax(torch.flip(mirrored, dims=(dim,)).float(), dim=1)[:, swap]
        output = torch.log(((direct + mirrored) / 2).clamp_min(1e-8))
        if isinstance(output, MetaTensor):
            plain = [t.as_subclass(torch.Tensor) for t in (direct, mirrored)]  # no metadata inside the metadata
            output.meta[FLIP_AGREEMENT] = flip_agreement(*plain).cpu()
        return output
