"""Make the reason a run stopped the last line a user reads.

MONAI's config parser and transform chain wrap every exception ("Failed to evaluate
ConfigExpression", "applying transform ..."), so the message that names the bad file sits
in the middle of a long traceback. ``show_cause_last`` keeps the full traceback and adds
the innermost cause once more at the very end.
"""

from __future__ import annotations

import sys
import traceback
from types import TracebackType


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception of the ``raise ... from`` / ``during handling`` chain."""
    while (inner := error.__cause__ or error.__context__) is not None:
        error = inner
    return error


def _excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    traceback.print_exception(kind, error, tb)
    cause = root_cause(error)
    if cause is not error:
        print(f"\nERROR: {type(cause).__name__}: {cause}", file=sys.stderr)


def show_cause_last() -> None:
    """Install the hook for the rest of this process (called from the configs' ``initialize``)."""
    sys.excepthook = _excepthook
