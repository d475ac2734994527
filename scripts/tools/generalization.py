"""Measure how trained weights hold on scans unlike those they were trained on, with the data at hand.

Builds one test set and scores every model (and every post-processing choice) on it with the bundle's own
evaluation (``configs/evaluate.yaml``, Dice on each scan's own grid):

- the real scan TUM02 (``--real_dir``, water, fat and erector spinae + multifidus labels), shown to the network as
  five contrasts made from its own files: in-phase (water + fat, as trained), water only, fat only, opposed phase
  |water - fat|, and in-phase remapped through a fixed non-monotone curve (muscle bright, marrow mid-grey, fat
  dark: a contrast no Dixon image has); only ES+M is scored, it is all that is drawn;
- phantoms of a seed, field of view and slice thickness that no training used (``--phantom_seed``,
  ``--phantom_shape``, ``--phantom_spacing``), all eight muscles scored;
- anatomy phantoms built around real muscle label maps kept out of training (``--heldout_maps``, default
  ``lumbar_a`` of ../shared/data/anatomy; same seed and grid as the phantoms above), the muscles each map holds
  scored (no iliacus in the 8-label maps);
- the same held-out maps cut to the upper field of view (T11-L2) with real organs pasted from ``--organs``
  (default ../shared/data/organs/upper_abdomen_ct.nii.gz): where the network confused psoas, iliacus and quadratus
  lumborum with liver, spleen and kidneys. Besides Dice (iliacus is ruled out there, so any is wrong), the share of
  predicted psoas, iliacus and QL voxels that lie inside a solid organ of the phantom's tissue map.

Writes to ``--output_dir``: the test set (``data/``), one evaluation per model and option (``eval/``),
``generalization.csv`` (one row per model, option, test scan and muscle), ``organs.csv`` (one row per model, option
and T11-L2 case) and ``generalization.md`` (one row per model and option), which it also prints.

    python -m scripts.tools.generalization --model shipped models/model.pt [--model NAME CKPT ...]
        [--options none largest flip largest+flip] [--spacing 3.75 3.75 7.8] [--output_dir generalization]
        [--heldout_maps MAP ...] [--organs MAP]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.bundle import ConfigParser
from tqdm import tqdm

from scripts import BUNDLE_ROOT
from scripts.atomic import write_atomically, write_csv_atomically
from scripts.labels import ABBREVIATIONS
from scripts.phantom import Tissue, make_phantom, write_phantom

REAL_DIR = BUNDLE_ROOT.parent / "shared" / "data" / "TUM02"
REAL_LABEL = "label_es_mf.nii.gz"
HELDOUT_MAPS = (BUNDLE_ROOT.parent / "shared" / "data" / "anatomy" / "lumbar_a.nii.gz",)
ORGANS = BUNDLE_ROOT.parent / "shared" / "data" / "organs" / "upper_abdomen_ct.nii.gz"
SOLID_ORGANS = (Tissue.LIVER, Tissue.SPLEEN, Tissue.KIDNEY)
NOT_ON_ORGANS = (1, 2, 3, 5, 6, 7)  # psoas, iliacus, quadratus lumborum
UPPER = "upper_"  # id prefix of the held-out maps cut to T11-L2 with organs
# TUM02's label_map and annotated muscles, as the robust training recipe declares them.
REAL_CASE = ConfigParser.load_config_file(BUNDLE_ROOT / "configs" / "robust_train.yaml")["real_case"]
CONTRASTS = ("inphase", "water", "fat", "opposed", "remapped")
# The remapping curve: in-phase intensity as a share of its 99th percentile -> new intensity (same scale).
REMAP_KNOTS = ((0.0, 0.0), (0.1, 0.05), (0.25, 0.9), (0.5, 0.5), (0.8, 0.3), (1.0, 0.35), (10.0, 0.35))
# Post-processing choices: the inference/evaluation options each one sets.
OPTIONS = {
    "none": {"largest_component": False, "flip_tta": False},
    "largest": {"largest_component": True, "flip_tta": False},
    "flip": {"largest_component": False, "flip_tta": True},
    "largest+flip": {"largest_component": True, "flip_tta": True},
    "largest+flip+border": {"largest_component": True, "flip_tta": True, "fat_border": True},
}
GROUPS = {"P": (1, 5), "I": (2, 6), "QL": (3, 7), "ES+M": (4, 8)}


def real_contrasts(water: np.ndarray, fat: np.ndarray) -> dict[str, np.ndarray]:
    """The five images (float32) that show one Dixon scan as other contrasts (see the module docstring)."""
    water, fat = water.astype(np.float32), fat.astype(np.float32)
    inphase = water + fat
    scale = float(np.percentile(inphase, 99)) or 1.0
    knots_in, knots_out = zip(*REMAP_KNOTS, strict=True)
    remapped = scale * np.interp(inphase / scale, knots_in, knots_out).astype(np.float32)
    return {"inphase": inphase, "water": water, "fat": fat, "opposed": np.abs(water - fat), "remapped": remapped}


@dataclass(frozen=True)
class ScoringSet:
    """What the test set is made of (the module docstring says how): TUM02's folder (None: phantoms only), the
    phantoms' seed, grid and number, and the held-out maps with the organ map for their T11-L2 cases."""

    real_dir: Path | None
    phantom_seed: int
    phantom_shape: Sequence[int]
    phantom_spacing: Sequence[float]
    n_phantoms: int
    heldout_maps: Sequence[Path] = ()
    organs: Path | None = None


def add_scoring_set_arguments(parser: argparse.ArgumentParser, phantom_seed: int) -> None:
    """The command-line options of a ``ScoringSet`` (shared by the tools that score on it)."""
    parser.add_argument("--real_dir", type=Path, default=REAL_DIR, help="TUM02's folder; skipped when absent")
    parser.add_argument("--phantom_seed", type=int, default=phantom_seed)
    parser.add_argument("--phantom_shape", type=int, nargs=3, default=(104, 72, 50), metavar=("X", "Y", "Z"))
    parser.add_argument("--phantom_spacing", type=float, nargs=3, default=(3.5, 4.2, 5.0), metavar=("X", "Y", "Z"))
    parser.add_argument("--n_phantoms", type=int, default=4, help="phantoms of each kind, and per held-out map")
    parser.add_argument(
        "--heldout_maps", type=Path, nargs="*", default=[m for m in HELDOUT_MAPS if m.is_file()],
        help="anatomy maps no training used (default: lumbar_a, where ../shared is)",
    )  # fmt: skip
    parser.add_argument(
        "--organs", type=Path, default=ORGANS if ORGANS.is_file() else None,
        help="organ map pasted into the held-out maps cut to T11-L2 (default: ../shared's; none: no such cases)",
    )  # fmt: skip


def scoring_set(args: argparse.Namespace) -> ScoringSet:
    """The ``ScoringSet`` of parsed options; TUM02 is left out (and said so) where its label is not there."""
    real_dir = args.real_dir if (args.real_dir / REAL_LABEL).is_file() else None
    if real_dir is None:
        print(f"no {REAL_LABEL} in {args.real_dir}: scoring the phantoms only")
    return ScoringSet(
        real_dir, args.phantom_seed, args.phantom_shape, args.phantom_spacing, args.n_phantoms, args.heldout_maps,
        args.organs,
    )  # fmt: skip


def build_test_set(data_dir: Path, test_set: ScoringSet) -> Path:
    """Write the test images and a datalist whose ``validation`` section lists them all; returns the datalist."""
    data_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    real_dir, organs = test_set.real_dir, test_set.organs
    if real_dir is not None:
        label = nib.load(real_dir / REAL_LABEL)
        water, fat = (np.asarray(nib.load(real_dir / f"{n}.nii.gz").dataobj) for n in ("water", "fat"))
        for contrast, image in real_contrasts(water, fat).items():
            path = data_dir / f"real_{contrast}.nii.gz"
            nib.save(nib.Nifti1Image(image, label.affine, label.header, dtype=np.float32), path)  # a real origin
            entries.append(
                {
                    "id": f"real_{contrast}",
                    "image": path.name,
                    "water": str((real_dir / "water.nii.gz").resolve()),
                    "fat": str((real_dir / "fat.nii.gz").resolve()),
                    "label": str((real_dir / REAL_LABEL).resolve()),
                    "label_map": REAL_CASE["label_map"],
                    "annotated": REAL_CASE["annotated"],
                }
            )
    full = {"organs": None, "fov": "full"}
    n_phantoms = test_set.n_phantoms
    cases = [(f"phantom{i:02d}", None, i, full) for i in range(1, n_phantoms + 1)]
    for prefix, options in (("map_", full), (UPPER, {"organs": organs, "fov": "upper"})):
        if prefix == UPPER and organs is None:
            continue
        cases += [
            (f"{prefix}{Path(m).name.split('.')[0]}_{i:02d}", m, i, options)
            for m in test_set.heldout_maps
            for i in range(1, n_phantoms + 1)
        ]
    for case_id, anatomy, i, options in cases:
        phantom = make_phantom(
            test_set.phantom_shape, test_set.phantom_spacing, seed=test_set.phantom_seed * 1000 + i, anatomy=anatomy,
            **options,
        )  # fmt: skip
        write_phantom(phantom, data_dir / case_id)
        entries.append({"id": case_id, **{k: f"{case_id}/{k}.nii.gz" for k in ("water", "fat", "label")}})
        entries[-1]["image"] = f"{case_id}/inphase.nii.gz"
        if anatomy is not None:
            entries[-1]["annotated"] = phantom.truth["annotated"]
    datalist = data_dir / "datalist.json"
    datalist.write_text(json.dumps({"validation": entries}, indent=2), encoding="utf-8")
    return datalist


def evaluate(ckpt: Path, data_dir: Path, output_dir: Path, spacing: Sequence[float], options: dict) -> Path:
    """Run the bundle's evaluation of ``ckpt`` on the test set; returns its ``evaluation.csv``."""
    command = [
        sys.executable, "-m", "monai.bundle", "run", "evaluating",
        "--config_file", "['configs/inference.yaml','configs/evaluate.yaml']",
        "--dataset_dir", str(data_dir.resolve()),
        "--output_dir", str(output_dir.resolve()),
        "--ckpt_path", str(ckpt.resolve()),
        "--spacing", json.dumps([float(s) for s in spacing]),
        "--num_workers", "0",
        *(item for key, value in options.items() for item in (f"--{key}", str(value))),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE_ROOT, capture_output=True, text=True, encoding="utf-8")
    if result.returncode != 0:
        raise RuntimeError(f"evaluation of {ckpt} failed:\n{result.stderr[-3000:]}")
    return output_dir / "evaluation.csv"


def read_dice(evaluation_csv: Path) -> list[dict]:
    """(id, muscle, dice, whole-muscle and core fat-fraction difference in pp) of every scored row."""
    with evaluation_csv.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))

    def number(text: str) -> float:
        return float(text) if text not in ("", None) else float("nan")

    return [
        {
            "id": r["id"],
            "muscle": r["muscle"],
            "dice": number(r["dice"]),
            "ff_diff_pp": number(r["fat_fraction_diff_pp"]),
            "core_ff_diff_pp": number(r["core_fat_fraction_diff_pp"]),
        }
        for r in rows
    ]


def organ_overlap(eval_dir: Path, data_dir: Path) -> list[dict]:
    """Per upper-field case: predicted psoas, iliacus and QL voxels, how many of them lie inside a solid organ
    (liver, spleen, kidney) of the phantom's tissue map, and predicted iliacus voxels (none belong there)."""
    rows = []
    for tissue_file in sorted(data_dir.glob(f"{UPPER}*/tissue.nii.gz")):
        case_id = tissue_file.parent.name
        seg = np.asarray(nib.load(eval_dir / case_id / f"{case_id}_seg.nii.gz").dataobj)
        predicted = np.isin(seg, NOT_ON_ORGANS)
        inside = predicted & np.isin(np.asarray(nib.load(tissue_file).dataobj), SOLID_ORGANS)
        rows.append(
            {"id": case_id, "muscle_voxels": int(predicted.sum()), "in_organs": int(inside.sum()),
             "iliacus_voxels": int(np.isin(seg, (2, 6)).sum())}
        )  # fmt: skip
    return rows


def summary_row(rows: Sequence[dict], organ_rows: Sequence[dict] = ()) -> dict[str, str]:
    """The table cells of one model and option: ES+M Dice left / right per real contrast, the in-phase fat-fraction
    error, the mean Dice per muscle (both sides) over the new phantoms and, for the held-out maps cut to T11-L2,
    the share of predicted psoas, iliacus and QL voxels inside solid organs and the iliacus voxels found."""
    by_key = {(r["id"], r["muscle"]): r for r in rows}
    left, right = ABBREVIATIONS[4], ABBREVIATIONS[8]
    cells = {}
    for contrast in CONTRASTS:
        pair = [by_key.get((f"real_{contrast}", side)) for side in (left, right)]
        cells[contrast] = " / ".join(f"{p['dice']:.2f}" for p in pair) if all(pair) else "–"
    pair = [by_key.get(("real_inphase", side)) for side in (left, right)]
    cells["inphase FF error (pp)"] = " / ".join(f"{p['ff_diff_pp']:+.1f}" for p in pair) if all(pair) else "–"
    for prefix, column in (("phantom", "phantoms"), ("map_", "held-out map"), (UPPER, "T11-L2")):
        phantom_rows = [r for r in rows if r["id"].startswith(prefix)]
        for group, labels in GROUPS.items():
            names = {ABBREVIATIONS[m] for m in labels}
            values = [r["dice"] for r in phantom_rows if r["muscle"] in names and not np.isnan(r["dice"])]
            cells[f"{column} {group}"] = f"{np.mean(values):.2f}" if values else "–"
        values = [r["dice"] for r in phantom_rows if not np.isnan(r["dice"])]  # nan: not scored (ruled out)
        cells[f"{column} min"] = f"{np.min(values):.2f}" if values else "–"
    found = sum(r["muscle_voxels"] for r in organ_rows)
    in_organs = sum(r["in_organs"] for r in organ_rows)
    cells["T11-L2 P+I+QL in organs"] = f"{100 * in_organs / found:.1f} %" if found else "–"
    cells["T11-L2 I voxels"] = str(sum(r["iliacus_voxels"] for r in organ_rows)) if organ_rows else "–"
    return cells


def markdown(table: dict[str, dict[str, str]], first_column: str = "model / option") -> str:
    """One row per key of ``table`` (headed ``first_column``); the other columns in the order of its cells."""
    columns = list(next(iter(table.values())))
    lines = [f"| {first_column} | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    lines += [f"| {name} | " + " | ".join(cells[c] for c in columns) + " |" for name, cells in table.items()]
    return "\n".join(lines) + "\n"


def run(
    models: Sequence[tuple[str, Path]],
    options: Sequence[str],
    output_dir: Path,
    spacing: Sequence[float],
    test_set: ScoringSet,
) -> str:
    """Build the test set, evaluate every model with every option, write the CSVs and table; returns the table."""
    data_dir = output_dir / "data"
    build_test_set(data_dir, test_set)
    long_rows, organ_long_rows, table = [], [], {}
    runs = [(name, ckpt, option) for name, ckpt in models for option in options]
    for name, ckpt, option in tqdm(runs, desc="evaluations", unit="run"):
        eval_dir = output_dir / "eval" / f"{name}_{option}"
        rows = read_dice(evaluate(ckpt, data_dir, eval_dir, spacing, OPTIONS[option]))
        organ_rows = organ_overlap(eval_dir, data_dir)
        long_rows += [{"model": name, "option": option, **r} for r in rows]
        organ_long_rows += [{"model": name, "option": option, **r} for r in organ_rows]
        table[f"{name} / {option}"] = summary_row(rows, organ_rows)
    if organ_long_rows:
        write_csv_atomically(output_dir / "organs.csv", organ_long_rows, list(organ_long_rows[0]))
    write_csv_atomically(
        output_dir / "generalization.csv",
        long_rows,
        ("model", "option", "id", "muscle", "dice", "ff_diff_pp", "core_ff_diff_pp"),
    )
    text = markdown(table)
    write_atomically(output_dir / "generalization.md", lambda path: path.write_text(text, encoding="utf-8"))
    return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.tools.generalization", description=__doc__.split("\n\n")[0]
    )
    add = parser.add_argument
    add("--model", nargs=2, action="append", metavar=("NAME", "CKPT"), required=True, help="repeat for several models")
    add("--options", nargs="+", choices=list(OPTIONS), default=["none"], help="post-processing choices to score")
    add("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), help="training voxel size (default: metadata's)")
    parser.add_argument("--output_dir", type=Path, default=Path("generalization"))
    add_scoring_set_arguments(parser, phantom_seed=99)
    args = parser.parse_args(argv)
    for name, ckpt in args.model:
        if not Path(ckpt).is_file():
            parser.error(f"--model {name}: checkpoint not found: {ckpt}")
    if args.spacing is None:
        metadata = json.loads((BUNDLE_ROOT / "configs" / "metadata.json").read_text(encoding="utf-8"))
        args.spacing = metadata["training_spacing_mm"]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    models = [(name, Path(ckpt)) for name, ckpt in args.model]
    print(run(models, args.options, args.output_dir, args.spacing, scoring_set(args)))


if __name__ == "__main__":
    main()
