"""How a run that stops tells the user why.

A mistake in the user's input (a datalist entry, a file, an option value) raises ``InputError``: the run ends
with one short block, what is wrong, which file or option, what to do, and no traceback (set
``LUMBAR_TRACEBACK=1`` to see it). Any other exception is a fault of the program and keeps its full traceback;
MONAI's config parser and transform chain wrap every exception ("Failed to evaluate ConfigExpression",
"applying transform ..."), so the innermost cause is printed once more at the very end. A case that fails inside a
cohort is told in one line by ``plain_reason``.
"""

from __future__ import annotations

import os
import sys
import traceback
from types import TracebackType

TRACEBACK_VARIABLE = "LUMBAR_TRACEBACK"


class InputError(ValueError):
    """A problem with what the user gave (data, datalist, option), told in words the user can act on."""


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception of the ``raise ... from`` / ``during handling`` chain."""
    while (inner := error.__cause__ or error.__context__) is not None:
        error = inner
    return error


def input_error(error: BaseException) -> InputError | None:
    """The first ``InputError`` in the chain of ``error``, or None."""
    while error is not None and not isinstance(error, InputError):
        error = error.__cause__ or error.__context__
    return error


def traceback_wanted() -> bool:
    """Whether the user asked for tracebacks (``LUMBAR_TRACEBACK`` set to anything but empty)."""
    return bool(os.environ.get(TRACEBACK_VARIABLE))


def plain_reason(error: BaseException) -> str:
    """Why ``error`` stopped a case, in one line for the user: the message of the ``InputError`` in its chain (the
    wrappers' words, such as "applying transform <... object at 0x...>", left out), else the innermost cause,
    told as a fault of the program."""
    user_error = input_error(error)
    if user_error is not None:
        return " ".join(str(user_error).splitlines())
    cause = root_cause(error)
    return (
        f"{type(cause).__name__}: {' '.join(str(cause).splitlines())} (a fault of the program, not of the scan: run "
        f"again with {TRACEBACK_VARIABLE}=1 and report what it shows)"
    )


def _excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    user_error = input_error(error)
    if user_error is not None and not traceback_wanted():
        print(
            f"\nERROR: {user_error}\n(for the full traceback, run again with {TRACEBACK_VARIABLE}=1)", file=sys.stderr
        )
        return
    traceback.print_exception(kind, error, tb)
    cause = root_cause(error)
    if cause is not error:
        print(f"\nERROR: {type(cause).__name__}: {cause}", file=sys.stderr)


def show_cause_last() -> None:
    """Install the hook for the rest of this process (called from the configs' ``initialize``)."""
    sys.excepthook = _excepthook
