"""What a saved model must be run with, saved inside the model file: the voxel size it was trained at, its label
map, its number of classes and its network.

A model file (``models/model.pt``, written by training) is ``{"model": weights, "model_card": card}``, the card of
plain numbers, strings, lists and dicts, so that ``torch.load(..., weights_only=True)`` reads it whole. MONAI's
``CheckpointLoader`` (``load_dict={"model": network}``), MONAI Label's loader (key ``model``) and ``monai.bundle
ckpt_export --key_in_ckpt model`` take the weights from it. A bare state dict (a model file written before cards)
still loads, but says nothing about its voxel size: inference then needs ``--spacing``, or the file a card:

    python -m scripts.model_card models/model.pt --spacing 3.75 3.75 7.8

which checks that the weights fit the bundle's network (``configs/inference.yaml``) and writes the file anew
(whole or not at all) with its weights and the card.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from scripts import BUNDLE_ROOT
from scripts.atomic import write_atomically
from scripts.errors import InputError
from scripts.labels import LABELS, NUM_CLASSES

WEIGHTS_KEY = "model"
CARD_KEY = "model_card"
STAMP = "python -m scripts.model_card {path} --spacing X Y Z"


def _plain(value: Any) -> Any:
    """``value`` as JSON-like data (tuples as lists), or None when it is not made of numbers, strings and lists."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return None if any(i is None for i in items) else items
    return None


def describe_network(network: torch.nn.Module) -> dict[str, Any]:
    """The network's class and those of its constructor's arguments that it keeps as attributes of the same name
    (for MONAI's UNet: channels, strides, num_res_units, norm, ...). A data-parallel wrapper is looked through."""
    network = getattr(network, "module", network)
    kind = type(network)
    arguments = {
        name: value
        for name in inspect.signature(kind.__init__).parameters
        if name != "self" and (value := _plain(getattr(network, name, None))) is not None
    }
    return {"class": f"{kind.__module__}.{kind.__qualname__}", **arguments}


class ModelCard:
    """The card of a model trained at ``spacing`` (mm) with ``network``, as an object Ignite's checkpoint savers
    store beside the weights (``save_dict={"model": network, "model_card": card}``)."""

    def __init__(self, spacing: Sequence[float], network: torch.nn.Module) -> None:
        self.card = {
            "spacing_mm": [float(s) for s in spacing],
            "labels": {str(k): name for k, name in LABELS.items()},
            "num_classes": NUM_CLASSES,
            "network": describe_network(network),
        }

    def state_dict(self) -> dict[str, Any]:
        return dict(self.card)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.card = dict(state)


def read_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[dict, dict | None]:
    """The weights (a state dict) and the card (None for a bare state dict) of the model file ``path``."""
    if not Path(path).is_file():
        raise InputError(f"model file not found: {path}")
    content = torch.load(path, map_location=device, weights_only=True)
    if isinstance(content, dict) and WEIGHTS_KEY in content:
        return content[WEIGHTS_KEY], content.get(CARD_KEY)
    return content, None


def load_weights(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """The weights of the model file ``path`` (with a card or without), for ``load_state_dict``."""
    return read_model(path, device)[0]


def trained_spacing(path: str | Path) -> list[float]:
    """The voxel size (mm) the model in ``path`` was trained at, from its card."""
    _, card = read_model(path)
    if card is None:
        raise InputError(
            f"{path} does not say the voxel size its weights were trained at (a model file written before they "
            f"carried it): give it with --spacing, or write it into the file once: {STAMP.format(path=path)}"
        )
    return card["spacing_mm"]


def check_model(path: str | Path, spacing: Sequence[float], network: torch.nn.Module) -> None:
    """Refuse to run the model in ``path`` at ``spacing`` with ``network`` (as built by the configs) where its card
    says otherwise: another voxel size, label map, number of classes or network (for a TorchScript ``network``,
    the first three). Nothing to check without a card."""
    _, card = read_model(path)
    if card is None:
        return
    ours = ModelCard(spacing, network).state_dict()
    problems = []
    if [float(s) for s in spacing] != card["spacing_mm"]:
        problems.append(
            f"--spacing {list(spacing)} differs from the voxel size the weights were trained at, "
            f"{card['spacing_mm']}: leave --spacing out to run at theirs"
        )
    # A TorchScript network (inference_ts.yaml) keeps no constructor arguments to compare.
    scripted = isinstance(network, torch.jit.ScriptModule)
    for key, what in (("labels", "label map"), ("num_classes", "number of classes"), ("network", "network")):
        if card.get(key) != ours[key] and not (scripted and key == "network"):
            problems.append(f"their {what} is {card.get(key)}, this bundle's is {ours[key]}")
    if problems:
        raise InputError(f"the model {path} cannot be used as configured:\n  " + "\n  ".join(problems))


def stamp(path: str | Path, spacing: Sequence[float], network: torch.nn.Module) -> Path:
    """Write the model file ``path`` anew with its weights and a card for ``spacing`` and ``network``; the weights
    must load into ``network`` (strictly)."""
    weights, _ = read_model(path)
    network.load_state_dict(weights)
    content = {WEIGHTS_KEY: weights, CARD_KEY: ModelCard(spacing, network).state_dict()}
    return write_atomically(Path(path), lambda temporary: torch.save(content, temporary))


def main(argv: list[str] | None = None) -> None:
    from monai.bundle import ConfigParser

    parser = argparse.ArgumentParser(prog="python -m scripts.model_card", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="the model file, e.g. models/model.pt")
    parser.add_argument("--spacing", type=float, nargs=3, required=True, help="voxel size (mm) it was trained at")
    parser.add_argument("--config_file", type=Path, default=BUNDLE_ROOT / "configs" / "inference.yaml")
    args = parser.parse_args(argv)
    network = ConfigParser({"n": ConfigParser.load_config_file(args.config_file)["network_def"]}).get_parsed_content(
        "n"
    )
    stamp(args.path, args.spacing, network)
    print(f"{args.path}: weights with their card, trained at {args.spacing} mm")


if __name__ == "__main__":
    main()
