"""Checkpoints survive a kill: each is written whole or not at all, the previous one is kept until the next is
complete, and training resumes from the newest intact one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import SPACING_ARG, read_csv, run_bundle

from scripts.model_card import ModelCard, read_model
from scripts.training.checkpoints import AtomicDiskSaver


def test_a_save_that_fails_midway_keeps_the_previous_checkpoint(tmp_path: Path):
    saver = AtomicDiskSaver(tmp_path)
    saver({"weights": torch.ones(3)}, "last_checkpoint_epoch=1.pt")
    saver.remove("last_checkpoint_epoch=1.pt")  # what Ignite asks before the next save once n_saved is reached
    with pytest.raises(Exception):
        saver({"weights": torch.ones(1000), "unpicklable": lambda: None}, "last_checkpoint_epoch=2.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint_epoch=1.pt"]  # no half file, no temp
    assert torch.equal(torch.load(tmp_path / "last_checkpoint_epoch=1.pt", weights_only=True)["weights"], torch.ones(3))
    saver({"weights": torch.zeros(3)}, "last_checkpoint_epoch=2.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint_epoch=2.pt"]


def test_a_fixed_name_is_replaced_in_one_step(tmp_path: Path):
    saver = AtomicDiskSaver(tmp_path, filename="model.pt")
    saver({"w": torch.ones(2)}, "model_key_metric=0.1.pt")
    saver.remove("model_key_metric=0.1.pt")
    saver({"w": torch.zeros(2)}, "model_key_metric=0.2.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["w"], torch.zeros(2))


def test_each_checkpoint_is_written_and_removed_with_its_card(tmp_path: Path):
    card = ModelCard([1.0, 2.0, 3.0], torch.nn.Conv3d(1, 2, 3))
    saver = AtomicDiskSaver(tmp_path, model_card=card)
    saver({"w": torch.ones(2)}, "last_checkpoint_epoch=1.pt")
    saver.remove("last_checkpoint_epoch=1.pt")
    with pytest.raises(Exception):
        saver({"w": torch.ones(2), "unpicklable": lambda: None}, "last_checkpoint_epoch=2.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint_epoch=1.json", "last_checkpoint_epoch=1.pt"]
    saver({"w": torch.zeros(2)}, "last_checkpoint_epoch=2.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint_epoch=2.json", "last_checkpoint_epoch=2.pt"]
    weights, saved = read_model(tmp_path / "last_checkpoint_epoch=2.pt")
    assert torch.equal(weights["w"], torch.zeros(2)) and saved["spacing_mm"] == [1.0, 2.0, 3.0]


@pytest.mark.slow
def test_training_resumes_from_the_newest_intact_checkpoint(cohort: Path, tmp_path: Path):
    args = [
        "training",
        "--config_file", "configs/train.yaml",
        "--dataset_dir", str(cohort),
        "--output_dir", str(tmp_path),
        "--ckpt_dir", str(tmp_path / "models"),
        "--spacing", SPACING_ARG,
        "--num_workers", "0",
    ]  # fmt: skip
    run_bundle(*args, "--epochs", "2")
    newest = tmp_path / "last_checkpoint_epoch=2.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # cut in half, as a failing disk would
    resumed = run_bundle(*args, "--epochs", "3", "--resume", "True")
    log = resumed.stdout + resumed.stderr
    assert "last_checkpoint_epoch=2.pt cannot be loaded" in log
    assert f"resuming from {tmp_path / 'last_checkpoint_epoch=1.pt'}" in log
    epochs = [int(r["epoch"]) for r in read_csv(tmp_path / "dice_per_muscle.csv")]
    assert epochs == [1, 2, 2, 3]  # epoch 2 trained again from the intact epoch 1
    saved = torch.load(tmp_path / "last_checkpoint_epoch=3.pt", weights_only=True)
    assert saved["trainer"]["iteration"] == 3 * saved["trainer"]["epoch_length"]
    # The resumed run goes on keeping the last two: epoch 1's file, from before the resume, is gone.
    assert sorted(p.name for p in tmp_path.glob("last_checkpoint_epoch=*")) == [
        "last_checkpoint_epoch=2.json",
        "last_checkpoint_epoch=2.pt",
        "last_checkpoint_epoch=3.json",
        "last_checkpoint_epoch=3.pt",
    ]
