"""Weights carry their voxel size, label map, number of classes and network (scripts/model_card.py): inference,
evaluation and fine-tuning run at the voxel size of the weights they load, and refuse one that differs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO, infer, run_module
from monai.bundle import ConfigParser, ConfigWorkflow

from scripts.errors import InputError
from scripts.model_card import check_model, load_weights, read_model, stamp, trained_spacing

OTHER_SPACING = [4.5, 4.5, 9.0]


def network():
    return ConfigParser(
        {"n": ConfigParser.load_config_file(REPO / "configs" / "inference.yaml")["network_def"]}
    ).get_parsed_content("n")


@pytest.fixture()
def coarse_model(trained: Path, tmp_path: Path) -> Path:
    """The trained test model, its card saying it was trained at 4.5 x 4.5 x 9 mm."""
    path = tmp_path / "coarse.pt"
    shutil.copy(trained / "models" / "model.pt", path)
    return stamp(path, OTHER_SPACING, network())


def workflow(config_files: list[str], **override) -> ConfigWorkflow:
    flow = ConfigWorkflow(
        config_file=[str(REPO / "configs" / name) for name in config_files],
        meta_file=str(REPO / "configs" / "metadata.json"),
        workflow_type="train" if "train.yaml" in config_files else "infer",
        bundle_root=str(REPO),
        **override,
    )
    flow.initialize()
    return flow


@pytest.mark.parametrize(
    "configs, key",
    [
        (["inference.yaml"], "ckpt_path"),
        (["inference.yaml", "evaluate.yaml"], "ckpt_path"),
        (["train.yaml", "finetune.yaml"], "pretrained_ckpt"),
    ],
)
def test_inference_evaluation_and_finetuning_run_at_the_voxel_size_of_their_weights(coarse_model, configs, key):
    parser = workflow(configs, **{key: str(coarse_model)}).parser
    assert parser.get_parsed_content("spacing") == OTHER_SPACING
    transforms = parser.get_parsed_content("preprocessing" if key == "ckpt_path" else "validate#preprocessing")
    (spacing,) = [t for t in transforms.transforms if type(t).__name__ == "Spacingd"]
    assert spacing.spacing_transform.pixdim.tolist() == OTHER_SPACING


def test_a_spacing_unlike_the_weights_is_refused_naming_both(cohort: Path, coarse_model: Path, tmp_path: Path):
    result = infer(cohort, tmp_path / "out", coarse_model, "--spacing", "[3.75,3.75,7.8]", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert (
        "--spacing [3.75, 3.75, 7.8] differs from the voxel size the weights were trained at, [4.5, 4.5, 9.0]"
        in result.stderr
    )
    assert not (tmp_path / "out").exists()


def test_training_writes_the_card_and_a_bare_state_dict_needs_a_spacing_or_a_stamp(trained: Path, tmp_path: Path):
    weights, card = read_model(trained / "models" / "model.pt")
    assert card["spacing_mm"] == [3.75, 3.75, 7.8]  # as trained (conftest: --spacing)
    bare = tmp_path / "bare.pt"
    torch.save(weights, bare)
    with pytest.raises(InputError, match=f"python -m scripts.model_card {bare} --spacing X Y Z"):
        trained_spacing(bare)
    check_model(bare, [1.0, 1.0, 1.0], network())  # nothing to check without a card

    run_module("scripts.model_card", str(bare), "--spacing", "3.75", "3.75", "7.8")
    assert read_model(bare)[1] == card
    assert all(torch.equal(weights[k], v) for k, v in load_weights(bare).items())


def test_weights_of_another_network_or_label_map_are_refused(trained: Path, tmp_path: Path):
    path = tmp_path / "other.pt"
    weights, card = read_model(trained / "models" / "model.pt")
    card = {**card, "num_classes": 4, "network": {**card["network"], "channels": [8, 16, 32, 64, 128]}}
    torch.save({"model": weights, "model_card": card}, path)
    with pytest.raises(InputError) as refused:
        check_model(path, card["spacing_mm"], network())
    message = str(refused.value)
    assert "their number of classes is 4, this bundle's is 9" in message
    assert "their network is {" in message and "[8, 16, 32, 64, 128]" in message
