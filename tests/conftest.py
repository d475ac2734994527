"""Shared fixtures: a tiny phantom cohort and a briefly trained model, made once per test session."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from scripts.phantom import Phantom, Tissue, make_cohort, make_phantom

REPO = Path(__file__).resolve().parents[1]
TUM02 = REPO.parent / "shared" / "data" / "TUM02"
ANATOMY = REPO.parent / "shared" / "data" / "anatomy"
ORGANS = REPO.parent / "shared" / "data" / "organs" / "upper_abdomen_ct.nii.gz"
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


@pytest.fixture(scope="module")
def phantom(request: pytest.FixtureRequest) -> Phantom:
    """A small procedural phantom, once per test module, of the module's ``PHANTOM_SEED`` (default 3)."""
    return make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=getattr(request.module, "PHANTOM_SEED", 3))


def free_port() -> int:
    """A free TCP port on 127.0.0.1, for a test server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Label maps of known anatomy for the phantom tests, written from a procedural phantom's tissue map.
CONFUSERS = {Tissue.BOWEL, Tissue.BOWEL_FLUID, Tissue.BOWEL_GAS, Tissue.KIDNEY, Tissue.VESSEL}
# Our tissue ids -> MuscleMap's 8-label codes (odd on one side, even on the other); iliacus has no code.
EIGHT_LABEL_CODES = {
    Tissue.LEFT_MULTIFIDUS: 2, Tissue.RIGHT_MULTIFIDUS: 1, 4: 4, 8: 3, 1: 6, 5: 5, 3: 8, 7: 7,
}  # fmt: skip
WHOLE_BODY_CODES = {
    Tissue.LEFT_MULTIFIDUS: 5101, Tissue.RIGHT_MULTIFIDUS: 5102, 4: 5111, 8: 5112, 1: 5121, 5: 5122,
    3: 5131, 7: 5132, 2: 6141, 6: 6142, Tissue.OTHER_MUSCLE: 6121,
}  # fmt: skip


def write_map(tissue: np.ndarray, affine: np.ndarray, codes: dict[int, int], path: Path, swap: bool) -> Path:
    """A label map in MuscleMap codes, stored left-right flipped under an LAS affine (so array index and side
    disagree); ``swap`` exchanges the two codes of every pair, so only the affine can tell the sides."""
    lut = np.zeros(256, np.int16)
    for ours, code in codes.items():
        partner = code + (1 if code % 2 else -1) if swap and code < 100 else code
        if swap and code > 100:
            partner = code + (1 if code % 10 == 1 else -1)
        lut[int(ours)] = partner
    flipped = np.ascontiguousarray(lut[tissue][::-1])
    las = affine.copy()
    las[0, 0], las[0, 3] = -affine[0, 0], affine[0, 3] + affine[0, 0] * (tissue.shape[0] - 1)
    nib.save(nib.Nifti1Image(flipped, las), path)
    return path


@pytest.fixture(scope="session")
def source() -> tuple[np.ndarray, np.ndarray]:
    """The tissue map and affine of a procedural phantom, to make label maps of known anatomy from."""
    phantom = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=3)
    return phantom.tissue, phantom.affine


@pytest.fixture(scope="session")
def eight_label_map(source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tissue, affine = source
    return write_map(tissue, affine, EIGHT_LABEL_CODES, tmp_path_factory.mktemp("map") / "lumbar.nii.gz", swap=True)


def write_organ_map(tissue: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """A TotalSegmentator-coded map of the same body: back muscles (autochthon 86/87) and psoas (iliopsoas 88/89),
    kidneys (2 right, 3 left), the vertebrae near the midline as T12 / L1 / L2 (32 / 31 / 30) in thirds of the
    slices from the top, and in the upper half a liver block on the subject's right and a spleen block on the left,
    where the phantom has visceral fat or bowel; all under a flipped (LAS) affine, as a file may come."""
    world_x = affine[0, 3] + affine[0, 0] * np.arange(tissue.shape[0])
    right = (world_x > 0)[:, None, None]
    codes = np.zeros(tissue.shape, np.int16)
    codes[np.isin(tissue, (4, Tissue.LEFT_MULTIFIDUS))] = 86
    codes[np.isin(tissue, (8, Tissue.RIGHT_MULTIFIDUS))] = 87
    codes[tissue == 1], codes[tissue == 5] = 88, 89
    codes[(tissue == Tissue.KIDNEY) & right], codes[(tissue == Tissue.KIDNEY) & ~right] = 2, 3
    thirds = np.array_split(np.arange(tissue.shape[2])[::-1], 3)  # top third first
    central = (np.abs(world_x) < 30)[:, None, None]
    for code, slices in zip((32, 31, 30), thirds, strict=True):
        band = np.zeros(tissue.shape, bool)
        band[:, :, slices] = True
        codes[(tissue == Tissue.MARROW) & central & band] = code
    upper = np.zeros(tissue.shape, bool)
    upper[:, :, tissue.shape[2] // 2 :] = True
    soft = np.isin(tissue, (Tissue.VISCERAL_FAT, Tissue.BOWEL)) & upper
    codes[soft & (world_x > 40)[:, None, None]] = 5
    codes[soft & (world_x < -70)[:, None, None]] = 1
    flipped = np.ascontiguousarray(codes[::-1])
    las = affine.copy()
    las[0, 0], las[0, 3] = -affine[0, 0], affine[0, 3] + affine[0, 0] * (tissue.shape[0] - 1)
    nib.save(nib.Nifti1Image(flipped, las), path)
    return path


@pytest.fixture(scope="session")
def organ_map(source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tissue, affine = source
    return write_organ_map(tissue, affine, tmp_path_factory.mktemp("organs") / "organs.nii.gz")
