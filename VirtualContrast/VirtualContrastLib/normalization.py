"""The one intensity normalization shared by training, evaluation and inference.

The paper says only "image equalization, then [0, 1] inside the brain"; the authors published
no preprocessing code. We use a robust window: clip each image to its own lower/upper
percentiles inside the brain mask and scale that window to [0, 1]; voxels outside the mask
are 0. Checkpoints store the spec (``{"name": "brain_percentile", "lower": .., "upper": ..}``)
so inference reproduces training exactly.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from .errors import InputError


def _brain_percentile_range(array: np.ndarray, mask: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> tuple[float, float]:
    values = array[mask]
    if values.size == 0:
        raise InputError("the brain mask is empty: nothing to normalize")
    lo, hi = np.percentile(values, [lower, upper])
    return float(lo), float(hi)


_RANGES: dict[str, Callable[..., tuple[float, float]]] = {
    "brain_percentile": _brain_percentile_range,
}


def check_spec(spec: Any) -> None:
    """Raise ``ValueError`` (one line) unless ``spec`` names a known normalization with valid parameters."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"normalization must be a dict with a 'name', got {spec!r}")
    params = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] not in _RANGES:
        raise ValueError(f"unknown normalization {spec['name']!r}; known: {sorted(_RANGES)}")
    accepted = set(inspect.signature(_RANGES[spec["name"]]).parameters) - {"array", "mask"}
    if set(params) - accepted:
        raise ValueError(f"normalization {spec['name']!r} has unknown parameters {sorted(set(params) - accepted)}; known: {sorted(accepted)}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in params.values()):
        raise ValueError(f"normalization parameters must be numbers, got {params}")
    lower, upper = params.get("lower", 0.0), params.get("upper", 100.0)
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"normalization percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")


def intensity_range(array: np.ndarray, mask: np.ndarray, spec: dict[str, Any]) -> tuple[float, float]:
    """Return the (low, high) intensities that ``spec`` maps to 0 and 1 for this image."""
    check_spec(spec)
    params = {k: v for k, v in spec.items() if k != "name"}
    return _RANGES[spec["name"]](np.asarray(array), np.asarray(mask, dtype=bool), **params)


def normalize(array: np.ndarray, mask: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Map ``array`` to float32 [0, 1] inside ``mask`` (0 outside) as ``spec`` says."""
    mask = np.asarray(mask, dtype=bool)
    lo, hi = intensity_range(array, mask, spec)
    if not hi > lo:
        raise InputError("the image is constant inside the brain mask: it carries no contrast")
    out = (np.asarray(array, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)
    np.clip(out, 0.0, 1.0, out=out)
    out[~mask] = 0.0
    return out


def denormalize(normalized: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [0, 1] values back to the intensity window (low, high) of a reference image."""
    return (np.asarray(normalized, dtype=np.float32) * np.float32(high - low) + np.float32(low)).astype(np.float32)
