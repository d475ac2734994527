"""Write a file whole or not at all, so an interrupted run never leaves a half-written output under its final name."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write`` on a temporary path beside ``path``, then rename it onto ``path``.

    The temporary file is a unique hidden name in the same folder ending like ``path``, so
    the rename is atomic, writers that go by the extension (``.nii.gz``) write the same
    format, and the file keeps the usual permissions (``tempfile``'s are owner-only). On any
    error the temporary file is removed and the error raised again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{path.name}")  # keeps the extension writers go by
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
