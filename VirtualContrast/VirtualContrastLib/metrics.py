"""Image-quality metrics of the VC-Eval-1 protocol (DESIGN.md).

Arrays are numpy (z, y, x) as from ``sitk.GetArrayFromImage``; axis 0 is axial. Every metric
is computed over the voxels of a boolean ``region``; an empty region gives NaN.

- Normalization: each image is clipped to its own 0.5/99.5 percentiles inside the brain and
  scaled to [0, 1] (the shared :func:`VirtualContrastLib.normalization.normalize`).
- MAE and PSNR (data range 1) over the region's voxels.
- SSIM "paper": skimage's 2D SSIM (defaults: 7x7 uniform window, data range 1) on every full
  axial slice that contains region voxels; the SSIM map is averaged over the region's pixels
  of that slice, then over slices. On a full slice minus a 3-pixel border this equals the
  authors' ``structural_similarity(gt_slice, pred_slice, data_range=1.0)``.
- SSIM "BraSyn": skimage's 3D SSIM map (Gaussian window, sigma 1.5, population covariance)
  averaged over the region.
- Floors scored like a prediction: "identity" (the pre-contrast T1) and "linear" (a least-squares
  fit of the target on the model's inputs, with intercept, on the case itself inside the brain).

Enhancement metrics (subtraction map, lesions, false blobs) are in :mod:`VirtualContrastLib.enhancement`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from .normalization import intensity_range, normalize

#: BraTS label of enhancing tumour in the 2023+ convention used by the phantom.
ENHANCING_LABEL = 3


def percentile_normalize(image: np.ndarray, brain_mask: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Clip to the image's own percentiles inside the brain and scale to [0, 1]; 0 outside.

    An empty mask or an image constant inside it carries no contrast and maps to all zeros
    (a model that predicts a constant is scored, not rejected).
    """
    mask = np.asarray(brain_mask, dtype=bool)
    spec = {"name": "brain_percentile", "lower": lower, "upper": upper}
    if not mask.any():
        return np.zeros(np.shape(image), dtype=np.float32)
    lo, hi = intensity_range(image, mask, spec)
    if not hi > lo:
        return np.zeros(np.shape(image), dtype=np.float32)
    return normalize(image, mask, spec)


def _region(region: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    region = np.asarray(region, dtype=bool)
    if region.shape != shape:
        raise ValueError(f"region shape {region.shape} differs from image shape {shape}")
    return region


def mae(pred: np.ndarray, target: np.ndarray, region: np.ndarray) -> float:
    """Mean absolute error over the region's voxels."""
    region = _region(region, np.shape(target))
    if not region.any():
        return math.nan
    diff = np.asarray(pred, dtype=np.float64)[region] - np.asarray(target, dtype=np.float64)[region]
    return float(np.mean(np.abs(diff)))


def psnr(pred: np.ndarray, target: np.ndarray, region: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB from the MSE over the region's voxels (inf if identical)."""
    region = _region(region, np.shape(target))
    if not region.any():
        return math.nan
    diff = np.asarray(pred, dtype=np.float64)[region] - np.asarray(target, dtype=np.float64)[region]
    mse = float(np.mean(diff**2))
    if mse == 0.0:
        return math.inf
    return float(10.0 * np.log10(data_range**2 / mse))


def ssim_2d_slices(pred: np.ndarray, target: np.ndarray, region: np.ndarray, data_range: float = 1.0) -> float:
    """Paper's SSIM: per axial slice with region pixels (skimage defaults), averaged over slices."""
    # Imported here: the training step reads this module's labels where scikit-image is not installed.
    from skimage.metrics import structural_similarity

    region = _region(region, np.shape(target))
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    values = []
    for z in np.flatnonzero(region.any(axis=tuple(range(1, region.ndim)))):
        _, ssim_map = structural_similarity(target[z], pred[z], data_range=data_range, full=True)
        values.append(float(np.mean(ssim_map[region[z]])))
    return float(np.mean(values)) if values else math.nan


def ssim_3d(pred: np.ndarray, target: np.ndarray, region: np.ndarray, data_range: float = 1.0) -> float:
    """BraSyn's SSIM: the 3D SSIM map (Gaussian sigma 1.5) averaged over the region."""
    from skimage.metrics import structural_similarity

    region = _region(region, np.shape(target))
    if not region.any():
        return math.nan
    _, ssim_map = structural_similarity(
        np.asarray(target, dtype=np.float64),
        np.asarray(pred, dtype=np.float64),
        data_range=data_range,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )
    return float(np.mean(ssim_map[region]))


def brats_regions(seg: np.ndarray, enhancing_label: int = ENHANCING_LABEL) -> dict[str, np.ndarray]:
    """Tumour regions from a BraTS label map: enhancing tumour and whole tumour (any label)."""
    seg = np.asarray(seg)
    return {"enhancing_tumour": seg == enhancing_label, "whole_tumour": seg > 0}


def linear_floor(target: np.ndarray, inputs: Sequence[np.ndarray], brain_mask: np.ndarray) -> np.ndarray:
    """Per-case linear floor: least-squares fit of the target on the normalized inputs inside the brain; 0 outside."""
    brain = np.asarray(brain_mask, dtype=bool)
    out = np.zeros(brain.shape, dtype=np.float32)
    if not brain.any():
        return out
    design = np.stack([percentile_normalize(x, brain)[brain] for x in inputs] + [np.ones(int(brain.sum()), np.float32)], axis=1)
    coefficients, *_ = np.linalg.lstsq(design.astype(np.float64), percentile_normalize(target, brain)[brain].astype(np.float64), rcond=None)
    out[brain] = design @ coefficients
    return out


def sharpness_ratio(pred: np.ndarray, target: np.ndarray, region: np.ndarray) -> float:
    """Mean gradient magnitude of ``pred`` over ``region`` divided by that of ``target`` (1 = as sharp; NaN if flat).

    Gradients are taken per voxel index (the images share one grid), so the ratio does not depend on the spacing.
    A blurred synthetic image has a ratio far below 1, which PSNR forgives.
    """
    region = _region(region, np.shape(target))
    if not region.any():
        return math.nan
    magnitude = lambda image: np.sqrt(sum(g.astype(np.float64) ** 2 for g in np.gradient(np.asarray(image, np.float32))))  # noqa: E731
    reference = float(magnitude(target)[region].mean())
    return float(magnitude(pred)[region].mean()) / reference if reference > 0 else math.nan


def _metrics(pred: np.ndarray, target: np.ndarray, region: np.ndarray) -> dict[str, float]:
    return {
        "mae": mae(pred, target, region),
        "psnr": psnr(pred, target, region),
        "ssim_2d": ssim_2d_slices(pred, target, region),
        "ssim_3d": ssim_3d(pred, target, region),
        "sharpness": sharpness_ratio(pred, target, region),
    }


def evaluate_case(
    pred: np.ndarray,
    target: np.ndarray,
    brain_mask: np.ndarray,
    t1: np.ndarray | None = None,
    regions: Mapping[str, np.ndarray] | None = None,
    normalize_inputs: bool = True,
    linear_inputs: Sequence[np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """VC-Eval-1 metrics of one case, per region.

    Returns ``{region: {"voxels", "mae", "psnr", "ssim_2d", "ssim_3d", "sharpness"}}`` for "brain" and each
    entry of ``regions`` (e.g. :func:`brats_regions`; each is intersected with the brain).
    With ``t1`` the identity floor (normalized pre-contrast T1 as the prediction) is added as
    ``identity_mae``, ``identity_psnr``, ``identity_ssim_2d``, ``identity_ssim_3d``; with
    ``linear_inputs`` (the model's inputs) the :func:`linear_floor` likewise as ``linear_*``.
    ``normalize_inputs=False`` skips step 2 for arrays that are already normalized.
    """
    brain = _region(brain_mask, np.shape(target))
    floor = None if linear_inputs is None else linear_floor(target, linear_inputs, brain)
    images = {"pred": pred, "target": target, "identity": t1, "linear": floor}
    if normalize_inputs:
        images = {k: None if v is None else percentile_normalize(v, brain) for k, v in images.items()}
    masks = {"brain": brain, **{name: _region(mask, brain.shape) & brain for name, mask in (regions or {}).items()}}
    result: dict[str, dict[str, float]] = {}
    for name, mask in masks.items():
        entry: dict[str, float] = {"voxels": int(mask.sum()), **_metrics(images["pred"], images["target"], mask)}
        for floor_name in ("identity", "linear"):
            if images[floor_name] is not None:
                entry.update({f"{floor_name}_{k}": v for k, v in _metrics(images[floor_name], images["target"], mask).items()})
        result[name] = entry
    return result


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Paired two-sided t-test (scipy ``ttest_rel``) on the pairs where both values are finite."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 2:
        return math.nan, math.nan
    result = stats.ttest_rel(a[keep], b[keep])
    return float(result.statistic), float(result.pvalue)


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1), ignoring NaN; NaN when nothing is left."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan
    std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    return float(np.mean(values)), std
