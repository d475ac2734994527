"""Resume an interrupted training from the newest intact ``last_checkpoint_epoch=N.pt``."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader

logger = logging.getLogger(__name__)
LAST_CHECKPOINT = re.compile(r"last_checkpoint_epoch=(\d+)\.pt$")


def latest_checkpoint(output_dir: str | Path) -> Path:
    """The newest last-epoch checkpoint in ``output_dir`` that loads; a file cut off by a kill is passed over."""
    found = sorted(
        (int(m.group(1)), path)
        for path in Path(output_dir).glob("last_checkpoint_epoch=*.pt")
        if (m := LAST_CHECKPOINT.search(path.name))
    )
    for epoch, path in reversed(found):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
            return path
        except Exception as error:  # a truncated file from an interrupted save
            logger.warning("%s cannot be loaded (%s); trying an older checkpoint", path, error)
    raise FileNotFoundError(f"no usable last_checkpoint_epoch=N.pt in {output_dir} to resume from")


def attach_resume(trainer: Engine, output_dir: str | Path, objects: dict, device: torch.device | str) -> Path:
    """Make ``trainer`` start from the latest checkpoint: ``objects`` (model, optimizer, trainer) are restored with
    MONAI's ``CheckpointLoader`` (weights only), so training goes on at the next epoch up to the configured total."""
    path = latest_checkpoint(output_dir)
    CheckpointLoader(load_path=str(path), load_dict=objects, map_location=device).attach(trainer)
    logger.info("resuming from %s", path)
    return path
