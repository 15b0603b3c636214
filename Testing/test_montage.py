"""The one montage writer: grey panels, enhancement maps and label overlays, written atomically."""

import numpy as np
from matplotlib.image import imread

from VirtualContrastLib.montage import Panel, grey_window, write_montage


def test_montage_draws_enhancement_red_and_leaves_no_temporary_file(tmp_path):
    grey = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (32, 1))
    brain = np.zeros((32, 32), bool)
    brain[4:28, 4:28] = True
    enhancement = np.zeros((32, 32), np.float32)
    enhancement[10:20, 10:20] = 1.0
    labels = np.zeros((32, 32), np.uint8)
    labels[10:20, 10:20] = 3
    rows = [[Panel("grey", grey, grey_window(grey, brain)), Panel("map", enhancement, kind="map", brain=brain)],
            [Panel("labels", grey, labels=labels, aspect=2.0)]]
    path = write_montage(rows, tmp_path / "sub" / "montage.png", "SYNTHETIC test")
    assert [p.name for p in path.parent.iterdir()] == ["montage.png"]
    pixels = imread(path)[..., :3]
    red = (pixels[..., 0] > 0.3) & (pixels[..., 1] < 0.1) & (pixels[..., 2] < 0.2)  # RdBu_r at its top: dark red
    yellow = (pixels[..., 0] > 0.8) & (pixels[..., 1] > 0.8) & (pixels[..., 2] < 0.3)
    assert red.sum() > 100 and yellow.sum() > 100


def test_grey_window_uses_the_mask_and_never_collapses():
    image = np.zeros((8, 8), np.float32)
    image[2:6, 2:6] = np.arange(16).reshape(4, 4)
    mask = image > 0
    low, high = grey_window(image, mask)
    assert 1 <= low < high <= 15
    assert grey_window(np.ones((4, 4)), np.ones((4, 4), bool)) == (1.0, 2.0)


def test_overlay_panel_colours_only_what_slicer_colours(tmp_path):
    """An overlay panel is drawn as Slicer's overlay: transparent up to the threshold, dark red to yellow above it."""
    from VirtualContrastLib.enhancement import ENHANCEMENT_THRESHOLD

    black = np.zeros((32, 32), np.float32)
    brain = np.ones((32, 32), bool)

    def coloured(value: float) -> int:
        overlay = np.full((32, 32), value, np.float32)
        path = write_montage([[Panel("overlay", black, brain=brain, overlay=overlay)]], tmp_path / f"{value}.png", "SYNTHETIC test")
        pixels = imread(path)[..., :3]
        return int(((pixels[..., 0] > 0.25) & (pixels[..., 0] > 2 * pixels[..., 2])).sum())

    assert coloured(0.9 * ENHANCEMENT_THRESHOLD) == 0
    assert coloured(0.3) > 500
