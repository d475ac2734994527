"""The shipped sample scan is what its documented command makes: docs/README.md's ``python -m scripts.phantom sample
...`` run today writes the same voxels, headers, datalist and truth as ``sample/`` holds.

Tolerance: every image's voxel array (dtype, shape and values) and NIfTI header are equal, ``truth.json`` and
``datalist.json`` are equal as JSON; the gzip bytes are not compared (zlib builds may compress the same data
differently)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import nibabel as nib
import numpy as np
from conftest import REPO, run_module

SAMPLE = REPO / "sample"


def documented_command() -> list[str]:
    """The words of the command that docs/README.md gives for ``sample/`` (the first ``python -m scripts.phantom
    sample ...`` in backticks, line breaks read as spaces)."""
    text = " ".join((REPO / "docs" / "README.md").read_text(encoding="utf-8").split())
    match = re.search(r"`(python -m scripts\.phantom sample [^`]*)`", text)
    assert match, "docs/README.md names no command for sample/"
    return shlex.split(match.group(1))


def test_the_documented_command_reproduces_the_sample(tmp_path: Path):
    words = documented_command()
    assert words[:4] == ["python", "-m", "scripts.phantom", "sample"]
    run_module(words[2], str(tmp_path / "sample"), *words[4:])
    made = sorted(p.relative_to(tmp_path / "sample") for p in (tmp_path / "sample").rglob("*") if p.is_file())
    assert made == sorted(p.relative_to(SAMPLE) for p in SAMPLE.rglob("*") if p.is_file())
    for name in made:
        shipped, remade = SAMPLE / name, tmp_path / "sample" / name
        if name.suffix == ".json":
            assert json.loads(remade.read_text(encoding="utf-8")) == json.loads(shipped.read_text(encoding="utf-8"))
            continue
        old, new = nib.load(shipped), nib.load(remade)
        assert new.header.binaryblock == old.header.binaryblock, name
        old_voxels, new_voxels = np.asarray(old.dataobj), np.asarray(new.dataobj)
        assert new_voxels.dtype == old_voxels.dtype, name
        np.testing.assert_array_equal(new_voxels, old_voxels, err_msg=str(name))
