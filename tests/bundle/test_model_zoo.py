"""The MONAI Model Zoo's acceptance checks, written as our own tests: metadata.json against the Zoo's schema and
this bundle's own (tests/schema/), and against the files it describes; large_files.yml, docs/README.md,
docs/data_license.txt; the ONNX export. The Zoo's CI itself, run on the bundle as the Zoo runs it:
test_zoo_verify_bundle.py."""

from __future__ import annotations

import copy
import hashlib
import json
import math
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
from monai.apps.utils import download_url
from monai.bundle import ConfigParser, ConfigWorkflow
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from scripts.inference.cohort_run import file_sha256
from scripts.model_card import load_weights
from scripts.phantom import make_phantom
from scripts.tools.release import build

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


# --- What configs/metadata.json, large_files.yml, docs/README.md and docs/data_license.txt say, checked against the
# Model Zoo's schema, this bundle's own stricter one (tests/schema/README.md says which is which) and the files they
# describe. Each *_problems function lists what is wrong; an empty list is a pass.
SCHEMAS = REPO / "tests" / "schema"
ZOO_SCHEMA = SCHEMAS / "meta_schema_20240725.json"
OWN_SCHEMA = SCHEMAS / "bundle_metadata.json"
README = (REPO / "docs" / "README.md").read_text(encoding="utf-8")
DATA_LICENSE = (REPO / "docs" / "data_license.txt").read_text(encoding="utf-8")
LARGE_FILES = yaml.safe_load((REPO / "large_files.yml").read_text(encoding="utf-8"))["large_files"]
# Used only by the exports and their tests (onnx*, requirements-dev.txt) and by the MONAI Label app (its own
# requirements file): never required. metadata.json has no list of them: MONAI 1.6 reads optional_packages_version as
# required_packages_version (warning, and dropping the real one), and the Zoo's CI installs both lists alike.
OPTIONAL_PACKAGES = {"onnx", "onnxscript", "onnxruntime", "monailabel"}
DEPRECATED_PACKAGES_KEY = "optional_packages_version"
# docs/README.md's section order: the Model Zoo template's sections in its order, this bundle's own in between.
README_ORDER = [
    "Model Overview",
    "Data",
    "Training configuration",
    "Evaluation",
    "Performance",
    "MONAI Bundle Commands",
    "System Configuration",
    "Limitations",
    "Citation Info",
    "References",
    "License",
]
# Columns of docs/README.md's Dice tables, in label order 1-8, and the rows of the shipped weights' table that
# eval_metrics holds, by the prefix of their keys.
MUSCLE_COLUMNS = ["LP", "LI", "LQL", "LES+M", "RP", "RI", "RQL", "RES+M"]
EVAL_ROWS = {
    "validation cases, median": "validation_median_dice",
    "TUM02": "tum02_trained_on_dice",
}
BALERDI_CITED = re.compile(r"doi:10\.|[Yy]ear, journal and DOI: not available")


def schema_problems(metadata: dict) -> list[str]:
    """Validation errors of ``metadata`` against the Zoo's schema and this bundle's own, each by its draft."""
    from jsonschema import validators

    problems = [] if metadata.get("schema") == SCHEMA else [f"schema is not {SCHEMA}"]
    for path in (ZOO_SCHEMA, OWN_SCHEMA):
        schema = json.loads(path.read_text(encoding="utf-8"))
        validator = validators.validator_for(schema)(schema)
        for error in validator.iter_errors(metadata):
            problems.append(f"{path.name}: /{'/'.join(map(str, error.absolute_path))}: {error.message}")
    return problems


def _transforms(section: dict) -> dict[str, dict]:
    """The components of a Compose section of a config, by target (references to other sections left out)."""
    return {t["_target_"]: t for t in section["transforms"] if isinstance(t, dict)}


def network_format_problems(metadata: dict) -> list[str]:
    """Where network_data_format disagrees with what configs/inference.yaml feeds the network and writes."""
    config = yaml.safe_load((REPO / "configs" / "inference.yaml").read_text(encoding="utf-8"))
    network, pre, post = (
        config["network_def"],
        _transforms(config["preprocessing"]),
        _transforms(config["postprocessing"]) | _transforms(config["case_writer"]["transform"]),
    )
    formats = metadata["network_data_format"]
    image, pred = formats["inputs"]["image"], formats["outputs"]["pred"]
    written = formats.get("post_processed_outputs", {}).get("pred", {})
    scaling = pre["ScaleIntensityRangePercentilesd"]
    multiple = math.prod(network["strides"])  # each stride-2 level halves the grid: the input must divide by all
    # The Zoo checks the shape with n = 1: at one multiple a side the deepest level is one voxel, which instance
    # normalisation refuses; at two it is 2 x 2 x 2.
    smallest = 2 * multiple
    expected = {
        "input channels": (image["num_channels"], network["in_channels"]),
        "input patch data (roi_size null: the whole volume)": (image["is_patch_data"], config["roi_size"] is not None),
        "output patch data": (pred["is_patch_data"], config["roi_size"] is not None),
        "input value range (clip false: unbounded)": (
            image["value_range"],
            [scaling["b_min"], scaling["b_max"]] if scaling["clip"] else [],
        ),
        "input spatial shape": (image["spatial_shape"], [f"{smallest}*n"] * 3),
        "padding multiple": (pre["DivisiblePadd"]["k"], multiple),
        "output spatial shape": (pred["spatial_shape"], [f"{smallest}*n"] * 3),
        "output channels": (pred["num_channels"], network["out_channels"]),
        "output channel_def": (sorted(map(int, pred["channel_def"])), list(range(network["out_channels"]))),
        "output format (one score per class: softmax over the channels follows)": (
            pred["format"],
            "labels" if post["Activationsd"]["softmax"] else "?",
        ),
        "written format (the label map SaveSegmentationd writes: one channel)": (
            (written.get("format"), written.get("num_channels")),
            ("segmentation", 1) if "scripts.inference.outputs.SaveSegmentationd" in post else "?",
        ),
        "written dtype": (
            written.get("dtype"),
            post["scripts.inference.outputs.SaveSegmentationd"]["output_dtype"][7:],
        ),
        "written values": (written.get("value_range"), [0, network["out_channels"] - 1]),
    }
    return [
        f"{what}: metadata says {said!r}, the config {truth!r}"
        for what, (said, truth) in expected.items()
        if said != truth
    ]


def _requirements(path: Path) -> dict[str, Requirement]:
    lines = (line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return {canonicalize_name(r.name): r for r in map(Requirement, filter(None, lines))}


def package_problems(metadata: dict) -> list[str]:
    """Required packages against requirements.txt, no optional list, and the MONAI Label extra's pinned version."""
    requirements = _requirements(REPO / "requirements.txt")
    needed = set(requirements) - {"torch", "monai", "numpy", "pytest"} - OPTIONAL_PACKAGES
    needed |= {"fire"} & requirements["monai"].extras  # the monai.bundle command line
    required = {canonicalize_name(n): v for n, v in metadata["required_packages_version"].items()}
    problems = []
    if set(required) != needed:
        problems.append(
            f"required_packages_version: missing {needed - set(required)}, not needed {set(required) - needed}"
        )
    if DEPRECATED_PACKAGES_KEY in metadata:
        problems.append(f"{DEPRECATED_PACKAGES_KEY}: MONAI reads it as required_packages_version")
    versions = {**required, "torch": metadata["pytorch_version"], "numpy": metadata["numpy_version"]}
    versions["monai"] = metadata["monai_version"]
    for name, version in versions.items():
        if name in requirements and not requirements[name].specifier.contains(version, prereleases=True):
            problems.append(f"{name} {version} is outside requirements.txt's {requirements[name].specifier}")
    label_pin = re.search(r"monailabel==([\d.]+)", (REPO / "requirements-monailabel.txt").read_text(encoding="utf-8"))
    version = metadata.get("supported_apps", {}).get("monailabel")
    if version != label_pin.group(1):
        problems.append(
            f"supported_apps monailabel {version} is not the {label_pin.group(1)} requirements-monailabel.txt installs"
        )
    return problems


def _muscle_key(name: str) -> str:
    return re.sub(r"[^a-z]+", "_", name).strip("_")


def docs_dice_table(readme: str, channel_def: dict) -> dict[str, float]:
    """The shipped weights' validation Dice from docs/README.md ('The shipped weights' in Performance), keyed as
    eval_metrics keys them; '–' cells (not scored) give no key."""
    section = re.search(r"^### The shipped weights.*?(?=^### )", readme, flags=re.M | re.S)
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.group(0).splitlines()
            if line.startswith("|") and not line.startswith("| ---")] if section else []  # fmt: skip
    if not rows or rows[0][1:] != MUSCLE_COLUMNS:
        return {}
    muscles = [_muscle_key(channel_def[str(label)]) for label in range(1, 9)]
    table = {}
    for label, *cells in rows[1:]:
        prefix = next((p for row, p in EVAL_ROWS.items() if row in label), None)
        for muscle, cell in zip(muscles, cells):
            if prefix and cell != "–":
                table[f"{prefix}_{muscle}"] = float(cell)
    return table


def eval_metrics_problems(metadata: dict, readme: str = README) -> list[str]:
    table = docs_dice_table(readme, metadata["network_data_format"]["outputs"]["pred"]["channel_def"])
    if not table:
        return ["docs/README.md has no Dice table of the shipped weights with the columns " + " ".join(MUSCLE_COLUMNS)]
    if metadata["eval_metrics"] != table:
        return [
            f"eval_metrics {metadata['eval_metrics']} are not docs/README.md's table of the shipped weights {table}"
        ]
    return []


def author_problems(metadata: dict) -> list[str]:
    """Every git author is named in authors (nothing to compare outside a git checkout)."""
    log = subprocess.run(["git", "log", "--format=%an"], cwd=REPO, capture_output=True, text=True)
    names = set(log.stdout.split("\n")) - {""} if log.returncode == 0 else set()
    return [
        f"authors does not name the git author {name!r}" for name in sorted(names) if name not in metadata["authors"]
    ]


def metadata_problems(metadata: dict) -> list[str]:
    checks = (schema_problems, network_format_problems, package_problems, eval_metrics_problems, author_problems)
    return [problem for check in checks for problem in check(metadata)]


def large_files_problems(entries: list[dict]) -> list[str]:
    """Each entry has a real url: an https address, or, for a file that ships in the bundle, its own path there."""
    problems = []
    for entry in entries:
        url, path = entry.get("url", ""), entry["path"]
        if not (url.startswith("https://") or (url == path and (REPO / path).is_file())):
            problems.append(f"{path}: url {url!r} is neither an https address nor the file's place in the bundle")
    return problems


def _section(text: str, heading: str) -> str:
    found = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", text, flags=re.M | re.S)
    return found.group(1).strip() if found else ""


def readme_problems(readme: str, metadata: dict = METADATA) -> list[str]:
    """docs/README.md: the Zoo template's order and sections, the authors of metadata.json, a TensorRT statement."""
    headings = re.findall(r"^## (.+)$", readme, flags=re.M)
    problems = [f"section {s!r} missing" for s in README_ORDER if s not in headings]
    present = [h for h in headings if h in README_ORDER]
    if present != [s for s in README_ORDER if s in present]:
        problems.append(f"sections out of order: {present}")
    if headings and headings[-1] != "License":
        problems.append(f"{headings[-1]!r} comes after License")
    preamble = readme.split("\n## ", 1)[0]
    if metadata["authors"] not in _section(preamble, "Authors"):
        problems.append("no '### Authors' under the title naming metadata.json's authors")
    if not _section(preamble, "Tags"):
        problems.append("no '### Tags' under the title")
    if not re.search(r"@(software|article|misc)\{", _section(readme, "Citation Info")):
        problems.append("Citation Info gives no citation entry")
    balerdi = [line for line in _section(readme, "References").split("\n- ") if "Balerdi" in line]
    if not balerdi or not BALERDI_CITED.search(" ".join(balerdi[0].split())):
        problems.append("References: Balerdi et al. has neither a DOI nor a 'not available' note")
    if "TensorRT" not in _section(readme, "System Configuration"):
        problems.append("System Configuration does not say whether TensorRT is supported")
    return problems


def data_license_problems(text: str) -> list[str]:
    """docs/data_license.txt names the licence TUM02 came under and what is known of MyoSegmenTUM spine's own."""
    flat = " ".join(text.split())
    problems = []
    if not re.search(r"License of TUM02 as this bundle obtained it: (Apache-2\.0|CC[- ]BY[-\w.]*)", flat):
        problems.append("no licence named for TUM02 (MyoSegmenTUM spine) as used here")
    if not re.search(r"License of the original MyoSegmenTUM spine database: \w", flat):
        problems.append("nothing said of the original MyoSegmenTUM spine database's licence")
    return problems


@pytest.fixture
def needs_jsonschema():
    pytest.importorskip("jsonschema", reason="the schema checks need jsonschema: pip install -r requirements-dev.txt")


def test_metadata_is_valid_and_says_what_the_bundle_does(needs_jsonschema):
    assert metadata_problems(METADATA) == []


def test_large_files_readme_and_data_license_are_right():
    assert large_files_problems(LARGE_FILES) == []
    assert readme_problems(README) == []
    assert data_license_problems(DATA_LICENSE) == []


def test_the_zoo_ci_download_step_finds_the_weights_in_the_bundle():
    """The Zoo's CI hands every large_files entry to MONAI's download_url; a file in the bundle with its sha256 is
    found and kept (nothing to reach over the network)."""
    for entry in LARGE_FILES:
        before = (REPO / entry["path"]).stat().st_mtime_ns
        download_url(entry["url"], REPO / entry["path"], hash_val=entry["hash_val"], hash_type=entry["hash_type"])
        assert (REPO / entry["path"]).stat().st_mtime_ns == before


def _set(path: str, value):
    """A change to metadata.json: ``value`` at the '/'-separated ``path`` (None deletes the key)."""

    def change(metadata: dict) -> None:
        *parents, key = path.split("/")
        for parent in parents:
            metadata = metadata[parent]
        if value is None:
            del metadata[key]
        else:
            metadata[key] = value

    return change


def _replace(old: str, new: str):
    def change(text: str) -> str:
        assert old in text, old
        return text.replace(old, new)

    return change


def _evaluation_after_license(readme: str) -> str:
    section = re.search(r"^## Evaluation\n.*?(?=^## )", readme, flags=re.M | re.S).group(0)
    return readme.replace(section, "") + "\n" + section


NETWORK = "network_data_format"
UNDONE = {
    "eval_metrics empty": ("metadata", _set("eval_metrics", {})),
    "eval_metrics not docs/README.md's": (
        "metadata",
        _set("eval_metrics/validation_phantoms_median_dice_left_psoas", 0.99),
    ),
    "scipy not required": ("metadata", _set("required_packages_version/scipy", None)),
    "pyyaml not required": ("metadata", _set("required_packages_version/pyyaml", None)),
    "fire not required": ("metadata", _set("required_packages_version/fire", None)),
    "onnx required": ("metadata", _set("required_packages_version/onnx", "1.23.2")),
    "optional packages under the deprecated key": ("metadata", _set(DEPRECATED_PACKAGES_KEY, {"onnx": "1.23.2"})),
    "monailabel not the supported app": ("metadata", _set("supported_apps/monailabel", "0.8.4")),
    "input is patch data": ("metadata", _set(f"{NETWORK}/inputs/image/is_patch_data", True)),
    "input clipped to [0, 1]": ("metadata", _set(f"{NETWORK}/inputs/image/value_range", [0, 1])),
    "input 16*n (the Zoo's n = 1 fails)": ("metadata", _set(f"{NETWORK}/inputs/image/spatial_shape", ["16*n"] * 3)),
    "output a one-channel segmentation": ("metadata", _set(f"{NETWORK}/outputs/pred/format", "segmentation")),
    "no post_processed_outputs": ("metadata", _set(f"{NETWORK}/post_processed_outputs", None)),
    "written map float": ("metadata", _set(f"{NETWORK}/post_processed_outputs/pred/dtype", "float32")),
    "authors a placeholder": ("metadata", _set("authors", "lumbar_muscle_dixon_segmentation contributors")),
    "Balerdi without citation or note": ("metadata", _set("references", ["Balerdi et al., Automatic Segmentation"])),
    "large file url empty": ("large_files", lambda entries: entries[0].update(url="")),
    "MyoSegmenTUM licence unnamed": ("data_license", _replace("License of TUM02 as this bundle obtained it", "TUM02")),
    "Evaluation after License": ("readme", _evaluation_after_license),
    "no Authors": ("readme", _replace("### Authors\n", "")),
    "no Tags": ("readme", _replace("### Tags\n", "")),
    "no Citation Info": ("readme", _replace("## Citation Info\n", "")),
    "no TensorRT statement": ("readme", _replace("TensorRT", "TRT")),
    "README's Balerdi without note": ("readme", _replace("Year, journal and DOI: not available", "")),
}


@pytest.mark.parametrize("point", UNDONE)
def test_each_point_of_issue_27_undone_is_caught(point: str, needs_jsonschema):
    target, change = UNDONE[point]
    if target == "metadata":
        metadata = copy.deepcopy(METADATA)
        change(metadata)
        assert metadata_problems(metadata)
    elif target == "large_files":
        entries = copy.deepcopy(LARGE_FILES)
        change(entries)
        assert large_files_problems(entries)
    elif target == "readme":
        assert readme_problems(change(README))
    else:
        assert data_license_problems(change(DATA_LICENSE))


@pytest.fixture(scope="module")
def network_and_input() -> tuple[torch.nn.Module, torch.Tensor]:
    """The shipped weights in the bundle's network, and a normalised phantom volume padded to a multiple of 16."""
    network = ConfigParser({"n": ConfigParser.load_config_file(REPO / "configs" / "inference.yaml")["network_def"]})
    network = network.get_parsed_content("n")
    network.load_state_dict(load_weights(WEIGHTS))
    network.eval()
    image = make_phantom(SMALL_SHAPE, SMALL_SPACING, seed=5).inphase
    image = (image - np.percentile(image, 1)) / (np.percentile(image, 99) - np.percentile(image, 1))
    image = np.pad(image, [(0, -s % 16) for s in image.shape])
    return network, torch.as_tensor(image[None, None], dtype=torch.float32)


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
        [sys.executable, "-m", "scripts.tools.release", "--out", str(tmp_path / "cli")],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout
    assert file_sha256(tmp_path / "cli" / archive.name) in printed
