"""The anatomy phantom: real label maps translated to our labels with sides from the affine, a body built around
them, missing muscles declared not annotated (and so ignored by the partial-label loss), and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import (
    ANATOMY,
    CONFUSERS,
    EIGHT_LABEL_CODES,
    REPO,
    SMALL_SHAPE,
    SMALL_SPACING,
    WHOLE_BODY_CODES,
    write_map,
)
from monai.data import MetaTensor

from scripts.data.transforms import MapLabelsd
from scripts.labels import ANNOTATED, LEFT_RIGHT_PAIRS, NUM_CLASSES
from scripts.phantom import Tissue, make_phantom
from scripts.phantom.label_map_muscles import read_label_map
from scripts.training.losses import MarginalLoss


def left_right_world_x(label: np.ndarray, affine: np.ndarray, muscle: int) -> float:
    return float((affine @ np.append(np.argwhere(label == muscle).mean(axis=0), 1.0))[0])


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize(
    "codes, annotated", [(EIGHT_LABEL_CODES, (1, 3, 4, 5, 7, 8)), (WHOLE_BODY_CODES, tuple(range(1, 9)))]
)
def test_map_sides_come_from_the_affine_not_the_code(source, tmp_path: Path, codes, annotated, swap: bool):
    tissue, affine = source
    label_map = read_label_map(write_map(tissue, affine, codes, tmp_path / "map.nii.gz", swap))
    assert label_map.annotated == annotated
    for ours in codes:
        if ours != Tissue.OTHER_MUSCLE:  # the map holds exactly the source's voxels of each muscle, on its side
            assert np.array_equal(label_map.tissue == ours, tissue == ours), ours


def test_anatomy_phantom_keeps_sides_and_declares_the_missing_iliacus(eight_label_map: Path, source):
    phantom = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=5, anatomy=eight_label_map)
    assert phantom.truth["annotated"] == [1, 3, 4, 5, 7, 8]
    assert phantom.truth["anatomy"] == "lumbar.nii.gz"
    assert set(np.unique(phantom.label)) == {0, 1, 3, 4, 5, 7, 8}
    for left, right in LEFT_RIGHT_PAIRS[:1] + LEFT_RIGHT_PAIRS[2:]:
        assert (
            left_right_world_x(phantom.label, phantom.affine, left)
            < 0
            < left_right_world_x(phantom.label, phantom.affine, right)
        )
    # Deformed (scale 0.85-1.15 in-plane, 0.9-1.1 along z), not replaced: each muscle keeps its volume roughly.
    tissue, _ = source
    for muscle in (1, 4, 5, 8):
        original = np.isin(tissue, [muscle] + [Tissue.LEFT_MULTIFIDUS + (muscle == 8)] * (muscle in (4, 8))).sum()
        assert 0.55 < (phantom.label == muscle).sum() / original < 1.6, muscle
    # The body around them: bone between the psoas, the confusers present, a label only on muscle tissue.
    assert CONFUSERS <= set(np.unique(phantom.tissue).tolist())
    assert np.all(np.isin(phantom.tissue[phantom.label > 0], [1, 3, 4, 5, 7, 8, 109, 110]))


def test_psoas_lies_beside_the_spine_in_front_of_the_back_muscles(eight_label_map: Path):
    phantom = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=6, anatomy=eight_label_map)
    marrow = np.argwhere(phantom.tissue == Tissue.MARROW).mean(axis=0)
    for psoas, erector in ((1, 4), (5, 8)):
        p, e = (np.argwhere(phantom.label == m).mean(axis=0) for m in (psoas, erector))
        assert p[1] > e[1] + 5  # anterior (axis 1 grows anteriorly) of the ES+M by more than 5 voxels (19 mm)
        assert abs(p[0] - marrow[0]) < 30  # within about 11 cm of the midline


def test_confusers_can_be_left_out(eight_label_map: Path):
    phantom = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=5, anatomy=eight_label_map, confusers=False)
    assert not CONFUSERS & set(np.unique(phantom.tissue).tolist())
    assert set(np.unique(phantom.label)) == {0, 1, 3, 4, 5, 7, 8}


def test_seed_decides_the_anatomy_phantom(eight_label_map: Path):
    first, again, other = (make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=s, anatomy=eight_label_map) for s in (1, 1, 2))
    assert np.array_equal(first.inphase, again.inphase) and np.array_equal(first.label, again.label)
    assert not np.array_equal(first.label, other.label)


def test_cli_lists_the_missing_muscle_as_not_annotated_and_the_loss_ignores_it(eight_label_map: Path, tmp_path):
    out = tmp_path / "cohort"
    command = [
        sys.executable, "-m", "scripts.phantom", str(out), "--n", "2", "--anatomy", str(eight_label_map),
        "--per_map", "3", "--shape", "48", "40", "20", "--spacing", "7.5", "7.5", "15.6", "--workers", "1",
    ]  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    datalist = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    entries = datalist["training"] + datalist["validation"]
    assert sorted(e["id"] for e in entries) == ["lumbar_01", "lumbar_02", "lumbar_03", "sub01", "sub02"]
    for entry in entries:
        assert entry.get("annotated") == ([1, 3, 4, 5, 7, 8] if entry["id"].startswith("lumbar") else None)
    entry = next(e for e in datalist["training"] if e["id"].startswith("lumbar"))
    label = nib.load(out / entry["label"])
    case = MapLabelsd()(
        {"label": MetaTensor(np.asarray(label.dataobj)[None].astype(np.float32)), "annotated": entry["annotated"]}
    )
    mask = case["label"].meta[ANNOTATED]
    assert mask.tolist() == [True, True, False, True, True, True, False, True, True]
    # The partial-label loss cannot tell iliacus from background on this case.
    logits = torch.randn(1, NUM_CLASSES, *label.shape, generator=torch.Generator().manual_seed(0))
    batch_label = MetaTensor(case["label"][None])
    batch_label.meta[ANNOTATED] = mask[None]
    loss = MarginalLoss("dicece")
    swapped = logits[:, [2, 1, 0, 3, 4, 5, 6, 7, 8]]  # background <-> left iliacus
    assert loss(swapped, batch_label).item() == pytest.approx(loss(logits, batch_label).item(), rel=1e-5)


MAPS = sorted(ANATOMY.glob("*.nii.gz")) if ANATOMY.is_dir() else []


@pytest.mark.skipif(not MAPS, reason="../shared/data/anatomy is not here")
@pytest.mark.parametrize("path", MAPS, ids=lambda p: p.name)
def test_every_real_map_gives_a_phantom_with_its_muscles_on_their_sides(path: Path):
    phantom = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=11, anatomy=path)
    present = sorted(set(np.unique(phantom.label).tolist()) - {0})
    assert present and set(present) <= set(phantom.truth["annotated"])
    for left, right in LEFT_RIGHT_PAIRS:
        if left in present and right in present:
            assert left_right_world_x(phantom.label, phantom.affine, left) < left_right_world_x(
                phantom.label, phantom.affine, right
            )
