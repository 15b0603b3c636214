"""The enhancement detector: a 3D U-Net that gives, for every voxel, the probability that it enhances.

It is a second network beside the synthesis network, trained alone as a rare-class detection task on
the enhancing-tumour label (``model_training.detector``), and shipped inside the synthesis model's
checkpoint (weights under ``detector.``, its options in ``ModelConfig.detector``). It sees the same
normalized working volume as the synthesis network, in cubes of ``patch`` voxels (the training crop,
so that its instance normalization sees what it saw in training), blended by MONAI's sliding-window
inference. Why a separate network: the slab network sees 3 slices, and the issue's one-minute voxel
classifier on 8 mm-scale features beat every detection channel trained on its slabs; a 3D U-Net sees
a cube of ``patch`` millimetres at 1 mm.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import DETECTOR_ARCH
from ..errors import CancelledError

#: Key prefix of the detector's weights in a checkpoint's state dict.
DETECTOR_PREFIX = "detector."

#: Overlap of neighbouring cubes at inference (MONAI sliding window, Gaussian blending).
OVERLAP = 0.25


def build_detector(in_channels: int, arch: dict[str, Any] | None = None) -> nn.Module:
    """The detector network (untrained): MONAI's 3D UNet, instance norm, ``classes`` output channels (logits)."""
    from monai.networks.nets import UNet

    spec = {**DETECTOR_ARCH, **(arch or {})}
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=output_classes(spec), channels=tuple(spec["channels"]),
                strides=tuple(spec["strides"]), num_res_units=int(spec["num_res_units"]), norm="instance",
                dropout=float(spec["dropout"]))


def output_classes(arch: dict[str, Any] | None) -> int:
    """Output channels of the detector: 1 (one logit) or 4 (softmax over the tumour's parts; config.DETECTOR_CLASSES)."""
    return int({**DETECTOR_ARCH, **(arch or {})}["classes"])


def patch_size(arch: dict[str, Any] | None) -> tuple[int, int, int]:
    """The cube (D, H, W) the detector is trained and run on."""
    return tuple(int(s) for s in {**DETECTOR_ARCH, **(arch or {})}["patch"])  # type: ignore[return-value]


def detect_volume(network: nn.Module, volume: np.ndarray, arch: dict[str, Any] | None, device: torch.device,
                  dtype: torch.dtype | None, on_window: Callable[[], None] | None = None,
                  cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """Probability (D, H, W) float32 that each voxel of a normalized (C, D, H, W) volume enhances; 0 where every input is 0.

    Only the bounding box of the non-zero inputs is run, in cubes of :func:`patch_size` (MONAI sliding
    window, :data:`OVERLAP`, Gaussian blending). ``on_window`` is called after each cube, ``cancel`` before.
    """
    from monai.inferers import sliding_window_inference

    footprint = np.any(volume != 0, axis=0)
    out = np.zeros(volume.shape[1:], dtype=np.float32)
    box = footprint_box(footprint)
    if box is None:
        return out
    patch = patch_size(arch)

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        if cancel is not None and cancel():
            raise CancelledError("synthesis cancelled; nothing was written")
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = network(batch)
        if on_window is not None:
            on_window()
        return logits.float()

    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode():
            inputs = torch.from_numpy(np.ascontiguousarray(volume[(slice(None), *box)], dtype=np.float32))[None].to(device)
            logits = sliding_window_inference(inputs, patch, 1, predictor, overlap=OVERLAP, mode="gaussian", padding_mode="constant")
    finally:
        network.train(was_training)
    # Gaussian blending averages logits; the probability of enhancing is taken after it, as for one logit.
    if logits.shape[1] == 1:
        probability = torch.sigmoid(logits[0, 0]).cpu().numpy()
    else:  # a softmax over the tumour's parts: enhancing is the last (config.DETECTOR_CLASSES)
        probability = torch.softmax(logits[0], dim=0)[-1].cpu().numpy()
    out[box] = np.where(footprint[box], probability, 0.0)
    return out


def footprint_box(footprint: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the true voxels of ``footprint`` (None when there is none)."""
    if not footprint.any():
        return None
    return tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(footprint))


def count_windows(shape: Sequence[int], arch: dict[str, Any] | None) -> int:
    """Cubes :func:`detect_volume` runs over a box of ``shape`` (MONAI's scan-interval rule), for progress."""
    total = 1
    for size, roi in zip(shape, patch_size(arch)):
        if size <= roi:
            continue
        interval = max(int(roi * (1 - OVERLAP)), 1)
        total *= math.ceil((size - roi) / interval) + 1
    return total
