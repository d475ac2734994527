"""Write a file whole or not at all, so an interrupted run never leaves a half-written output under its final name."""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
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


def write_csv_atomically(
    path: str | os.PathLike, rows: Iterable[dict], fieldnames: Sequence[str] | None = None
) -> Path:
    """Write ``rows`` (dicts) as a CSV file with a header, whole or not at all; the columns are ``fieldnames``, else
    the first row's keys."""
    rows = list(rows)
    columns = list(fieldnames) if fieldnames is not None else list(rows[0]) if rows else []

    def write(temporary: Path) -> None:
        with temporary.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    return write_atomically(path, write)
