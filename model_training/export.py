"""Export a run's best model as an engine checkpoint for the CLI and the Slicer module."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from VirtualContrastLib import INTENDED_USE
from VirtualContrastLib.checkpoints import load_checkpoint, save_checkpoint
from VirtualContrastLib.errors import InputError

from .calibrate import load_run_map
from .train import BEST_NAME, STATE_NAME


def export_run(run_dir: str | Path, out_path: str | Path, output_map: bool = True, half: bool = True) -> tuple[Path, str]:
    """Write ``run_dir``'s best weights with the full training summary to ``out_path``; returns (path, sha256).

    The weights are stored as float16 unless ``half`` is False (half the download; read back as float32,
    see :mod:`VirtualContrastLib.checkpoints`).
    The summary keeps what ``best.pt`` recorded (data and seeds, schedule, config, hardware) and
    adds the finished run's history and wall time from ``state.pt``; the config gets the run's output
    map when ``calibrate`` fitted one on these weights, unless ``output_map`` is False (a selection rule
    may prefer the network's own output).
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
    if (run_dir / STATE_NAME).is_file():
        state = load_checkpoint(run_dir / STATE_NAME).training
        summary.update({"history": state.get("history", []), "wall_time_s": round(float(state.get("wall_time_s", 0.0)), 1),
                        "epochs_done": int(state.get("epoch", 0)), "best": state.get("best")})
    summary["intended_use"] = INTENDED_USE
    summary["output"] = config.target
    out_path = Path(out_path)
    digest = save_checkpoint(out_path, config, best.state_dict, summary, half=half)
    return out_path, digest
