"""Run inside Slicer (``Slicer --python-script``): open the module panel, then its self-test; exit 0 on success."""

import traceback

import slicer

try:
    slicer.util.selectModule("VirtualContrast")
    widget = slicer.util.getModuleWidget("VirtualContrast")
    if widget is None or not hasattr(widget, "ui"):
        raise RuntimeError("the VirtualContrast panel was not created")
    slicer.selfTests["VirtualContrast"]()
except Exception:
    traceback.print_exc()
    slicer.util.exit(1)
else:
    slicer.util.exit(0)
