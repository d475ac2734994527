"""The MONAI Model Zoo's acceptance checks, written as our own tests, and the exported models."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import yaml
from conftest import REPO, SMALL_SHAPE, SMALL_SPACING, run_module
from monai.bundle import ConfigParser, ConfigWorkflow

from scripts.cohort_run import file_sha256
from scripts.phantom import make_phantom
from scripts.release import build

METADATA = json.loads((REPO / "configs" / "metadata.json").read_text(encoding="utf-8"))
SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
MAX_FILE_BYTES = 25 * 1024 * 1024
WEIGHTS = REPO / "models" / "model.pt"


def bundle_cli(*args: str) -> subprocess.CompletedProcess:
    return run_module("monai.bundle", *args)


@pytest.mark.parametrize("path", ["configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.yaml"])
def test_required_and_preferred_files_exist(path: str):
    assert (REPO / path).is_file()


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_version_is_in_the_changelog_newest_first():
    versions = list(METADATA["changelog"])
    assert METADATA["version"] == versions[0]
    assert versions == sorted(versions, key=_version_key, reverse=True)


def test_metadata_has_every_key_the_bundle_specification_requires():
    for key in ("version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version"):
        assert METADATA[key], key
    for key in ("task", "description", "authors", "copyright"):
        assert isinstance(METADATA[key], str) and METADATA[key], key
    assert METADATA["schema"] == SCHEMA
    formats = METADATA["network_data_format"]
    assert formats["inputs"]["image"]["num_channels"] == 1
    assert formats["outputs"]["pred"]["num_channels"] == 9
    assert len(formats["outputs"]["pred"]["channel_def"]) == 9


@pytest.mark.parametrize("config, kind", [("train.yaml", "train"), ("inference.yaml", "infer")])
def test_configs_have_every_property_monai_checks(config: str, kind: str, cohort: Path, tmp_path: Path):
    workflow = ConfigWorkflow(
        config_file=str(REPO / "configs" / config),
        meta_file=str(REPO / "configs" / "metadata.json"),
        workflow_type=kind,
        bundle_root=str(REPO),
        dataset_dir=str(cohort),
        output_dir=str(tmp_path),
        spacing=list(SMALL_SPACING),
    )
    workflow.initialize()
    assert workflow.check_properties() == []


def test_network_input_and_output_match_the_metadata():
    result = bundle_cli(
        "verify_net_in_out",
        "network_def",
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        "configs/inference.yaml",
    )
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_no_file_in_git_is_over_25_mb():
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    files = [REPO / name for name in listed.stdout.decode().split("\0") if name]
    assert files and all(f.stat().st_size <= MAX_FILE_BYTES for f in files if f.is_file())


def test_weights_are_listed_with_their_sha256():
    entries = yaml.safe_load((REPO / "large_files.yml").read_text(encoding="utf-8"))["large_files"]
    (entry,) = [e for e in entries if e["path"] == "models/model.pt"]
    assert entry["hash_type"] == "sha256"
    assert entry["hash_val"] == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()


def test_docs_readme_has_the_model_zoo_sections():
    headings = set(re.findall(r"^## (.+)$", (REPO / "docs" / "README.md").read_text(encoding="utf-8"), flags=re.M))
    for section in (
        "Model Overview",
        "Data",
        "Training configuration",
        "Performance",
        "MONAI Bundle Commands",
        "System Configuration",
        "Limitations",
        "References",
        "License",
    ):
        assert section in headings, section


@pytest.fixture(scope="module")
def network_and_input() -> tuple[torch.nn.Module, torch.Tensor]:
    """The shipped weights in the bundle's network, and a normalised phantom volume padded to a multiple of 16."""
    network = ConfigParser({"n": ConfigParser.load_config_file(REPO / "configs" / "inference.yaml")["network_def"]})
    network = network.get_parsed_content("n")
    network.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    network.eval()
    image = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=5).inphase
    image = (image - np.percentile(image, 1)) / (np.percentile(image, 99) - np.percentile(image, 1))
    image = np.pad(image, [(0, -s % 16) for s in image.shape])
    return network, torch.as_tensor(image[None, None], dtype=torch.float32)


def test_torchscript_export_gives_the_same_segmentation(network_and_input, tmp_path: Path):
    network, image = network_and_input
    bundle_cli(
        "ckpt_export", "network_def",
        "--filepath", str(tmp_path / "model.ts"),
        "--ckpt_file", str(WEIGHTS),
        "--meta_file", "configs/metadata.json",
        "--config_file", "configs/inference.yaml",
    )  # fmt: skip
    with torch.no_grad():
        expected, exported = network(image), torch.jit.load(tmp_path / "model.ts")(image)
    assert torch.equal(expected.argmax(1), exported.argmax(1))


def test_onnx_export_agrees_voxelwise(network_and_input, tmp_path: Path):
    network, image = network_and_input
    bundle_cli(
        "onnx_export", "network_def",
        "--filepath", str(tmp_path / "model.onnx"),
        "--ckpt_file", str(WEIGHTS),
        "--meta_file", "configs/metadata.json",
        "--config_file", "configs/inference.yaml",
        "--input_shape", json.dumps(list(image.shape)),
    )  # fmt: skip
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: image.numpy()})
    with torch.no_grad():
        expected = network(image).numpy()
    agreement = float(np.mean(logits.argmax(1) == expected.argmax(1)))
    difference = np.abs(logits - expected).max()
    print(f"ONNX Runtime vs PyTorch: argmax agreement {agreement:.6f}, max logit difference {difference:.3g}")
    assert agreement >= 0.9999


def test_release_archive_holds_the_bundle_only(tmp_path: Path):
    archive = build(tmp_path)
    assert archive.name == f"lumbar_muscle_dixon_segmentation_v{METADATA['version']}.zip"
    names = zipfile.ZipFile(archive).namelist()
    assert "lumbar_muscle_dixon_segmentation/configs/metadata.json" in names
    assert "lumbar_muscle_dixon_segmentation/models/model.pt" in names
    assert [n for n in names if "/monailabel_app/" in n] == ["lumbar_muscle_dixon_segmentation/monailabel_app/main.py"]
    assert not [n for n in names if "/tests/" in n or "__pycache__" in n or n.endswith(".pyc")]
    printed = subprocess.run(
        [sys.executable, "-m", "scripts.release", "--out", str(tmp_path / "cli")],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout
    assert file_sha256(tmp_path / "cli" / archive.name) in printed
