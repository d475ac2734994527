"""Muscle metrics: volumes and fat fractions against the phantom's truth, the Dixon algebra and noise floor, axial
areas and their level, independence of the array order, asymmetry, absent muscles and missing fat information,
JSON-ready output, and the real TUM02 case against a plain independent computation."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import SMALL_SPACING, TUM02, reoriented

from scripts.labels import ABBREVIATIONS, MUSCLES
from scripts.phantom import Phantom, rician
from scripts.report.muscle_metrics import (
    asymmetry_index,
    cohort_row,
    core_erosion_voxels,
    fat_fraction_map,
    measure,
    muscle_report,
    slice_axis,
    slice_rows,
)

METRICS = (
    "volume_ml",
    "fat_fraction_mean_percent",
    "fat_fraction_median_percent",
    "core_fat_fraction_mean_percent",
    "core_volume_ml",
    "lean_volume_ml",
    "max_area_cm2",
    "max_area_slice",
    "max_area_z_mm",
)
FAT_FIELDS = (
    "fat_fraction_mean_percent",
    "fat_fraction_median_percent",
    "core_fat_fraction_mean_percent",
    "lean_volume_ml",
)


PHANTOM_SEED = 1  # the conftest fixture ``phantom``


@pytest.fixture(scope="module")
def report(phantom: Phantom) -> dict:
    fat_fraction, note = fat_fraction_map(water=phantom.water, fat=phantom.fat)
    return muscle_report(measure(phantom.label, phantom.affine, fat_fraction), note)


def true_mean_percent(phantom: Phantom, muscle: int) -> float:
    return 100.0 * phantom.truth[str(muscle)]["mean_fat_fraction"]


def noise_free_dixon(phantom: Phantom) -> tuple[np.ndarray, np.ndarray]:
    """Water and fat images whose F/(W+F) is the phantom's noise-free fat fraction, on the in-phase signal."""
    signal = phantom.inphase
    return signal * (1 - phantom.fat_fraction), signal * phantom.fat_fraction


def test_volumes_match_truth(phantom: Phantom, report: dict):
    for muscle in MUSCLES:
        assert report["muscles"][ABBREVIATIONS[muscle]]["volume_ml"] == pytest.approx(
            phantom.truth[str(muscle)]["volume_ml"], rel=0.005
        )


def test_mean_fat_fraction_matches_truth(phantom: Phantom, report: dict):
    """On the phantom's own noisy water and fat images, within 0.5 points of the noise-free truth."""
    for muscle in MUSCLES:
        measured = report["muscles"][ABBREVIATIONS[muscle]]["fat_fraction_mean_percent"]
        assert measured == pytest.approx(true_mean_percent(phantom, muscle), abs=0.5)


def test_strong_noise_biases_lean_muscle_fat_fraction_upwards(phantom: Phantom):
    """Magnitude (Rician) noise near the fat signal of lean muscle inflates F/(W+F): why the phantom's noise is low."""
    water, fat = noise_free_dixon(phantom)
    rng = np.random.default_rng(0)
    noisy = muscle_report(
        measure(phantom.label, phantom.affine, fat_fraction_map(rician(water, 10, rng), rician(fat, 10, rng))[0])
    )
    psoas = ABBREVIATIONS[1]
    assert noisy["muscles"][psoas]["fat_fraction_mean_percent"] > true_mean_percent(phantom, 1) + 1.0


def test_inphase_opposed_phase_agrees_with_water_fat(phantom: Phantom, report: dict):
    fat_fraction, note = fat_fraction_map(inphase=phantom.inphase, outphase=phantom.outphase)
    from_ip_op = muscle_report(measure(phantom.label, phantom.affine, fat_fraction), note)
    for name in ABBREVIATIONS.values():
        assert from_ip_op["muscles"][name]["fat_fraction_mean_percent"] == pytest.approx(
            report["muscles"][name]["fat_fraction_mean_percent"], abs=1.0
        )


def test_water_fat_taken_over_inphase_opposed_phase(phantom: Phantom):
    both = fat_fraction_map(phantom.water, phantom.fat, phantom.inphase, np.zeros_like(phantom.inphase))[0]
    np.testing.assert_array_equal(both, fat_fraction_map(water=phantom.water, fat=phantom.fat)[0])


def test_noise_floor_excludes_faint_voxels():
    """Floor = noise_floor × the 99th percentile of W + F over the image: 0.02 × 98.01 = 1.96 here."""
    total = np.arange(100, dtype=np.float32).reshape(100, 1, 1)
    fat_fraction, note = fat_fraction_map(water=total / 2, fat=total / 2)
    assert note is None
    assert np.isnan(fat_fraction[:2]).all()
    np.testing.assert_allclose(fat_fraction[2:], 0.5)
    assert np.isnan(fat_fraction_map(water=total / 2, fat=total / 2, noise_floor=0.1)[0][:10]).all()


def test_areas_add_up_to_volume_and_peak_at_max_area_slice(phantom: Phantom, report: dict):
    rows = slice_rows(measure(phantom.label, phantom.affine, None))
    thickness_cm = SMALL_SPACING[2] / 10
    for name in ABBREVIATIONS.values():
        entry = report["muscles"][name]
        areas = {row["slice"]: row[f"{name}_area_cm2"] for row in rows}
        assert sum(areas.values()) * thickness_cm == pytest.approx(entry["volume_ml"], rel=1e-3)
        assert areas[entry["max_area_slice"]] == entry["max_area_cm2"] == max(areas.values())
        assert entry["max_area_z_mm"] == next(row["z_mm"] for row in rows if row["slice"] == entry["max_area_slice"])


def test_slice_rows_fat_fraction_matches_muscle_mean(phantom: Phantom, report: dict):
    """The voxel-weighted mean of the per-slice means is the muscle's mean."""
    rows = slice_rows(measure(phantom.label, phantom.affine, fat_fraction_map(water=phantom.water, fat=phantom.fat)[0]))
    for name in ABBREVIATIONS.values():
        weighted = [(row[f"{name}_area_cm2"], row[f"{name}_fat_fraction_percent"]) for row in rows]
        weighted = [(area, ff) for area, ff in weighted if ff is not None]
        mean = sum(area * ff for area, ff in weighted) / sum(area for area, _ in weighted)
        assert mean == pytest.approx(report["muscles"][name]["fat_fraction_mean_percent"], abs=0.01)


def test_slice_axis_is_read_from_the_affine(phantom: Phantom, report: dict):
    """Stored as (S, L, P) the slices lie across array axis 0; every measure is unchanged."""
    label, affine = reoriented(phantom.label, phantom.affine, ("S", "L", "P"))
    fat_fraction, _ = reoriented(
        fat_fraction_map(water=phantom.water, fat=phantom.fat)[0], phantom.affine, ("S", "L", "P")
    )
    assert slice_axis(affine) == 0 and slice_axis(phantom.affine) == 2
    permuted = muscle_report(measure(label, affine, fat_fraction))
    assert permuted["slice_axis"] == 0
    assert permuted["voxel_size_mm"] == [report["voxel_size_mm"][i] for i in (2, 0, 1)]
    assert permuted["muscles"] == report["muscles"]
    assert permuted["asymmetry"] == report["asymmetry"]


def test_slice_axis_of_an_oblique_affine():
    """Slices tilted 20° about x are still across the array axis closest to world z."""
    tilt = np.deg2rad(20)
    affine = np.eye(4)
    affine[:3, :3] = [[0, 0, 1], [np.cos(tilt), np.sin(tilt), 0], [-np.sin(tilt), np.cos(tilt), 0]]
    assert slice_axis(affine) == 1


def constructed_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 10×10×4 grid of 2×2×5 mm voxels: left psoas 30 voxels (ff 0.1, 0.2 or 0.6), right psoas 10 voxels (ff
    0.1), left quadratus lumborum 5 voxels on one slice; every other muscle absent."""
    label = np.zeros((10, 10, 4), np.uint8)
    fat_fraction = np.zeros(label.shape, np.float32)
    label[0:3, 0:5, 0:2] = 1
    fat_fraction[0:3, 0:5, 0:2] = np.array([0.1, 0.2, 0.6])[:, None, None]
    label[5:10, 0:2, 1] = 5
    fat_fraction[5:10, 0:2, 1] = 0.1
    label[5:10, 5, 3] = 3
    fat_fraction[5:10, 5, 3] = 0.3
    return label, np.diag([2.0, 2.0, 5.0, 1.0]), fat_fraction


def test_constructed_case_metrics_and_asymmetry():
    label, affine, fat_fraction = constructed_case()
    report = muscle_report(measure(label, affine, fat_fraction))
    left, right = report["muscles"]["LP"], report["muscles"]["RP"]
    assert left["volume_ml"] == 30 * 0.02 and right["volume_ml"] == 10 * 0.02
    assert left["fat_fraction_mean_percent"] == pytest.approx(30.0)
    assert left["fat_fraction_median_percent"] == pytest.approx(20.0)
    assert left["lean_volume_ml"] == pytest.approx(0.6 * 0.7)
    assert left["max_area_cm2"] == pytest.approx(15 * 0.04) and left["max_area_slice"] == 0
    assert left["max_area_z_mm"] == 0.0 and report["muscles"]["LQL"]["max_area_z_mm"] == 15.0
    psoas = report["asymmetry"]["psoas"]
    assert psoas["volume_percent"] == pytest.approx(100 * (0.6 - 0.2) / 0.4)
    assert psoas["fat_fraction_percent"] == pytest.approx(100 * (30 - 10) / 20)
    assert report["asymmetry"]["quadratus_lumborum"] == {"volume_percent": 200.0, "fat_fraction_percent": None}
    assert report["asymmetry"]["iliacus"] == {"volume_percent": None, "fat_fraction_percent": None}
    assert asymmetry_index(0.0, 0.0) is None and asymmetry_index(None, 1.0) is None


def test_absent_muscle_reports_zero_and_null():
    label, affine, fat_fraction = constructed_case()
    report = muscle_report(measure(label, affine, fat_fraction))
    for name in ("LI", "RI", "RQL", "LES+M", "RES+M"):
        entry = report["muscles"][name]
        assert entry["volume_ml"] == 0 and entry["max_area_cm2"] == 0
        assert all(entry[key] is None for key in (*FAT_FIELDS, "max_area_slice", "max_area_z_mm"))
    empty = muscle_report(measure(np.zeros_like(label), affine, fat_fraction))
    assert all(entry["volume_ml"] == 0 for entry in empty["muscles"].values())
    assert slice_rows(measure(np.zeros_like(label), affine, fat_fraction)) == []


def test_erosion_is_the_whole_number_of_voxels_nearest_to_2_mm():
    assert core_erosion_voxels((1.0185, 1.0185, 4.0)) == (2, 2, 0)  # TUM02: a half voxel rounds down
    assert core_erosion_voxels((3.75, 0.5, 1.3)) == (1, 4, 2)


def test_core_fat_fraction_leaves_out_a_fatty_rim_2_mm_deep():
    """A 12×12×12 mm block of 1 mm voxels (a third of it beyond the grid's top) whose outer 2 mm hold fat fraction
    0.6 and whose inside holds 0.1: the core is the inside; the grid's edge is not the muscle's edge."""
    label = np.zeros((16, 16, 10), np.uint8)
    label[2:14, 2:14, 4:] = 8
    fat_fraction = np.zeros(label.shape, np.float32)
    fat_fraction[label == 8] = 0.6
    fat_fraction[4:12, 4:12, 6:] = 0.1
    report = muscle_report(measure(label, np.eye(4), fat_fraction))
    entry = report["muscles"]["RES+M"]
    assert report["core_erosion_voxels"] == [2, 2, 2]
    assert entry["core_fat_fraction_mean_percent"] == pytest.approx(10.0)
    assert entry["core_volume_ml"] == pytest.approx(8 * 8 * 4 / 1000)
    assert entry["fat_fraction_mean_percent"] > 30.0
    rows = slice_rows(measure(label, np.eye(4), fat_fraction))
    assert [row["RES+M_core_fat_fraction_percent"] for row in rows] == [None, None, 10.0, 10.0, 10.0, 10.0]
    assert [row["RES+M_fat_fraction_percent"] for row in rows][:2] == [60.0, 60.0]


def test_muscle_with_every_voxel_below_the_noise_floor_has_no_fat_fraction():
    label, affine, fat_fraction = constructed_case()
    fat_fraction[label == 1] = np.nan
    entry = muscle_report(measure(label, affine, fat_fraction))["muscles"]["LP"]
    assert entry["volume_ml"] == 0.6 and all(entry[key] is None for key in FAT_FIELDS)


def test_no_fat_information_gives_null_fat_fraction_with_a_note(phantom: Phantom):
    fat_fraction, note = fat_fraction_map(inphase=phantom.inphase)
    assert fat_fraction is None and "in-phase" in note
    report = muscle_report(measure(phantom.label, phantom.affine, fat_fraction), note)
    assert report["fat_fraction_note"] == note
    for entry in report["muscles"].values():
        assert entry["volume_ml"] > 0 and all(entry[key] is None for key in FAT_FIELDS)
    assert all(metrics["fat_fraction_percent"] is None for metrics in report["asymmetry"].values())
    assert muscle_report(measure(phantom.label, phantom.affine, None))["fat_fraction_note"]


@pytest.mark.parametrize(
    "label, affine, fat_fraction",
    [
        (np.zeros((4, 4)), np.eye(4), None),
        (np.full((4, 4, 4), 1.5), np.eye(4), None),
        (np.zeros((4, 4, 4)), np.zeros((4, 4)), None),
        (np.zeros((4, 4, 4)), np.eye(4), np.zeros((4, 4, 3))),
    ],
    ids=["2-D label", "fractional label", "singular affine", "fat fraction shape"],
)
def test_bad_input_raises_a_clear_error(label: np.ndarray, affine: np.ndarray, fat_fraction: np.ndarray | None):
    with pytest.raises(ValueError):
        muscle_report(measure(label, affine, fat_fraction))


def test_outputs_are_json_ready(phantom: Phantom, report: dict):
    rows = slice_rows(measure(phantom.label, phantom.affine, fat_fraction_map(water=phantom.water, fat=phantom.fat)[0]))
    row = cohort_row("sub01", report)
    json.dumps([report, rows, row], allow_nan=False)
    assert len(rows) == len({row["slice"] for row in rows}) > 0
    assert list(row)[0] == "id" and len(row) == 1 + len(MUSCLES) * len(METRICS) + 4 * 2 + 1  # + swap flag
    assert row["LP_volume_ml"] == report["muscles"]["LP"]["volume_ml"]
    assert (
        row["asym_erector_spinae_multifidus_volume_percent"]
        == report["asymmetry"]["erector_spinae_multifidus"]["volume_percent"]
    )


@pytest.mark.skipif(not TUM02.is_dir(), reason="real data ../shared/data/TUM02 not present")
def test_tum02_erector_spinae_multifidus_match_plain_computation():
    """Right ES+M = labels 1 ∪ 2, left = 3 ∪ 4, measured in the label's own space (the water header's origin and
    spacing are wrong). Plain computation: voxel count × |det|, and the mean of F/(W+F) over the mask where
    W + F >= 0.02 × its 99th percentile over the image."""
    label_image = nib.load(TUM02 / "label_es_mf.nii.gz")
    source = np.asarray(label_image.dataobj)
    water = np.asarray(nib.load(TUM02 / "water.nii.gz").dataobj, np.float64)
    fat = np.asarray(nib.load(TUM02 / "fat.nii.gz").dataobj, np.float64)
    label = np.zeros(source.shape, np.uint8)
    label[np.isin(source, (1, 2))] = 8
    label[np.isin(source, (3, 4))] = 4
    fat_fraction, note = fat_fraction_map(water=water, fat=fat)
    report = muscle_report(measure(label, label_image.affine, fat_fraction), note)

    voxel_ml = abs(np.linalg.det(label_image.affine[:3, :3])) / 1000
    total = water + fat
    signal = total >= 0.02 * np.percentile(total, 99)
    for muscle, name in ((4, "LES+M"), (8, "RES+M")):
        mask = label == muscle
        volume = mask.sum() * voxel_ml
        mean = 100 * np.mean(fat[mask & signal] / total[mask & signal])
        entry = report["muscles"][name]
        print(f"TUM02 {name}: {entry['volume_ml']} mL, mean fat fraction {entry['fat_fraction_mean_percent']} %")
        assert entry["volume_ml"] == pytest.approx(volume, abs=1e-3)
        assert entry["fat_fraction_mean_percent"] == pytest.approx(mean, abs=1e-3)
        assert 14.0 < mean < 16.0  # README: 14.5-15.6 % per source label
    assert report["muscles"]["LP"]["volume_ml"] == 0 and report["muscles"]["LP"]["fat_fraction_mean_percent"] is None
