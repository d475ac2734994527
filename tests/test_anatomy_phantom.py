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
from monai.data import MetaTensor

from scripts.labels import ANNOTATED, LEFT_RIGHT_PAIRS, NUM_CLASSES
from scripts.losses import MarginalLoss
from scripts.phantom import Tissue, make_phantom
from scripts.phantom.label_map_muscles import read_label_map
from scripts.transforms import MapLabelsd

REPO = Path(__file__).resolve().parents[1]
ANATOMY = REPO.parent / "shared" / "data" / "anatomy"
SHAPE, SPACING = (96, 80, 40), (3.75, 3.75, 7.8)
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


@pytest.fixture(scope="module")
def source() -> tuple[np.ndarray, np.ndarray]:
    """The tissue map and affine of a procedural phantom, to make label maps of known anatomy from."""
    phantom = make_phantom(SHAPE, SPACING, seed=3)
    return phantom.tissue, phantom.affine


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


@pytest.fixture(scope="module")
def eight_label_map(source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tissue, affine = source
    return write_map(tissue, affine, EIGHT_LABEL_CODES, tmp_path_factory.mktemp("map") / "lumbar.nii.gz", swap=True)


def test_anatomy_phantom_keeps_sides_and_declares_the_missing_iliacus(eight_label_map: Path, source):
    phantom = make_phantom(SHAPE, SPACING, seed=5, anatomy=eight_label_map)
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
    phantom = make_phantom(SHAPE, SPACING, seed=6, anatomy=eight_label_map)
    marrow = np.argwhere(phantom.tissue == Tissue.MARROW).mean(axis=0)
    for psoas, erector in ((1, 4), (5, 8)):
        p, e = (np.argwhere(phantom.label == m).mean(axis=0) for m in (psoas, erector))
        assert p[1] > e[1] + 5  # anterior (axis 1 grows anteriorly) of the ES+M by more than 5 voxels (19 mm)
        assert abs(p[0] - marrow[0]) < 30  # within about 11 cm of the midline


def test_confusers_can_be_left_out(eight_label_map: Path):
    phantom = make_phantom(SHAPE, SPACING, seed=5, anatomy=eight_label_map, confusers=False)
    assert not CONFUSERS & set(np.unique(phantom.tissue).tolist())
    assert set(np.unique(phantom.label)) == {0, 1, 3, 4, 5, 7, 8}


def test_seed_decides_the_anatomy_phantom(eight_label_map: Path):
    first, again, other = (make_phantom(SHAPE, SPACING, seed=s, anatomy=eight_label_map) for s in (1, 1, 2))
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
    phantom = make_phantom(SHAPE, SPACING, seed=11, anatomy=path)
    present = sorted(set(np.unique(phantom.label).tolist()) - {0})
    assert present and set(present) <= set(phantom.truth["annotated"])
    for left, right in LEFT_RIGHT_PAIRS:
        if left in present and right in present:
            assert left_right_world_x(phantom.label, phantom.affine, left) < left_right_world_x(
                phantom.label, phantom.affine, right
            )
