"""Random training slabs from prepared cases, as the paper samples them.

Each item is one ``slab_depth``-slice axial slab over the full in-plane extent (paper: 3×256×192),
zero-padded in-plane to a size shared by all cases and divisible by the network's multiple.
Options: an in-plane random crop, over-sampling of slabs that contain enhancement (the
enhancing-tumour label where a case has labels, else Y − X_T1 > δ inside the brain; with a crop, placed to
hold one of the slab's enhancing voxels), the
local-loss region from the labels (``local_labels``), and augmentation (in-plane flips, small intensity scale/shift of
the inputs; with ``robust_augment`` also MONAI's random bias field, gamma, Gaussian noise and blur of each
input, for scanners and pipelines other than the training set's) — all off by default, as in the paper.
For a network with a detection channel each slab also carries its enhancement target ``enhancing``: the
enhancing-tumour label, plus, outside the labelled tumour, the voxels whose true subtraction map
(:func:`VirtualContrastLib.enhancement.subtraction_map`) exceeds the detection threshold (vessels, dura and
plexus enhance in a real CE-T1 too); necrosis and oedema are negatives. Measured since: on BraTS that outside part
covers about a tenth of the brain (the threshold is a voxel-Youden cut), against 1.5 % for the label (README,
"A different design"). Slab starts only cover slabs that touch the
brain (the paper drops the empty top and bottom slices) and include the last possible start.

Draws depend only on (seed, epoch, index), so the dataset is a plain map-style dataset: it works
with any ``DataLoader``, with worker processes and with ``DistributedSampler``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.errors import MissingModalityError
from VirtualContrastLib.enhancement import ENHANCEMENT_THRESHOLD, subtraction_map
from VirtualContrastLib.metrics import ENHANCING_LABEL
from VirtualContrastLib.networks import has_detection

from .losses import DEFAULT_DELTA


@dataclass
class SamplingOptions:
    """How slabs are drawn; the defaults match the paper (no crop, no over-sampling, no augmentation)."""

    slabs_per_epoch: int = 2000
    crop: tuple[int, int] | None = None
    enhancement_fraction: float = 0.0
    min_enhancing_voxels: int = 20
    augment: bool = False
    robust_augment: bool = False
    delta: float = DEFAULT_DELTA
    local_labels: tuple[int, ...] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SamplingOptions":
        """Build from a config's ``sampling`` section, ignoring the keys the loop itself uses."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if known.get("crop") is not None:
            known["crop"] = tuple(int(v) for v in known["crop"])
        if known.get("local_labels") is not None:
            known["local_labels"] = tuple(int(v) for v in known["local_labels"])
        return cls(**known)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class SlabDataset(Dataset):
    """Map-style dataset of random slabs; call :meth:`set_epoch` to draw new slabs each epoch."""

    def __init__(self, cases: list[dict[str, np.ndarray]], config: ModelConfig, options: SamplingOptions, multiple: int, seed: int = 0) -> None:
        if not cases:
            raise ValueError("no training cases")
        self.config = config
        self.options = options
        self.seed = seed
        self.epoch = 0
        self.depth = config.slab_depth
        self.cases = []
        for index, case in enumerate(cases):
            missing = [m for m in [*config.inputs, config.target, "t1"] if f"norm_{m}" not in case]
            if missing:
                raise MissingModalityError(f"training case {case.get('case_id', index)} lacks {', '.join(missing)} (re-run 'prepare' with these modalities)")
            if case["mask"].shape[0] < self.depth:
                raise ValueError(f"a case has {case['mask'].shape[0]} slices, fewer than the slab depth {self.depth}")
            if options.local_labels is not None and "labels" not in case:
                raise MissingModalityError(f"training case {case.get('case_id', index)} has no tumour labels, which the "
                                           "local loss (loss.local_labels) needs; prepare it with labels or drop local_labels")
            mask = case["mask"].astype(bool)
            target = case[f"norm_{config.target}"]
            t1 = case["norm_t1"]
            if "labels" in case:
                # Expert labels say where the tumour enhances; the normalized difference would also
                # pick vessels, dura and intensity mismatch on real scans.
                enhancing = case["labels"] == ENHANCING_LABEL
            else:
                enhancing = ((target.astype(np.float32) - t1.astype(np.float32)) > options.delta) & mask
            per_slice_brain = mask.reshape(mask.shape[0], -1).any(axis=1)
            per_slice_enh = enhancing.reshape(mask.shape[0], -1).sum(axis=1)
            starts = np.arange(mask.shape[0] - self.depth + 1)
            valid = np.array([s for s in starts if per_slice_brain[s:s + self.depth].any()])
            rich = np.array([s for s in valid if per_slice_enh[s:s + self.depth].sum() >= options.min_enhancing_voxels])
            self.cases.append({
                "inputs": np.stack([case[f"norm_{m}"] for m in config.inputs]),
                "target": target,
                "t1": t1,
                "mask": case["mask"],
                **({"region": np.isin(case["labels"], options.local_labels).astype(np.uint8)} if options.local_labels else {}),
                **({"enhancing": detection_target(case, config.target)} if has_detection(config) else {}),
                "valid": valid,
                "rich": rich,
                # Enhancing voxels (z, y, x) in slice order: an enhancement draw centres its crop on one of them.
                "enhancing_voxels": np.argwhere(enhancing).astype(np.int32),
            })
        if options.crop is not None:
            self.shape = tuple(_round_up(c, multiple) for c in options.crop)
        else:
            self.shape = tuple(_round_up(max(c["mask"].shape[axis] for c in self.cases), multiple) for axis in (1, 2))

    def set_epoch(self, epoch: int) -> None:
        """Select the slabs drawn in ``epoch`` (same for every rank and worker)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.options.slabs_per_epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        case = self.cases[int(rng.integers(len(self.cases)))]
        height, width = case["mask"].shape[1:]
        y0 = int(rng.integers(max(height - self.shape[0], 0) + 1)) if self.options.crop else 0
        x0 = int(rng.integers(max(width - self.shape[1], 0) + 1)) if self.options.crop else 0
        if len(case["rich"]) and rng.random() < self.options.enhancement_fraction:
            start = int(rng.choice(case["rich"]))
            if self.options.crop:
                # A random crop of the slice would miss a small tumour most of the time: put one of the slab's
                # enhancing voxels in the crop, anywhere but its outer quarter.
                voxels = case["enhancing_voxels"]
                first, last = np.searchsorted(voxels[:, 0], [start, start + self.depth])
                _, cy, cx = voxels[int(rng.integers(first, last))]
                y0, x0 = (int(np.clip(c - int(rng.integers(size // 4, size - size // 4 + 1)), 0, max(extent - size, 0)))
                          for c, size, extent in ((cy, self.shape[0], height), (cx, self.shape[1], width)))
        else:
            start = int(rng.choice(case["valid"]))
        z = slice(start, start + self.depth)
        region = (z, slice(y0, y0 + self.shape[0]), slice(x0, x0 + self.shape[1]))
        arrays = {
            "inputs": case["inputs"][(slice(None), *region)],
            "target": case["target"][region][None],
            "t1": case["t1"][region][None],
            "mask": case["mask"][region][None],
            **({key: case[key][region][None] for key in ("region", "enhancing") if key in case}),
        }
        out = {}
        for key, array in arrays.items():
            padded = np.zeros((array.shape[0], array.shape[1], *self.shape), dtype=np.float32)
            padded[:, :, : array.shape[2], : array.shape[3]] = array
            out[key] = padded
        if self.options.augment:
            out = self._augment(out, rng)
        if self.options.robust_augment:
            out["inputs"] = robust_augment(out["inputs"], out["mask"][0] > 0, rng)
        return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in out.items()}

    @staticmethod
    def _augment(slab: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """In-plane flips of everything; a small scale/shift of each input channel inside the brain."""
        for axis in (2, 3):
            if rng.random() < 0.5:
                slab = {key: np.flip(value, axis=axis) for key, value in slab.items()}
        inside = slab["mask"] > 0
        inputs = slab["inputs"].copy()
        for channel in range(inputs.shape[0]):
            scaled = inputs[channel] * rng.uniform(0.9, 1.1) + rng.uniform(-0.05, 0.05)
            inputs[channel] = np.where(inside[0], np.clip(scaled, 0.0, 1.0), 0.0)
        slab["inputs"] = inputs
        return slab


def detection_target(case: dict[str, np.ndarray], target: str = "t1c") -> np.ndarray:
    """0/1 enhancement target of a prepared case (module docstring): enhancing label, or true map > T outside the tumour."""
    brain = case["mask"] > 0
    true_map = subtraction_map(case[f"norm_{target}"], case["norm_t1"], brain)
    if "labels" not in case:
        return (true_map > ENHANCEMENT_THRESHOLD).astype(np.uint8)
    labels = case["labels"]
    return ((labels == ENHANCING_LABEL) | ((labels == 0) & (true_map > ENHANCEMENT_THRESHOLD))).astype(np.uint8)


def robust_augment(inputs: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
                   depth_sigma: tuple[float, float] = (0.0, 0.0), plane_sigma: tuple[float, float] = (0.25, 1.25)) -> np.ndarray:
    """MONAI's random bias field, gamma, Gaussian noise and blur (Gaussian σ in voxels drawn from ``depth_sigma`` along
    the depth axis, from ``plane_sigma`` in-plane), drawn anew for each input channel (C, D, H, W)."""
    from monai.transforms import Compose, RandAdjustContrast, RandBiasField, RandGaussianNoise, RandGaussianSmooth

    transform = Compose([
        RandBiasField(degree=3, coeff_range=(0.0, 0.3), prob=0.5),
        RandAdjustContrast(gamma=(0.7, 1.5), prob=0.5),
        RandGaussianNoise(std=0.03, prob=0.3),
        # In-plane blur only by default: a slab's 3 slices are too few to blur across.
        RandGaussianSmooth(sigma_x=depth_sigma, sigma_y=plane_sigma, sigma_z=plane_sigma, prob=0.3),
    ])
    transform.set_random_state(seed=int(rng.integers(2**31)))
    out = inputs.copy()
    for channel in range(out.shape[0]):
        augmented = np.asarray(transform(out[channel][None]))[0]
        out[channel] = np.where(brain, np.clip(augmented, 0.0, 1.0), 0.0)
    return out
