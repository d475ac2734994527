"""Inference options: left-right flip test-time augmentation and the largest connected piece of each muscle."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from conftest import infer
from monai.data import MetaTensor
from monai.inferers import SimpleInferer
from scipy import ndimage

from scripts.inference.flip_tta import LeftRightFlipInferer
from scripts.labels import MUSCLES, SWAP_LEFT_RIGHT
from scripts.report.colour_tables import ITKSNAP_NAME, SLICER_NAME


def lopsided_network() -> torch.nn.Module:
    """A fixed random convolution: not mirror-symmetric, so its two passes differ."""
    torch.manual_seed(0)
    return torch.nn.Conv3d(1, 9, kernel_size=3, padding=1).eval()


def test_flip_tta_is_left_right_equivariant():
    """Segmenting the mirrored scan gives the mirror of the segmentation, with left and right swapped."""
    network, tta = lopsided_network(), LeftRightFlipInferer(SimpleInferer())
    image = torch.rand(1, 1, 12, 10, 8)
    with torch.no_grad():
        direct = tta(image, network)
        mirrored = tta(torch.flip(image, dims=(2,)), network)
        plain = network(image)
    torch.testing.assert_close(torch.flip(mirrored, dims=(2,))[:, SWAP_LEFT_RIGHT], direct, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(torch.softmax(plain, 1), torch.exp(direct), atol=1e-3)
    torch.testing.assert_close(torch.exp(direct).sum(1), torch.ones(1, 12, 10, 8), atol=1e-5, rtol=1e-5)


def test_flip_tta_mirrors_along_the_array_axis_of_world_x():
    """An input stored with world x along array axis 1 (after a P-L-S reorientation) is mirrored along that axis."""
    affine = torch.tensor([[0.0, -1, 0, 0], [-1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    assert LeftRightFlipInferer.mirror_dim(MetaTensor(torch.zeros(1, 1, 4, 4, 4), affine=affine)) == 3
    assert LeftRightFlipInferer.mirror_dim(torch.zeros(1, 1, 4, 4, 4)) == 2


def test_inference_options_run_and_keep_one_piece_per_muscle(cohort: Path, trained: Path, tmp_path: Path):
    ckpt = trained / "models" / "model.pt"
    options = ("--largest_component", "True", "--flip_tta", "True", "--spacing", "[3.75,3.75,7.8]")
    infer(cohort, tmp_path / "out", ckpt, *options)
    for case in json.loads((cohort / "datalist.json").read_text(encoding="utf-8"))["testing"]:
        seg = np.asarray(nib.load(tmp_path / "out" / case["id"] / f"{case['id']}_seg.nii.gz").dataobj)
        for muscle in MUSCLES:
            assert ndimage.label(seg == muscle, structure=np.ones((3, 3, 3)))[1] <= 1, (case["id"], muscle)
    assert (tmp_path / "out" / SLICER_NAME).is_file() and (tmp_path / "out" / ITKSNAP_NAME).is_file()
    # The options are part of the run's settings: a rerun with others is refused rather than mixed in.
    refused = infer(cohort, tmp_path / "out", ckpt, "--spacing", "[3.75,3.75,7.8]", "--flip_tta", "False", check=False)
    assert refused.returncode != 0 and "overwrite" in refused.stderr
