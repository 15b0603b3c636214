"""Training run configuration: JSON files in ``model_training/configs/``.

A file may name another with ``"extends": "final.json"`` (relative to its own folder); its keys
are merged over the parent's recursively (dicts merge, everything else replaces). Sections:

- ``model``: a :class:`VirtualContrastLib.config.ModelConfig` (architecture, arch_kwargs, inputs,
  target, slab_depth, normalization) — exactly what the exported checkpoint carries.
- ``data``: ``train`` and ``val`` prepared cache folders (relative paths are relative to the
  working directory), or ``val_fraction`` to split ``train`` deterministically by ``seed``;
  ``max_val_cases`` to bound validation time.
- ``sampling``: ``batch_size`` (per process), ``slabs_per_epoch``, ``crop``,
  ``enhancement_fraction``, ``augment``, ``robust_augment`` (see :mod:`model_training.sampling`).
- ``loss``: ``delta`` (δ of the mask M), ``delta_max``; ``local_labels``: tumour label values
  (prepared convention, 3 = enhancing) whose voxels form the local-loss region instead of M;
  ``histogram``: weight of the histogram term (default 0, off; see :mod:`model_training.losses`);
  ``detection``: weight of the detection term for networks with a detection channel (default 1).
- ``schedule``: list of stages ``{"epochs", "weights": [λ1, λ2, λ3], "lr"}``.
- ``optimizer``: Adam ``betas``; ``reset_between_stages`` (the authors re-compiled the Keras model
  for phase 2, which starts a fresh Adam state).
- ``precision``: ``auto`` (bf16 on GPUs that support it, else fp16 with a GradScaler; fp32 on CPU),
  ``fp32``, ``bf16`` or ``fp16``; ``gradient_checkpointing``; ``channels_last``.
- ``seed``, ``num_workers``, ``validation`` (``every`` epochs, ``tta``, ``select``: the rule that picks
  ``best.pt``, one of :data:`SELECTION_RULES`).
- ``init``: start from the weights of a bundled model (by name, SHA-256 checked) or a checkpoint
  file instead of a random initialization — fine-tuning. The architecture, its arguments and the
  number of inputs must match; the inputs themselves may differ (e.g. FLAIR in place of ADC).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.errors import VirtualContrastError
from VirtualContrastLib.options import PRECISIONS

from .losses import PAPER_SCHEDULE, Stage
from .sampling import SamplingOptions

CONFIG_DIR = Path(__file__).parent / "configs"


#: Rules that pick a run's ``best.pt`` from its validation means: name -> the ``val_<region>_<metric>``
#: keys averaged into the score. ``brain_et_psnr`` weighs enhancement as much as the whole brain, so a
#: checkpoint that renders the brain but not the enhancing tumour cannot win on the brain alone.
SELECTION_RULES: dict[str, tuple[str, ...]] = {
    "brain_psnr": ("val_brain_psnr",),
    "brain_et_psnr": ("val_brain_psnr", "val_enhancing_tumour_psnr"),
    "clinical": ("val_enhancement_lesion_f1", "val_enhancement_auc_brain"),
}

#: Rules with a gate: an epoch that fails it gets no score. ``clinical`` (what the user sees) asks for lesions
#: found (mean lesion F1, false enhancing blobs counting as false positives) and for a map that ranks enhancing
#: tumour above the brain away from it (voxel AUC), gated by a brain PSNR not below the identity floor's and at
#: least one detected lesion: a checkpoint that finds no lesion cannot win.
SELECTION_GATES: dict[str, tuple[tuple[str, str], ...]] = {
    "clinical": (("val_brain_psnr", "val_brain_identity_psnr"), ("val_enhancement_lesions_detected", "")),
}


class ConfigError(VirtualContrastError):
    """A training configuration file is missing or invalid."""


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config file path, or the name of a bundled config (``final`` or ``final.json``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / (path.name if path.suffix == ".json" else f"{path.name}.json")
    if bundled.is_file():
        return bundled
    raise ConfigError(f"training config not found: {name_or_path} (bundled: {', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.json')))})")


def load_raw_config(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config file with its ``extends`` chain merged."""
    path = resolve_config_path(name_or_path).resolve()
    if path in _seen:
        raise ConfigError(f"config {path.name} extends itself")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path.name} is not valid JSON: {error}") from None
    parent = data.pop("extends", None)
    name = data.get("name", path.stem)
    if parent is not None:
        data = _merge(load_raw_config(path.parent / parent, (*_seen, path)), data)
    data["name"] = name
    return data


@dataclass
class TrainConfig:
    """A parsed training configuration."""

    name: str
    model: ModelConfig
    data: dict[str, Any]
    sampling: SamplingOptions
    batch_size: int
    stages: list[Stage]
    delta: float = 0.1
    delta_max: float | None = None
    histogram_weight: float = 0.0
    detection_weight: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    reset_between_stages: bool = True
    precision: str = "auto"
    gradient_checkpointing: bool = False
    channels_last: bool = True
    seed: int = 0
    num_workers: int = 0
    validation: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Validate and parse a merged config dict."""
        try:
            model = ModelConfig.from_dict(data.get("model", {}))
            sampling_section = dict(data.get("sampling", {}))
            batch_size = int(sampling_section.pop("batch_size", 3))
            loss = data.get("loss", {})
            sampling = SamplingOptions.from_dict({**sampling_section, "delta": loss.get("delta", 0.1), "local_labels": loss.get("local_labels")})
            stages = [Stage.from_dict(s) for s in data["schedule"]] if "schedule" in data else list(PAPER_SCHEDULE)
            optimizer = data.get("optimizer", {})
            precision = data.get("precision", "auto")
            if precision not in PRECISIONS:
                raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
            select = dict(data.get("validation", {})).get("select", "brain_psnr")
            if select not in SELECTION_RULES:
                raise ValueError(f"validation.select must be one of {', '.join(SELECTION_RULES)}, not {select!r}")
            for term, default in (("histogram", 0.0), ("detection", 1.0)):
                if float(loss.get(term, default)) < 0:
                    raise ValueError(f"loss.{term} must be >= 0")
            if batch_size < 1 or sampling.slabs_per_epoch < batch_size:
                raise ValueError("need batch_size >= 1 and slabs_per_epoch >= batch_size")
            return cls(
                name=str(data.get("name", "run")),
                model=model,
                data=dict(data.get("data", {})),
                sampling=sampling,
                batch_size=batch_size,
                stages=stages,
                delta=float(loss.get("delta", 0.1)),
                delta_max=loss.get("delta_max"),
                histogram_weight=float(loss.get("histogram", 0.0)),
                detection_weight=float(loss.get("detection", 1.0)),
                betas=tuple(optimizer.get("betas", (0.9, 0.999))),
                reset_between_stages=bool(optimizer.get("reset_between_stages", True)),
                precision=precision,
                gradient_checkpointing=bool(data.get("gradient_checkpointing", False)),
                channels_last=bool(data.get("channels_last", True)),
                seed=int(data.get("seed", 0)),
                num_workers=int(data.get("num_workers", 0)),
                validation=dict(data.get("validation", {})),
                init=str(data["init"]) if data.get("init") else None,
                raw=copy.deepcopy(data),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"invalid training config {data.get('name', '')!r}: {error}") from None


def load_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load a config file (or bundled name), merge ``overrides`` over it and parse it."""
    data = load_raw_config(name_or_path)
    if overrides:
        data = _merge(data, overrides)
    return TrainConfig.from_dict(data)


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=VALUE`` (VALUE as JSON, else a string) -> nested dict for :func:`load_config`."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, value = text.split("=", 1)
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = parsed
    return out
