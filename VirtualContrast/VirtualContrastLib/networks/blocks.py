"""Building blocks of the HR-FCN: ResBlocks, FCN modules and in-plane resampling paths.

Every block takes ``kernel_depth``: 3 gives the paper's 3x3x3 kernels (slices mix), 1 gives
in-plane (1, 3, 3) kernels (the 2D ablation). Resampling never touches the depth axis, as in
the authors' code: a slab keeps its slices from input to output.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _kernel(kernel_depth: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Kernel size and 'same' padding for a 3x3 in-plane kernel of the given depth."""
    return (kernel_depth, 3, 3), (kernel_depth // 2, 1, 1)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_depth: int) -> nn.Sequential:
    """Conv3d (bias-free, 'same' padding) + BatchNorm + ReLU."""
    kernel, padding = _kernel(kernel_depth)
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel, padding=padding, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResBlock(nn.Module):
    """Conv-BN-ReLU-Conv-BN plus a skip connection, then ReLU (Fig. 2 of the paper).

    The skip is the identity, or a 1x1x1 conv + BN when the channel count changes; that
    projection is how an FCN module reduces a concatenation to its branch width.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_depth: int = 3) -> None:
        super().__init__()
        kernel, padding = _kernel(kernel_depth)
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel, padding=padding, bias=False)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel, padding=padding, bias=False)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.skip: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, bias=False), nn.BatchNorm3d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual mapping of ``x``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.skip(x))


class FCNModule(nn.Module):
    """The paper's phi: four ResBlocks; the first one maps ``in_channels`` to ``out_channels``.

    With ``checkpointing`` the module's activations are recomputed in the backward pass
    instead of stored (training only). BatchNorm running statistics then receive a second
    update from the recomputation; with momentum 0.1 that is a negligible bias.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_depth: int = 3, checkpointing: bool = False) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            ResBlock(in_channels, out_channels, kernel_depth),
            *(ResBlock(out_channels, out_channels, kernel_depth) for _ in range(3)),
        )
        self.checkpointing = checkpointing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Four residual mappings of ``x``."""
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self.blocks, x, use_reentrant=False)
        return self.blocks(x)


class Stem(nn.Module):
    """One input stem: Conv3d(in -> width) + BN + ReLU, then an FCN module at that width."""

    def __init__(self, in_channels: int, width: int, kernel_depth: int = 3, checkpointing: bool = False) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_channels, width, kernel_depth)
        self.fcn = FCNModule(width, width, kernel_depth, checkpointing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of one modality (or of all, for the fused stem) at full resolution."""
        return self.fcn(self.conv(x))


class Down(nn.Sequential):
    """In-plane down-sampling by ``factor`` (2 or 4): stride-(1,2,2) (1,3,3) convs + BN + ReLU.

    D4 is two such convs; the first keeps the channel count (as in HRNet's fuse layers).
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int) -> None:
        steps = int(math.log2(factor))
        if 2**steps != factor or steps < 1:
            raise ValueError(f"down-sampling factor must be a power of two >= 2, got {factor}")
        layers: list[nn.Module] = []
        for step in range(steps):
            out = out_channels if step == steps - 1 else in_channels
            layers += [
                nn.Conv3d(in_channels, out, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
                nn.BatchNorm3d(out),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class Up(nn.Sequential):
    """In-plane up-sampling by ``factor``: 1x1x1 conv + BN, then nearest-neighbour repeat.

    Nearest is what the authors' Keras ``UpSampling3D`` does; the 1x1x1 conv ahead of it
    means the learned part runs at the cheap, low resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int) -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.Upsample(scale_factor=(1.0, float(factor), float(factor)), mode="nearest"),
        )
