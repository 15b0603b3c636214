"""The module's option lists with the words the panel shows for them, and the choices remembered between scenes.

The values are the engine's (``VirtualContrastLib.options``: ``--device``, ``--missing``); only their labels
and the overlay list are defined here. Device and
overlay choices are remembered in Slicer's settings (QSettings) so that a new scene starts with them.
"""

from __future__ import annotations

from collections.abc import Callable

from VirtualContrastLib.options import DEFAULT_OVERLAP, DEVICES, MISSING_POLICIES

__all__ = ["DEFAULT_OVERLAP", "DEVICES", "LABELS", "MISSING_POLICIES", "OVERLAYS", "REMEMBERED", "labels", "rememberedValues",
           "settingsKey"]

#: Overlay shown over the synthetic CE-T1.
OVERLAYS = ("subtraction", "uncertainty", "none")

#: What the panel shows for each value (combo boxes otherwise show the raw identifiers).
LABELS: dict[str, dict[str, str]] = {
    "device": {
        "auto": "Automatic (GPU if usable, else CPU)",
        "cpu": "CPU",
        "cuda": "NVIDIA GPU (CUDA)",
    },
    "missingPolicy": {
        "error": "Refuse: select every input the model needs",
        "auxiliary": "Predict it from the T1 (auxiliary model)",
        "zeros": "Fill with zeros (degrades the result)",
    },
    "overlay": {
        "subtraction": "Enhancement (subtraction map)",
        "uncertainty": "Uncertainty",
        "none": "None",
    },
}

#: Parameter -> its allowed values, for the parameters remembered between scenes.
REMEMBERED: dict[str, tuple[str, ...]] = {"device": DEVICES, "overlay": OVERLAYS}

SETTINGS_GROUP = "VirtualContrast"


def settingsKey(parameter: str) -> str:
    """The QSettings key under which a remembered parameter is stored."""
    return f"{SETTINGS_GROUP}/{parameter}"


def rememberedValues(read: Callable[[str], object]) -> dict[str, str]:
    """The remembered choices that are still valid, read with ``read(key)`` (e.g. ``qt.QSettings().value``).

    Values another version wrote (a device this one does not offer) are ignored, not passed on.
    """
    values = {}
    for parameter, allowed in REMEMBERED.items():
        value = read(settingsKey(parameter))
        if isinstance(value, str) and value in allowed:
            values[parameter] = value
    return values


def labels(parameter: str, values: tuple[str, ...]) -> list[str]:
    """The panel's words for ``values`` of ``parameter``, in the same order."""
    return [LABELS[parameter][value] for value in values]
