"""Average the weights of several trained copies of the network into one (a "model soup").

The shipped weights are the mean of three fine-tuning runs that started from the same weights and differ only in
their random seed and phantoms (docs/README.md): starting from one point, the runs stay in one basin of the loss,
so their mean is a working network that scored at least as well as the runs' median on most held-out measures,
at the cost of one network. Every file must hold the same keys and shapes (``torch.load(..., weights_only=True)``
state dicts, as training writes them).

    python -m scripts.training.average_weights OUT IN [IN ...]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from scripts.atomic import write_atomically


def average_state_dicts(paths: Sequence[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the state dicts in ``paths`` (float32)."""
    state_dicts = [torch.load(path, map_location="cpu", weights_only=True) for path in paths]
    keys = list(state_dicts[0])
    for path, state in zip(paths, state_dicts, strict=True):
        if list(state) != keys or any(state[k].shape != state_dicts[0][k].shape for k in keys):
            raise ValueError(f"{path} does not hold the same network as {paths[0]}")
    return {key: sum(state[key].float() for state in state_dicts) / len(state_dicts) for key in keys}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.training.average_weights", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("out", type=Path, help="the averaged weights (written whole or not at all)")
    parser.add_argument("inputs", type=Path, nargs="+", help="weights of the same network")
    args = parser.parse_args(argv)
    averaged = average_state_dicts(args.inputs)
    write_atomically(args.out, lambda path: torch.save(averaged, path))
    print(f"averaged {len(args.inputs)} networks into {args.out}")


if __name__ == "__main__":
    main()
