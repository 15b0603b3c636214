"""Reading a prepared cache (written by :mod:`model_training.prepare`): ``index.json`` and one ``<case>.npz`` per case.

No SimpleITK here: training reads caches on machines that have only torch, numpy, scipy and MONAI
(Testing/gpu_check.sh).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.errors import InputError

INDEX_NAME = "index.json"


def load_index(cache_dir: str | Path) -> dict[str, Any]:
    """Read the ``index.json`` of a prepared cache folder."""
    path = Path(cache_dir) / INDEX_NAME
    if not path.is_file():
        raise InputError(f"{cache_dir} is not a prepared dataset (no {INDEX_NAME}); run 'prepare' first")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        cases = [entry["case"] for entry in index["prepared"]]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path} is damaged (not a prepare index: {type(error).__name__}); prepare the data again") from None
    if not all(isinstance(case, str) for case in cases):
        raise InputError(f"{path} is damaged (case ids are not text); prepare the data again")
    return index


def check_normalization(cache_dir: str | Path, index: dict[str, Any], model: ModelConfig) -> None:
    """Refuse a cache whose recorded normalization (its index's options) is not ``model``'s.

    The spec travels prepare -> cache -> checkpoint (as nnU-Net's plans do): the checkpoint declares
    ``model.normalization`` and the engine normalizes with it at inference, so a model trained on data
    normalized otherwise would carry a false spec.
    """
    spec = index.get("options", {}).get("normalization")
    if spec is None:
        raise InputError(f"{cache_dir}: its {INDEX_NAME} does not record the normalization; prepare the data again")
    if spec != model.normalization:
        raise InputError(f"{cache_dir} was prepared with normalization {json.dumps(spec, sort_keys=True)} but the model config "
                         f"says {json.dumps(model.normalization, sort_keys=True)}; set model.normalization to the cache's "
                         "or prepare the data again with --normalization")


def load_case(cache_dir: str | Path, case_id: str, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Load one cached case into memory: all its arrays, or only those of ``keys`` that it holds."""
    path = Path(cache_dir) / f"{case_id}.npz"
    if not path.is_file():
        raise InputError(f"cached case not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            wanted = data.files if keys is None else [key for key in keys if key in data.files]
            return {key: data[key] for key in wanted}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise InputError(f"cached case {case_id} ({path}) is damaged ({type(error).__name__}); prepare it again") from None


def array_spacing(case: dict[str, np.ndarray]) -> tuple[float, ...]:
    """Voxel size in mm along the cached arrays' axes (z, y, x); the cache stores it as SimpleITK's (x, y, z)."""
    return tuple(float(v) for v in case["spacing"][::-1])


def true_subtraction(case: dict[str, np.ndarray]) -> np.ndarray:
    """The subtraction map of a cached case's true CE-T1."""
    from VirtualContrastLib.enhancement import subtraction_map

    return subtraction_map(case["raw_t1c"], case["raw_t1"], case["mask"] > 0)
