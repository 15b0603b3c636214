"""PNG montages: rows of 2D slices (grey images, enhancement maps, label overlays), written atomically.

The demo, the phantom preview and training's evaluation draw their figures through :func:`write_montage`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fileutil import atomic_write

#: Tumour label colours over a grey image (0 transparent; 1 NCR/NET red, 2 oedema green, 3 enhancing yellow).
LABEL_COLOURS = ((0, 0, 0, 0), (1.0, 0.2, 0.2, 0.8), (0.2, 0.9, 0.2, 0.6), (1.0, 1.0, 0.1, 0.8))


@dataclass
class Panel:
    """One slice of a montage: grey with a window (and optional tumour labels over it), or an enhancement map."""

    title: str
    image: np.ndarray
    window: tuple[float, float] = (0.0, 1.0)
    #: "grey" or "map" (a subtraction map, drawn by :func:`VirtualContrastLib.enhancement.show_map` inside ``brain``).
    kind: str = "grey"
    brain: np.ndarray | None = None
    labels: np.ndarray | None = None
    #: A subtraction map drawn over the grey image inside ``brain`` as Slicer's overlay shows it
    #: (:func:`VirtualContrastLib.enhancement.show_overlay`: only what lies above the threshold is coloured).
    overlay: np.ndarray | None = None
    #: Height/width of a pixel (anisotropic voxels in a coronal cut).
    aspect: float = 1.0


def grey_window(array: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Display window of an image: its 0.5 and 99.5 percentiles inside ``mask`` (everywhere when empty)."""
    values = array[mask] if mask.any() else array.ravel()
    low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    return low, high if high > low else low + 1.0


def write_montage(rows: Sequence[Sequence[Panel]], path: str | os.PathLike, title: str, panel_size: tuple[float, float] = (3.0, 3.0),
                  dark: bool = False, dpi: int = 100) -> Path:
    """Draw ``rows`` of panels under ``title`` into a PNG at ``path``, written atomically (:func:`fileutil.atomic_write`)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    from .enhancement import show_map, show_overlay

    columns = max(len(row) for row in rows)
    colour = "white" if dark else "black"
    figure = Figure(figsize=(panel_size[0] * columns, panel_size[1] * len(rows) + 0.4), dpi=dpi, facecolor="black" if dark else "white")
    axes = np.atleast_2d(figure.subplots(len(rows), columns, squeeze=False))
    for ax_row, row in zip(axes, rows):
        for ax, panel in zip(ax_row, row):
            if panel.kind == "map":
                show_map(ax, panel.image, panel.brain if panel.brain is not None else np.ones(panel.image.shape, bool))
            else:
                ax.imshow(panel.image, cmap="gray", vmin=panel.window[0], vmax=panel.window[1], aspect=panel.aspect, interpolation="nearest")
            if panel.overlay is not None:
                show_overlay(ax, panel.overlay, panel.brain if panel.brain is not None else np.ones(panel.overlay.shape, bool), panel.aspect)
            if panel.labels is not None:
                ax.imshow(panel.labels, cmap=ListedColormap(LABEL_COLOURS), vmin=0, vmax=3, aspect=panel.aspect, interpolation="nearest")
            ax.set_title(panel.title, fontsize=9, color=colour)
        for ax in ax_row:
            ax.axis("off")
    figure.suptitle(title, fontsize=10, color=colour)
    figure.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", facecolor=figure.get_facecolor())
    return out
