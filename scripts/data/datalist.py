"""Read a decathlon-style ``datalist.json`` and check every entry before any work starts.

Checked up front, for every section a command uses at once: the JSON, the sections, each entry's keys, that
every file exists, that a folder given as an image holds exactly one DICOM series, and that every label file's
values fit its label map and its header its image.

MONAI's ``load_decathlon_datalist`` joins only ``image`` and ``label`` to the base folder;
this bundle's entries also carry ``water``, ``fat`` and ``outphase`` paths, and a user
should see every broken entry at once rather than one crash per run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm import tqdm

from scripts.data.geometry import Grid
from scripts.data.image_checks import dicom_folder_problem
from scripts.errors import InputError
from scripts.labels import label_file_problems

# Keys whose values are paths relative to the dataset folder.
IMAGE_KEYS: tuple[str, ...] = ("image", "outphase", "water", "fat", "label", "tissue")
# Partial-label keys that a section may give all its entries at once.
SHARED_KEYS: tuple[str, ...] = ("label_map", "annotated")


class DatalistError(InputError):
    """A datalist that cannot be used; the message lists every problem found, grouped by file."""


# A problem: the file it concerns (None for the entry itself) and what is wrong, with the entry it came from.
Problem = tuple[str | None, str]


def _section_entries(section: Any) -> tuple[Any, dict]:
    """A section's entries and the keys it gives every entry.

    A section is a list of entries, or an object ``{"label_map": ..., "annotated": ...,
    "entries": [...]}`` whose ``label_map``/``annotated`` apply to each entry lacking its own.
    """
    if isinstance(section, dict):
        return section.get("entries"), {k: section[k] for k in SHARED_KEYS if k in section}
    return section, {}


def _entry_problems(entry: Any, where: str, need_label: bool) -> list[Problem]:
    """Everything wrong with one entry's keys and files (already resolved to absolute paths)."""
    if not isinstance(entry, dict):
        return [(None, f"{where}: expected an object, got {type(entry).__name__}")]
    problems: list[Problem] = []
    if "id" not in entry:
        problems.append((None, f"{where}: no 'id'"))
    if "image" not in entry and not ("water" in entry and "fat" in entry):
        problems.append((None, f"{where}: needs 'image' (in-phase) or both 'water' and 'fat'"))
    if need_label and "label" not in entry:
        problems.append((None, f"{where}: no 'label' (required in '{where.split('[')[0]}')"))
    for key in IMAGE_KEYS:
        if key not in entry:
            continue
        path = Path(entry[key])
        if not path.exists():
            problems.append((str(path), f"{where}: {key} file not found"))
        elif path.is_dir() and (problem := dicom_folder_problem(path)):
            problems.append((str(path), f"{where}: {key}: {problem}"))
    return problems


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".nii", ".nii.gz"))


def _label_problems(entry: dict, where: str) -> list[Problem]:
    """A NIfTI label file's values against its entry's label map, and its header against the entry's first image
    (``image``, else ``water``; the rule of ``geometry.Grid``). DICOM files are checked when they are loaded."""
    label = Path(entry["label"])
    if not _is_nifti(label):
        return []
    try:
        nifti = nib.load(label)
        values = {int(v) for v in np.unique(np.asarray(nifti.dataobj))}
    except Exception as error:  # a truncated or foreign file: name it, keep the reader's words
        return [(str(label), f"{where}: cannot be read as an image ({type(error).__name__}: {error})")]
    problems = [
        (str(label), f"{where}: {problem}")
        for problem in label_file_problems(values, entry.get("label_map"), entry.get("annotated"))
    ]
    reference = Path(entry["image"] if "image" in entry else entry["water"])
    if _is_nifti(reference) and len(nifti.shape) == 3:
        try:
            header = nib.load(reference)
            Grid.from_affine(nifti.shape, nifti.affine).header_difference(
                Grid.from_affine(header.shape, header.affine), f"does not lie on the voxels of {reference}"
            )
        except InputError as error:
            problems.append((str(label), f"{where}: {error}"))
        except Exception:  # an unreadable image is reported when it is loaded
            pass
    return problems


def _report(datalist: str | Path, problems: list[Problem]) -> str:
    """Every problem, grouped under the file it concerns; problems of the entries themselves first."""
    groups: dict[str, list[str]] = {}
    for path, text in problems:
        groups.setdefault(path or f"{datalist} (entries)", []).append(text)
    lines = [f"{datalist}: {len(problems)} problem(s); nothing was run. Fix them all, then run again."]
    for path, texts in groups.items():
        lines += [f"  {path}", *(f"    - {text}" for text in texts)]
    return "\n".join(lines)


def _section_problems(section: str, resolved: list) -> list[Problem]:
    """Every problem of one section's entries (paths already absolute): keys, files, ids, label files."""
    wheres = [
        f"{section}[{i}]" + (f" ({e.get('id', 'no id')})" if isinstance(e, dict) else "")
        for i, e in enumerate(resolved)
    ]
    need_label = section in ("training", "validation")
    entry_problems = [_entry_problems(e, w, need_label) for e, w in zip(resolved, wheres)]
    problems = [p for found in entry_problems for p in found]
    ids = [e.get("id") for e in resolved if isinstance(e, dict)]
    problems += [
        (None, f"{section}: id '{i}' appears more than once") for i in sorted({i for i in ids if ids.count(i) > 1})
    ]
    labelled = [(e, w) for e, w, found in zip(resolved, wheres, entry_problems) if not found and "label" in e]
    for entry, where in tqdm(labelled, desc=f"checking {section} labels", unit="case", disable=len(labelled) <= 5):
        problems += _label_problems(entry, where)
    return problems


def load_cohort(
    datalist: str | Path, sections: Sequence[str], dataset_dir: str | Path | None = None
) -> dict[str, list[dict]]:
    """The entries of each of ``sections``, image paths made absolute, after checking all of them at once.

    Paths are relative to ``dataset_dir`` (default: the datalist's folder). Sections ``training`` and
    ``validation`` must carry labels, and every NIfTI label file is read once: its values must fit its entry's
    label map and its header the entry's image. Raises ``DatalistError`` listing every problem of every section,
    grouped by file; a progress bar shows the label checks of cohorts of more than a few cases.
    """
    datalist = Path(datalist)
    base = Path(dataset_dir) if dataset_dir is not None else datalist.parent
    if not datalist.is_file():
        raise DatalistError(f"datalist not found: {datalist}")
    try:
        content = json.loads(datalist.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatalistError(f"{datalist} is not valid JSON: {err}") from err
    if not isinstance(content, dict):
        raise DatalistError(f"{datalist} must hold an object of sections, got {type(content).__name__}")
    problems: list[Problem] = []
    cohort: dict[str, list[dict]] = {}
    for section in sections:
        if section not in content:
            problems.append((None, f"no '{section}' section (found: {sorted(content)})"))
            continue
        entries, shared = _section_entries(content[section])
        if not isinstance(entries, list) or not entries:
            problems.append((None, f"'{section}' must be a non-empty list of entries"))
            continue
        resolved = [
            shared | {k: str(base / v) if k in IMAGE_KEYS else v for k, v in e.items()} if isinstance(e, dict) else e
            for e in entries
        ]
        problems += _section_problems(section, resolved)
        cohort[section] = resolved
    if problems:
        raise DatalistError(_report(datalist, problems))
    return cohort


def load_datalist(datalist: str | Path, section: str, dataset_dir: str | Path | None = None) -> list[dict]:
    """The entries of one section, checked as ``load_cohort`` checks them."""
    return load_cohort(datalist, [section], dataset_dir)[section]


def scan_id(path: Path) -> str:
    """A scan's case id: its file name without ``.nii``/``.nii.gz``, or its DICOM folder's name."""
    return path.name.removesuffix(".gz").removesuffix(".nii")


def scan_cases(
    image: str | None = None,
    water: str | None = None,
    fat: str | None = None,
    outphase: str | None = None,
    images: str | None = None,
) -> list[dict]:
    """Cases given on the command line instead of a datalist, checked as a datalist's ``testing`` section.

    One scan: ``image`` (the in-phase image: a NIfTI file or a folder holding one DICOM series), with optional
    ``water``, ``fat`` and ``outphase`` images of the same scan (``water`` and ``fat`` alone do too: the in-phase
    image is then water + fat); its id is the first file's name, or its folder's for a file named like a datalist
    key (``sub01/inphase.nii.gz``: ``sub01``). Or ``images``: a folder whose every NIfTI file and
    every sub-folder of DICOM files is one scan's in-phase image, named after it.
    """
    if images is not None:
        folder = Path(images).absolute()
        if not folder.is_dir():
            raise DatalistError(f"--images {folder}: not a folder")
        scans = [p for p in sorted(folder.iterdir()) if _is_nifti(p) or (p.is_dir() and any(p.iterdir()))]
        if not scans:
            raise DatalistError(f"--images {folder}: holds no NIfTI file (.nii, .nii.gz) and no folder of DICOM files")
        entries, source = [{"id": scan_id(p), "image": str(p)} for p in scans], f"--images {folder}"
    else:
        given = {
            k: str(Path(v).absolute())
            for k, v in dict(image=image, water=water, fat=fat, outphase=outphase).items()
            if v
        }
        first = Path(given.get("image") or given.get("water") or next(iter(given.values())))
        # sub01/inphase.nii.gz, sub01/water.nii.gz: the scan is the folder
        case_id = first.parent.name if scan_id(first) in (*IMAGE_KEYS, "inphase") else scan_id(first)
        entries, source = [{"id": case_id, **given}], f"--image {first}"
    problems = _section_problems("testing", entries)
    if problems:
        raise DatalistError(_report(source, problems))
    return entries


def load_cases(
    datalist: str | Path, section: str, dataset_dir: str | Path | None = None, **scans: str | None
) -> list[dict]:
    """The cases to run: those of ``scans`` (``scan_cases``'s arguments, from the command line) when any is given,
    else the entries of ``section`` of the datalist."""
    if any(scans.values()):
        return scan_cases(**scans)
    return load_datalist(datalist, section, dataset_dir)
