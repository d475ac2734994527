"""Checks that stop a bad input image with one clear message naming the file, before it can produce garbage.

Importing this module makes nibabel read ``.nii.gz`` files with ISA-L (``scripts.data.gzip_reading``): the loader here
is what inference, evaluation and the reports read images with.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from monai.transforms import LoadImaged
from monai.utils import PostFix

from scripts.data.geometry import spacing_and_direction
from scripts.data.gzip_reading import use_isal_for_reading
from scripts.errors import InputError

ORTHONORMAL_TOL = 1e-3
use_isal_for_reading()


def dicom_folder_problem(folder: str | Path) -> str | None:
    """Why a folder given as an image is not one DICOM series, or None when it is one."""
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        return f"{folder} is a folder but holds no DICOM series"
    if len(series) > 1:
        described = []
        for uid in series:
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
            reader = sitk.ImageFileReader()
            reader.SetFileName(files[0])
            reader.ReadImageInformation()
            name = reader.GetMetaData("0008|103e").strip() if reader.HasMetaDataKey("0008|103e") else "no description"
            described.append(f"{uid} ({name}, {len(files)} files)")
        return (
            f"{folder} holds {len(series)} DICOM series: " + "; ".join(described) + ". "
            "Move the series you mean into a folder of its own and give that folder."
        )
    return None


def image_problem(data: torch.Tensor | np.ndarray, affine: np.ndarray) -> str | None:
    """What makes an image unusable, or None: ``data`` (channel first) not one 3-D volume, not finite, empty, or
    a voxel-to-world ``affine`` whose axes are not orthonormal (a sheared or broken header). The one check for
    images loaded by MONAI (``CheckedLoadImaged``) and by SimpleITK (``sitk_image_problem``, cohort preparation).
    NumPy only: cohort preparation runs it in forked worker processes, where PyTorch's thread pool can hang."""
    data = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    spatial = tuple(data.shape[1:])
    if data.ndim != 4 or data.shape[0] != 1:
        shape = spatial if data.shape[0] == 1 else (*spatial, data.shape[0])
        return f"has shape {shape} ({len(shape)}-D); expected one 3-D volume (X, Y, Z)"
    if problem := nonfinite_problem(data):
        return problem
    if not data.any():
        return "is all zero"
    linear = np.asarray(affine, np.float64)[:3, :3]
    if (np.linalg.norm(linear, axis=0) <= 0).any():
        return f"has a voxel size of zero in its header (affine {linear.tolist()})"
    _, direction = spacing_and_direction(affine)
    deviation = float(np.abs(direction.T @ direction - np.eye(3)).max())
    if deviation > ORTHONORMAL_TOL:
        return f"has a direction matrix whose axes are not orthonormal (off by {deviation:.3g}): a sheared header"
    return None


def nonfinite_problem(data: np.ndarray) -> str | None:
    """How many voxels of ``data`` are NaN or infinite, when any are."""
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    return f"contains {bad} NaN or infinite voxels" if bad else None


def nifti_voxel_problem(path: str | Path) -> str | None:
    """``nonfinite_problem`` of the voxels stored in a NIfTI file. SimpleITK's reader turns NaN and infinite voxels
    into 0, so an image that cohort preparation has read through it can no longer show them."""
    return nonfinite_problem(np.asanyarray(nib.load(path).dataobj))


def sitk_image_problem(image: sitk.Image) -> str | None:
    """``image_problem`` of a SimpleITK image (its voxels as one channel; its header in SimpleITK's LPS frame,
    which changes nothing of what is checked)."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        return f"is not one 3-D volume (size {image.GetSize()}, {image.GetNumberOfComponentsPerPixel()} components)"
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return image_problem(sitk.GetArrayFromImage(image)[None], affine)


class CheckedLoadImaged(LoadImaged):
    """MONAI's ``LoadImaged``, stopping on an unreadable or unusable image with an error naming the file.

    ``LoadImaged`` lets a truncated ``.nii.gz`` fail with a bare ``EOFError`` and loads 2-D,
    4-D, NaN-filled, all-zero or sheared images without complaint; each of these would
    otherwise surface later as an unrelated error or a wrong segmentation. Loaded images
    come out channel first, as with ``ensure_channel_first=True``. With ``image_only`` false
    (MONAI Label's bundle inference sets it on every ``LoadImaged``), the header as loaded is
    also kept under ``<key>_meta_dict``, as ``LoadImaged`` does.
    """

    def __init__(self, keys: Any, **kwargs: Any) -> None:
        super().__init__(keys, **{"ensure_channel_first": True, "image_only": True, **kwargs})

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            try:
                loaded = self._loader(path, reader)
            except Exception as error:  # any reader failure: name the file, keep the reader's words
                raise InputError(
                    f"{key} {path}: cannot be read as an image ({type(error).__name__}: {error})"
                ) from error
            d[key] = loaded if self._loader.image_only else loaded[0]
            if not self._loader.image_only:
                d[PostFix.meta(key)] = dict(loaded[1])
            problem = image_problem(d[key].as_tensor(), d[key].affine.numpy())
            if problem:
                raise InputError(f"{key} {path} {problem}")
        return d
