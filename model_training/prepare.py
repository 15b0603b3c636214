"""Dataset preparation: register, resample onto the CE-T1 grid, mask, normalize and cache each case.

The grid is the CE-T1 grid reoriented to the engine's working orientation
(:data:`VirtualContrastLib.preprocessing.WORKING_ORIENTATION`), so slabs are axial as at inference.

One ``<case>.npz`` per case under the cache folder holds, on the CE-T1 grid (z, y, x):
``raw_<role>`` float32 (resampled, unnormalized: what the engine receives at inference, used for
validation and evaluation through the engine), ``norm_<role>`` (normalized with
:func:`VirtualContrastLib.normalization.normalize` and the recorded spec, used for training),
``mask`` (uint8 brain mask), ``labels`` (int16 tumour labels, only when given) and the grid
(``spacing``, ``origin``, ``direction``). ``index.json`` lists the prepared cases, the skipped ones
with their reasons, and the options used. Every file is written atomically (a kill or a full disk
leaves the previous file, never a partial one). Preparing into an existing cache merges: cases
prepared again replace their entries, the others are kept; a cache prepared with other options is refused.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import SimpleITK as sitk

from VirtualContrastLib.cases import LABEL_VALUES, TARGET, CaseFiles
from VirtualContrastLib.config import DEFAULT_NORMALIZATION
from VirtualContrastLib.errors import InputError, VirtualContrastError
from VirtualContrastLib.fileutil import write_csv, write_error_reason, write_file
from VirtualContrastLib.normalization import normalize
from VirtualContrastLib.parallel import ordered_map

# The cache readers live in cache.py, free of SimpleITK; imported here for this module's callers as well.
from .cache import INDEX_NAME, check_normalization, load_case, load_index  # noqa: F401

@dataclass
class PrepareOptions:
    """How :func:`prepare_case` treats every case."""

    modalities: tuple[str, ...] = ("t1", "t2", "adc", "flair")
    register: bool = True
    normalization: dict[str, Any] | None = None
    dtype: str = "float16"
    registration_seed: int = 0


def register_rigid(fixed: sitk.Image, moving: sitk.Image, seed: int = 0) -> sitk.Transform:
    """Rigid (Euler 3D) registration of ``moving`` onto ``fixed`` with Mattes mutual information.

    Returns the transform mapping fixed-space points to moving-space points (ITK convention).
    """
    fixed_f = sitk.Cast(fixed, sitk.sitkFloat32)
    moving_f = sitk.Cast(moving, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(fixed_f, moving_f, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.25, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=200, relaxationFactor=0.5)
    method.SetOptimizerScalesFromPhysicalShift()
    # Coarse-to-fine only as far as the volume allows: small (coarse) volumes cannot be shrunk 4x.
    levels = [4, 2, 1] if min(fixed.GetSize()) >= 96 else [2, 1]
    method.SetShrinkFactorsPerLevel(levels)
    method.SetSmoothingSigmasPerLevel([float(level // 2) for level in levels])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed_f, moving_f)


def move_geometry(image: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """Return ``image`` with its header moved by the inverse of a rigid ``transform`` (no resampling).

    The registration transform maps fixed points to moving points; placing the moving image at
    ``T⁻¹`` puts it onto the fixed image in physical space, so the one interpolation left is the
    engine's resampling onto the reference grid.
    """
    inverse = transform.GetInverse()
    origin = np.array(image.GetOrigin())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    new_origin = np.array(inverse.TransformPoint(tuple(origin)))
    columns = [np.array(inverse.TransformPoint(tuple(origin + direction[:, i]))) - new_origin for i in range(3)]
    moved = sitk.Image(image)
    moved.SetOrigin(tuple(new_origin))
    moved.SetDirection(tuple(np.stack(columns, axis=1).ravel()))
    return moved


def _grid(image: sitk.Image) -> dict[str, np.ndarray]:
    return {
        "spacing": np.array(image.GetSpacing(), dtype=np.float64),
        "origin": np.array(image.GetOrigin(), dtype=np.float64),
        "direction": np.array(image.GetDirection(), dtype=np.float64),
    }


def image_from_array(array: np.ndarray, grid: dict[str, np.ndarray]) -> sitk.Image:
    """A SimpleITK image of ``array`` (z, y, x) on a cached grid."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(tuple(float(v) for v in grid["spacing"]))
    image.SetOrigin(tuple(float(v) for v in grid["origin"]))
    image.SetDirection(tuple(float(v) for v in grid["direction"]))
    return image


def prepare_case(case: CaseFiles, options: PrepareOptions) -> dict[str, np.ndarray]:
    """Register, resample, mask and normalize one case; returns the arrays to cache."""
    from VirtualContrastLib import imageio, preprocessing

    case.require(["t1", TARGET])
    spec = options.normalization or DEFAULT_NORMALIZATION
    # Cache on the CE-T1 grid reoriented like the engine's working grid, so training slabs are
    # axial exactly as at inference (array axis 0 = inferior -> superior).
    reference = sitk.DICOMOrient(imageio.read_image(case.images[TARGET]), preprocessing.WORKING_ORIENTATION)
    arrays: dict[str, np.ndarray] = {}
    images: dict[str, sitk.Image] = {TARGET: sitk.Cast(reference, sitk.sitkFloat32)}
    for role in options.modalities:
        if role not in case.images:
            continue
        moving = imageio.read_image(case.images[role])
        if options.register:
            moving = move_geometry(moving, register_rigid(reference, moving, seed=options.registration_seed))
        images[role] = preprocessing.resample_to_reference(moving, reference, sitk.sitkLinear)
    if case.mask is not None:
        mask_image = preprocessing.resample_to_reference(imageio.read_image(case.mask, mask=True), reference, sitk.sitkNearestNeighbor)
    else:
        mask_image = preprocessing.default_brain_mask(images["t1"])
    mask = sitk.GetArrayFromImage(mask_image) > 0
    if not mask.any():
        raise InputError(f"case {case.case_id}: the brain mask is empty")
    for role, image in images.items():
        raw = sitk.GetArrayFromImage(image).astype(np.float32)
        arrays[f"raw_{role}"] = raw
        arrays[f"norm_{role}"] = normalize(raw, mask, spec).astype(options.dtype)
    arrays["mask"] = mask.astype(np.uint8)
    if case.labels is not None:
        labels = preprocessing.resample_to_reference(sitk.Cast(sitk.ReadImage(str(case.labels)), sitk.sitkInt16), reference, sitk.sitkNearestNeighbor)
        label_array = sitk.GetArrayFromImage(labels).astype(np.int16)
        _check_label_values(case, label_array)
        arrays["labels"] = label_array.copy()
        for source, destination in case.label_map.items():
            arrays["labels"][label_array == source] = destination
    arrays.update(_grid(reference))
    arrays["spec"] = np.array(json.dumps(spec, sort_keys=True))
    arrays["case_id"] = np.array(case.case_id)
    return arrays


def _check_label_values(case: CaseFiles, labels: np.ndarray) -> None:
    """Refuse tumour labels outside the layout's values: the case would have no enhancing tumour to learn from."""
    # A layout's map rewrites its own values into the prepared ones (BraTS 2018-2021: 4 -> 3, and 3 is not theirs).
    accepted = (LABEL_VALUES - set(case.label_map.values())) | set(case.label_map)
    found = sorted(int(v) for v in np.unique(labels))
    unknown = [v for v in found if v not in accepted]
    if unknown:
        raise InputError(f"case {case.case_id}: label map {Path(case.labels).name} has values {unknown} outside its layout's "
                         f"labels {sorted(accepted)} (values found: {found})")


def _prepare_and_write(case: CaseFiles, options: PrepareOptions, out_dir: Path) -> dict[str, Any]:
    """Prepare one case into ``out_dir``: its index entry, or ``{"case", "reason"}`` when it is skipped."""
    start = time.perf_counter()
    try:
        arrays = prepare_case(case, options)
    except (VirtualContrastError, RuntimeError, OSError, ValueError) as error:
        # RuntimeError: SimpleITK reports unreadable files and failed registrations this way.
        return {"case": case.case_id, "reason": str(error).splitlines()[0]}
    # A write that fails stops the whole run (a full disk fails every later case too), not just this case.
    write_file(out_dir / f"{case.case_id}.npz", lambda tmp: np.savez_compressed(tmp, **arrays))
    roles = sorted(k[len("raw_"):] for k in arrays if k.startswith("raw_"))
    return {"case": case.case_id, "file": f"{case.case_id}.npz", "modalities": roles,
            "labels": "labels" in arrays, "shape": list(arrays["mask"].shape),
            "seconds": round(time.perf_counter() - start, 2), **case.info}


def prepare_dataset(cases: list[CaseFiles], out_dir: str | Path, options: PrepareOptions,
                    progress: Callable[[str], None] | None = None, workers: int = 1) -> dict[str, Any]:
    """Prepare every case into ``out_dir`` (``workers`` processes); a case that fails is skipped and reported, not fatal.

    An existing cache in ``out_dir`` is merged into (see the module notes); the returned index lists under
    ``kept`` the cases kept from it (not stored in ``index.json``).
    """
    out_dir = Path(out_dir)
    recorded = {"modalities": list(options.modalities), "register": options.register,
                "normalization": options.normalization or DEFAULT_NORMALIZATION, "dtype": options.dtype}
    earlier = _earlier_index(out_dir, recorded)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the cache folder {out_dir}: {write_error_reason(error)}") from None
    results: list[dict[str, Any]] = []
    for result in ordered_map(partial(_prepare_and_write, options=options, out_dir=out_dir), cases, workers):
        results.append(result)
        if progress:
            progress(result["case"])
    done = {r["case"] for r in results}
    kept = [e for e in (earlier or {}).get("prepared", []) if e["case"] not in done]
    prepared = kept + [r for r in results if "reason" not in r]
    skipped = [e for e in (earlier or {}).get("skipped", []) if e["case"] not in done] + [r for r in results if "reason" in r]
    index = {"prepared": prepared, "skipped": skipped, "options": recorded}
    write_file(out_dir / INDEX_NAME, lambda tmp: tmp.write_text(json.dumps(index, indent=2), encoding="utf-8"))
    try:
        write_csv(out_dir / "skipped.csv", skipped, fields=("case", "reason"))
    except OSError as error:
        raise InputError(f"cannot write {out_dir / 'skipped.csv'}: {write_error_reason(error)}") from None
    return {**index, "kept": [e["case"] for e in kept]}


def _earlier_index(out_dir: Path, options: dict[str, Any]) -> dict[str, Any] | None:
    """The index of an earlier prepare into ``out_dir`` (None if there is none); refused if made with other options."""
    if not (out_dir / INDEX_NAME).is_file():
        return None
    earlier = load_index(out_dir)
    if earlier.get("options") != options:
        raise InputError(f"{out_dir} already holds a cache prepared with other options ({json.dumps(earlier.get('options'), sort_keys=True)}); "
                         "one cache has one set of options: prepare into another --out folder")
    return earlier
