"""Measure prepare's registration on a phantom cohort whose right answers are known.

    python -m scripts.tools.registration_benchmark OUT [--shape X Y Z] [--spacing X Y Z] [--unlabelled] [--name NAME]
        [-- prepare overrides ...]

Writes ``OUT/raw/``: the reference phantom ``sub01``; five phantoms of other subjects (``SUBJECT_SEEDS``: body
sizes 0.81-1.24 against the reference's 1.00), each moved further by up to 7 degrees about a random axis and 3 mm
in a random direction; and three copies of the reference moved by known rigid transforms (``COPY_MOTIONS``); each
with in-phase, water and fat images and, unless ``--unlabelled``, its label (the labels are kept in
``OUT/truth/`` either way). Then runs ``python -m monai.bundle run prepare --config_file configs/prepare.yaml`` on
it into ``OUT/NAME`` (arguments after ``--`` are passed on) and scores every subject: the mean muscle Dice of its
label to the reference's on the prepared grid before registration (its scan as its header places it in the
world) and after (moved by the pose registration.csv reports, whether the subject passed or failed), and for each
copy the error of the pose found. Prints one Markdown table and writes it to ``OUT/NAME.md``.
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

from scripts import BUNDLE_ROOT
from scripts.labels import NUM_CLASSES
from scripts.phantom import make_phantom, write_phantom
from scripts.prepare.cohort import read_log
from scripts.prepare.registration import Pose, field_of_view_centre, resample

REFERENCE_SEED = 1
# Seeds of phantoms whose body sizes span the generator's range: 0.81, 0.88, 1.05, 1.18, 1.24 (the reference 1.00).
SUBJECT_SEEDS = (18, 0, 7, 5, 16)
# Known motions of the reference's copies, about the centre of its field of view (RAS).
COPY_MOTIONS = {
    "copy1": Pose((0.0, 0.0, 4.0), (6.0, -4.0, 3.0)),
    "copy2": Pose((3.0, -2.0, -6.0), (-5.0, 3.0, -2.0)),
    "copy3": Pose((-2.0, 4.0, 2.0), (2.0, 5.0, -4.0)),
}
IMAGES = ("inphase", "water", "fat")
POSE_COLUMNS = (("angle", "deg"), ("translation", "mm"))  # registration.csv: angle_x_deg, ..., translation_z_mm


def random_motion(rng: np.random.Generator, max_degrees: float, max_shift_mm: float) -> sitk.Transform:
    """A rotation by up to ``max_degrees`` about a random axis through world (0, 0, 0), then a shift of up to
    ``max_shift_mm`` in a random direction."""
    axis, direction = rng.normal(size=3), rng.normal(size=3)
    transform = sitk.VersorRigid3DTransform()
    transform.SetRotation((axis / np.linalg.norm(axis)).tolist(), math.radians(rng.uniform(-max_degrees, max_degrees)))
    transform.SetTranslation((direction / np.linalg.norm(direction) * rng.uniform(0, max_shift_mm)).tolist())
    return transform


def write_moved(source: Path, out: Path, subject: str, motion: sitk.Transform, labelled: bool) -> None:
    """The images and label of phantom ``source`` moved by ``motion`` (what was at p is then at motion(p)), on
    their own grid, into ``out/raw/<subject>/``; the label also into ``out/truth/<subject>/``."""
    for name in (*IMAGES, "label"):
        image = sitk.ReadImage(str(source / f"{name}.nii.gz"))
        moved = resample(image, image, motion.GetInverse(), is_label=name == "label")
        for folder in (["raw"] if name != "label" else ["truth", "raw"] if labelled else ["truth"]):
            (out / folder / subject).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(moved, str(out / folder / subject / f"{name}.nii.gz"))


def write_cohort(
    out: Path,
    shape: Sequence[int],
    spacing: Sequence[float],
    seeds: Sequence[int] = SUBJECT_SEEDS,
    labelled: bool = True,
    motion_seed: int = 0,
    max_degrees: float = 7.0,
    max_shift_mm: float = 3.0,
) -> None:
    """The cohort of the module docstring: phantoms of ``shape`` voxels of ``spacing`` mm, subjects of ``seeds``."""
    rng = np.random.default_rng(motion_seed)
    phantoms = out / "phantoms"
    write_phantom(make_phantom(shape, spacing, seed=REFERENCE_SEED), phantoms / "sub01")
    write_moved(phantoms / "sub01", out, "sub01", sitk.Euler3DTransform(), labelled)
    for i, seed in enumerate(seeds, start=2):
        write_phantom(make_phantom(shape, spacing, seed=seed), phantoms / f"sub{i:02d}")
        write_moved(
            phantoms / f"sub{i:02d}", out, f"sub{i:02d}", random_motion(rng, max_degrees, max_shift_mm), labelled
        )
    for subject, pose in COPY_MOTIONS.items():
        write_moved(phantoms / "sub01", out, subject, pose.transform((0.0, 0.0, 0.0)), labelled)


def mean_muscle_dice(label: sitk.Image, reference: sitk.Image) -> float:
    """Mean Dice of the eight muscles between two labels on one grid."""
    arrays = (sitk.GetArrayFromImage(image).astype(np.int64) for image in (label, reference))
    onehot = [one_hot(torch.as_tensor(a[None, None]), NUM_CLASSES) for a in arrays]
    return float(compute_dice(*onehot, include_background=False).nanmean())


def score(out: Path, name: str) -> list[dict]:
    """One row per subject of ``OUT/NAME/registration.csv``: its status, muscle Dice before and after, the pose
    found and, for a copy of the reference, that pose's error."""
    grid = sitk.ReadImage(str(out / name / "sub01" / "inphase.nii.gz"))
    centre, identity = field_of_view_centre(grid), sitk.Euler3DTransform()

    def truth(subject: str) -> sitk.Image:
        return sitk.ReadImage(str(out / "truth" / subject / "label.nii.gz"))

    reference = resample(truth("sub01"), grid, identity, is_label=True)
    rows = []
    for subject, row in sorted(read_log(out / name / "registration.csv").items()):
        pose = Pose(*([float(row[f"{kind}_{axis}_{unit}"] or 0) for axis in "xyz"] for kind, unit in POSE_COLUMNS))
        label = truth(subject)
        scored = {
            "subject": subject,
            "status": row["status"],
            "dice_before": mean_muscle_dice(resample(label, grid, identity, is_label=True), reference),
            "dice_after": mean_muscle_dice(resample(label, grid, pose.transform(centre), is_label=True), reference),
            "pose": pose,
            "reason": row.get("reason") or "",
        }
        if subject in COPY_MOTIONS:
            scored["angle_error_deg"] = float(
                np.max(np.abs(np.subtract(pose.angles_deg, COPY_MOTIONS[subject].angles_deg)))
            )
            scored["shift_error_mm"] = float(
                np.linalg.norm(np.subtract(pose.translation_mm, COPY_MOTIONS[subject].translation_mm))
            )
        rows.append(scored)
    return rows


def table(rows: list[dict]) -> str:
    """``score``'s rows as a Markdown table."""

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
            f"{numbers(r['pose'].angles_deg)} | {numbers(r['pose'].translation_mm)} | {error} | {r['reason']} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """This command's arguments, and those after ``--`` for prepare."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.tools.registration_benchmark", description=__doc__.split("\n")[0]
    )
    parser.add_argument("out", type=Path, help="output folder (created); a cohort already there is reused")
    parser.add_argument("--shape", type=int, nargs=3, default=(200, 160, 72), metavar=("X", "Y", "Z"))
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.875, 1.875, 3.9), metavar=("X", "Y", "Z"))
    parser.add_argument("--unlabelled", action="store_true", help="give prepare the images only")
    parser.add_argument("--name", default="data", help="folder of OUT that prepare writes (resumes if present)")
    split = argv.index("--") if "--" in argv else len(argv)
    return parser.parse_args(argv[:split]), argv[split + 1 :]


def main(argv: Sequence[str] | None = None) -> None:
    args, overrides = parse_args(list(sys.argv[1:] if argv is None else argv))
    if not (args.out / "raw").is_dir():
        write_cohort(args.out, args.shape, args.spacing, labelled=not args.unlabelled)
    prepare = [sys.executable, "-m", "monai.bundle", "run", "prepare", "--config_file", "configs/prepare.yaml"]
    prepare += ["--raw_dir", str(args.out / "raw"), "--dataset_dir", str(args.out / args.name), "--reference", "sub01"]
    prepare += ["--spacing", str(list(args.spacing)), *overrides]
    result = subprocess.run(prepare, cwd=BUNDLE_ROOT, check=False)
    report = f"prepare exit status {result.returncode}\n\n{table(score(args.out, args.name))}\n"
    (args.out / f"{args.name}.md").write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
