"""A scan that cannot be segmented, as a user meets it: one line with the file and what to do, no traceback, the
reason said once, the exit status non-zero; and a scan that is unusual but allowed is warned about once."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, SMALL_SPACING, read_csv, run_bundle

from scripts.data.image_checks import unusual_input_notes

AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])
SHEARED = AFFINE + np.array([[0, 0.8, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
WEIGHTS = REPO / "models" / "model.pt"


def volume() -> np.ndarray:
    return np.random.default_rng(0).random((40, 40, 20)).astype(np.float32)


# Each bad file as a user may have it, and words its reason must hold (after the file's path).
BAD_FILES = {
    "nan_part": (np.where(volume() > 0.5, np.nan, volume()), AFFINE, "NaN or infinite voxels (of 32000); set them"),
    "all_nan": (np.full((40, 40, 20), np.nan, np.float32), AFFINE, "32000 NaN or infinite voxels, every voxel"),
    "four_d": (np.stack([volume(), volume()], -1), AFFINE, "has shape (40, 40, 20, 2) (4-D); expected one 3-D"),
    "constant": (np.full((40, 40, 20), 5, np.float32), AFFINE, "holds the one value 5 in every voxel"),
    "sheared": (volume(), SHEARED, "a sheared header, which places the voxels nowhere"),
    "infinite": (np.where(volume() > 0.9, np.inf, volume()), AFFINE, "NaN or infinite voxels (of 32000)"),
    "text": (None, None, "cannot be read as an image (ImageFileError"),
}


def bad_file(folder: Path, name: str) -> Path:
    """The bad file ``name`` of ``BAD_FILES``, written into ``folder``; "text" is a text file named .nii.gz."""
    data, affine, _ = BAD_FILES[name]
    path = folder / f"{name}.nii.gz"
    if data is None:
        path.write_text("patient notes, not an image\n", encoding="utf-8")
    else:
        nib.save(nib.Nifti1Image(data, affine), path)
    return path


def segment(*scans: str, output_dir: Path, env: dict | None = None):
    """The inference command a user types, with the shipped weights and the default loader workers."""
    return run_bundle(
        "inference", "--config_file", "configs/inference.yaml", *scans, "--output_dir", str(output_dir),
        check=False, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_scan_ends_the_run_with_its_reason_once_and_no_traceback(name: str, tmp_path: Path):
    path = bad_file(tmp_path, name)
    result = segment("--image", str(path), output_dir=tmp_path / "out")
    console = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in console and "object at 0x" not in console
    (row,) = read_csv(tmp_path / "out" / "failures.csv")
    reason = row["reason"]
    assert row["id"] == name and reason.startswith(f"image {path}") and BAD_FILES[name][2] in reason
    assert console.count(reason) == 1 and console.count(BAD_FILES[name][2]) == 1
    assert f"ERROR: {reason}\n" in result.stderr  # the run's last word, on its own line
    assert not (tmp_path / "out" / name).exists()


def test_the_traceback_of_a_failed_scan_is_shown_when_asked_for(tmp_path: Path):
    path = bad_file(tmp_path, "nan_part")
    result = segment("--image", str(path), output_dir=tmp_path / "out", env={**os.environ, "LUMBAR_TRACEBACK": "1"})
    assert result.returncode == 1
    console = result.stdout + result.stderr
    assert "Traceback" in console and "scripts/data/image_checks.py" in console


def test_a_cohort_with_one_bad_scan_counts_what_was_segmented(cohort: Path, tmp_path: Path):
    scans = tmp_path / "scans"
    scans.mkdir()
    for name, case in (("anna", "sub05"), ("bert", "sub06")):
        shutil.copy(cohort / case / "inphase.nii.gz", scans / f"{name}.nii.gz")
    bad = bad_file(scans, "nan_part")
    out = tmp_path / "out"
    result = segment("--images", str(scans), output_dir=out)
    console = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in console and "object at 0x" not in console
    (row,) = read_csv(out / "failures.csv")
    assert row["id"] == "nan_part" and row["reason"].startswith(f"image {bad} contains ")
    assert console.count(row["reason"]) == 1
    assert f"- ERROR - nan_part not segmented: {row['reason']}\n" in result.stdout
    assert result.stderr.rstrip().splitlines()[-2:] == [
        f"ERROR: 2 of 3 scans segmented, 1 not: the reason for each is above and in {out / 'failures.csv'}. Mend "
        "those scans and run the same command again; it segments only the scans not done yet.",
        "(for the full traceback, run again with LUMBAR_TRACEBACK=1)",
    ]
    assert [r["id"] for r in read_csv(out / "metrics.csv")] == ["anna", "bert"]


def test_one_slice_is_segmented_with_a_warning_on_the_console_and_in_the_report(cohort: Path, tmp_path: Path):
    scan = nib.load(cohort / "sub05" / "inphase.nii.gz")
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(scan.dataobj)[:, :, 20:21], scan.affine), path)
    result = segment("--image", str(path), output_dir=tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    (note,) = json.loads((tmp_path / "out" / "slice" / "slice_metrics.json").read_text(encoding="utf-8"))["notes"]
    assert note.startswith("has one slice (96 x 80 x 1 voxels)")
    console = result.stdout + result.stderr
    assert console.count(note) == 1 and f"WARNING - slice: the scan {note}\n" in result.stdout


def test_unusual_grids_are_noted_and_usual_ones_not():
    spacing = np.diag([*SMALL_SPACING, 1.0])
    assert unusual_input_notes((96, 80, 40), spacing, SMALL_SPACING) == []
    assert unusual_input_notes((400, 320, 145), np.diag([0.94, 0.94, 1.95, 1.0]), SMALL_SPACING) == []  # finer
    (short,) = unusual_input_notes((96, 80, 6), spacing, SMALL_SPACING)
    assert short.startswith("covers 47 mm along the spine, under about 50 mm")
    (coarse,) = unusual_input_notes((96, 80, 15), np.diag([3.75, 3.75, 20.0, 1.0]), SMALL_SPACING)
    assert coarse.startswith("has voxels of 3.75 x 3.75 x 20 mm (x, y, z), over 2 times the 3.75 x 3.75 x 7.8 mm")
    # The spine runs along the first array axis here (a sagittal stack stored S-I first): 6 voxels of 7.8 mm.
    sagittal = np.array([[0, 0, 3.75, 0], [0, 3.75, 0, 0], [7.8, 0, 0, 0], [0, 0, 0, 1.0]])
    (short,) = unusual_input_notes((6, 80, 96), sagittal, SMALL_SPACING)
    assert short.startswith("covers 47 mm along the spine")
    assert unusual_input_notes((96, 80, 40), spacing, None) == []
