"""Read ``.nii.gz`` files with ISA-L's gzip decompression (``isal.igzip``) instead of Python's ``gzip``.

Decompression is most of the time it takes to load a compressed NIfTI file: 0.45 s of the 0.6 s that MONAI's
``LoadImage`` takes for a 74 MB float32 volume of the published size on one CPU core, 0.2 s with ISA-L. The bytes
are the same (both check the gzip CRC). nibabel opens image files through ``ImageOpener``, whose
``compress_ext_map`` is its documented place for openers of compressed extensions; ``use_isal_for_reading``
puts one there for ``.gz`` that reads with ISA-L and leaves writing to nibabel's own opener.
"""

from __future__ import annotations

from typing import Any

from isal import igzip
from nibabel.openers import ImageOpener

_NIBABEL_GZIP, _ARGUMENTS = ImageOpener.compress_ext_map[".gz"]


def _open_gzip(filename: str, mode: str = "rb", **kwargs: Any) -> Any:
    """An ISA-L reader for reading; nibabel's gzip opener (with its compression level and mtime) for writing."""
    if mode.startswith("r"):
        return igzip.IGzipFile(filename, "rb")
    return _NIBABEL_GZIP(filename, mode, **kwargs)


def use_isal_for_reading() -> None:
    """Make nibabel read ``.gz`` image files with ISA-L from now on, in this process and the ones it forks."""
    ImageOpener.compress_ext_map[".gz"] = (_open_gzip, _ARGUMENTS)
