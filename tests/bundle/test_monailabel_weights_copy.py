"""The MONAI Label app's working copy of the bundle gets the shipped weights with their model card, and keeps the
weights fine-tuning wrote there. Runs without MONAI Label: its classes that monailabel_app/main.py builds on are
stood in for by empty ones (the server itself is tested in test_monailabel_app.py, in the MONAI Label install)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import REPO

from scripts.model_card import card_path, read_model

# What main.py imports from MONAI Label and FastAPI.
STAND_INS = {
    "fastapi": ["HTTPException"],
    "monailabel.interfaces.app": ["MONAILabelApp"],
    "monailabel.interfaces.datastore": ["Datastore"],
    "monailabel.interfaces.tasks.infer_v2": ["InferTask"],
    "monailabel.interfaces.tasks.train": ["TrainTask"],
    "monailabel.tasks.infer.bundle": ["BundleInferTask"],
    "monailabel.tasks.train.bundle": ["BundleTrainTask"],
}


@pytest.fixture()
def app(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    for name, classes in STAND_INS.items():
        if importlib.util.find_spec(name.split(".")[0]) is None:
            module = types.ModuleType(name)
            for cls in classes:
                setattr(module, cls, type(cls, (), {}))
            monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("monailabel_app_main", REPO / "monailabel_app" / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_working_copy_gets_the_weights_with_their_card_and_keeps_fine_tuned_ones(app, tmp_path: Path):
    copy = tmp_path / "copy"
    app.refresh_bundle_copy(str(REPO), str(copy))
    weights = copy / "models" / "model.pt"
    assert card_path(weights).is_file()
    assert read_model(weights)[1] == read_model(REPO / "models" / "model.pt")[1]

    fine_tuned = {k: v + 1 for k, v in read_model(weights)[0].items()}
    torch.save(fine_tuned, weights)
    app.refresh_bundle_copy(str(REPO), str(copy))
    assert all(torch.equal(torch.load(weights, weights_only=True)[k], v) for k, v in fine_tuned.items())
