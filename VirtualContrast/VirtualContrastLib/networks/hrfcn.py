"""The 3D high-resolution FCN of Chen et al. (IEEE TBME 2022) and its Table V ablations.

The forward pass follows the paper's equations (section III-B), with phi an FCN module and
(+) channel concatenation::

    F11 = phi(T1) (+) phi(T2) (+) phi(ADC)          F12 = D2(F11)
    F21 = phi(F11)   F22 = phi(F12)   F23 = D2(F22)
    F31 = phi(F21 (+) U2(F22))   F32 = phi(F22 (+) D2(F21))   F33 = phi(F23 (+) D4(F21))
    F41 = phi(F31 (+) U2(F32) (+) U4(F33))
    F42 = phi(D2(F31) (+) F32 (+) U2(F33))
    F43 = phi(D4(F31) (+) D2(F32) (+) F33)
    F5  = F41 (+) U2(F42) (+) U4(F43);  output = Conv1x1(ResBlock(F5))

Choices the paper leaves open (documented here, tested in Testing/test_networks.py):
- Branch widths are w, 2w, 4w at 1x, 2x, 4x in-plane resolution (paper: w = 64).
- Every D/U path inside stages 2-4 maps to the width of the branch it feeds (as HRNet does),
  and every phi reduces its concatenated input to its branch width with the projection skip
  of its first ResBlock; so F21 = phi(F11) needs no separate transition conv.
- Stage 5 up-sampling keeps each branch's channels (1x1x1 conv + BN at the same width), so
  F5 has 7w channels; the head ResBlock maps 7w -> w and a 1x1x1 conv gives one linear channel.
- Resampling is in-plane only (depth is never strided), up-sampling is nearest-neighbour, as
  in the authors' code.

Variants: ``separate_stems=False`` is Model-A (one stem, all modalities fused at the input,
width w); ``branches=(1,)`` Model-B; ``branches=(2, 4)`` Model-C (the stem still runs at full
resolution; F32 = phi(F22), F33 = phi(F23), stage 4 exchanges between 2x and 4x, and F5 =
U2(F42) (+) U4(F43) is formed at 1x); ``exchange=False`` Model-D (F3s = phi(F2s),
F4s = phi(F3s), fusion only in stage 5); ``kernel_depth=1`` the 2D version.

Two options of ours (not in the paper), for real scans:
- ``residual=True``: channel 0 is the T1 input plus the head's output, so the T1's full-resolution anatomy
  reaches the CE-T1 unchanged and the network only learns what contrast changes (a blurred CE-T1 was
  the price of regressing the whole image). The head's last convolution starts at zero: an untrained
  residual model returns the normalized T1, the identity floor.
- ``detection=True``: a second output channel, the logit of "this voxel enhances", trained as a
  rare-class detection task (``model_training.losses``) and used to gate the enhancement map.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .blocks import Down, FCNModule, ResBlock, Stem, Up

SCALES = (1, 2, 4)

#: Initial bias of the detection logit: log(p / (1 - p)) for p ≈ 0.5 %, the enhancing share of a training slab.
DETECTION_PRIOR_LOGIT = -5.0
_BRANCH_SETS = ((1, 2, 4), (1,), (2, 4))


def _resample(in_channels: int, out_channels: int, source: int, target: int) -> nn.Module:
    """Path from in-plane scale ``source`` to ``target`` (1 = full resolution, 4 = quarter)."""
    if target > source:
        return Down(in_channels, out_channels, target // source)
    return Up(in_channels, out_channels, source // target)


class HRFCN(nn.Module):
    """Multi-branch high-resolution FCN: (B, C, D, H, W) -> (B, 1 + detection, D, H, W), linear outputs.

    H and W must be multiples of the coarsest branch's scale (4, or 1 for Model-B). Channel 0 is the
    CE-T1 (plus input channel 0, the T1, when ``residual``); channel 1, with ``detection``, the enhancement logit.
    """

    def __init__(
        self,
        in_channels: int,
        width: int = 64,
        branches: tuple[int, ...] = SCALES,
        separate_stems: bool = True,
        exchange: bool = True,
        kernel_depth: int = 3,
        checkpointing: bool = False,
        residual: bool = False,
        detection: bool = False,
    ) -> None:
        super().__init__()
        branches = tuple(sorted(branches))
        if branches not in _BRANCH_SETS:
            raise ValueError(f"branches must be one of {_BRANCH_SETS}, got {branches}")
        if in_channels < 1 or width < 1 or kernel_depth not in (1, 3):
            raise ValueError("in_channels and width must be >= 1 and kernel_depth 1 or 3")
        self.branches = branches
        self.in_channels = in_channels
        self.residual = residual
        kd, ckpt = kernel_depth, checkpointing

        def bw(scale: int) -> int:
            return width * scale

        def fcn(cin: int, scale: int) -> FCNModule:
            return FCNModule(cin, bw(scale), kd, ckpt)

        if separate_stems:
            self.stems = nn.ModuleList(Stem(1, width, kd, ckpt) for _ in range(in_channels))
            f11 = width * in_channels
        else:
            self.stems = nn.ModuleList([Stem(in_channels, width, kd, ckpt)])
            f11 = width

        self.stage2 = nn.ModuleDict()
        self.transition = nn.ModuleDict()
        if 1 in branches:
            self.stage2["x1"] = fcn(f11, 1)
        if 2 in branches:
            self.transition["x1_to_x2"] = Down(f11, bw(2), 2)
            self.stage2["x2"] = fcn(bw(2), 2)
        if 4 in branches:
            self.transition["x2_to_x4"] = Down(bw(2), bw(4), 2)
        phi_scales = [s for s in (1, 2) if s in branches]

        # Stage-3 inputs: own F2s plus every stage-2 phi output except itself and, for 4x, its parent 2x.
        self.sources3 = {
            s: tuple(t for t in phi_scales if exchange and t != s and not (s == 4 and t == 2)) for s in branches
        }
        self.sources4 = {s: tuple(t for t in branches if exchange and t != s) for s in branches}
        self.fuse3, self.stage3 = self._fusion_stage(self.sources3, bw, fcn)
        self.fuse4, self.stage4 = self._fusion_stage(self.sources4, bw, fcn)

        self.fuse5 = nn.ModuleDict({f"x{s}_to_x1": Up(bw(s), bw(s), s) for s in branches if s != 1})
        f5 = sum(bw(s) for s in branches)
        self.head = nn.Sequential(ResBlock(f5, width, kd), nn.Conv3d(width, 1 + int(detection), 1))
        if residual:
            nn.init.zeros_(self.head[-1].weight[:1])
            nn.init.zeros_(self.head[-1].bias[:1])
        if detection:
            # Enhancing voxels are ~0.5 % of a slab: start the logit at that prior, not at 50 %.
            nn.init.constant_(self.head[-1].bias[1:], DETECTION_PRIOR_LOGIT)

    @staticmethod
    def _fusion_stage(
        sources: dict[int, tuple[int, ...]],
        bw: Callable[[int], int],
        fcn: Callable[[int, int], FCNModule],
    ) -> tuple[nn.ModuleDict, nn.ModuleDict]:
        """Resampling paths into each branch and the branch's phi for its concatenated input."""
        fuse = nn.ModuleDict(
            {f"x{t}_to_x{s}": _resample(bw(t), bw(s), t, s) for s, ts in sources.items() for t in ts}
        )
        stage = nn.ModuleDict({f"x{s}": fcn(bw(s) * (1 + len(ts)), s) for s, ts in sources.items()})
        return fuse, stage

    @staticmethod
    def _run_stage(
        features: dict[int, torch.Tensor],
        sources: dict[int, tuple[int, ...]],
        fuse: nn.ModuleDict,
        stage: nn.ModuleDict,
    ) -> dict[int, torch.Tensor]:
        """F(m+1)s = phi(F(m)s (+) resampled F(m)t for every source t of branch s)."""
        out = {}
        for s, ts in sources.items():
            parts = {s: features[s], **{t: fuse[f"x{t}_to_x{s}"](features[t]) for t in ts}}
            # Concatenate in scale order, as the paper writes the terms.
            x = torch.cat([parts[k] for k in sorted(parts)], dim=1) if ts else features[s]
            out[s] = stage[f"x{s}"](x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Synthesize one CE-T1 channel for every slice of the input slab."""
        if len(self.stems) > 1:
            f11 = torch.cat([stem(x[:, i : i + 1]) for i, stem in enumerate(self.stems)], dim=1)
        else:
            f11 = self.stems[0](x)
        f2: dict[int, torch.Tensor] = {}
        if 1 in self.branches:
            f2[1] = self.stage2["x1"](f11)
        if 2 in self.branches:
            f2[2] = self.stage2["x2"](self.transition["x1_to_x2"](f11))
        if 4 in self.branches:
            f2[4] = self.transition["x2_to_x4"](f2[2])
        f3 = self._run_stage(f2, self.sources3, self.fuse3, self.stage3)
        f4 = self._run_stage(f3, self.sources4, self.fuse4, self.stage4)
        f5 = torch.cat([f4[s] if s == 1 else self.fuse5[f"x{s}_to_x1"](f4[s]) for s in self.branches], dim=1)
        out = self.head(f5)
        if self.residual:
            out = torch.cat([out[:, :1] + x[:, :1].to(out.dtype), out[:, 1:]], dim=1)
        return out


#: Keyword arguments of :class:`HRFCN` for each named variant (paper's Table V and the 2D model).
VARIANTS: dict[str, dict] = {
    "hrfcn": {},
    "hrfcn_a": {"separate_stems": False},
    "hrfcn_b": {"branches": (1,)},
    "hrfcn_c": {"branches": (2, 4)},
    "hrfcn_d": {"exchange": False},
    "hrfcn_2d": {"kernel_depth": 1},
}
