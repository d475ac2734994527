"""Time the bundle's own training and inference on phantoms of the published geometry.

    python -m scripts.tools.benchmark [--devices cuda cpu] [--cases 4] [--steps 20] [--json benchmark.json]

Builds the trainer and the inference evaluator from ``configs/train.yaml`` and
``configs/inference.yaml`` (so what is timed is what users run) and prints one Markdown
table: training volume-steps per second in whole-volume and patch mode, the projected
time of the published schedule (200 epochs × 108 augmented volumes), peak GPU memory, and
inference seconds per scan, for the network alone and end to end (NIfTI on disk to
segmentation and report on disk). Every row names the device that gave it.

Then, per inference setting (the shipped weights at their own grid with inference's defaults; the published
grid, whole volume; the published grid in sliding windows), the seconds of each stage of one water + fat scan (load,
resample to the network grid, network, invert + argmax, confidence, post-processing, write, report), and, of the
voxels that either labels a muscle, the share whose label agrees with the straightforward reference: MONAI's
``Invertd`` of the preprocessing, ``AsDiscreted(argmax=True)`` and ``KeepLargestConnectedComponentd`` on the whole
grid (``reference_labels``).
``--stages-only`` skips training and the end-to-end rows.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import decollate_batch, list_data_collate
from monai.transforms import AsDiscreted, Compose, Invertd, KeepLargestConnectedComponentd

from scripts import BUNDLE_ROOT
from scripts.inference.background_outputs import InBackground
from scripts.labels import PUBLISHED_SPACING
from scripts.model_card import ModelCard, load_weights, write_model
from scripts.phantom import make_cohort

PUBLISHED_SHAPE = (400, 320, 145)
PUBLISHED_VOLUME_STEPS = 200 * 108  # 200 epochs over 108 augmented volumes (Balerdi et al.)
SHIPPED_WEIGHTS = BUNDLE_ROOT / "models" / "model.pt"
# Which stage of a scan each post-processing transform of inference.yaml belongs to. The preprocessing is "load" up
# to its first Orientationd and "resample" (to the network grid) from there; the network is timed on its own.
STAGES = {
    "Activationsd": "invert + argmax",
    "MuscleConfidenced": "confidence",
    "LabelOnInputGridd": "invert + argmax",
    "FatConnectedBorderd": "post-processing",
    "KeepLargestPiecePerMuscled": "post-processing",
    "CaseReportd": "report",
    "SaveSegmentationd": "write",
}


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def workflow(config: str, device: str, **override) -> ConfigWorkflow:
    """A bundle workflow on ``device``, with the bundle root as its home."""
    flow = ConfigWorkflow(
        config_file=str(BUNDLE_ROOT / "configs" / config),
        meta_file=str(BUNDLE_ROOT / "configs" / "metadata.json"),
        logging_file=str(BUNDLE_ROOT / "configs" / "logging.conf"),
        workflow_type="train" if config == "train.yaml" else "infer",
        bundle_root=str(BUNDLE_ROOT),
        device=f"$torch.device('{device}')",
        cuda=device == "cuda",  # train.yaml's GPU speed-ups
        amp=device == "cuda",
        num_workers=0,
        **override,
    )
    flow.initialize()
    return flow


def timed_steps(engine, warmup: int, steps: int, device: str) -> float:
    """Seconds per iteration of ``engine`` over ``steps`` iterations after ``warmup`` untimed ones."""
    marks: dict[str, float] = {}

    def mark(name: str) -> Callable:
        def handler(_engine) -> None:
            synchronize(device)
            marks[name] = time.perf_counter()

        return handler

    engine.add_event_handler(Events.ITERATION_COMPLETED(once=warmup), mark("start"))
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=warmup + steps), mark("end"))
    engine.state.max_epochs = -(-(warmup + steps) // len(engine.data_loader))
    engine.run()
    return (marks["end"] - marks["start"]) / steps


def train_rows(
    data: Path, work: Path, device: str, steps: int, patch: list[int], patch_batch: int, spacing: list[float]
) -> list[dict]:
    """Training volume-steps per second, projected schedule time and peak memory, whole volumes and patches."""
    rows = []
    for mode, roi_size, batch in (
        ("whole volume", None, 1),
        (f"patch {patch}, batch {patch_batch}", patch, patch_batch),
    ):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        flow = workflow(
            "train.yaml",
            device,
            dataset_dir=str(data),
            output_dir=str(work / "train"),
            ckpt_dir=str(work / "train" / "models"),
            roi_size=roi_size,
            batch_size=batch,
            val_interval=10**6,
            spacing=list(spacing),
        )
        trainer = flow.parser.get_parsed_content("train#trainer")
        seconds = timed_steps(trainer, warmup=2, steps=steps, device=device)
        rate = batch / seconds
        rows.append(row(device, f"training, {mode}", rate, "volume-steps/s"))
        rows.append(row(device, f"published schedule projected, {mode}", PUBLISHED_VOLUME_STEPS / rate / 60, "min"))
        if device == "cuda":
            rows.append(
                row(device, f"peak GPU memory, training {mode}", torch.cuda.max_memory_allocated() / 2**30, "GiB")
            )
    return rows


def untrained_model(path: Path, spacing: list[float]) -> Path:
    """A model file of the bundle's network with its initial weights, carded for ``spacing``: for timing runs at a
    voxel size no trained weights are at hand for."""
    network = ConfigParser(
        {"n": ConfigParser.load_config_file(BUNDLE_ROOT / "configs" / "inference.yaml")["network_def"]}
    )
    network = network.get_parsed_content("n")
    weights = network.state_dict()
    return write_model(path, lambda temporary: torch.save(weights, temporary), ModelCard(spacing, network).state_dict())


def inference_rows(data: Path, work: Path, device: str, repeats: int, spacing: list[float]) -> list[dict]:
    """Seconds per scan: the network's sliding window alone, and the whole inference run from disk to disk."""
    args = {"dataset_dir": str(data), "output_dir": str(work / "infer"), "spacing": list(spacing)}
    untrained_model(work / "model.pt", spacing)
    flow = workflow("inference.yaml", device, ckpt_path=str(work / "model.pt"), overwrite=True, **args)
    network, inferer = flow.parser.get_parsed_content("network"), flow.parser.get_parsed_content("inferer")
    dataset = flow.parser.get_parsed_content("dataset")
    image = dataset.transform(dataset.data[0])["image"][None].to(device)
    network.eval()
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        inferer(image, network)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            inferer(image, network)
        synchronize(device)
    network_seconds = (time.perf_counter() - start) / repeats

    evaluator = flow.parser.get_parsed_content("evaluator")
    cases = len(dataset.data)
    evaluator.run()  # warm-up: first case loads, cudnn picks its algorithms
    synchronize(device)
    start = time.perf_counter()
    evaluator.run()
    synchronize(device)
    end_to_end = (time.perf_counter() - start) / cases
    return [
        row(device, "inference, network alone", network_seconds, "s/scan"),
        row(device, "inference, end to end (NIfTI to segmentation and report)", end_to_end, "s/scan"),
    ]


def reference_labels(case: dict, preprocessing: Compose, largest_component: bool) -> np.ndarray:
    """The label of ``case["pred"]`` (class probabilities on the network grid) on the input grid, the plain way:
    every class resampled over the whole grid by MONAI's inverse of ``preprocessing``, the argmax, and each
    muscle's largest piece labelled on the whole grid."""
    steps = [
        Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False),
        AsDiscreted("pred", argmax=True),
    ]
    if largest_component:
        steps.append(KeepLargestConnectedComponentd("pred", applied_labels=list(range(1, 9)), independent=True))
    return Compose(steps)(dict(case))["pred"].numpy()[0].astype(np.uint8)


def timed(stages: dict[str, float], stage: str, step: Callable, *args):
    """``step(*args)``, its seconds added to ``stages[stage]``."""
    start = time.perf_counter()
    result = step(*args)
    stages[stage] = stages.get(stage, 0.0) + time.perf_counter() - start
    return result


def stage_rows(data: Path, work: Path, device: str, setting: str, **override) -> list[dict]:
    """Seconds per stage of one scan (the first testing case, a second time so imports and first-call set-up
    are not counted) for inference.yaml with ``override``, and the share of the voxels that either labels a muscle
    where the label agrees with ``reference_labels`` on the same class probabilities."""
    output_dir = work / "stages" / "".join(c if c.isalnum() else "_" for c in setting)
    flow = workflow(
        "inference.yaml", device, dataset_dir=str(data), output_dir=str(output_dir), overwrite=True, **override
    )
    parser = flow.parser
    network, inferer = parser.get_parsed_content("network"), parser.get_parsed_content("inferer")
    if "ckpt_path" in override:
        network.load_state_dict(load_weights(override["ckpt_path"], device))
    network.eval()
    preprocessing, postprocessing = parser.get_parsed_content("preprocessing"), parser.get_parsed_content(
        "postprocessing"
    )
    # A water + fat scan, the in-phase image computed from them, as in issue 25's measurements.
    entry = {k: v for k, v in parser.get_parsed_content("dataset").data[0].items() if k not in ("image", "outphase")}
    for _ in range(2):
        stages: dict[str, float] = {}
        case = dict(entry)
        stage = "load"
        for step in preprocessing.transforms:
            stage = "resample" if type(step).__name__ == "Orientationd" else stage
            case = timed(stages, stage, step, case)
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            image = list_data_collate([case["image"]]).to(device)  # a batch of one, as the data loader makes
            pred = timed(stages, "network", lambda: inferer(image, network).float())
            synchronize(device)
        case["pred"] = decollate_batch(pred.cpu())[0]  # as the engine hands it to the postprocessing
        probabilities = None
        for step in postprocessing.transforms:
            if type(step).__name__ == "LabelOnInputGridd":
                probabilities = dict(case)
            # the case's files: timed as written, although inference writes them while the next case is segmented
            for part in step.transform.transforms if isinstance(step, InBackground) else [step]:
                case = timed(stages, STAGES.get(type(part).__name__, type(part).__name__), part, case)
    largest = parser.get_parsed_content("largest_component")
    start = time.perf_counter()
    reference = reference_labels(probabilities, preprocessing, largest)
    reference_seconds = time.perf_counter() - start
    ours = case["pred"].numpy()[0]
    muscle = (ours > 0) | (reference > 0)  # the voxels either labels a muscle: background would swamp the share
    agreement = 100.0 * float(np.mean(ours[muscle] == reference[muscle])) if muscle.any() else float("nan")
    rows = [row(device, f"{setting}: {stage}", seconds, "s/scan") for stage, seconds in stages.items()]
    rows.append(row(device, f"{setting}: total", sum(stages.values()), "s/scan"))
    rows.append(
        row(device, f"{setting}: the reference's Invertd + argmax + largest piece", reference_seconds, "s/scan")
    )
    rows.append(row(device, f"{setting}: muscle voxels (a muscle in either labelling)", int(muscle.sum()), "voxels"))
    rows.append(row(device, f"{setting}: muscle voxels labelled as by the reference", agreement, "%"))
    return rows


def settings(spacing: list[float], roi_size: list[int]) -> dict[str, dict]:
    """The inference settings whose stages are timed: the shipped weights with inference's defaults (their own
    grid, flip averaging, largest piece), and the published grid, whole volume and in sliding windows."""
    return {
        "shipped weights, defaults": {"ckpt_path": str(SHIPPED_WEIGHTS)},
        "published grid, whole volume": {"spacing": list(spacing)},
        f"published grid, sliding window {list(roi_size)}": {"spacing": list(spacing), "roi_size": list(roi_size)},
    }  # at the published grid: untrained weights carded for it (untrained_model)


def row(device: str, what: str, value: float, unit: str) -> dict:
    return {"device": device_name(device), "what": what, "value": round(float(value), 3), "unit": unit}


def markdown(rows: list[dict]) -> str:
    lines = ["| device | what | value | unit |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['device']} | {r['what']} | {r['value']} | {r['unit']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_devices = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    parser.add_argument("--devices", nargs="+", default=default_devices, choices=["cuda", "cpu"])
    parser.add_argument("--cases", type=int, default=4, help="phantoms to make (a third are validation/testing)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per mode on the GPU")
    parser.add_argument("--cpu-steps", type=int, default=2, help="timed training steps per mode on the CPU")
    parser.add_argument("--patch", type=int, nargs=3, default=[160, 160, 96])
    parser.add_argument("--patch-batch", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=PUBLISHED_SHAPE, help="phantom grid (default: published)")
    parser.add_argument("--spacing", type=float, nargs=3, default=PUBLISHED_SPACING, help="voxel size, mm")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="processes making phantoms")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep phantoms and outputs here (default: temporary)"
    )
    parser.add_argument("--roi-size", type=int, nargs=3, default=[192, 192, 96], help="sliding-window stages")
    parser.add_argument("--stages-only", action="store_true", help="only the per-stage rows of inference")
    parser.add_argument("--json", type=Path, default=Path("benchmark.json"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        data = work / "phantoms"
        if not (data / "datalist.json").is_file():
            make_cohort(data, n=args.cases, shape=args.shape, spacing=args.spacing, workers=args.workers)
        rows = []
        for device in args.devices:
            if not args.stages_only:
                steps = args.steps if device == "cuda" else args.cpu_steps
                rows += train_rows(data, work, device, steps, args.patch, args.patch_batch, args.spacing)
                rows += inference_rows(data, work, device, 3 if device == "cuda" else 1, args.spacing)
            for setting, override in settings(args.spacing, args.roi_size).items():
                if "ckpt_path" not in override:
                    override["ckpt_path"] = str(untrained_model(work / "untrained.pt", override["spacing"]))
                rows += stage_rows(data, work, device, setting, **override)
    table = markdown(rows)
    print(table)
    args.json.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
