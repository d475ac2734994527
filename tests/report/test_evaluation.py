"""Evaluation against reference labels: the per-muscle scores on known cases (identity, a 2-voxel shift, a missing
muscle, partial labels), the Table 1 statistics against numpy, and the `evaluating` run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import SPACING_ARG, infer, read_csv, run_bundle

from scripts.labels import ABBREVIATIONS, MUSCLES, NUM_CLASSES
from scripts.phantom import Phantom, make_phantom
from scripts.report.evaluation import COLUMNS, NOT_SCORED, case_rows, summary, table1_markdown, write_evaluation
from scripts.report.muscle_metrics import fat_fraction_map

EVALUATE = "['configs/inference.yaml','configs/evaluate.yaml']"


def markdown_rows(markdown: str, heading: str) -> dict[str, list[str]]:
    """The body of the table under ``## <heading>``: first cell → the other cells."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header, _, *body = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]  # _: the rule
    assert header == ["Image", *COLUMNS]
    return {row[0]: row[1:] for row in body}


def test_prediction_equal_to_reference_scores_perfectly(phantom: Phantom):
    fat_fraction, _ = fat_fraction_map(water=phantom.water, fat=phantom.fat)
    rows = case_rows("same", phantom.label, phantom.label, phantom.affine, fat_fraction=fat_fraction)
    assert [row["muscle"] for row in rows] == list(COLUMNS)
    for row in rows:
        assert row["dice"] == pytest.approx(1.0)
        assert row["hd95_mm"] == 0.0 and row["assd_mm"] == 0.0
        assert row["volume_pred_ml"] == row["volume_ref_ml"] > 0
        assert row["volume_diff_percent"] == 0.0
        assert row["fat_fraction_diff_pp"] == 0.0


@pytest.mark.parametrize(("shape", "spacing"), [((96, 64, 40), (3.75, 5.0, 7.8)), ((72, 100, 50), (5.0, 3.0, 6.0))])
def test_reference_shifted_two_voxels_along_x_gives_hd95_of_two_x_spacings(shape, spacing):
    phantom = make_phantom(shape, spacing, seed=1)
    shifted = np.roll(phantom.label, 2, axis=0)  # array axis 0 is world x in the phantom's RAS grid
    assert not shifted[:2].any()  # no muscle wraps around
    for row in case_rows("shift", phantom.label, shifted, phantom.affine):
        assert row["hd95_mm"] == pytest.approx(2 * spacing[0], abs=spacing[0] / 2), row["muscle"]
        assert 0 < row["assd_mm"] <= row["hd95_mm"]
        assert row["volume_diff_percent"] == 0.0


def test_table_statistics_equal_numpy_on_the_per_case_values():
    rng = np.random.default_rng(0)
    dice = rng.uniform(0.6, 0.95, size=(7, len(MUSCLES)))
    dice[[1, 4], 2] = np.nan  # LQL not scored in two cases
    rows = [
        {"id": f"case{i}", "muscle": name, "dice": float(d), "hd95_mm": float(10 * d)}
        for i, values in enumerate(dice)
        for name, d in zip(COLUMNS, values)
    ]
    table = markdown_rows(table1_markdown(rows), "Dice")
    assert table["case1"][2] == table["case4"][2] == NOT_SCORED
    assert table["case0"][0] == f"{dice[0, 0]:.3f}"
    for column, values in enumerate(dice.T):
        values = values[~np.isnan(values)]
        q25, median, q75 = np.percentile(values, [25, 50, 75])
        stats = summary(values.tolist())
        np.testing.assert_allclose(
            [stats["median"], stats["iqr"], stats["mean"], stats["std"]],
            [np.median(values), q75 - q25, np.mean(values), np.std(values)],
        )
        assert table["Median (iqr)"][column] == f"{np.median(values):.3f} ({q75 - q25:.3f})"
        assert table["Mean (std)"][column] == f"{np.mean(values):.3f} ({np.std(values):.3f})"
        assert table["Cases"][column] == str(len(values))


def test_muscle_missing_from_the_prediction_is_reported_not_dropped(phantom: Phantom, tmp_path: Path):
    missing = 3
    pred = np.where(phantom.label == missing, 0, phantom.label).astype(np.uint8)
    rows = case_rows("miss", pred, phantom.label, phantom.affine)
    assert len(rows) == len(MUSCLES)
    write_evaluation(tmp_path, rows)

    name = ABBREVIATIONS[missing]
    (row,) = [r for r in read_csv(tmp_path / "evaluation.csv") if r["muscle"] == name]
    assert float(row["dice"]) == 0.0
    assert math.isinf(float(row["hd95_mm"])) and math.isinf(float(row["assd_mm"]))
    assert float(row["volume_pred_ml"]) == 0.0 and float(row["volume_diff_percent"]) == -100.0

    markdown = (tmp_path / "table1.md").read_text(encoding="utf-8")
    column = COLUMNS.index(name)
    assert markdown_rows(markdown, "Dice")["miss"][column] == "0.000"
    hd95 = markdown_rows(markdown, "HD95 (mm)")
    assert hd95["miss"][column] == "inf" and hd95["Mean (std)"][column] == "inf (nan)"
    for png in ("dice_boxplot.png", "hd95_boxplot.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")


def test_only_annotated_muscles_present_in_the_reference_are_scored(phantom: Phantom):
    annotated = np.zeros(NUM_CLASSES, bool)
    annotated[[0, 4, 8]] = True
    partial = case_rows("partial", phantom.label, phantom.label, phantom.affine, annotated.tolist())
    assert [row["muscle"] for row in partial] == ["LES+M", "RES+M"]

    no_iliacus = np.where(phantom.label == 2, 0, phantom.label).astype(np.uint8)
    full = case_rows("full", phantom.label, no_iliacus, phantom.affine)
    (iliacus,) = [row for row in full if row["muscle"] == "LI"]
    assert math.isnan(iliacus["dice"]) and math.isnan(iliacus["hd95_mm"])  # kept, but not scored

    table = markdown_rows(table1_markdown(partial + full), "Dice")
    assert table["partial"] == ["1.000" if c in ("LES+M", "RES+M") else NOT_SCORED for c in COLUMNS]
    assert table["full"][COLUMNS.index("LI")] == NOT_SCORED
    assert table["Cases"] == ["1", "0", "1", "2", "1", "1", "1", "2"]
    assert table["Mean (std)"][COLUMNS.index("LI")] == NOT_SCORED


def evaluate(cohort: Path, trained: Path, output_dir: Path, *extra: str) -> list[dict[str, str]]:
    """The README's evaluation command on the small cohort's validation cases; the rows of its evaluation.csv."""
    result = run_bundle(
        "evaluating",
        "--config_file", EVALUATE,
        "--dataset_dir", str(cohort),
        "--output_dir", str(output_dir),
        "--ckpt_path", str(trained / "models" / "model.pt"),
        "--spacing", SPACING_ARG,
        "--num_workers", "0",
        *extra,
    )  # fmt: skip
    assert "[2/2] 100%" in result.stderr  # inference's progress bar: cases done of all
    return read_csv(output_dir / "evaluation.csv")


def test_evaluating_writes_csv_table_and_box_plots(cohort: Path, trained: Path, tmp_path: Path):
    rows = evaluate(cohort, trained, tmp_path)
    assert [(r["id"], r["muscle"]) for r in rows] == [(case, name) for case in ("sub05", "sub06") for name in COLUMNS]
    for row in rows:
        assert 0 <= float(row["dice"]) <= 1
        assert float(row["volume_ref_ml"]) > 0 and row["fat_fraction_ref_percent"] != ""
    table = markdown_rows((tmp_path / "table1.md").read_text(encoding="utf-8"), "Dice")
    assert list(table) == ["sub05", "sub06", "Median (iqr)", "Mean (std)", "Cases"]
    assert table["Cases"] == ["2"] * len(COLUMNS)
    for png in ("dice_boxplot.png", "hd95_boxplot.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_evaluating_is_inference_plus_scoring_with_every_inference_option(cohort: Path, trained: Path, tmp_path: Path):
    """The segmentations scored are those inference writes with the same options, and an inference option
    (--noise_floor, --flip_tta) changes the evaluation as it changes inference."""
    options = ("--flip_tta", "False", "--noise_floor", "0.6")
    rows = evaluate(cohort, trained, tmp_path / "eval", *options)
    infer(cohort, tmp_path / "infer", trained / "models" / "model.pt", "--spacing", SPACING_ARG, *options)
    for case in ("sub05", "sub06"):  # the cohort's testing cases are its validation cases
        evaluated = nib.load(tmp_path / "eval" / case / f"{case}_seg.nii.gz").get_fdata()
        inferred = nib.load(tmp_path / "infer" / case / f"{case}_seg.nii.gz").get_fdata()
        np.testing.assert_array_equal(evaluated, inferred)
        assert json.loads((tmp_path / "eval" / case / f"{case}_metrics.json").read_text())["noise_floor"] == 0.6

    default = evaluate(cohort, trained, tmp_path / "default", "--flip_tta", "False")
    fat = [[r["fat_fraction_ref_percent"] for r in result] for result in (rows, default)]
    assert fat[0] != fat[1]  # the noise floor leaves out other voxels of the same reference
