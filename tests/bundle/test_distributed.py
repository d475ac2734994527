"""torchrun on the CPU (gloo): data-parallel training and cohort inference split over two processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, SPACING_ARG, read_csv, run_module, write_datalist
from monai.bundle import ConfigWorkflow

from scripts.model_card import load_weights


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """Two processes, each running ``python -m monai.bundle run ...``."""
    return run_module("torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run", *args)


def test_two_process_training_writes_once_and_gathers_validation(cohort: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    torchrun(
        "training",
        "--config_file", "['configs/train.yaml','configs/multi_gpu_train.yaml']",
        "--dataset_dir", str(cohort),
        "--output_dir", str(out),
        "--ckpt_dir", str(out / "models"),
        "--epochs", "1",
        "--spacing", SPACING_ARG,
        "--num_workers", "0",
    )  # fmt: skip
    assert sorted(p.name for p in out.glob("*.pt")) == ["last_checkpoint_epoch=1.pt"]
    assert sorted(p.name for p in (out / "models").iterdir()) == ["model.json", "model.pt"]  # weights, their card
    assert len(list(out.glob("**/events.out.tfevents.*"))) == 1
    (logged,) = read_csv(out / "dice_per_muscle.csv")
    assert sorted(r["id"] for r in read_csv(out / "dice_per_case.csv")) == ["sub05", "sub06"]  # each case once

    # One process, the same weights, the same validation cases: the same mean Dice.
    single = ConfigWorkflow(
        config_file=str(REPO / "configs" / "train.yaml"),
        workflow_type="train",
        bundle_root=str(REPO),
        dataset_dir=str(cohort),
        output_dir=str(tmp_path / "single"),
        ckpt_dir=str(tmp_path / "single" / "models"),
        spacing=[3.75, 3.75, 7.8],
        num_workers=0,
    )
    single.initialize()
    single.parser.get_parsed_content("network").load_state_dict(load_weights(out / "models" / "model.pt"))
    evaluator = single.parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    assert evaluator.state.metrics["val_mean_dice"] == pytest.approx(float(logged["mean_dice"]), abs=1e-4)


def test_two_process_inference_segments_each_case_once(cohort: Path, trained: Path, tmp_path: Path):
    entries = json.loads((cohort / "datalist.json").read_text(encoding="utf-8"))
    testing = [{k: v for k, v in e.items() if k != "label"} for e in entries["training"] + entries["validation"]][:5]
    datalist = write_datalist(tmp_path / "five.json", {"testing": testing})
    result = torchrun(
        "inference",
        "--config_file", "['configs/inference.yaml','configs/multi_gpu_inference.yaml']",
        "--dataset_dir", str(cohort),
        "--datalist", str(datalist),
        "--output_dir", str(tmp_path / "out"),
        "--ckpt_path", str(trained / "models" / "model.pt"),
        "--num_workers", "0",
    )  # fmt: skip
    ids = [e["id"] for e in testing]
    written = [
        line for line in (result.stdout + result.stderr).splitlines() if "_seg.nii.gz" in line and "writing" in line
    ]
    assert sorted(line.rsplit("/", 2)[-2] for line in written) == ids  # every case once, none twice
    for case in ids:
        assert (tmp_path / "out" / case / f"{case}_seg.nii.gz").is_file()
    assert sorted(r["id"] for r in read_csv(tmp_path / "out" / "metrics.csv")) == ids
