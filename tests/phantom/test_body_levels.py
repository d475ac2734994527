"""Where the phantom is in the body: organs from a real organ map at their levels, fields of view that cut the
scan and rule muscles out, and the borders between adjacent muscles (fat plane, fascia or none)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ORGANS, REPO, SMALL_SHAPE, SMALL_SPACING
from scipy import ndimage

from scripts.labels import MUSCLES
from scripts.phantom import MUSCLE_TISSUES, Tissue, make_phantom
from scripts.phantom.fields_of_view import FIELDS, draw_field
from scripts.phantom.organ_map import read_organ_map

ILIACUS = (2, 6)


def world_x(phantom, mask: np.ndarray) -> np.ndarray:
    return phantom.affine[0, 3] + phantom.affine[0, 0] * np.argwhere(mask)[:, 0]


def test_organ_map_reads_levels_and_sides(organ_map: Path):
    source = read_organ_map(organ_map)
    low, high = source.level_range
    assert -1.2 < low < -0.3 and 1.3 < high < 2.2  # T12 (centre -0.5) to L2 (centre 1.5), a third of slices each
    assert set(np.unique(source.tissue)) >= {0, Tissue.LIVER, Tissue.SPLEEN, Tissue.KIDNEY}
    assert not np.isin(source.tissue, MUSCLES).any()  # its muscles are not organs to paste


def test_pasted_organs_take_no_muscle_voxel_and_keep_their_sides(organ_map: Path):
    plain = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=4)
    with_organs = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=4, organs=organ_map)
    assert np.array_equal(plain.label, with_organs.label)  # muscles are painted over the organs
    liver, spleen = (with_organs.tissue == t for t in (Tissue.LIVER, Tissue.SPLEEN))
    assert liver.sum() > 100 and spleen.sum() > 20
    assert world_x(with_organs, liver).min() > 0 > world_x(with_organs, spleen).max()  # liver right, spleen left
    assert with_organs.truth["organs"] == organ_map.name
    # Only at the levels the map covers: nothing pasted in the lower half of the grid (L3 and below).
    assert not liver[:, :, : SMALL_SHAPE[2] // 2].any()


def test_an_organ_map_is_an_anatomy_map_without_quadratus(organ_map: Path):
    phantom = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=5, anatomy=organ_map)
    # No QL label in the map: not annotated. It ends above the iliac crest: the iliacus is a real "not here".
    assert phantom.truth["annotated"] == [1, 2, 4, 5, 6, 8]
    assert set(np.unique(phantom.label)) <= {0, 1, 4, 5, 8}
    assert Tissue.LIVER in np.unique(phantom.tissue)
    assert world_x(phantom, phantom.tissue == Tissue.LIVER).mean() > 0


@pytest.mark.parametrize("name", ["upper", "lumbar", "lower"])
def test_a_field_of_view_cuts_the_slices_outside_it(name: str):
    full = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=2)
    cut = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=2, fov=name)
    top, bottom = cut.truth["field_of_view"]["levels"]
    assert abs(top - FIELDS[name][0]) <= 0.3 and abs(bottom - FIELDS[name][1]) <= 0.3
    assert cut.label.shape[:2] == full.label.shape[:2] and cut.label.shape[2] < full.label.shape[2]
    assert cut.truth["shape"] == list(cut.label.shape)
    # Cut from the same grid: whole slices, spacing kept.
    offset = (cut.affine[2, 3] - full.affine[2, 3]) / SMALL_SPACING[2]
    assert np.isclose(offset, round(offset)) and np.allclose(cut.affine[:3, :3], full.affine[:3, :3])
    present = set(np.unique(cut.label).tolist())
    assert {4, 8} <= present
    if name == "upper":  # T11-L2: above the iliac crest, no iliacus
        assert not present & set(ILIACUS)


def test_a_field_above_the_crest_rules_the_iliacus_out_of_a_map_without_it(eight_label_map: Path):
    full = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=5, anatomy=eight_label_map)
    upper = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=5, anatomy=eight_label_map, fov="upper")
    assert not set(ILIACUS) & set(full.truth["annotated"])  # the 8-label map has no iliacus: unlabelled
    assert set(ILIACUS) <= set(upper.truth["annotated"])  # above the crest it cannot be there: background
    assert upper.label.shape[2] < full.label.shape[2]


def test_random_fields_offer_the_pelvis_only_with_a_real_pelvis():
    rng = np.random.default_rng(0)
    without = {draw_field("random", rng, pelvis=False)[0] for _ in range(200)}
    with_pelvis = {draw_field("random", rng, pelvis=True)[0] for _ in range(200)}
    assert without == {"full", "upper", "lumbar", "lower"}
    assert with_pelvis == without | {"pelvis"}


def test_borders_between_adjacent_muscles_belong_to_neither():
    counts = {}
    for seed in range(20):
        plain = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=seed)
        bordered = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=seed, borders=True)
        for kind, n in bordered.truth["borders"].items():
            counts[kind] = counts.get(kind, 0) + n
        plane = np.isin(bordered.tissue, (Tissue.INTERMUSCULAR_FAT, Tissue.FASCIA))
        assert not np.isin(plain.tissue, (Tissue.INTERMUSCULAR_FAT, Tissue.FASCIA)).any()
        # The only change: plane voxels, taken from a muscle (labelled or the abdominal wall), given background.
        assert np.array_equal(bordered.tissue != plain.tissue, plane)
        assert np.all(np.isin(plain.tissue[plane], MUSCLE_TISSUES)) and not bordered.label[plane].any()
        # Each plane voxel touches (in-plane) another muscle than the one it was taken from.
        cross = ndimage.generate_binary_structure(2, 1)[:, :, None]
        for muscle in np.unique(plain.label[plane]):
            taken = plane & (plain.label == muscle)
            others = np.isin(plain.tissue, MUSCLE_TISSUES) & (plain.label != muscle)
            assert (taken & ndimage.binary_dilation(others, cross)).sum() == taken.sum()
    # Each kind of border is drawn somewhere, and "none" (muscles touching) is common.
    assert counts["fat plane"] > 0 and counts["fascia"] > 0 and counts["none"] > counts["fascia"]


def test_command_line_writes_a_cohort_with_organs_fields_and_borders(organ_map: Path, tmp_path: Path):
    out = tmp_path / "cohort"
    command = [sys.executable, "-m", "scripts.phantom", str(out), "--n", "3", "--seed", "1", "--shape", "96", "80",
               "40", "--spacing", "3.75", "3.75", "7.8", "--organs", str(organ_map), "--fov", "random", "--borders",
               "true", "--workers", "1"]  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    truths = [json.loads((out / f"sub0{i}" / "truth.json").read_text()) for i in (1, 2, 3)]
    assert all(t["organs"] == organ_map.name and t["borders"] is not None for t in truths)
    assert len(json.loads((out / "datalist.json").read_text())["training"]) == 2
    bad = subprocess.run([*command[:4], "--fov", "chest"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "--fov" in bad.stderr


@pytest.mark.skipif(not ORGANS.is_file(), reason="../shared/data/organs is not here")
def test_the_real_organ_map_puts_liver_right_and_spleen_left():
    phantom = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=3, organs=ORGANS, fov="upper")
    assert world_x(phantom, phantom.tissue == Tissue.LIVER).mean() > 30
    assert world_x(phantom, phantom.tissue == Tissue.SPLEEN).mean() < -30
    anatomy = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=3, anatomy=ORGANS)
    assert anatomy.truth["annotated"] == [1, 2, 4, 5, 6, 8]
