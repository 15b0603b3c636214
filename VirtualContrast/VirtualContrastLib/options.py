"""The engine's run options, each list defined once: precisions, devices, missing-input policies, blending.

Every front end takes its choices from here: the command line, Slicer, ``bench`` and training.
:class:`SynthesisOptions` also turns itself into command-line arguments and back, so a front end
that runs the engine in another process (Slicer) passes exactly the options it would pass in
process. No torch at import time: the command line's ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    import torch

#: Arithmetic precision of inference (and training): "auto" is resolved per device at run time.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Name of the torch autocast dtype of each explicit precision; None runs without autocast.
AUTOCAST_DTYPES: dict[str, str | None] = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
#: Devices a user picks from (the engine also takes "cuda:N").
DEVICES = ("auto", "cpu", "cuda")
DEVICE_HELP = f"{' | '.join(DEVICES)}[:N] (default auto: a CUDA GPU when there is one, else the CPU)"
#: What to do when the model needs an input that was not given.
MISSING_POLICIES = ("error", "auxiliary", "zeros")
#: How overlapping slab predictions are blended.
BLEND_MODES = ("gaussian", "constant")

#: Default fraction of a slab shared with its neighbour (1/3 of 3 slices: stride 2).
DEFAULT_OVERLAP = 1.0 / 3.0
#: Default minimum fraction of the T1 brain mask that every other input must cover.
MIN_OVERLAP = 0.5


def autocast_dtype(precision: str) -> "torch.dtype | None":
    """The torch autocast dtype of an explicit precision ("fp32" -> None: no autocast)."""
    import torch

    if precision not in AUTOCAST_DTYPES:
        raise InputError(f"precision {precision!r} has no autocast dtype; use one of {', '.join(AUTOCAST_DTYPES)}")
    name = AUTOCAST_DTYPES[precision]
    return None if name is None else getattr(torch, name)


def _choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise InputError(f"unknown {what} {value!r}; use one of {', '.join(choices)}")


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
        _choice(self.precision, PRECISIONS, "precision")
        _choice(self.missing_policy, MISSING_POLICIES, "missing-input policy")
        _choice(self.blend, BLEND_MODES, "blending")
        if not 0.0 < self.min_overlap <= 1.0:
            raise InputError(f"minimum overlap must be in (0, 1], got {self.min_overlap}")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add one command-line option per field (defaults: this class's)."""
        for spec in fields(SynthesisOptions):
            flag, kwargs = _FLAGS[spec.name]
            parser.add_argument(flag, dest=spec.name, default=spec.default, **kwargs)

    def to_args(self) -> list[str]:
        """The command-line arguments that :meth:`from_args` turns back into these options."""
        args: list[str] = []
        for spec in fields(self):
            value, flag = getattr(self, spec.name), _FLAGS[spec.name][0]
            if isinstance(value, bool):
                args += [flag] if value else []
            elif value is not None:
                # repr keeps every bit of a float (1/3 comes back as exactly 1/3).
                args += [flag, repr(value) if isinstance(value, float) else str(value)]
        return args

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SynthesisOptions":
        """Options from arguments parsed by a parser set up with :meth:`add_arguments` (validated)."""
        options = cls(**{spec.name: getattr(args, spec.name) for spec in fields(cls)})
        options.validate()
        return options


#: Field -> (flag, argparse keywords). Choices come from the lists above; values are checked by validate().
_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "device": ("--device", {"help": DEVICE_HELP}),
    "overlap": ("--overlap", {"type": float, "help": "slab overlap fraction in [0, 1) (default 1/3)"}),
    "batch_size": ("--batch-size", {"type": int, "help": "slabs per forward pass (default 2 on CPU, 4 on GPU)"}),
    "precision": ("--precision", {"choices": PRECISIONS,
                                  "help": "auto: bf16 on CPUs/GPUs that support it, else fp32 (CPU) / fp16 (GPU)"}),
    "tta": ("--tta", {"action": "store_true", "help": "test-time augmentation with flips (4x slower; gives an uncertainty map)"}),
    "missing_policy": ("--missing", {"choices": MISSING_POLICIES,
                                     "help": "when a model input is not given: stop (default), predict it from T1 with an "
                                             "auxiliary model, or zero-fill"}),
    "blend": ("--blend", {"choices": BLEND_MODES, "help": "blending of overlapping slabs (default gaussian)"}),
    "min_overlap": ("--min-overlap", {"type": float,
                                      "help": "minimum fraction of the T1 brain every other input must cover (default 0.5)"}),
}
