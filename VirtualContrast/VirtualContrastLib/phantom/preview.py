"""A PNG montage of a phantom case: every contrast, the CE-T1 - T1 subtraction and the labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .generate import PhantomCase

_PANELS = (("t1", "T1 (MPRAGE)"), ("t2", "T2"), ("flair", "FLAIR"), ("adc", "ADC"), ("t1c", "CE-T1 (truth)"))


def _on_t1_grid(image: sitk.Image, t1: sitk.Image) -> np.ndarray:
    """Thick-slice inputs live on their own grids: bring them onto the T1 grid in physical space."""
    return sitk.GetArrayFromImage(sitk.Resample(image, t1, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))


def _window(array: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(array[mask], [0.5, 99.5]) if mask.any() else (0.0, 1.0)
    return float(lo), float(max(hi, lo + 1e-6))


def write_preview(case: PhantomCase, path: str | os.PathLike, title: str = "") -> Path:
    """Write an axial and a coronal montage through the largest tumour (or the brain centre) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    t1 = case.images["t1"]
    arrays = {k: _on_t1_grid(case.images[k], t1) for k, _ in _PANELS}
    mask = sitk.GetArrayFromImage(case.brain_mask) > 0
    labels = sitk.GetArrayFromImage(case.seg)
    tumour = labels > 0
    # The slice holding most tumour, else the brain's centre of mass.
    z, y = ((int(np.argmax(tumour.sum(axis=(1, 2)))), int(np.argmax(tumour.sum(axis=(0, 2))))) if tumour.any()
            else tuple(int(c) for c in np.argwhere(mask).mean(axis=0)[:2]))
    windows = {k: _window(a, mask) for k, a in arrays.items()}
    subtraction = arrays["t1c"] - arrays["t1"]
    sub_hi = float(np.percentile(np.abs(subtraction[mask]), 99.9)) if mask.any() else 1.0
    label_colours = ListedColormap([(0, 0, 0, 0), (1.0, 0.2, 0.2, 0.8), (0.2, 0.9, 0.2, 0.6), (1.0, 1.0, 0.1, 0.8)])
    spacing = case.images["t1"].GetSpacing()

    def cut(array: np.ndarray, axis: str) -> np.ndarray:
        return array[z] if axis == "axial" else array[:, y, :][::-1]

    aspect = {"axial": spacing[1] / spacing[0], "coronal": spacing[2] / spacing[0]}
    fig, axes = plt.subplots(2, 7, figsize=(21, 6.6), facecolor="black")
    for row, axis in enumerate(("axial", "coronal")):
        panels = [(cut(arrays[k], axis), name, "gray", windows[k]) for k, name in _PANELS]
        panels.append((cut(subtraction, axis), "CE-T1 - T1", "gray", (0.0, sub_hi)))
        for col, (image, name, cmap, (lo, hi)) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(image, cmap=cmap, vmin=lo, vmax=hi, aspect=aspect[axis], interpolation="nearest")
            ax.set_title(name if row == 0 else "", color="white", fontsize=11)
        ax = axes[row, 6]
        ax.imshow(cut(arrays["t1"], axis), cmap="gray", vmin=windows["t1"][0], vmax=windows["t1"][1], aspect=aspect[axis])
        ax.imshow(cut(labels, axis), cmap=label_colours, vmin=0, vmax=3, aspect=aspect[axis], interpolation="nearest")
        ax.set_title("labels: NCR/NET, ED, ET" if row == 0 else "", color="white", fontsize=11)
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle(f"{title}  SYNTHETIC phantom (radiological view: patient left on image right)", color="white")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
    fig.savefig(tmp, dpi=70, facecolor="black", format="png")
    plt.close(fig)
    os.replace(tmp, out)
    return out
