"""From class scores to labels, for every stage that turns the network's output into muscles: the winning class of
each voxel, and how well two passes (the scan's own and its mirror's) agree per muscle."""

from __future__ import annotations

import torch

from scripts.labels import MUSCLES

FLIP_AGREEMENT = "flip_agreement"  # metadata key of the prediction: per-muscle Dice of the two flip passes


def first_argmax(values: torch.Tensor) -> torch.Tensor:
    """``values.argmax(dim=0)`` as uint8 (the lowest class among equal maxima), by a running maximum over the
    classes: several times faster than ``torch.argmax`` across the leading dimension on the CPU."""
    best = values[0].clone()
    winner = torch.zeros(best.shape, dtype=torch.uint8)
    for index in range(1, values.shape[0]):
        winner.masked_fill_(values[index] > best, index)
        torch.maximum(best, values[index], out=best)
    return winner


def flip_agreement(direct: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
    """Per case and muscle (B, 8): Dice of the argmax labels of two class-score tensors (B, 9, ...); 1 where
    neither pass finds the muscle."""
    a, b = (first_argmax(scores.movedim(1, 0)) for scores in (direct, mirrored))
    scores = []
    for muscle in MUSCLES:
        in_a, in_b = (a == muscle).flatten(1), (b == muscle).flatten(1)
        both = (in_a & in_b).sum(1).float()
        total = (in_a.sum(1) + in_b.sum(1)).float()
        scores.append(torch.where(total > 0, 2 * both / total.clamp_min(1), torch.ones_like(total)))
    return torch.stack(scores, dim=1)
