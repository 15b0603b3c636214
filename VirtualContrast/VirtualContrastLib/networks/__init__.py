"""Networks that map a slab of normalized pre-contrast inputs to synthetic CE-T1.

Contract: input (B, len(config.inputs), D, H, W) float32 in [0, 1]; output (B, :func:`output_channels`, D, H, W),
linear: channel 0 the CE-T1 (callers clamp it to [0, 1]), channel 1 (HR-FCN with ``detection``) the
logit that the voxel enhances. H and W must be multiples of :func:`in_plane_multiple`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import VirtualContrastError
from .baselines import UNET_IN_PLANE_MULTIPLE, UNet2D, UNet3D
from .flops import count_flops, count_parameters
from .hrfcn import HRFCN, VARIANTS

#: Paper width (branches 64/128/256).
PAPER_WIDTH = 64

#: CPU default width, chosen by measurement on a 2-core AVX-512 (BF16) EPYC, torch 2.13, one
#: 3x256x192 slab, channels_last_3d, best of 3: width 16 took 0.25 s (bf16, batch 1; 0.6 s with
#: the machine shared) and 0.98 s per slab (fp32, batch 4), i.e. ~6-24 s for the ~24 slab
#: equivalents of a 192x256x192 volume cropped to the brain (target: < 30 s). Width 24 is
#: slower than 32 in bf16 (channel counts off oneDNN's blocking), width 32 misses the target in fp32.
LITE_WIDTH = 16

ARCHITECTURES: dict[str, str] = {
    "hrfcn": "HR-FCN, the paper's final model: per-modality stems, 1x/2x/4x branches, repeated fusion",
    "hrfcn_a": "Model-A: one stem for all modalities fused at the input",
    "hrfcn_b": "Model-B: only the 1x (full-resolution) branch",
    "hrfcn_c": "Model-C: no 1x branch (2x and 4x branches only)",
    "hrfcn_d": "Model-D: no repeated multi-scale fusion in stages 3 and 4",
    "hrfcn_2d": "HR-FCN with in-plane (1x3x3) kernels only: slices never mix",
    "unet3d": "MONAI 3D U-Net on the slab (in-plane down-sampling)",
    "unet2d": "MONAI 2D U-Net applied slice by slice",
}

_ARCH_KWARGS = {"width", "residual", "detection"}

#: Options only the HR-FCN variants have (see :mod:`.hrfcn`).
_HRFCN_ONLY = ("residual", "detection")


def _check(config: ModelConfig) -> None:
    if config.architecture not in ARCHITECTURES:
        raise VirtualContrastError(
            f"unknown architecture {config.architecture!r}; known: {', '.join(ARCHITECTURES)}"
        )
    unknown = set(config.arch_kwargs) - _ARCH_KWARGS
    if unknown:
        raise VirtualContrastError(
            f"unknown arch_kwargs {sorted(unknown)} for {config.architecture!r}; known: {sorted(_ARCH_KWARGS)}"
        )
    width = config.arch_kwargs.get("width", LITE_WIDTH)
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise VirtualContrastError(f"arch_kwargs width must be a positive integer, got {width!r}")
    for flag in _HRFCN_ONLY:
        value = config.arch_kwargs.get(flag, False)
        if not isinstance(value, bool):
            raise VirtualContrastError(f"arch_kwargs {flag} must be true or false, got {value!r}")
        if value and config.architecture.startswith("unet"):
            raise VirtualContrastError(f"arch_kwargs {flag} exists for the HR-FCN variants only, not {config.architecture!r}")


def build_network(config: ModelConfig, checkpointing: bool = False) -> nn.Module:
    """Build the (untrained) network that ``config`` describes.

    ``arch_kwargs``: ``width`` (default :data:`LITE_WIDTH`; the paper uses 64); for HR-FCNs ``residual`` and
    ``detection`` (:class:`HRFCN`). ``checkpointing``
    is a training option, not part of the model: HR-FCN variants then recompute FCN-module
    activations in the backward pass to save memory (the U-Nets ignore it).
    """
    _check(config)
    width = config.arch_kwargs.get("width", LITE_WIDTH)
    in_channels = len(config.inputs)
    if config.architecture == "unet3d":
        return UNet3D(in_channels, width)
    if config.architecture == "unet2d":
        return UNet2D(in_channels, width)
    flags = {flag: config.arch_kwargs.get(flag, False) for flag in _HRFCN_ONLY}
    return HRFCN(in_channels, width, checkpointing=checkpointing, **flags, **VARIANTS[config.architecture])


def has_detection(config: ModelConfig) -> bool:
    """Whether the network has the enhancement-detection channel (output channel 1)."""
    return bool(config.arch_kwargs.get("detection", False))


def output_channels(config: ModelConfig) -> int:
    """Channels of the network's output: the CE-T1, plus the detection logit where there is one."""
    return 1 + int(has_detection(config))


def place_network(network: nn.Module, device: torch.device) -> bool:
    """Move a network the caller owns to ``device``; on CPU try channels_last_3d. Returns whether that layout is in use."""
    network.to(device)
    if device.type != "cpu":
        return False
    try:
        network.to(memory_format=torch.channels_last_3d)
    except RuntimeError:  # networks with 4D (2D-conv) weights cannot take the 5D layout
        return False
    return True


def network_device(network: nn.Module) -> torch.device:
    """The device a network's parameters are on (CPU for a network without parameters)."""
    return next((p.device for p in network.parameters()), torch.device("cpu"))


def uses_channels_last(network: nn.Module) -> bool:
    """Whether the network's 3D convolution weights are in channels_last_3d layout (then feed it that layout too)."""
    layout = torch.channels_last_3d
    return any(p.dim() == 5 and not p.is_contiguous() and p.is_contiguous(memory_format=layout) for p in network.parameters())


def in_plane_multiple(config: ModelConfig) -> int:
    """H and W of the input must be multiples of this; callers pad up to it."""
    _check(config)
    if config.architecture.startswith("unet"):
        return UNET_IN_PLANE_MULTIPLE
    return max(VARIANTS[config.architecture].get("branches", (1, 2, 4)))


__all__ = [
    "ARCHITECTURES",
    "LITE_WIDTH",
    "PAPER_WIDTH",
    "HRFCN",
    "build_network",
    "count_flops",
    "count_parameters",
    "has_detection",
    "output_channels",
    "in_plane_multiple",
    "network_device",
    "place_network",
    "uses_channels_last",
]
