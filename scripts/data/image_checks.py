"""Checks that stop a bad input image with one clear message naming the file, before it can produce garbage.

Importing this module makes nibabel read ``.nii.gz`` files with ISA-L (``scripts.data.gzip_reading``): the loader here
is what inference, evaluation and the reports read images with.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from monai.transforms import LoadImaged
from monai.utils import PostFix

from scripts.data.geometry import closest_array_axis, spacing_and_direction
from scripts.data.gzip_reading import use_isal_for_reading
from scripts.errors import InputError

ORTHONORMAL_TOL = 1e-3
CONVERT_AGAIN = "convert the scan again from its DICOM series (dcm2niix, say), or give the DICOM folder itself"
SHORT_FIELD_OF_VIEW_MM = 50.0  # along the spine: about two lumbar vertebrae with their discs
COARSER_THAN_TRAINED = 2.0  # a voxel this many times the trained voxel size along an axis is far from it
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
    """What makes an image unusable and what to do about it, or None: ``data`` (channel first) not one 3-D volume,
    not finite, of one value throughout (all zero, say), or a voxel-to-world ``affine`` whose axes are not
    orthonormal (a sheared or broken header). The one check for images loaded by MONAI (``CheckedLoadImaged``)
    and by SimpleITK (``sitk_image_problem``, cohort preparation). NumPy only: cohort preparation runs it in forked
    worker processes, where PyTorch's thread pool can hang."""
    data = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    spatial = tuple(data.shape[1:])
    if data.ndim != 4 or data.shape[0] != 1:
        shape = spatial if data.shape[0] == 1 else (*spatial, data.shape[0])
        return (
            f"has shape {shape} ({len(shape)}-D); expected one 3-D volume (X, Y, Z): give the scan as one volume "
            "with all its slices (one echo, one time point)"
        )
    if problem := nonfinite_problem(data):
        return problem
    if (lowest := data.min()) == data.max():
        held = "is all zero" if lowest == 0 else f"holds the one value {lowest:g} in every voxel"
        return f"{held}: there is no anatomy to segment in it; check that this is the scan you meant to give"
    linear = np.asarray(affine, np.float64)[:3, :3]
    if (np.linalg.norm(linear, axis=0) <= 0).any():
        return f"has a voxel size of zero in its header (affine {linear.tolist()}); {CONVERT_AGAIN}"
    _, direction = spacing_and_direction(affine)
    deviation = float(np.abs(direction.T @ direction - np.eye(3)).max())
    if deviation > ORTHONORMAL_TOL:
        return (
            f"has a direction matrix whose axes are not orthonormal (off by {deviation:.3g}): a sheared header, "
            f"which places the voxels nowhere in the body; {CONVERT_AGAIN}"
        )
    return None


def nonfinite_problem(data: np.ndarray) -> str | None:
    """How many voxels of ``data`` are NaN or infinite, when any are, and what to do about it."""
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if not bad:
        return None
    if bad == data.size:
        return f"contains {bad} NaN or infinite voxels, every voxel: it holds no image; {CONVERT_AGAIN}"
    return (
        f"contains {bad} NaN or infinite voxels (of {data.size}); set them to 0 if they lie outside the body, else "
        + CONVERT_AGAIN
    )


def unusual_input_notes(shape: Sequence[int], affine: np.ndarray, trained_spacing: Sequence[float] | None) -> list[str]:
    """What is unusual but allowed about an image of ``shape`` on the voxel-to-world ``affine``, each a sentence
    that says to check its segmentation: one slice (the 3-D network sees nothing above or below it); else a field
    of view along the spine (world S–I) under ``SHORT_FIELD_OF_VIEW_MM``; and voxels more than
    ``COARSER_THAN_TRAINED`` times the ``trained_spacing`` (RAS x, y, z; the weights' model card) along some world
    axis. Finer voxels are not noted: they are resampled to the trained voxel size, as in training."""
    spacing, _ = spacing_and_direction(affine)
    notes = []
    along = [closest_array_axis(affine, world) for world in range(3)]  # the array axis of world x, y, z
    if min(shape) == 1:
        notes.append(
            f"has one slice ({' x '.join(map(str, shape))} voxels); the 3-D network sees nothing above or below it: "
            "check every muscle of its segmentation"
        )
    elif (length := shape[along[2]] * spacing[along[2]]) < SHORT_FIELD_OF_VIEW_MM:
        notes.append(
            f"covers {length:.0f} mm along the spine, under about {SHORT_FIELD_OF_VIEW_MM:.0f} mm: the network was "
            "trained on longer fields of view; check its segmentation"
        )
    if trained_spacing is not None:
        ratio = np.asarray([spacing[a] for a in along]) / np.asarray(trained_spacing, np.float64)
        if (ratio > COARSER_THAN_TRAINED).any():
            sizes = " x ".join(f"{spacing[a]:.3g}" for a in along)
            trained = " x ".join(f"{size:.3g}" for size in trained_spacing)
            notes.append(
                f"has voxels of {sizes} mm (x, y, z), over {COARSER_THAN_TRAINED:g} times the {trained} mm the weights "
                "were trained at along some axis: detail the network learned from is missing; check its segmentation"
            )
    return notes


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
                    f"{key} {path}: cannot be read as an image ({type(error).__name__}: {error}); give a NIfTI file "
                    "(.nii, .nii.gz) or a DICOM series folder"
                ) from error
            d[key] = loaded if self._loader.image_only else loaded[0]
            if not self._loader.image_only:
                d[PostFix.meta(key)] = dict(loaded[1])
            problem = image_problem(d[key].as_tensor(), d[key].affine.numpy())
            if problem:
                raise InputError(f"{key} {path} {problem}")
        return d
