"""Score segmentations against manual reference labels, per case and muscle, as Balerdi et al. report them and more.

Everything is measured on the input's own voxel grid, distances in millimetres of its own spacing. Per case and
annotated muscle: Dice, 95th-percentile Hausdorff distance (HD95) and average symmetric surface distance (ASSD)
from MONAI's ``DiceMetric``, ``HausdorffDistanceMetric`` and ``SurfaceDistanceMetric``; the volume and mean fat
fraction of prediction and reference from ``scripts.report.muscle_metrics``, whole and core (the muscle eroded by about
2 mm), and their differences. For the cohort,
``EvaluationWriter`` writes to its output folder:

- ``evaluation.csv``: one row per case and annotated muscle (``ROW_FIELDS``);
- ``table1.md``: Dice per case and muscle shaped like the paper's Table 1 (with "Median (iqr)", "Mean (std)" and
  the number of cases per muscle), then the same table for HD95;
- ``dice_boxplot.png`` (the paper's Figure 3) and ``hd95_boxplot.png``: box plots per muscle.

Conventions: a muscle a case does not annotate has no row. One it annotates but whose reference is empty is not
scored (NaN Dice and distances, "–" in the tables). One missing from the prediction has Dice 0 and infinite
distances, which enter the statistics as they are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from monai.data.utils import affine_to_spacing
from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDistanceMetric
from scipy.ndimage import find_objects

from scripts.atomic import write_atomically, write_csv_atomically
from scripts.labels import ABBREVIATIONS, ANNOTATED, MUSCLES
from scripts.report.case_report import as_volume
from scripts.report.muscle_metrics import DEFAULT_NOISE_FLOOR, fat_fraction_map, measure, muscle_report

logger = logging.getLogger(__name__)

ROW_FIELDS = (
    "id",
    "muscle",
    "dice",
    "hd95_mm",
    "assd_mm",
    "volume_pred_ml",
    "volume_ref_ml",
    "volume_diff_percent",
    "fat_fraction_pred_percent",
    "fat_fraction_ref_percent",
    "fat_fraction_diff_pp",
    "core_fat_fraction_pred_percent",
    "core_fat_fraction_ref_percent",
    "core_fat_fraction_diff_pp",
)
COLUMNS = tuple(ABBREVIATIONS[m] for m in MUSCLES)
NOT_SCORED = "–"
CSV_DECIMALS = 4


def surface_scores(pred: torch.Tensor, reference: torch.Tensor, spacing: Sequence[float]) -> tuple[float, float, float]:
    """Dice, HD95 (mm) and ASSD (mm) of one muscle given as two boolean 3-D masks on one grid of voxel size ``spacing``.

    An empty reference gives NaN for all three (nothing to score). An empty prediction against a non-empty reference
    gives Dice 0 and infinite distances (MONAI itself returns NaN for HD95 there, which would read as "not scored").
    """
    pred, reference = pred[None, None], reference[None, None]  # batch and channel: one class of one case
    if not reference.any():
        return math.nan, math.nan, math.nan
    dice = float(DiceMetric(include_background=True)(pred, reference))
    if not pred.any():
        return dice, math.inf, math.inf
    hd95 = HausdorffDistanceMetric(include_background=True, percentile=95)(pred, reference, spacing=spacing)
    assd = SurfaceDistanceMetric(include_background=True, symmetric=True)(pred, reference, spacing=spacing)
    return dice, float(hd95), float(assd)


def muscle_boxes(pred: np.ndarray, reference: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """Per muscle present in either label array, the box around it in both, grown by one voxel (within the grid).

    Outside this box both masks are empty, so Dice and surface distances computed inside it equal those on the whole
    grid (MONAI crops the same way internally), at a fraction of the cost on a large scan.
    """
    found: dict[int, list[tuple[slice, ...]]] = {}
    for label in (pred, reference):
        for muscle, box in zip(MUSCLES, find_objects(label, max_label=max(MUSCLES))):  # entry i: label value i + 1
            if box is not None:
                found.setdefault(muscle, []).append(box)
    return {
        muscle: tuple(
            slice(max(min(b[axis].start for b in boxes) - 1, 0), max(b[axis].stop for b in boxes) + 1)
            for axis in range(pred.ndim)
        )
        for muscle, boxes in found.items()
    }


def _difference(pred: float | None, reference: float | None, relative: bool = False) -> float | None:
    """pred − reference, or 100·(pred − reference)/reference; None without both values, NaN for a zero reference."""
    if pred is None or reference is None:
        return None
    if not relative:
        return pred - reference
    return 100.0 * (pred - reference) / reference if reference else math.nan


def case_rows(
    case_id: str,
    pred: np.ndarray,
    reference: np.ndarray,
    affine: np.ndarray,
    annotated: Sequence[bool] | None = None,
    fat_fraction: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Rows of ``evaluation.csv`` for one case: ``pred`` and ``reference`` are 3-D label arrays (values 0–8) on the
    same grid with voxel-to-world ``affine``; neither is changed or resampled.

    ``annotated``: the 9-class mask of the muscles drawn in the reference (``MapLabelsd``); muscles outside it get no
    row. ``fat_fraction``: a map from ``fat_fraction_map`` on that grid, or None (the fat-fraction fields are then
    None). Volumes in mL, fat fractions in percent, their difference in percentage points.
    """
    if pred.shape != reference.shape:
        raise ValueError(f"{case_id}: prediction shape {pred.shape} differs from reference shape {reference.shape}")
    spacing = affine_to_spacing(torch.as_tensor(np.asarray(affine, np.float64)), r=3).tolist()
    measured_pred = muscle_report(measure(pred, affine, fat_fraction))["muscles"]
    measured_ref = muscle_report(measure(reference, affine, fat_fraction))["muscles"]
    boxes = muscle_boxes(pred, reference)
    rows = []
    for muscle in MUSCLES:
        if annotated is not None and not annotated[muscle]:
            continue
        name = ABBREVIATIONS[muscle]
        box = boxes.get(muscle, (slice(0, 0),) * pred.ndim)  # in neither label: empty masks
        dice, hd95, assd = surface_scores(
            torch.from_numpy(pred[box] == muscle), torch.from_numpy(reference[box] == muscle), spacing
        )
        p, r = measured_pred[name], measured_ref[name]
        ff_pred, ff_ref = p["fat_fraction_mean_percent"], r["fat_fraction_mean_percent"]
        core_pred, core_ref = p["core_fat_fraction_mean_percent"], r["core_fat_fraction_mean_percent"]
        rows.append(
            {
                "id": case_id,
                "muscle": name,
                "dice": dice,
                "hd95_mm": hd95,
                "assd_mm": assd,
                "volume_pred_ml": p["volume_ml"],
                "volume_ref_ml": r["volume_ml"],
                "volume_diff_percent": _difference(p["volume_ml"], r["volume_ml"], relative=True),
                "fat_fraction_pred_percent": ff_pred,
                "fat_fraction_ref_percent": ff_ref,
                "fat_fraction_diff_pp": _difference(ff_pred, ff_ref),
                "core_fat_fraction_pred_percent": core_pred,
                "core_fat_fraction_ref_percent": core_ref,
                "core_fat_fraction_diff_pp": _difference(core_pred, core_ref),
            }
        )
    return rows


def per_case(rows: Sequence[dict[str, Any]], field: str) -> dict[str, dict[str, float]]:
    """``{case id: {muscle: value}}`` of one field over the scored rows (NaN = not scored is left out)."""
    table: dict[str, dict[str, float]] = {}
    for row in rows:
        values = table.setdefault(row["id"], {})
        if not math.isnan(row[field]):
            values[row["muscle"]] = row[field]
    return table


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, interquartile range (75th − 25th percentile, numpy's linear interpolation), mean and standard
    deviation (population, ddof=0: numpy's default) of ``values``, and their number ``n``; NaN statistics for none.
    Infinite values stay in, so they show up (as inf, or NaN where numpy's interpolation meets inf) rather than
    being silently dropped."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return {"median": math.nan, "iqr": math.nan, "mean": math.nan, "std": math.nan, "n": 0}
    with np.errstate(invalid="ignore"):  # inf − inf in the interpolation: expected, the NaN is the message
        q25, median, q75 = (float(q) for q in np.percentile(v, [25, 50, 75]))
        return {"median": median, "iqr": q75 - q25, "mean": float(v.mean()), "std": float(v.std()), "n": len(v)}


def markdown_table(table: dict[str, dict[str, float]], decimals: int) -> str:
    """The paper's Table 1 layout: one row per case, one column per muscle, then "Median (iqr)", "Mean (std)" and
    "Cases" (how many cases each column rests on); "–" where a case does not score the muscle."""

    def number(value: float) -> str:
        return f"{value:.{decimals}f}"

    def line(first: str, cells: Sequence[str]) -> str:
        return f"| {first} | " + " | ".join(cells) + " |"

    stats = [summary([values[c] for values in table.values() if c in values]) for c in COLUMNS]
    lines = [line("Image", COLUMNS), "| --- |" + " ---: |" * len(COLUMNS)]
    lines += [line(case, [number(v[c]) if c in v else NOT_SCORED for c in COLUMNS]) for case, v in table.items()]
    for label, centre, spread in (("Median (iqr)", "median", "iqr"), ("Mean (std)", "mean", "std")):
        cells = [f"{number(s[centre])} ({number(s[spread])})" if s["n"] else NOT_SCORED for s in stats]
        lines.append(line(label, cells))
    lines.append(line("Cases", [str(s["n"]) for s in stats]))
    return "\n".join(lines) + "\n"


def table1_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """``table1.md``: the Dice table (3 decimals), then the HD95 table (mm, 2 decimals), each with its legend."""
    return (
        "# Evaluation against the reference labels\n\n"
        "## Dice\n\n"
        f"{markdown_table(per_case(rows, 'dice'), 3)}\n"
        "## HD95 (mm)\n\n"
        f"{markdown_table(per_case(rows, 'hd95_mm'), 2)}\n"
        f"{NOT_SCORED}: the muscle is not scored in that image (not annotated, or absent from the reference). "
        "A muscle missing from the prediction has Dice 0 and HD95 inf, which makes the statistics of its column "
        "inf or nan. IQR: 75th − 25th percentile; "
        "std: population standard deviation (ddof 0). Cases: the number of images each column rests on.\n"
    )


def boxplot_figure(table: dict[str, dict[str, float]], ylabel: str) -> Figure:
    """Box plot of one value per muscle over the cases that score it; infinite values cannot be drawn, so their
    count is written under the muscle's name."""
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    columns = [np.array([values[c] for values in table.values() if c in values], np.float64) for c in COLUMNS]
    axes.boxplot([column[np.isfinite(column)] for column in columns])
    names = [n if np.isfinite(c).all() else f"{n}\n({np.isinf(c).sum()} inf)" for n, c in zip(COLUMNS, columns)]
    axes.set_xticks(range(1, len(COLUMNS) + 1), names)
    axes.set_ylabel(ylabel)
    axes.grid(axis="y", alpha=0.3)
    return figure


def _csv_value(value: Any) -> Any:
    """Floats to ``CSV_DECIMALS`` decimals (inf and nan written as such); None as an empty cell."""
    return round(value, CSV_DECIMALS) if isinstance(value, float) else value


def write_evaluation(output_dir: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``evaluation.csv``, ``table1.md``, ``dice_boxplot.png`` and ``hd95_boxplot.png`` to ``output_dir``."""
    output_dir = Path(output_dir)

    csv_rows = ({k: _csv_value(v) for k, v in row.items()} for row in rows)
    write_csv_atomically(output_dir / "evaluation.csv", csv_rows, ROW_FIELDS)
    write_atomically(output_dir / "table1.md", lambda path: path.write_text(table1_markdown(rows), encoding="utf-8"))
    for field, ylabel, name in (("dice", "Dice", "dice_boxplot.png"), ("hd95_mm", "HD95 (mm)", "hd95_boxplot.png")):
        figure = boxplot_figure(per_case(rows, field), ylabel)
        write_atomically(output_dir / name, lambda path: figure.savefig(path, format="png", dpi=120))


class EvaluationWriter:
    """Ignite handler for an evaluator run: score every case against its reference, then write the evaluation files.

    After each iteration's postprocessing it reads, per case, the predicted classes ``pred_key`` (argmax, already
    mapped back to the input grid) from the engine's output and, from its batch, ``id``, the reference label
    ``reference_key`` as loaded (on the same grid; its ``annotated`` mask from ``MapLabelsd``) and the ``water`` and
    ``fat`` images where present (for fat fractions). Nothing is changed. When the run completes it writes
    ``write_evaluation``'s files to ``output_dir`` and logs the mean Dice per muscle.
    """

    def __init__(
        self,
        output_dir: str,
        noise_floor: float = DEFAULT_NOISE_FLOOR,
        pred_key: str = "pred",
        reference_key: str = "label",
    ) -> None:
        self.output_dir = output_dir
        self.noise_floor = noise_floor
        self.pred_key, self.reference_key = pred_key, reference_key
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.score)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def score(self, engine: Engine) -> None:
        for batch, output in zip(engine.state.batch, engine.state.output):
            reference = batch[self.reference_key]
            mask = reference.meta.get(ANNOTATED)
            annotated = None if mask is None else torch.as_tensor(mask).reshape(-1).bool().tolist()
            water, fat = batch.get("water"), batch.get("fat")
            fat_fraction, _ = fat_fraction_map(
                water=as_volume(water),
                fat=as_volume(fat),
                noise_floor=self.noise_floor,
            )
            self.rows += case_rows(
                str(batch["id"]),
                as_volume(output[self.pred_key]).astype(np.uint8),
                as_volume(reference).astype(np.uint8),
                reference.affine.cpu().numpy(),
                annotated,
                fat_fraction,
            )

    def write(self, engine: Engine) -> None:
        write_evaluation(self.output_dir, self.rows)
        dice = per_case(self.rows, "dice")
        means = [f"{c} {summary([v[c] for v in dice.values() if c in v])['mean']:.3f}" for c in COLUMNS]
        logger.info("evaluated %d cases into %s; mean Dice: %s", len(dice), self.output_dir, ", ".join(means))
