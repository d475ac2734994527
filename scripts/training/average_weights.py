"""Average the weights of several trained copies of the network into one (a "model soup").

The shipped weights are the mean of three fine-tuning runs that started from the same weights and differ only in
their random seed and phantoms (docs/README.md): starting from one point, the runs stay in one basin of the loss,
so their mean is a working network that scored at least as well as the runs' median on most held-out measures,
at the cost of one network. The inputs are model files as training writes them (``models/model.pt`` with its card
``models/model.json`` beside it, or the ``{"model": ..., "model_card": ...}`` files of 0.3.0-0.3.1); all must hold
the same keys and shapes and carry the same card (voxel size, label map, network). The mean is written as a bare
state dict with that card beside it (``scripts/model_card.py``), ready for inference.

    python -m scripts.training.average_weights OUT IN [IN ...]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from scripts.errors import InputError
from scripts.model_card import SHA256_KEY, STAMP, card_path, read_model, write_model


def _without_sha256(card: dict) -> dict:
    return {k: v for k, v in card.items() if k != SHA256_KEY}


def average_models(paths: Sequence[Path]) -> tuple[dict[str, torch.Tensor], dict]:
    """The element-wise mean (float32) of the weights of the model files ``paths``, and the card they share (less
    the sha256 of each file)."""
    models = [read_model(path) for path in paths]
    (first, first_card), keys = models[0], list(models[0][0])
    for path, (state, card) in zip(paths, models, strict=True):
        if card is None:
            raise InputError(
                f"{path} has no model card ({card_path(path)}) to give the mean: {STAMP.format(path=path)}"
            )
        if list(state) != keys or any(state[k].shape != first[k].shape for k in keys):
            raise InputError(f"{path} does not hold the same network as {paths[0]}")
        if _without_sha256(card) != _without_sha256(first_card):
            raise InputError(
                f"the model card of {path}, {_without_sha256(card)}, is not that of {paths[0]}, "
                f"{_without_sha256(first_card)}"
            )
    averaged = {key: sum(state[key].float() for state, _ in models) / len(models) for key in keys}
    return averaged, _without_sha256(first_card)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.training.average_weights", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("out", type=Path, help="the averaged weights, their card beside (written whole or not at all)")
    parser.add_argument("inputs", type=Path, nargs="+", help="model files of the same network, with their cards")
    args = parser.parse_args(argv)
    try:
        averaged, card = average_models(args.inputs)
    except InputError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    write_model(args.out, lambda path: torch.save(averaged, path), card)
    print(f"averaged {len(args.inputs)} networks into {args.out}, their card in {card_path(args.out)}")


if __name__ == "__main__":
    main()
