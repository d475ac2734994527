"""The few torch.distributed calls the handlers need, each a no-op in a single process."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that writes shared files."""
    return not is_distributed() or dist.get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def gather_lists(items: list[Any]) -> list[Any]:
    """Every rank's ``items``, concatenated in rank order (the order of MONAI's metric buffer gathering)."""
    if not is_distributed():
        return list(items)
    gathered: list[list[Any]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, items)
    return [item for rank_items in gathered for item in rank_items]
