"""The quality-control figure of one segmented case, ``<id>_qc.png``: does the segmentation sit on the muscles?

Three axial slices of the in-phase image, at the levels of the largest psoas, quadratus lumborum and iliacus areas,
with each muscle's outline in its fixed colour, and the area profile of every muscle along the S–I axis; the legend
gives each muscle's confidence, and it and the title mark in red the muscles flagged for checking. Slices are
shown in radiological view (subject's right on the image's left, anterior up), decided from the affine, so a
left/right mix-up in the label shows as a wrong colour on a side marked R or L. Nothing is resampled: images and
labels are shown on their own voxel grid, stretched to their voxel size in mm.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from scripts.atomic import write_atomically
from scripts.data.geometry import spacing_and_direction
from scripts.labels import ABBREVIATIONS, LABELS, LEFT_RIGHT_PAIRS, MUSCLE_COLOURS, MUSCLES
from scripts.report.muscle_metrics import PAIR_NAMES, slice_axis, slice_geometry

DPI = 100
QC_SIZE_PX = (1600, 900)  # (width, height) of the PNG in pixels
RIGHT_SIDE = {right for _, right in LEFT_RIGHT_PAIRS}
PANEL_PAIRS = ("psoas", "quadratus_lumborum", "iliacus")  # keys of muscle_metrics.PAIR_NAMES, left to right
# The subject's sides at the panel edges (axes fractions); true by construction of axial_view.
SIDE_MARKS = (("R", 0.03, 0.5), ("L", 0.97, 0.5), ("A", 0.5, 0.95), ("P", 0.5, 0.05))
SIDE_MARK_STYLE = {  # a dark box keeps the letter readable on bright fat and dark air alike
    "ha": "center",
    "va": "center",
    "color": "yellow",
    "fontsize": 14,
    "bbox": {"facecolor": "black", "alpha": 0.6, "edgecolor": "none", "pad": 1.5},
}
GREY_PERCENTILES = (1.0, 99.5)  # window of the in-phase image; a few bright voxels (CSF, fat) do not darken it
CHECK_COLOUR = "#d62728"  # legend entries of muscles flagged for checking (``check`` in the report)


def save_qc_png(
    path: str | os.PathLike,
    inphase: np.ndarray,
    label: np.ndarray,
    affine: np.ndarray,
    report: dict,
    slices: list[dict],
) -> None:
    """Write the QC figure of ``inphase`` (any intensity scale) and ``label`` (same grid, values of
    ``scripts.labels``) with ``affine``, their ``muscle_metrics.muscle_report`` and ``muscle_metrics.slice_rows``
    (``slices``) to ``path`` as a PNG of exactly
    ``QC_SIZE_PX`` pixels. The PNG appears whole or not at all: it is written to a temporary file in the same folder
    and renamed onto ``path``. Neither array is changed."""
    inphase, label = np.asarray(inphase), np.asarray(label)
    if inphase.shape != label.shape:
        raise ValueError(f"in-phase image shape {inphase.shape} differs from label shape {label.shape}")
    figure = qc_figure(inphase, label, np.asarray(affine, np.float64), report, slices)
    # The fastest zlib level: the PNG is written in about half the time and is about 20 % larger (~0.5 MB).
    write_atomically(
        path, lambda temporary: figure.savefig(temporary, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})
    )


def qc_figure(inphase: np.ndarray, label: np.ndarray, affine: np.ndarray, report: dict, slices: list[dict]) -> Figure:
    """The figure: three slice panels on top, the area profile and the colour legend below. Drawn on an Agg canvas
    without pyplot: no window, no global figure state."""
    width, height = QC_SIZE_PX
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(
        2, 3, height_ratios=(1.4, 1.0), left=0.04, right=0.99, bottom=0.07, top=0.9, wspace=0.04, hspace=0.2
    )
    title = "Axial slices in radiological view (subject's right on the image's left, anterior up)"
    flagged = [name for name, entry in report["muscles"].items() if entry.get("check")]
    if flagged:
        title += f"\nCHECK before using: {', '.join(flagged)} (low confidence or implausible anatomy)"
    figure.suptitle(title, color=CHECK_COLOUR if flagged else "black")
    levels = panel_levels(report, label.shape[slice_axis(affine)])
    for column, (pair_name, muscle, index) in enumerate(levels):
        title = panel_title(pair_name, muscle, index, report)
        draw_slice(figure.add_subplot(grid[0, column]), inphase, label, affine, index, title)
    draw_profile(figure.add_subplot(grid[1, :2]), slices, slice_geometry(label.shape, affine).z_mm, levels)
    legend_axes = figure.add_subplot(grid[1, 2])
    legend_axes.axis("off")
    handles = [Line2D([], [], color=MUSCLE_COLOURS[m], linestyle=_line_style(m), linewidth=2.5) for m in MUSCLES]
    names = [f"{ABBREVIATIONS[m]}  {LABELS[m]}{confidence_text(report, m)}" for m in MUSCLES]
    legend = legend_axes.legend(
        handles, names, loc="center", fontsize=11, title="outline colours, confidence", frameon=False
    )
    for muscle, text in zip(MUSCLES, legend.get_texts(), strict=True):
        if report["muscles"][ABBREVIATIONS[muscle]].get("check"):
            text.set_color(CHECK_COLOUR)
            text.set_fontweight("bold")
    return figure


def confidence_text(report: dict, muscle: int) -> str:
    """The legend's note on a muscle's confidence, "  0.93", or "  0.12 CHECK" for one flagged for checking; empty
    for a report without confidence."""
    entry = report["muscles"][ABBREVIATIONS[muscle]]
    if entry.get("confidence") is None:
        return ""
    return f"  {entry['confidence']:.2f}" + ("  CHECK" if entry.get("check") else "")


def panel_levels(report: dict, n_slices: int) -> list[tuple[str, int | None, int]]:
    """For each panel: its pair's name, the side with the larger largest area and that area's slice; (name, None,
    middle slice) when neither side is in the label."""
    labels_of = {name: pair for pair, name in PAIR_NAMES.items()}
    levels = []
    for pair_name in PANEL_PAIRS:
        entries = [report["muscles"][ABBREVIATIONS[muscle]] for muscle in labels_of[pair_name]]
        largest = max(entries, key=lambda entry: entry["max_area_cm2"])
        if largest["max_area_slice"] is None:
            levels.append((pair_name, None, n_slices // 2))
        else:
            levels.append((pair_name, largest["label"], largest["max_area_slice"]))
    return levels


def panel_title(pair_name: str, muscle: int | None, index: int, report: dict) -> str:
    if muscle is None:
        return f"no {pair_name.replace('_', ' ')} labelled: middle slice {index}"
    entry = report["muscles"][ABBREVIATIONS[muscle]]
    area, z_mm = entry["max_area_cm2"], entry["max_area_z_mm"]
    return f"largest {ABBREVIATIONS[muscle]}: {area:.1f} cm² at slice {index}, z {z_mm:.0f} mm"


def axial_view(volume: np.ndarray, index: int, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Slice ``index`` across ``slice_axis`` as rows (posterior going down) × columns (towards the subject's left),
    read from the affine rather than the array order; returns it with its (row, column) pixel size in mm."""
    axis = slice_axis(affine)
    in_plane = [a for a in range(3) if a != axis]
    spacing, direction = spacing_and_direction(affine)
    sizes, directions = spacing[in_plane], direction[:, in_plane]
    column_axis = int(np.argmax(np.abs(directions[0])))  # of the two in-plane axes, the one closest to world x
    row_axis = 1 - column_axis
    view = np.take(volume, index, axis=axis)
    if column_axis == 0:
        view = view.T  # make the left-right axis the columns
    if directions[0, column_axis] > 0:  # index grows towards the subject's right: reverse to put right on the left
        view = view[:, ::-1]
    if directions[1, row_axis] > 0:  # index grows anteriorly: reverse to put anterior on top
        view = view[::-1, :]
    return view, (float(sizes[row_axis]), float(sizes[column_axis]))


def draw_slice(axes: Axes, inphase: np.ndarray, label: np.ndarray, affine: np.ndarray, index: int, title: str) -> None:
    """The in-phase slice in grey, each muscle's outline in its colour, and the subject's sides marked."""
    image, (row_mm, column_mm) = axial_view(inphase, index, affine)
    labels, _ = axial_view(label, index, affine)
    rows, columns = image.shape
    extent = (0.0, columns * column_mm, rows * row_mm, 0.0)
    low, high = np.nanpercentile(image, GREY_PERCENTILES)
    axes.imshow(image, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), extent=extent, interpolation="nearest")
    x = (np.arange(columns) + 0.5) * column_mm
    y = (np.arange(rows) + 0.5) * row_mm
    for muscle in MUSCLES:
        mask = labels == muscle
        if mask.any():
            axes.contour(x, y, mask.astype(np.float32), levels=[0.5], colors=MUSCLE_COLOURS[muscle], linewidths=1.2)
    for text, x_position, y_position in SIDE_MARKS:
        axes.text(x_position, y_position, text, transform=axes.transAxes, **SIDE_MARK_STYLE)
    axes.set_title(title, fontsize=10)
    axes.set_xticks([])
    axes.set_yticks([])


def draw_profile(axes: Axes, slices: list[dict], z_mm: np.ndarray, levels: list[tuple[str, int | None, int]]) -> None:
    """Each muscle of the slice table ``slices``: its axial area (cm²) per slice against world z (``z_mm`` of
    every slice, superior to the right), 0 in slices without it; dotted lines at the panels' slices (``levels``)."""
    for muscle in MUSCLES:
        area = np.zeros(z_mm.size)
        for row in slices:
            area[row["slice"]] = row[f"{ABBREVIATIONS[muscle]}_area_cm2"]
        if area.any():
            axes.plot(z_mm, area, color=MUSCLE_COLOURS[muscle], linestyle=_line_style(muscle), linewidth=1.8)
    for _, _, index in levels:
        axes.axvline(z_mm[index], color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("z (mm, inferior → superior)")
    axes.set_ylabel("area (cm²)")
    axes.set_ylim(bottom=0)
    axes.set_title("axial area profile (solid: left, dashed: right; dotted: slices shown)", fontsize=10)
    axes.grid(alpha=0.3)


def _line_style(muscle: int) -> str:
    return "--" if muscle in RIGHT_SIDE else "-"
