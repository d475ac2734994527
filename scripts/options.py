"""Check the values of a run's options (config keys, usually set on the command line) before any work starts.

``monai.bundle run`` passes ``--epochs -1`` or ``--roi_size "[7,7]"`` into the config as they are, and a wrong
value surfaces much later, deep in a traceback, or never (``--resume false`` arrives as the string "false",
which is true). ``check_options`` names every bad option and what it accepts, all at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from numbers import Integral, Real
from typing import Any

from scripts.errors import InputError

# Each rule returns what the option accepts when the value does not fit, else None.
Rule = Callable[[Any], str | None]


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "True or False"


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
