"""Colour tables that make 3D Slicer and ITK-SNAP show every label by its muscle's name and the bundle's colour.

Both are written from the label map and colours of ``scripts.labels``: a 3D Slicer colour table
(``lumbar_muscles.ctbl``: ``index name R G B A`` per line) and an ITK-SNAP label description file
(``lumbar_muscles_itksnap.txt``: ``index R G B alpha visible mesh "name"``). Inference writes both into its output
folder; ``docs/`` ships a copy (``python -m scripts.report.colour_tables docs`` rewrites it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ignite.engine import Engine, Events

from scripts.atomic import write_atomically
from scripts.distributed import is_main_process
from scripts.labels import LABELS, MUSCLE_COLOURS, MUSCLES

SLICER_NAME = "lumbar_muscles.ctbl"
ITKSNAP_NAME = "lumbar_muscles_itksnap.txt"


def _rgb(label: int) -> tuple[int, int, int]:
    colour = MUSCLE_COLOURS[label].lstrip("#")
    return tuple(int(colour[i : i + 2], 16) for i in (0, 2, 4))


def slicer_colour_table() -> str:
    """3D Slicer's colour table format; background transparent, names with underscores for spaces."""
    lines = ["# 3D Slicer colour table: lumbar_muscle_dixon_segmentation labels", "# index name R G B A"]
    lines.append("0 background 0 0 0 0")
    for label in MUSCLES:
        name = LABELS[label].replace(" + ", "_and_").replace(" ", "_")
        lines.append(f"{label} {name} {' '.join(map(str, _rgb(label)))} 255")
    return "\n".join(lines) + "\n"


def itksnap_label_file() -> str:
    """ITK-SNAP's label description format (Segmentation > Import Label Descriptions)."""
    lines = [
        "# ITK-SnAP Label Description File: lumbar_muscle_dixon_segmentation labels",
        "# Columns = IDX -R- -G- -B- -A-- VIS MSH  LABEL",
        '    0     0    0    0        0  0  0    "Clear Label"',
    ]
    for label in MUSCLES:
        r, g, b = _rgb(label)
        lines.append(f'{label:5d} {r:5d} {g:4d} {b:4d}        1  1  1    "{LABELS[label]}"')
    return "\n".join(lines) + "\n"


def write_colour_tables(folder: str | Path) -> list[Path]:
    """Write both tables into ``folder``; returns their paths."""
    folder = Path(folder)
    tables = ((SLICER_NAME, slicer_colour_table()), (ITKSNAP_NAME, itksnap_label_file()))
    return [
        write_atomically(folder / name, lambda p, t=text: p.write_text(t, encoding="utf-8")) for name, text in tables
    ]


class ColourTablesWriter:
    """Ignite handler: write the colour tables into ``output_dir`` when an inference run starts (main process)."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, _: Engine) -> None:
        if is_main_process():
            write_colour_tables(self.output_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.report.colour_tables", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("folder", type=Path)
    for path in write_colour_tables(parser.parse_args(argv).folder):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
