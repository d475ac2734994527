"""Synthetic lumbar Dixon MRI phantoms: reproducible test, demo and training data for the bundle.

One module per idea: ``tissues`` (tissue ids and the map they are painted on), ``shapes`` (grid, subject frame,
ellipses), ``subject`` (random body size, pose and fat), ``body`` (trunk, viscera, kidneys, vessels, spine),
``procedural_muscles`` (muscles as ellipses of published areas), ``label_map_muscles`` (real muscle shapes from a
label map), ``organ_map`` (real upper-abdominal organs from a TotalSegmentator map), ``fields_of_view`` (the
vertebral levels a phantom shows), ``borders`` (fat planes and fascia between adjacent muscles), ``signal`` (Dixon
MR signal) and ``cohort`` (one phantom, its files, a cohort and its datalist);
``python -m scripts.phantom`` is the command line. No pipeline module imports this package.
"""

from scripts.phantom.cohort import (
    DEFAULT_SHAPE,
    IMAGES,
    Phantom,
    datalist_entry,
    make_cohort,
    make_phantom,
    validation_count,
    write_phantom,
)
from scripts.phantom.shapes import centred_affine
from scripts.phantom.signal import rician
from scripts.phantom.tissues import MUSCLE_TISSUES, Tissue, tissue_names

__all__ = [
    "DEFAULT_SHAPE",
    "IMAGES",
    "MUSCLE_TISSUES",
    "Phantom",
    "Tissue",
    "centred_affine",
    "datalist_entry",
    "make_cohort",
    "make_phantom",
    "rician",
    "tissue_names",
    "validation_count",
    "write_phantom",
]
