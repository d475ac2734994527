"""The bundle end to end, through `python -m monai.bundle run` as a user runs it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, SPACING_ARG, TUM02, infer, read_csv, run_bundle, save_reoriented, write_datalist
from monai.bundle import ConfigParser, ConfigWorkflow

from scripts.labels import ABBREVIATIONS, MUSCLES, NUM_CLASSES
from scripts.model_card import load_weights, read_model


def assert_segmentation_of(seg_path: Path, input_path: Path) -> np.ndarray:
    """The segmentation exists, is uint8 in 0..8 and has the input's shape and affine."""
    seg, image = nib.load(seg_path), nib.load(input_path)
    assert seg.shape == image.shape
    np.testing.assert_allclose(seg.affine, image.affine, atol=1e-4)
    assert seg.get_data_dtype() == np.uint8
    data = np.asarray(seg.dataobj)
    assert set(np.unique(data)) <= set(range(NUM_CLASSES))
    return data


@pytest.mark.slow
def test_training_saves_best_model_last_checkpoint_and_dice_per_muscle(trained: Path):
    network = ConfigParser.load_config_file(REPO / "configs" / "train.yaml")["network_def"]
    state, card = read_model(trained / "models" / "model.pt")
    ConfigParser({"n": network}).get_parsed_content("n").load_state_dict(state)
    assert card["spacing_mm"] == [3.75, 3.75, 7.8] and card["num_classes"] == NUM_CLASSES
    # The Model Zoo's form: the bare state dict, the card beside it.
    assert list(torch.load(trained / "models" / "model.pt", weights_only=True)) == list(state)
    assert sorted(p.name for p in (trained / "models").iterdir()) == ["model.json", "model.pt"]

    last = sorted(trained.glob("last_checkpoint_epoch=*.pt"))
    assert [p.name for p in last] == ["last_checkpoint_epoch=1.pt", "last_checkpoint_epoch=2.pt"]  # the last two
    assert {"model", "optimizer", "trainer"} <= set(torch.load(last[-1], weights_only=True))
    assert sorted(p.name for p in trained.glob("last_checkpoint_epoch=*.json")) == [p.stem + ".json" for p in last]
    assert read_model(last[-1])[1]["spacing_mm"] == card["spacing_mm"]
    assert list((trained / "tensorboard").glob("events.out.tfevents.*"))

    rows = read_csv(trained / "dice_per_muscle.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        for muscle in MUSCLES:
            dice = float(row[ABBREVIATIONS[muscle]])
            assert math.isfinite(dice) and 0 <= dice <= 1
            assert int(row[f"n_{ABBREVIATIONS[muscle]}"]) == 2  # both validation phantoms hold every muscle
        assert float(row["mean_dice"]) == pytest.approx(
            np.mean([float(row[ABBREVIATIONS[m]]) for m in MUSCLES]), abs=1e-3
        )


def test_inference_segments_every_testing_case_on_its_own_grid(cohort: Path, trained: Path, tmp_path: Path):
    infer(cohort, tmp_path, trained / "models" / "model.pt")
    for case in ("sub05", "sub06"):
        assert_segmentation_of(tmp_path / case / f"{case}_seg.nii.gz", cohort / case / "inphase.nii.gz")


def test_run_id_run_is_the_same_as_inference(cohort: Path, trained: Path, tmp_path: Path):
    infer(cohort, tmp_path / "named", trained / "models" / "model.pt")
    infer(cohort, tmp_path / "run", trained / "models" / "model.pt", run_id="run")
    for case in ("sub05", "sub06"):
        named = nib.load(tmp_path / "named" / case / f"{case}_seg.nii.gz").get_fdata()
        plain = nib.load(tmp_path / "run" / case / f"{case}_seg.nii.gz").get_fdata()
        np.testing.assert_array_equal(named, plain)


def test_run_id_run_trains_like_training(cohort: Path, tmp_path: Path):
    result = run_bundle(
        "--config_file", "configs/train.yaml",
        "--dataset_dir", str(cohort),
        "--output_dir", str(tmp_path),
        "--ckpt_dir", str(tmp_path / "models"),
        "--epochs", "1",
        "--spacing", SPACING_ARG,
        "--num_workers", "0",
    )  # fmt: skip
    assert (tmp_path / "models" / "model.pt").is_file()
    assert (tmp_path / "last_checkpoint_epoch=1.pt").is_file()
    assert "epochs: [1/1] 100%" in result.stderr  # the progress bar counts epochs, with the time left


def test_lps_and_ras_inputs_give_outputs_aligned_with_their_inputs(cohort: Path, trained: Path, tmp_path: Path):
    ras = nib.load(cohort / "sub05" / "inphase.nii.gz")
    save_reoriented(np.asarray(ras.dataobj), ras.affine, ("R", "A", "S"), tmp_path / "ras.nii.gz")
    save_reoriented(np.asarray(ras.dataobj), ras.affine, ("L", "P", "S"), tmp_path / "lps.nii.gz")
    write_datalist(
        tmp_path / "datalist.json",
        {"testing": [{"id": "ras", "image": "ras.nii.gz"}, {"id": "lps", "image": "lps.nii.gz"}]},
    )
    infer(tmp_path, tmp_path / "out", trained / "models" / "model.pt")
    seg_ras = assert_segmentation_of(tmp_path / "out" / "ras" / "ras_seg.nii.gz", tmp_path / "ras.nii.gz")
    seg_lps = assert_segmentation_of(tmp_path / "out" / "lps" / "lps_seg.nii.gz", tmp_path / "lps.nii.gz")
    # The same subject in world space: the LPS result, reversed along x and y, is the RAS result.
    assert np.mean(seg_lps[::-1, ::-1, :] == seg_ras) > 0.999


@pytest.mark.skipif(not TUM02.is_dir(), reason="real data ../shared/data/TUM02 not present")
def test_inference_on_real_dixon_with_disagreeing_headers(trained: Path, tmp_path: Path):
    datalist = write_datalist(
        tmp_path / "datalist.json", {"testing": [{"id": "TUM02", "water": "water.nii.gz", "fat": "fat.nii.gz"}]}
    )
    result = infer(TUM02, tmp_path / "out", trained / "models" / "model.pt", "--datalist", str(datalist))
    assert_segmentation_of(tmp_path / "out" / "TUM02" / "TUM02_seg.nii.gz", TUM02 / "water.nii.gz")
    assert "same voxel grid but headers differ" in result.stdout + result.stderr


@pytest.mark.skipif(not TUM02.is_dir(), reason="real data ../shared/data/TUM02 not present")
def test_mixed_training_with_partially_labelled_real_scan(cohort: Path, tmp_path: Path):
    phantoms = [
        {key: str(cohort / value) if key != "id" else value for key, value in entry.items()}
        for entry in json.loads((cohort / "datalist.json").read_text(encoding="utf-8"))["training"]
    ]
    tum02 = {
        "id": "TUM02",
        "water": str(TUM02 / "water.nii.gz"),
        "fat": str(TUM02 / "fat.nii.gz"),
        "label": str(TUM02 / "label_es_mf.nii.gz"),
        "label_map": {"1": 8, "2": 8, "3": 4, "4": 4},
        "annotated": [4, 8],
    }
    write_datalist(tmp_path / "datalist.json", {"training": phantoms + [tum02], "validation": [tum02]})
    run_bundle(
        "training",
        "--config_file", "configs/train.yaml",
        "--dataset_dir", str(tmp_path),
        "--output_dir", str(tmp_path / "run"),
        "--ckpt_dir", str(tmp_path / "run" / "models"),
        "--epochs", "1",
        "--spacing", SPACING_ARG,
        "--partial_fraction", "0.4",
        "--num_workers", "0",
    )  # fmt: skip
    (row,) = read_csv(tmp_path / "run" / "dice_per_muscle.csv")
    scored = {ABBREVIATIONS[m] for m in MUSCLES if int(row[f"n_{ABBREVIATIONS[m]}"]) > 0}
    assert scored == {"LES+M", "RES+M"}
    assert all(row[ABBREVIATIONS[m]] == "" for m in MUSCLES if ABBREVIATIONS[m] not in scored)
    assert 0 <= float(row["LES+M"]) <= 1 and 0 <= float(row["RES+M"]) <= 1


def test_finetuning_starts_from_the_given_weights(cohort: Path, trained: Path, tmp_path: Path):
    ckpt = trained / "models" / "model.pt"
    workflow = ConfigWorkflow(
        config_file=[str(REPO / "configs" / "train.yaml"), str(REPO / "configs" / "finetune.yaml")],
        workflow_type="train",
        dataset_dir=str(cohort),
        output_dir=str(tmp_path),
        pretrained_ckpt=str(ckpt),
        spacing=[3.75, 3.75, 7.8],
        num_workers=0,
    )
    workflow.initialize()
    weights = workflow.parser.get_parsed_content("network").state_dict()
    for name, value in load_weights(ckpt).items():
        assert torch.equal(weights[name].cpu(), value), name
    assert workflow.parser.get_parsed_content("ckpt_dir") == f"{tmp_path}/models"
