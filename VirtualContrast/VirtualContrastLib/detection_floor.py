"""The detection floor: a voxel classifier on multi-scale intensity features, fitted on training cases.

A model's enhancement map must find enhancing tumour better than a cheap classifier that never saw a
CE-T1 at inference either. The floor is scikit-learn's histogram gradient boosting on, per input, the
normalized intensity smoothed by Gaussians of :data:`SIGMAS_MM` (0 = the voxel itself), fitted on
enhancing-label voxels against the rest of the brain of the training cases (all enhancing voxels up to
:data:`ENHANCING_PER_CASE` and :data:`BRAIN_PER_CASE` random brain voxels per case, each case weighing
the same). Its map is the predicted probability shifted so that p = 0.5 sits at the enhancement threshold
T: the voxel AUCs see the probability itself, and lesion detection and blobs count p > 0.5 as enhancing,
so the floor is scored exactly like a model's map.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from .enhancement import ENHANCEMENT_THRESHOLD
from .errors import InputError
from .metrics import ENHANCING_LABEL
from .normalization import normalize

#: Gaussian scales (mm) of the features, per input.
SIGMAS_MM = (0.0, 2.0, 4.0, 8.0)

#: Training voxels drawn per case: enhancing (all if fewer) and brain.
ENHANCING_PER_CASE = 5000
BRAIN_PER_CASE = 15000

#: Label of the floor's row in evaluation tables.
DETECTION_FLOOR = "detection floor (voxel classifier)"


def floor_case(raw: dict[str, np.ndarray], mask: np.ndarray, spacing: Sequence[float], spec: dict[str, Any],
               labels: np.ndarray | None = None) -> dict[str, Any]:
    """A case as a prepared cache holds it (``norm_<input>``, ``mask``, ``spacing`` as (x, y, z), ``labels``) from raw arrays on one grid."""
    case: dict[str, Any] = {f"norm_{m}": normalize(array, mask, spec).astype(np.float32) for m, array in raw.items()}
    case.update(mask=mask.astype(np.uint8), spacing=np.asarray(spacing, dtype=np.float64))
    if labels is not None:
        case["labels"] = labels
    return case


def voxel_features(case: dict[str, np.ndarray], inputs: Sequence[str], voxels: np.ndarray) -> np.ndarray:
    """Features (N, len(inputs) * len(SIGMAS_MM)) of the voxels where ``voxels`` is true, from the case's normalized inputs."""
    missing = [m for m in inputs if f"norm_{m}" not in case]
    if missing:
        raise InputError(f"case {case.get('case_id', '?')} lacks {', '.join(missing)} for the detection floor")
    spacing = np.asarray(case["spacing"], dtype=np.float64)[::-1]  # the cache stores (x, y, z); arrays are (z, y, x)
    columns = []
    for modality in inputs:
        image = case[f"norm_{modality}"].astype(np.float32)
        for sigma in SIGMAS_MM:
            smoothed = image if sigma == 0 else ndimage.gaussian_filter(image, sigma / spacing)
            columns.append(smoothed[voxels])
    return np.stack(columns, axis=1)


def fit_detection_floor(cases: Iterable[dict[str, np.ndarray]], inputs: Sequence[str], seed: int = 0) -> Any:
    """Fit the floor's classifier on labelled training cases (arrays as a prepared cache holds them: :func:`floor_case`)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(seed)
    features, targets, weights = [], [], []
    for case in cases:
        if "labels" not in case:
            raise InputError(f"training case {case.get('case_id', '?')} has no tumour labels, which the detection floor needs")
        brain = case["mask"] > 0
        enhancing = (case["labels"] == ENHANCING_LABEL) & brain
        chosen = np.zeros(brain.shape, dtype=bool)
        for region, count in ((enhancing, ENHANCING_PER_CASE), (brain & ~enhancing, BRAIN_PER_CASE)):
            flat = np.flatnonzero(region)
            chosen.flat[rng.choice(flat, min(count, flat.size), replace=False)] = True
        features.append(voxel_features(case, inputs, chosen))
        labels = enhancing[chosen]
        targets.append(labels)
        # Each case weighs the same, whatever its number of enhancing voxels.
        weights.append(np.full(labels.size, 1.0 / labels.size))
    classifier = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed)
    classifier.fit(np.concatenate(features), np.concatenate(targets), sample_weight=np.concatenate(weights))
    return classifier


def floor_map(classifier: Any, case: dict[str, np.ndarray], inputs: Sequence[str]) -> np.ndarray:
    """The floor's enhancement map of a case: probability − 0.5 + T inside the brain, 0 outside (module docstring)."""
    brain = case["mask"] > 0
    out = np.zeros(brain.shape, dtype=np.float32)
    if brain.any():
        probability = classifier.predict_proba(voxel_features(case, inputs, brain))[:, 1]
        out[brain] = probability - 0.5 + ENHANCEMENT_THRESHOLD
    return out
