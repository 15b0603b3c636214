"""Which model a run uses and whether it can run at all, decided before any work starts.

The panel enables *Synthesize* only for a run this module can start, and the logic refuses any other
before writing a file: the chosen (or, for "Automatic", the best bundled) model must get every input
it needs, given or — under the missing-input policy — predicted by an auxiliary model or zero-filled.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from VirtualContrastLib import MODALITIES, registry
from VirtualContrastLib.errors import CheckpointError, MissingModalityError

#: The model parameter's value for "the best bundled model for the selected inputs".
AUTOMATIC_MODEL = ""


@dataclass
class RunPlan:
    """The model a run will use, what it lacks and how that is filled, the inputs it ignores and the warnings
    the panel shows (phantom-only training), or why the run cannot start."""

    model: str | None
    inputs: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problem: str | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def possible(self) -> bool:
        """Whether the run can start."""
        return self.problem is None


def _names(modalities: Iterable[str]) -> str:
    return "+".join(m.upper() for m in modalities) or "nothing"


def _sentences(texts: Iterable[str | None]) -> list[str]:
    """The engine's lower-case one-line messages as the panel's sentences."""
    return [f"{text[0].upper()}{text[1:]}." for text in texts if text]


#: A skull-stripped brain is 1.0-1.8 l; anything not background beyond this is a head with skull (or a noisy background).
MAX_BRAIN_ML = 2200.0


def imageWarnings(name: str, voxels: np.ndarray, ijkToRas: np.ndarray, preprocessing: Mapping[str, Any]) -> list[str]:
    """How an input differs from what a model expects (``preprocessing`` of models.json): skull, thick slices, oblique axes."""
    columns = np.asarray(ijkToRas, dtype=float)[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    warnings = []
    maxSpacing = preprocessing.get("max_spacing_mm")
    if maxSpacing and spacing.max() > maxSpacing + 1e-3:
        warnings.append(f"{name} has {spacing.max():.1f} mm slices; the model expects at most {maxSpacing:g} mm.")
    # angle between each voxel axis and the nearest scanner axis
    oblique = math.degrees(math.acos(min(1.0, float(np.abs(columns / spacing).max(axis=0).min()))))
    maxOblique = preprocessing.get("max_oblique_degrees")
    if maxOblique is not None and oblique > maxOblique:
        warnings.append(f"{name} is oblique ({oblique:.0f}° off the scanner axes); the model expects at most {maxOblique:g}°.")
    if preprocessing.get("skull_stripped"):
        volume = np.count_nonzero(voxels > voxels.min()) * float(np.prod(spacing)) / 1000.0
        if volume > MAX_BRAIN_ML:
            warnings.append(f"{name} does not look skull-stripped ({volume:.0f} ml is not background); the model expects a "
                            "skull-stripped brain.")
    return warnings


class ModelCatalog:
    """Bundled models and checkpoint files: their inputs, a description, and run plans.

    A checkpoint file is read (hashed and loaded by torch) once per file version, not on every
    panel update: the answer is cached by path, size and modification time.
    """

    def __init__(self) -> None:
        self._checkpoints: dict[tuple[str, int, int], tuple[list[str] | None, str | None]] = {}

    def _readCheckpoint(self, path: str) -> tuple[list[str] | None, str | None]:
        """(inputs, problem) of a checkpoint file; (None, None) when torch is not installed yet to read it."""
        try:
            stat = os.stat(path)
        except OSError:
            return None, f"checkpoint not found: {path}"
        key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._checkpoints:
            try:
                from VirtualContrastLib.checkpoints import load_checkpoint

                self._checkpoints[key] = (list(load_checkpoint(path).config.inputs), None)
            except ImportError:
                return None, None
            except CheckpointError as error:
                self._checkpoints[key] = (None, str(error))
        return self._checkpoints[key]

    def inputs(self, model: str) -> list[str] | None:
        """Inputs the model needs (None for the automatic choice, an unreadable file, or no torch yet)."""
        if not model:
            return None
        entry = registry.find_model(model)
        if entry is not None:
            return list(entry.inputs)
        return self._readCheckpoint(model)[0]

    def checkpointProblem(self, path: str) -> str | None:
        """Why a checkpoint file cannot be used, or None (also None when torch is not installed yet to check it)."""
        return self._readCheckpoint(path)[1]

    @staticmethod
    def preprocessing(model: str | None) -> dict:
        """What a bundled model expects of its inputs (``preprocessing`` in models.json; {} for checkpoint files)."""
        entry = registry.find_model(model) if model else None
        return dict(entry.preprocessing) if entry is not None else {}

    @staticmethod
    def synthesisModels() -> list[registry.ModelEntry]:
        """The bundled synthesis models, in the registry's order."""
        return [e for e in registry.list_models() if e.role == "synthesis"]

    def description(self, model: str) -> str:
        """One line about the chosen model for the panel."""
        if not model:
            return ("Automatic: on real scans, the bundled model trained on real scans that uses the most of the selected "
                    "inputs (phantom-trained models only when chosen by name).")
        entry = registry.find_model(model)
        if entry is None:
            return f"Checkpoint file: {model}"
        seconds = f" About {entry.cpu_seconds_per_volume:.0f} s per volume on a CPU." if entry.cpu_seconds_per_volume else ""
        return f"{entry.description}{seconds}"

    def plan(self, model: str, given: Iterable[str], missingPolicy: str, phantom: bool = False) -> RunPlan:
        """The run for ``model`` (AUTOMATIC_MODEL: chosen here, for phantom images if ``phantom``) with the ``given``
        inputs, or why it cannot run."""
        given = [m for m in MODALITIES if m in set(given)]
        if "t1" not in given:
            return RunPlan(None, problem="Select a pre-contrast T1: the synthetic image is made on its grid.")
        if model:
            inputs = self.inputs(model)
            if inputs is None:
                problem = self.checkpointProblem(model) if registry.find_model(model) is None else None
                # unknown until torch can read the file: the engine checks it when the run starts
                return RunPlan(model, problem=f"This model cannot be used: {problem}" if problem else None)
            return self._fill(RunPlan(model, inputs), given, missingPolicy, phantom)
        return self._automatic(given, missingPolicy, phantom)

    def _automatic(self, given: list[str], missingPolicy: str, phantom: bool) -> RunPlan:
        entries = self.synthesisModels()
        if not entries:
            return RunPlan(None, problem="No bundled model is installed: load a checkpoint file.")
        try:
            # a model for a subset of the inputs: the engine's own choice, so the panel and the command line agree
            entry = registry.default_model_for(given, phantom_data=phantom)
            return self._fill(RunPlan(entry.name, list(entry.inputs)), given, missingPolicy, phantom)
        except MissingModalityError as error:
            refusal = str(error)
        # on real scans only models trained on real scans are chosen automatically, also to fill missing inputs
        candidates = [e for e in entries if phantom or registry.trained_on_real_scans(e)]
        possible = [p for p in (self._fill(RunPlan(e.name, list(e.inputs)), given, missingPolicy, phantom) for e in candidates)
                    if p.possible]
        if possible:
            # the fewest inputs to predict or zero-fill; the first listed on a tie
            return min(possible, key=lambda p: len(p.missing))
        hint = (" Or choose 'Predict it from the T1' or 'Fill with zeros' under Missing inputs."
                if missingPolicy == "error" and candidates else "")
        return RunPlan(None, problem=_sentences([refusal])[0] + hint)

    @staticmethod
    def _fill(plan: RunPlan, given: list[str], missingPolicy: str, phantom: bool = False) -> RunPlan:
        plan.missing = [m for m in plan.inputs if m not in given]
        entry = registry.find_model(plan.model)
        plan.notes = _sentences([registry.ignored_inputs_note(entry, given)])
        plan.warnings = _sentences([registry.training_warning(entry, phantom)])
        if not plan.missing:
            return plan
        if missingPolicy == "error":
            plan.problem = f"Select {_names(plan.missing)} (needed by model {plan.model}), or choose how to fill missing inputs."
        elif missingPolicy == "auxiliary":
            auxiliaries = {m: registry.auxiliary_model_for(m, given) for m in plan.missing}
            lacking = [m for m, entry in auxiliaries.items() if entry is None]
            if lacking:
                plan.problem = (f"No bundled auxiliary model predicts {_names(lacking)} from {_names(given)}: select it, "
                                "or fill missing inputs with zeros.")
            # the auxiliary models are a part of the run: their phantom-only training is the user's to know too
            plan.warnings += _sentences(registry.training_warning(e, phantom) for e in auxiliaries.values())
        return plan
