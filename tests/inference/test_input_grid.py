"""The fast label on the input grid equals MONAI's Invertd + argmax + KeepLargestConnectedComponent, in any
orientation of the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import (
    AsDiscreted,
    Compose,
    CopyItemsd,
    DivisiblePadd,
    Invertd,
    KeepLargestConnectedComponentd,
    Orientationd,
    Spacingd,
)
from scipy import ndimage

from scripts.inference.input_grid import MUSCLE_BOX, KeepLargestPiecePerMuscled, LabelOnInputGridd, index_map
from scripts.labels import MUSCLES, NUM_CLASSES

PREPROCESSING = Compose(
    [
        CopyItemsd("image", names="grid"),
        Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd("image", pixdim=(3.0, 3.5, 6.0), mode="bilinear"),
        DivisiblePadd("image", k=8),
    ]
)
AFFINES = {
    "RAS": np.diag([1.0, 1.2, 2.5, 1.0]),
    "LPS": np.array([[-1.0, 0, 0, 90], [0, -1.2, 0, 70], [0, 0, 2.5, -30], [0, 0, 0, 1]]),
    # Array axes along anterior-posterior, superior-inferior, right-left, tilted by 0.2 rad about world z.
    "PIL, oblique": np.array(
        [[np.cos(0.2), -np.sin(0.2), 0, 0], [np.sin(0.2), np.cos(0.2), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    )
    @ np.array([[0, 0, -2.5, 40], [-1.2, 0, 0, 60], [0, -1.0, 0, 20], [0, 0, 0, 1]]),
}


def network_probabilities(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Smooth class probabilities, mostly background, with muscle blobs of several pieces: near-ties and islands."""
    rng = np.random.default_rng(seed)
    logits = ndimage.gaussian_filter(rng.normal(size=(NUM_CLASSES, *shape)), sigma=(0, 1.5, 1.5, 1.5)) * 12
    logits[0] += 1.0
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=0)


def reference_and_fast(affine: np.ndarray, seed: int) -> tuple[np.ndarray, MetaTensor]:
    image = MetaTensor(torch.rand(1, 61, 47, 23), affine=torch.as_tensor(affine))
    case = PREPROCESSING({"image": image})
    case["pred"] = MetaTensor(network_probabilities(tuple(case["image"].shape[1:]), seed), meta=case["image"].meta)
    reference = Compose(
        [
            Invertd("pred", transform=PREPROCESSING, orig_keys="image", nearest_interp=False),
            AsDiscreted("pred", argmax=True),
            KeepLargestConnectedComponentd("pred", applied_labels=list(MUSCLES), independent=True),
        ]
    )(dict(case))["pred"]
    fast = Compose([LabelOnInputGridd("pred", PREPROCESSING, grid_key="grid"), KeepLargestPiecePerMuscled("pred")])(
        dict(case)
    )
    return reference.numpy()[0], fast["pred"]


@pytest.mark.parametrize("orientation", list(AFFINES))
def test_fast_label_equals_monai_invert_argmax_and_largest_component(orientation: str):
    for seed in range(2):
        reference, fast = reference_and_fast(AFFINES[orientation], seed)
        assert fast.shape[1:] == reference.shape and fast.dtype == torch.uint8
        np.testing.assert_allclose(fast.affine.numpy(), AFFINES[orientation], atol=1e-6)
        assert set(np.unique(reference)) - {0}, "the case must hold muscle to test anything"
        agreement = (fast.numpy()[0] == reference).mean()
        assert agreement >= 0.9999, (orientation, seed, agreement)
        # Nothing is labelled outside the box the label records.
        box = fast.meta[MUSCLE_BOX]
        outside = fast.numpy()[0].copy()
        outside[tuple(slice(*b) for b in box)] = 0
        assert not outside.any()


def test_index_map_refuses_grids_rotated_against_each_other():
    rotated = AFFINES["PIL, oblique"]
    with pytest.raises(ValueError, match="axis-aligned"):
        index_map(np.diag([3.0, 3.0, 6.0, 1.0]), rotated)
    axes, scale, offset = index_map(np.diag([2.0, 2.0, 2.0, 1.0]), np.diag([1.0, 1.0, 1.0, 1.0]))
    assert axes == [0, 1, 2] and np.allclose(scale, 0.5) and np.allclose(offset, 0)
