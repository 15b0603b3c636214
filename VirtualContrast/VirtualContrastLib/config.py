"""The model configuration that travels with the weights from training to inference."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from . import MODALITIES
from .calibration import check_output_map
from .normalization import check_spec

DEFAULT_NORMALIZATION: dict[str, Any] = {"name": "brain_percentile", "lower": 0.5, "upper": 99.5}

#: Default options of the enhancement detector (:mod:`VirtualContrastLib.networks.detector`): MONAI UNet
#: channels and strides, residual units per level, dropout, and the cube (D, H, W) it is trained and run on.
DETECTOR_ARCH: dict[str, Any] = {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 1,
                                 "dropout": 0.1, "patch": [96, 96, 96], "classes": 1}

#: What a detector's ``classes`` output channels mean: one logit that a voxel enhances (the bundled detectors), or a
#: softmax over the tumour's parts, in the order of the prepared labels (background, necrosis, oedema, enhancing).
DETECTOR_CLASSES = (1, 4)

#: How a detector's ``curve`` is fitted on training cases (``virtual-contrast-train fit-detection --curve``): the mean
#: true subtraction map per probability bin over all brain voxels (``mean``, the bundled models') or over the enhancing
#: ones only (``enhancing``: every confirmed voxel is drawn above T; an ablation, README).
CURVE_KINDS = ("mean", "enhancing")


def check_detector(detector: Any) -> None:
    """Refuse a ``detector`` entry that cannot be built or whose curve is not increasing probabilities with values."""
    if not isinstance(detector, dict) or set(detector) - {"arch", "curve"}:
        raise ValueError(f"detector must be a dict with 'arch' and optionally 'curve', got {detector!r}")
    arch = detector.get("arch", {})
    if not isinstance(arch, dict) or set(arch) - set(DETECTOR_ARCH):
        raise ValueError(f"detector arch must be a dict with keys among {sorted(DETECTOR_ARCH)}, got {arch!r}")
    spec = {**DETECTOR_ARCH, **arch}
    multiple = math.prod(spec["strides"])
    if len(spec["channels"]) != len(spec["strides"]) + 1 or len(spec["patch"]) != 3 or any(int(p) % multiple for p in spec["patch"]):
        raise ValueError(f"detector arch {arch!r}: needs one more channel count than strides and a 3D patch divisible by {multiple}")
    if spec["classes"] not in DETECTOR_CLASSES:
        raise ValueError(f"detector arch {arch!r}: classes must be one of {DETECTOR_CLASSES}")
    curve = detector.get("curve")
    if curve is not None:
        xs, ys = (curve.get(k) if isinstance(curve, dict) else None for k in ("probability", "enhancement"))
        if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys) or len(xs) < 2 or \
                any(b <= a for a, b in zip(xs, xs[1:])):
            raise ValueError("detector curve needs lists 'probability' (increasing) and 'enhancement' of one length >= 2")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a network and feed it exactly as in training.

    ``architecture`` and ``arch_kwargs`` go to :func:`VirtualContrastLib.networks.build_network`;
    ``inputs`` is the ordered list of input modalities (channel order);
    ``normalization`` is the spec given to :func:`VirtualContrastLib.normalization.normalize`;
    ``slab_depth`` is the number of slices the network sees at once (1 for 2D models);
    ``output_map`` is the output calibration fitted on training cases (:mod:`VirtualContrastLib.calibration`), or None;
    ``detection_threshold``: for networks with a detection channel or a detector, the probability at and above which
    a voxel confirms enhancement: regions of enhancement with no such voxel are removed
    (:func:`VirtualContrastLib.enhancement.gate_enhancement`);
    ``detector``: None, or the enhancement detector shipped in the same checkpoint (weights under ``detector.``):
    ``{"arch": ...}`` (:mod:`VirtualContrastLib.networks.detector`) and, once fitted on training cases,
    ``"curve": {"probability": [...], "enhancement": [...]}``, the mean true subtraction map at each probability
    (:func:`VirtualContrastLib.enhancement.expected_enhancement`).
    """

    architecture: str = "hrfcn"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=lambda: ["t1", "t2", "adc"])
    target: str = "t1c"
    slab_depth: int = 3
    normalization: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    output_map: dict[str, list[float]] | None = None
    detection_threshold: float = 0.5
    detector: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        unknown = [m for m in self.inputs if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown input modalities {unknown}; known: {list(MODALITIES)}")
        if not self.inputs or self.inputs[0] != "t1":
            raise ValueError("the first input modality must be 't1' (outputs land on the T1 grid)")
        if not isinstance(self.slab_depth, int) or isinstance(self.slab_depth, bool) or self.slab_depth < 1:
            raise ValueError(f"slab_depth must be an integer >= 1, got {self.slab_depth!r}")
        if not isinstance(self.arch_kwargs, dict):
            raise ValueError(f"arch_kwargs must be a dict, got {self.arch_kwargs!r}")
        if self.target not in ("t1c", *MODALITIES):
            raise ValueError(f"unknown target {self.target!r}; known: t1c, {', '.join(MODALITIES)}")
        if not isinstance(self.detection_threshold, (int, float)) or not 0.0 < self.detection_threshold < 1.0:
            raise ValueError(f"detection_threshold must be a probability in (0, 1), got {self.detection_threshold!r}")
        if self.detector is not None:
            check_detector(self.detector)
        # Checked here, not at inference, so a bad checkpoint is refused as it loads.
        check_spec(self.normalization)
        check_output_map(self.output_map)

    def to_dict(self) -> dict[str, Any]:
        """Plain-container form, safe for ``torch.load(weights_only=True)``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Rebuild from :meth:`to_dict` output, ignoring keys this version does not know."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
