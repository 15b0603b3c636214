"""The checkpoint file format: one ``.pt`` of plain containers and tensors.

A checkpoint is a dict ``{"format": FORMAT, "format_version": 1, "config": ModelConfig.to_dict(),
"training": {...summary...}, "state_dict": {...}}``. It is always read with
``torch.load(weights_only=True)`` (no pickled code runs) and, when a digest is known, only after
its SHA-256 matches.

Shipped checkpoints (``export``, ``bundle``) store their floating-point weights as float16, half the
size of float32; every checkpoint is read back as float32. float16 rather than bfloat16: its 10-bit
mantissa rounds 8x finer than bfloat16's 7 bits, and its range (up to 65504) holds these weights (the
largest, a BatchNorm running variance, is about 1200); the bundled models' outputs moved by less than
0.02 dB brain PSNR (README, "Bundled models"). Training states and ``best.pt`` stay float32.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ModelConfig
from .errors import CheckpointError
from .fileutil import atomic_write, write_error_reason

FORMAT = "virtualcontrast-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the config, the weights and the training summary."""

    config: ModelConfig
    state_dict: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def half_weights(state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` with its floating-point tensors in float16; raise :class:`CheckpointError` if one would overflow."""
    import torch

    limit = torch.finfo(torch.float16).max
    for key, value in state_dict.items():
        if value.is_floating_point() and value.abs().max() > limit:
            raise CheckpointError(f"weight {key} reaches {float(value.abs().max()):.3g}, beyond float16's {limit:g}; save it in float32")
    return {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}


def save_checkpoint(path: str | os.PathLike, config: ModelConfig, state_dict: dict[str, Any], training: dict[str, Any] | None = None,
                    half: bool = False) -> str:
    """Write a checkpoint atomically (temp file + rename), with float16 weights if ``half``, and return its SHA-256;
    a failed write is one-line :class:`CheckpointError`."""
    import torch

    path = Path(path)
    weights = {k: v.detach().cpu() for k, v in state_dict.items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "training": dict(training or {}),
        "state_dict": half_weights(weights) if half else weights,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # torch.save into our own handle: a failed write then surfaces as the OSError behind torch's RuntimeError.
        with atomic_write(path, suffix=".tmp") as tmp, open(tmp, "wb") as handle:
            torch.save(payload, handle)
    except (OSError, RuntimeError) as error:
        cause = error if isinstance(error, OSError) else error.__context__
        if not isinstance(cause, OSError):
            raise
        raise CheckpointError(f"cannot write checkpoint {path}: {write_error_reason(cause)}") from None
    return sha256_file(path)


def load_checkpoint(path: str | os.PathLike, expected_sha256: str | None = None) -> Checkpoint:
    """Verify (when ``expected_sha256`` is given) and load a checkpoint with ``weights_only=True``, its weights as float32."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise CheckpointError(
            f"checkpoint {path.name} failed its SHA-256 check (expected {expected_sha256[:12]}…, got {digest[:12]}…): "
            "the file is corrupt or has been modified"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        raise CheckpointError(f"cannot read checkpoint {path.name}: not a valid VirtualContrast checkpoint ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a VirtualContrast checkpoint (missing format tag {FORMAT!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path.name} has checkpoint format version {payload.get('format_version')}; this version reads {FORMAT_VERSION}")
    try:
        config = ModelConfig.from_dict(payload["config"])
        # Half-size files are computed with in float32, as they were trained.
        state_dict = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{path.name} has an invalid model configuration or weights: {error}") from None
    return Checkpoint(config=config, state_dict=state_dict, training=payload.get("training", {}), path=path, sha256=digest)
