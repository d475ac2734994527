"""Every option of the configs (a config key a user may set, usually on the command line), declared once: its
default in the config where it belongs, and its rule here, in ``RULES``. Adding an option means writing both.

``monai.bundle run`` passes ``--epochs -1`` or ``--roi_size "[7,7]"`` into the config as they are, and a wrong
value surfaces much later, deep in a traceback, or never (``--case_outputs false`` arrives as the string "false",
which is true). ``check_options``, the first step of every config's ``initialize``, reads the value of every option
the config holds, names every one its rule refuses, all at once and before any work, and writes back the value as
the code uses it (a switch as a bool), so that every use of the option reads it as it is.

MONAI's command line also takes any key at all: ``--flip_ta False`` adds a key no config reads, and the run goes
on with ``flip_tta`` as it was. ``refuse_unknown_overrides`` names every such option, with the closest known ones.

``python -m scripts.options README.md`` writes the README's tables of options from the configs and these rules.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigComponent, ConfigParser, ConfigWorkflow, ReferenceResolver
from monai.bundle import scripts as bundle_commands
from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS, ID_SEP_KEY, MERGE_KEY
from monai.utils.module import locate

from scripts import BUNDLE_ROOT
from scripts.errors import InputError

SEP = "#"  # between the parts of an id, as on the command line (MONAI also reads its ID_SEP_KEY, "::")


@dataclass(frozen=True)
class Rule:
    """What one option accepts (``expected``, in words: the error message and the README) and ``read``, which returns
    the value as the code uses it or raises ``ValueError`` for one it refuses. ``recorded``: the option changes what
    inference writes, so it is recorded with the outputs (``run.json``) and a run with another value is not mixed
    into them."""

    expected: str
    read: Callable[[Any], Any]
    recorded: bool = False


def _accept(ok: Callable[[Any], bool]) -> Callable[[Any], Any]:
    """A ``read`` that returns the value as it is where ``ok(value)``, else raises ``ValueError``."""

    def read(value: Any) -> Any:
        if not ok(value):
            raise ValueError(value)
        return value

    return read


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


# A switch as the command line may give it: Fire passes True/False as booleans, 1/0 as numbers, true/false as text.
SWITCH_VALUES = {"true": True, "false": False, "1": True, "0": False}


def _switch(value: Any) -> bool:
    if isinstance(value, (bool, Integral)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in SWITCH_VALUES:
        return SWITCH_VALUES[value.lower()]
    raise ValueError(value)


def switch(recorded: bool = False) -> Rule:
    """An on/off option, read as a bool."""
    return Rule("true or false (also True, False, 1, 0)", _switch, recorded)


def whole(minimum: int) -> Rule:
    """A whole number of at least ``minimum``."""
    return Rule(f"a whole number of at least {minimum}", _accept(lambda v: _is_whole(v) and v >= minimum))


def number(low: float | None = None, high: float | None = None, ends: bool = True, recorded: bool = False) -> Rule:
    """A number from ``low`` to ``high`` (either may be open: None); with ``ends`` False, strictly between them."""
    if low is None and high is None:
        return Rule("a number", _accept(_is_number), recorded)
    if high is None:
        words, ok = (
            (f"a number of at least {low}", lambda v: v >= low)
            if ends
            else (f"a number above {low}", lambda v: v > low)
        )
    else:
        words, ok = (
            (f"a number from {low} to {high}", lambda v: low <= v <= high)
            if ends
            else (f"a number strictly between {low} and {high}", lambda v: low < v < high)
        )
    return Rule(words, _accept(lambda v: _is_number(v) and ok(v)), recorded)


def optional(rule: Rule) -> Rule:
    """``rule``, or null."""
    return Rule(f"null or {rule.expected}", lambda v: None if v is None else rule.read(v), rule.recorded)


def one_of(*choices: str) -> Rule:
    """One of ``choices``."""
    return Rule(" or ".join(repr(c) for c in choices), _accept(lambda v: v in choices))


def three_sizes(what: str, example: str, recorded: bool = False) -> Rule:
    """Three lengths in mm (``what``: "voxel sizes"), each above 0, as a list."""
    ok = _accept(lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_number(s) and s > 0 for s in v))
    return Rule(f"3 {what} in mm, each above 0, such as {example}", lambda v: list(ok(v)), recorded)


def patch(recorded: bool = False) -> Rule:
    """A patch or window size: three voxel counts the network can halve 4 times, as a list."""
    ok = _accept(
        lambda v: isinstance(v, (list, tuple))
        and len(v) == 3
        and all(_is_whole(n) and n >= 16 and n % 16 == 0 for n in v)
    )
    return Rule(
        "3 voxel counts, each a multiple of 16 (the network halves the size 4 times)", lambda v: list(ok(v)), recorded
    )


TEXT = Rule("a text, such as a path", _accept(lambda v: isinstance(v, str)))
TEXTS = Rule("a list of texts", _accept(lambda v: isinstance(v, (list, tuple)) and all(isinstance(t, str) for t in v)))
WHOLE_NUMBERS = Rule(
    "a list of whole numbers", _accept(lambda v: isinstance(v, (list, tuple)) and all(map(_is_whole, v)))
)


def _device(value: Any) -> Any:
    try:
        torch.device(value)  # anything but a device or its name (cpu, cuda, cuda:1, ...) is refused
    except RuntimeError as error:
        raise ValueError(value) from error
    return value


DEVICE = Rule("a device: cpu, cuda or cuda:N", _device)
FRACTION = number(0, 1)
SEED = whole(0)

# Every option of every config, by name; an option of the same name means the same in every config that has it.
RULES: dict[str, Rule] = {
    # Where things are (every config)
    "bundle_root": TEXT,
    "dataset_dir": TEXT,
    "datalist": TEXT,
    "output_dir": TEXT,
    "num_workers": whole(0),
    "seed": SEED,
    "device": DEVICE,
    "spacing": three_sizes("voxel sizes", "[3.75,3.75,7.8]", recorded=True),
    "roi_size": optional(patch(recorded=True)),
    # prepare.yaml
    "raw_dir": TEXT,
    "reference": optional(TEXT),
    "metric_threshold": number(),
    "validation_fraction": FRACTION,
    # train.yaml and its overlays
    "ckpt_dir": TEXT,
    "epochs": whole(1),
    "resume": switch(),
    "val_interval": whole(1),
    "learning_rate": number(0, ends=False),
    "loss": one_of("bce", "dicece"),
    "partial_fraction": optional(number(0, 1, ends=False)),  # mixed_sampler draws from both kinds of case
    "partial_ids": optional(TEXTS),
    "flip_prob": FRACTION,
    "rotate_prob": FRACTION,
    "rotate_degrees": number(0, 180),
    "batch_size": whole(1),
    "val_roi_size": optional(patch()),
    "cache_rate": FRACTION,
    "log_every": whole(1),
    "cuda": switch(),
    "cache_device": DEVICE,
    "amp": switch(),
    "channels_last": switch(),
    "cudnn_benchmark": switch(),
    "pretrained_ckpt": TEXT,
    "backend": one_of("nccl", "gloo"),
    "real_dir": TEXT,
    "real_cases": Rule(
        "a list of cases, each a mapping like a datalist entry",
        _accept(lambda v: isinstance(v, (list, tuple)) and all(isinstance(c, dict) for c in v)),
    ),
    "spatial_prob": FRACTION,
    "crop_prob": FRACTION,
    "render_prob": FRACTION,
    "intensity_prob": FRACTION,
    "crop_min_mm": three_sizes("lengths", "[240,200,100]"),
    "muscle_tissues": WHOLE_NUMBERS,
    # inference.yaml and its overlays
    "datalist_section": one_of("training", "validation", "testing"),
    "image": optional(TEXT),
    "water": optional(TEXT),
    "fat": optional(TEXT),
    "outphase": optional(TEXT),
    "images": optional(TEXT),
    "ckpt_path": TEXT,
    "ts_path": TEXT,
    "sw_batch_size": whole(1),
    "overwrite": switch(),
    "noise_floor": number(0, 1, recorded=True),
    "flip_tta": switch(recorded=True),
    "largest_component": switch(recorded=True),
    "fat_border": switch(recorded=True),
    "case_outputs": switch(),
}


def read_option(name: str, value: Any) -> Any:
    """``value`` of the option ``name`` as the code uses it; ``InputError`` naming the option where its rule refuses
    it."""
    try:
        return RULES[name].read(value)
    except (ValueError, TypeError):
        raise InputError(f"--{name} {value!r}: expected {RULES[name].expected}") from None


def _running_parser() -> ConfigParser:
    """The ``ConfigParser`` whose config expression is calling: MONAI evaluates ``initialize`` inside
    ``ConfigParser.get_parsed_content``, and an expression is given no handle on its parser."""
    frame = inspect.currentframe()
    while frame is not None:
        if isinstance(caller := frame.f_locals.get("self"), ConfigParser):
            return caller
        frame = frame.f_back
    raise RuntimeError("check_options() without a parser must be called from a config expression")


def _dependencies_first(parser: ConfigParser, names: Sequence[str]) -> dict[str, set[str]]:
    """Each of ``names`` with the options among them that its default refers to, directly or through other keys
    (``cache_device: "$'cuda' if @cuda else 'cpu'"``: ``cuda``), in an order that puts an option after those."""
    depends: dict[str, set[str]] = {}
    order: list[str] = []  # each key after the keys it refers to

    def visit(key: str) -> set[str]:
        if key not in depends:
            depends[key] = set()  # a reference back to a key being visited is MONAI's to refuse
            for ref in ReferenceResolver.find_refs_in_config(parser[key], key):
                if ref in parser:
                    depends[key] |= visit(ref) | ({ref} & set(names))
            order.append(key)
        return depends[key]

    for name in names:
        visit(name)
    return {key: depends[key] for key in order if key in names}


def check_options(parser: ConfigParser | None = None) -> None:
    """Check the value of every option the config of ``parser`` (default: the parser running this as an expression)
    holds against its rule, and write it back as the code uses it (before anything reads it: the first step of
    ``initialize``), each before any option whose default refers to it is read; raise ``InputError`` naming every
    refused option (not those whose default only takes a refused one's value)."""
    parser = parser or _running_parser()
    problems, refused = [], set()
    for name, refers_to in _dependencies_first(parser, [name for name in RULES if name in parser]).items():
        if refers_to & refused:
            continue
        try:
            value = read_option(name, parser.get_parsed_content(name))
        except InputError as problem:
            problems.append(str(problem))
            refused.add(name)
            continue
        parser.ref_resolver.resolved_content[name] = value  # what every reference to the option reads from now on
        parser.get()[name] = value  # and what it reads should the config be parsed again
    if problems:
        raise InputError(f"{len(problems)} option(s) cannot be used:\n  " + "\n  ".join(problems))


def recorded_options(parser: ConfigParser | None = None) -> dict[str, Any]:
    """The options that change what inference writes (``Rule.recorded``), name -> checked value, of the config of
    ``parser`` (default: the parser running this as an expression)."""
    parser = parser or _running_parser()
    return {name: parser.get_parsed_content(name) for name, rule in RULES.items() if rule.recorded and name in parser}


# Options of ``monai.bundle run`` itself (config files, run ids, tracking), which are not config keys.
RUN_ARGUMENTS = frozenset(
    name
    for function in (bundle_commands.run, bundle_commands.create_workflow, ConfigWorkflow.__init__)
    for name, p in inspect.signature(function).parameters.items()
    if p.kind is not p.VAR_KEYWORD and name != "self"
) | frozenset(  # the settings --tracking mlflow adds
    key for key, value in DEFAULT_EXP_MGMT_SETTINGS["mlflow"]["configs"].items() if not isinstance(value, dict)
)


def _config_ids(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every id of a config (``a``, ``a#b``, ``a#0``, ...) with its value."""
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        name = f"{prefix}{key}"
        yield name, value
        yield from _config_ids(value, name + SEP)


def _command_line_overrides(argv: Sequence[str]) -> dict[str, str | None]:
    """``--name value`` / ``--name=value`` pairs of a ``monai.bundle run`` command line, names as Fire reads them
    (hyphens as underscores); a name without a value maps to None."""
    overrides: dict[str, str | None] = {}
    for i, token in enumerate(argv):
        if token.startswith("--"):
            name, _, value = token[2:].partition("=")
            following = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
            overrides[name.replace("-", "_")] = value if value else following
    return overrides


def _takes_argument(component: Any, name: str) -> bool:
    """Whether ``component`` (a config dict with ``_target_``) is built by a callable that takes an argument ``name``
    (or any keyword); a callable whose signature cannot be read is given the benefit of the doubt."""
    if not isinstance(component, dict) or "_target_" not in component:
        return False
    try:
        target = locate(ConfigComponent(config=component).resolve_module_name())
        parameters = inspect.signature(target).parameters.values()
    except Exception:  # not importable here, or no signature: it fails loudly when built, if at all
        return True
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in parameters)


def unknown_overrides(overrides: Sequence[str], config: dict) -> dict[str, list[str]]:
    """The names among ``overrides`` that ``config`` (merged configs) does not read, each with up to three close
    known names. Known: every id of the config, a new argument of one of its components (``--net#dropout 0.1``
    where ``net`` has a ``_target_``), anything under ``_meta_``, and the options of ``monai.bundle run``."""
    values = dict(_config_ids(config))
    unknown = {}
    for name in overrides:
        bare = name.removeprefix(MERGE_KEY).replace(ID_SEP_KEY, SEP)
        parent, _, _ = bare.rpartition(SEP)
        known = (
            bare in values
            or bare in RUN_ARGUMENTS
            or bare.split(SEP)[0] == "_meta_"
            or _takes_argument(values.get(parent), bare.rpartition(SEP)[2])
        )
        if not known:
            # Close names among the keys beside it: its siblings under the same parent, else the top-level keys.
            siblings = [i for i in values if i.rpartition(SEP)[0] == parent]
            ends = {i.rpartition(SEP)[2]: i for i in siblings}
            close = difflib.get_close_matches(bare.rpartition(SEP)[2], list(ends), n=3, cutoff=0.75)
            unknown[name] = [ends[c] for c in close]
    return unknown


def refuse_unknown_overrides(argv: Sequence[str] | None = None) -> None:
    """Raise ``InputError`` naming every ``--option`` of this ``python -m monai.bundle run`` command that none of
    its config files reads ("--flip_ta: no config reads it; did you mean --flip_tta?"). The config cannot tell which
    of its keys came from the command line, so the command line (``sys.argv``) is read again here; a process that
    is not ``monai.bundle run`` (the MONAI Label server, a test calling the workflow directly) is left alone."""
    argv = sys.argv if argv is None else argv
    if len(argv) < 2 or Path(argv[0]).parent.name != "bundle" or argv[1] != "run":
        return
    overrides = _command_line_overrides(argv[2:])
    files = overrides.get("config_file")
    if not files:
        return
    try:
        files = ast.literal_eval(files)
    except (ValueError, SyntaxError):  # a plain path, or paths separated by commas
        pass
    unknown = unknown_overrides(list(overrides), ConfigParser.load_config_files(files))
    if unknown:
        lines = [
            f"--{name}: no config reads it"
            + (f"; did you mean {' or '.join('--' + c for c in close)}?" if close else "")
            for name, close in unknown.items()
        ]
        raise InputError(f"{len(lines)} option(s) unknown to {files}; nothing was run:\n  " + "\n  ".join(lines))


# The configs in the order the README lists them: each base config, then the overlays merged over it.
CONFIG_FILES = (
    "prepare.yaml",
    "train.yaml",
    "finetune.yaml",
    "robust_train.yaml",
    "multi_gpu_train.yaml",
    "inference.yaml",
    "evaluate.yaml",
    "inference_ts.yaml",
    "multi_gpu_inference.yaml",
)
README_BEGIN = "<!-- options: written by python -m scripts.options README.md, from configs/ and scripts/options.py -->"
README_END = "<!-- options: end -->"


def _is_plain(value: Any) -> bool:
    """A value written out in the config: null, a switch, a number, a text that is no expression, reference or
    macro, or a list of numbers; a list of names (``case_keys``) is wiring, not an option."""
    if isinstance(value, list):
        return all(_is_number(v) for v in value)
    return value is None or isinstance(value, (bool, Real)) or (isinstance(value, str) and value[:1] not in "$@%")


def options_of(config: dict) -> list[str]:
    """The options one config file declares: its top-level keys with a rule, and every top-level key with a plain
    value (which must have a rule: ``tests/bundle/test_options.py`` checks it); an overlay's ``a#b`` sets a part of
    something the base declares, not an option."""
    top = [name for name in config if SEP not in name and ID_SEP_KEY not in name]
    return [name for name in top if name in RULES or _is_plain(config[name])]


def options_table(configs: Path = BUNDLE_ROOT / "configs") -> str:
    """The README's tables: for each config, every option it declares, its default as written there, and what its
    rule accepts."""
    lines = []
    for name in CONFIG_FILES:
        config = ConfigParser.load_config_file(configs / name)
        options = options_of(config)
        if options:
            lines += ["", f"`configs/{name}`", "", "| option | default | accepts |", "| --- | --- | --- |"]
            for option in options:
                default = config[option] if isinstance(config[option], str) else json.dumps(config[option])
                expected = RULES[option].expected if option in RULES else "(no rule)"
                lines.append(f"| `--{option}` | `{default.replace('|', chr(92) + '|')}` | {expected} |")
    return "\n".join(lines[1:])


def write_readme_options(readme: Path) -> None:
    """Replace the lines between ``README_BEGIN`` and ``README_END`` of ``readme`` with ``options_table()``."""
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(rf"^{re.escape(README_BEGIN)}\n.*?^{re.escape(README_END)}$", re.S | re.M)
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no lines {README_BEGIN!r} and {README_END!r} to write between")
    readme.write_text(pattern.sub(lambda _: f"{README_BEGIN}\n{options_table()}\n{README_END}", text), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """``python -m scripts.options README.md``: write the README's tables of options."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("readme", type=Path)
    write_readme_options(parser.parse_args(argv).readme)


if __name__ == "__main__":
    main()
