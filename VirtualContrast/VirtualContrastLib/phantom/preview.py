"""A PNG montage of a phantom case: every contrast, the CE-T1 - T1 subtraction and the labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..montage import Panel, grey_window, write_montage
from .generate import PhantomCase

_PANELS = (("t1", "T1 (MPRAGE)"), ("t2", "T2"), ("flair", "FLAIR"), ("adc", "ADC"), ("t1c", "CE-T1 (truth)"))


def _on_t1_grid(image: sitk.Image, t1: sitk.Image) -> np.ndarray:
    """Thick-slice inputs live on their own grids: bring them onto the T1 grid in physical space."""
    return sitk.GetArrayFromImage(sitk.Resample(image, t1, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))


def write_preview(case: PhantomCase, path: str | os.PathLike, title: str = "") -> Path:
    """Write an axial and a coronal montage through the largest tumour (or the brain centre) to ``path``."""
    t1 = case.images["t1"]
    arrays = {k: _on_t1_grid(case.images[k], t1) for k, _ in _PANELS}
    mask = sitk.GetArrayFromImage(case.brain_mask) > 0
    labels = sitk.GetArrayFromImage(case.seg)
    tumour = labels > 0
    # The slice holding most tumour, else the brain's centre of mass.
    z, y = ((int(np.argmax(tumour.sum(axis=(1, 2)))), int(np.argmax(tumour.sum(axis=(0, 2))))) if tumour.any()
            else tuple(int(c) for c in np.argwhere(mask).mean(axis=0)[:2]))
    windows = {k: grey_window(a, mask) for k, a in arrays.items()}
    subtraction = arrays["t1c"] - arrays["t1"]
    sub_hi = float(np.percentile(np.abs(subtraction[mask]), 99.9)) if mask.any() else 1.0
    spacing = t1.GetSpacing()

    def cut(array: np.ndarray, axis: str) -> np.ndarray:
        return array[z] if axis == "axial" else array[:, y, :][::-1]

    rows = []
    for axis, aspect in (("axial", spacing[1] / spacing[0]), ("coronal", spacing[2] / spacing[0])):
        name = lambda text: text if axis == "axial" else ""  # noqa: E731  (titles on the first row only)
        row = [Panel(name(text), cut(arrays[k], axis), windows[k], aspect=aspect) for k, text in _PANELS]
        row.append(Panel(name("CE-T1 - T1"), cut(subtraction, axis), (0.0, sub_hi), aspect=aspect))
        row.append(Panel(name("labels: NCR/NET, ED, ET"), cut(arrays["t1"], axis), windows["t1"], labels=cut(labels, axis), aspect=aspect))
        rows.append(row)
    return write_montage(rows, path, f"{title}  SYNTHETIC phantom (radiological view: patient left on image right)", dark=True, dpi=70)
