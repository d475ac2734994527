"""The QC figure: a readable PNG of the documented size, whole or absent, that renders without iliacus, and slices
shown in radiological view whatever the array order."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest
from conftest import SMALL_SHAPE
from matplotlib.figure import Figure

from scripts.labels import ABBREVIATIONS, MUSCLE_COLOURS, MUSCLES
from scripts.phantom import Phantom
from scripts.report.muscle_metrics import fat_fraction_map, measure, muscle_report, slice_rows
from scripts.report.qc_figure import QC_SIZE_PX, axial_view, qc_figure, save_qc_png

LEFT_PSOAS, LEFT_ILIACUS, LEFT_ERECTOR, RIGHT_ILIACUS = 1, 2, 4, 6
ILIACUS = (LEFT_ILIACUS, RIGHT_ILIACUS)


PHANTOM_SEED = 2  # the conftest fixture ``phantom``


def report_and_slices(phantom: Phantom, label: np.ndarray) -> tuple[dict, list[dict]]:
    measured = measure(label, phantom.affine, fat_fraction_map(water=phantom.water, fat=phantom.fat)[0])
    return muscle_report(measured), slice_rows(measured)


def assert_png_of_qc_size(path: Path) -> None:
    height, width = matplotlib.image.imread(path).shape[:2]
    assert (width, height) == QC_SIZE_PX


def test_png_is_readable_and_of_the_documented_size(phantom: Phantom, tmp_path: Path):
    path = tmp_path / "sub01_qc.png"
    save_qc_png(path, phantom.inphase, phantom.label, phantom.affine, *report_and_slices(phantom, phantom.label))
    assert_png_of_qc_size(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_renders_without_iliacus(phantom: Phantom, tmp_path: Path):
    label = np.where(np.isin(phantom.label, ILIACUS), 0, phantom.label).astype(np.uint8)
    path = tmp_path / "no_iliacus.png"
    save_qc_png(path, phantom.inphase, label, phantom.affine, *report_and_slices(phantom, label))
    assert_png_of_qc_size(path)
    # the area profile draws the six muscles labelled, each through the areas of the slice table
    report, slices = report_and_slices(phantom, label)
    profile = qc_figure(phantom.inphase, label, phantom.affine, report, slices).axes[3]
    drawn = [line for line in profile.get_lines() if line.get_linestyle() != ":"]
    assert len(drawn) == 6
    peaks = [max(row[f"{ABBREVIATIONS[m]}_area_cm2"] for row in slices) for m in MUSCLES if m not in ILIACUS]
    assert sorted(max(line.get_ydata()) for line in drawn) == sorted(peaks)


def test_interrupted_write_leaves_no_png(phantom: Phantom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def fail_halfway(self: Figure, target: Path, **kwargs) -> None:
        Path(target).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", fail_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_qc_png(
            tmp_path / "qc.png",
            phantom.inphase,
            phantom.label,
            phantom.affine,
            *report_and_slices(phantom, phantom.label),
        )
    assert list(tmp_path.iterdir()) == []


def test_fixed_distinct_colour_per_muscle():
    assert sorted(MUSCLE_COLOURS) == list(MUSCLES)
    assert len(set(MUSCLE_COLOURS.values())) == len(MUSCLES)


@pytest.mark.parametrize("axcodes", [("R", "A", "S"), ("S", "L", "P"), ("P", "R", "S")])
def test_slices_are_radiological_whatever_the_array_order(phantom: Phantom, axcodes: tuple[str, str, str]):
    """The same voxels stored in another order (superior kept increasing, so slice indices agree) give the same
    picture, with the left psoas on the image's right and the erector spinae (posterior) below it."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(phantom.affine), nib.orientations.axcodes2ornt(axcodes)
    )
    label = nib.orientations.apply_orientation(phantom.label, transform)
    affine = phantom.affine @ nib.orientations.inv_ornt_aff(transform, phantom.label.shape)
    index = SMALL_SHAPE[2] // 2
    view, pixel_mm = axial_view(label, index, affine)
    expected, expected_mm = axial_view(phantom.label, index, phantom.affine)
    np.testing.assert_array_equal(view, expected)
    assert pixel_mm == expected_mm
    psoas_rows, psoas_columns = np.nonzero(view == LEFT_PSOAS)
    assert psoas_columns.size and psoas_columns.min() > view.shape[1] / 2
    assert np.nonzero(view == LEFT_ERECTOR)[0].mean() > psoas_rows.mean()
