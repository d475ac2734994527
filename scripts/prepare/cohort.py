"""Turn a folder of raw subjects into a training-ready dataset: every subject registered to one reference subject.

    python -m monai.bundle run prepare --config_file configs/prepare.yaml --raw_dir RAW --dataset_dir OUT

``RAW/<subject>/`` holds ``inphase``, ``water``, ``fat``, ``outphase`` and ``label``, each a
``.nii.gz`` or ``.nii`` file or a folder holding one DICOM series; it needs ``inphase`` or both
``water`` and ``fat``, the rest is optional. The reference subject's in-phase image (water + fat
when absent) is resampled onto the target grid (its field of view at the target spacing); every
other subject's in-phase image is registered to that (``scripts.prepare.registration``), and all of the
subject's images and its label are moved by that one transform onto the same grid.

``OUT`` then holds ``<subject>/inphase.nii.gz`` (float32), ``water``/``fat``/``outphase`` where
given (float32) and ``label`` where given (uint8), ``registration.csv`` (one row per subject: status,
final metric, pose found, overlap of tissue classes and labels with the reference's before and after
registration, seconds, reason of a failure) and ``datalist.json``: the subjects that did not fail,
labelled ones split at random (``seed``) into training and validation, the others under testing.

Resuming: each file is written whole or not at all, and a subject counts as done when all its
outputs exist; a rerun does only the others and keeps the done subjects' rows of registration.csv.
``OUT/prepare.json`` records the reference and spacing, which fix the grid; a rerun with others is
refused rather than mixing two grids in one dataset.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from scripts.atomic import write_atomically, write_csv_atomically
from scripts.data.geometry import Grid
from scripts.data.image_checks import dicom_folder_problem, nifti_voxel_problem, sitk_image_problem
from scripts.errors import InputError
from scripts.labels import PUBLISHED_SPACING
from scripts.prepare.registration import Pose, RegistrationCheck, RigidRegistration, resample, target_grid

logger = logging.getLogger(__name__)

INPUT_NAMES = ("inphase", "water", "fat", "outphase", "label")  # the first present of inphase/water sets the header
NIFTI_SUFFIXES = (".nii.gz", ".nii")
REGISTERED, REFERENCE, SKIPPED, FAILED = "registered", "reference", "skipped", "failed"
CSV_COLUMNS = (
    "subject",
    "status",
    "metric",
    "angle_x_deg",
    "angle_y_deg",
    "angle_z_deg",
    "translation_x_mm",
    "translation_y_mm",
    "translation_z_mm",
    "tissue_dice_before",
    "tissue_dice_after",
    "label_dice_before",
    "label_dice_after",
    "seconds",
    "reason",
)


class PrepareError(InputError):
    """The cohort could not be prepared in full; the message names the subjects and why."""


def find_inputs(subject_dir: Path) -> dict[str, list[Path]]:
    """Every file or DICOM folder in ``subject_dir`` named like each input (several means ambiguous)."""
    found = {}
    for name in INPUT_NAMES:
        files, folder = [subject_dir / f"{name}{suffix}" for suffix in NIFTI_SUFFIXES], subject_dir / name
        paths = [path for path in files if path.is_file()] + ([folder] if folder.is_dir() else [])
        if paths:
            found[name] = paths
    return found


def read_image(path: Path, pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
    """One 3-D image from a NIfTI file or a DICOM series folder, as ``pixel_type``; errors name the path."""
    if path.is_dir() and (problem := dicom_folder_problem(path)):
        raise InputError(problem)
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path)))
            reader.SetOutputPixelType(pixel_type)
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path), pixel_type)
    except RuntimeError as error:  # SimpleITK's message starts with its own source location, then the reason
        reason = " ".join(str(error).split("sitk::ERROR:")[-1].split())
        raise InputError(f"{path} cannot be read as an image: {reason}") from error
    if problem := (path.is_file() and nifti_voxel_problem(path)) or sitk_image_problem(image):
        raise InputError(f"{path} {problem}")
    return image


def match_first_header(images: dict[str, sitk.Image], sources: dict[str, Path]) -> None:
    """Give every image the header of the first one where both hold the same voxels, in place.

    The rule of ``scripts.data.geometry.Grid.header_difference`` (as ``MatchCaseGeometryd``), on
    SimpleITK images: a remaining header difference (typically an origin of zero in one export)
    is logged and overwritten; files that truly differ refuse the subject. Voxel data is untouched.
    """
    first_name, first = next(iter(images.items()))
    first_grid = sitk_grid(first)
    for name, image in list(images.items())[1:]:
        names = f"{name} {sources[name]} vs {first_name} {sources[first_name]}"
        difference = sitk_grid(image).header_difference(first_grid, names)
        if difference:
            logger.warning("%s; using %s's", difference, first_name)
        image.CopyInformation(first)


def sitk_grid(image: sitk.Image) -> Grid:
    return Grid(
        image.GetSize(),
        np.asarray(image.GetSpacing()),
        np.asarray(image.GetDirection()).reshape(3, 3),
        np.asarray(image.GetOrigin()),
    )


def read_subject(subject_dir: Path) -> dict[str, sitk.Image]:
    """A subject's images (float32) and label (as stored) on one header, with ``inphase`` = water + fat when
    not given. Raises ``InputError`` naming the problem for ambiguous, missing, unreadable or unusable inputs."""
    inputs = find_inputs(subject_dir)
    ambiguous = [f"{name}: {', '.join(p.name for p in paths)}" for name, paths in inputs.items() if len(paths) > 1]
    if ambiguous:
        raise InputError(f"{subject_dir}: more than one input of the same name ({'; '.join(ambiguous)})")
    if "inphase" not in inputs and not {"water", "fat"} <= inputs.keys():
        raise InputError(f"{subject_dir}: needs inphase or both water and fat (found: {sorted(inputs) or 'nothing'})")
    sources = {name: paths[0] for name, paths in inputs.items()}
    images = {
        name: read_image(path, sitk.sitkUnknown if name == "label" else sitk.sitkFloat32)
        for name, path in sources.items()
    }
    match_first_header(images, sources)
    if "label" in images:
        extremes = sitk.MinimumMaximumImageFilter()
        extremes.Execute(images["label"])
        if extremes.GetMinimum() < 0 or extremes.GetMaximum() > 255:  # stored as uint8
            found = f"{extremes.GetMinimum():g}..{extremes.GetMaximum():g}"
            raise InputError(f"{sources['label']}: label values must lie in 0..255, found {found}")
    if "inphase" not in images:
        images = {"inphase": images["water"] + images["fat"], **images}
    return images


def write_image(image: sitk.Image, path: Path) -> None:
    """Write ``image`` to ``path`` in the format its extension names."""
    sitk.WriteImage(image, str(path))


def output_names(subject_dir: Path) -> list[str]:
    """The files a subject gets in the dataset: ``inphase`` always, and each other input it has."""
    return ["inphase", *(name for name in find_inputs(subject_dir) if name != "inphase")]


@dataclass(frozen=True)
class SubjectPreparation:
    """Prepare one subject (a callable, so a process pool can run it): read, register, resample, write.

    The reference subject is only resampled, with no motion, onto the target grid; every other subject is
    registered to the reference's prepared in-phase image, which also gives the grid. A subject fails,
    with nothing written, when it cannot be read or registered, when its final metric is above
    ``metric_threshold``, or when ``check`` finds the pose impossible (too large a rotation or shift, or tissues
    or labels that overlap less than with no registration). Returns its registration.csv row.
    """

    raw_dir: Path
    dataset_dir: Path
    reference: str
    spacing: Sequence[float] = PUBLISHED_SPACING
    registration: RigidRegistration = field(default_factory=RigidRegistration)
    metric_threshold: float = -0.05
    check: RegistrationCheck = field(default_factory=RegistrationCheck)

    def output(self, subject: str, name: str) -> Path:
        return self.dataset_dir / subject / f"{name}.nii.gz"

    def is_complete(self, subject: str) -> bool:
        return all(self.output(subject, name).is_file() for name in output_names(self.raw_dir / subject))

    def labels(self, images: dict[str, sitk.Image]) -> dict[str, sitk.Image]:
        """The prepared reference's label and this subject's, for ``check``, when both exist."""
        reference_label = self.output(self.reference, "label")
        if "label" not in images or not reference_label.is_file():
            return {}
        return {"fixed_label": sitk.ReadImage(str(reference_label)), "moving_label": images["label"]}

    def __call__(self, subject: str) -> dict:
        start = time.perf_counter()
        row: dict = {"subject": subject, "status": REFERENCE if subject == self.reference else REGISTERED}
        try:
            images = read_subject(self.raw_dir / subject)
            if subject == self.reference:
                grid, transform, metric = target_grid(images["inphase"], self.spacing), sitk.Euler3DTransform(), None
            else:
                grid = sitk.ReadImage(str(self.output(self.reference, "inphase")), sitk.sitkFloat32)
                transform, metric = self.registration(grid, images["inphase"])
                row["metric"] = round(metric, 4)
            row.update(pose_columns(Pose.of(transform)))
            reasons = []
            if metric is not None:
                checked = self.check(grid, images["inphase"], transform, **self.labels(images))
                row.update({key: round(value, 4) for key, value in checked.items() if key != "reason"})
                if not metric <= self.metric_threshold:  # a NaN metric fails too
                    reasons.append(f"final metric {metric:.4f} is above {self.metric_threshold}")
                reasons += [checked["reason"]] if checked["reason"] else []
            if reasons:
                row.update(status=FAILED, reason="; ".join(reasons))
            else:
                for name, image in images.items():
                    moved = resample(image, grid, transform, is_label=name == "label")
                    write_atomically(self.output(subject, name), partial(write_image, moved))
        except Exception as error:  # one bad subject must not stop the cohort: its reason goes to registration.csv
            row.update(status=FAILED, reason=f"{type(error).__name__}: {error}")
        row["seconds"] = round(time.perf_counter() - start, 1)
        return row


def pose_columns(pose: Pose) -> dict[str, float]:
    """The registration.csv columns of a pose, rounded to a thousandth of a degree or millimetre."""
    angles = {f"angle_{axis}_deg": round(a, 3) for axis, a in zip("xyz", pose.angles_deg, strict=True)}
    return angles | {f"translation_{axis}_mm": round(t, 3) for axis, t in zip("xyz", pose.translation_mm, strict=True)}


def read_log(path: Path) -> dict[str, dict]:
    """The rows of an earlier registration.csv by subject (none if there is no such file)."""
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        return {row["subject"]: row for row in csv.DictReader(f)}


def write_log(path: Path, rows: dict[str, dict]) -> None:
    """Write registration.csv, one row per subject in sorted order."""
    write_csv_atomically(path, (rows[subject] for subject in sorted(rows)), CSV_COLUMNS)


def check_grid_settings(dataset_dir: Path, reference: str, spacing: Sequence[float]) -> None:
    """Record the settings that fix the grid in ``prepare.json``, refusing a folder prepared with others."""
    settings = {"reference": reference, "spacing": [float(s) for s in spacing]}
    path = dataset_dir / "prepare.json"
    if path.is_file() and (previous := json.loads(path.read_text(encoding="utf-8"))) != settings:
        raise PrepareError(
            f"{dataset_dir} was prepared with {previous}, not {settings}; outputs on two grids cannot share a "
            "dataset. Choose another --dataset_dir, or delete this one."
        )
    write_atomically(path, lambda temporary: temporary.write_text(json.dumps(settings, indent=1), encoding="utf-8"))


def split_datalist(entries: dict[str, dict], validation_fraction: float, seed: int) -> dict[str, list[dict]]:
    """Labelled entries drawn at random (``seed``) into validation (``validation_fraction`` of them, at least one
    and leaving one for training when there are two or more) and training; unlabelled entries under testing."""
    labelled = sorted(subject for subject, entry in entries.items() if "label" in entry)
    random.Random(seed).shuffle(labelled)
    n = len(labelled)
    n_validation = min(n - 1, max(1, round(validation_fraction * n))) if n > 1 else 0
    sections = {"training": labelled[n_validation:], "validation": labelled[:n_validation]}
    sections["testing"] = [subject for subject, entry in entries.items() if "label" not in entry]
    return {section: [entries[subject] for subject in sorted(subjects)] for section, subjects in sections.items()}


def datalist_entry(subject: str, names: Sequence[str]) -> dict[str, str]:
    """A decathlon-style entry with paths relative to the dataset folder; ``image`` is the in-phase image."""
    return {"id": subject, **{"image" if name == "inphase" else name: f"{subject}/{name}.nii.gz" for name in names}}


def prepare_cohort(
    raw_dir: str | Path,
    dataset_dir: str | Path,
    reference: str | None = None,
    spacing: Sequence[float] = PUBLISHED_SPACING,
    registration: RigidRegistration | None = None,
    metric_threshold: float = -0.05,
    check: RegistrationCheck | None = None,
    num_workers: int = 2,
    seed: int = 0,
    validation_fraction: float = 0.3,
) -> Path:
    """Prepare every subject folder of ``raw_dir`` into ``dataset_dir`` (see the module docstring).

    The reference (default: the first subject in sorted order) is prepared first; the other subjects
    not yet done are registered in ``num_workers`` processes. registration.csv is rewritten after each
    subject, datalist.json at the end, listing every subject whose outputs are complete. Returns the
    datalist path; raises ``PrepareError`` naming the failed subjects after all others are done.
    """
    raw_dir, dataset_dir = Path(raw_dir), Path(dataset_dir)
    subjects = sorted(p.name for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subjects:
        raise PrepareError(f"{raw_dir} holds no subject folders")
    reference = subjects[0] if reference is None else str(reference)
    if reference not in subjects:
        raise PrepareError(f"reference {reference!r} is not a subject folder of {raw_dir}")
    check_grid_settings(dataset_dir, reference, spacing)
    prepare = SubjectPreparation(
        raw_dir,
        dataset_dir,
        reference,
        tuple(spacing),
        registration or RigidRegistration(seed=seed),
        metric_threshold,
        check or RegistrationCheck(),
    )
    log = dataset_dir / "registration.csv"
    previous = read_log(log)
    rows = {s: previous.get(s, {"subject": s, "status": SKIPPED}) for s in subjects if prepare.is_complete(s)}
    todo = [s for s in subjects if s not in rows]
    logger.info("%d of %d subjects already prepared in %s", len(rows), len(subjects), dataset_dir)

    if reference in todo:  # every other subject is registered to the reference's prepared in-phase image
        rows[reference] = prepare(reference)
        write_log(log, rows)
        if rows[reference]["status"] == FAILED:
            raise PrepareError(f"reference subject {reference} failed: {rows[reference]['reason']}")
    others = [s for s in todo if s != reference]
    threads = max(1, (os.cpu_count() or 1) // num_workers)  # the workers share the cores
    with ProcessPoolExecutor(
        num_workers, initializer=sitk.ProcessObject.SetGlobalDefaultNumberOfThreads, initargs=(threads,)
    ) as pool:
        futures = [pool.submit(prepare, subject) for subject in others]
        for future in tqdm(as_completed(futures), total=len(futures), desc="registration", unit="subject"):
            row = future.result()
            rows[row["subject"]] = row
            write_log(log, rows)  # after each subject, so that an interrupted run keeps the rows of those done

    entries = {s: datalist_entry(s, output_names(raw_dir / s)) for s in subjects if prepare.is_complete(s)}
    datalist = dataset_dir / "datalist.json"
    sections = split_datalist(entries, validation_fraction, seed)
    write_atomically(datalist, lambda temporary: temporary.write_text(json.dumps(sections, indent=1), encoding="utf-8"))
    failed = {s: row["reason"] for s, row in rows.items() if row["status"] == FAILED}
    if failed:
        reasons = "\n  ".join(f"{s}: {reason}" for s, reason in failed.items())
        raise PrepareError(f"{len(failed)} of {len(subjects)} subjects failed (see {log}):\n  {reasons}")
    return datalist
