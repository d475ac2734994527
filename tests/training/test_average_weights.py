"""Averaging trained copies of one network into the shipped weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scripts.training.average_weights import average_state_dicts, main


def _save(path: Path, **tensors: torch.Tensor) -> Path:
    torch.save(tensors, path)
    return path


def test_average_is_the_element_wise_mean_and_loads_into_the_network(tmp_path: Path):
    nets = [torch.nn.Conv3d(1, 2, 3) for _ in range(3)]
    paths = []
    for i, net in enumerate(nets):
        paths.append(tmp_path / f"{i}.pt")
        torch.save(net.state_dict(), paths[-1])
    main([str(tmp_path / "mean.pt"), *map(str, paths)])
    averaged = torch.load(tmp_path / "mean.pt", weights_only=True)
    expected = (nets[0].weight + nets[1].weight + nets[2].weight) / 3
    torch.testing.assert_close(averaged["weight"], expected.detach())
    torch.nn.Conv3d(1, 2, 3).load_state_dict(averaged)


def test_different_networks_are_refused(tmp_path: Path):
    first = _save(tmp_path / "a.pt", weight=torch.zeros(2, 3))
    other = _save(tmp_path / "b.pt", weight=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="same network"):
        average_state_dicts([first, other])
