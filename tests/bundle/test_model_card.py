"""Weights carry their voxel size, label map, number of classes and network in the model card beside them
(scripts/model_card.py): inference, evaluation and fine-tuning run at the voxel size of the weights they load, and
refuse one that differs; a bare file without a card needs --spacing; a 0.3.0-0.3.1 file (card inside) still runs."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from conftest import REPO, SPACING_ARG, infer, run_module
from monai.bundle import ConfigParser, ConfigWorkflow

from scripts.errors import InputError
from scripts.model_card import (
    SHA256_KEY,
    card_path,
    check_model,
    load_weights,
    read_model,
    stamp,
    trained_spacing,
    write_model,
)

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


def _same_weights(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def _without_sha256(card: dict) -> dict:
    return {k: v for k, v in card.items() if k != SHA256_KEY}


def test_training_writes_the_card_beside_the_bare_state_dict(trained: Path):
    model = trained / "models" / "model.pt"
    weights, card = read_model(model)
    assert card["spacing_mm"] == [3.75, 3.75, 7.8]  # as trained (conftest: --spacing)
    assert _same_weights(torch.load(model, weights_only=True), weights)  # the file is the bare state dict
    assert json.loads(card_path(model).read_text(encoding="utf-8")) == card


def test_a_bare_state_dict_needs_a_spacing_or_a_stamp(cohort: Path, trained: Path, tmp_path: Path):
    """Inference on a bare state dict without a card: refused before any work, naming the stamp command; with
    --spacing it segments; stamped, it carries that voxel size."""
    weights, card = read_model(trained / "models" / "model.pt")
    bare = tmp_path / "bare.pt"
    torch.save(weights, bare)
    refused = infer(cohort, tmp_path / "refused", bare, check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"does not say the voxel size its weights were trained at (no model card {card_path(bare)}" in refused.stderr
    assert f"python -m scripts.model_card {bare} --spacing X Y Z" in refused.stderr
    assert not (tmp_path / "refused").exists()

    infer(cohort, tmp_path / "given", bare, "--spacing", SPACING_ARG)
    segmented = sorted(p.name for p in (tmp_path / "given").glob("*/*_seg.nii.gz"))
    assert segmented == sorted(
        f"{e['id']}_seg.nii.gz" for e in json.loads((cohort / "datalist.json").read_text())["testing"]
    )

    run_module("scripts.model_card", str(bare), "--spacing", "3.75", "3.75", "7.8")
    assert _without_sha256(read_model(bare)[1]) == _without_sha256(card)
    assert _same_weights(load_weights(bare), weights)


def test_a_card_beside_other_weights_is_refused(trained: Path, tmp_path: Path):
    path = tmp_path / "model.pt"
    weights, card = read_model(trained / "models" / "model.pt")
    write_model(path, lambda temporary: torch.save(weights, temporary), card)
    torch.save({k: v + 1 for k, v in weights.items()}, path)  # other weights put in place, the card left as it was
    with pytest.raises(InputError, match=f"the model card {card_path(path)} was written for other weights"):
        trained_spacing(path)


def test_a_model_file_of_0_3_1_still_runs_and_converts_in_one_command(cohort: Path, trained: Path, tmp_path: Path):
    """``{"model": weights, "model_card": card}``, as 0.3.0-0.3.1 wrote it: inference runs at its card's voxel size
    and warns how to convert it; the conversion writes the bare weights, unchanged, and the card beside them."""
    weights, card = read_model(trained / "models" / "model.pt")
    nested = tmp_path / "old.pt"
    torch.save({"model": weights, "model_card": _without_sha256(card)}, nested)
    result = infer(cohort, tmp_path / "out", nested)
    assert f"{nested} holds its weights and model card in one file" in result.stderr
    assert f"python -m scripts.model_card {nested}" in result.stderr
    assert list((tmp_path / "out").glob("*/*_seg.nii.gz"))

    run_module("scripts.model_card", str(nested))
    assert _same_weights(torch.load(nested, weights_only=True), weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read without the warning now
        assert _without_sha256(read_model(nested)[1]) == _without_sha256(card)


def test_weights_of_another_network_or_label_map_are_refused(trained: Path, tmp_path: Path):
    path = tmp_path / "other.pt"
    weights, card = read_model(trained / "models" / "model.pt")
    card = {**card, "num_classes": 4, "network": {**card["network"], "channels": [8, 16, 32, 64, 128]}}
    write_model(path, lambda temporary: torch.save(weights, temporary), card)
    with pytest.raises(InputError) as refused:
        check_model(path, card["spacing_mm"], network())
    message = str(refused.value)
    assert "their number of classes is 4, this bundle's is 9" in message
    assert "their network is {" in message and "[8, 16, 32, 64, 128]" in message
