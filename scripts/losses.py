"""Losses of the published recipe that MONAI does not provide."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks import one_hot


class OneHotBCEWithLogitsLoss(torch.nn.Module):
    """Binary cross-entropy of every class channel against the one-hot label (Balerdi et al.).

    ``logits``: (B, C, ...) network output; ``label``: (B, 1, ...) class indices. MONAI's
    ``DiceCELoss`` uses softmax cross-entropy for multi-channel output, not per-channel BCE.
    """

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        target = one_hot(label, num_classes=logits.shape[1], dim=1).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, target)
