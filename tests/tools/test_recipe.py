"""The shipped weights' recipe (``scripts/tools/recipe.py``): its defaults are the 0.4.0 commands, and the same code
runs end to end at toy size (phantom cohorts, two 1-epoch fine-tunings of named weights with different seeds, their
mean with its card), and the mean segments the sample."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, infer, run_module

from scripts.labels import MUSCLES
from scripts.model_card import SHA256_KEY, card_path, load_weights

A, ORGANS = "../shared/data/anatomy", "../shared/data/organs/upper_abdomen_ct.nii.gz"
MAPS = f"{A}/abdomen_template.nii.gz {A}/lumbar_b.nii.gz {A}/wholebody_a.nii.gz {A}/wholebody_b_lumbar.nii.gz"
MAPS += f" {A}/wholebody_c_pelvis.nii.gz {ORGANS}"
CONFIGS = "\"['configs/train.yaml','configs/robust_train.yaml','configs/finetune.yaml']\""


def test_the_defaults_are_the_0_4_0_recipe():
    printed = run_module("scripts.tools.recipe", "--start", "0.3.1.pt", "--out", "models/model.pt", "--dry_run")
    expected = []
    for s in (1, 2, 3):
        expected.append(
            f"python -m scripts.phantom phantoms_organs_s{s} --n 12 --seed {s} --shape 96 80 40"
            f" --spacing 3.75 3.75 7.8 --per_map 4 --anatomy {MAPS} --organs {ORGANS} --fov random --borders true"
        )
        expected.append(
            f"python -m monai.bundle run training --config_file {CONFIGS} --dataset_dir phantoms_organs_s{s}"
            f" --num_workers 0 --seed {s} --epochs 60 --val_interval 5 --learning_rate 0.0003"
            f" --pretrained_ckpt 0.3.1.pt --output_dir runs/organs_s{s}"
        )
    runs = " ".join(f"runs/organs_s{s}/models/model.pt" for s in (1, 2, 3))
    expected.append(f"python -m scripts.training.average_weights models/model.pt {runs}")
    assert printed.stdout.splitlines() == expected


def card_less_sha256(model: Path) -> dict:
    card = json.loads(card_path(model).read_text(encoding="utf-8"))
    return {k: v for k, v in card.items() if k != SHA256_KEY}


@pytest.mark.slow
def test_the_recipe_runs_end_to_end_at_toy_size_and_its_mean_segments_the_sample(tmp_path: Path):
    """3 procedural phantoms of 48 x 40 x 20 voxels of 7.5 x 7.5 x 15.6 mm per seed (2 train, 1 validates; the
    network sees them at the starting weights' voxel size), 1 epoch, phantoms only, from the shipped weights."""
    start, out = REPO / "models" / "model.pt", tmp_path / "mean" / "model.pt"
    run_module(
        "scripts.tools.recipe",
        "--start", str(start), "--out", str(out), "--workdir", str(tmp_path), "--seeds", "1", "2",
        "--n", "3", "--shape", "48", "40", "20", "--spacing", "7.5", "7.5", "15.6", "--anatomy", "--organs", "none",
        "--epochs", "1", "--val_interval", "1", "--real_cases", "[]",
    )  # fmt: skip
    runs = []
    for seed in (1, 2):
        assert (tmp_path / f"phantoms_organs_s{seed}" / "datalist.json").is_file()
        model = tmp_path / "runs" / f"organs_s{seed}" / "models" / "model.pt"
        assert model.is_file() and card_path(model).is_file()
        runs.append(load_weights(model))
    assert any(not torch.equal(runs[0][k], runs[1][k]) for k in runs[0]), "the seeds trained alike"
    assert out.is_file() and card_path(out).is_file()
    mean = load_weights(out)
    for key, value in mean.items():
        torch.testing.assert_close(value, (runs[0][key].float() + runs[1][key].float()) / 2)
    assert card_less_sha256(out) == card_less_sha256(start)

    infer(REPO / "sample", tmp_path / "infer", out)
    seg = nib.load(tmp_path / "infer" / "sub01" / "sub01_seg.nii.gz")
    assert set(MUSCLES) <= set(np.unique(np.asarray(seg.dataobj)).tolist()), "every muscle found on the sample"
