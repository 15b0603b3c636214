"""MONAI U-Net baselines (paper's Table I) behind the same slab contract as the HR-FCN.

Both use ``monai.networks.nets.UNet`` with channels w, 2w, 4w, 8w, 16w (the authors' 2D
U-Net is 64-1024, i.e. w = 64), four down-sampling levels, two residual units per level and
BatchNorm. The 3D U-Net strides only in-plane, (1, 2, 2), because a slab is a few slices thick;
the 2D U-Net folds depth into the batch so every slice is synthesized on its own.
"""

from __future__ import annotations

import torch
from monai.networks.nets import UNet
from torch import nn

#: H and W must be multiples of this (four stride-2 levels).
UNET_IN_PLANE_MULTIPLE = 16
_LEVELS = 5


def _channels(width: int) -> tuple[int, ...]:
    return tuple(width * 2**level for level in range(_LEVELS))


class UNet3D(nn.Module):
    """3D U-Net on the slab, (B, C, D, H, W) -> (B, 1, D, H, W), linear output."""

    def __init__(self, in_channels: int, width: int = 64) -> None:
        super().__init__()
        self.unet = UNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=1,
            channels=_channels(width),
            strides=((1, 2, 2),) * (_LEVELS - 1),
            num_res_units=2,
            norm="batch",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Synthesize one CE-T1 channel for every slice of the input slab."""
        return self.unet(x)


class UNet2D(nn.Module):
    """2D U-Net applied slice by slice, (B, C, D, H, W) -> (B, 1, D, H, W), linear output."""

    def __init__(self, in_channels: int, width: int = 64) -> None:
        super().__init__()
        self.unet = UNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=1,
            channels=_channels(width),
            strides=(2,) * (_LEVELS - 1),
            num_res_units=2,
            norm="batch",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Synthesize each slice of the slab independently of its neighbours."""
        b, c, d, h, w = x.shape
        slices = x.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)
        out = self.unet(slices)
        return out.reshape(b, d, 1, h, w).permute(0, 2, 1, 3, 4)
