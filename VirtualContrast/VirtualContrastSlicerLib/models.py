"""Which model a run uses and whether it can run at all, decided before any work starts.

The panel enables *Synthesize* only for a run this module can start, and the logic refuses any other
before writing a file: the chosen (or, for "Automatic", the best bundled) model must get every input
it needs, given or — under the missing-input policy — predicted by an auxiliary model or zero-filled.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from VirtualContrastLib import MODALITIES, registry
from VirtualContrastLib.errors import CheckpointError, MissingModalityError

#: The model parameter's value for "the best bundled model for the selected inputs".
AUTOMATIC_MODEL = ""


@dataclass
class RunPlan:
    """The model a run will use, what it lacks and how that is filled, or why the run cannot start."""

    model: str | None
    inputs: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def possible(self) -> bool:
        """Whether the run can start."""
        return self.problem is None


def _names(modalities: Iterable[str]) -> str:
    return "+".join(m.upper() for m in modalities) or "nothing"


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
    def synthesisModels() -> list[registry.ModelEntry]:
        """The bundled synthesis models, in the registry's order."""
        return [e for e in registry.list_models() if e.role == "synthesis"]

    def description(self, model: str) -> str:
        """One line about the chosen model for the panel."""
        if not model:
            return "The bundled model that uses the most of the selected inputs is chosen automatically."
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
            return self._fill(RunPlan(model, inputs), given, missingPolicy)
        return self._automatic(given, missingPolicy, phantom)

    def _automatic(self, given: list[str], missingPolicy: str, phantom: bool) -> RunPlan:
        entries = self.synthesisModels()
        if not entries:
            return RunPlan(None, problem="No bundled model is installed: load a checkpoint file.")
        try:
            # every input given: the engine's own choice, so the panel and the command line agree
            entry = registry.default_model_for(given, phantom_data=phantom)
            return RunPlan(entry.name, list(entry.inputs))
        except MissingModalityError:
            pass
        possible = [p for p in (self._fill(RunPlan(e.name, list(e.inputs)), given, missingPolicy) for e in entries) if p.possible]
        if possible:
            # the fewest inputs to predict or zero-fill; the first listed on a tie
            return min(possible, key=lambda p: len(p.missing))
        needs = "; ".join(f"{e.name}: {_names(e.inputs)}" for e in entries)
        hint = ("choose 'Predict it from the T1' or 'Fill with zeros' under Missing inputs" if missingPolicy == "error"
                else "select more inputs")
        return RunPlan(None, problem=f"No bundled model works with {_names(given)} ({needs}): {hint}.")

    @staticmethod
    def _fill(plan: RunPlan, given: list[str], missingPolicy: str) -> RunPlan:
        plan.missing = [m for m in plan.inputs if m not in given]
        if not plan.missing:
            return plan
        if missingPolicy == "error":
            plan.problem = f"Select {_names(plan.missing)} (needed by model {plan.model}), or choose how to fill missing inputs."
        elif missingPolicy == "auxiliary":
            lacking = [m for m in plan.missing if registry.auxiliary_model_for(m, given) is None]
            if lacking:
                plan.problem = (f"No bundled auxiliary model predicts {_names(lacking)} from {_names(given)}: select it, "
                                "or fill missing inputs with zeros.")
        return plan
