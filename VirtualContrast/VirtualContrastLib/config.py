"""The model configuration that travels with the weights from training to inference."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from . import MODALITIES
from .calibration import check_output_map
from .normalization import check_spec

DEFAULT_NORMALIZATION: dict[str, Any] = {"name": "brain_percentile", "lower": 0.5, "upper": 99.5}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a network and feed it exactly as in training.

    ``architecture`` and ``arch_kwargs`` go to :func:`VirtualContrastLib.networks.build_network`;
    ``inputs`` is the ordered list of input modalities (channel order);
    ``normalization`` is the spec given to :func:`VirtualContrastLib.normalization.normalize`;
    ``slab_depth`` is the number of slices the network sees at once (1 for 2D models);
    ``output_map`` is the output calibration fitted on training cases (:mod:`VirtualContrastLib.calibration`), or None;
    ``detection_threshold``: for networks with a detection channel, the probability at and above which a voxel
    is shown as enhancing (:func:`VirtualContrastLib.enhancement.gate_enhancement`).
    """

    architecture: str = "hrfcn"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=lambda: ["t1", "t2", "adc"])
    target: str = "t1c"
    slab_depth: int = 3
    normalization: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    output_map: dict[str, list[float]] | None = None
    detection_threshold: float = 0.5

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
