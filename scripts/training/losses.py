"""The training loss: the published binary cross-entropy (or Dice + cross-entropy), marginalised for partial labels."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from monai.networks import one_hot

from scripts.labels import ANNOTATED


def annotation_mask(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, C) boolean mask of the classes drawn in each case; every class where the label carries none."""
    mask = getattr(label, "meta", {}).get(ANNOTATED)
    if mask is None:
        return torch.ones(label.shape[0], num_classes, dtype=torch.bool, device=label.device)
    return torch.as_tensor(mask, device=label.device).reshape(label.shape[0], num_classes).bool()


def merge_unannotated(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Add the probability of every class not drawn in a case to background, and zero those classes.

    ``probs``: (B, C, ...) softmax probabilities; ``mask``: (B, C), background always true.
    On a case where psoas was not drawn, "psoas" and "background" become one outcome, so
    predicting psoas there is not punished (the marginal loss of Shi et al., 2021).
    """
    keep = mask.reshape(*mask.shape, *([1] * (probs.ndim - 2))).to(probs.dtype)
    merged = probs * keep
    merged[:, 0] = probs[:, 0] + (probs * (1 - keep)).sum(dim=1)
    return merged


class MarginalLoss(torch.nn.Module):
    """Segmentation loss for fully and partially annotated cases.

    ``kind="bce"``: binary cross-entropy between the softmax class probabilities and the
    one-hot label, averaged over classes and voxels (the published loss);
    ``kind="dicece"``: Dice loss plus cross-entropy. For a partially annotated case (its
    label's ``annotated`` mask, set by ``MapLabelsd``), classes not drawn are merged into
    background before the loss and left out of its average; a fully annotated case gets
    the plain loss. MONAI has no marginal loss, hence this module.

    ``logits``: (B, C, ...) network output; ``label``: (B, 1, ...) class indices.
    """

    def __init__(self, kind: str = "bce", eps: float = 1e-6) -> None:
        super().__init__()
        if kind not in ("bce", "dicece"):
            raise ValueError(f"loss must be 'bce' or 'dicece', got {kind!r}")
        self.kind = kind
        self.eps = eps
        self.dice = DiceLoss(include_background=True, reduction="none")

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        mask = annotation_mask(label, num_classes)
        probs = merge_unannotated(torch.softmax(logits.float(), dim=1), mask)
        target = one_hot(torch.as_tensor(label), num_classes=num_classes, dim=1).float()
        weight = mask.float()  # (B, C): which classes enter the average
        if self.kind == "bce":
            p = probs.clamp(self.eps, 1 - self.eps)
            per_class = -(target * p.log() + (1 - target) * (1 - p).log()).flatten(2).mean(dim=2)
            return (per_class * weight).sum() / weight.sum()
        cross_entropy = -(target * probs.clamp_min(self.eps).log()).sum(dim=1).mean()
        dice = self.dice(probs, target).reshape(weight.shape)
        return cross_entropy + (dice * weight).sum() / weight.sum()
