"""Out of the box: the shipped sample scan and demonstration weights, with no argument and no GPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from conftest import REPO, run_module
from monai.bundle import ConfigParser

from scripts.labels import MUSCLES

WEIGHTS = REPO / "models" / "model.pt"


def test_weights_load_safely_and_are_small():
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    assert WEIGHTS.stat().st_size < 25 * 1024 * 1024


def test_inference_defaults_use_the_spacing_the_weights_were_trained_at():
    metadata = json.loads((REPO / "configs" / "metadata.json").read_text(encoding="utf-8"))
    demo = ConfigParser.load_config_file(REPO / "configs" / "demo_train.yaml")
    assert metadata["training_spacing_mm"] == demo["spacing"]


def test_no_argument_inference_segments_the_sample(tmp_path: Path):
    """The README's first command, run as written in a copy of the bundle: every muscle found on the sample."""
    for part in ("configs", "scripts", "models", "sample"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    run_module("monai.bundle", "run", "inference", "--config_file", "configs/inference.yaml", cwd=tmp_path)

    case = tmp_path / "output" / "sub01"
    seg, image = nib.load(case / "sub01_seg.nii.gz"), nib.load(REPO / "sample" / "sub01" / "inphase.nii.gz")
    assert seg.shape == image.shape
    np.testing.assert_allclose(seg.affine, image.affine, atol=1e-4)
    assert set(MUSCLES) <= set(np.unique(np.asarray(seg.dataobj)).tolist())
    assert (case / "sub01_metrics.json").is_file() and (case / "sub01_qc.png").is_file()
    assert (tmp_path / "output" / "metrics.csv").is_file()
