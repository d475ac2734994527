"""Mistakes in what the user gives: every problem named at once, in one short block, before any work, without a
traceback (unless asked for); faults of the program keep theirs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import SPACING_ARG, run_bundle, write_datalist

from scripts import errors
from scripts.errors import InputError
from scripts.options import read_option, refuse_unknown_overrides
from scripts.prepare.cohort import read_image


def broken_cohort(cohort: Path, tmp_path: Path) -> Path:
    """A copy of the small cohort whose datalist names a missing label and a missing image in training, a label
    holding the value 12 in validation, and a label of another shape than its image in validation."""
    data = tmp_path / "data"
    shutil.copytree(cohort, data)
    twelve = nib.load(data / "sub05" / "label.nii.gz")
    values = np.asarray(twelve.dataobj).copy()
    nib.save(nib.Nifti1Image(values[:-4], twelve.affine), data / "sub06" / "small_label.nii.gz")
    values[0, 0, 0] = 12
    nib.save(nib.Nifti1Image(values, twelve.affine), data / "sub05" / "label12.nii.gz")
    training = [
        {"id": "sub01", "image": "sub01/inphase.nii.gz", "label": "sub01/missing_label.nii.gz"},
        {"id": "sub02", "image": "sub02/missing_inphase.nii.gz", "label": "sub02/label.nii.gz"},
        {"id": "sub03", "image": "sub03/inphase.nii.gz", "label": "sub03/label.nii.gz"},
    ]
    validation = [
        {"id": "sub05", "image": "sub05/inphase.nii.gz", "label": "sub05/label12.nii.gz"},
        {"id": "sub06", "image": "sub06/inphase.nii.gz", "label": "sub06/small_label.nii.gz"},
    ]
    write_datalist(data / "datalist.json", {"training": training, "validation": validation})
    return data


def train(data: Path, tmp_path: Path, *extra: str, env: dict | None = None):
    return run_bundle(
        "training",
        "--config_file", "configs/train.yaml",
        "--dataset_dir", str(data),
        "--output_dir", str(tmp_path / "run"),
        "--epochs", "1",
        "--spacing", SPACING_ARG,
        "--num_workers", "0",
        *extra,
        check=False,
        env=env,
    )  # fmt: skip


def test_every_datalist_problem_of_every_section_at_once_without_traceback(cohort: Path, tmp_path: Path):
    data = broken_cohort(cohort, tmp_path)
    result = train(data, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = result.stderr[result.stderr.index("ERROR: ") :]
    assert message.splitlines()[0] == (
        f"ERROR: {data / 'datalist.json'}: 4 problem(s); nothing was run. Fix them all, then run again."
    )
    for line in (
        f"  {data / 'sub01' / 'missing_label.nii.gz'}",
        "    - training[0] (sub01): label file not found",
        f"  {data / 'sub02' / 'missing_inphase.nii.gz'}",
        "    - training[1] (sub02): image file not found",
        f"  {data / 'sub05' / 'label12.nii.gz'}",
        "    - validation[0] (sub05): label values [12] are not 0..8",
        f"  {data / 'sub06' / 'small_label.nii.gz'}",
        f"    - validation[1] (sub06): does not lie on the voxels of {data / 'sub06' / 'inphase.nii.gz'}: shapes differ"
        " ((92, 80, 40) vs (96, 80, 40))",
        "(for the full traceback, run again with LUMBAR_TRACEBACK=1)",
    ):
        assert line in message.splitlines(), line
    assert not (tmp_path / "run" / "dice_per_muscle.csv").exists()


def test_the_traceback_is_shown_when_asked_for(cohort: Path, tmp_path: Path):
    data = broken_cohort(cohort, tmp_path)
    result = train(data, tmp_path, env={**os.environ, "LUMBAR_TRACEBACK": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "4 problem(s)" in result.stderr


def test_bad_option_values_are_named_before_any_work(cohort: Path, tmp_path: Path):
    result = train(
        cohort, tmp_path, "--spacing", "[0,1,2]", "--roi_size", "[7,7]", "--epochs", "-1", "--loss", "foo",
        "--resume", "yes",
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr[result.stderr.index("ERROR: ") :].splitlines()
    assert lines[0] == "ERROR: 5 option(s) cannot be used:"
    assert lines[1:6] == [
        "  --spacing [0, 1, 2]: expected 3 voxel sizes in mm, each above 0, such as [3.75,3.75,7.8]",
        "  --roi_size [7, 7]: expected null or 3 voxel counts, each a multiple of 16 (the network halves the size 4"
        " times)",
        "  --epochs -1: expected a whole number of at least 1",
        "  --resume 'yes': expected true or false (also True, False, 1, 0)",
        "  --loss 'foo': expected 'bce' or 'dicece'",
    ]  # in the order of RULES; not --val_roi_size, which only takes --roi_size's value
    assert not (tmp_path / "run").exists()


def test_inference_options_are_checked_too(cohort: Path, tmp_path: Path):
    result = run_bundle(
        "inference",
        "--config_file", "configs/inference.yaml",
        "--dataset_dir", str(cohort),
        "--output_dir", str(tmp_path / "out"),
        "--overwrite", "maybe",
        "--noise_floor", "2",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "  --overwrite 'maybe': expected true or false (also True, False, 1, 0)" in result.stderr
    assert "  --noise_floor 2: expected a number from 0 to 1" in result.stderr


def test_good_option_values_are_accepted():
    for name, value in {"spacing": [3.75, 3.75, 7.8], "roi_size": None, "epochs": 3, "loss": "bce"}.items():
        assert read_option(name, value) == value
    for name, value in {"roi_size": [96, 96, 48], "partial_fraction": 0.3, "learning_rate": 1e-4}.items():
        assert read_option(name, value) == value


def test_a_program_fault_keeps_its_traceback(capsys: pytest.CaptureFixture):
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as error:
        errors._excepthook(type(error), error, error.__traceback__)
    assert "Traceback" in capsys.readouterr().err
    try:
        raise RuntimeError("wrapped") from InputError("the file x is broken")
    except RuntimeError as error:
        errors._excepthook(type(error), error, error.__traceback__)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ERROR: the file x is broken" in err


@pytest.mark.parametrize(
    "data, expected",
    [
        (np.zeros((6, 5, 4)), "is all zero"),
        (np.zeros((6, 5, 4, 2)), "is not one 3-D volume"),
        # SimpleITK's reader turns these voxels into 0: they are counted in the file itself.
        (np.where(np.arange(120).reshape(6, 5, 4) % 7, 1.0, np.nan), "contains 18 NaN or infinite voxels"),
        (np.where(np.arange(120).reshape(6, 5, 4) == 3, np.inf, 1.0), "contains 1 NaN or infinite voxels"),
    ],
    ids=["all-zero", "4d", "nan", "inf"],
)
def test_prepare_refuses_images_the_loading_path_refuses(tmp_path: Path, data: np.ndarray, expected: str):
    """Cohort preparation (SimpleITK) applies the check of the MONAI loading path (``image_checks.image_problem``)."""
    path = tmp_path / "inphase.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), path)
    with pytest.raises(InputError, match=expected):
        read_image(path)


def test_a_misspelt_option_is_refused_before_any_work_with_the_closest_names(cohort: Path, tmp_path: Path):
    result = train(cohort, tmp_path, "--flip_ta", "False", "--lerning_rate", "0.01", "--train#trainer#max_epoch", "3")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr[result.stderr.index("ERROR: ") :].splitlines()
    assert lines[0] == "ERROR: 3 option(s) unknown to configs/train.yaml; nothing was run:"
    assert lines[1:4] == [
        "  --flip_ta: no config reads it; did you mean --flip_tta?",
        "  --lerning_rate: no config reads it; did you mean --learning_rate?",
        "  --train#trainer#max_epoch: no config reads it; did you mean --train#trainer#max_epochs?",
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "options",
    [
        ["--spacing", "[3.75,3.75,7.8]", "--flip_tta", "True"],
        ["--validate#handlers#0#iteration_log", "True"],  # a real key under a list
        ["--train#trainer#epoch_length", "3"],  # a new argument of a real component
        ["--_meta_#version", "9", "--tracking", "mlflow", "--tracking_uri", "x", "--meta_file", "m.json"],
        ["--+initialize", "[]", "--run_id=training"],
    ],
)
def test_overrides_of_real_keys_and_run_options_are_accepted(options: list[str]):
    argv = ["/x/monai/bundle/__main__.py", "run", "training", "--config_file", "['configs/train.yaml']", *options]
    refuse_unknown_overrides(argv)


def test_overrides_are_checked_against_every_merged_config():
    argv = ["/x/monai/bundle/__main__.py", "run", "--config_file", "['configs/train.yaml','configs/finetune.yaml']"]
    refuse_unknown_overrides([*argv, "--pretrained_ckpt", "p.pt"])
    with pytest.raises(InputError, match="--pretrained_ckp: no config reads it; did you mean --pretrained_ckpt?"):
        refuse_unknown_overrides([*argv, "--pretrained_ckp", "p.pt"])
    refuse_unknown_overrides(["pytest", "--pretrained_ckp"])  # not a monai.bundle run: left alone
