"""Ignite handlers that glue this bundle's per-muscle results into MONAI's engines."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from scripts.labels import ABBREVIATIONS, MUSCLES


class PerMuscleDiceLogger:
    """Append one row per validation to ``<output_dir>/dice_per_muscle.csv``.

    Columns: the training epoch, the mean Dice over muscles, each muscle's mean Dice over
    the validation cases that contain it, and how many cases that mean is based on.
    MONAI's ``MetricsSaver`` rewrites its files at each run, names classes by index and
    does not count cases, hence this handler. It reads the per-case, per-muscle Dice that
    ``MeanDice(save_details=True)`` leaves in ``engine.state.metric_details``.
    """

    def __init__(self, output_dir: str, metric_name: str = "val_mean_dice", filename: str = "dice_per_muscle.csv"):
        self.path = Path(output_dir) / filename
        self.metric_name = metric_name

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        details = torch.as_tensor(engine.state.metric_details[self.metric_name]).float().cpu()  # cases × muscles
        present = ~torch.isnan(details)
        counts = present.sum(dim=0)
        means = torch.where(present, details, 0).sum(dim=0) / counts.clamp(min=1)
        names = [ABBREVIATIONS[m] for m in MUSCLES]
        row = {"epoch": engine.state.epoch, "mean_dice": round(float(engine.state.metrics[self.metric_name]), 4)}
        row |= {n: round(float(v), 4) if c else "" for n, v, c in zip(names, means, counts)}
        row |= {f"n_{n}": int(c) for n, c in zip(names, counts)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
