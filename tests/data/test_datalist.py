"""Datalist reading: paths made absolute, every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import write_datalist

from scripts.data.datalist import DatalistError, load_datalist


def test_paths_of_every_image_key_are_resolved(cohort: Path):
    entries = load_datalist(cohort / "datalist.json", "training")
    assert len(entries) == 4
    for entry in entries:
        for key in ("image", "water", "fat", "label"):
            assert Path(entry[key]).is_absolute() and Path(entry[key]).is_file()


def test_all_problems_are_listed_together(tmp_path: Path):
    (tmp_path / "a.nii.gz").write_bytes(b"")
    path = write_datalist(
        tmp_path / "datalist.json",
        {
            "training": [
                {"id": "s1", "image": "missing.nii.gz", "label": "a.nii.gz"},
                {"id": "s2", "water": "a.nii.gz"},
                {"image": "a.nii.gz", "label": "gone.nii.gz"},
            ]
        },
    )
    with pytest.raises(DatalistError) as err:
        load_datalist(path, "training")
    message = str(err.value)
    assert "5 problem(s)" in message
    assert "missing.nii.gz" in message and "gone.nii.gz" in message
    assert "needs 'image' (in-phase) or both 'water' and 'fat'" in message and "no 'id'" in message
    assert "no 'label' (required in 'training')" in message


@pytest.mark.parametrize(
    "content, message", [("{not json", "not valid JSON"), ('{"testing": []}', "no 'training' section")]
)
def test_unusable_datalist_files_are_refused(tmp_path: Path, content: str, message: str):
    path = tmp_path / "datalist.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatalistError, match=message):
        load_datalist(path, "training")


def test_testing_entries_need_no_label(cohort: Path):
    entries = load_datalist(cohort / "datalist.json", "testing")
    assert entries and all("label" not in e for e in entries)


def test_a_section_can_give_every_entry_its_label_map(tmp_path: Path):
    nib.save(nib.Nifti1Image(np.array([[[0, 1], [2, 0]]], np.uint8), np.eye(4)), tmp_path / "a.nii.gz")
    section = {
        "label_map": {"1": 8, "2": 4},
        "annotated": [4, 8],
        "entries": [
            {"id": "r1", "image": "a.nii.gz", "label": "a.nii.gz"},
            {"id": "r2", "image": "a.nii.gz", "label": "a.nii.gz", "annotated": [8]},
        ],
    }
    entries = load_datalist(write_datalist(tmp_path / "datalist.json", {"training": section}), "training")
    assert [e["label_map"] for e in entries] == [{"1": 8, "2": 4}] * 2
    assert [e["annotated"] for e in entries] == [[4, 8], [8]]
