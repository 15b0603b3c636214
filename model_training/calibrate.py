"""Fit what a run ships besides its weights on its training cases: the output calibration and the detection threshold.

``virtual-contrast-train calibrate RUN --data CACHE`` runs the run's selected weights (``best.pt``)
through the engine on every training case of a prepared cache, exactly as a user would, and writes
``RUN/output_map.json`` (:mod:`VirtualContrastLib.calibration`). ``virtual-contrast-train fit-detection RUN
--data CACHE`` does the same for a model with a detection head or detector and writes ``RUN/detection_threshold.json``:
the enhancement curve of a detector (:func:`fit_detection_threshold`) and the probability at and above which the
gated map shows enhancement (:func:`VirtualContrastLib.enhancement.gate_enhancement`),
chosen from :data:`DETECTION_GRID` as the one with the best mean lesion F1 over the labelled training cases (ties: the
higher threshold, fewer false blobs). ``export`` and ``bundle`` put both into the shipped checkpoint's config.
Validation cases are never used, so both are fixed before the model is scored on them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

from VirtualContrastLib.calibration import fit_output_map
from VirtualContrastLib.config import CURVE_KINDS
from VirtualContrastLib.errors import InputError
from VirtualContrastLib.fileutil import atomic_write
from VirtualContrastLib.normalization import intensity_range, normalize

from .evaluate import synthesize_case, training_case_ids
from .prepare import load_case
from .train import BEST_NAME

MAP_NAME = "output_map.json"
THRESHOLD_NAME = "detection_threshold.json"

#: Probability bins of the detector's enhancement curve.
CURVE_BINS = 20

#: Probabilities tried as the detection threshold.
DETECTION_GRID = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


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


def fit_detection_threshold(run_dir: str | Path, cache_dir: str | Path, device: str = "auto", max_cases: int | None = None,
                            progress: Callable[[str], None] | None = None, curve_kind: str = "mean") -> dict[str, Any]:
    """Fit the detection threshold (and, for a model with a detector, its enhancement curve) of ``run_dir``'s best
    weights on labelled training cases of ``cache_dir``; write and return them.

    Each case runs once with nothing gated. The curve (models with a detector) is the mean true subtraction map of
    the brain voxels (``curve_kind`` ``mean``) or of the enhancing ones only (``enhancing``: true map above
    :data:`ENHANCEMENT_THRESHOLD`, so every confirmed voxel is drawn above T) in each of :data:`CURVE_BINS`
    probability bins, pooled over the cases and made non-decreasing (isotonic regression weighted by voxel counts).
    Then for every threshold of :data:`DETECTION_GRID` the map is gated as the engine gates it (without
    :func:`gate_enhancement`'s refit of the gated image, a small difference) and scored for lesions found and false
    blobs against the case's true map.
    """
    import numpy as np
    import SimpleITK as sitk

    from VirtualContrastLib.enhancement import (ENHANCEMENT_THRESHOLD, GATE_CAP, expected_enhancement, lesion_counts, near_tumour,
                                                undetected_blobs)
    from VirtualContrastLib.networks import has_detection
    from VirtualContrastLib.registry import load_model

    from .evaluate import array_spacing, synthesis_of_case, true_subtraction

    if curve_kind not in CURVE_KINDS:
        raise InputError(f"curve kind {curve_kind!r}: choose one of {', '.join(CURVE_KINDS)}")
    run_dir = Path(run_dir)
    if not (run_dir / BEST_NAME).is_file():
        raise InputError(f"{run_dir} has no {BEST_NAME}: train at least one epoch first")
    model = load_model(str(run_dir / BEST_NAME), device=device)
    detector = model.config.detector
    if not has_detection(model.config) and detector is None:
        raise InputError(f"{run_dir}'s model has no detection head or detector: there is no threshold to fit")
    # Nothing gated and no curve: each threshold below is applied to the same raw map.
    model.config = dataclasses.replace(model.config, detection_threshold=min(DETECTION_GRID) / 10,
                                       detector=None if detector is None else {**detector, "curve": None})
    case_ids = training_case_ids(cache_dir, labelled=True)[:max_cases]
    start = time.perf_counter()
    seen, sums, counts = [], np.zeros(CURVE_BINS), np.zeros(CURVE_BINS)
    for number, case_id in enumerate(case_ids, 1):
        case = load_case(cache_dir, case_id)
        result = synthesis_of_case(model, case, device)
        brain, true_map = case["mask"] > 0, true_subtraction(case)
        shown, probability = sitk.GetArrayFromImage(result.subtraction), sitk.GetArrayFromImage(result.probability)
        averaged = brain & (true_map > ENHANCEMENT_THRESHOLD) if curve_kind == "enhancing" else brain
        bins = np.minimum((probability[averaged] * CURVE_BINS).astype(int), CURVE_BINS - 1)
        sums += np.bincount(bins, weights=true_map[averaged], minlength=CURVE_BINS)
        counts += np.bincount(bins, minlength=CURVE_BINS)
        seen.append((shown.astype(np.float16), probability.astype(np.float16), true_map.astype(np.float16), case["labels"], brain,
                     array_spacing(case)))
        if progress:
            progress(f"detection case {number}/{len(case_ids)}: {case_id}")
    curve = None
    if detector is not None:
        from sklearn.isotonic import IsotonicRegression

        filled = counts > 0
        centres = (np.arange(CURVE_BINS) + 0.5) / CURVE_BINS
        means = IsotonicRegression().fit(centres[filled], sums[filled] / counts[filled], sample_weight=counts[filled])
        curve = {"probability": [float(x) for x in centres[filled]],
                 "enhancement": [float(max(y, 0.0)) for y in means.predict(centres[filled])]}
    f1 = {t: [] for t in DETECTION_GRID}
    for shown, probability, true_map, labels, brain, spacing in seen:
        shown, probability, true_map = shown.astype(np.float32), probability.astype(np.float32), true_map.astype(np.float32)
        raised = shown if curve is None else np.maximum(shown, expected_enhancement(probability, curve))
        near = near_tumour(labels > 0, spacing)  # once per case, not per threshold
        for threshold in DETECTION_GRID:
            detected = probability >= threshold
            gated = np.where(detected, raised, shown)
            gated = np.where(undetected_blobs(gated, brain, detected), np.minimum(gated, GATE_CAP), gated)
            counted = lesion_counts(gated, true_map, labels, brain, spacing, near=near)
            if counted["lesions"]:
                f1[threshold].append(counted["lesion_f1"])
    scores = {t: float(np.mean(v)) for t, v in f1.items() if v}
    if not scores:
        raise InputError(f"{cache_dir}: none of its training cases has an enhancing lesion to fit the threshold on")
    best = max(scores, key=lambda t: (scores[t], t))
    record = {"threshold": best, "mean_lesion_f1": scores, "curve": curve, "curve_kind": curve_kind, "cases": case_ids,
              "cache": str(cache_dir), "checkpoint_sha256": model.sha256, "seconds": round(time.perf_counter() - start, 1)}
    with atomic_write(run_dir / THRESHOLD_NAME, ".json") as tmp:
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


def _run_record(run_dir: str | Path, name: str, best_sha256: str, command: str) -> dict[str, Any] | None:
    """The JSON record ``name`` in ``run_dir`` (None if absent); refuse one fitted on other weights than ``best.pt``."""
    path = Path(run_dir) / name
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("checkpoint_sha256") != best_sha256:
        raise InputError(f"{path} was fitted on other weights than {BEST_NAME} (training went on since): run '{command}' again")
    return record


def load_run_threshold(run_dir: str | Path, best_sha256: str) -> tuple[float, dict[str, list[float]] | None] | None:
    """The detection threshold and enhancement curve recorded in ``run_dir`` (None if none); refuse them fitted on other weights."""
    record = _run_record(run_dir, THRESHOLD_NAME, best_sha256, "fit-detection")
    return None if record is None else (float(record["threshold"]), record.get("curve"))


def load_run_map(run_dir: str | Path, best_sha256: str) -> dict[str, Any] | None:
    """The output map recorded in ``run_dir`` (None if it has none); refuse one fitted on other weights."""
    return _run_record(run_dir, MAP_NAME, best_sha256, "calibrate")
