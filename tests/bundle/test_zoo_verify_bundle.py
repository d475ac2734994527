"""The Model Zoo's CI (``ci/verify_bundle.py`` of Project-MONAI/model-zoo) on this bundle, run as the Zoo runs it:
from the root of a Zoo checkout holding the bundle as ``models/<name>`` (the files of the release archive), in a
fresh process, with the schema where the CI's preparation puts it (``eval/schema.json``, here from tests/schema, so
nothing is downloaded) and MONAI's calls with the CI's arguments: the large-file step (``download_url`` of each
large_files.yml entry, ``fuzzy``), ``verify_metadata``, ``verify_net_in_out`` with MONAI's default ``n``,
``ckpt_export`` without ``key_in_ckpt``, ``torch.jit.load`` of the export. Then the export segments the sample as
bundle inference does, and the export commands of README.md and docs/README.md run as written.

Left out: the CI's version check against the Zoo's own ``model_info.json``, and its ``pipenv install`` of
``monai_version`` and ``pytorch_version`` (this environment is the one the bundle is tested with). The CI's default
config is ``configs/inference.json``: a YAML bundle is entered in the Zoo's ``ci/bundle_custom_data.py`` with
``{"config_file": "configs/inference.yaml"}``, which is what these calls use.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, run_module

from scripts.tools.release import NAME, build

pytestmark = pytest.mark.slow
NET_ID, CONFIG = "network_def", "configs/inference.yaml"
EXPORT = "models/verify_model.ts"  # where the CI writes its export
# The CI's steps on models/<argv[1]>, each printing its name once it passed.
ZOO_CI_STEPS = f"""
import os, sys
import torch
from monai.apps.utils import download_url
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out

bundle = os.path.join("models", sys.argv[1])
meta, config = os.path.join(bundle, "configs/metadata.json"), os.path.join(bundle, {CONFIG!r})
large_files = ConfigParser()
large_files.read_config(os.path.join(bundle, "large_files.yml"))
for entry in large_files.get()["large_files"]:
    path = entry.pop("path")
    download_url(**entry, filepath=os.path.join(bundle, path), fuzzy=True)
assert os.path.exists(meta)
print("STEP large files and directory")
verify_metadata(meta_file=meta, filepath=os.path.join(bundle, "eval/schema.json"))
print("STEP verify_metadata")
verify_net_in_out(net_id={NET_ID!r}, meta_file=meta, config_file=config, bundle_root=bundle)
print("STEP verify_net_in_out")
export = os.path.join(bundle, {EXPORT!r})
ckpt_export(
    net_id={NET_ID!r}, filepath=export, ckpt_file=os.path.join(bundle, "models/model.pt"), meta_file=meta,
    config_file=config, bundle_root=bundle,
)
print("STEP ckpt_export")
torch.jit.load(export)
print("STEP torch.jit.load")
"""
STEPS = ["large files and directory", "verify_metadata", "verify_net_in_out", "ckpt_export", "torch.jit.load"]
EXPORT_COMMAND = re.compile(r"^python -m monai\.bundle (ckpt_export|onnx_export|verify_net_in_out) .*$", re.M)


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The bundle in a Zoo checkout (its release archive unpacked into ``models/``, the schema in ``eval/``), and
    the CI's steps run on it from the checkout's root."""
    zoo = tmp_path_factory.mktemp("model_zoo")
    zipfile.ZipFile(build(zoo / "dist")).extractall(zoo / "models")
    bundle = zoo / "models" / NAME
    (bundle / "eval").mkdir()
    (bundle / "eval" / "schema.json").write_bytes(
        (REPO / "tests" / "schema" / "meta_schema_20240725.json").read_bytes()
    )
    result = subprocess.run(
        [sys.executable, "-c", ZOO_CI_STEPS, NAME], cwd=zoo, capture_output=True, text=True, encoding="utf-8"
    )
    return bundle, result


def test_every_step_of_the_zoo_ci_passes_without_a_deprecation_warning(zoo_run):
    bundle, result = zoo_run
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert re.findall(r"^STEP (.+)$", result.stdout, flags=re.M) == STEPS
    assert "deprecated" not in output.lower()


def _segmentation(output_dir: Path) -> np.ndarray:
    return np.asarray(nib.load(output_dir / "sub01" / "sub01_seg.nii.gz").dataobj)


def test_the_zoo_export_segments_the_sample_as_bundle_inference_does(zoo_run, tmp_path: Path):
    bundle, result = zoo_run
    assert result.returncode == 0, result.stderr[-4000:]
    plain, scripted = tmp_path / "pt", tmp_path / "ts"
    run_module("monai.bundle", "run", "inference", "--config_file", CONFIG, "--output_dir", str(plain),
               "--num_workers", "0", cwd=bundle)  # fmt: skip
    run_module("monai.bundle", "run", "inference", "--config_file", f"['{CONFIG}','configs/inference_ts.yaml']",
               "--ts_path", str(bundle / EXPORT), "--output_dir", str(scripted), "--num_workers", "0",
               cwd=bundle)  # fmt: skip
    weights, exported = _segmentation(plain), _segmentation(scripted)
    assert set(np.unique(weights)) - {0}, "the sample is segmented"
    np.testing.assert_array_equal(exported, weights)


def test_the_readmes_export_commands_run_as_written(zoo_run):
    """Every ckpt_export, onnx_export and verify_net_in_out command of README.md and docs/README.md, in the bundle as
    the Zoo holds it: none needs --key_in_ckpt or --n."""
    bundle, _ = zoo_run
    commands = {
        readme: [m.group(0) for m in EXPORT_COMMAND.finditer((REPO / readme).read_text(encoding="utf-8"))]
        for readme in ("README.md", "docs/README.md")
    }
    assert all(any(" ckpt_export " in c for c in listed) for listed in commands.values()), commands
    for command in dict.fromkeys(commands["README.md"] + commands["docs/README.md"]):
        assert "--key_in_ckpt" not in command and " --n " not in command, command
        run_module(*shlex.split(command)[2:], cwd=bundle)
