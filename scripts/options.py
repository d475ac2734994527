"""Check a run's options (config keys, usually set on the command line) before any work starts.

``monai.bundle run`` passes ``--epochs -1`` or ``--roi_size "[7,7]"`` into the config as they are, and a wrong
value surfaces much later, deep in a traceback, or never (``--resume false`` arrives as the string "false",
which is true). ``check_options`` names every bad option and what it accepts, all at once.

MONAI's command line also takes any key at all: ``--flip_ta False`` adds a key no config reads, and the run goes
on with ``flip_tta`` as it was. ``refuse_unknown_overrides`` names every such option, with the closest known ones.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from monai.bundle import ConfigComponent, ConfigParser, ConfigWorkflow
from monai.bundle import scripts as bundle_commands
from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS, ID_SEP_KEY, MERGE_KEY
from monai.utils.module import locate

from scripts.errors import InputError

SEP = "#"  # between the parts of an id, as on the command line (MONAI also reads its ID_SEP_KEY, "::")

BOOLEAN = "true or false (also True, False, 1, 0)"
# Each rule returns what the option accepts when the value does not fit, else None.
Rule = Callable[[Any], str | None]


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


# A switch as the command line may give it: Fire passes True/False as booleans, 1/0 as numbers, true/false as text.
SWITCH_VALUES = {"true": True, "false": False, "1": True, "0": False}


def flag(value: Any) -> bool:
    """A switch option's value as a bool: True, False, 1, 0, "true", "false" (any case), "1", "0"; ``boolean``
    refuses the rest before any work."""
    if isinstance(value, (bool, Integral)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in SWITCH_VALUES:
        return SWITCH_VALUES[value.lower()]
    raise InputError(f"{value!r} is not a switch value: {BOOLEAN}")


def boolean(value: Any) -> str | None:
    try:
        flag(value)
    except InputError:
        return BOOLEAN
    return None


def whole(minimum: int) -> Rule:
    def rule(value: Any) -> str | None:
        ok = isinstance(value, Integral) and not isinstance(value, bool) and value >= minimum
        return None if ok else f"a whole number of at least {minimum}"

    return rule


def positive(value: Any) -> str | None:
    return None if _is_number(value) and value > 0 else "a number above 0"


def fraction(value: Any) -> str | None:
    return None if _is_number(value) and 0 <= value <= 1 else "a number from 0 to 1"


def optional(rule: Rule) -> Rule:
    def check(value: Any) -> str | None:
        return None if value is None else (f"null or {problem}" if (problem := rule(value)) else None)

    return check


def one_of(*choices: str) -> Rule:
    return lambda value: None if value in choices else " or ".join(repr(c) for c in choices)


def spacing(value: Any) -> str | None:
    ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(_is_number(v) and v > 0 for v in value)
    return None if ok else "3 voxel sizes in mm, each above 0, such as [3.75,3.75,7.8]"


def patch(value: Any) -> str | None:
    ok = isinstance(value, (list, tuple)) and len(value) == 3
    ok = ok and all(isinstance(v, Integral) and not isinstance(v, bool) and v >= 16 and v % 16 == 0 for v in value)
    return None if ok else "3 voxel counts, each a multiple of 16 (the network halves the size 4 times)"


RULES: dict[str, Rule] = {
    "spacing": spacing,
    "epochs": whole(1),
    "val_interval": whole(1),
    "batch_size": whole(1),
    "num_workers": whole(0),
    "sw_batch_size": whole(1),
    "learning_rate": positive,
    "loss": one_of("bce", "dicece"),
    "partial_fraction": optional(fraction),
    "roi_size": optional(patch),
    "flip_prob": fraction,
    "rotate_prob": fraction,
    "noise_floor": fraction,
    "resume": boolean,
    "overwrite": boolean,
    "flip_tta": boolean,
    "largest_component": boolean,
    "fat_border": boolean,
}


def check_options(values: Mapping[str, Any]) -> None:
    """Raise ``InputError`` naming every option of ``values`` (name -> value) that its rule in ``RULES`` refuses."""
    problems = [
        f"--{name} {value!r}: expected {expected}"
        for name, value in values.items()
        if (expected := RULES[name](value)) is not None
    ]
    if problems:
        raise InputError(f"{len(problems)} option(s) cannot be used:\n  " + "\n  ".join(problems))


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
