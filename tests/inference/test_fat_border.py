"""The border step: each muscle's outer band leaves the muscle where it is fat connected to the fat around it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_SHAPE, SMALL_SPACING
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from scipy import ndimage

from scripts import BUNDLE_ROOT
from scripts.errors import InputError
from scripts.inference.fat_border import FatConnectedBorderd, fat_connected_border, fat_image
from scripts.labels import MUSCLES
from scripts.options import check_options, recorded_options
from scripts.phantom import make_phantom
from scripts.report.case_report import write_case_report

NETWORK_VOXELS = (1.0, 1.0, 1.0)  # the small phantoms lie on the shipped weights' grid: one voxel is one network voxel


def muscle_fat_fractions(label: np.ndarray, fat_fraction: np.ndarray) -> dict[int, float]:
    """Mean fat fraction (percent) of each muscle present in ``label``."""
    return {m: 100 * float(fat_fraction[label == m].mean()) for m in MUSCLES if (label == m).any()}


def grown_into_background(label: np.ndarray) -> np.ndarray:
    """Every muscle grown by one voxel (6-connected) into the background around it: a border through the fat."""
    grown = label.copy()
    for muscle in MUSCLES:
        ring = ndimage.binary_dilation(label == muscle) & (grown == 0)
        grown[ring] = muscle
    return grown


@pytest.mark.parametrize("infiltration", [0.05, 0.20, 0.40])
def test_fatty_muscles_keep_their_fat_fraction(infiltration: float):
    """Muscles 5, 20 and 40 % fat through and through, drawn exactly: the step lowers none by more than 0.5 points,
    and drawn with a border through the fat around them, it takes most of that fat off again."""
    phantom = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=3, muscle_fat_fraction=infiltration)
    fat_fraction = fat_image(phantom.water, phantom.fat, phantom.inphase)
    truth = muscle_fat_fractions(phantom.label, fat_fraction)
    assert all(abs(value - 100 * infiltration) < 3 for value in truth.values()), truth
    moved = muscle_fat_fractions(fat_connected_border(phantom.label, fat_fraction, NETWORK_VOXELS), fat_fraction)
    assert all(moved[m] >= truth[m] - 0.5 for m in truth), (truth, moved)

    grown = grown_into_background(phantom.label)
    stepped = fat_connected_border(grown, fat_fraction, NETWORK_VOXELS)
    added_fat = (grown != phantom.label) & (fat_fraction > 0.8)
    assert added_fat.sum() > 100
    assert (stepped[added_fat] == 0).mean() > 0.9  # the fat the border ran through left the muscles
    assert np.array_equal(stepped[phantom.label > 0], phantom.label[phantom.label > 0])  # no muscle voxel left
    before, after = muscle_fat_fractions(grown, fat_fraction), muscle_fat_fractions(stepped, fat_fraction)
    assert np.mean([after[m] - truth[m] for m in truth]) < 0.5 * np.mean([before[m] - truth[m] for m in truth])


def test_fat_inside_the_muscle_stays_and_only_the_band_moves():
    """A block of muscle 20 % fat with a fat streak inside it and fat around it, its border drawn 2 voxels into the
    fat on a grid twice as fine as the network's: the band reaching the fat leaves, the inner streak stays, and
    fat beyond one network voxel of the border is not touched."""
    fat_fraction = np.full((40, 40, 12), 0.9, np.float32)
    fat_fraction[10:30, 10:30, :] = 0.2
    fat_fraction[19:21, 14:26, :] = 0.9  # intramuscular fat, not reaching the fat around the muscle
    label = np.zeros(fat_fraction.shape, np.uint8)
    label[8:32, 8:32, :] = 4  # 2 voxels (one network voxel) into the fat on every side in-plane
    stepped = fat_connected_border(label, fat_fraction, (0.5, 0.5, 1.0))
    np.testing.assert_array_equal(stepped[10:30, 10:30, :], 4)  # the muscle and its inner fat
    assert not stepped[8:32, 8:32][fat_fraction[8:32, 8:32] == 0.9].all()
    assert (stepped[label == 4] == 4).sum() == 20 * 20 * 12
    label[5:35, 5:35, :] = 4  # 5 voxels into the fat: only the outer band of 2 (one network voxel) can leave
    stepped = fat_connected_border(label, fat_fraction, (0.5, 0.5, 1.0))
    assert (stepped == 4).sum() == 26 * 26 * 12


def test_in_phase_image_when_there_is_no_water_and_fat():
    """Without water and fat images the step follows the in-phase image, where fat is bright too."""
    phantom = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=3)
    inphase = fat_image(None, None, phantom.inphase)
    np.testing.assert_array_equal(inphase, phantom.inphase)
    grown = grown_into_background(phantom.label)
    stepped = fat_connected_border(grown, inphase, NETWORK_VOXELS)
    added_fat = (grown != phantom.label) & (phantom.fat_fraction > 0.8)
    assert (stepped[added_fat] == 0).mean() > 0.8
    assert (stepped[phantom.label > 0] == phantom.label[phantom.label > 0]).mean() > 0.99


def test_transform_reads_the_case_images_and_measures_in_network_voxels():
    """``FatConnectedBorderd`` takes the input voxel size from the label's affine and the case's water and fat."""
    phantom = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=3, muscle_fat_fraction=0.2)
    grown = grown_into_background(phantom.label)
    affine = torch.as_tensor(phantom.affine)
    data = {
        "pred": MetaTensor(torch.from_numpy(grown)[None], affine=affine),
        **{k: MetaTensor(torch.from_numpy(getattr(phantom, k))[None], affine=affine) for k in ("water", "fat")},
        "inphase": MetaTensor(torch.from_numpy(phantom.inphase)[None], affine=affine),
    }
    out = FatConnectedBorderd("pred", network_spacing=SMALL_SPACING)(data)["pred"]
    expected = fat_connected_border(grown, fat_image(phantom.water, phantom.fat, None), NETWORK_VOXELS)
    np.testing.assert_array_equal(out[0].numpy(), expected)
    torch.testing.assert_close(out.affine, data["pred"].affine)


@pytest.mark.parametrize("fat_border", [False, True])
def test_option_switches_the_step_and_is_recorded(fat_border: bool):
    """``--fat_border`` (off by default) puts the step into inference's post-processing or leaves it out, and names
    the border in the run's settings."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE_ROOT / "configs" / "inference.yaml"))
    assert parser["fat_border"] is False
    parser["fat_border"] = fat_border
    steps = [type(t).__name__ for t in parser.get_parsed_content("postprocessing").transforms]
    assert ("FatConnectedBorderd" in steps) is fat_border
    if fat_border:  # after the label is chosen on the input grid, before the largest piece is kept
        assert (
            steps.index("LabelOnInputGridd")
            < steps.index("FatConnectedBorderd")
            < steps.index("KeepLargestPiecePerMuscled")
        )
    assert parser.get_parsed_content("border") == ("fat_connected" if fat_border else "none")
    assert recorded_options(parser)["fat_border"] is fat_border  # two runs that differ in it are not the same
    parser["fat_border"] = "maybe"
    with pytest.raises(InputError, match="fat_border"):
        check_options(parser)


def test_report_names_the_border(tmp_path: Path):
    phantom = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=3)
    images = {"water": phantom.water, "fat": phantom.fat}
    report = write_case_report(tmp_path, "c", phantom.label, phantom.affine, images, border="fat_connected")
    assert json.loads((tmp_path / "c" / "c_metrics.json").read_text(encoding="utf-8"))["border"] == "fat_connected"
    assert report["border"] == "fat_connected"
