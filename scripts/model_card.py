"""What a saved model must be run with, kept in a JSON file beside the model file: the voxel size it was trained at,
its label map, its number of classes and its network.

A model file (``models/model.pt``, written by training) is the network's bare state dict, as the MONAI Model Zoo
expects (``monai.bundle ckpt_export`` without ``--key_in_ckpt``); its card is the file of the same name ending in
``.json`` beside it (``models/model.json``), plain numbers, strings, lists and dicts, with the sha256 of the model
file it describes, so that a card left beside other weights is refused rather than believed. Training writes each
model file with its card, each whole or not at all (``write_model``). Training's ``last_checkpoint_epoch=N.pt``
(weights, optimizer and epoch, to resume) get a card beside them the same way.

Model files of 0.3.0 and 0.3.1 hold weights and card in one file, ``{"model": weights, "model_card": card}``: they
are read as before (with a warning), and turned into the layout above, the weights unchanged, by

    python -m scripts.model_card PATH

A bare state dict without a card (a model file written before cards, or one from elsewhere) says nothing of its
voxel size: inference, evaluation and fine-tuning then need ``--spacing`` and check nothing else, or the file gets
a card once with

    python -m scripts.model_card PATH --spacing X Y Z

which checks that the weights fit the bundle's network (``configs/inference.yaml``) and writes the card beside
them (``--spacing`` also replaces the voxel size of a card already there).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from scripts import BUNDLE_ROOT
from scripts.atomic import write_atomically
from scripts.errors import InputError
from scripts.labels import LABELS, NUM_CLASSES

WEIGHTS_KEY = "model"  # the weights' key in a nested file (training's last checkpoints, 0.3.0-0.3.1 model files)
CARD_KEY = "model_card"  # the card's key in a 0.3.0-0.3.1 model file
SHA256_KEY = "weights_sha256"
STAMP = "python -m scripts.model_card {path} --spacing X Y Z"
CONVERT = "python -m scripts.model_card {path}"


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
    """The card of a model trained at ``spacing`` (mm) with ``network``; training's checkpoint savers write it
    beside every model file (``AtomicCheckpointSaver(..., model_card=card)``)."""

    def __init__(self, spacing: Sequence[float], network: torch.nn.Module) -> None:
        self.card = {
            "spacing_mm": [float(s) for s in spacing],
            "labels": {str(k): name for k, name in LABELS.items()},
            "num_classes": NUM_CLASSES,
            "network": describe_network(network),
        }

    def state_dict(self) -> dict[str, Any]:
        return dict(self.card)


def card_path(path: str | Path) -> Path:
    """Where the card of the model file ``path`` is: beside it, its name ending in ``.json`` instead
    (``models/model.pt`` -> ``models/model.json``)."""
    return Path(path).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_model(path: str | Path, write: Callable[[Path], object], card: dict[str, Any]) -> Path:
    """Write the model file ``path`` with ``write`` (given a temporary path) and ``card`` beside it with the file's
    sha256, each whole or not at all: the weights are written under a temporary name, the card is written and
    renamed, then the weights are renamed. A run stopped between the two renames leaves a card naming weights that
    are not there, which is refused, never a card believed for other weights."""

    def weights_then_card(temporary: Path) -> None:
        write(temporary)
        text = json.dumps({**card, SHA256_KEY: file_sha256(temporary)}, indent=1)
        write_atomically(card_path(path), lambda card_file: card_file.write_text(text + "\n", encoding="utf-8"))

    return write_atomically(Path(path), weights_then_card)


def _read_file(path: str | Path, device: torch.device | str) -> tuple[dict, dict | None]:
    """The weights in the model file ``path`` and the card inside it (0.3.0-0.3.1 files; None otherwise)."""
    if not Path(path).is_file():
        raise InputError(f"model file not found: {path}")
    content = torch.load(path, map_location=device, weights_only=True)
    if isinstance(content, dict) and WEIGHTS_KEY in content:
        return content[WEIGHTS_KEY], content.get(CARD_KEY)
    return content, None


def _card_beside(path: str | Path) -> dict | None:
    """The card beside the model file ``path`` (None where there is none); refused when it names other weights."""
    beside = card_path(path)
    if not beside.is_file():
        return None
    card = json.loads(beside.read_text(encoding="utf-8"))
    if card.get(SHA256_KEY) != file_sha256(path):
        raise InputError(
            f"the model card {beside} was written for other weights than those in {path} (its {SHA256_KEY} is not "
            f"the file's): put back the model file it belongs to, or write a card for these weights: "
            f"{STAMP.format(path=path)}"
        )
    return card


def read_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[dict, dict | None]:
    """The weights (a state dict) and the card of the model file ``path``: the card beside it, or inside it for a
    0.3.0-0.3.1 file (read with a warning saying how to convert it); None for a bare state dict without a card."""
    weights, inside = _read_file(path, device)
    if inside is None:
        return weights, _card_beside(path)
    warnings.warn(
        f"{path} holds its weights and model card in one file (the layout of bundle versions 0.3.0-0.3.1); it is "
        f"read as before. To turn it into the Model Zoo layout (the bare state dict, its card in {card_path(path)}), "
        f"weights unchanged: {CONVERT.format(path=path)}",
        stacklevel=1,  # one location: shown once per file, however often it is read
    )
    return weights, inside


def load_weights(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """The weights of the model file ``path`` (with a card or without), for ``load_state_dict``."""
    return read_model(path, device)[0]


def trained_spacing(path: str | Path) -> list[float]:
    """The voxel size (mm) the model in ``path`` was trained at, from its card."""
    _, card = read_model(path)
    if card is None:
        raise InputError(
            f"{path} does not say the voxel size its weights were trained at (no model card {card_path(path)} "
            f"beside it): give it with --spacing, or write the card once: {STAMP.format(path=path)}"
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


def stamp(path: str | Path, spacing: Sequence[float] | None, network: torch.nn.Module) -> Path:
    """Write the model file ``path`` anew as its bare weights, with a card beside it for ``spacing`` (None: the
    voxel size of the card it has, inside or beside it) and ``network``; the weights must load into ``network``
    (strictly) and are saved unchanged."""
    if spacing is None:
        spacing = trained_spacing(path)
    weights, _ = _read_file(path, "cpu")
    network.load_state_dict(weights)
    return write_model(path, lambda temporary: torch.save(weights, temporary), ModelCard(spacing, network).state_dict())


def main(argv: list[str] | None = None) -> None:
    from monai.bundle import ConfigParser

    parser = argparse.ArgumentParser(prog="python -m scripts.model_card", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="the model file, e.g. models/model.pt")
    parser.add_argument(
        "--spacing", type=float, nargs=3, help="voxel size (mm) it was trained at (default: that of its card)"
    )
    parser.add_argument("--config_file", type=Path, default=BUNDLE_ROOT / "configs" / "inference.yaml")
    args = parser.parse_args(argv)
    network = ConfigParser({"n": ConfigParser.load_config_file(args.config_file)["network_def"]}).get_parsed_content(
        "n"
    )
    try:
        stamp(args.path, args.spacing, network)
    except InputError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    card = read_model(args.path)[1]
    print(f"{args.path}: the bare state dict; its card, trained at {card['spacing_mm']} mm: {card_path(args.path)}")


if __name__ == "__main__":
    main()
