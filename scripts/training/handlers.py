"""Ignite handlers of training: per-muscle validation Dice logged to CSV, and a progress bar over epochs."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar

from scripts.distributed import gather_lists, is_main_process
from scripts.labels import ABBREVIATIONS, MUSCLES

NAMES = [ABBREVIATIONS[m] for m in MUSCLES]


def _append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows to a CSV file, writing the header when the file is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _rounded(value: float) -> float | str:
    """Four decimals; an empty cell for a muscle that could not be scored."""
    return "" if value != value else round(value, 4)  # NaN != NaN


class PerMuscleDiceLogger:
    """After each validation, append per-muscle Dice to two CSV files in ``output_dir``.

    - ``dice_per_muscle.csv``: one row per validation: the training epoch, the key metric
      (mean Dice), each muscle's mean Dice over the cases that contain it, and how many
      cases that mean rests on (``n_<muscle>``; partially labelled cases count only for
      the muscles they annotate);
    - ``dice_per_case.csv``: one row per validation case: epoch, case id, Dice per muscle
      (empty where the case does not contain the muscle).

    It reads the per-case, per-muscle Dice that ``MeanDice(save_details=True)`` leaves in
    ``engine.state.metric_details``. MONAI's ``MetricsSaver`` rewrites its files at each
    run, names classes by index and does not count cases, hence this handler.
    """

    def __init__(self, output_dir: str, metric_name: str = "val_mean_dice") -> None:
        self.output_dir = Path(output_dir)
        self.metric_name = metric_name
        self.case_ids: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.case_ids.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect_ids)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def collect_ids(self, engine: Engine) -> None:
        batch = engine.state.batch
        items = batch if isinstance(batch, list) else [batch]
        self.case_ids += [
            str(i) for item in items for i in (item["id"] if isinstance(item["id"], list) else [item["id"]])
        ]

    def __call__(self, engine: Engine) -> None:
        # All ranks take part in gathering the case ids (metric details are already gathered); rank 0 writes.
        case_ids = gather_lists(self.case_ids)
        if not is_main_process():
            return
        details = torch.as_tensor(engine.state.metric_details[self.metric_name]).float().cpu()  # cases × muscles
        present = ~torch.isnan(details)
        counts = present.sum(dim=0)
        means = torch.where(present, details, 0).sum(dim=0) / counts.clamp(min=1)
        epoch = engine.state.epoch
        summary = {"epoch": epoch, "mean_dice": round(float(engine.state.metrics[self.metric_name]), 4)}
        summary |= {n: _rounded(float(v)) if c else "" for n, v, c in zip(NAMES, means, counts)}
        summary |= {f"n_{n}": int(c) for n, c in zip(NAMES, counts)}
        _append_rows(self.output_dir / "dice_per_muscle.csv", [summary])
        ids = case_ids if len(case_ids) == len(details) else [str(i) for i in range(len(details))]
        cases = [
            {"epoch": epoch, "id": i} | {n: _rounded(float(v)) for n, v in zip(NAMES, row)}
            for i, row in zip(ids, details)
        ]
        _append_rows(self.output_dir / "dice_per_case.csv", cases)


class EpochProgressBar(ProgressBar):
    """Ignite's ``ProgressBar`` counting a training's epochs instead of one epoch's iterations: epochs done of all,
    time taken and time left, and the last step's loss. (MONAI's engines attach a handler with the engine alone;
    this one chooses the events.)"""

    def __init__(self, loss_key: str = "loss") -> None:
        super().__init__(persist=True, desc="epochs")
        self.loss_key = loss_key

    def attach(self, engine: Engine) -> None:  # type: ignore[override]
        super().attach(
            engine,
            output_transform=lambda output: {"loss": float(output[self.loss_key])},
            event_name=Events.EPOCH_COMPLETED,
            closing_event_name=Events.COMPLETED,
        )
