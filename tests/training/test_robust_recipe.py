"""The robust training recipe: tissue-contrast rendering of phantoms, its augmentation chain, and a short run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SMALL_SHAPE, SMALL_SPACING, SPACING_ARG, read_csv, run_bundle
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from scripts.phantom import MUSCLE_TISSUES, make_phantom
from scripts.training.tissue_contrast import RandTissueContrastd

ROBUST = ["configs/train.yaml", "configs/robust_train.yaml"]


@pytest.fixture(scope="module")
def case() -> dict:
    phantom = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=3)
    affine = torch.as_tensor(phantom.affine)
    return {
        "image": MetaTensor(phantom.inphase[None], affine=affine),
        "label": MetaTensor(phantom.label[None].astype(np.float32), affine=affine),
        "tissue": MetaTensor(phantom.tissue[None].astype(np.float32), affine=affine),
    }


def test_rendering_gives_each_tissue_one_new_intensity_and_keeps_the_label(case: dict):
    render = RandTissueContrastd(prob=1.0, max_spread=0.0, share_prob=0.0)
    render.set_random_state(0)
    out = render(case)
    image, tissue = out["image"][0].numpy(), case["tissue"][0].numpy()
    assert "tissue" not in out and out["label"] is case["label"]
    assert isinstance(out["image"], MetaTensor) and torch.equal(out["image"].affine, case["image"].affine)
    means = {}
    for t in np.unique(tissue):
        values = image[tissue == t]
        assert np.ptp(values) < 1e-5, f"tissue {t} is not uniform"
        means[t] = values[0]
    assert len(set(np.round(list(means.values()), 4))) == len(means)  # independent draws
    # A second draw is another contrast: the order of the tissues' intensities changes.
    again = render(case)["image"][0].numpy()
    order = [np.argsort([v[tissue == t][0] for t in means]) for v in (image, again)]
    assert not np.array_equal(*order)


def test_rendered_muscles_share_one_intensity_when_grouped(case: dict):
    render = RandTissueContrastd(prob=1.0, max_spread=0.0, groups=[MUSCLE_TISSUES], share_prob=1.0)
    image, tissue = render(case)["image"][0].numpy(), case["tissue"][0].numpy()
    muscle = np.isin(tissue, MUSCLE_TISSUES)
    assert np.ptp(image[muscle]) < 1e-5
    assert np.ptp(image[~muscle]) > 0.1


def test_a_case_without_tissue_map_keeps_its_own_image(case: dict):
    real = {"image": case["image"], "label": case["label"]}
    out = RandTissueContrastd(prob=1.0)(real)
    assert out["image"] is case["image"]


def test_muscle_tissues_of_the_recipe_are_the_phantom_ones():
    recipe = ConfigParser.load_config_file(REPO / "configs" / "robust_train.yaml")
    assert sorted(recipe["muscle_tissues"]) == sorted(int(t) for t in MUSCLE_TISSUES)


def test_augmented_training_cases_are_network_ready(cohort: Path):
    """Drawn through the whole recipe: no tissue map left, sizes divisible by 16, labels 0..8 on the same grid, and
    field-of-view crops that cut the volume along z."""
    parser = ConfigParser()
    parser.read_config([REPO / f for f in ROBUST])
    parser.read_meta(REPO / "configs" / "metadata.json")
    parser.update({"dataset_dir": str(cohort), "real_cases": [], "num_workers": 0, "crop_prob": 1.0})
    dataset = parser.get_parsed_content("train#dataset")
    depths = set()
    for i in range(8):
        item = dataset[i % len(dataset)]
        assert "tissue" not in item
        assert item["image"].shape == item["label"].shape
        assert all(n % 16 == 0 for n in item["image"].shape[1:])
        assert set(torch.unique(item["label"]).tolist()) <= set(range(9))
        depths.add(item["image"].shape[-1])
    assert min(depths) < 48  # the 40 slices, padded to 48, are sometimes cut


def test_robust_recipe_trains_on_phantoms(cohort: Path, tmp_path: Path):
    run_bundle(
        "training",
        "--config_file", str(ROBUST).replace(" ", ""),
        "--dataset_dir", str(cohort),
        "--output_dir", str(tmp_path),
        "--ckpt_dir", str(tmp_path / "models"),
        "--real_cases", "[]",
        "--epochs", "2",
        "--val_interval", "1",
        "--spacing", SPACING_ARG,
        "--num_workers", "0",
    )  # fmt: skip
    assert (tmp_path / "models" / "model.pt").is_file()
    assert [row["epoch"] for row in read_csv(tmp_path / "dice_per_muscle.csv")] == ["1", "2"]
