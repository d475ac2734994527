"""Measure how well each muscle's ``confidence`` and ``check`` (``scripts.report.confidence``) tell good from bad
muscles.

Runs the bundle's inference (``configs/inference.yaml``, its defaults) on scans whose true labels are known but
which the weights were not trained on, and compares each muscle's confidence and check with its true Dice:

- TUM02 (``--real_dir``) shown as five contrasts (``scripts.tools.generalization.real_contrasts``); only erector spinae
  + multifidus is drawn, so only it is scored;
- phantoms of a new seed, field of view and slice thickness (as ``scripts.tools.generalization`` makes them);
- the same kind of phantoms rendered with contrasts outside the training range (``RandTissueContrastd`` with
  within-tissue spread up to ``OUT_OF_RANGE_SPREAD`` of the mean, not 0.15, and air as bright as any tissue), where
  the weights fail on some muscles;
- phantoms of the held-out anatomy maps (``--heldout_maps``), whole and cut to T11-L2 with real organs
  (``--organs``), as ``scripts.tools.generalization`` makes them; there a muscle the field rules out (the
  iliacus) that the prediction holds scores Dice 0.

Prints, and writes to ``--output_dir`` (``calibration.csv``: one row per case and scored muscle with its Dice,
confidence, check and evidence; ``calibration.md``: the summary): the Spearman rank correlation of confidence (and
of each piece of evidence) with Dice; the precision and recall of ``check`` for Dice < 0.5; the share of muscles
with Dice >= 0.8 that are flagged; how many true labels the anatomy rules would flag (the rules' ranges must hold
the truth); and the same split by test group.

    python -m scripts.tools.confidence_calibration [--ckpt models/model.pt] [--output_dir confidence_calibration]
        [--n_phantoms 4] [--phantom_seed 77] [--heldout_maps MAP ...] [--organs MAP]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from scipy.stats import spearmanr

from scripts import BUNDLE_ROOT
from scripts.atomic import write_atomically, write_csv_atomically
from scripts.labels import ABBREVIATIONS, MUSCLES
from scripts.phantom import make_phantom, write_phantom
from scripts.report.confidence import muscle_confidence
from scripts.tools.generalization import (
    ScoringSet,
    add_scoring_set_arguments,
    build_test_set,
    markdown,
    scoring_set,
)
from scripts.training.tissue_contrast import RandTissueContrastd

OUT_OF_RANGE_SPREAD = 0.6
BAD_DICE, GOOD_DICE = 0.5, 0.8
EVIDENCE = ("flip_agreement", "probability", "largest_piece", "anatomy")


def write_out_of_range_phantoms(
    data_dir: Path, seed: int, shape: Sequence[int], spacing: Sequence[float], n: int
) -> list[dict]:
    """Phantoms whose in-phase image is a rendering of their tissue map outside the training range; their water and
    fat images stay as made (for the fat fraction). Returns their datalist entries."""
    render = RandTissueContrastd(prob=1.0, max_spread=OUT_OF_RANGE_SPREAD, max_air=1.0)
    entries = []
    for i in range(1, n + 1):
        case_id = f"contrast{i:02d}"
        phantom = make_phantom(shape, spacing, seed=seed * 1000 + 500 + i)
        write_phantom(phantom, data_dir / case_id)
        render.set_random_state(seed * 1000 + 500 + i)
        case = render({"image": MetaTensor(torch.zeros(1, *phantom.label.shape)), "tissue": phantom.tissue[None]})
        image = nib.Nifti1Image(case["image"][0].numpy().astype(np.float32), phantom.affine)
        nib.save(image, data_dir / case_id / "rendered.nii.gz")
        entries.append(
            {"id": case_id, "image": f"{case_id}/rendered.nii.gz", "label": f"{case_id}/label.nii.gz"}
            | {k: f"{case_id}/{k}.nii.gz" for k in ("water", "fat")}
        )
    return entries


def build_cases(data_dir: Path, test_set: ScoringSet) -> list[dict]:
    """Write every test case and ``data_dir/datalist.json`` (all under ``testing``); returns the entries, which
    keep their ``label`` (and ``label_map``/``annotated`` for TUM02 and the held-out maps) for the scoring."""
    datalist = build_test_set(data_dir, test_set)
    entries = json.loads(datalist.read_text(encoding="utf-8"))["validation"]
    entries += write_out_of_range_phantoms(
        data_dir, test_set.phantom_seed, test_set.phantom_shape, test_set.phantom_spacing, test_set.n_phantoms
    )
    testing = [{k: v for k, v in e.items() if k in ("id", "image", "water", "fat")} for e in entries]
    datalist.write_text(json.dumps({"testing": testing}, indent=2), encoding="utf-8")
    return entries


def run_inference(ckpt: Path, data_dir: Path, output_dir: Path) -> None:
    command = [
        sys.executable, "-m", "monai.bundle", "run", "inference",
        "--config_file", "configs/inference.yaml",
        "--dataset_dir", str(data_dir.resolve()),
        "--output_dir", str(output_dir.resolve()),
        "--ckpt_path", str(ckpt.resolve()),
        "--num_workers", "0",
        "--overwrite", "True",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE_ROOT, capture_output=True, text=True, encoding="utf-8")
    if result.returncode != 0:
        raise RuntimeError(f"inference of {ckpt} failed:\n{result.stderr[-3000:]}")


def group_of(case_id: str) -> str:
    return {
        "real": "TUM02 contrasts",
        "phantom": "new-seed phantoms",
        "contrast": "out-of-range contrast",
        "map": "held-out map",
        "upper": "held-out map, T11-L2 with organs",
    }[case_id.rstrip("0123456789_").split("_")[0]]


def score_case(entry: dict, data_dir: Path, output_dir: Path) -> list[dict]:
    """One row per scored muscle of a case: true Dice of the segmentation and the report's confidence fields. A
    muscle the case rules out (annotated, absent from the truth: the iliacus at T11-L2) that the prediction holds
    scores Dice 0: it should be flagged."""
    case_id = entry["id"]
    seg = np.asarray(nib.load(output_dir / case_id / f"{case_id}_seg.nii.gz").dataobj)
    source = np.rint(np.asarray(nib.load(data_dir / entry["label"]).dataobj)).astype(np.int64)
    truth = source
    if "label_map" in entry:
        truth = np.zeros_like(source)
        for value, muscle in entry["label_map"].items():
            truth[source == int(value)] = muscle
    report = json.loads((output_dir / case_id / f"{case_id}_metrics.json").read_text(encoding="utf-8"))
    affine = nib.load(output_dir / case_id / f"{case_id}_seg.nii.gz").affine
    truth_confidence = muscle_confidence(truth, affine)  # the anatomy rules on the true labels: should all pass
    rows = []
    for muscle in entry.get("annotated", MUSCLES):
        name = ABBREVIATIONS[muscle]
        pred, true = seg == muscle, truth == muscle
        if not true.any() and not pred.any():
            continue
        entry_report = report["muscles"][name]
        rows.append(
            {
                "group": group_of(case_id),
                "id": case_id,
                "muscle": name,
                "dice": round(2 * float((pred & true).sum()) / float(pred.sum() + true.sum()), 4),
                "confidence": entry_report["confidence"],
                "check": entry_report["check"],
                **{k: entry_report["evidence"].get(k) for k in EVIDENCE},
                "check_reasons": entry_report["check_reasons"],
                "truth_check_reasons": truth_confidence[name]["check_reasons"] if true.any() else "",
            }
        )
    return rows


def summary(rows: Sequence[dict]) -> dict[str, str]:
    """Rank correlations with Dice, precision/recall of check for Dice < 0.5 and the share of good muscles flagged."""
    dice = np.array([r["dice"] for r in rows])
    check = np.array([bool(r["check"]) for r in rows])
    bad, good = dice < BAD_DICE, dice >= GOOD_DICE

    def rho(values: list) -> str:
        v = np.array([np.nan if x is None else x for x in values], np.float64)
        keep = ~np.isnan(v)
        return f"{spearmanr(v[keep], dice[keep]).statistic:.2f}" if keep.sum() > 2 and np.ptp(v[keep]) > 0 else "–"

    def share(numerator: int, denominator: int) -> str:
        return f"{numerator}/{denominator}" if denominator else "–"

    cells = {"muscles": str(len(rows)), "Dice < 0.5": str(int(bad.sum())), "Dice ≥ 0.8": str(int(good.sum()))}
    cells["ρ confidence"] = rho([r["confidence"] for r in rows])
    cells |= {f"ρ {k}": rho([r[k] for r in rows]) for k in EVIDENCE}
    cells["check precision"] = share(int((check & bad).sum()), int(check.sum()))
    cells["check recall"] = share(int((check & bad).sum()), int(bad.sum()))
    cells["Dice ≥ 0.8 flagged"] = share(int((check & good).sum()), int(good.sum()))
    cells["true labels flagged"] = share(sum(bool(r["truth_check_reasons"]) for r in rows), len(rows))
    return cells


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.tools.confidence_calibration", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--ckpt", type=Path, default=BUNDLE_ROOT / "models" / "model.pt")
    parser.add_argument("--output_dir", type=Path, default=Path("confidence_calibration"))
    add_scoring_set_arguments(parser, phantom_seed=77)
    args = parser.parse_args(argv)
    data_dir, inference_dir = args.output_dir / "data", args.output_dir / "inference"
    entries = build_cases(data_dir, scoring_set(args))
    run_inference(args.ckpt, data_dir, inference_dir)
    rows = [row for entry in entries for row in score_case(entry, data_dir, inference_dir)]
    write_csv_atomically(args.output_dir / "calibration.csv", rows)
    table = {"all": summary(rows)}
    for group in dict.fromkeys(r["group"] for r in rows):
        table[group] = summary([r for r in rows if r["group"] == group])
    text = markdown(table, "test set")
    write_atomically(args.output_dir / "calibration.md", lambda path: path.write_text(text, encoding="utf-8"))
    print(text)


if __name__ == "__main__":
    main()
