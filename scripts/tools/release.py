"""Build the release archive ``<name>_v<version>.zip`` of the bundle and print its sha256.

    python -m scripts.tools.release [--out dist]

The archive holds the bundle's own files under one folder named after the bundle:
configs, scripts, models, docs, the sample scan, LICENSE, README.md, requirements.txt,
large_files.yml and the MONAI Label app with its requirements. Tests, caches, hidden files,
training outputs and what the MONAI Label server writes into its app folder stay out.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

from scripts import BUNDLE_ROOT
from scripts.inference.cohort_run import file_sha256

NAME = "lumbar_muscle_dixon_segmentation"
BUNDLE_PARTS = (
    "configs",
    "scripts",
    "models",
    "docs",
    "sample",
    "LICENSE",
    "README.md",
    "requirements.txt",
    "large_files.yml",
    "monailabel_app/main.py",  # the app's code only: the server writes its working copy and logs beside it
    "requirements-monailabel.txt",
)


def bundle_files(root: Path = BUNDLE_ROOT) -> Iterator[Path]:
    """Every file of the bundle, relative to ``root``, in sorted order; caches and hidden files left out."""
    for part in BUNDLE_PARTS:
        path = root / part
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in candidates:
            relative = file.relative_to(root)
            if (
                file.is_file()
                and "__pycache__" not in relative.parts
                and not any(p.startswith(".") for p in relative.parts)
            ):
                yield relative


def build(out_dir: Path, root: Path = BUNDLE_ROOT) -> Path:
    """Write the archive into ``out_dir`` and return its path."""
    version = json.loads((root / "configs" / "metadata.json").read_text(encoding="utf-8"))["version"]
    archive = out_dir / f"{NAME}_v{version}.zip"
    out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for relative in bundle_files(root):
            zf.write(root / relative, arcname=f"{NAME}/{relative.as_posix()}")
    return archive


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.tools.release", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=BUNDLE_ROOT / "dist", help="folder for the archive (default dist/)")
    archive = build(parser.parse_args(argv).out)
    print(f"{archive}  sha256 {file_sha256(archive)}")


if __name__ == "__main__":
    main()
