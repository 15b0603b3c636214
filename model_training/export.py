"""Export a run's best model as an engine checkpoint for the CLI and the Slicer module."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from VirtualContrastLib import INTENDED_USE
from VirtualContrastLib.checkpoints import load_checkpoint, save_checkpoint
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.errors import InputError

from .calibrate import load_run_map, load_run_threshold
from .train import BEST_NAME, STATE_NAME


def exported_checkpoint(run_dir: str | Path, output_map: bool = True) -> tuple[ModelConfig, dict[str, Any], dict[str, Any]]:
    """``run_dir``'s best weights with the full training summary: (config, state dict, summary).

    The summary keeps what ``best.pt`` recorded (data and seeds, schedule, config, hardware) and
    adds the finished run's history and wall time from ``state.pt``; the config gets the run's output
    map when ``calibrate`` fitted one on these weights, unless ``output_map`` is False (a selection rule
    may prefer the network's own output), and the detection threshold that ``fit-detection`` fitted on them.
    """
    run_dir = Path(run_dir)
    best_path = run_dir / BEST_NAME
    if not best_path.is_file():
        raise InputError(f"{run_dir} has no {BEST_NAME}: train at least one epoch first")
    best = load_checkpoint(best_path)
    config = best.config
    summary: dict[str, Any] = dict(best.training)
    run_map = load_run_map(run_dir, best.sha256) if output_map else None
    if run_map is not None:
        config = dataclasses.replace(config, output_map={k: run_map[k] for k in ("source", "target")})
        summary["calibration"] = {"cases": run_map["cases"], "cache": run_map["cache"]}
    fitted = load_run_threshold(run_dir, best.sha256)
    if fitted is not None:
        threshold, curve = fitted
        detector = config.detector if curve is None or config.detector is None else {**config.detector, "curve": curve}
        config = dataclasses.replace(config, detection_threshold=threshold, detector=detector)
    if (run_dir / STATE_NAME).is_file():
        state = load_checkpoint(run_dir / STATE_NAME).training
        summary.update({"history": state.get("history", []), "wall_time_s": round(float(state.get("wall_time_s", 0.0)), 1),
                        "epochs_done": int(state.get("epoch", 0)), "best": state.get("best")})
    summary["intended_use"] = INTENDED_USE
    summary["output"] = config.target
    return config, best.state_dict, summary


def shipped_model_at(path: Path) -> str | None:
    """The name of the bundled model whose checkpoint ``path`` is (per the ``models.json`` beside it), or None."""
    index = path.parent / "models.json"
    if not index.is_file():
        return None
    try:
        entries = json.loads(index.read_text(encoding="utf-8")).get("models", [])
    except (ValueError, AttributeError):
        return None  # not a models index we can read: nothing shipped to protect here
    return next((str(e.get("name")) for e in entries if isinstance(e, dict) and e.get("file") == path.name), None)


def check_export_path(path: Path, overwrite: bool) -> None:
    """Refuse a folder, an existing file without ``overwrite`` and, always, a shipped model's checkpoint."""
    if path.is_dir():
        raise InputError(f"export --out {path} is a folder; give a checkpoint file name such as {path / 'model.pt'}")
    shipped = shipped_model_at(path) if path.exists() else None
    if shipped is not None:
        raise InputError(f"{path} is the bundled model {shipped!r} (listed in {path.parent / 'models.json'}); "
                         f"export elsewhere, or replace the model with 'bundle --name {shipped} --replace'")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; pass --overwrite to replace it or choose another --out")


def export_run(run_dir: str | Path, out_path: str | Path, output_map: bool = True, half: bool = True,
               overwrite: bool = False) -> tuple[Path, str]:
    """Write ``run_dir``'s best weights with the full training summary (:func:`exported_checkpoint`) to
    ``out_path``, which must not exist unless ``overwrite`` (and never be a shipped model); returns (path, sha256).

    The weights are stored as float16 unless ``half`` is False (half the download; read back as float32,
    see :mod:`VirtualContrastLib.checkpoints`)."""
    out_path = Path(out_path)
    check_export_path(out_path, overwrite)
    config, state_dict, summary = exported_checkpoint(run_dir, output_map)
    return out_path, save_checkpoint(out_path, config, state_dict, summary, half=half)
