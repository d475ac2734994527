"""The synthetic phantom: anatomy on the subject's sides, truth that matches the written files, Dixon algebra,
the command line and its datalist, reproducibility, and muscles that appear and grow at the right levels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO

from scripts.labels import LEFT_RIGHT_PAIRS, MUSCLES
from scripts.phantom import MUSCLE_TISSUES, datalist_entry, make_cohort, make_phantom, write_phantom

SHAPE = (96, 80, 40)
SPACING = (3.75, 3.75, 7.8)
PSOAS = (1, 5)
ILIACUS = (2, 6)
QUADRATUS = (3, 7)
ERECTOR = (4, 8)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small phantom written to disk."""
    case_dir = tmp_path_factory.mktemp("phantom") / "sub01"
    write_phantom(make_phantom(SHAPE, SPACING, seed=0), case_dir)
    return case_dir


def load(case_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(case_dir / f"{name}.nii.gz")
    return np.asarray(image.dataobj), image.affine


def test_every_muscle_is_labelled(case: Path):
    label, _ = load(case, "label")
    assert label.dtype == np.uint8
    assert set(np.unique(label)) == {0, *MUSCLES}


def test_left_muscles_lie_at_negative_world_x(case: Path):
    label, affine = load(case, "label")
    for left, right in LEFT_RIGHT_PAIRS:
        for muscle, sign in ((left, -1), (right, 1)):
            centroid = np.argwhere(label == muscle).mean(axis=0)
            world_x = (affine @ np.append(centroid, 1.0))[0]
            assert sign * world_x > 0, (muscle, world_x)


def test_truth_matches_the_written_labels(case: Path):
    label, affine = load(case, "label")
    truth = json.loads((case / "truth.json").read_text(encoding="utf-8"))
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    assert truth["shape"] == list(SHAPE) and truth["spacing"] == list(SPACING) and truth["seed"] == 0
    for muscle in MUSCLES:
        voxels = int((label == muscle).sum())
        assert truth[str(muscle)]["voxels"] == voxels
        assert truth[str(muscle)]["volume_ml"] == pytest.approx(voxels * voxel_ml)
    for muscle in PSOAS:
        assert 0.04 <= truth[str(muscle)]["mean_fat_fraction"] <= 0.07
    for muscle in ERECTOR:
        assert 0.10 <= truth[str(muscle)]["mean_fat_fraction"] <= 0.32


def test_fat_fraction_truth_varies_within_a_muscle():
    phantom = make_phantom(SHAPE, SPACING, seed=0)
    psoas = phantom.fat_fraction[phantom.label == PSOAS[0]]
    assert psoas.mean() == pytest.approx(phantom.truth[str(PSOAS[0])]["mean_fat_fraction"], rel=1e-5)
    assert np.median(psoas) != pytest.approx(psoas.mean(), rel=1e-3)


def test_tissue_map_is_written_and_holds_the_labels(case: Path):
    """The tissue map on the label's grid: every labelled muscle is its own tissue id (a multifidus is part of its
    side's ES+M), its names in truth.json, and muscle-signal tissues wherever there is a label."""
    tissue, affine = load(case, "tissue")
    label, label_affine = load(case, "label")
    truth = json.loads((case / "truth.json").read_text(encoding="utf-8"))
    assert tissue.dtype == np.uint8 and np.allclose(affine, label_affine)
    names = {int(t): name for t, name in truth["tissues"].items()}
    assert set(np.unique(tissue)) <= set(names)
    assert names[4] == "left erector spinae + multifidus" and names[0] == "air"
    for muscle in MUSCLES:
        assert np.array_equal(np.isin(tissue, [muscle]), (label == muscle) & (tissue == muscle))
    assert np.isin(tissue[label > 0], MUSCLE_TISSUES).all()
    assert not np.isin(tissue[label == 0], MUSCLES).any()


def test_dixon_images_are_consistent(case: Path):
    water, affine = load(case, "water")
    fat, _ = load(case, "fat")
    inphase, inphase_affine = load(case, "inphase")
    outphase, _ = load(case, "outphase")
    assert water.dtype == fat.dtype == inphase.dtype == outphase.dtype == np.float32
    assert np.allclose(affine, inphase_affine)
    assert water.min() >= 0 and fat.min() >= 0
    np.testing.assert_allclose(inphase, water + fat, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(outphase, np.abs(water - fat), rtol=1e-6, atol=1e-3)


def test_command_line_writes_cohort_and_datalist(tmp_path: Path):
    out = tmp_path / "cohort"
    command = [sys.executable, "-m", "scripts.phantom", str(out), "--n", "6"]
    command += ["--shape", *map(str, SHAPE), "--spacing", *map(str, SPACING)]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    datalist = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    assert [len(datalist[section]) for section in ("training", "validation", "testing")] == [4, 2, 2]
    for section in ("training", "validation", "testing"):
        for entry in datalist[section]:
            paths = [value for key, value in entry.items() if key != "id"]
            assert all((out / path).is_file() for path in paths)
            assert ("label" in entry) == (section != "testing")
    assert [entry["id"] for entry in datalist["testing"]] == [entry["id"] for entry in datalist["validation"]]
    assert datalist["training"][0] == {
        "id": "sub01",
        "image": "sub01/inphase.nii.gz",
        "outphase": "sub01/outphase.nii.gz",
        "water": "sub01/water.nii.gz",
        "fat": "sub01/fat.nii.gz",
        "label": "sub01/label.nii.gz",
        "tissue": "sub01/tissue.nii.gz",
    }


def test_command_line_rejects_an_empty_cohort(tmp_path: Path):
    command = [sys.executable, "-m", "scripts.phantom", str(tmp_path / "none"), "--n", "0"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "at least 1 case" in result.stderr


def test_a_single_case_is_a_testing_only_sample(tmp_path: Path):
    make_cohort(tmp_path, n=1, shape=SHAPE, spacing=SPACING)
    datalist = json.loads((tmp_path / "datalist.json").read_text(encoding="utf-8"))
    assert datalist == {"testing": [datalist_entry("sub01", with_label=False)]}
    assert (tmp_path / "sub01" / "label.nii.gz").is_file()


def test_parallel_workers_write_the_same_cohort(tmp_path: Path):
    make_cohort(tmp_path / "serial", n=2, shape=SHAPE, spacing=SPACING)
    make_cohort(tmp_path / "parallel", n=2, shape=SHAPE, spacing=SPACING, workers=2)
    for case in ("sub01", "sub02"):
        for name in ("water", "label"):
            serial = nib.load(tmp_path / "serial" / case / f"{name}.nii.gz").get_fdata()
            parallel = nib.load(tmp_path / "parallel" / case / f"{name}.nii.gz").get_fdata()
            np.testing.assert_array_equal(serial, parallel)


def test_seed_decides_the_phantom():
    first, again, other = (make_phantom(SHAPE, SPACING, seed=seed) for seed in (0, 0, 1))
    for name in ("water", "fat", "inphase", "outphase", "label", "tissue", "fat_fraction"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.label, other.label)
    assert not np.array_equal(first.inphase, other.inphase)


def test_muscles_appear_and_grow_at_their_levels():
    label = make_phantom(SHAPE, SPACING, seed=0).label  # axis 2 runs inferior to superior
    area = {muscle: (label == muscle).sum(axis=(0, 1)) for muscle in MUSCLES}
    for muscle in PSOAS:
        slices = np.flatnonzero(area[muscle])
        top, widest = slices[-1], int(np.argmax(area[muscle]))
        assert widest < top - 5  # the widest slice (about L4/5) lies well below the top
        assert area[muscle][widest] > 2.5 * area[muscle][top - 1]
    for muscle in QUADRATUS:
        assert area[muscle][:5].sum() == 0  # none below the iliac crest
    for muscle in ILIACUS:
        assert area[muscle][-10:].sum() == 0  # none above it
        assert area[muscle][:5].sum() > 0
