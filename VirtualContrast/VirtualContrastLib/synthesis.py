"""Synthesis: pre-contrast images + a loaded model -> synthetic CE-T1 on the T1 grid.

Inference runs slab by slab along the S–I axis (overlap only along the slab axis, MONAI's
Gaussian or constant blending weights), each slab cropped in-plane to where its inputs are
non-zero plus a margin. Progress is reported per slab and ``cancel()`` is checked before each batch;
results exist only when everything has run, so a cancelled run leaves nothing half-done.

The array core (:func:`synthesize_array`, :func:`predict_volume`) needs only numpy, torch and MONAI:
SimpleITK is imported by the image-level functions alone, so the core runs where it is not installed
(Testing/gpu_check.sh on a GPU machine that has only torch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import MODALITIES
from .calibration import apply_output_map
from .config import ModelConfig
from .enhancement import gate_enhancement, subtraction_map
from .errors import CancelledError, DeviceError, InputError, MissingModalityError
from .normalization import denormalize
from .options import SynthesisOptions, autocast_dtype
from .registry import LoadedModel, auxiliary_model_for, load_model, resolve_device

if TYPE_CHECKING:
    import SimpleITK as sitk
    import torch

    from .preprocessing import PreparedInputs

#: Default slabs per forward pass. On CPU at least 2: with batch 1 PyTorch runs small fp32 3D
#: convolutions on its slow native kernel instead of oneDNN (measured ~5x slower here).
DEFAULT_BATCH = {"cpu": 2, "cuda": 4}

#: Gaussian blending along the slab, narrow to favour each slab's centre (in-plane there is one
#: window per slab, so no in-plane weights).
SIGMA_SCALE = 0.125

#: In-plane margin (rows, columns) of each slab's window around its inputs' non-zero voxels. 8 rather
#: than the working grid's 16: on the 8 held-out test phantoms brain PSNR moved by +0.16 dB (-0.02 to
#: +0.27) and the network's work fell by about a fifth (README, "Speed on CPUs").
SLAB_MARGIN = (8, 8)

#: Test-time augmentation: in-plane flips (axes of the (B, C, D, H, W) tensor), identity first.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (4,), (3,), (3, 4))


@dataclass
class SynthesisResult:
    """Outputs on the T1 grid: synthetic CE-T1 (T1 intensity window), enhancement (subtraction) map, uncertainty,
    and, for a model with a detection head, the probability that each voxel enhances."""

    synthetic: sitk.Image
    subtraction: sitk.Image
    uncertainty: sitk.Image | None
    brain_mask: sitk.Image
    notes: list[str] = field(default_factory=list)
    model_name: str = ""
    device: str = "cpu"
    precision: str = "fp32"
    seconds: float = 0.0
    probability: sitk.Image | None = None


@dataclass
class ArrayResult:
    """A prediction on a normalized working volume: the calibrated mean (D, H, W) in [0, 1], its TTA spread (before
    calibration), where and how it ran, and the detection head's probability (D, H, W) where the model has one."""

    prediction: np.ndarray
    uncertainty: np.ndarray | None
    notes: list[str]
    device: str
    precision: str
    seconds: float
    probability: np.ndarray | None = None


def count_slabs(depth: int, slab_depth: int, overlap: float) -> int:
    """Number of slabs run along a depth (the rule of MONAI's ``sliding_window_inference``)."""
    if depth <= slab_depth:
        return 1
    interval = max(int(slab_depth * (1 - overlap)), 1)
    return next(d for d in range(depth) if d * interval + slab_depth >= depth) + 1


#: oneDNN instruction-set caps (``ONEDNN_MAX_CPU_ISA``) below native bf16: with one of these set,
#: oneDNN runs bf16 convolutions on slow fallbacks even on a bf16 CPU.
ISA_CAPS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_supports_bf16() -> bool:
    """True when this CPU runs bf16 natively (AVX-512 BF16 or AMX) and oneDNN may use it, so bf16 autocast pays off."""
    import os

    import torch

    if os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper() in ISA_CAPS_WITHOUT_BF16:
        return False
    cpu = torch.cpu
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return torch.backends.mkldnn.is_available() and any(check() for check in checks if check is not None)


def resolve_precision(precision: str, device: "torch.device") -> str:
    """Turn "auto" into fp32/bf16/fp16 for ``device``: bf16 on capable CPUs and GPUs, fp16 on older GPUs."""
    import torch

    if precision == "fp16" and device.type == "cpu":
        # CPUs have no fp16 arithmetic: PyTorch emulates it (issue 16 found it about 40x slower than fp32).
        raise InputError("fp16 on the CPU is emulated and about 40x slower than fp32; use precision fp32, bf16 or auto")
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


@contextmanager
def _eval_mode(network: "torch.nn.Module") -> Iterator[None]:
    """Eval mode inside the block, then back to the mode the network was in."""
    was_training = network.training
    network.eval()
    try:
        yield
    finally:
        network.train(was_training)


def slab_starts(depth: int, slab_depth: int, overlap: float) -> list[int]:
    """First slice of each slab along a depth: stride ``slab_depth * (1 - overlap)``, the last slab flush with the end."""
    if depth <= slab_depth:
        return [0]
    interval = max(int(slab_depth * (1 - overlap)), 1)
    return [min(i * interval, depth - slab_depth) for i in range(count_slabs(depth, slab_depth, overlap))]


def _slab_window(footprint: np.ndarray, margin: tuple[int, int], multiple: int) -> tuple[slice, slice] | None:
    """In-plane window of a slab: its inputs' bounding box + ``margin``, sized to ``multiple``; None when empty."""
    rows, cols = np.any(footprint, axis=(0, 2)), np.any(footprint, axis=(0, 1))
    if not rows.any():
        return None
    window = []
    for present, extra, size in ((rows, margin[0], footprint.shape[1]), (cols, margin[1], footprint.shape[2])):
        first = max(int(np.argmax(present)) - extra, 0)
        last = min(size - int(np.argmax(present[::-1])) + extra, size)
        length = min(-(-(last - first) // multiple) * multiple, size)
        first = min(first, size - length)
        window.append(slice(first, first + length))
    return window[0], window[1]


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
    """Mean (and TTA std) prediction (K, D, H, W) of ``model`` on a normalized (C, D, H, W) working volume.

    K is the network's output channels (:func:`VirtualContrastLib.networks.output_channels`): the CE-T1,
    then the detection logit where the model has one.

    The network must already be on ``device``; it is used as it is (never moved nor re-laid out), in
    eval mode for the call and then put back in the mode it was in (a training network passed for
    validation keeps its BatchNorm statistics). Slabs run along axis 0 and are blended with MONAI's
    importance weights along the slab only. Each batch of slabs sees only the in-plane bounding box
    of its non-zero inputs plus ``SLAB_MARGIN`` (inputs are 0 outside the brain, where the result is
    zeroed anyway): brain slices near the vertex and the skull base are far smaller than the widest.
    H and W must be multiples of the network's in-plane multiple. ``on_batch(n)`` is called after
    each forward pass of ``n`` slabs; ``cancel()`` before each.
    """
    import torch
    from monai.data.utils import compute_importance_map

    from .networks import in_plane_multiple, output_channels, uses_channels_last

    channels_last = uses_channels_last(model.network)
    dtype = autocast_dtype(precision)
    slab = model.config.slab_depth
    multiple = in_plane_multiple(model.config)
    weights = compute_importance_map((slab,), mode=options.blend, sigma_scale=SIGMA_SCALE).numpy()[:, None, None]
    depth = volume.shape[1]
    padded = np.zeros((volume.shape[0], max(depth, slab), *volume.shape[2:]), dtype=np.float32)
    padded[:, :depth] = volume  # a volume thinner than a slab gets zero slices, as in training crops

    def run(inputs: np.ndarray) -> np.ndarray:
        footprint = np.any(inputs != 0, axis=0)
        total = np.zeros((output_channels(model.config), *inputs.shape[1:]), np.float32)
        weight = np.zeros(inputs.shape[1:], np.float32)
        starts = slab_starts(inputs.shape[1], slab, options.overlap)
        for first in range(0, len(starts), batch_size):
            group = starts[first:first + batch_size]
            if cancel is not None and cancel():
                raise CancelledError("synthesis cancelled; nothing was written")
            window = _slab_window(footprint[group[0]:group[-1] + slab], SLAB_MARGIN, multiple)
            if window is not None:
                rows, cols = window
                batch = torch.from_numpy(np.stack([inputs[:, z:z + slab, rows, cols] for z in group])).to(device)
                if channels_last:
                    batch = batch.contiguous(memory_format=torch.channels_last_3d)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    out = model.network(batch)
                out = out.float().cpu().numpy()
                for z, prediction in zip(group, out):
                    total[:, z:z + slab, rows, cols] += prediction * weights
                    weight[z:z + slab, rows, cols] += weights
            if on_batch is not None:
                on_batch(len(group))
        # Voxels no slab window reached lie outside every input's footprint: 0.
        return np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)[:, :depth]

    predictions = []
    with torch.inference_mode(), _eval_mode(model.network):
        for flip in TTA_FLIPS if options.tta else ((),):
            # Flip axes are given for (B, C, D, H, W); the working volume and the output here are (C, D, H, W).
            axes = tuple(a - 1 for a in flip)
            out = run(np.ascontiguousarray(np.flip(padded, axes)) if flip else padded)
            predictions.append(np.flip(out, axes) if flip else out)
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
    """Run inference on ``device``; on CUDA out-of-memory halve the batch, then finish on a CPU copy (noted)."""
    import torch

    batch = options.batch_size or DEFAULT_BATCH.get(device.type, 1)
    while True:
        mark = progress.done
        try:
            mean, std = predict_volume(_with_runtime(_on_device(model, device), precision, notes), volume, options, device, precision,
                                       batch, progress.advance, cancel)
            return mean, std, device, precision
        except torch.cuda.OutOfMemoryError:
            if device.type != "cuda":
                raise
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


def _on_device(model: LoadedModel, device: "torch.device") -> LoadedModel:
    """``model`` when its network is on ``device``, else a copy there: a caller's network is never moved."""
    from .networks import build_network, network_device, place_network

    if network_device(model.network) == device:
        return model
    network = build_network(model.config)
    # load_state_dict copies into the new network's (CPU) tensors: no memory on the device it left.
    network.load_state_dict(model.network.state_dict())
    place_network(network.eval(), device)
    return replace(model, network=network)


def _with_runtime(model: LoadedModel, precision: str, notes: list[str]) -> LoadedModel:
    """``model`` with OpenVINO in place of PyTorch for fp32 on the CPU where OpenVINO is installed (noted), else as it is."""
    from .networks import network_device
    from .runtimes import openvino_network, openvino_usable

    if precision != "fp32" or network_device(model.network).type != "cpu" or not openvino_usable(model):
        return model
    notes.append(f"{model.name}: fp32 on the CPU through OpenVINO (VIRTUALCONTRAST_ENGINE=torch for PyTorch alone)")
    return replace(model, network=openvino_network(model))


def _run_device(model: LoadedModel, auxiliaries: Mapping[str, LoadedModel], requested: str) -> "torch.device":
    """The one device of a run: where the models are. Refuse models on other devices than each other or than asked."""
    from .networks import network_device

    device = network_device(model.network)
    if requested != "auto":
        wanted = resolve_device(requested)
        if wanted.type != device.type or (wanted.index is not None and wanted.index != device.index):
            raise DeviceError(f"model {model.name} is on {device} but device {requested!r} was asked for; load it there")
    for aux in auxiliaries.values():
        if network_device(aux.network) != device:
            raise DeviceError(f"auxiliary model {aux.name} is on {network_device(aux.network)}, model {model.name} on {device}; "
                              "load them on one device")
    return device


def _resolve_missing(model: LoadedModel, available: set[str], policy: str,
                     auxiliaries: Mapping[str, LoadedModel]) -> dict[str, LoadedModel | None]:
    """For each missing model input: the given auxiliary model that predicts it, or None for zero-fill."""
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
        aux = auxiliaries.get(modality)
        if aux is None or aux.config.target != modality or not set(aux.config.inputs) <= available:
            raise MissingModalityError(
                f"model {model.name} needs {modality.upper()}, and no auxiliary model that predicts it from "
                f"{'+'.join(sorted(m.upper() for m in available))} was given (see load_auxiliaries); provide it or choose missing policy 'zeros'"
            )
        plan[modality] = aux
    return plan


def load_auxiliaries(
    model: LoadedModel, available: Iterable[str], policy: str, cache: dict[str, LoadedModel] | None = None,
) -> dict[str, LoadedModel]:
    """The bundled auxiliary models (paper IV-E) that predict ``model``'s inputs missing from ``available``.

    Only under the "auxiliary" policy (otherwise none). They are loaded on ``model``'s device, and
    through ``cache`` (name -> model) a batch loads each of them once.
    """
    from .networks import network_device

    if policy != "auxiliary":
        return {}
    have = set(available)
    cache = {} if cache is None else cache
    loaded: dict[str, LoadedModel] = {}
    for modality in (m for m in model.config.inputs if m not in have):
        entry = auxiliary_model_for(modality, have)
        if entry is None:
            raise MissingModalityError(
                f"model {model.name} needs {modality.upper()}, and no bundled auxiliary model predicts it from "
                f"{'+'.join(sorted(m.upper() for m in have))}; provide it or choose missing policy 'zeros'"
            )
        if entry.name not in cache:
            cache[entry.name] = load_model(entry.name, device=str(network_device(model.network)))
        loaded[modality] = cache[entry.name]
    return loaded


def synthesize_array(
    model: LoadedModel,
    volume: np.ndarray,
    options: SynthesisOptions | None = None,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ArrayResult:
    """Synthesis on arrays, without images or files: ``model``'s calibrated prediction on a normalized volume.

    ``volume`` is (C, D, H, W), channels in ``model.config.inputs`` order, 0 outside the brain, H and W
    multiples of the network's in-plane multiple; it runs where ``model`` is, with the GPU out-of-memory
    back-off of :func:`synthesize`.
    """
    from .networks import in_plane_multiple

    start = time.perf_counter()
    options = options or SynthesisOptions()
    options.validate()
    multiple = in_plane_multiple(model.config)
    if volume.ndim != 4 or volume.shape[0] != len(model.config.inputs) or volume.shape[2] % multiple or volume.shape[3] % multiple:
        raise InputError(f"model {model.name} needs a ({len(model.config.inputs)}, D, H, W) volume with H and W multiples of {multiple}, "
                         f"not {volume.shape}")
    device = _run_device(model, {}, options.device)
    precision = resolve_precision(options.precision, device)
    passes = len(TTA_FLIPS) if options.tta else 1
    volume = np.asarray(volume, np.float32)
    tracker = _Progress(progress, count_slabs(volume.shape[1], model.config.slab_depth, options.overlap) * passes
                        + _detector_windows(model, volume))
    notes: list[str] = []
    mean, std, device, precision = _predict(model, volume, options, device, precision, tracker, cancel, notes)
    probability = _probability(model, mean, volume, device, precision, tracker, cancel)
    tracker.finish("synthesis done")
    prediction = apply_output_map(np.clip(mean[0], 0.0, 1.0), model.config.output_map)
    return ArrayResult(prediction, None if std is None else std[0], notes, str(device), precision, time.perf_counter() - start,
                       probability)


def _detector_windows(model: LoadedModel, volume: np.ndarray) -> int:
    """Cubes the model's detector runs on ``volume`` (0 without a detector), for progress."""
    from .networks.detector import count_windows, footprint_box

    if model.detector is None:
        return 0
    box = footprint_box(np.any(volume != 0, axis=0))
    return 0 if box is None else count_windows([b.stop - b.start for b in box], model.config.detector.get("arch"))


def _probability(model: LoadedModel, mean: np.ndarray, volume: np.ndarray, device: "torch.device", precision: str,
                 progress: _Progress, cancel: Callable[[], bool] | None) -> np.ndarray | None:
    """The probability (D, H, W) that each voxel enhances: from the detector, else the detection channel, else None."""
    from .networks import network_device
    from .networks.detector import build_detector, detect_volume

    if model.detector is not None:
        detector = model.detector
        if network_device(detector) != device:  # a GPU out-of-memory fallback finished on the CPU: a copy, never the caller's
            detector = build_detector(len(model.config.inputs), model.config.detector.get("arch"))
            detector.load_state_dict(model.detector.state_dict())
            detector.eval().to(device)
        return detect_volume(detector, volume, model.config.detector.get("arch"), device, autocast_dtype(precision),
                             lambda: progress.advance(1), cancel)
    if mean.shape[0] > 1:
        return (1.0 / (1.0 + np.exp(-mean[1].astype(np.float64)))).astype(np.float32)
    return None


def synthesize(
    images: dict[str, sitk.Image],
    model: LoadedModel,
    brain_mask: sitk.Image | None = None,
    options: SynthesisOptions | None = None,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    auxiliaries: Mapping[str, LoadedModel] | None = None,
) -> SynthesisResult:
    """Synthesize a CE-T1 from ``images`` (keys from ``MODALITIES``; "t1" required) with ``model``.

    Runs on the device ``model`` is on and loads nothing: under the "auxiliary" missing policy the
    models that predict missing inputs come in ``auxiliaries`` (modality -> model, see
    :func:`load_auxiliaries`). The caller's networks are never moved: a GPU out-of-memory fallback
    finishes on a CPU copy.
    """
    from .imageio import check_image
    from .networks import in_plane_multiple
    from .preprocessing import prepare_inputs

    start = time.perf_counter()
    options = options or SynthesisOptions()
    options.validate()
    unknown = sorted(set(images) - set(MODALITIES))
    if unknown:
        raise InputError(f"unknown modalities {unknown}; known: {', '.join(MODALITIES)}")
    device = _run_device(model, auxiliaries or {}, options.device)
    precision = resolve_precision(options.precision, device)
    given = {name: image for name, image in images.items() if image is not None}
    # The checks read_image does, for images that come without a file (Slicer, training).
    for name, image in given.items():
        check_image(image, name.upper())
    if brain_mask is not None:
        check_image(brain_mask, "the brain mask", mask=True)
    plan = _resolve_missing(model, set(given), options.missing_policy, auxiliaries or {})
    needed = set(model.config.inputs) | {m for aux in plan.values() if aux for m in aux.config.inputs}
    multiple = math.lcm(in_plane_multiple(model.config), *(in_plane_multiple(a.config) for a in plan.values() if a))
    prepared = prepare_inputs({m: given[m] for m in needed if m in given}, model.config.normalization, brain_mask, multiple, options.min_overlap)
    notes = list(prepared.notes)
    depth = prepared.grid.shape[0]
    passes = len(TTA_FLIPS) if options.tta else 1
    runs = [model] + [a for a in plan.values() if a]
    total = sum(count_slabs(depth, m.config.slab_depth, options.overlap) for m in runs) * passes
    tracker = _Progress(progress, total + _detector_windows(model, np.stack(list(prepared.channels.values()))))

    channels = dict(prepared.channels)
    for modality, aux in plan.items():
        if aux is None:
            channels[modality] = np.zeros(prepared.grid.shape, dtype=np.float32)
            notes.append(f"{modality.upper()} was not given and was zero-filled as requested: expect a degraded result")
            continue
        aux_inputs = _auxiliary_input(aux, prepared, given, model.config.normalization, multiple, options.min_overlap)
        predicted, _, device, precision = _predict(aux, aux_inputs, options, device, precision, tracker, cancel, notes)
        predicted = np.clip(predicted[0], 0.0, 1.0)
        predicted[~prepared.working_mask] = 0.0
        channels[modality] = predicted.astype(np.float32)
        notes.append(f"{modality.upper()} was not given: predicted from {'+'.join(m.upper() for m in aux.config.inputs)} by auxiliary model {aux.name}")

    volume = np.stack([channels[m] for m in model.config.inputs]).astype(np.float32)
    mean, std, device, precision = _predict(model, volume, options, device, precision, tracker, cancel, notes)
    result = _postprocess(prepared, mean, std, model.config, _probability(model, mean, volume, device, precision, tracker, cancel))
    tracker.finish("synthesis done")
    return SynthesisResult(
        synthetic=result[0], subtraction=result[1], uncertainty=result[2], brain_mask=prepared.mask,
        notes=notes, model_name=model.name, device=str(device), precision=precision,
        seconds=time.perf_counter() - start, probability=result[3],
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
    from .preprocessing import prepare_inputs

    source = prepared.channels
    if aux.config.normalization != normalization:
        subset = {m: given[m] for m in aux.config.inputs}
        source = prepare_inputs(subset, aux.config.normalization, prepared.mask, multiple, min_overlap).channels
    return np.stack([source[m] for m in aux.config.inputs]).astype(np.float32)


def _postprocess(prepared: PreparedInputs, mean: np.ndarray, std: np.ndarray | None, config: ModelConfig,
                 probability: np.ndarray | None) -> tuple[sitk.Image, sitk.Image, sitk.Image | None, sitk.Image | None]:
    """Clamp, calibrate, zero outside the brain, map back onto the T1 grid and into the T1's intensity window;
    with a detection channel or detector, gate the CE-T1 and its map by its ``probability`` (:func:`gate_enhancement`)."""
    import SimpleITK as sitk

    grid, inside, output_map = prepared.grid, prepared.working_mask, config.output_map
    clipped = np.clip(mean[0], 0.0, 1.0)
    std = None if std is None else std[0]
    predicted = apply_output_map(clipped, output_map)
    predicted[~inside] = 0.0
    mask = sitk.GetArrayViewFromImage(prepared.mask) > 0
    low, high = prepared.t1_range

    normalized = sitk.GetArrayFromImage(grid.to_reference(predicted))
    synthetic_array = denormalize(normalized, low, high)
    synthetic_array[~mask] = 0.0
    t1_array = sitk.GetArrayFromImage(grid.to_reference(prepared.channels["t1"]))
    probability_array = None
    if probability is not None:
        working = np.where(inside, probability, 0.0).astype(np.float32)
        probability_array = sitk.GetArrayFromImage(grid.to_reference(working))
        probability_array[~mask] = 0.0
        curve = None if config.detector is None else config.detector.get("curve")
        synthetic_array, subtraction_array = gate_enhancement(synthetic_array, t1_array, mask, probability_array,
                                                              config.detection_threshold, curve)
    else:
        subtraction_array = subtraction_map(synthetic_array, t1_array, mask)

    def on_t1_grid(array: np.ndarray) -> sitk.Image:
        image = sitk.GetImageFromArray(array.astype(np.float32))
        image.CopyInformation(prepared.mask)
        return image

    probability = None if probability_array is None else on_t1_grid(probability_array)
    uncertainty = None
    if std is not None:
        # The spread goes through the map as well: half the mapped width of mean +- std.
        mapped = (apply_output_map(np.clip(clipped + std, 0.0, 1.0), output_map)
                  - apply_output_map(np.clip(clipped - std, 0.0, 1.0), output_map)) / 2 if output_map else std
        spread = np.where(inside, mapped, 0.0).astype(np.float32)
        uncertainty = on_t1_grid(sitk.GetArrayFromImage(grid.to_reference(spread)) * np.float32(high - low))
    return on_t1_grid(synthetic_array), on_t1_grid(subtraction_array), uncertainty, probability
