"""MR signal of a tissue map: Dixon water and fat images with a B1-like bias field and Rician noise.

Relative in-phase T2 TSE intensities against subcutaneous fat = 1 and fat fractions follow the design notes' facts
for a realistic phantom (muscle 0.17, marrow 0.6, kidney 1.1, CSF 2; fat fractions of the published ranges).
Scanner units are arbitrary (subcutaneous fat about 1000). In-phase = W + F and opposed-phase = |W - F|.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scripts.labels import LABELS, MUSCLES, NUM_CLASSES
from scripts.phantom.shapes import world_axes
from scripts.phantom.subject import Subject
from scripts.phantom.tissues import Tissue

SIGNAL_SCALE = 1000.0  # in-phase intensity of subcutaneous fat before bias, arbitrary scanner units
# (in-phase T2 TSE signal relative to subcutaneous fat, fat fraction) of the tissues with fixed properties.
TISSUE_SIGNAL: dict[Tissue, tuple[float, float]] = {
    Tissue.SUBCUTANEOUS_FAT: (1.0, 0.90),
    Tissue.VISCERAL_FAT: (0.95, 0.88),
    Tissue.BOWEL: (0.35, 0.05),
    Tissue.OTHER_MUSCLE: (0.17, 0.08),
    Tissue.KIDNEY: (1.1, 0.02),
    Tissue.MARROW: (0.6, 0.40),
    Tissue.DISC: (0.5, 0.02),
    Tissue.CSF: (2.0, 0.0),
    Tissue.VESSEL: (0.1, 0.0),  # flow void of fast blood in a TSE image
    Tissue.BOWEL_FLUID: (1.6, 0.0),
    Tissue.BOWEL_GAS: (0.02, 0.0),
    # Liver darker than spleen on T2 (shorter T2), both brighter than muscle; lung almost void; fascia dark.
    Tissue.LIVER: (0.3, 0.04),
    Tissue.SPLEEN: (0.5, 0.01),
    Tissue.STOMACH: (0.4, 0.02),
    Tissue.PANCREAS: (0.35, 0.06),
    Tissue.LUNG: (0.03, 0.0),
    Tissue.FASCIA: (0.05, 0.1),
    Tissue.INTERMUSCULAR_FAT: (0.95, 0.85),
}
MUSCLE_SIGNAL = 0.17


def tissue_tables(subject: Subject) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables from tissue id to relative in-phase signal and to fat fraction."""
    signal, fat_fraction = np.zeros(256, np.float32), np.zeros(256, np.float32)
    for tissue, (tissue_signal, tissue_fat) in TISSUE_SIGNAL.items():
        signal[tissue], fat_fraction[tissue] = tissue_signal, tissue_fat
    for tissue, tissue_fat in subject.fat_fraction.items():
        signal[tissue], fat_fraction[tissue] = MUSCLE_SIGNAL, tissue_fat
    return signal, fat_fraction


def bias_field(shape: Sequence[int], affine: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative B1-like field in scanner coordinates: a broad bump plus linear gradients,
    scaled into a random range within 0.6-1.1."""
    x, y, z = world_axes(shape, affine)
    centre_x, centre_y = rng.uniform(-100, 100, 2)
    width = rng.uniform(80, 160)
    bump = rng.choice((-1.0, 1.0)) * np.exp(
        -((x[:, None] - centre_x) ** 2 + (y[None, :] - centre_y) ** 2) / (2 * width**2)
    )
    gradient = rng.uniform(-1, 1, 3) / 300.0  # up to about one bump height across the field of view
    in_plane = bump + gradient[0] * x[:, None] + gradient[1] * y[None, :]
    through_plane = gradient[2] * z
    low, high = rng.uniform(0.6, 0.75), rng.uniform(0.95, 1.1)
    span = np.ptp(in_plane) + np.ptp(through_plane)
    in_plane = (low + (high - low) * (in_plane - in_plane.min()) / span).astype(np.float32)
    through_plane = ((high - low) * (through_plane - through_plane.min()) / span).astype(np.float32)
    return in_plane[:, :, None] + through_plane


def rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of standard deviation ``sigma`` per channel."""
    real = image + np.float32(sigma) * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = np.float32(sigma) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.hypot(real, imaginary)


def dixon_images(
    tissue: np.ndarray, fat_scale: np.ndarray, subject: Subject, affine: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise-free fat fraction and the noisy water and fat images of a tissue map."""
    signal_table, fat_table = tissue_tables(subject)
    fat_fraction = np.minimum(fat_table[tissue] * fat_scale, np.float32(1.0))
    signal = np.float32(SIGNAL_SCALE) * signal_table[tissue] * bias_field(tissue.shape, affine, rng)
    # Noise of a good 3T Dixon exam; much more and magnitude noise visibly biases the low fat fraction of lean
    # muscle upwards (about +3 points in psoas at 1 % of the fat signal), a bias the truth would not share.
    sigma = SIGNAL_SCALE * rng.uniform(0.001, 0.003)
    return fat_fraction, rician(signal * (1 - fat_fraction), sigma, rng), rician(signal * fat_fraction, sigma, rng)


def muscle_truth(label: np.ndarray, fat_fraction: np.ndarray, spacing: Sequence[float]) -> dict[str, dict]:
    """Per muscle label ("1".."8"): name, voxel count, volume (mL) and mean noise-free fat fraction."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(label.ravel(), minlength=NUM_CLASSES)
    fat_sums = np.bincount(label.ravel(), weights=fat_fraction.ravel(), minlength=NUM_CLASSES)
    return {
        str(muscle): {
            "name": LABELS[muscle],
            "voxels": int(counts[muscle]),
            "volume_ml": int(counts[muscle]) * voxel_ml,
            "mean_fat_fraction": float(fat_sums[muscle] / counts[muscle]) if counts[muscle] else None,
        }
        for muscle in MUSCLES
    }
