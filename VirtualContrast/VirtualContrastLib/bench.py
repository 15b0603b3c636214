"""``virtual-contrast bench``: speed of a network on this machine, against a plain Conv3d.

Follows DESIGN.md "Measuring speed": it times N slabs (3 x 256 x 192) through the engine's own
slab inference path at the default batch and precision, extrapolates to the slabs the engine
runs on a whole 192 x 256 x 192 volume at the default overlap (no brain crop, so an upper
bound), counts the model's FLOPs, and in the same run measures the FLOP/s of one large
``Conv3d`` (64 -> 64, 3x3x3) on the same slab, dtype and layout as a practical ceiling.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

from . import MODALITIES
from .options import DEVICE_HELP, PRECISIONS

#: The reference volume (slices, rows, columns) and the slab in-plane size.
VOLUME_SHAPE = (192, 256, 192)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` sub-command."""
    parser = subparsers.add_parser("bench", help="measure seconds per volume, FLOP/s and peak memory on this machine")
    parser.add_argument("--width", type=int, default=None, help="network width (default: the CPU lite width)")
    parser.add_argument("--variant", default="hrfcn", help="architecture (hrfcn, hrfcn_a..d, hrfcn_2d, unet2d, unet3d)")
    parser.add_argument("--inputs", type=int, default=3, choices=(1, 2, 3, 4), help="number of input modalities (default 3: T1+T2+ADC)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--batch-size", type=int, default=None, help="slabs per forward pass (default: the engine's)")
    parser.add_argument("--slabs", type=int, default=4, help="slabs to time (default 4)")
    parser.add_argument("--detector", action="store_true",
                        help="also time the enhancement detector (default options) over the whole volume, and add it per volume")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.set_defaults(func=run)


#: CPU flags that decide which kernels run: AVX2 (fp32 only), AVX-512, native bf16 (AVX-512 BF16, AMX).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_info() -> tuple[str, list[str]]:
    """The CPU's model name and which of :data:`SPEED_FLAGS` it has (Linux; elsewhere the name only)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return name, [flag for flag in SPEED_FLAGS if flag in flags]


def onednn_isa() -> str:
    """The instruction set oneDNN dispatches to here (after any ``ONEDNN_MAX_CPU_ISA`` cap), from its verbose log."""
    import os
    import subprocess

    # channels_last_3d and a batch of 2, as the engine runs: otherwise PyTorch may take its native kernel, not oneDNN.
    probe = ("import torch; f = torch.channels_last_3d; "
             "torch.nn.Conv3d(2, 2, 3).to(memory_format=f)(torch.rand(2, 2, 3, 8, 8).contiguous(memory_format=f))")
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    try:
        log = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=600).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return next((line.split("isa:", 1)[1].strip() for line in log.splitlines() if "isa:" in line), "unknown")


def _peak_memory_mb(device: Any) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _time_detector(arch: dict[str, Any], n_inputs: int, device: Any, precision: str) -> float:
    """Seconds of the enhancement detector over a whole random reference volume (after one warm-up cube)."""
    import numpy as np

    from .networks.detector import build_detector, detect_volume, patch_size
    from .options import autocast_dtype

    network = build_detector(n_inputs, arch).eval().to(device)
    dtype = autocast_dtype(precision)
    rng = np.random.default_rng(2)
    detect_volume(network, rng.random((n_inputs, *patch_size(arch)), dtype=np.float32), arch, device, dtype)
    volume = rng.random((n_inputs, *VOLUME_SHAPE), dtype=np.float32)
    start = time.perf_counter()
    detect_volume(network, volume, arch, device, dtype)
    return time.perf_counter() - start


def _time_reference_conv(device: Any, precision: str, batch: int, repeats: int = 3) -> tuple[float, int]:
    """Seconds per slab and FLOPs per slab of one 64->64 3x3x3 Conv3d on a 3x256x192 slab."""
    import torch

    from .networks import count_flops
    from .options import autocast_dtype

    conv = torch.nn.Conv3d(64, 64, 3, padding=1).eval().to(device)
    shape = (batch, 64, 3, *VOLUME_SHAPE[1:])
    flops = count_flops(conv, (1, 64, 3, *VOLUME_SHAPE[1:]))
    dtype = autocast_dtype(precision)
    x = torch.rand(shape, device=device)
    if device.type == "cpu":
        conv.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        conv(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            conv(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / (repeats * batch), flops


def benchmark(width: int, variant: str = "hrfcn", n_inputs: int = 3, device: str = "auto", precision: str = "auto",
              batch_size: int | None = None, slabs: int = 4, detector: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the benchmark and return its measurements (see the module docstring); with ``detector`` (its arch options),
    the enhancement detector's seconds over the whole volume are measured and added to ``seconds_per_volume``."""
    import numpy as np
    import torch

    from .config import ModelConfig
    from .errors import InputError
    from .networks import build_network, count_flops, count_parameters, place_network
    from .registry import LoadedModel, resolve_device
    from .options import DEFAULT_OVERLAP, SynthesisOptions
    from .synthesis import DEFAULT_BATCH, count_slabs, cpu_supports_bf16, predict_volume, resolve_precision

    if slabs < 1:
        raise InputError("--slabs must be >= 1")
    cpu_name, cpu_flags = cpu_info()
    target = resolve_device(device)
    precision = resolve_precision(precision, target)
    batch = batch_size or DEFAULT_BATCH.get(target.type, 1)
    config = ModelConfig(architecture=variant, arch_kwargs={"width": width}, inputs=list(MODALITIES[:n_inputs]))
    with torch.device("meta"):
        meta_network = build_network(config)
    slab_shape = (1, n_inputs, config.slab_depth, *VOLUME_SHAPE[1:])
    flops_per_slab = count_flops(meta_network, slab_shape)
    model = LoadedModel(name=f"{variant}-w{width}", config=config, network=build_network(config).eval(), sha256="", path=Path("."))
    channels_last = place_network(model.network, target)
    options = SynthesisOptions(device=str(target), precision=precision)
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)

    # The first pass builds oneDNN/cuDNN kernels; time the engine's path after it.
    warmup = np.random.default_rng(0).random((n_inputs, config.slab_depth * batch, *VOLUME_SHAPE[1:]), dtype=np.float32)
    predict_volume(model, warmup, SynthesisOptions(overlap=0.0, precision=precision), target, precision, batch)
    interval = max(int(config.slab_depth * (1 - DEFAULT_OVERLAP)), 1)
    depth = config.slab_depth + interval * (slabs - 1)
    volume = np.random.default_rng(1).random((n_inputs, depth, *VOLUME_SHAPE[1:]), dtype=np.float32)
    timed = count_slabs(depth, config.slab_depth, DEFAULT_OVERLAP)
    start = time.perf_counter()
    predict_volume(model, volume, options, target, precision, batch)
    seconds_per_slab = (time.perf_counter() - start) / timed

    conv_seconds, conv_flops = _time_reference_conv(target, precision, batch)
    volume_slabs = count_slabs(VOLUME_SHAPE[0], config.slab_depth, DEFAULT_OVERLAP)
    detector_seconds = 0.0 if detector is None else _time_detector(detector, n_inputs, target, precision)
    achieved = flops_per_slab / seconds_per_slab
    conv_rate = conv_flops / conv_seconds
    return {
        "variant": variant, "width": width, "inputs": n_inputs, "parameters": count_parameters(meta_network),
        "device": str(target), "device_name": torch.cuda.get_device_name(target) if target.type == "cuda" else cpu_name,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "precision": precision, "batch_size": batch,
        "layout": "channels_last_3d" if channels_last else "contiguous", "cpu_bf16": cpu_supports_bf16(),
        "cpu_features": cpu_flags, "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_isa": onednn_isa() if target.type == "cpu" else "n/a",
        "slab_shape": list(slab_shape[2:]), "slabs_timed": timed, "seconds_per_slab": seconds_per_slab,
        "volume_shape": list(VOLUME_SHAPE), "overlap": DEFAULT_OVERLAP, "slabs_per_volume": volume_slabs,
        "seconds_per_volume": seconds_per_slab * volume_slabs + detector_seconds,
        "seconds_per_volume_is": f"extrapolated from {timed} timed slabs" + (", plus the detector over the whole volume" if detector is not None else ""),
        "detector_seconds_per_volume": detector_seconds if detector is not None else None,
        "gflops_per_slab": flops_per_slab / 1e9, "gflops_per_volume": flops_per_slab * volume_slabs / 1e9,
        "achieved_gflops_per_s": achieved / 1e9, "conv3d_gflops_per_s": conv_rate / 1e9, "ratio_to_conv3d": achieved / conv_rate,
        "peak_memory_mb": _peak_memory_mb(target), "peak_memory_is": "GPU max allocated" if target.type == "cuda" else "process peak RSS",
    }


def markdown_table(r: dict[str, Any]) -> str:
    """The benchmark result as a Markdown table."""
    rows = [
        ("model", f"{r['variant']} width {r['width']}, {r['inputs']} inputs, {r['parameters']:,} parameters"),
        ("device", f"{r['device']} ({r['device_name']}), {r['threads']} threads, torch {r['torch']}"),
        ("CPU features / oneDNN ISA / ATen kernels", f"{' '.join(r['cpu_features']) or 'none of ' + ' '.join(SPEED_FLAGS)} / {r['onednn_isa']} / {r['aten_cpu_capability']}"),
        ("precision / layout / batch", f"{r['precision']} / {r['layout']} / {r['batch_size']}"),
        ("seconds per slab (3x256x192)", f"{r['seconds_per_slab']:.3f} ({r['slabs_timed']} slabs timed)"),
        ("seconds per 192x256x192 volume", f"{r['seconds_per_volume']:.1f} ({r['slabs_per_volume']} slabs at overlap {r['overlap']:.2f}; {r['seconds_per_volume_is']}, no brain crop)"),
        *([("enhancement detector seconds per volume", f"{r['detector_seconds_per_volume']:.1f} (included above)")]
          if r.get("detector_seconds_per_volume") is not None else []),
        ("model GFLOP per volume", f"{r['gflops_per_volume']:.0f} ({r['gflops_per_slab']:.1f} per slab)"),
        ("achieved GFLOP/s", f"{r['achieved_gflops_per_s']:.1f}"),
        ("Conv3d 64->64 3x3x3 GFLOP/s (same run)", f"{r['conv3d_gflops_per_s']:.1f}"),
        ("ratio model / Conv3d", f"{r['ratio_to_conv3d']:.2f}"),
        ("peak memory (MB)", f"{r['peak_memory_mb']:.0f} ({r['peak_memory_is']})"),
    ]
    return "\n".join(["| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def run(args: argparse.Namespace) -> int:
    """``virtual-contrast bench``."""
    from .networks import LITE_WIDTH

    width = args.width or LITE_WIDTH
    print(f"timing {args.slabs} slabs of {args.variant} width {width}...", file=sys.stderr)
    result = benchmark(width, args.variant, args.inputs, args.device, args.precision, args.batch_size, args.slabs,
                       {} if args.detector else None)
    print(markdown_table(result))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0
