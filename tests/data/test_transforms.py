"""The bundle's own transforms and loss, on phantoms stored as a user's files would be."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_reoriented
from monai.data import MetaTensor
from monai.transforms import LoadImaged

from scripts.data.transforms import InPhaseFromWaterFatd, MapLabelsd, MatchCaseGeometryd
from scripts.labels import ANNOTATED, LEFT_RIGHT_PAIRS, MUSCLES
from scripts.training.transforms import RandLeftRightFlipd


def world_x_centroid(mask: torch.Tensor, affine: torch.Tensor) -> float:
    """Mean world x (mm, RAS) of the voxels in a channel-first mask."""
    idx = torch.nonzero(mask[0]).double()
    return float((idx @ affine[0, :3].double()).mean() + affine[0, 3])


PHANTOM_SEED = 1  # the conftest fixture ``phantom``


@pytest.mark.parametrize("axcodes", [("R", "A", "S"), ("L", "P", "S"), ("P", "L", "I")])
def test_flip_mirrors_subject_and_swaps_sides(phantom, tmp_path: Path, axcodes: tuple[str, ...]):
    files = {
        "image": save_reoriented(phantom.inphase, phantom.affine, axcodes, tmp_path / "inphase.nii.gz"),
        "label": save_reoriented(phantom.label, phantom.affine, axcodes, tmp_path / "label.nii.gz"),
    }
    case = LoadImaged(["image", "label"], ensure_channel_first=True, image_only=True)(files)
    out = RandLeftRightFlipd(["image", "label"], prob=1.0)(case)

    affine = case["label"].affine
    assert torch.equal(out["label"].affine, affine), "the mirrored subject keeps the header"
    lr_dim = 1 + axcodes.index("R" if "R" in axcodes else "L")
    assert torch.equal(out["image"].as_tensor(), torch.flip(case["image"].as_tensor(), (lr_dim,)))
    for left, right in LEFT_RIGHT_PAIRS:
        # label 1 is still on the subject's left, and it is the mirrored right muscle
        assert world_x_centroid(out["label"] == left, affine) < world_x_centroid(out["label"] == right, affine)
        assert torch.equal(
            (out["label"] == left).as_tensor(), torch.flip((case["label"] == right).as_tensor(), (lr_dim,))
        )
    assert set(torch.unique(out["label"]).int().tolist()) == {0, *MUSCLES}


def test_flip_mirrors_the_annotation_mask():
    label = MetaTensor(torch.zeros(1, 4, 4, 4), affine=torch.eye(4))
    label.meta[ANNOTATED] = torch.tensor([True, False, False, False, True, False, True, False, False])
    out = RandLeftRightFlipd(["label"], prob=1.0)({"label": label})
    assert torch.nonzero(out["label"].meta[ANNOTATED]).flatten().tolist() == [0, 2, 8]


def test_flip_probability_zero_leaves_case_unchanged(phantom):
    label = MetaTensor(torch.as_tensor(phantom.label[None]), affine=torch.as_tensor(phantom.affine))
    out = RandLeftRightFlipd(["label"], prob=0.0)({"label": label})
    assert torch.equal(out["label"], label)


def _image(shape=(8, 8, 4), spacing=(1.0, 1.0, 4.0), origin=(0.0, 0.0, 0.0), name="a.nii.gz") -> MetaTensor:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return MetaTensor(torch.rand(1, *shape), affine=torch.as_tensor(affine), meta={"filename_or_obj": name})


def test_geometry_same_grid_other_origin_takes_reference_header(caplog):
    case = {"water": _image(name="water.nii.gz"), "fat": _image(origin=(194.4, 147.9, 192.8), name="fat.nii.gz")}
    with caplog.at_level(logging.WARNING):
        out = MatchCaseGeometryd(["water", "fat"])(case)
    assert torch.equal(out["fat"].affine, out["water"].affine)
    assert "fat.nii.gz" in caplog.text and "194.4 mm" in caplog.text


def test_geometry_spacing_within_one_percent_is_the_same_grid():
    case = {"water": _image(spacing=(1.018, 1.018, 4.0)), "fat": _image(spacing=(1.019, 1.019, 4.0))}
    out = MatchCaseGeometryd(["water", "fat"])(case)
    assert torch.equal(out["fat"].affine, out["water"].affine)


@pytest.mark.parametrize(
    "other, message",
    [
        (_image(shape=(8, 8, 5), name="label.nii.gz"), "shapes differ"),
        (_image(spacing=(1.2, 1.2, 4.0), name="label.nii.gz"), "voxel sizes differ"),
    ],
)
def test_geometry_truly_different_grids_are_refused(other: MetaTensor, message: str):
    with pytest.raises(ValueError, match=message) as err:
        MatchCaseGeometryd(["image", "label"])({"image": _image(name="image.nii.gz"), "label": other})
    assert "label.nii.gz" in str(err.value) and "image.nii.gz" in str(err.value)


def test_geometry_other_orientation_is_refused():
    lps = _image(name="label.nii.gz")
    lps.affine = torch.diag(torch.tensor([-1.0, -1.0, 4.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="orientations differ"):
        MatchCaseGeometryd(["image", "label"])({"image": _image(), "label": lps})


def test_in_phase_is_water_plus_fat_only_when_missing():
    water, fat = _image(), _image()
    out = InPhaseFromWaterFatd()({"water": water, "fat": fat})
    assert torch.allclose(out["image"], water + fat)
    assert torch.equal(out["image"].affine, water.affine)
    given = _image()
    assert InPhaseFromWaterFatd()({"image": given, "water": water, "fat": fat})["image"] is given


def _label(values: list[int], name: str = "label.nii.gz") -> MetaTensor:
    data = torch.tensor(values, dtype=torch.int16).reshape(1, -1, 1, 1)
    return MetaTensor(data, affine=torch.eye(4), meta={"filename_or_obj": name})


def test_label_map_translates_values_and_records_annotation():
    case = {"label": _label([0, 1, 2, 3, 4]), "label_map": {"1": 8, "2": 8, "3": 4, "4": 4}, "annotated": [4, 8]}
    out = MapLabelsd()(case)
    assert out["label"].flatten().tolist() == [0, 8, 8, 4, 4]
    assert torch.nonzero(out["label"].meta[ANNOTATED]).flatten().tolist() == [0, 4, 8]
    assert "label_map" not in out and "annotated" not in out


def test_without_label_map_every_muscle_is_annotated():
    out = MapLabelsd()({"label": _label([0, 5, 8])})
    assert out["label"].flatten().tolist() == [0, 5, 8]
    assert bool(out["label"].meta[ANNOTATED].all())


def test_value_missing_from_label_map_is_refused_naming_file_and_values():
    case = {"label": _label([0, 1, 2, 7], name="TUM02/label_es_mf.nii.gz"), "label_map": {"1": 8, "2": 8}}
    with pytest.raises(ValueError, match=r"TUM02/label_es_mf.nii.gz: label values \[7\]"):
        MapLabelsd()(case)


def test_values_outside_the_label_map_of_the_bundle_are_listed():
    with pytest.raises(ValueError, match=r"label values \[9, 12\] are not 0..8"):
        MapLabelsd()({"label": _label([0, 9, 12, 3])})
