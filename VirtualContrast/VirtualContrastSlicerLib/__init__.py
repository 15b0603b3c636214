"""Slicer-side helpers of the VirtualContrast module: MRML nodes <-> SimpleITK images, output nodes,
the background synthesis process and the orchestration used by ``VirtualContrastLogic``.

This package imports ``slicer`` for MRML only (never ``qt`` or ``ctk``), so it runs with the
``slicer-core`` wheel outside the Slicer application; method names follow Slicer's camelCase
convention because they sit next to MRML calls.
"""
