"""The generalization benchmark: the contrasts it makes of a real scan, and a run that scores a model on them."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import SMALL_SHAPE, SMALL_SPACING, read_csv, run_module

from scripts.phantom import Tissue, make_phantom
from scripts.tools.generalization import CONTRASTS, organ_overlap, real_contrasts, summary_row


def test_contrasts_are_made_from_water_and_fat():
    rng = np.random.default_rng(0)
    water, fat = rng.uniform(0, 100, (8, 8, 4)), rng.uniform(0, 400, (8, 8, 4))
    images = real_contrasts(water, fat)
    assert tuple(images) == CONTRASTS
    np.testing.assert_allclose(images["inphase"], water + fat, rtol=1e-6)
    np.testing.assert_allclose(images["opposed"], np.abs(water - fat), rtol=1e-5, atol=1e-4)
    # The remapped image turns the order of intensities around: what is darkest of the tissue in-phase (muscle,
    # about a quarter of the 99th percentile) becomes brighter than the brightest (fat).
    inphase, remapped = images["inphase"], images["remapped"]
    scale = np.percentile(inphase, 99)
    muscle_like, fat_like = np.abs(inphase / scale - 0.25) < 0.05, inphase / scale > 0.95
    assert remapped[muscle_like].mean() > 2 * remapped[fat_like].mean()


@pytest.mark.slow
def test_generalization_scores_every_model_and_option(trained: Path, tmp_path: Path):
    """A phantom stored like TUM02 (water, fat, ES/MF labels with TUM02's values) stands in for the real scan."""
    real = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=5)
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    tum02_values = np.zeros_like(real.label)
    tum02_values[real.label == 4], tum02_values[real.label == 8] = 4, 1  # TUM02: 4 left ES, 1 right ES
    for name, array in (("water", real.water), ("fat", real.fat), ("label_es_mf", tum02_values)):
        nib.save(nib.Nifti1Image(array, real.affine), real_dir / f"{name}.nii.gz")
    out = tmp_path / "gen"
    result = run_module(
        "scripts.tools.generalization",
        "--model", "tiny", str(trained / "models" / "model.pt"),
        "--options", "none", "largest",
        "--spacing", *map(str, SMALL_SPACING),
        "--real_dir", str(real_dir),
        "--output_dir", str(out),
        "--n_phantoms", "1",
        "--phantom_shape", "80", "64", "30",
        "--phantom_spacing", "4.5", "4.5", "9.0",
        "--heldout_maps",
    )  # fmt: skip
    table = (out / "generalization.md").read_text(encoding="utf-8")
    assert "| tiny / none |" in table and "| tiny / largest |" in table and table in result.stdout
    rows = read_csv(out / "generalization.csv")
    real_rows = [r for r in rows if r["id"].startswith("real_")]
    assert {r["id"] for r in real_rows} == {f"real_{c}" for c in CONTRASTS}
    assert {r["muscle"] for r in real_rows} == {"LES+M", "RES+M"}  # only what is drawn is scored
    phantom_rows = [r for r in rows if r["id"] == "phantom01"]
    assert len(phantom_rows) == 2 * 8
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    assert nib.load(out / "data" / "phantom01" / "label.nii.gz").shape == (80, 64, 30)


def test_held_out_map_phantoms_have_columns_of_their_own():
    rows = [
        {"id": "phantom01", "muscle": "LP", "dice": 0.9, "ff_diff_pp": 0.0},
        {"id": "map_lumbar_a_01", "muscle": "LP", "dice": 0.4, "ff_diff_pp": 0.0},
        {"id": "map_lumbar_a_01", "muscle": "RQL", "dice": 0.2, "ff_diff_pp": 0.0},
        {"id": "upper_lumbar_a_01", "muscle": "LP", "dice": 0.5, "ff_diff_pp": 0.0},
        {"id": "upper_lumbar_a_01", "muscle": "LI", "dice": float("nan"), "ff_diff_pp": 0.0},  # ruled out there
    ]
    cells = summary_row(rows)
    assert cells["phantoms P"] == "0.90" and cells["held-out map P"] == "0.40"
    assert cells["held-out map QL"] == "0.20" and cells["held-out map min"] == "0.20"
    assert cells["held-out map I"] == "–"
    assert cells["T11-L2 P"] == "0.50" and cells["T11-L2 I"] == "–" and cells["T11-L2 min"] == "0.50"


def test_upper_field_counts_muscle_voxels_inside_solid_organs(tmp_path: Path):
    """On a T11-L2 case the share of predicted psoas, iliacus and QL voxels that lie inside liver, spleen or kidney
    of the phantom's own tissue map, and any iliacus found, are counted from the written segmentation."""
    data_dir, eval_dir = tmp_path / "data", tmp_path / "eval"
    tissue = np.zeros((10, 10, 4), np.uint8)
    tissue[:5] = Tissue.LIVER
    seg = np.zeros_like(tissue)
    seg[3:7, 0] = 5  # right psoas: 4 x 4 voxels, half of them (x 3-4) on the liver
    seg[9, 9, 0] = 2  # one voxel of left iliacus, off the organs
    seg[0, 9] = 4  # ES+M on the liver: not a muscle that is counted
    case = "upper_lumbar_a_01"
    for folder, name, array in ((data_dir / case, "tissue", tissue), (eval_dir / case, f"{case}_seg", seg)):
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(array, np.eye(4)), folder / f"{name}.nii.gz")
    rows = organ_overlap(eval_dir, data_dir)
    assert rows == [{"id": case, "muscle_voxels": 17, "in_organs": 8, "iliacus_voxels": 1}]
    cells = summary_row([], rows)
    assert cells["T11-L2 P+I+QL in organs"] == "47.1 %" and cells["T11-L2 I voxels"] == "1"
    assert summary_row([])["T11-L2 I voxels"] == "–"
