"""Colour tables for 3D Slicer and ITK-SNAP: every label by name and colour, shipped and written by inference."""

from __future__ import annotations

import shlex

from conftest import REPO

from scripts.labels import LABELS, MUSCLE_COLOURS, MUSCLES
from scripts.report.colour_tables import ITKSNAP_NAME, SLICER_NAME, itksnap_label_file, slicer_colour_table


def rgb(label: int) -> list[int]:
    return [int(MUSCLE_COLOURS[label][i : i + 2], 16) for i in (1, 3, 5)]


def test_slicer_table_names_and_colours_every_label():
    rows = [line.split() for line in slicer_colour_table().splitlines() if not line.startswith("#")]
    assert [int(r[0]) for r in rows] == list(LABELS)
    for row in rows[1:]:
        label = int(row[0])
        assert row[1].replace("_and_", " + ").replace("_", " ") == LABELS[label]
        assert [int(v) for v in row[2:5]] == rgb(label) and row[5] == "255"


def test_itksnap_file_names_and_colours_every_label():
    rows = [shlex.split(line) for line in itksnap_label_file().splitlines() if not line.startswith("#")]
    assert [int(r[0]) for r in rows] == [0, *MUSCLES]
    for row in rows[1:]:
        assert [int(v) for v in row[1:4]] == rgb(int(row[0])) and row[7] == LABELS[int(row[0])]


def test_shipped_tables_are_the_generated_ones():
    assert (REPO / "docs" / SLICER_NAME).read_text(encoding="utf-8") == slicer_colour_table()
    assert (REPO / "docs" / ITKSNAP_NAME).read_text(encoding="utf-8") == itksnap_label_file()
