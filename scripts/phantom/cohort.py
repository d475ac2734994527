"""One phantom and a cohort of them: arrays, files and the MONAI datalist.

A phantom is an axial stack from about T12/L1 down to S1 on a RAS+ grid centred on world (0, 0, 0): the Dixon water
and fat images and the in-phase (W + F) and opposed-phase (|W - F|) images made from them, the label image (the
bundle's label map, ``scripts.labels``) and the tissue map it was drawn from (``tissue.nii.gz``, one integer per
tissue, names in ``truth.json``), so that training can render the same anatomy with other contrasts
(``scripts.training.tissue_contrast``). Images and labels come from one tissue map, so a label always lies on
muscle signal.
Its muscles are procedural ellipses (``procedural_muscles``) or real shapes from a label map
(``label_map_muscles``, ``--anatomy``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from scripts.labels import MUSCLES, PUBLISHED_SPACING
from scripts.phantom.borders import draw_borders
from scripts.phantom.fields_of_view import FULL, draw_field, ruled_out, slices_in
from scripts.phantom.label_map_muscles import paint_from_label_map, read_label_map
from scripts.phantom.organ_map import read_organ_map
from scripts.phantom.procedural_muscles import T12_L1_Z, paint_procedural
from scripts.phantom.shapes import centred_affine, subject_frame
from scripts.phantom.signal import dixon_images, muscle_truth
from scripts.phantom.subject import draw_subject
from scripts.phantom.tissues import LABEL_OF_TISSUE, Painted, tissue_names

DEFAULT_SHAPE = (400, 320, 145)
IMAGES = ("inphase", "outphase", "water", "fat")


@dataclass(eq=False)
class Phantom:
    """One synthetic case: Dixon images (float32, arbitrary units), label map (uint8), tissue map (uint8, ids of
    ``tissue_names``), noise-free per-voxel fat fraction F/(W+F) (float32, 0 outside the body), RAS+ affine and
    the truth written to truth.json (with ``annotated``: the labels the case can hold)."""

    water: np.ndarray
    fat: np.ndarray
    inphase: np.ndarray
    outphase: np.ndarray
    label: np.ndarray
    tissue: np.ndarray
    fat_fraction: np.ndarray
    affine: np.ndarray
    truth: dict


def _checked_grid(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    shape, spacing = tuple(int(n) for n in shape), tuple(float(s) for s in spacing)
    if len(shape) != 3 or len(spacing) != 3 or min(shape) < 1 or min(spacing) <= 0:
        raise ValueError(f"need 3 positive sizes and 3 positive spacings, got shape {shape} and spacing {spacing}")
    return shape, spacing


def make_phantom(
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = PUBLISHED_SPACING,
    seed: int = 0,
    anatomy: str | Path | None = None,
    confusers: bool = True,
    organs: str | Path | None = None,
    fov: str = FULL,
    borders: bool = False,
    muscle_fat_fraction: float | None = None,
) -> Phantom:
    """Generate one synthetic lumbar Dixon case on a grid of ``shape`` voxels of ``spacing`` mm (RAS+, centred on
    world (0, 0, 0)); the same seed (and maps) gives the same arrays. ``anatomy``: a real muscle (or organ) label
    map to build the case around instead of procedural muscles. ``confusers=False``: no bowel, kidneys, vessels or
    abdominal wall (visceral fat instead). ``organs``: a TotalSegmentator organ map whose organs are pasted at the
    levels it covers (``organ_map``). ``fov``: a field of view of ``fields_of_view`` (or "random"); the slices
    outside it are cut off, so the case may have fewer slices than ``shape``. ``borders``: random fat planes and
    fascia between adjacent muscles (``borders``). ``muscle_fat_fraction``: every muscle infiltrated to about this
    mean fat fraction (0..1) instead of its drawn one, graded from centre to fascia as usual."""
    shape, spacing = _checked_grid(shape, spacing)
    rng = np.random.default_rng(seed)
    subject = draw_subject(rng)
    if muscle_fat_fraction is not None:
        subject = replace(subject, fat_fraction=dict.fromkeys(subject.fat_fraction, float(muscle_fat_fraction)))
    affine = centred_affine(shape, spacing)
    if anatomy is None:
        name, field = draw_field(fov, rng, pelvis=False)
        # The field's middle level at the grid's centre; the full grid keeps the usual T12/L1 height.
        top_z = T12_L1_Z if field is None else subject.pitch * (field[0] + field[1]) / 2
        frame = subject_frame(shape, affine, subject.shift, subject.rotation, top_z, subject.pitch)
        source = read_organ_map(organs) if organs is not None else None
        painted, annotated = paint_procedural(frame, subject, rng, confusers, source, top_z), list(MUSCLES)
        source_name = "procedural"
    else:
        label_map = read_label_map(anatomy)
        organs_of_its_own = bool(label_map.level_knots)  # an organ map as the anatomy: nothing to paste
        source = read_organ_map(organs) if organs is not None and not organs_of_its_own else None
        painted = paint_from_label_map(label_map, shape, affine, subject, rng, confusers, source)
        name, field = draw_field(FULL if organs_of_its_own else fov, rng, painted.pelvis)
        annotated, source_name = list(label_map.annotated), label_map.name
    border_counts = draw_borders(painted.tissues, rng) if borders else None
    tissue, fat_scale, affine, kept = _cut_to_field(painted, field, affine)
    if field is not None:
        annotated = sorted({*annotated, *ruled_out(painted.level[kept], painted.crest_level)})
    fat_fraction, water, fat = dixon_images(tissue, fat_scale, subject, affine, rng)
    label = LABEL_OF_TISSUE[tissue]
    truth = {
        **muscle_truth(label, fat_fraction, spacing),
        "shape": list(tissue.shape),
        "spacing": list(spacing),
        "seed": seed,
        "anatomy": source_name,
        "confusers": confusers,
        "organs": Path(organs).name if organs is not None else None,
        "field_of_view": name if field is None else {"name": name, "levels": [round(v, 2) for v in field]},
        "borders": border_counts,
        "annotated": annotated,
        "tissues": {str(t): tissue_name for t, tissue_name in tissue_names().items()},
    }
    return Phantom(water, fat, water + fat, np.abs(water - fat), label, tissue, fat_fraction, affine, truth)


def _cut_to_field(
    painted: Painted, field: tuple[float, float] | None, affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tissue map, fat scale and affine cut to the field's slices, and the indices of the slices kept. A field
    that would leave no labelled muscle keeps the whole grid."""
    kept = slices_in(painted.level, field)
    if kept.size == 0 or not LABEL_OF_TISSUE[painted.tissues.tissue[:, :, kept]].any():
        kept = np.arange(painted.level.size)
    affine = affine.copy()
    affine[:3, 3] += affine[:3, 2] * kept[0]
    tissue, fat_scale = painted.tissues.tissue[:, :, kept], painted.tissues.fat_scale[:, :, kept]
    return np.ascontiguousarray(tissue), np.ascontiguousarray(fat_scale), affine, kept


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)  # scanner coordinates
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def write_phantom(phantom: Phantom, case_dir: str | Path) -> None:
    """Write inphase/outphase/water/fat.nii.gz (float32), label.nii.gz and tissue.nii.gz (uint8) and truth.json to
    ``case_dir``."""
    case_dir = Path(case_dir)
    case_dir.mkdir(parents=True, exist_ok=True)
    for name in IMAGES:
        _save(getattr(phantom, name), phantom.affine, case_dir / f"{name}.nii.gz")
    _save(phantom.label, phantom.affine, case_dir / "label.nii.gz")
    _save(phantom.tissue, phantom.affine, case_dir / "tissue.nii.gz")
    (case_dir / "truth.json").write_text(json.dumps(phantom.truth, indent=2), encoding="utf-8")


def validation_count(n: int) -> int:
    """Cases held out for validation: a third of ``n``, at least one, leaving at least one to train on.

    A single case (``n=1``) is a sample scan: it is listed under ``testing`` only.
    """
    if n < 1:
        raise ValueError(f"a cohort needs at least 1 case, got n={n}")
    return 0 if n == 1 else max(1, round(n / 3))


def datalist_entry(case_id: str, with_label: bool = True, annotated: Sequence[int] | None = None) -> dict:
    """A decathlon-style entry with paths relative to the dataset folder; ``image`` is the in-phase image. Labelled
    entries also name the tissue map, which the robust training recipe renders with random contrasts, and, when
    the case cannot hold every muscle (an anatomy map without iliacus), the muscles it annotates."""
    entry = {"id": case_id, "image": f"{case_id}/inphase.nii.gz"}
    entry.update({name: f"{case_id}/{name}.nii.gz" for name in ("outphase", "water", "fat")})
    if with_label:
        entry["label"] = f"{case_id}/label.nii.gz"
        entry["tissue"] = f"{case_id}/tissue.nii.gz"
        if annotated is not None and sorted(annotated) != list(MUSCLES):
            entry["annotated"] = sorted(int(m) for m in annotated)
    return entry


@dataclass(frozen=True)
class CaseJob:
    """What one case of a cohort is drawn from."""

    case_id: str
    seed: int
    anatomy: Path | None


def _write_case(job: CaseJob, out_dir: Path, shape: Sequence[int], spacing: Sequence[float], options: dict) -> list:
    phantom = make_phantom(shape, spacing, seed=job.seed, anatomy=job.anatomy, **options)
    write_phantom(phantom, out_dir / job.case_id)
    return phantom.truth["annotated"]


def cohort_jobs(n: int, seed: int, anatomy: Sequence[Path], per_map: int) -> list[list[CaseJob]]:
    """The cohort's cases in groups that are split into training and validation each on their own: the ``n``
    procedural cases (sub01, ...; case i uses seed ``seed * 1000 + i``), then ``per_map`` cases of each map
    (<map name>_01, ...; seeds from ``seed * 1000 + 500`` on)."""
    groups = [[CaseJob(f"sub{i:02d}", seed * 1000 + i, None) for i in range(1, n + 1)]] if n else []
    next_seed = seed * 1000 + 500
    for path in anatomy:
        stem = Path(path).name.split(".")[0]
        groups.append([CaseJob(f"{stem}_{j:02d}", next_seed + j, Path(path)) for j in range(1, per_map + 1)])
        next_seed += per_map
    return groups


def make_cohort(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = PUBLISHED_SPACING,
    workers: int = 1,
    anatomy: Sequence[str | Path] = (),
    per_map: int = 3,
    confusers: bool = True,
    organs: str | Path | None = None,
    fov: str = FULL,
    borders: bool = False,
) -> Path:
    """Write the cohort's phantoms (``cohort_jobs``; ``confusers``, ``organs``, ``fov`` and ``borders`` as in
    ``make_phantom``) and datalist.json: of each group the last third for validation and the rest for training,
    the validation cases without label for testing (a single procedural case and no map: a testing-only sample).
    ``workers`` processes write cases in parallel. Returns the datalist path."""
    out_dir = Path(out_dir)
    groups = cohort_jobs(n, seed, [Path(p) for p in anatomy], per_map if anatomy else 0)
    jobs = [job for group in groups for job in group]
    if not jobs:
        raise ValueError("a cohort needs at least 1 case")
    with ProcessPoolExecutor(max_workers=workers) as pool:
        options = {"confusers": confusers, "organs": organs, "fov": fov, "borders": borders}
        results = pool.map(_write_case, jobs, *zip(*[(out_dir, shape, spacing, options)] * len(jobs)), chunksize=1)
        annotated = dict(zip((j.case_id for j in jobs), tqdm(results, total=len(jobs), desc="phantoms", unit="case")))
    if len(jobs) == 1 and jobs[0].anatomy is None:
        datalist = {"testing": [datalist_entry(jobs[0].case_id, with_label=False)]}
    else:
        datalist = {"training": [], "validation": [], "testing": []}
        for group in groups:
            n_validation = validation_count(len(group)) if len(group) > 1 else 0
            for k, job in enumerate(group):
                entry = datalist_entry(job.case_id, annotated=annotated[job.case_id])
                if k >= len(group) - n_validation:
                    datalist["validation"].append(entry)
                    datalist["testing"].append(datalist_entry(job.case_id, with_label=False))
                else:
                    datalist["training"].append(entry)
    path = out_dir / "datalist.json"
    path.write_text(json.dumps(datalist, indent=2), encoding="utf-8")
    return path
