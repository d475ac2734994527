"""Every documented merge of configs does what each of its parts promises: an overlay adds to the lists it extends
(MONAI's ``+`` merge key) instead of replacing them, so no step of the base or of an earlier overlay is lost."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import pytest
import torch
import torch.distributed as dist
import yaml
from conftest import REPO, free_port
from monai.bundle import ConfigParser, ConfigWorkflow

from scripts.labels import NUM_CLASSES

# Each documented combination (README, docs/README.md, the MONAI Label app), base first.
COMBINATIONS = [
    ("train.yaml", "finetune.yaml"),
    ("train.yaml", "multi_gpu_train.yaml"),
    ("train.yaml", "finetune.yaml", "multi_gpu_train.yaml"),  # MONAI Label's multi-GPU training
    ("train.yaml", "robust_train.yaml"),
    ("train.yaml", "robust_train.yaml", "finetune.yaml"),
    ("inference.yaml", "multi_gpu_inference.yaml"),
    ("inference.yaml", "inference_ts.yaml"),
    ("inference.yaml", "evaluate.yaml"),
]
# Lists an overlay replaces on purpose: its own augmentation, its own run steps.
REPLACED = {("robust_train.yaml", "train#augmentation"), ("multi_gpu_train.yaml", "training")}


def raw(name: str | Path) -> dict:
    return ConfigParser.load_config_file(REPO / "configs" / name)


def merged(names: tuple[str | Path, ...]) -> dict:
    return ConfigParser.load_config_files([str(REPO / "configs" / n) for n in names])


def list_of(config: dict, key: str):
    value = config
    for part in key.split("#"):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, list) else None


def is_steps(value) -> bool:
    """A list of steps (expressions, components or references to one), such as initialize, imports, handlers,
    transforms."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) or str(v).startswith(("$", "@")) for v in value)
    )


def step_lists(value, path: str = "") -> dict[str, list]:
    """Every list of steps in ``value`` at any depth of dicts, by its MONAI id (``train#handlers``,
    ``preprocessing#transforms``; a key that is itself an id, such as ``train#augmentation``, reads the same)."""
    if is_steps(value):
        return {path: list(value)}
    if not isinstance(value, dict):
        return {}
    return {id_: steps for k, v in value.items() for id_, steps in step_lists(v, f"{path}#{k}" if path else k).items()}


def step(entry) -> str:
    return entry["_target_"] if isinstance(entry, dict) else entry


def expected_steps(names: tuple[str | Path, ...]) -> tuple[dict[str, list], list[str]]:
    """The step lists the merge of ``names`` (base first) should hold, each base list with what later files add to
    it (``+id``), and where a later file sets an earlier list, or a dict above one, without ``+`` (so that the list
    it had is gone), unless ``REPLACED`` says it does so on purpose."""
    expected: dict[str, list] = {}
    replaced: list[str] = []
    for position, name in enumerate(names):
        entries = list(raw(name).items())
        while entries:
            key, value = entries.pop(0)
            if key.startswith("+") and isinstance(value, dict):  # MONAI updates the dict: each of its keys is set
                entries[:0] = [(f"{key[1:]}#{k}", v) for k, v in value.items()]
            elif key.startswith("+"):
                expected.setdefault(key[1:], []).extend(value)
            else:
                below = {id_ for id_ in expected if id_ == key or id_.startswith(key + "#")}
                lost = sorted(id_ for id_ in below if (Path(name).name, id_) not in REPLACED)
                if position > 0 and lost:
                    replaced.append(f"{Path(name).name} sets {key} without +, replacing the steps of {lost}")
                for id_ in below:
                    expected.pop(id_)
                expected.update(step_lists(value, key))
    return expected, replaced


@pytest.mark.parametrize(
    "names", COMBINATIONS, ids=["+".join(n.removesuffix(".yaml") for n in c) for c in COMBINATIONS]
)
def test_each_merged_list_is_every_part_in_order(names: tuple[str, ...]):
    """Every step list of the merge, at any depth, is its base list followed by what each overlay adds, in order;
    no overlay replaces a list (or a dict above one) except those in ``REPLACED``."""
    config = merged(names)
    expected, replaced = expected_steps(names)
    assert not replaced, replaced
    assert {"initialize", "imports"} <= set(expected)
    for key, entries in expected.items():  # compared by step: an overlay may still set a step's argument (#0#...)
        assert [step(e) for e in list_of(config, key)] == [step(e) for e in entries], key


NESTED_LISTS = [
    ("train.yaml", "train#handlers"),
    ("train.yaml", "validate#handlers"),
    ("train.yaml", "train#augmentation"),
    ("inference.yaml", "preprocessing#transforms"),
    ("inference.yaml", "postprocessing#transforms"),
]


@pytest.mark.parametrize("base, key", NESTED_LISTS, ids=[key for _, key in NESTED_LISTS])
def test_an_overlay_replacing_a_nested_step_list_is_caught(tmp_path: Path, base: str, key: str):
    """A synthetic overlay that sets a nested step list without ``+`` (and one that sets the dict above it) is
    named; the same step added with ``+`` is not, and lands at the end of the list."""
    added = [{"_target_": "Identityd", "keys": "image"}]
    for overlay, culprit in (({key: added}, key), ({key.split("#")[0]: {key.split("#")[1]: added}}, key.split("#")[0])):
        path = tmp_path / "replaces.yaml"
        path.write_text(yaml.safe_dump(overlay), encoding="utf-8")
        _, replaced = expected_steps((base, path))
        assert len(replaced) == 1 and replaced[0].startswith(f"replaces.yaml sets {culprit} without +"), replaced
        assert repr(key) in replaced[0]
    path = tmp_path / "adds.yaml"
    path.write_text(yaml.safe_dump({f"+{key}": added}), encoding="utf-8")
    expected, replaced = expected_steps((base, path))
    assert not replaced and expected[key][-1] == added[0]
    assert [step(e) for e in list_of(merged((base, path)), key)] == [step(e) for e in expected[key]]


def test_evaluation_runs_inference_post_processing_and_handlers_and_adds_scoring():
    inference, evaluation = merged(("inference.yaml",)), merged(("inference.yaml", "evaluate.yaml"))
    assert evaluation["postprocessing"] == inference["postprocessing"]
    assert evaluation["preprocessing"] == inference["preprocessing"]
    assert evaluation["handlers"][: len(inference["handlers"])] == inference["handlers"]
    (scoring,) = evaluation["handlers"][len(inference["handlers"]) :]
    assert (
        scoring["_target_"] == "scripts.report.evaluation.EvaluationWriter" and scoring["noise_floor"] == "@noise_floor"
    )
    assert evaluation["datalist_section"] == "validation" and "label" in evaluation["case_keys"]


def test_multi_gpu_fine_tuning_starts_from_the_given_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """train + finetune + multi_gpu_train (one process, gloo): the data-parallel network holds the given weights."""
    network = ConfigParser({"n": raw("train.yaml")["network_def"]}).get_parsed_content("n")
    torch.manual_seed(1)
    weights = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in network.state_dict().items()}
    torch.save(weights, tmp_path / "given.pt")
    for variable, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(variable, value)
    for variable in ("RANK", "LOCAL_RANK"):
        monkeypatch.setenv(variable, "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    workflow = ConfigWorkflow(
        config_file=[str(REPO / "configs" / n) for n in ("train.yaml", "finetune.yaml", "multi_gpu_train.yaml")],
        workflow_type="train",
        bundle_root=str(REPO),
        output_dir=str(tmp_path),
        pretrained_ckpt=str(tmp_path / "given.pt"),
        spacing=[3.75, 3.75, 7.8],
    )
    try:
        workflow.initialize()
        assert dist.is_initialized()
        ddp = workflow.parser.get_parsed_content("network")
        assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
        for name, value in ddp.module.state_dict().items():
            assert torch.equal(value.cpu(), weights[name]), name
    finally:
        workflow.finalize()
    assert not dist.is_initialized()


def test_case_outputs_off_returns_the_label_and_writes_nothing(tmp_path: Path):
    """What the MONAI Label app runs (``case_outputs: false``): a scan without a datalist id goes through inference's
    pre- and post-processing to a label on its own grid, and no file is written."""
    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "inference.yaml"))
    parser.read_meta(str(REPO / "configs" / "metadata.json"))
    parser.update({"bundle_root": str(REPO), "output_dir": str(tmp_path), "case_outputs": False, "flip_tta": False})
    pre, post = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("postprocessing")
    writer = parser.get_parsed_content("case_writer")
    steps = [type(t).__name__ for t in pre.transforms + post.transforms + writer.transform.transforms]
    assert not {"CaseIdToMetad", "MuscleConfidenced", "SaveSegmentationd", "CaseReportd"} & set(steps)
    case = pre({"image": str(REPO / "sample" / "sub01" / "inphase.nii.gz")})
    with torch.no_grad():
        case["pred"] = parser.get_parsed_content("network")(case["image"][None])[0]
    label = post(case)["pred"]
    assert label.shape[1:] == nib.load(REPO / "sample" / "sub01" / "inphase.nii.gz").shape
    assert not list(tmp_path.iterdir())


# Arguments in which training's steps differ from inference's by design: training moves the label along (its keys
# and interpolation modes) and caches the result on the training device.
PER_KEY_ARGUMENTS = {"keys", "mode", "allow_missing_keys"}


def grid_steps(steps: list[dict]) -> list[dict]:
    """The steps that load a case and bring its image to the network grid, without what only one config needs
    (inference's copy of the input image and case id for the report, training's move to the cache device)."""
    only_one = {"CopyItemsd", "scripts.inference.outputs.CaseIdToMetad", "EnsureTyped"}
    return [
        {k: v for k, v in s.items() if k not in PER_KEY_ARGUMENTS and k != "_disabled_"}
        for s in steps
        if s["_target_"] not in only_one
    ]


def test_training_and_inference_share_the_network_grid_steps_and_window_inferer():
    """MONAI's configs cannot include a part of another file by a path that holds from every working folder, so
    train.yaml and inference.yaml each write these; this keeps them the same."""
    train, inference = raw("train.yaml"), raw("inference.yaml")
    assert train["network_def"] == inference["network_def"]
    assert train["network_def"]["out_channels"] == NUM_CLASSES
    trained = grid_steps(train["load_case"] + train["to_network_grid"])
    assert trained == grid_steps(inference["preprocessing"]["transforms"])
    assert [s["_target_"] for s in trained][-4:] == [
        "Orientationd",
        "Spacingd",
        "ScaleIntensityRangePercentilesd",
        "DivisiblePadd",
    ]
    assert train["validate"]["window_inferer"] == inference["window_inferer"].replace("@roi_size", "@val_roi_size")
