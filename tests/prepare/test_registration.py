"""Registration to a reference subject and cohort preparation, on phantoms stored as a user's raw files would be."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import SMALL_SHAPE, SMALL_SPACING, TUM02, read_csv, run_bundle, write_dicom_series
from monai.metrics import compute_dice
from monai.networks.utils import one_hot

from scripts.data.datalist import load_datalist
from scripts.labels import ABBREVIATIONS, MUSCLES, NUM_CLASSES
from scripts.phantom import make_phantom, write_phantom
from scripts.prepare.cohort import PrepareError, prepare_cohort
from scripts.prepare.registration import (
    Pose,
    RegistrationCheck,
    RigidRegistration,
    field_of_view_centre,
    resample,
    target_grid,
)
from scripts.tools.registration_benchmark import COPY_MOTIONS, score, write_cohort

# The published field of view at 2.5x the published voxel size: fine enough to measure 0.5° and 1 mm.
FINE_SHAPE, FINE_SPACING = (160, 128, 64), (2.34375, 2.34375, 4.41796875)
ROTATION_DEG, SHIFT_MM = 4.0, (6.0, -4.0, 3.0)  # about the S-I axis; RAS
# The small phantoms' grid with the in-plane resolution halved, as the published recipe does.
HALVED_SPACING = (2 * SMALL_SPACING[0], 2 * SMALL_SPACING[1], SMALL_SPACING[2])
HALVED_SHAPE = (SMALL_SHAPE[0] // 2, SMALL_SHAPE[1] // 2, SMALL_SHAPE[2])
MOTIONS = {"sub02": (3.0, (4.0, -2.0, 3.0)), "sub03": (-4.0, (-5.0, 3.0, -2.0)), "sub04": (2.0, (2.0, 5.0, 4.0))}
# The default 2 % of the voxels leaves a few dozen points at the coarsest level of so small an image.
SAMPLING = 0.2


def registration_rows(path: Path) -> dict[str, dict]:
    """registration.csv by subject."""
    return {row["subject"]: row for row in read_csv(path)}


def muscle_dice(label: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice of each muscle between two label arrays of the same grid."""
    onehot = [one_hot(torch.as_tensor(a[None, None].astype(np.int64)), NUM_CLASSES) for a in (label, truth)]
    dice = compute_dice(*onehot, include_background=False)[0]
    return {ABBREVIATIONS[m]: float(dice[m - 1]) for m in MUSCLES}


def rigid_motion(degrees: float, shift_mm: tuple[float, float, float]) -> sitk.Euler3DTransform:
    """A subject's motion about world (0, 0, 0), the phantoms' centre: ``degrees`` about S-I, then ``shift_mm`` (RAS).

    The moved scan at a point y shows the anatomy that was at motion^-1(y), and sitk.Resample pulls values through
    the transform it is given, so a scan is moved by resampling it with ``motion.GetInverse()``. Registration
    returns the transform from reference points to subject points: the motion itself.
    """
    return Pose((0.0, 0.0, degrees), shift_mm).transform((0.0, 0.0, 0.0))


def test_target_grid_halves_the_published_reference_in_plane():
    reference = sitk.Image([800, 640, 145], sitk.sitkUInt8)
    reference.SetSpacing([0.46875, 0.46875, 1.95])
    reference.SetOrigin([10.0, -20.0, 30.0])
    reference.SetDirection([-1, 0, 0, 0, -1, 0, 0, 0, 1])
    grid = target_grid(reference, (0.9375, 0.9375, 1.95))
    assert grid.GetSize() == (400, 320, 145)
    assert grid.GetSpacing() == pytest.approx((0.9375, 0.9375, 1.95))
    assert grid.GetDirection() == reference.GetDirection()

    def corner(image: sitk.Image, index: tuple[float, float, float]) -> np.ndarray:
        return np.array(image.TransformContinuousIndexToPhysicalPoint(index))

    # the same field of view: the outer corners of the first and the last voxel coincide
    np.testing.assert_allclose(corner(grid, (-0.5,) * 3), corner(reference, (-0.5,) * 3), atol=1e-6)
    last = [n - 0.5 for n in grid.GetSize()]
    np.testing.assert_allclose(corner(grid, last), corner(reference, [n - 0.5 for n in reference.GetSize()]), atol=1e-6)


def test_registration_recovers_a_known_rotation_and_shift(tmp_path: Path):
    write_phantom(make_phantom(FINE_SHAPE, FINE_SPACING, seed=1), tmp_path)
    image = sitk.ReadImage(str(tmp_path / "inphase.nii.gz"), sitk.sitkFloat32)
    label = sitk.ReadImage(str(tmp_path / "label.nii.gz"))
    motion = rigid_motion(ROTATION_DEG, SHIFT_MM)
    moved = resample(image, image, motion.GetInverse())
    moved_label = resample(label, label, motion.GetInverse(), is_label=True)
    # The reference is the original less a border wider than the motion (12 voxels, 2 slices), so each of its
    # points has anatomy in the moved scan, whose border shows what lay outside the original (zeros). Cropped
    # evenly, its centre stays at (0, 0, 0): the centre the pose is reported about is the motion's.
    margin = [12, 12, 2]
    size = [n - 2 * m for n, m in zip(image.GetSize(), margin, strict=True)]
    reference, reference_label = sitk.RegionOfInterest(image, size, margin), sitk.RegionOfInterest(label, size, margin)

    transform, metric = RigidRegistration()(reference, moved)
    pose = Pose.of(transform)
    registered = sitk.GetArrayFromImage(resample(moved_label, reference, transform, is_label=True))
    dice = muscle_dice(registered, sitk.GetArrayFromImage(reference_label))
    print(f"\nmetric {metric:.4f}, angles {pose.angles_deg} deg, shift {pose.translation_mm} mm, Dice {dice}")

    np.testing.assert_allclose(pose.angles_deg, (0.0, 0.0, ROTATION_DEG), atol=0.5)
    np.testing.assert_allclose(pose.translation_mm, SHIFT_MM, atol=1.0)
    assert min(dice.values()) >= 0.95, dice
    assert metric < -0.9


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small subjects as users store them, each a moved copy of one phantom (MOTIONS), so every registration
    has one right answer: sub01 with every file; sub02 water + fat + label, its water header with origin (0, 0, 0)
    as in TUM02; sub03 an in-phase DICOM series + label; sub04 water + fat only."""
    raw = tmp_path_factory.mktemp("raw")
    write_phantom(make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=1), raw / "sub01")
    (raw / "sub01" / "truth.json").unlink()
    for subject, (degrees, shift_mm) in MOTIONS.items():
        (raw / subject).mkdir()
        for name in ("inphase", "water", "fat", "label"):
            original = sitk.ReadImage(str(raw / "sub01" / f"{name}.nii.gz"))
            moved = resample(original, original, rigid_motion(degrees, shift_mm).GetInverse(), name == "label")
            sitk.WriteImage(moved, str(raw / subject / f"{name}.nii.gz"))
    for subject in ("sub02", "sub04"):
        (raw / subject / "inphase.nii.gz").unlink()
    water = nib.load(raw / "sub02" / "water.nii.gz")
    affine = water.affine.copy()
    affine[:3, 3] = 0
    nib.save(nib.Nifti1Image(np.asarray(water.dataobj), affine), raw / "sub02" / "water.nii.gz")
    dicom = sitk.ReadImage(str(raw / "sub03" / "inphase.nii.gz"))
    for name in ("inphase", "water", "fat"):
        (raw / "sub03" / f"{name}.nii.gz").unlink()
    write_dicom_series(dicom, raw / "sub03" / "inphase")
    (raw / "sub04" / "label.nii.gz").unlink()
    return raw


def test_prepare_command_registers_every_subject_onto_one_grid_and_splits(raw: Path, tmp_path: Path):
    out = tmp_path / "out"
    run_bundle(
        "prepare",
        "--config_file", "configs/prepare.yaml",
        "--raw_dir", str(raw),
        "--dataset_dir", str(out),
        "--spacing", json.dumps(HALVED_SPACING),
        "--registration#sampling_percentage", str(SAMPLING),
    )  # fmt: skip

    rows = registration_rows(out / "registration.csv")
    assert {s: r["status"] for s, r in rows.items()} == {
        "sub01": "reference",
        "sub02": "registered",
        "sub03": "registered",
        "sub04": "registered",
    }
    for subject, (degrees, shift_mm) in MOTIONS.items():
        row = rows[subject]
        assert float(row["metric"]) < -0.9 and float(row["seconds"]) > 0
        angles = [float(row[f"angle_{axis}_deg"]) for axis in "xyz"]
        np.testing.assert_allclose(angles, (0.0, 0.0, degrees), atol=0.5)
        if subject != "sub02":  # whose header (water's, origin zero) places it elsewhere in the world
            # 2 mm: the fixed grid is 7.5 x 7.5 x 7.8 mm
            np.testing.assert_allclose([float(row[f"translation_{axis}_mm"]) for axis in "xyz"], shift_mm, atol=2.0)

    datalist = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    labelled = [e["id"] for e in datalist["training"] + datalist["validation"]]
    assert sorted(labelled) == ["sub01", "sub02", "sub03"] and len(datalist["validation"]) == 1  # 30 % of 3
    assert [e["id"] for e in datalist["testing"]] == ["sub04"]
    assert datalist["testing"][0] == {
        "id": "sub04",
        "image": "sub04/inphase.nii.gz",
        "water": "sub04/water.nii.gz",
        "fat": "sub04/fat.nii.gz",
    }
    entries = [e for section in datalist for e in load_datalist(out / "datalist.json", section)]

    reference = nib.load(out / "sub01" / "inphase.nii.gz")
    assert reference.shape == HALVED_SHAPE
    np.testing.assert_allclose(nib.affines.voxel_sizes(reference.affine), HALVED_SPACING, rtol=1e-5)
    for entry in entries:
        for key in ("image", "outphase", "water", "fat", "label"):
            if key in entry:
                written = nib.load(entry[key])
                assert written.shape == reference.shape
                np.testing.assert_allclose(written.affine, reference.affine, atol=1e-4)
                assert written.get_data_dtype() == (np.uint8 if key == "label" else np.float32)
    # sub02 has no in-phase image: it is water + fat (resampling is linear, so the sum survives it)
    water, fat, inphase = (nib.load(out / "sub02" / f"{n}.nii.gz").get_fdata() for n in ("water", "fat", "inphase"))
    np.testing.assert_allclose(water + fat, inphase, atol=1e-2)
    # Each label moved with its subject's images onto the reference's anatomy; Dice is modest because each label
    # went through three nearest-neighbour resamplings on 3.75-7.8 mm grids (0.76-0.94 seen), ~0 had it not.
    reference_label = np.asarray(nib.load(out / "sub01" / "label.nii.gz").dataobj)
    for subject in ("sub02", "sub03"):
        dice = muscle_dice(np.asarray(nib.load(out / subject / "label.nii.gz").dataobj), reference_label)
        assert min(dice.values()) > 0.7, (subject, dice)


def test_rerun_redoes_only_the_subject_whose_outputs_are_missing(raw: Path, tmp_path: Path):
    out = tmp_path / "out"
    settings = {"spacing": HALVED_SPACING, "num_workers": 2, "registration": RigidRegistration(SAMPLING)}
    prepare_cohort(raw, out, **settings)
    before = {p: p.stat().st_mtime_ns for p in out.glob("sub*/*.nii.gz")}
    rows_before = registration_rows(out / "registration.csv")

    shutil.rmtree(out / "sub03")
    prepare_cohort(raw, out, **settings)
    after = {p: p.stat().st_mtime_ns for p in out.glob("sub*/*.nii.gz")}
    assert after.keys() == before.keys()
    assert {p.parent.name for p in after if after[p] != before[p]} == {"sub03"}
    rows = registration_rows(out / "registration.csv")
    assert {s: r for s, r in rows.items() if s != "sub03"} == {s: r for s, r in rows_before.items() if s != "sub03"}
    assert rows["sub03"]["status"] == "registered"

    with pytest.raises(PrepareError, match="prepared with"):  # another grid must not join these outputs
        prepare_cohort(raw, out, spacing=SMALL_SPACING)


def test_unreadable_subject_is_reported_and_the_others_complete(raw: Path, tmp_path: Path):
    broken = tmp_path / "raw"
    for subject in ("sub01", "sub02", "sub04"):
        shutil.copytree(raw / subject, broken / subject)
    (broken / "sub02" / "fat.nii.gz").write_bytes(b"not a NIfTI file")
    out = tmp_path / "out"
    result = run_bundle(
        "prepare",
        "--config_file", "configs/prepare.yaml",
        "--raw_dir", str(broken),
        "--dataset_dir", str(out),
        "--spacing", json.dumps(HALVED_SPACING),
        "--registration#sampling_percentage", str(SAMPLING),
        check=False,
    )  # fmt: skip

    assert result.returncode != 0
    assert "1 of 3 subjects failed" in result.stderr and "sub02: InputError" in result.stderr
    rows = registration_rows(out / "registration.csv")
    assert rows["sub02"]["status"] == "failed" and "fat.nii.gz cannot be read" in rows["sub02"]["reason"]
    assert {rows[s]["status"] for s in ("sub01", "sub04")} == {"reference", "registered"}
    assert not (out / "sub02").exists()
    datalist = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    assert [e["id"] for section in datalist.values() for e in section] == ["sub01", "sub04"]


@pytest.mark.skipif(not TUM02.is_dir(), reason="real data ../shared/data/TUM02 not present")
def test_real_scan_with_disagreeing_headers_keeps_labels_on_their_muscles(tmp_path: Path):
    raw = tmp_path / "raw" / "tum02"
    raw.mkdir(parents=True)
    for name, source in (("water", "water"), ("fat", "fat"), ("label", "label_es_mf")):
        (raw / f"{name}.nii.gz").symlink_to(TUM02 / f"{source}.nii.gz")
    out = tmp_path / "out"
    prepare_cohort(raw.parent, out, spacing=(2.0, 2.0, 4.0), num_workers=1)

    water, fat, label = (nib.load(out / "tum02" / f"{n}.nii.gz") for n in ("water", "fat", "label"))
    np.testing.assert_allclose(water.affine, label.affine, atol=1e-4)
    labels = np.asarray(label.dataobj)
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4}
    water, fat = water.get_fdata(), fat.get_fdata()
    for value in (1, 2, 3, 4):  # 14.5-15.6 % on the original grid: water, fat and label still overlap
        inside = labels == value
        assert 0.13 < np.mean(fat[inside] / (water[inside] + fat[inside])) < 0.18


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``scripts.tools.registration_benchmark``'s cohort at the small grid: the reference sub01, five phantoms of
    body sizes 0.81-1.24 (the reference 1.00) moved by up to 7 degrees and 3 mm (sub02-sub06), and three copies of
    the reference moved by known transforms (copy1-copy3); ``raw/`` as prepare reads it, ``truth/`` the labels."""
    out = tmp_path_factory.mktemp("cohort")
    write_cohort(out, SMALL_SHAPE, SMALL_SPACING)
    return out


def test_copies_come_back_and_no_subject_is_accepted_whose_muscles_overlap_less(cohort: Path):
    """At this coarse test grid two of the five subjects of other body sizes come back worse than unregistered since
    the phantoms' QL moved back (0.4.0; at the benchmark's 1.875 mm grid all five register): the check must fail
    exactly those, name them, and accept only subjects whose muscles overlap the reference's at least as well."""
    try:
        prepare_cohort(cohort / "raw", cohort / "data", "sub01", SMALL_SPACING, RigidRegistration(SAMPLING))
    except PrepareError as error:
        failed_now = str(error)
    else:
        failed_now = ""

    rows = {row["subject"]: row for row in score(cohort, "data")}
    print(
        "\n" + "\n".join(f"{s}: {r['dice_before']:.3f} -> {r['dice_after']:.3f} {r['pose']}" for s, r in rows.items())
    )
    for subject, truth in COPY_MOTIONS.items():
        assert rows[subject]["status"] == "registered"
        np.testing.assert_allclose(rows[subject]["pose"].angles_deg, truth.angles_deg, atol=1.0)
        assert np.linalg.norm(np.subtract(rows[subject]["pose"].translation_mm, truth.translation_mm)) <= 2.0
    others = [s for s in rows if s.startswith("sub") and s != "sub01"]
    assert sum(rows[s]["status"] == "registered" for s in others) >= 3
    for subject, row in rows.items():
        if row["status"] in ("reference", "registered"):
            assert row["dice_after"] >= row["dice_before"], (subject, row["dice_before"], row["dice_after"])
        else:  # failed: named in the error, and rightly (its muscles overlap less than unregistered)
            assert subject in failed_now and row["reason"], subject
            assert row["dice_after"] < row["dice_before"], (subject, row["dice_before"], row["dice_after"])


def test_correlation_on_unlabelled_scans_fails_the_subjects_it_misregisters(cohort: Path, tmp_path: Path):
    """The published method's metric moves the muscles of most subjects of other body sizes away from the reference's
    (0.62-0.69 -> 0.21-0.54 seen); with no labels to compare, the tissue classes' overlap must catch every one."""
    raw = tmp_path / "raw"
    for subject in (cohort / "raw").iterdir():
        (raw / subject.name).mkdir(parents=True)
        for image in subject.glob("[!l]*.nii.gz"):  # all but label.nii.gz
            (raw / subject.name / image.name).symlink_to(image)
    registration = RigidRegistration(SAMPLING, metric="correlation")
    with pytest.raises(PrepareError, match="subjects failed"):
        prepare_cohort(raw, tmp_path / "data", "sub01", SMALL_SPACING, registration)

    (tmp_path / "truth").symlink_to(cohort / "truth")
    rows = score(tmp_path, "data")
    print(
        "\n" + "\n".join(f"{r['subject']} {r['status']}: {r['dice_before']:.3f} -> {r['dice_after']:.3f}" for r in rows)
    )
    failed = [row for row in rows if row["status"] == "failed"]
    assert failed and all("tissue overlap" in row["reason"] for row in failed)
    for row in rows:
        if row["status"] != "failed":
            assert row["dice_after"] >= row["dice_before"], row
    datalist = json.loads((tmp_path / "data" / "datalist.json").read_text(encoding="utf-8"))
    listed = {entry["id"] for section in datalist.values() for entry in section}
    assert listed == {row["subject"] for row in rows if row["status"] != "failed"}


MISREGISTRATION = """
from scripts.prepare.registration import Pose, field_of_view_centre


class Misregistration:
    \"\"\"Answers every subject with one pose, as an optimiser that wandered off would, and a good final metric.\"\"\"

    # copy1 lies 4 degrees and 8 mm from the reference; this pose is possible, and wrong
    pose = Pose((0.0, 0.0, -6.0), (-12.0, 0.0, 0.0))

    def __init__(self, **settings):
        \"\"\"Takes, and ignores, the settings configs/prepare.yaml gives a registration.\"\"\"

    def __call__(self, fixed, moving):
        return self.pose.transform(field_of_view_centre(fixed)), -0.5
"""


def test_a_misregistered_subject_is_failed_with_its_reason_and_the_command_ends_in_error(cohort: Path, tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for subject in ("sub01", "copy1"):
        (raw / subject).symlink_to(cohort / "raw" / subject, target_is_directory=True)
    (tmp_path / "misregistration.py").write_text(MISREGISTRATION, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "out"
    result = run_bundle(
        "prepare",
        "--config_file", "configs/prepare.yaml",
        "--raw_dir", str(raw),
        "--dataset_dir", str(out),
        "--reference", "sub01",
        "--spacing", json.dumps(HALVED_SPACING),
        "--registration#_target_", "misregistration.Misregistration",
        check=False,
        env=env,
    )  # fmt: skip

    assert result.returncode != 0
    assert "1 of 2 subjects failed" in result.stderr and "copy1: tissue overlap (Dice)" in result.stderr
    row = registration_rows(out / "registration.csv")["copy1"]
    assert row["status"] == "failed" and float(row["angle_z_deg"]) == -6.0
    assert "tissue overlap" in row["reason"] and "label overlap" in row["reason"]
    assert float(row["label_dice_after"]) < float(row["label_dice_before"])
    assert not (out / "copy1").exists()
    datalist = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    assert [e["id"] for section in datalist.values() for e in section] == ["sub01"]


@pytest.mark.parametrize(
    "pose, reason",
    [
        (Pose((0.0, 0.0, 20.0), (0.0, 0.0, 0.0)), "rotation 20.0 deg exceeds 15 deg"),
        (Pose((0.0, 0.0, 0.0), (0.0, 0.0, 80.0)), "fields of view [0, 0, 80] mm apart along the reference's axes"),
    ],
)
def test_check_refuses_a_pose_beyond_the_limits(pose: Pose, reason: str, cohort: Path):
    image = sitk.ReadImage(str(cohort / "raw" / "sub01" / "inphase.nii.gz"), sitk.sitkFloat32)
    found = RegistrationCheck()(image, image, pose.transform(field_of_view_centre(image)))
    assert reason in found["reason"]
    assert RegistrationCheck()(image, image, sitk.Euler3DTransform())["reason"] is None
