"""The ``virtual-contrast`` command line: one sub-command per front-end task.

Every sub-command module exposes ``register(subparsers)``; it must not import torch at module
level so that ``--help`` stays fast. User errors (:class:`VirtualContrastError`) become one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import INTENDED_USE, __version__
from .errors import VirtualContrastError

_COMMAND_MODULES = (
    "VirtualContrastLib.demo",
    "VirtualContrastLib.synthesis_cli",
    "VirtualContrastLib.phantom.cli",
    "VirtualContrastLib.model_info",
    "VirtualContrastLib.bench",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="virtual-contrast",
        description="Synthetic contrast-enhanced T1 brain MRI from pre-contrast T1/T2/ADC/FLAIR. " + INTENDED_USE,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def run_command(args: argparse.Namespace, prog: str) -> int:
    """Run a parsed sub-command: user errors become one stderr line and exit 2, Ctrl-C exit 130."""
    try:
        return int(args.func(args) or 0)
    except VirtualContrastError as error:
        print(f"{prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    return run_command(build_parser().parse_args(argv), "virtual-contrast")


if __name__ == "__main__":
    sys.exit(main())
