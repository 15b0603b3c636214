"""Synthesis: pre-contrast images + a loaded model -> synthetic CE-T1 on the T1 grid.

Inference runs slab by slab along the S–I axis with MONAI's ``sliding_window_inference``
(window = one slab x the whole padded slice, overlap only along the slab axis, Gaussian or
constant blending). Progress is reported per slab and ``cancel()`` is checked before each batch;
results exist only when everything has run, so a cancelled run leaves nothing half-done.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import SimpleITK as sitk

from . import MODALITIES
from .enhancement import subtraction_map
from .errors import CancelledError, InputError, MissingModalityError
from .normalization import denormalize
from .preprocessing import MIN_OVERLAP, PreparedInputs, prepare_inputs
from .registry import LoadedModel, auxiliary_model_for, load_model, resolve_device

if TYPE_CHECKING:
    import torch

#: Default fraction of a slab shared with its neighbour (1/3 of 3 slices: stride 2).
DEFAULT_OVERLAP = 1.0 / 3.0

#: Default slabs per forward pass. On CPU at least 2: with batch 1 PyTorch runs small fp32 3D
#: convolutions on its slow native kernel instead of oneDNN (measured ~5x slower here).
DEFAULT_BATCH = {"cpu": 2, "cuda": 4}

#: Gaussian blending: narrow along the slab (favour each slab's centre), ~flat in-plane, where
#: there is a single window and the weights cancel out.
SIGMA_SCALE = (0.125, 1.0, 1.0)

#: Test-time augmentation: in-plane flips (axes of the (B, C, D, H, W) tensor), identity first.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (4,), (3,), (3, 4))

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MISSING_POLICIES = ("error", "auxiliary", "zeros")
BLEND_MODES = ("gaussian", "constant")


@dataclass
class SynthesisOptions:
    """How to run synthesis: device, slab overlap, batch, precision, TTA and missing inputs."""

    device: str = "auto"
    overlap: float = DEFAULT_OVERLAP
    batch_size: int | None = None
    precision: str = "auto"
    tta: bool = False
    missing_policy: str = "error"
    blend: str = "gaussian"
    min_overlap: float = MIN_OVERLAP

    def validate(self) -> None:
        """Raise :class:`InputError` for values no run could use."""
        if not 0.0 <= self.overlap < 1.0:
            raise InputError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if self.missing_policy not in MISSING_POLICIES:
            raise InputError(f"unknown missing-input policy {self.missing_policy!r}; use one of {', '.join(MISSING_POLICIES)}")
        if self.blend not in BLEND_MODES:
            raise InputError(f"unknown blending {self.blend!r}; use one of {', '.join(BLEND_MODES)}")
        if not 0.0 < self.min_overlap <= 1.0:
            raise InputError(f"minimum overlap must be in (0, 1], got {self.min_overlap}")


@dataclass
class SynthesisResult:
    """Outputs on the T1 grid: synthetic CE-T1 (T1 intensity window), enhancement (subtraction) map, uncertainty."""

    synthetic: sitk.Image
    subtraction: sitk.Image
    uncertainty: sitk.Image | None
    brain_mask: sitk.Image
    notes: list[str] = field(default_factory=list)
    model_name: str = ""
    device: str = "cpu"
    precision: str = "fp32"
    seconds: float = 0.0


def count_slabs(depth: int, slab_depth: int, overlap: float) -> int:
    """Number of slabs ``sliding_window_inference`` runs along a depth (same rule as MONAI)."""
    if depth <= slab_depth:
        return 1
    interval = max(int(slab_depth * (1 - overlap)), 1)
    return next(d for d in range(depth) if d * interval + slab_depth >= depth) + 1


def cpu_supports_bf16() -> bool:
    """True when this CPU runs bf16 natively (AVX-512 BF16 or AMX), so bf16 autocast pays off."""
    import torch

    cpu = torch.cpu
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return torch.backends.mkldnn.is_available() and any(check() for check in checks if check is not None)


def resolve_precision(precision: str, device: "torch.device") -> str:
    """Turn "auto" into fp32/bf16/fp16 for ``device``: bf16 on capable CPUs and GPUs, fp16 on older GPUs."""
    import torch

    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


class _Progress:
    """Monotonic progress over a known number of slab passes, forwarded to the user's callback."""

    def __init__(self, callback: Callable[[float, str], None] | None, total: int) -> None:
        self.callback, self.total, self.done, self.reported = callback, max(total, 1), 0, 0.0

    def advance(self, slabs: int) -> None:
        self.done += slabs
        fraction = min(self.done / self.total, 1.0)
        if self.callback is not None and fraction >= self.reported:
            self.reported = fraction
            self.callback(fraction, f"{min(self.done, self.total)}/{self.total} slabs")

    def finish(self, message: str) -> None:
        self.reported = 1.0
        if self.callback is not None:
            self.callback(1.0, message)


def place_network(network: "torch.nn.Module", device: "torch.device") -> bool:
    """Move to ``device``; on CPU try channels_last_3d. Returns whether that layout is in use."""
    import torch

    network.to(device)
    if device.type != "cpu":
        return False
    try:
        network.to(memory_format=torch.channels_last_3d)
    except RuntimeError:  # networks with 4D (2D-conv) weights cannot take the 5D layout
        return False
    return True


def predict_volume(
    model: LoadedModel,
    volume: np.ndarray,
    options: SynthesisOptions,
    device: "torch.device",
    precision: str,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean (and TTA std) prediction (D, H, W) of ``model`` on a normalized (C, D, H, W) working volume.

    ``on_batch(n)`` is called after each forward pass of ``n`` slabs; ``cancel()`` before each.
    """
    import torch
    from monai.inferers import sliding_window_inference

    channels_last = place_network(model.network, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    slab = model.config.slab_depth
    _, _, height, width = volume.shape

    def predictor(batch: "torch.Tensor") -> "torch.Tensor":
        if cancel is not None and cancel():
            raise CancelledError("synthesis cancelled; nothing was written")
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model.network(batch)
        if on_batch is not None:
            on_batch(batch.shape[0])
        return out.float().contiguous()

    inputs = torch.from_numpy(np.ascontiguousarray(volume))[None]
    predictions = []
    with torch.inference_mode():
        for flip in TTA_FLIPS if options.tta else ((),):
            flipped = torch.flip(inputs, flip) if flip else inputs
            out = sliding_window_inference(
                flipped, (slab, height, width), batch_size, predictor,
                overlap=(options.overlap, 0.0, 0.0), mode=options.blend, sigma_scale=SIGMA_SCALE,
                sw_device=device, device=torch.device("cpu"),
            )
            predictions.append((torch.flip(out, flip) if flip else out)[0, 0].numpy())
    stack = np.stack(predictions)
    return stack.mean(axis=0), (stack.std(axis=0) if options.tta else None)


def _predict(
    model: LoadedModel,
    volume: np.ndarray,
    options: SynthesisOptions,
    device: "torch.device",
    precision: str,
    progress: _Progress,
    cancel: Callable[[], bool] | None,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray | None, "torch.device", str]:
    """Run inference; on CUDA out-of-memory halve the batch, then fall back to CPU (noted)."""
    import torch

    batch = options.batch_size or DEFAULT_BATCH.get(device.type, 1)
    while True:
        mark = progress.done
        try:
            mean, std = predict_volume(model, volume, options, device, precision, batch, progress.advance, cancel)
            return mean, std, device, precision
        except torch.cuda.OutOfMemoryError:
            progress.done = mark
            torch.cuda.empty_cache()
            if batch > 1:
                batch //= 2
                notes.append(f"GPU out of memory: batch reduced to {batch}")
            else:
                device = torch.device("cpu")
                precision = resolve_precision("auto" if options.precision == "auto" else "fp32", device)
                notes.append(f"GPU out of memory even with batch 1: finished on the CPU ({precision})")
                batch = DEFAULT_BATCH["cpu"]


def _resolve_missing(model: LoadedModel, available: set[str], policy: str) -> dict[str, LoadedModel | None]:
    """For each missing model input: an auxiliary model that predicts it, or None for zero-fill."""
    missing = [m for m in model.config.inputs if m not in available]
    if not missing:
        return {}
    names = "+".join(m.upper() for m in missing)
    if policy == "error":
        raise MissingModalityError(
            f"model {model.name} needs {names}, which {'was' if len(missing) == 1 else 'were'} not given; provide it, or choose missing policy "
            "'auxiliary' (predict it from T1 with an auxiliary model) or 'zeros' (zero-fill, degrades the result)"
        )
    if policy == "zeros":
        return {m: None for m in missing}
    plan: dict[str, LoadedModel | None] = {}
    for modality in missing:
        entry = auxiliary_model_for(modality, available)
        if entry is None:
            raise MissingModalityError(
                f"model {model.name} needs {modality.upper()}, and no bundled auxiliary model predicts it from "
                f"{'+'.join(sorted(m.upper() for m in available))}; provide it or choose missing policy 'zeros'"
            )
        plan[modality] = load_model(entry.name, device="cpu")
    return plan


def synthesize(
    images: dict[str, sitk.Image],
    model: LoadedModel,
    brain_mask: sitk.Image | None = None,
    options: SynthesisOptions | None = None,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> SynthesisResult:
    """Synthesize a CE-T1 from ``images`` (keys from ``MODALITIES``; "t1" required) with ``model``."""
    from .networks import in_plane_multiple

    start = time.perf_counter()
    options = options or SynthesisOptions()
    options.validate()
    unknown = sorted(set(images) - set(MODALITIES))
    if unknown:
        raise InputError(f"unknown modalities {unknown}; known: {', '.join(MODALITIES)}")
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)
    given = {name: image for name, image in images.items() if image is not None}
    auxiliaries = _resolve_missing(model, set(given), options.missing_policy)
    needed = set(model.config.inputs) | {m for aux in auxiliaries.values() if aux for m in aux.config.inputs}
    multiple = math.lcm(in_plane_multiple(model.config), *(in_plane_multiple(a.config) for a in auxiliaries.values() if a))
    prepared = prepare_inputs({m: given[m] for m in needed if m in given}, model.config.normalization, brain_mask, multiple, options.min_overlap)
    notes = list(prepared.notes)
    depth = prepared.grid.shape[0]
    passes = len(TTA_FLIPS) if options.tta else 1
    runs = [model] + [a for a in auxiliaries.values() if a]
    total = sum(count_slabs(depth, m.config.slab_depth, options.overlap) for m in runs) * passes
    tracker = _Progress(progress, total)

    channels = dict(prepared.channels)
    for modality, aux in auxiliaries.items():
        if aux is None:
            channels[modality] = np.zeros(prepared.grid.shape, dtype=np.float32)
            notes.append(f"{modality.upper()} was not given and was zero-filled as requested: expect a degraded result")
            continue
        aux_inputs = _auxiliary_input(aux, prepared, given, model.config.normalization, multiple, options.min_overlap)
        predicted, _, device, precision = _predict(aux, aux_inputs, options, device, precision, tracker, cancel, notes)
        predicted = np.clip(predicted, 0.0, 1.0)
        predicted[~prepared.working_mask] = 0.0
        channels[modality] = predicted.astype(np.float32)
        notes.append(f"{modality.upper()} was not given: predicted from {'+'.join(m.upper() for m in aux.config.inputs)} by auxiliary model {aux.name}")

    volume = np.stack([channels[m] for m in model.config.inputs]).astype(np.float32)
    mean, std, device, precision = _predict(model, volume, options, device, precision, tracker, cancel, notes)
    result = _postprocess(prepared, mean, std)
    tracker.finish("synthesis done")
    return SynthesisResult(
        synthetic=result[0], subtraction=result[1], uncertainty=result[2], brain_mask=prepared.mask,
        notes=notes, model_name=model.name, device=str(device), precision=precision,
        seconds=time.perf_counter() - start,
    )


def _auxiliary_input(
    aux: LoadedModel,
    prepared: PreparedInputs,
    given: dict[str, sitk.Image],
    normalization: dict,
    multiple: int,
    min_overlap: float,
) -> np.ndarray:
    """The (C, D, H, W) input of an auxiliary model, re-prepared only if its normalization differs."""
    source = prepared.channels
    if aux.config.normalization != normalization:
        subset = {m: given[m] for m in aux.config.inputs}
        source = prepare_inputs(subset, aux.config.normalization, prepared.mask, multiple, min_overlap).channels
    return np.stack([source[m] for m in aux.config.inputs]).astype(np.float32)


def _postprocess(prepared: PreparedInputs, mean: np.ndarray, std: np.ndarray | None) -> tuple[sitk.Image, sitk.Image, sitk.Image | None]:
    """Clamp, zero outside the brain, map back onto the T1 grid and into the T1's intensity window."""
    grid, inside = prepared.grid, prepared.working_mask
    predicted = np.clip(mean, 0.0, 1.0).astype(np.float32)
    predicted[~inside] = 0.0
    mask = sitk.GetArrayViewFromImage(prepared.mask) > 0
    low, high = prepared.t1_range

    normalized = sitk.GetArrayFromImage(grid.to_reference(predicted))
    synthetic_array = denormalize(normalized, low, high)
    synthetic_array[~mask] = 0.0
    subtraction_array = subtraction_map(synthetic_array, sitk.GetArrayFromImage(grid.to_reference(prepared.channels["t1"])), mask)

    def on_t1_grid(array: np.ndarray) -> sitk.Image:
        image = sitk.GetImageFromArray(array.astype(np.float32))
        image.CopyInformation(prepared.mask)
        return image

    uncertainty = None
    if std is not None:
        spread = np.where(inside, std, 0.0).astype(np.float32)
        uncertainty = on_t1_grid(sitk.GetArrayFromImage(grid.to_reference(spread)) * np.float32(high - low))
    return on_t1_grid(synthetic_array), on_t1_grid(subtraction_array), uncertainty
