"""``virtual-contrast model-info``: parameters and forward FLOPs of a network variant.

The network is built on the meta device, so even the paper's width costs no memory and no time.
"""

from __future__ import annotations

import argparse
import json

from . import MODALITIES
from .errors import VirtualContrastError

#: The slab the paper trains and predicts on: 3 slices of 256 x 192.
SLAB_SHAPE = (3, 256, 192)
_PAPER_VARIANT = "hrfcn"
_PAPER_WIDTH = 64


def describe(variant: str, width: int, inputs: list[str]) -> dict:
    """Parameters and forward FLOPs per slab of ``variant`` at ``width`` for ``inputs``."""
    import torch

    from .config import ModelConfig
    from .networks import ARCHITECTURES, build_network, count_flops, count_parameters

    if variant not in ARCHITECTURES:
        raise VirtualContrastError(f"unknown variant {variant!r}; known: {', '.join(ARCHITECTURES)}")
    try:
        config = ModelConfig(architecture=variant, arch_kwargs={"width": width}, inputs=list(inputs))
    except ValueError as error:
        raise VirtualContrastError(str(error)) from error
    with torch.device("meta"):
        model = build_network(config)
    return {
        "variant": variant,
        "description": ARCHITECTURES[variant],
        "width": width,
        "inputs": list(inputs),
        "slab_shape": list(SLAB_SHAPE),
        "parameters": count_parameters(model),
        "flops_per_slab": count_flops(model, (1, len(inputs), *SLAB_SHAPE)),
    }


def parse_modalities(text: str) -> list[str]:
    """argparse type for a comma-separated modality list such as ``t1,t2,adc``."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODALITIES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown modalities {unknown}; known: {', '.join(MODALITIES)}")
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``model-info`` sub-command."""
    parser = subparsers.add_parser(
        "model-info",
        help="parameters and FLOPs per 3x256x192 slab of a network",
        description="Print the trainable parameters and forward FLOPs (torch.utils.flop_counter) of a network "
        "per 3x256x192 slab. Without --variant: the paper's final HR-FCN at width 64.",
    )
    parser.add_argument("--variant", default=None, help="architecture name (default: hrfcn, the paper's model)")
    parser.add_argument("--width", type=int, default=None, help=f"base width (default: {_PAPER_WIDTH}, the paper's)")
    parser.add_argument("--inputs", type=parse_modalities, default=["t1", "t2", "adc"], help="input modalities, e.g. t1,t2,adc")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the description of the requested network."""
    width = _PAPER_WIDTH if args.width is None else args.width
    if width < 1:
        raise VirtualContrastError(f"--width must be a positive integer, got {width}")
    info = describe(args.variant or _PAPER_VARIANT, width, args.inputs)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{info['variant']}: {info['description']}")
    print(f"  width {info['width']}, inputs {','.join(info['inputs'])}")
    print(f"  parameters       {info['parameters']:,} ({info['parameters'] / 1e6:.2f} M)")
    print(
        f"  FLOPs per slab   {info['flops_per_slab']:,} ({info['flops_per_slab'] / 1e12:.3f} TFLOP, "
        f"forward, slab {'x'.join(map(str, SLAB_SHAPE))})"
    )
    return 0
