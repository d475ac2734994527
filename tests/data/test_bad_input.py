"""Bad input, interrupted runs and untrusted files: each stops with one clear message, or is survived."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import REPO, SMALL_SPACING, SPACING_ARG, infer, read_csv, run_bundle, write_datalist, write_dicom_series

from scripts.atomic import write_atomically
from scripts.data.datalist import DatalistError, load_datalist
from scripts.data.image_checks import CheckedLoadImaged
from scripts.data.transforms import MatchCaseGeometryd
from scripts.model_card import ModelCard, read_model
from scripts.phantom import make_phantom
from scripts.report.case_report import write_case_report

AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])


def nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def load(path: Path, key: str = "image") -> dict:
    return CheckedLoadImaged([key])({key: str(path)})


def volume() -> np.ndarray:
    return np.random.default_rng(0).random((8, 8, 4)).astype(np.float32)


def test_truncated_nifti_names_the_file(tmp_path: Path):
    whole = nifti(tmp_path / "whole.nii.gz", np.random.default_rng(0).random((40, 40, 20)).astype(np.float32))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"image .*cut.nii.gz: cannot be read as an image \(EOFError"):
        load(cut)


@pytest.mark.parametrize(
    "data, message",
    [
        (np.ones((8, 8), np.float32), r"has shape \(8, 8\) \(2-D\); expected one 3-D volume \(X, Y, Z\)"),
        (np.ones((8, 8, 4, 3), np.float32), r"has shape \(8, 8, 4, 3\) \(4-D\); expected one 3-D volume \(X, Y, Z\)"),
        (np.where(volume() > 0.5, np.nan, volume()), r"contains \d+ NaN or infinite voxels"),
        (np.where(volume() > 0.9, np.inf, volume()), r"contains \d+ NaN or infinite voxels"),
        (np.zeros((8, 8, 4), np.float32), "is all zero"),
        (np.full((8, 8, 4), 5, np.float32), "holds the one value 5 in every voxel: there is no anatomy to segment"),
    ],
    ids=["2d", "4d", "nan", "inf", "all-zero", "constant"],
)
def test_unusable_images_are_refused_naming_file_and_problem(tmp_path: Path, data: np.ndarray, message: str):
    path = nifti(tmp_path / "bad.nii.gz", data)
    with pytest.raises(ValueError, match=message) as err:
        load(path)
    assert str(path) in str(err.value)


def test_non_orthonormal_direction_is_refused(tmp_path: Path):
    sheared = AFFINE.copy()
    sheared[0, 1] = 0.8  # axes no longer at right angles
    with pytest.raises(ValueError, match="not orthonormal"):
        load(nifti(tmp_path / "sheared.nii.gz", volume(), sheared))


def test_loading_with_image_only_false_keeps_the_header_as_loadimaged_does(tmp_path: Path):
    """MONAI Label's bundle inference turns ``image_only`` off on every ``LoadImaged``: checks still apply, and the
    header is also kept under ``<key>_meta_dict``."""
    loader = CheckedLoadImaged(["image"])
    loader._loader.image_only = False  # as monailabel.tasks.infer.bundle does
    case = loader({"image": str(nifti(tmp_path / "image.nii.gz", volume()))})
    assert case["image"].shape == (1, 8, 8, 4)
    np.testing.assert_allclose(case["image_meta_dict"]["affine"], AFFINE)
    with pytest.raises(ValueError, match="is all zero"):
        loader({"image": str(nifti(tmp_path / "zero.nii.gz", np.zeros((8, 8, 4), np.float32)))})


def test_water_and_fat_of_different_shapes_are_refused(tmp_path: Path):
    case = CheckedLoadImaged(["water", "fat"])(
        {
            "water": str(nifti(tmp_path / "water.nii.gz", volume())),
            "fat": str(nifti(tmp_path / "fat.nii.gz", np.random.default_rng(1).random((8, 8, 5), np.float32))),
        }
    )
    with pytest.raises(
        ValueError, match=r"fat .*fat.nii.gz vs water .*water.nii.gz: shapes differ \(\(8, 8, 5\) vs \(8, 8, 4\)\)"
    ):
        MatchCaseGeometryd(["water", "fat"])(case)


def tiny_series() -> sitk.Image:
    """Three 8 x 8 slices 3 mm apart."""
    image = sitk.GetImageFromArray(
        np.arange(64, dtype=np.int16).reshape(1, 8, 8) + np.arange(3, dtype=np.int16)[:, None, None]
    )
    image.SetSpacing((1.0, 1.0, 3.0))
    return image


def test_dicom_folders_without_one_series_are_listed_up_front(tmp_path: Path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image", encoding="utf-8")
    write_dicom_series(tiny_series(), tmp_path / "two", "1.2.826.0.1.3680043.2.1125.101", "water")
    write_dicom_series(tiny_series(), tmp_path / "two", "1.2.826.0.1.3680043.2.1125.102", "fat")
    write_dicom_series(tiny_series(), tmp_path / "one", "1.2.826.0.1.3680043.2.1125.103", "in-phase")
    datalist = write_datalist(
        tmp_path / "datalist.json",
        {"testing": [{"id": "a", "image": "notes"}, {"id": "b", "image": "two"}, {"id": "c", "image": "one"}]},
    )
    with pytest.raises(DatalistError) as err:
        load_datalist(datalist, "testing")
    message = str(err.value)
    assert "2 problem(s)" in message
    assert "notes is a folder but holds no DICOM series" in message
    assert (
        "holds 2 DICOM series: 1.2.826.0.1.3680043.2.1125.101 (water, 3 files); 1.2.826.0.1.3680043.2.1125.102 (fat"
        in message
    )
    assert "Move the series you mean into a folder of its own" in message


def test_likely_fat_water_swap_is_warned_and_flagged(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    phantom = make_phantom((96, 80, 40), (3.75, 3.75, 7.8), seed=3)
    swapped = {"water": phantom.fat, "fat": phantom.water}
    with caplog.at_level(logging.WARNING):
        report = write_case_report(tmp_path, "swap", phantom.label, phantom.affine, swapped)
    assert report["fat_water_swap_suspected"] is True
    assert (
        json.loads((tmp_path / "swap" / "swap_metrics.json").read_text(encoding="utf-8"))["fat_water_swap_suspected"]
        is True
    )
    assert "swap: fat and water look swapped" in caplog.text
    normal = write_case_report(
        tmp_path, "ok", phantom.label, phantom.affine, {"water": phantom.water, "fat": phantom.fat}
    )
    assert normal["fat_water_swap_suspected"] is False


def test_interrupted_write_leaves_no_file_under_the_final_name(tmp_path: Path):
    def crash(temporary: Path) -> None:
        temporary.write_bytes(b"half a segmentation")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path / "case_seg.nii.gz", crash)
    assert list(tmp_path.iterdir()) == []


def test_one_unreadable_case_fails_alone(cohort: Path, trained: Path, tmp_path: Path):
    entries = json.loads((cohort / "datalist.json").read_text(encoding="utf-8"))["testing"]
    testing = [{k: str(cohort / v) if k != "id" else v for k, v in e.items()} for e in entries]
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes((cohort / "sub05" / "inphase.nii.gz").read_bytes()[:5000])
    testing.insert(1, {"id": "broken", "image": str(broken)})
    write_datalist(tmp_path / "datalist.json", {"testing": testing})
    result = infer(tmp_path, tmp_path / "out", trained / "models" / "model.pt", check=False)
    assert result.returncode != 0
    for case in ("sub05", "sub06"):
        assert (tmp_path / "out" / case / f"{case}_seg.nii.gz").is_file()
    rows = read_csv(tmp_path / "out" / "failures.csv")
    assert [r["id"] for r in rows] == ["broken"] and "cannot be read as an image" in rows[0]["reason"]
    assert not (tmp_path / "out" / "broken").exists()
    assert [r["id"] for r in read_csv(tmp_path / "out" / "metrics.csv")] == ["sub05", "sub06"]
    assert "ERROR: 2 of 3 scans segmented, 1 not: the reason for each is above" in result.stderr
    # Each good case segmented once, and the progress bar counted against the three cases.
    output = result.stdout + result.stderr
    assert [output.count(f"{case}: segmentation, report and QC picture written") for case in ("sub05", "sub06")] == [
        1,
        1,
    ]
    assert "[2/3]" in output and "/?]" not in output


@pytest.mark.slow
def test_rerun_skips_done_cases_and_refuses_a_different_run(cohort: Path, trained: Path, tmp_path: Path):
    ckpt, out = trained / "models" / "model.pt", tmp_path / "out"
    infer(cohort, out, ckpt)
    done = {p: p.stat().st_mtime_ns for p in out.glob("*/*")}
    (out / "sub06" / "sub06_qc.png").unlink()  # as if the run had stopped before the last file of sub06
    result = infer(cohort, out, ckpt)
    assert "1 of 2 cases already done" in result.stdout + result.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in done.items() if p.parent.name == "sub05")
    assert (out / "sub06" / "sub06_qc.png").is_file()

    other = tmp_path / "other.pt"
    weights, card = read_model(ckpt)
    torch.save({"model": {k: v + 1 for k, v in weights.items()}, "model_card": card}, other)
    refused = infer(cohort, out, other, check=False)
    assert refused.returncode != 0
    assert "holds the outputs of a different run (differs in: checkpoint, checkpoint_sha256)" in refused.stderr
    infer(cohort, out, other, "--overwrite", "True")
    assert all(p.stat().st_mtime_ns != t for p, t in done.items() if p.parent.name == "sub05")


def test_checkpoint_of_another_network_names_the_keys(cohort: Path, tmp_path: Path):
    from monai.networks.nets import UNet

    small = UNet(3, 1, 9, (8, 16, 32, 64, 128), (2, 2, 2, 2), num_res_units=2)
    torch.save(small.state_dict(), tmp_path / "small.pt")  # a bare state dict: nothing says what it is
    result = infer(cohort, tmp_path / "out", tmp_path / "small.pt", "--spacing", SPACING_ARG, check=False)
    assert result.returncode != 0
    assert "size mismatch for model.0.conv.unit0.conv.weight" in result.stderr
    # With its model card, it is refused before any work, naming both networks.
    torch.save(
        {"model": small.state_dict(), "model_card": ModelCard(SMALL_SPACING, small).state_dict()}, tmp_path / "c.pt"
    )
    result = infer(cohort, tmp_path / "out", tmp_path / "c.pt", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "their network is {" in result.stderr and "'channels': [8, 16, 32, 64, 128]" in result.stderr


def test_checkpoint_needing_arbitrary_unpickling_is_refused(cohort: Path, tmp_path: Path):
    torch.save({"model": logging.getLogger("a pickled object")}, tmp_path / "pickled.pt")
    result = infer(cohort, tmp_path / "out", tmp_path / "pickled.pt", check=False)
    assert result.returncode != 0
    assert "Weights only load failed" in result.stderr


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes_to_the_same_number_of_epochs(cohort: Path, tmp_path: Path):
    args = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", "configs/train.yaml",
        "--dataset_dir", str(cohort),
        "--output_dir", str(tmp_path),
        "--ckpt_dir", str(tmp_path / "models"),
        "--epochs", "3",
        "--spacing", SPACING_ARG,
        "--num_workers", "0",
    ]  # fmt: skip
    first = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "last_checkpoint_epoch=1.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # into epoch 2
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (tmp_path / "last_checkpoint_epoch=3.pt").exists(), "the run was to be killed before its end"

    resumed = subprocess.run(
        [*args, "--resume", "True"], cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert "resuming from" in log and "Restored all variables" in log
    saved = torch.load(tmp_path / "last_checkpoint_epoch=3.pt", weights_only=True)
    trainer = saved["trainer"]
    assert trainer["iteration"] == 3 * trainer["epoch_length"] and trainer["max_epochs"] == 3
    assert saved["optimizer"]["state"], "the optimizer state travels with the epoch"
    epochs = [int(r["epoch"]) for r in read_csv(tmp_path / "dice_per_muscle.csv")]
    assert epochs[-1] == 3 and sorted(set(epochs)) == [1, 2, 3]


def test_resume_without_a_checkpoint_says_so(cohort: Path, tmp_path: Path):
    result = run_bundle(
        "training",
        "--config_file", "configs/train.yaml",
        "--dataset_dir", str(cohort),
        "--output_dir", str(tmp_path),
        "--epochs", "1",
        "--resume", "True",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"ERROR: no usable last_checkpoint_epoch=N.pt in {tmp_path} to resume from" in result.stderr
