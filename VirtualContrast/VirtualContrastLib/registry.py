"""The model registry: bundled checkpoints listed in ``Resources/Models/models.json``, and devices.

``models.json`` is ``{"models": [entry, ...]}``; each entry has ``name``, ``file``, ``sha256``,
``size_bytes``, ``inputs``, ``output`` ("t1c", or "t2"/"adc" for auxiliary models), ``role``
("synthesis" or "auxiliary"), ``description``, ``intended_use``, ``card`` (a Markdown file beside
the checkpoint), ``training_data`` ("phantom" or the real data set, e.g. "brats2018"; an entry without it
counts as phantom-trained), ``preprocessing`` (what the inputs must look like: ``summary``, ``skull_stripped``,
``max_spacing_mm``, ``max_oblique_degrees``) and the measured ``cpu_seconds_per_volume`` / ``gpu_seconds_per_volume``.

The automatic choice (:func:`default_model_for`, shared by the command line and Slicer) takes, on real scans,
only a model trained on real scans, one that uses a subset of the given inputs (the others are ignored, and
:func:`ignored_inputs_note` says so); with none it refuses. A phantom-trained model runs on real scans only
when named, under :func:`training_warning`. Phantom images (the demo, Slicer's sample) keep phantom-trained models.
The folder is found in the source tree (``<repo>/Resources/Models``), in Slicer's installed
layout (``Resources/Models`` beside ``VirtualContrastLib/``), or where
``VIRTUALCONTRAST_MODELS_DIR`` points.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .checkpoints import load_checkpoint
from .config import ModelConfig
from .errors import CheckpointError, DeviceError, MissingModalityError

if TYPE_CHECKING:
    import torch

MODELS_DIR_ENV = "VIRTUALCONTRAST_MODELS_DIR"


@dataclass
class ModelEntry:
    """One bundled model as described in ``models.json``."""

    name: str
    file: str
    inputs: list[str]
    sha256: str | None = None
    size_bytes: int | None = None
    output: str = "t1c"
    role: str = "synthesis"
    description: str = ""
    intended_use: str = ""
    card: str | None = None
    training_data: str = "phantom"
    preprocessing: dict[str, Any] = field(default_factory=dict)
    cpu_seconds_per_volume: float | None = None
    gpu_seconds_per_volume: float | None = None


@dataclass
class LoadedModel:
    """A network ready for inference, with the configuration and provenance it came with."""

    name: str
    config: ModelConfig
    network: "torch.nn.Module"
    sha256: str
    path: Path
    card: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    entry: ModelEntry | None = None
    detector: "torch.nn.Module | None" = None


def models_dir() -> Path | None:
    """The folder holding ``models.json``, or None when no bundled models are installed."""
    override = os.environ.get(MODELS_DIR_ENV)
    if override:
        path = Path(override)
        if not path.is_dir():
            raise CheckpointError(f"{MODELS_DIR_ENV}={override} is not a folder")
        return path
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "Resources" / "Models", here.parent.parent / "Resources" / "Models"):
        if (candidate / "models.json").is_file():
            return candidate
    return None


def list_models() -> list[ModelEntry]:
    """Every model listed in ``models.json`` (empty when none is installed)."""
    folder = models_dir()
    if folder is None or not (folder / "models.json").is_file():
        return []
    try:
        data = json.loads((folder / "models.json").read_text(encoding="utf-8"))
        raw_entries = data["models"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{folder / 'models.json'} is not a valid model list ({type(error).__name__}: {error})") from None
    known = set(ModelEntry.__dataclass_fields__)
    entries = []
    for number, raw in enumerate(raw_entries):
        try:
            entries.append(ModelEntry(**{k: v for k, v in raw.items() if k in known}))
        except TypeError:
            raise CheckpointError(f"models.json entry {number} needs at least 'name', 'file' and 'inputs'") from None
    return entries


def find_model(name: str) -> ModelEntry | None:
    """The bundled model called ``name``, or None."""
    return next((entry for entry in list_models() if entry.name == name), None)


def read_card(entry: ModelEntry) -> str | None:
    """The Markdown model card of a bundled model, or None when it has none."""
    folder = models_dir()
    if not entry.card or folder is None or not (folder / entry.card).is_file():
        return None
    return (folder / entry.card).read_text(encoding="utf-8")


def resolve_device(device: str = "auto") -> "torch.device":
    """Turn "auto" | "cpu" | "cuda[:N]" into a usable ``torch.device`` or raise :class:`DeviceError`."""
    import torch

    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} requested but PyTorch sees no CUDA GPU here; use 'cpu' or 'auto'")
        try:
            chosen = torch.device(name)
        except RuntimeError:
            raise DeviceError(f"invalid CUDA device {device!r}; use 'cuda' or 'cuda:N'") from None
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} does not exist: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s)")
        return chosen
    raise DeviceError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'")


def load_model(name_or_path: str | os.PathLike, device: str = "auto") -> LoadedModel:
    """Load a bundled model by name (SHA-256 checked) or a checkpoint file, ready for inference."""
    from .networks import place_network

    target = resolve_device(device)
    entry = find_model(str(name_or_path))
    if entry is not None:
        folder = models_dir()
        path = folder / entry.file
        if not path.is_file():
            raise CheckpointError(f"bundled model {entry.name}: its file {entry.file} is missing from {folder}")
        checkpoint = load_checkpoint(path, expected_sha256=entry.sha256)
        name, card = entry.name, read_card(entry)
    else:
        path = Path(name_or_path)
        if not path.is_file():
            bundled = ", ".join(e.name for e in list_models()) or "none installed"
            raise CheckpointError(f"model {str(name_or_path)!r} is neither a bundled model ({bundled}) nor a checkpoint file")
        checkpoint = load_checkpoint(path)
        name, card = path.stem, None
    network, detector = build_networks(checkpoint.config, checkpoint.state_dict, path.name)
    place_network(network.eval(), target)
    if detector is not None:
        detector.eval().to(target)
    return LoadedModel(
        name=name, config=checkpoint.config, network=network, sha256=checkpoint.sha256, path=path,
        card=card, training=checkpoint.training, entry=entry, detector=detector,
    )


def build_networks(config: ModelConfig, state_dict: dict[str, Any], source: str) -> "tuple[torch.nn.Module, torch.nn.Module | None]":
    """The synthesis network and, where ``config`` has one, the detector (weights under ``detector.``), loaded on the CPU."""
    from .networks import build_network
    from .networks.detector import DETECTOR_PREFIX, build_detector

    own = {k: v for k, v in state_dict.items() if not k.startswith(DETECTOR_PREFIX)}
    detector_weights = {k[len(DETECTOR_PREFIX):]: v for k, v in state_dict.items() if k.startswith(DETECTOR_PREFIX)}
    network = build_network(config)
    detector = None if config.detector is None else build_detector(len(config.inputs), config.detector.get("arch"))
    try:
        network.load_state_dict(own, strict=True)
        if detector is not None:
            detector.load_state_dict(detector_weights, strict=True)
        elif detector_weights:
            raise RuntimeError("detector weights without a detector in the config")
    except (RuntimeError, TypeError) as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{source}: the weights do not fit the {config.architecture} network they claim ({first})") from None
    return network, detector


def trained_on_real_scans(entry: ModelEntry) -> bool:
    """Whether a model was trained on real scans (not only on physics phantoms)."""
    return entry.training_data != "phantom"


def _names(modalities: Iterable[str]) -> str:
    return "+".join(m.upper() for m in modalities) or "no inputs"


def default_model_for(modalities: Iterable[str], phantom_data: bool = False) -> ModelEntry:
    """The automatic choice: the bundled synthesis model using the most of the given inputs (a subset of them).

    On real scans only models trained on real scans qualify, and with none that fits this refuses in one line
    naming what to load or which model to name. For phantom images (``phantom_data``: the demo, Slicer's
    sample) every model qualifies and phantom-trained ones win ties. Further ties go to the entry listed
    first in ``models.json``.
    """
    available = list(dict.fromkeys(modalities))
    synthesis = [e for e in list_models() if e.role == "synthesis" and e.output == "t1c"]
    if not synthesis:
        raise CheckpointError("no bundled synthesis model is installed; pass a checkpoint file with --model PATH")
    candidates = synthesis if phantom_data else [e for e in synthesis if trained_on_real_scans(e)]
    usable = [e for e in candidates if set(e.inputs) <= set(available)]
    if usable:
        return max(usable, key=lambda e: (len(e.inputs), (e.training_data == "phantom") == phantom_data))
    needs = "; ".join(f"{e.name}: {'+'.join(e.inputs)}" for e in synthesis)
    if phantom_data:
        raise MissingModalityError(f"no bundled model works with {'+'.join(available) or 'no inputs'} (models need {needs})")
    fitting = [e.name for e in synthesis if set(e.inputs) <= set(available)]
    named = f"name a model to run it anyway (trained on phantoms only: {', '.join(fitting)})" if fitting else ""
    if not candidates:
        raise MissingModalityError(f"no bundled model is trained on real scans: {named or f'none works with {_names(available)} either'}")
    closest = min(candidates, key=lambda e: len(set(e.inputs) - set(available)))
    missing = [m for m in closest.inputs if m not in available]
    raise MissingModalityError(f"no bundled model trained on real scans works with {_names(available)}: load {_names(missing)} "
                               f"({closest.name} needs {_names(closest.inputs)}){', or ' + named if named else ''}")


def training_warning(entry: ModelEntry | None, phantom_data: bool = False) -> str | None:
    """The warning shown wherever a phantom-trained model runs on real scans (None otherwise)."""
    if entry is None or phantom_data or trained_on_real_scans(entry):
        return None
    return (f"model {entry.name} was trained on phantoms only: on real scans its output is not validated and may "
            "show or hide enhancement wrongly")


def ignored_inputs_note(entry: ModelEntry | None, given: Iterable[str]) -> str | None:
    """Which of the ``given`` inputs a model uses and which it ignores (None when it uses them all)."""
    given = list(dict.fromkeys(given))
    ignored = [m for m in given if entry is not None and m not in entry.inputs]
    if not ignored:
        return None
    return f"model {entry.name} uses {_names(m for m in entry.inputs if m in given)}; ignored: {_names(ignored)}"


def auxiliary_model_for(modality: str, available: Iterable[str]) -> ModelEntry | None:
    """A bundled auxiliary model predicting ``modality`` from available inputs (paper IV-E), if any."""
    have = set(available)
    candidates = [e for e in list_models() if e.role == "auxiliary" and e.output == modality and set(e.inputs) <= have]
    return max(candidates, key=lambda e: len(e.inputs), default=None)
