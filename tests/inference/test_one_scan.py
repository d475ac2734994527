"""One scan, one command: ``--image`` (with ``--water``/``--fat``/``--outphase``) and ``--images DIR`` give the
outputs of a datalist run, through the same up-front checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import infer, write_dicom_series


def segmentation(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def test_one_scan_gives_the_outputs_of_a_datalist_run(cohort: Path, trained: Path, tmp_path: Path):
    ckpt, case = trained / "models" / "model.pt", cohort / "sub05"
    infer(cohort, tmp_path / "datalist", ckpt, "--flip_tta", "false")  # switches: true/false/True/False/1/0
    scan = [f"--{key}" if i == 0 else str(case / f"{key}.nii.gz") for key in ("water", "fat") for i in (0, 1)]
    infer(cohort, tmp_path / "one", ckpt, "--flip_tta", "0", "--image", str(case / "inphase.nii.gz"), *scan)
    assert sorted(p.name for p in (tmp_path / "one").iterdir() if p.is_dir()) == ["sub05"]  # the scan's folder name
    for name in ("sub05_seg.nii.gz", "sub05_slices.csv", "sub05_qc.png"):
        assert (tmp_path / "one" / "sub05" / name).is_file()
    np.testing.assert_array_equal(
        segmentation(tmp_path / "one" / "sub05" / "sub05_seg.nii.gz"),
        segmentation(tmp_path / "datalist" / "sub05" / "sub05_seg.nii.gz"),
    )
    reports = [json.loads((tmp_path / run / "sub05" / "sub05_metrics.json").read_text()) for run in ("one", "datalist")]
    assert reports[0] == reports[1]
    for run in ("one", "datalist"):
        assert json.loads((tmp_path / run / "run.json").read_text())["flip_tta"] is False


@pytest.mark.slow
def test_a_folder_of_scans_is_one_case_each_and_checked_up_front(cohort: Path, trained: Path, tmp_path: Path):
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(cohort / "sub05" / "inphase.nii.gz", scans / "anna.nii.gz")
    write_dicom_series(sitk.ReadImage(str(cohort / "sub06" / "inphase.nii.gz")) * 1000, scans / "bert")
    ckpt = trained / "models" / "model.pt"
    infer(cohort, tmp_path / "out", ckpt, "--flip_tta", "False", "--images", str(scans))
    for case in ("anna", "bert"):
        seg = nib.load(tmp_path / "out" / case / f"{case}_seg.nii.gz")
        assert seg.get_data_dtype() == np.uint8 and (seg.get_fdata() > 0).any()
    assert seg.shape == nib.load(cohort / "sub06" / "inphase.nii.gz").shape

    (scans / "notes").mkdir()
    (scans / "notes" / "readme.txt").write_text("not an image", encoding="utf-8")
    refused = infer(cohort, tmp_path / "again", ckpt, "--images", str(scans), check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"testing[2] (notes): image: {scans / 'notes'} is a folder but holds no DICOM series" in refused.stderr
    assert not (tmp_path / "again").exists()
    missing = infer(cohort, tmp_path / "again", ckpt, "--image", str(tmp_path / "nowhere.nii.gz"), check=False)
    assert "testing[0] (nowhere): image file not found" in missing.stderr
