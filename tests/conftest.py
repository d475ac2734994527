"""Shared fixtures: a tiny phantom cohort and a briefly trained model, made once per test session."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from scripts.phantom import make_cohort

REPO = Path(__file__).resolve().parents[1]
TUM02 = REPO.parent / "shared" / "data" / "TUM02"
# A coarse grid covering the published field of view, so CPU tests take seconds.
SMALL_SHAPE = (96, 80, 40)
SMALL_SPACING = (3.75, 3.75, 7.8)
SPACING_ARG = "[3.75,3.75,7.8]"


def run_module(
    module: str, *args: str, cwd: Path = REPO, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> ...`` (from the repository root unless ``cwd``; in ``env``, else this process's
    environment), as a user would."""
    cmd = [sys.executable, "-m", module, *args]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, encoding="utf-8", errors="replace", env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def run_bundle(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run ...``"""
    return run_module("monai.bundle", "run", *args, check=check, env=env)


def infer(
    dataset_dir: Path, output_dir: Path, ckpt: Path, *extra: str, run_id: str = "inference", check: bool = True
) -> subprocess.CompletedProcess:
    """The inference command on the ``testing`` cases of ``dataset_dir`` with the weights ``ckpt``."""
    return run_bundle(
        run_id,
        "--config_file", "configs/inference.yaml",
        "--dataset_dir", str(dataset_dir),
        "--output_dir", str(output_dir),
        "--ckpt_path", str(ckpt),
        "--num_workers", "0",
        *extra,
        check=check,
    )  # fmt: skip


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


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def reoriented(array: np.ndarray, affine: np.ndarray, axcodes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels stored with the array axes reordered/reversed to ``axcodes``, world positions unchanged."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(axcodes)
    )
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, array.shape)
    return nib.orientations.apply_orientation(array, transform), new_affine


def save_reoriented(array: np.ndarray, affine: np.ndarray, axcodes: tuple[str, ...], path: Path) -> Path:
    """Store ``array`` as a NIfTI file with its voxel axes reordered/reversed to ``axcodes`` (see ``reoriented``)."""
    nib.save(nib.Nifti1Image(*reoriented(array, affine, axcodes)), path)
    return path


def write_dicom_series(
    image: sitk.Image, folder: Path, series_uid: str = "1.2.826.0.1.3680043.2.1125.1.1", description: str | None = None
) -> None:
    """Store a 3-D image as one DICOM series of int16 slices, one file each, as a scanner export would; several
    series may share a folder (file names carry the end of the series UID)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    direction = image.GetDirection()
    orientation = "\\".join(f"{c:g}" for c in direction[0::3] + direction[1::3])  # row and column directions
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(image.GetDepth()):
        plane = image[:, :, z]
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        tags = {
            "0008|0060": "MR",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",  # study
            "0020|000e": series_uid,
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{p:.4f}" for p in position),
            "0020|0037": orientation,
            "0018|0050": f"{image.GetSpacing()[2]:g}",
        } | ({"0008|103e": description} if description is not None else {})
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid.rsplit('.', 1)[-1]}_{z:03d}.dcm"))
        writer.Execute(plane)
