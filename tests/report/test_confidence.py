"""Muscle confidence and check: true anatomy passes, deliberately broken predictions are flagged with a reason, the
flip agreement and the QC picture's marks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SMALL_SHAPE, SMALL_SPACING

from scripts.label_scores import flip_agreement
from scripts.labels import ABBREVIATIONS, MUSCLES
from scripts.phantom import Phantom, Tissue, make_phantom
from scripts.report.case_report import write_case_report
from scripts.report.confidence import muscle_confidence
from scripts.report.muscle_metrics import measure, muscle_report, slice_rows
from scripts.report.qc_figure import CHECK_COLOUR, qc_figure
from scripts.tools.confidence_calibration import EVIDENCE, summary

LP, LI, LQL, LESM, RP, RI, RQL, RESM = MUSCLES


def moved(label: np.ndarray, muscle: int, shift_mm: tuple[float, float, float], spacing=SMALL_SPACING) -> np.ndarray:
    """``label`` with one muscle shifted by whole voxels (RAS+ grid of the phantom), over whatever lay there."""
    shift = tuple(int(round(s / d)) for s, d in zip(shift_mm, spacing, strict=True))
    out = np.where(label == muscle, 0, label).astype(label.dtype)
    out[np.roll(label == muscle, shift, axis=(0, 1, 2))] = muscle
    return out


def probabilities_of(label: np.ndarray, sure: float = 0.95) -> np.ndarray:
    """Class probabilities whose argmax is ``label``: ``sure`` on the label's class, the rest spread evenly."""
    probabilities = np.full((len(MUSCLES) + 1, *label.shape), (1 - sure) / len(MUSCLES), np.float32)
    np.put_along_axis(probabilities, label[None].astype(np.int64), sure, axis=0)
    return probabilities


def test_true_anatomy_is_trusted_and_every_field_in_range(phantom: Phantom):
    result = muscle_confidence(phantom.label, phantom.affine, probabilities_of(phantom.label), np.ones(8))
    assert set(result) == {ABBREVIATIONS[m] for m in MUSCLES}
    for name, entry in result.items():
        assert 0.0 <= entry["confidence"] <= 1.0 and isinstance(entry["check"], bool)
        assert entry["confidence"] > 0.8 and not entry["check"] and entry["check_reasons"] == "", name
        assert all(0.0 <= value <= 1.0 for value in entry["evidence"].values())


def test_psoas_moved_away_from_the_spine_is_flagged(phantom: Phantom):
    """8 cm forward (onto the bowel) or 6 cm outward: the psoas is no longer beside the vertebral body."""
    for shift in ((0.0, 80.0, 0.0), (-60.0, 0.0, 0.0)):
        result = muscle_confidence(moved(phantom.label, LP, shift), phantom.affine)
        assert result["LP"]["check"] and "beside the spine" in result["LP"]["check_reasons"], shift
        assert not result["RP"]["check"] and not result["RQL"]["check"]


def test_fragmented_muscle_is_flagged(phantom: Phantom):
    """The right QL cut into three pieces by two gaps across the S-I axis: its largest piece holds well under all."""
    label = phantom.label.copy()
    z = np.flatnonzero((label == RQL).any(axis=(0, 1)))
    for cut in np.array_split(z, 3)[1:]:
        label[..., cut[:2]] = np.where(label[..., cut[:2]] == RQL, 0, label[..., cut[:2]])
    result = muscle_confidence(label, phantom.affine)
    assert result["RQL"]["check"] and "largest piece" in result["RQL"]["check_reasons"]
    assert result["RQL"]["evidence"]["largest_piece"] < 0.7 and not result["LQL"]["check"]


@pytest.mark.parametrize(
    ("change", "muscle", "reason"),
    [
        ("iliacus 15 cm up", "LI", "on the iliac wing"),
        ("erector spinae sides swapped", "LES+M", "sides swapped"),
        ("quadratus lumborum missing", "RQL", "not found"),
        ("unsure network", "RP", "low confidence"),
    ],
)
def test_other_broken_predictions_are_flagged(phantom: Phantom, change: str, muscle: str, reason: str):
    label, probabilities, agreement = phantom.label, None, None
    if change == "iliacus 15 cm up":
        label = moved(label, LI, (0.0, 0.0, 150.0))
    elif change == "erector spinae sides swapped":
        label = np.where(label == LESM, RESM, np.where(label == RESM, LESM, label)).astype(label.dtype)
    elif change == "quadratus lumborum missing":
        label = np.where(label == RQL, 0, label).astype(label.dtype)
    else:
        probabilities, agreement = probabilities_of(label, sure=0.6), np.full(8, 0.5)
    result = muscle_confidence(label, phantom.affine, probabilities, agreement)
    assert result[muscle]["check"] and reason in result[muscle]["check_reasons"]


def test_muscles_painted_on_the_upper_abdominal_organs_are_flagged(organ_map):
    """At T11-L2 (organs pasted from a TotalSegmentator-coded map) the true muscles pass every rule; a psoas on the
    kidney leaves the vertebral body, a QL 3 cm forward (where the kidney lies) leaves the erector spinae, a QL on
    the spleen is flagged, and an iliacus on the liver (no iliac fossa in the field) lies at the QL's levels."""
    upper = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=4, organs=organ_map, fov="upper", borders=True)
    truth = muscle_confidence(upper.label, upper.affine)
    assert not any(entry["check"] for entry in truth.values() if entry["check_reasons"] != "not found")
    x = upper.affine[0, 3] + upper.affine[0, 0] * np.arange(upper.label.shape[0])
    right, left = (x > 0)[:, None, None], (x < 0)[:, None, None]
    label = np.where(upper.label == RP, 0, upper.label).astype(upper.label.dtype)
    label[(upper.tissue == Tissue.KIDNEY) & right] = RP
    label[(upper.tissue == Tissue.LIVER) & right & (label == 0)] = RI
    forward = muscle_confidence(moved(label, LQL, (0.0, 30.0, 0.0)), upper.affine)
    on_spleen = np.where(label == LQL, 0, label).astype(label.dtype)
    on_spleen[(upper.tissue == Tissue.SPLEEN) & left] = LQL
    result = muscle_confidence(on_spleen, upper.affine)
    assert "against the vertebral body" in result["RP"]["check_reasons"]
    assert "against the erector spinae" in forward["LQL"]["check_reasons"]
    assert result["LQL"]["check"]
    assert result["RI"]["check"] and "in the iliac fossa" in result["RI"]["check_reasons"]
    assert not any(result[name]["check"] for name in ("LP", "LES+M", "RES+M"))  # the right QL may follow its psoas


def test_flip_agreement_is_dice_of_the_two_passes():
    direct = torch.zeros(1, 9, 4, 4, 4)
    direct[:, 0] = 1
    direct[:, 1, :2] = 2  # left psoas in half the grid
    mirrored = direct.clone()
    mirrored[:, 1, :1] = 0  # the mirrored pass finds half of it
    agreement = flip_agreement(direct, mirrored)[0]
    assert agreement[0] == pytest.approx(2 * 16 / (32 + 16))
    assert torch.all(agreement[1:] == 1)  # found by neither pass: nothing to disagree on


def test_qc_picture_marks_flagged_muscles(phantom: Phantom):
    label = moved(phantom.label, LP, (0.0, 80.0, 0.0))
    measured = measure(label, phantom.affine, None)
    report = muscle_report(measured)
    for name, entry in muscle_confidence(label, phantom.affine).items():
        report["muscles"][name] |= entry
    figure = qc_figure(phantom.inphase, label, phantom.affine, report, slice_rows(measured))
    legend = figure.axes[-1].get_legend()
    colours = {text.get_text().split()[0]: text.get_color() for text in legend.get_texts()}
    assert colours["LP"] == CHECK_COLOUR and colours["RP"] != CHECK_COLOUR
    assert "LP" in figure.get_suptitle() and "CHECK" in figure.get_suptitle()


def test_calibration_summary_counts_flags_against_dice():
    """Two bad muscles (one flagged), two good (one flagged), one in between (flagged); confidence in Dice order."""
    dice = (0.1, 0.3, 0.6, 0.85, 0.95)
    checks = (True, False, True, True, False)
    rows = [
        {"dice": d, "confidence": d, "check": c, "truth_check_reasons": "", **dict.fromkeys(EVIDENCE, d)}
        for d, c in zip(dice, checks, strict=True)
    ]
    cells = summary(rows)
    assert cells["ρ confidence"] == "1.00" and cells["Dice < 0.5"] == "2" and cells["Dice ≥ 0.8"] == "2"
    assert cells["check precision"] == "1/3" and cells["check recall"] == "1/2"
    assert cells["Dice ≥ 0.8 flagged"] == "1/2" and cells["true labels flagged"] == "0/5"


def test_report_flags_a_muscle_the_input_grid_lost(phantom: Phantom, tmp_path):
    """The confidence is measured on the network's grid; a muscle absent from the saved label is "not found"."""
    label = np.where(phantom.label == RI, 0, phantom.label).astype(np.uint8)
    confidence = muscle_confidence(phantom.label, phantom.affine)
    report = write_case_report(tmp_path, "case", label, phantom.affine, {"inphase": phantom.inphase}, 0.02, confidence)
    assert report["muscles"]["RI"]["check"] and report["muscles"]["RI"]["check_reasons"] == "not found"
    assert not report["muscles"]["LI"]["check"] and report["muscles"]["LI"]["confidence"] == 1.0
