"""Shared fixtures: a tiny phantom cohort and a briefly trained model, made once per test session."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from scripts.phantom import make_cohort

REPO = Path(__file__).resolve().parents[1]
TUM02 = REPO.parent / "shared" / "data" / "TUM02"
# A coarse grid covering the published field of view, so CPU tests take seconds.
SMALL_SHAPE = (96, 80, 40)
SMALL_SPACING = (3.75, 3.75, 7.8)
SPACING_ARG = "[3.75,3.75,7.8]"


def run_module(module: str, *args: str, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m <module> ...`` (from the repository root unless ``cwd``), as a user would."""
    cmd = [sys.executable, "-m", module, *args]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, encoding="utf-8", errors="replace")
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def run_bundle(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run ...``"""
    return run_module("monai.bundle", "run", *args, check=check)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small phantoms: 4 training, 2 validation, the same 2 under testing."""
    out = tmp_path_factory.mktemp("cohort")
    make_cohort(out, n=6, seed=0, shape=SMALL_SHAPE, spacing=SMALL_SPACING)
    return out


@pytest.fixture(scope="session")
def trained(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output folder of a 2-epoch training run on the small cohort; the best model is ``models/model.pt`` in it."""
    out = tmp_path_factory.mktemp("train")
    run_bundle(
        "training",
        "--config_file", "configs/train.yaml",
        "--dataset_dir", str(cohort),
        "--output_dir", str(out),
        "--ckpt_dir", str(out / "models"),
        "--epochs", "2",
        "--spacing", SPACING_ARG,
        "--num_workers", "0",
    )  # fmt: skip
    return out


def write_datalist(path: Path, sections: dict) -> Path:
    path.write_text(json.dumps(sections, indent=1), encoding="utf-8")
    return path


def save_reoriented(array: np.ndarray, affine: np.ndarray, axcodes: tuple[str, ...], path: Path) -> Path:
    """Store ``array`` (RAS) with its voxel axes reordered/reversed to ``axcodes``, world position unchanged."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(axcodes)
    )
    data = nib.orientations.apply_orientation(array, transform)
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, array.shape)
    nib.save(nib.Nifti1Image(data, new_affine), path)
    return path
