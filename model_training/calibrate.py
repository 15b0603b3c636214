"""Fit a run's output calibration (:mod:`VirtualContrastLib.calibration`) on its training cases.

``virtual-contrast-train calibrate RUN --data CACHE`` runs the run's selected weights (``best.pt``)
through the engine on every training case of a prepared cache, exactly as a user would, and writes
``RUN/output_map.json``; ``export`` and ``bundle`` put the map into the shipped checkpoint's config.
Validation cases are never used, so the map is fixed before the model is scored on them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

from VirtualContrastLib.calibration import fit_output_map
from VirtualContrastLib.errors import InputError
from VirtualContrastLib.fileutil import atomic_write
from VirtualContrastLib.normalization import intensity_range, normalize

from .evaluate import synthesize_case, training_case_ids
from .prepare import load_case
from .train import BEST_NAME

MAP_NAME = "output_map.json"


def calibrate_run(run_dir: str | Path, cache_dir: str | Path, device: str = "auto",
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fit the output map of ``run_dir``'s best weights on the training cases of ``cache_dir``; write and return it."""
    from VirtualContrastLib.registry import load_model

    run_dir = Path(run_dir)
    if not (run_dir / BEST_NAME).is_file():
        raise InputError(f"{run_dir} has no {BEST_NAME}: train at least one epoch first")
    model = load_model(str(run_dir / BEST_NAME), device=device)
    # Fit on the network's own outputs, whatever map its config may carry.
    model.config = dataclasses.replace(model.config, output_map=None)
    spec, target = model.config.normalization, model.config.target
    case_ids = training_case_ids(cache_dir, labelled=False)
    start = time.perf_counter()
    outputs, targets = [], []
    for number, case_id in enumerate(case_ids, 1):
        case = load_case(cache_dir, case_id)
        brain = case["mask"] > 0
        prediction, _ = synthesize_case(model, case, device)
        # The engine writes the prediction into the T1's intensity window; undo that to get the network's [0, 1] output.
        low, high = intensity_range(case["raw_t1"], brain, spec)
        outputs.append((prediction[brain] - low) / (high - low))
        targets.append(normalize(case[f"raw_{target}"], brain, spec)[brain])
        if progress:
            progress(f"calibration case {number}/{len(case_ids)}: {case_id}")
    try:
        output_map = fit_output_map(outputs, targets)
    except ValueError as error:
        raise InputError(f"{run_dir}: {error}") from None
    record = {**output_map, "cases": case_ids, "cache": str(cache_dir),
              "checkpoint_sha256": model.sha256, "seconds": round(time.perf_counter() - start, 1)}
    with atomic_write(run_dir / MAP_NAME, ".json") as tmp:
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


def load_run_map(run_dir: str | Path, best_sha256: str) -> dict[str, Any] | None:
    """The output map recorded in ``run_dir`` (None if it has none); refuse one fitted on other weights."""
    path = Path(run_dir) / MAP_NAME
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("checkpoint_sha256") != best_sha256:
        raise InputError(f"{path} was fitted on other weights than {BEST_NAME} (training went on since): run 'calibrate' again")
    return record
