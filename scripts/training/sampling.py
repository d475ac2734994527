"""Draw training cases so that a chosen share of steps comes from partially labelled scans."""

from __future__ import annotations

from collections.abc import Sequence

from monai.data import DistributedSampler, DistributedWeightedRandomSampler
from torch.utils.data import Sampler, WeightedRandomSampler

from scripts.options import read_option


def is_partial(entry: dict) -> bool:
    """A datalist entry whose label covers only some muscles (it declares ``annotated``)."""
    return entry.get("annotated") is not None


def mixed_sampler(
    entries: Sequence[dict],
    partial_fraction: float | None,
    partial_ids: Sequence[str] | None = None,
    distributed: bool = False,
) -> Sampler | None:
    """A sampler drawing ``partial_fraction`` of each epoch's steps from partially labelled entries, or from the
    entries whose ``id`` is in ``partial_ids`` where given (the real scans, when phantoms are partial too).

    ``None`` (or a datalist with only one kind of entry) means plain shuffling, each case
    once per epoch: no sampler in one process (the loader shuffles), MONAI's
    ``DistributedSampler`` with ``distributed`` (each rank a disjoint shard, reshuffled every
    epoch). Otherwise cases are drawn with replacement, as many per epoch as there are
    entries, partially labelled ones with total probability ``partial_fraction``
    (``DistributedWeightedRandomSampler`` across ranks).
    """
    partial_fraction = read_option("partial_fraction", partial_fraction)  # its one range, that of the option
    partial = [is_partial(e) if partial_ids is None else e.get("id") in partial_ids for e in entries]
    n_partial = sum(partial)
    if partial_fraction is None or n_partial in (0, len(entries)):
        return DistributedSampler(entries, shuffle=True) if distributed else None
    n_full = len(entries) - n_partial
    weights = [partial_fraction / n_partial if p else (1 - partial_fraction) / n_full for p in partial]
    if distributed:
        return DistributedWeightedRandomSampler(entries, weights=weights)
    return WeightedRandomSampler(weights, num_samples=len(entries), replacement=True)
