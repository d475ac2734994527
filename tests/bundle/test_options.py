"""Every option declared once (its default in a config, its rule in ``scripts/options.RULES``), checked before any
work, and each switch given as ``false`` on the command line doing what false means."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO, SMALL_SPACING, run_bundle
from monai.bundle import ConfigParser, ConfigWorkflow

from scripts.errors import InputError
from scripts.inference.flip_tta import LeftRightFlipInferer
from scripts.options import (
    CONFIG_FILES,
    README_BEGIN,
    README_END,
    RULES,
    _is_plain,
    options_of,
    options_table,
    read_option,
)


def raw(name: str) -> dict:
    return ConfigParser.load_config_file(REPO / "configs" / name)


def options_without_rule(config: dict) -> list[str]:
    return [name for name in options_of(config) if name not in RULES]


def test_every_option_of_every_config_has_a_rule_and_every_rule_an_option():
    assert sorted(CONFIG_FILES) == sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
    for name in CONFIG_FILES:
        assert options_without_rule(raw(name)) == [], name
    declared = {option for name in CONFIG_FILES for option in options_of(raw(name))}
    assert sorted(set(RULES) - declared) == []  # no rule left behind by an option that went away


def test_a_config_gaining_an_option_without_a_rule_is_caught():
    config = raw("inference.yaml")
    config["border_width"] = 2  # a new option, written as its default only
    assert options_without_rule(config) == ["border_width"]
    config["border_modes"] = ["$x"]  # wiring (a list of names or steps) is no option
    assert options_without_rule(config) == ["border_width"]


def test_every_plain_default_passes_its_rule():
    for name in CONFIG_FILES:
        for option, value in raw(name).items():
            if option in RULES and _is_plain(value):
                read_option(option, value)


def test_the_readme_tables_are_those_of_the_rules():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(rf"^{re.escape(README_BEGIN)}\n(.*?)\n^{re.escape(README_END)}$", readme, re.S | re.M)
    assert block, "the README has no options tables"
    assert block.group(1) == options_table(), "run: python -m scripts.options README.md"


SWITCH_WORDS = [(True, True), ("true", True), ("True", True), (1, True), ("1", True)]
SWITCH_WORDS += [(False, False), ("false", False), ("False", False), ("FALSE", False), (0, False), ("0", False)]


@pytest.mark.parametrize("value, expected", SWITCH_WORDS)
def test_every_switch_takes_true_false_and_1_0(value: Any, expected: bool):
    for name, rule in RULES.items():
        if rule.expected == RULES["flip_tta"].expected:
            assert read_option(name, value) is expected, name


@pytest.mark.parametrize("value", ["yes", "no", "", 2, -1, 0.5, None, [True]])
def test_a_bad_switch_value_is_refused_naming_the_option(value: Any):
    for name in ("case_outputs", "amp", "channels_last", "cudnn_benchmark", "flip_tta", "resume", "overwrite"):
        with pytest.raises(InputError, match=rf"^--{name} {re.escape(repr(value))}: expected true or false"):
            read_option(name, value)


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("val_roi_size", [7, 7], "null or 3 voxel counts, each a multiple of 16"),
        ("rotate_degrees", -5, "a number from 0 to 180"),
        ("seed", 1.5, "a whole number of at least 0"),
        ("cache_rate", 2, "a number from 0 to 1"),
        ("log_every", 0, "a whole number of at least 1"),
        ("partial_fraction", 1, "null or a number strictly between 0 and 1"),
        ("partial_fraction", 0, "null or a number strictly between 0 and 1"),
        ("validation_fraction", "half", "a number from 0 to 1"),
        ("device", "gpu", "a device: cpu, cuda or cuda:N"),
    ],
)
def test_options_that_had_no_rule_are_checked(name: str, value: Any, expected: str):
    with pytest.raises(InputError, match=re.escape(f"--{name} {value!r}: expected {expected}")):
        read_option(name, value)


def test_prepare_checks_its_options_before_any_work(tmp_path: Path):
    result = run_bundle(
        "prepare",
        "--config_file", "configs/prepare.yaml",
        "--raw_dir", str(tmp_path / "raw"),
        "--dataset_dir", str(tmp_path / "out"),
        "--validation_fraction", "2",
        "--seed", "-1",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "ERROR: 2 option(s) cannot be used:" in result.stderr
    assert "  --seed -1: expected a whole number of at least 0" in result.stderr
    assert "  --validation_fraction 2: expected a number from 0 to 1" in result.stderr
    assert not (tmp_path / "out").exists()


def workflow(config: str, tmp_path: Path, dataset_dir: Path, **options: Any) -> ConfigWorkflow:
    """The workflow of ``configs/<config>`` as ``monai.bundle run`` builds it, with ``options`` as the command line
    gives them, initialized (options checked)."""
    flow = ConfigWorkflow(
        config_file=str(REPO / "configs" / config),
        workflow_type=None,
        bundle_root=str(REPO),
        dataset_dir=str(dataset_dir),
        output_dir=str(tmp_path / "out"),
        num_workers=0,
        **options,
    )
    flow.initialize()
    return flow


def transforms(parser: ConfigParser, *ids: str) -> list[str]:
    return [type(t).__name__ for i in ids for t in parser.get_parsed_content(i).transforms]


# Each switch given as "false" (the text the command line passes), and what it then does.
SWITCHES_OFF: list[tuple[str, str, Callable[[ConfigParser], bool]]] = [
    ("inference.yaml", "flip_tta", lambda p: not isinstance(p.get_parsed_content("inferer"), LeftRightFlipInferer)),
    (
        "inference.yaml",
        "largest_component",
        lambda p: "KeepLargestPiecePerMuscled" not in transforms(p, "postprocessing"),
    ),
    ("inference.yaml", "case_outputs", lambda p: "CaseIdToMetad" not in transforms(p, "preprocessing")),
    ("inference.yaml", "amp", lambda p: p.get_parsed_content("evaluator").amp is False),
    (
        "train.yaml",
        "flip_tta",
        lambda p: not isinstance(p.get_parsed_content("validate#inferer"), LeftRightFlipInferer),
    ),
    ("train.yaml", "amp", lambda p: p.get_parsed_content("validate#evaluator").amp is False),
    ("train.yaml", "resume", lambda p: p.get_parsed_content("training#0") is None),
    ("train.yaml", "cudnn_benchmark", lambda p: torch.backends.cudnn.benchmark is False),
    ("train.yaml", "cuda", lambda p: p.get_parsed_content("cache_device") == "cpu"),
    (
        "train.yaml",
        "channels_last",
        lambda p: all(w.is_contiguous() for w in p.get_parsed_content("network").parameters()),
    ),
]


@pytest.mark.parametrize("config, switch, is_off", SWITCHES_OFF, ids=[f"{c}:{s}" for c, s, _ in SWITCHES_OFF])
def test_each_switch_given_as_false_is_off(config: str, switch: str, is_off, cohort: Path, tmp_path: Path):
    benchmark = torch.backends.cudnn.benchmark
    try:
        spacing = {"spacing": list(SMALL_SPACING)} if config == "train.yaml" else {}  # inference: the weights'
        parser = workflow(config, tmp_path, cohort, **spacing, **{switch: "false"}).parser
        assert parser.get_parsed_content(switch) is False
        assert is_off(parser)
    finally:
        torch.backends.cudnn.benchmark = benchmark


def test_overwrite_false_refuses_the_outputs_of_another_run(cohort: Path, tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run.json").write_text(json.dumps({"checkpoint": "other.pt"}), encoding="utf-8")
    with pytest.raises(RuntimeError) as refused:  # MONAI's, around the InputError
        workflow("inference.yaml", tmp_path, cohort, overwrite="false").parser.get_parsed_content("cases")
    assert isinstance(refused.value.__cause__, InputError) and "outputs of a different run" in str(
        refused.value.__cause__
    )
    assert workflow("inference.yaml", tmp_path, cohort, overwrite="true").parser.get_parsed_content("cases")


@pytest.mark.parametrize("amp, entered", [("false", 0), ("true", 2)])
def test_amp_false_leaves_autocast_off_through_the_same_code_path(
    amp: str, entered: int, cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """On a machine without CUDA the evaluator's autocast is counted, not run: none with ``--amp false``, one per
    case with ``--amp true`` (so the count sees it)."""
    calls = []
    monkeypatch.setattr(torch, "autocast", lambda *args, **kwargs: calls.append(args) or nullcontext())
    flow = workflow("inference.yaml", tmp_path, cohort, amp=amp, case_outputs="false", flip_tta="false")
    try:
        flow.run()
    finally:
        flow.finalize()
    assert len(calls) == entered


@pytest.mark.slow
def test_case_outputs_false_on_the_command_line_writes_no_case_folder(cohort: Path, tmp_path: Path):
    run_bundle(
        "inference",
        "--config_file", "configs/inference.yaml",
        "--dataset_dir", str(cohort),
        "--output_dir", str(tmp_path / "out"),
        "--num_workers", "0",
        "--case_outputs", "false",
        "--flip_tta", "0",
        "--largest_component", "False",
    )  # fmt: skip
    assert not [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    run = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))
    assert run["flip_tta"] is False and run["largest_component"] is False
