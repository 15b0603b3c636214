"""Scanner effects: point-spread blur, smooth receive-coil bias, Rician noise, thick-slice grids, gain.

Magnitude MR images have Rician noise: ``|S + n_re + i n_im|`` with Gaussian ``n`` of standard deviation
sigma in each channel. The bias field is the exponential of a random quadratic polynomial of position
(a few percent to about +-20 % across the brain). Thick-slice acquisitions (2D T2, FLAIR, EPI diffusion)
are simulated by blurring along the slice direction with the slice profile and sampling a grid that
has its own spacing, origin and a small rotation, so the inputs must be resampled in physical space.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add Rician noise of Gaussian standard deviation ``sigma`` per channel to a magnitude signal."""
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(real * real + imaginary * imaginary).astype(np.float32)


def bias_field(grid: sitk.Image, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative field ``exp(p(x))`` on ``grid`` (z, y, x), p a random quadratic of position."""
    size = grid.GetSize()
    centre = [(n - 1) / 2.0 for n in size]
    # Positions in units of 100 mm from the grid centre; index axes are x, y, z.
    axes = [((np.arange(n) - c) * s / 100.0).astype(np.float32) for n, c, s in zip(size, centre, grid.GetSpacing())]
    x, y, z = axes[0][None, None, :], axes[1][None, :, None], axes[2][:, None, None]
    terms = (x, y, z, x * x, y * y, z * z, x * y, y * z, x * z)
    weights = rng.normal(0.0, 1.0, size=len(terms)) * np.array([1, 1, 1, .5, .5, .5, .5, .5, .5])
    weights *= strength / max(float(np.abs(weights).sum()), 1e-6)
    log_field = sum(float(w) * t for w, t in zip(weights, terms))
    return np.exp(np.broadcast_to(log_field, size[::-1])).astype(np.float32)


def blur(array: np.ndarray, like: sitk.Image, fwhm_mm: tuple[float, float, float]) -> np.ndarray:
    """Gaussian point-spread blur with per-axis FWHM (mm, x/y/z) of a (z, y, x) array on ``like``'s grid."""
    sigma_voxels = [f / 2.3548 / s for f, s in zip(fwhm_mm, like.GetSpacing())][::-1]
    if max(sigma_voxels) <= 0:
        return array
    return ndimage.gaussian_filter(array, sigma_voxels, mode="nearest", truncate=3.0)


def thick_slice_grid(t1_grid: sitk.Image, rng: np.random.Generator, thickness: float) -> sitk.Image:
    """An axial 2D-acquisition grid over the same field of view: thick slices, new origin, small tilt."""
    in_plane = float(t1_grid.GetSpacing()[0])
    angles = np.deg2rad(rng.uniform(-6.0, 6.0, size=3) * np.array([1.0, 1.0, 0.5]))
    tilt = sitk.Euler3DTransform()
    tilt.SetRotation(*angles)
    direction = np.array(tilt.GetMatrix()).reshape(3, 3) @ np.array(t1_grid.GetDirection()).reshape(3, 3)
    spacing = np.array([in_plane, in_plane, thickness])
    t1_size = np.array(t1_grid.GetSize())
    extent = (t1_size - 1) * np.array(t1_grid.GetSpacing())
    size = np.ceil(extent / spacing).astype(int) + 1
    centre = np.array(t1_grid.TransformContinuousIndexToPhysicalPoint(((t1_size - 1) / 2.0).tolist()))
    centre += rng.uniform(-0.5, 0.5, size=3) * spacing  # a slice position unrelated to the T1 grid
    origin = centre - direction @ ((size - 1) / 2.0 * spacing)
    grid = sitk.Image(size.tolist(), sitk.sitkUInt8)
    grid.SetSpacing(spacing.tolist())
    grid.SetDirection(direction.ravel().tolist())
    grid.SetOrigin(origin.tolist())
    return grid


def acquire_on(array: np.ndarray, t1_grid: sitk.Image, grid: sitk.Image) -> sitk.Image:
    """Blur a T1-grid (z, y, x) signal with the slice profile of ``grid`` and sample it there (linear)."""
    thickness = float(grid.GetSpacing()[2])
    source = sitk.GetImageFromArray(blur(array, t1_grid, (0.0, 0.0, thickness)))
    source.CopyInformation(t1_grid)
    return sitk.Resample(source, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
