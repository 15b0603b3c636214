"""Physics phantom: MNI-template brains with tumours and gadolinium, imaged by MR signal equations.

``generate_case(seed, spacing)`` returns T1, T2, FLAIR, ADC and the exactly known contrast-enhanced T1
with BraTS labels, brain mask and the [Gd] map; ``write_case`` stores it BraTS-style. All images are
synthetic. No torch here.
"""

from .generate import ADC_UNIT, FILE_SUFFIXES, PhantomCase, generate_case, write_case

__all__ = ["ADC_UNIT", "FILE_SUFFIXES", "PhantomCase", "generate_case", "write_case"]
