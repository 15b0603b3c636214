"""Output calibration: a monotone map from a network's normalized output to the intensity scale of real CE-T1s.

Networks trained with L1/SSIM losses regress towards the mean: their brightest voxels (vessels,
strong enhancement) come out less extreme than in a real CE-T1. Any viewer's automatic window, and
VC-Eval-1, scale an image by its own 0.5/99.5 % percentiles in the brain, so a prediction whose top
is compressed gets its whole brain shown too bright. The output map, fitted once on training cases,
sends the mean quantile function of the network's outputs onto that of the normalized targets (each
case weighing the same). It changes intensities, never their order, and travels in the model config
(``ModelConfig.output_map``) so the engine applies it to every prediction.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: Quantile levels of the fit: 0.1 % steps, so the top 0.5 % (the brightest vessels and enhancement) has its own points.
LEVELS = np.linspace(0.0, 1.0, 1001)


def fit_output_map(outputs: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> dict[str, list[float]]:
    """Fit the map from paired per-case brain values of network outputs and normalized targets (both in [0, 1])."""
    if len(outputs) != len(targets) or not outputs:
        raise ValueError(f"need one target per output and at least one case, got {len(outputs)} outputs and {len(targets)} targets")
    source = np.mean([np.quantile(np.clip(o, 0.0, 1.0), LEVELS) for o in outputs], axis=0)
    target = np.mean([np.quantile(np.clip(t, 0.0, 1.0), LEVELS) for t in targets], axis=0)
    source, target = np.round(source, 5), np.round(target, 5)
    # Interpolation needs strictly increasing source points: a run of equal outputs keeps its first level.
    keep = np.concatenate([[True], np.diff(source) > 0])
    if keep.sum() < 2:
        raise ValueError("the network's outputs are one value on every case: there is nothing to calibrate")
    return {"source": source[keep].tolist(), "target": target[keep].tolist()}


def check_output_map(output_map: Any) -> None:
    """Raise ``ValueError`` (one line) unless ``output_map`` is None or a valid monotone map within [0, 1]."""
    if output_map is None:
        return
    if not isinstance(output_map, dict) or set(output_map) != {"source", "target"}:
        raise ValueError("output_map must be a dict with exactly 'source' and 'target' lists")
    try:
        source, target = (np.asarray(output_map[k], dtype=float) for k in ("source", "target"))
    except (TypeError, ValueError):
        raise ValueError("output_map 'source' and 'target' must be lists of numbers") from None
    if source.ndim != 1 or source.shape != target.shape or source.size < 2:
        raise ValueError(f"output_map needs two equally long lists of at least 2 numbers, got {source.shape} and {target.shape}")
    if not (np.isfinite(source).all() and np.isfinite(target).all()) or source.min() < 0 or target.min() < 0 \
            or source.max() > 1 or target.max() > 1:
        raise ValueError("output_map values must be finite and within [0, 1]")
    if not (np.all(np.diff(source) > 0) and np.all(np.diff(target) >= 0)):
        raise ValueError("output_map must be monotone: 'source' strictly increasing, 'target' non-decreasing")


def apply_output_map(values: np.ndarray, output_map: dict[str, list[float]] | None) -> np.ndarray:
    """Map normalized network outputs through ``output_map`` (identity when None); float32, same shape."""
    values = np.asarray(values, dtype=np.float32)
    if output_map is None:
        return values
    return np.interp(values, output_map["source"], output_map["target"]).astype(np.float32)
