"""Physics phantom: MNI-template brains with tumours and gadolinium, imaged by MR signal equations.

``generate_case(seed, spacing)`` returns T1, T2, FLAIR, ADC and the exactly known contrast-enhanced T1
with BraTS labels, brain mask and the [Gd] map; ``write_case`` stores it BraTS-style. All images are
synthetic. No torch here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ADC_UNIT", "FILE_SUFFIXES", "PhantomCase", "generate_case", "write_case"]


def __getattr__(name: str) -> Any:
    """The generator's names, imported on first use: ``phantom.cli`` (and so ``virtual-contrast --help``, ``bench``)
    must load where SimpleITK, which the generator needs, is not installed."""
    if name in __all__:
        from . import generate

        return getattr(generate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
