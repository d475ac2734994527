"""Averaging trained copies of one network into the shipped weights, from the model files training writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_module
from monai.bundle import ConfigParser

from scripts.errors import InputError
from scripts.model_card import SHA256_KEY, card_path, check_model, read_model, stamp, trained_spacing, write_model
from scripts.training.average_weights import average_models


def _network() -> torch.nn.Module:
    config = ConfigParser.load_config_file(REPO / "configs" / "inference.yaml")
    return ConfigParser({"n": config["network_def"]}).get_parsed_content("n")


def _without_sha256(card: dict) -> dict:
    return {k: v for k, v in card.items() if k != SHA256_KEY}


@pytest.fixture()
def runs(trained: Path, tmp_path: Path) -> list[Path]:
    """Three model files in the forms training writes: the best model with its card (models/model.pt), a last
    checkpoint (weights, optimizer and trainer, its card beside), and the best model as 0.3.0-0.3.1 wrote it
    (weights and card in one file), with other weights."""
    weights, card = read_model(trained / "models" / "model.pt")
    nested = tmp_path / "old.pt"
    torch.save({"model": {k: v * 2 for k, v in weights.items()}, "model_card": _without_sha256(card)}, nested)
    return [trained / "models" / "model.pt", trained / "last_checkpoint_epoch=2.pt", nested]


def test_the_mean_of_training_files_is_their_element_wise_mean_with_their_card(runs: list[Path], tmp_path: Path):
    out = tmp_path / "soup" / "model.pt"
    run_module("scripts.training.average_weights", str(out), *map(str, runs))
    models = [read_model(path) for path in runs]
    averaged, card = read_model(out)
    assert list(torch.load(out, weights_only=True)) == list(models[0][0])  # the bare state dict
    for key, value in averaged.items():
        torch.testing.assert_close(value, sum(weights[key].float() for weights, _ in models) / 3)
    assert _without_sha256(card) == _without_sha256(models[0][1]) and card_path(out).is_file()
    network = _network()
    network.load_state_dict(averaged)
    assert trained_spacing(out) == [3.75, 3.75, 7.8]
    check_model(out, trained_spacing(out), network)  # ready for inference as it is


def test_runs_of_another_voxel_size_or_network_or_without_a_card_are_refused(runs: list[Path], tmp_path: Path):
    coarse = stamp(shutil.copy(runs[0], tmp_path / "coarse.pt"), [4.5, 4.5, 9.0], _network())
    with pytest.raises(InputError, match=f"the model card of {coarse}"):
        average_models([runs[0], coarse])

    weights, card = read_model(runs[0])
    smaller = tmp_path / "smaller.pt"
    write_model(smaller, lambda path: torch.save({k: v[:1] for k, v in weights.items()}, path), card)
    with pytest.raises(InputError, match="does not hold the same network"):
        average_models([runs[0], smaller])

    bare = tmp_path / "bare.pt"
    torch.save(weights, bare)
    with pytest.raises(InputError, match=f"python -m scripts.model_card {bare} --spacing X Y Z"):
        average_models([runs[0], bare])
