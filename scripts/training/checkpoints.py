"""Checkpoints that survive a kill: written whole or not at all, each with its model card beside it, and resumed
from the newest intact one."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from ignite.engine import Engine
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointLoader, CheckpointSaver

from scripts.atomic import write_atomically
from scripts.errors import InputError
from scripts.model_card import ModelCard, card_path, write_model

logger = logging.getLogger(__name__)
LAST_CHECKPOINT = re.compile(r"last_checkpoint_epoch=(\d+)\.pt$")


def last_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """The last-epoch checkpoints in ``output_dir`` with their epochs, oldest first."""
    return sorted(
        (int(m.group(1)), path)
        for path in Path(output_dir).glob("last_checkpoint_epoch=*.pt")
        if (m := LAST_CHECKPOINT.search(path.name))
    )


def latest_checkpoint(output_dir: str | Path) -> Path:
    """The newest last-epoch checkpoint in ``output_dir`` that loads; a file cut off by a kill is passed over."""
    for epoch, path in reversed(last_checkpoints(output_dir)):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
            return path
        except Exception as error:  # a truncated file from an interrupted save
            logger.warning("%s cannot be loaded (%s); trying an older checkpoint", path, error)
    raise InputError(
        f"no usable last_checkpoint_epoch=N.pt in {output_dir} to resume from: give the --output_dir of the run to "
        "resume, or leave out --resume to start afresh"
    )


def attach_resume(
    trainer: Engine, saver: AtomicCheckpointSaver, output_dir: str | Path, objects: dict, device: torch.device | str
) -> Path:
    """Make ``trainer`` start from the latest checkpoint: ``objects`` (model, optimizer, trainer) are restored with
    MONAI's ``CheckpointLoader`` (weights only), so training goes on at the next epoch up to the configured total.
    ``saver`` (the last-epoch saver) counts the checkpoints already there among those it keeps, so they are
    replaced in turn rather than left behind."""
    path = latest_checkpoint(output_dir)
    CheckpointLoader(load_path=str(path), load_dict=objects, map_location=device).attach(trainer)
    saver.keep_rotating(output_dir)
    logger.info("resuming from %s", path)
    return path


class AtomicDiskSaver(BaseSaveHandler):
    """Ignite save handler that never leaves a broken or missing checkpoint behind a kill.

    Each checkpoint is written to a temporary name beside its own and renamed when complete
    (``write_atomically``), so a file under its final name is always whole. Ignite's ``Checkpoint``, once it
    holds ``n_saved`` files, asks to remove the oldest *before* it writes the next one; here that removal waits
    until the new file is complete. ``filename`` fixes the name of every save (MONAI's ``key_metric_filename``,
    e.g. ``model.pt``). MONAI's own saver writes in place (``atomic=False``), hence this class. With a
    ``model_card``, every file gets its card beside it (``scripts.model_card.write_model``), removed with it.
    """

    def __init__(self, dirname: str | Path, filename: str | None = None, model_card: ModelCard | None = None) -> None:
        self.dirname, self.filename, self.model_card = Path(dirname), filename, model_card
        self.pending_removal: list[str] = []

    def __call__(self, checkpoint: dict, filename: str, metadata: dict | None = None) -> None:
        name = self.filename or filename
        if self.model_card is None:
            write_atomically(self.dirname / name, lambda path: torch.save(checkpoint, path))
        else:
            write_model(self.dirname / name, lambda path: torch.save(checkpoint, path), self.model_card.state_dict())
        for old in self.pending_removal:
            if old != name:
                (self.dirname / old).unlink(missing_ok=True)
                card_path(self.dirname / old).unlink(missing_ok=True)
        self.pending_removal.clear()

    def remove(self, filename: str) -> None:
        self.pending_removal.append(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments, same file names) writing through ``AtomicDiskSaver``, each file
    with ``model_card`` beside it where one is given. A ``save_dict`` of the network alone is saved as its bare
    state dict (Ignite saves a single object so), the Model Zoo's form of ``models/model.pt``."""

    def __init__(self, save_dir: str, save_dict: dict, model_card: ModelCard | None = None, **kwargs) -> None:
        super().__init__(save_dir, save_dict, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler = AtomicDiskSaver(save_dir, checkpoint.save_handler.filename, model_card)

    def keep_rotating(self, output_dir: str | Path) -> None:
        """Take the last-epoch checkpoints in ``output_dir`` (those of the run being resumed) as saved by this saver,
        so that it removes the oldest of them once it holds more than ``n_saved``, as within one run. Ignite's
        ``Checkpoint`` state is a list of (priority, file name) pairs; the priority of a last-epoch checkpoint is its
        epoch."""
        checkpoint = self._interval_checkpoint
        (key,) = checkpoint.state_dict()  # "saved" or "_saved", by Ignite release
        checkpoint.load_state_dict({key: [(epoch, path.name) for epoch, path in last_checkpoints(output_dir)]})
