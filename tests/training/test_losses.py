"""The marginal loss: the plain loss on full labels, blind to classes a partial label did not draw."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.losses import DiceCELoss

from scripts.labels import ANNOTATED, NUM_CLASSES
from scripts.training.losses import MarginalLoss


def _case(annotated: list[int] | None, seed: int = 0) -> tuple[torch.Tensor, MetaTensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, NUM_CLASSES, 6, 6, 4, generator=gen)
    values = torch.tensor([0, 4, 8]) if annotated else torch.arange(NUM_CLASSES)
    label = MetaTensor(values[torch.randint(0, len(values), (1, 1, 6, 6, 4), generator=gen)].float())
    if annotated:
        mask = torch.zeros(NUM_CLASSES, dtype=torch.bool)
        mask[[0, *annotated]] = True
        label.meta[ANNOTATED] = mask[None]
    return logits, label


def test_full_labels_bce_is_binary_cross_entropy_of_softmax_and_one_hot():
    logits, label = _case(None)
    target = torch.nn.functional.one_hot(label[:, 0].long(), NUM_CLASSES).permute(0, 4, 1, 2, 3).float()
    expected = torch.nn.functional.binary_cross_entropy(torch.softmax(logits, 1), target)
    assert MarginalLoss("bce")(logits, label).item() == pytest.approx(expected.item(), rel=1e-5)


def test_full_labels_dicece_is_monai_dice_ce():
    logits, label = _case(None)
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(logits, label.as_tensor())
    assert MarginalLoss("dicece")(logits, label).item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.parametrize("kind", ["bce", "dicece"])
def test_partial_loss_ignores_unannotated_psoas_but_not_label_4(kind: str):
    loss = MarginalLoss(kind)
    logits, label = _case(annotated=[4, 8])
    base = loss(logits, label)
    # Swapping the background and left psoas logits moves probability between them, nothing else.
    moved_to_psoas = logits[:, [1, 0, 2, 3, 4, 5, 6, 7, 8]]
    assert loss(moved_to_psoas, label).item() == pytest.approx(base.item(), rel=1e-5)
    away_from_4 = logits.clone()
    away_from_4[:, 4] -= 3.0
    assert loss(away_from_4, label).item() > base.item() + 1e-3


def test_partial_loss_is_not_blind_on_a_fully_labelled_case():
    logits, label = _case(None)
    assert MarginalLoss("bce")(logits[:, [1, 0, 2, 3, 4, 5, 6, 7, 8]], label) != MarginalLoss("bce")(logits, label)


def test_annotation_mask_survives_batching():
    (logits_a, label_a), (logits_b, label_b) = _case([4, 8], seed=1), _case(None, seed=2)
    label_b.meta[ANNOTATED] = torch.ones(1, NUM_CLASSES, dtype=torch.bool)
    batch = list_data_collate([{"label": label_a[0]}, {"label": label_b[0]}])["label"]
    per_case = MarginalLoss("bce")(torch.cat([logits_a, logits_b]), batch)
    assert per_case.item() == pytest.approx(
        (MarginalLoss("bce")(logits_a, label_a) * 3 + MarginalLoss("bce")(logits_b, label_b) * 9).item() / 12, rel=1e-5
    )
