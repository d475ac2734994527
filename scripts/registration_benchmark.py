"""Measure prepare's registration on a phantom cohort whose right answers are known.

    python -m scripts.registration_benchmark OUT [--shape X Y Z] [--spacing X Y Z] [-- prepare overrides ...]

Writes ``OUT/raw/``: the reference phantom ``sub01``; five phantoms of other subjects (``--seeds``; body sizes
0.81-1.24 against the reference's 1.00), each moved further by up to ``--max_degrees`` about a random axis and
``--max_shift_mm`` in a random direction; and three copies of the reference moved by known rigid transforms
(``COPY_MOTIONS``). Then runs ``python -m monai.bundle run prepare --config_file configs/prepare.yaml`` on it into
``OUT/data`` (any arguments after ``--`` are passed on), and scores every subject: the mean muscle Dice of its label
to the reference's on the reference's grid before registration (its scan as placed in the world) and after (the
prepared label; for a failed subject, its label moved by the pose registration.csv reports), and for each copy
the error of the pose found. Prints one Markdown table and writes it to ``OUT/registration_benchmark.md``.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.metrics import compute_dice
from monai.networks.utils import one_hot

from scripts.labels import NUM_CLASSES
from scripts.phantom import make_phantom, write_phantom
from scripts.prepare import read_log
from scripts.registration import LPS_TO_RAS, resample

REFERENCE_SEED = 1
# Seeds of phantoms whose body sizes span the generator's range: 0.81, 0.88, 1.05, 1.18, 1.24 (the reference 1.00).
SUBJECT_SEEDS = (18, 0, 7, 5, 16)
# Known motions of the reference copies: RAS Euler angles (deg, about the field of view's centre) and shift (mm).
COPY_MOTIONS = {
    "copy1": ((0.0, 0.0, 4.0), (6.0, -4.0, 3.0)),
    "copy2": ((3.0, -2.0, -6.0), (-5.0, 3.0, -2.0)),
    "copy3": ((-2.0, 4.0, 2.0), (2.0, 5.0, -4.0)),
}
NAMES = ("inphase", "water", "fat", "label")


def rigid_transform(angles_deg: Sequence[float], shift_mm: Sequence[float], centre: Sequence[float]) -> sitk.Transform:
    """The Euler 3D transform of RAS angles (deg) about ``centre`` (LPS, mm) and RAS shift (mm) of that centre."""
    angles = np.radians(angles_deg) * LPS_TO_RAS
    return sitk.Euler3DTransform(list(centre), *angles.tolist(), (np.asarray(shift_mm) * LPS_TO_RAS).tolist())


def random_motion(rng: np.random.Generator, max_degrees: float, max_shift_mm: float) -> sitk.Transform:
    """A rotation by up to ``max_degrees`` about a random axis through world (0, 0, 0), then a shift of up to
    ``max_shift_mm`` in a random direction."""
    axis, direction = rng.normal(size=3), rng.normal(size=3)
    angle = math.radians(rng.uniform(-max_degrees, max_degrees))
    shift = direction / np.linalg.norm(direction) * rng.uniform(0, max_shift_mm)
    transform = sitk.VersorRigid3DTransform()
    transform.SetRotation((axis / np.linalg.norm(axis)).tolist(), angle)
    transform.SetTranslation(shift.tolist())
    return transform


def write_moved(source: Path, target: Path, motion: sitk.Transform) -> None:
    """The images and label of ``source`` moved by ``motion`` (what was at p is then at motion(p)), on their grid."""
    target.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        image = sitk.ReadImage(str(source / f"{name}.nii.gz"))
        sitk.WriteImage(resample(image, image, motion.GetInverse(), name == "label"), str(target / f"{name}.nii.gz"))


def write_cohort(raw: Path, shape: Sequence[int], spacing: Sequence[float], args: argparse.Namespace) -> None:
    phantoms = raw.parent / "phantoms"
    rng = np.random.default_rng(args.seed)
    write_phantom(make_phantom(shape, spacing, seed=REFERENCE_SEED), phantoms / "sub01")
    write_moved(phantoms / "sub01", raw / "sub01", sitk.Euler3DTransform())
    for i, seed in enumerate(args.seeds, start=2):
        write_phantom(make_phantom(shape, spacing, seed=seed), phantoms / f"sub{i:02d}")
        write_moved(
            phantoms / f"sub{i:02d}", raw / f"sub{i:02d}", random_motion(rng, args.max_degrees, args.max_shift_mm)
        )
    for name, (angles, shift) in COPY_MOTIONS.items():
        write_moved(phantoms / "sub01", raw / name, rigid_transform(angles, shift, (0.0, 0.0, 0.0)))


def mean_muscle_dice(label: sitk.Image, reference: sitk.Image) -> float:
    """Mean Dice of the eight muscles between two labels on one grid."""
    arrays = (sitk.GetArrayFromImage(image).astype(np.int64) for image in (label, reference))
    onehot = [one_hot(torch.as_tensor(a[None, None]), NUM_CLASSES) for a in arrays]
    return float(compute_dice(*onehot, include_background=False).nanmean())


def score(out: Path, name: str) -> list[dict]:
    """One row per subject of ``OUT/data/registration.csv``: status, Dice before and after, pose and its error."""
    data = out / name
    reference = sitk.ReadImage(str(data / "sub01" / "label.nii.gz"))
    centre = reference.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in reference.GetSize()])
    rows = []
    for subject, row in sorted(read_log(data / "registration.csv").items()):
        label = sitk.ReadImage(str(out / "raw" / subject / "label.nii.gz"))
        angles = [float(row[f"angle_{axis}_deg"] or 0) for axis in "xyz"]
        shift = [float(row[f"translation_{axis}_mm"] or 0) for axis in "xyz"]
        prepared = data / subject / "label.nii.gz"
        after = (
            sitk.ReadImage(str(prepared))
            if prepared.is_file()
            else resample(label, reference, rigid_transform(angles, shift, centre), is_label=True)
        )
        scored = {
            "subject": subject,
            "status": row["status"],
            "dice_before": mean_muscle_dice(resample(label, reference, sitk.Euler3DTransform(), True), reference),
            "dice_after": mean_muscle_dice(after, reference),
            "angles_deg": angles,
            "translation_mm": shift,
            "reason": row.get("reason", ""),
        }
        if subject in COPY_MOTIONS:
            true_angles, true_shift = COPY_MOTIONS[subject]
            scored["angle_error_deg"] = float(np.max(np.abs(np.subtract(angles, true_angles))))
            scored["shift_error_mm"] = float(np.linalg.norm(np.subtract(shift, true_shift)))
        rows.append(scored)
    return rows


def table(rows: list[dict]) -> str:
    def numbers(values: Sequence[float]) -> str:
        return " ".join(f"{v:+.1f}" for v in values)

    lines = [
        "| subject | status | muscle Dice before | after | angles x y z (deg) | translation x y z (mm) | "
        "pose error (deg, mm) | reason |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        error = f"{r['angle_error_deg']:.2f}, {r['shift_error_mm']:.2f}" if "angle_error_deg" in r else ""
        lines.append(
            f"| {r['subject']} | {r['status']} | {r['dice_before']:.3f} | {r['dice_after']:.3f} | "
            f"{numbers(r['angles_deg'])} | {numbers(r['translation_mm'])} | {error} | {r['reason']} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.registration_benchmark", description=__doc__.split("\n")[0]
    )
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--shape", type=int, nargs=3, default=(200, 160, 72), metavar=("X", "Y", "Z"))
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.875, 1.875, 3.9), metavar=("X", "Y", "Z"))
    parser.add_argument("--seeds", type=int, nargs=5, default=SUBJECT_SEEDS, help="phantom seeds of the 5 subjects")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subjects' extra motions")
    parser.add_argument("--max_degrees", type=float, default=7.0)
    parser.add_argument("--max_shift_mm", type=float, default=3.0)
    parser.add_argument("--name", default="data", help="folder of OUT that prepare writes (resumes if present)")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    return parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv), extra


def main(argv: Sequence[str] | None = None) -> None:
    args, overrides = parse_args(argv)
    raw = args.out / "raw"
    if not raw.is_dir():
        write_cohort(raw, args.shape, args.spacing, args)
    prepare = [sys.executable, "-m", "monai.bundle", "run", "prepare", "--config_file", "configs/prepare.yaml"]
    prepare += ["--raw_dir", str(raw), "--dataset_dir", str(args.out / args.name), "--reference", "sub01"]
    prepare += ["--spacing", str(list(args.spacing)), *overrides]
    result = subprocess.run(prepare, cwd=Path(__file__).resolve().parents[1], check=False)
    report = f"prepare exit status {result.returncode}\n\n{table(score(args.out, args.name))}\n"
    (args.out / f"{args.name}_benchmark.md").write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
