"""VirtualContrast engine: synthetic contrast-enhanced T1 brain MRI from pre-contrast scans.

Research use only. A synthetic image is not a diagnostic image.

This package imports no ``slicer``, ``qt``, ``ctk`` or ``vtk``; heavy dependencies
(torch, MONAI) are imported by the submodules that need them, not here.
"""

__version__ = "0.1.0"

INTENDED_USE = (
    "Research and demonstration only. VirtualContrast images are SYNTHETIC: they are predicted "
    "from pre-contrast scans by a neural network, may miss or invent enhancement, and must not "
    "be used for diagnosis or treatment decisions."
)

#: Modalities the engine knows, in the canonical channel order used by every model.
MODALITIES = ("t1", "t2", "adc", "flair")

#: The phantom seed of the demo and of Slicer's sample data: outside every training, validation and
#: test seed range (model_training/reproduce_bundled.sh) and, unlike many seeds, with an enhancing tumour.
DEMO_SEED = 5
