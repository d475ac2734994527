"""Measure segmented cases and write their reports: inference's report step and a command for existing labels.

Per case, in ``<output_dir>/<id>/``: ``<id>_metrics.json`` (``muscle_metrics.muscle_report``),
``<id>_slices.csv`` (per axial slice, per muscle) and ``<id>_qc.png``; for the cohort,
``<output_dir>/metrics.csv`` with one row per case. All in the input image's own space.

Report existing segmentations (manual ones, say) listed with ``label`` in a datalist:

    python -m scripts.report.case_report --dataset_dir D --output_dir O [--datalist D/datalist.json]
        [--noise_floor 0.02]
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events
from monai.transforms import Compose, MapTransform
from tqdm import tqdm

from scripts.atomic import write_atomically, write_csv_atomically
from scripts.data.datalist import IMAGE_KEYS, load_cohort
from scripts.data.image_checks import CheckedLoadImaged, unusual_input_notes
from scripts.data.transforms import MapLabelsd, MatchCaseGeometryd
from scripts.distributed import barrier, is_main_process
from scripts.report.confidence import NOT_FOUND, muscle_confidence
from scripts.report.muscle_metrics import (
    DEFAULT_NOISE_FLOOR,
    cohort_row,
    fat_fraction_map,
    fat_water_swap_check,
    measure,
    muscle_report,
    slice_rows,
)
from scripts.report.qc_figure import save_qc_png

logger = logging.getLogger(__name__)
METRICS_CSV = "metrics.csv"
DIXON_KEYS = ("water", "fat", "inphase", "outphase")


def write_case_report(
    output_dir: str | Path,
    case_id: str,
    label: np.ndarray,
    affine: np.ndarray,
    images: Mapping[str, np.ndarray | None],
    noise_floor: float = DEFAULT_NOISE_FLOOR,
    confidence: Mapping[str, dict] | None = None,
    notes: Sequence[str] = (),
    border: str | None = None,
) -> dict:
    """Measure ``label`` (3-D, this bundle's label values) on its grid and write the case's three files.

    ``images`` may hold ``water``, ``fat``, ``inphase``, ``outphase`` on the label's grid:
    the fat fraction comes from water and fat, else from in-phase and opposed-phase, else it
    is null with a note. The QC picture shows the in-phase image (water + fat without it).
    ``confidence``: per muscle abbreviation, ``scripts.report.confidence.muscle_confidence`` of the
    prediction (inference computes it on the network's grid); without it, it is computed from
    ``label`` alone (anatomy and largest piece). ``notes``: sentences on what is unusual about the input
    (``scripts.data.image_checks.unusual_input_notes``), kept as the report's ``notes``. ``border``: the border
    step inference used (``scripts.inference.fat_border``: "fat_connected" or "none"), recorded in the report; None
    for labels drawn elsewhere.
    """
    case_dir = Path(output_dir) / case_id
    fat_fraction, note = fat_fraction_map(**{k: images.get(k) for k in DIXON_KEYS}, noise_floor=noise_floor)
    measured = measure(label, affine, fat_fraction)
    report = {"id": case_id, "notes": list(notes), "noise_floor": noise_floor, "border": border} | muscle_report(
        measured, note
    )
    if confidence is None:
        confidence = muscle_confidence(label, affine)
    for name, entry in report["muscles"].items():  # one found on the network's grid may vanish on the input grid
        entry |= confidence[name] if entry["volume_ml"] > 0 else NOT_FOUND
    water, fat = images.get("water"), images.get("fat")
    if fat_fraction is not None and water is not None and fat is not None:
        report |= fat_water_swap_check(water, fat, fat_fraction)
        if report["fat_water_swap_suspected"]:
            logger.warning(
                "%s: fat and water look swapped (median fat fraction of the brightest tissue %.1f %%, expected about "
                "90 %% for subcutaneous fat); its fat fractions are flagged in %s_metrics.json",
                case_id,
                report["bright_tissue_fat_fraction_percent"],
                case_id,
            )
    else:
        report |= {"bright_tissue_fat_fraction_percent": None, "fat_water_swap_suspected": None}
    write_atomically(
        case_dir / f"{case_id}_metrics.json", lambda p: p.write_text(json.dumps(report, indent=1), encoding="utf-8")
    )
    slices = slice_rows(measured)
    write_csv_atomically(case_dir / f"{case_id}_slices.csv", slices)
    inphase = images.get("inphase")
    if inphase is None and images.get("water") is not None and images.get("fat") is not None:
        inphase = images["water"] + images["fat"]
    if inphase is None:
        inphase = np.zeros(label.shape, np.float32)
    save_qc_png(case_dir / f"{case_id}_qc.png", inphase, label, affine, report, slices)
    return report


def write_cohort_csv(output_dir: str | Path) -> Path:
    """``<output_dir>/metrics.csv``: one row per case report found in ``<output_dir>/<id>/<id>_metrics.json``."""
    output_dir = Path(output_dir)
    reports = sorted(output_dir.glob("*/*_metrics.json"))
    rows = [
        cohort_row(r.parent.name, json.loads(r.read_text(encoding="utf-8")))
        for r in reports
        if r.name == f"{r.parent.name}_metrics.json"
    ]
    path = output_dir / METRICS_CSV
    write_csv_atomically(path, rows)
    return path


def as_volume(value: Any) -> np.ndarray | None:
    """A channel-first (1, X, Y, Z) image of the case as a 3-D numpy array."""
    return None if value is None else np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)[0]


class CaseReportd(MapTransform):
    """Inference's report step: measure the segmentation ``key`` (on the input's own grid) and write the case report.

    Reads the case's ``id``, its Dixon images as loaded (``water``, ``fat``, ``inphase``,
    ``outphase``, where present) and the muscle confidence ``confidence_key`` left by
    ``scripts.report.confidence.MuscleConfidenced`` (computed from the segmentation alone where absent);
    the data are not changed. What is unusual about the input grid (``unusual_input_notes``: one slice, a short
    field of view, voxels far coarser than the weights' ``spacing``) is logged as a warning and written to the
    report's ``notes``. ``border``: the border step that drew the segmentation, for the report.
    """

    def __init__(
        self,
        keys: str,
        output_dir: str,
        noise_floor: float = DEFAULT_NOISE_FLOOR,
        confidence_key: str = "confidence",
        spacing: Sequence[float] | None = None,
        border: str = "none",
    ) -> None:
        super().__init__(keys)
        self.output_dir = output_dir
        self.noise_floor = noise_floor
        self.confidence_key = confidence_key
        self.spacing = spacing
        self.border = border

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            seg = d[key]
            label = as_volume(seg).astype(np.uint8)
            images = {k: as_volume(d.get(k)) for k in DIXON_KEYS}
            case_id = str(d["id"])
            confidence = d.get(self.confidence_key)
            affine = seg.affine.cpu().numpy()
            notes = unusual_input_notes(label.shape, affine, self.spacing)
            for note in notes:
                logger.warning("%s: the scan %s", case_id, note)
            write_case_report(
                self.output_dir, case_id, label, affine, images, self.noise_floor, confidence, notes, self.border
            )
            logger.info(
                "%s: segmentation, report and QC picture written to %s", case_id, Path(self.output_dir) / case_id
            )
        return d


def report_existing(datalist: Path, dataset_dir: Path, output_dir: Path, noise_floor: float) -> Path:
    """Report every entry with a ``label`` in any section of the datalist; returns the cohort CSV."""
    sections = [
        s for s in ("training", "validation", "testing") if s in json.loads(datalist.read_text(encoding="utf-8"))
    ]
    cohort = load_cohort(datalist, sections, dataset_dir)
    entries = {e["id"]: e for section in cohort.values() for e in section if "label" in e}
    keys = [k for k in IMAGE_KEYS if k not in ("image", "tissue")] + ["inphase"]
    load = Compose(
        [
            CheckedLoadImaged(keys, allow_missing_keys=True),
            MatchCaseGeometryd(["label", *DIXON_KEYS]),
            MapLabelsd(),
        ]
    )
    for case_id, entry in tqdm(sorted(entries.items()), desc="reports", unit="case"):
        entry = {("inphase" if k == "image" else k): v for k, v in entry.items()}
        case = load(entry)
        images = {k: as_volume(case.get(k)) for k in DIXON_KEYS}
        write_case_report(
            output_dir, case_id, as_volume(case["label"]), case["label"].affine.numpy(), images, noise_floor
        )
    return write_cohort_csv(output_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.report.case_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", type=Path, required=True)
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--datalist", type=Path, default=None, help="default: <dataset_dir>/datalist.json")
    parser.add_argument(
        "--noise_floor", type=float, default=DEFAULT_NOISE_FLOOR, help="share of the 99th percentile of W+F"
    )
    args = parser.parse_args(argv)
    path = report_existing(
        args.datalist or args.dataset_dir / "datalist.json", args.dataset_dir, args.output_dir, args.noise_floor
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()


class CohortMetricsWriter:
    """At the end of an inference run, write ``<output_dir>/metrics.csv``: one row per case report there.

    With several ranks, rank 0 writes once every rank has finished its cases.
    """

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, _: Engine) -> None:
        barrier()
        if is_main_process():
            write_cohort_csv(self.output_dir)
