"""Read a decathlon-style ``datalist.json`` and check every entry before any work starts.

Checked up front: the JSON, the section, each entry's keys, that every file exists, and
that a folder given as an image holds exactly one DICOM series.

MONAI's ``load_decathlon_datalist`` joins only ``image`` and ``label`` to the base folder;
this bundle's entries also carry ``water``, ``fat`` and ``outphase`` paths, and a user
should see every broken entry at once rather than one crash per run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scripts.image_checks import dicom_folder_problem

# Keys whose values are paths relative to the dataset folder.
IMAGE_KEYS: tuple[str, ...] = ("image", "outphase", "water", "fat", "label", "tissue")
# Partial-label keys that a section may give all its entries at once.
SHARED_KEYS: tuple[str, ...] = ("label_map", "annotated")


class DatalistError(ValueError):
    """A datalist that cannot be used; the message lists every problem found."""


def _section_entries(section: Any) -> tuple[Any, dict]:
    """A section's entries and the keys it gives every entry.

    A section is a list of entries, or an object ``{"label_map": ..., "annotated": ...,
    "entries": [...]}`` whose ``label_map``/``annotated`` apply to each entry lacking its own.
    """
    if isinstance(section, dict):
        return section.get("entries"), {k: section[k] for k in SHARED_KEYS if k in section}
    return section, {}


def _entry_problems(entry: Any, index: int, section: str, need_label: bool) -> list[str]:
    """Everything wrong with one entry (already resolved to absolute paths)."""
    where = f"{section}[{index}]"
    if not isinstance(entry, dict):
        return [f"{where}: expected an object, got {type(entry).__name__}"]
    where = f"{where} ({entry.get('id', 'no id')})"
    problems = []
    if "id" not in entry:
        problems.append(f"{where}: no 'id'")
    if "image" not in entry and not ("water" in entry and "fat" in entry):
        problems.append(f"{where}: needs 'image' (in-phase) or both 'water' and 'fat'")
    if need_label and "label" not in entry:
        problems.append(f"{where}: no 'label' (required in '{section}')")
    for key in IMAGE_KEYS:
        if key not in entry:
            continue
        path = Path(entry[key])
        if not path.exists():
            problems.append(f"{where}: {key} file not found: {path}")
        elif path.is_dir() and (problem := dicom_folder_problem(path)):
            problems.append(f"{where}: {key}: {problem}")
    return problems


def load_datalist(datalist: str | Path, section: str, dataset_dir: str | Path | None = None) -> list[dict]:
    """Return the entries of ``section`` with image paths made absolute, after checking them all.

    Paths are relative to ``dataset_dir`` (default: the datalist's folder). Sections
    ``training`` and ``validation`` must carry labels. Raises ``DatalistError`` naming
    every problem in the section at once.
    """
    datalist = Path(datalist)
    base = Path(dataset_dir) if dataset_dir is not None else datalist.parent
    if not datalist.is_file():
        raise DatalistError(f"datalist not found: {datalist}")
    try:
        content = json.loads(datalist.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatalistError(f"{datalist} is not valid JSON: {err}") from err
    if not isinstance(content, dict) or section not in content:
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise DatalistError(f"{datalist} has no '{section}' section (found: {found})")
    entries, shared = _section_entries(content[section])
    if not isinstance(entries, list) or not entries:
        raise DatalistError(f"{datalist}: '{section}' must be a non-empty list of entries")

    resolved = []
    for entry in entries:
        if isinstance(entry, dict):
            entry = shared | {k: str(base / v) if k in IMAGE_KEYS else v for k, v in entry.items()}
        resolved.append(entry)
    need_label = section in ("training", "validation")
    problems = [p for i, e in enumerate(resolved) for p in _entry_problems(e, i, section, need_label)]
    ids = [e.get("id") for e in resolved if isinstance(e, dict)]
    problems += [f"{section}: id '{i}' appears more than once" for i in sorted({i for i in ids if ids.count(i) > 1})]
    if problems:
        raise DatalistError(f"{datalist}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return resolved
