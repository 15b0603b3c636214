"""The subtraction map (≈ 0 on non-enhancing brain, positive where tissue enhances) and the per-lesion metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from VirtualContrastLib.enhancement import (
    DETECTION_FRACTION,
    THRESHOLD_BINS,
    enhancement_metrics,
    near_tumour,
    subtraction_map,
    threshold_histograms,
    youden_threshold,
)
from VirtualContrastLib.phantom import generate_case

SPACING = 3.0
REAL_CASES = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "cases"
GLIOBLASTOMA = REAL_CASES / "brats18_TCIA03_265_1"


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).astype(np.float32)


@pytest.fixture(scope="module")
def phantom():
    """A noisy, bias-corrupted 3 mm phantom with enhancing tumours, and its true subtraction map."""
    case = generate_case(13, SPACING, lesion_count=3)
    arrays = {k: _array(v) for k, v in case.images.items()}
    mask = _array(case.brain_mask) > 0
    seg = _array(case.seg).astype(np.int16)
    gd = _array(case.gd)
    return {"arrays": arrays, "mask": mask, "seg": seg, "gd": gd, "map": subtraction_map(arrays["t1c"], arrays["t1"], mask)}


def _robust_sigma(values: np.ndarray) -> float:
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def test_phantom_map_is_zero_on_non_enhancing_brain_and_positive_where_gadolinium_is(phantom):
    mask, gd, seg, sub = phantom["mask"], phantom["gd"], phantom["seg"], phantom["map"]
    # Non-enhancing: more than one voxel away from any gadolinium (partial volume blurs the edges).
    quiet = mask & (ndimage.distance_transform_edt(gd <= 0, sampling=SPACING) > SPACING)
    enhancing = mask & (seg == 3) & (gd > 0)
    assert quiet.sum() > 10_000 and enhancing.sum() > 100
    assert abs(np.median(sub[quiet])) < 0.01
    assert np.all(np.abs(np.percentile(sub[quiet], [5, 95])) < 0.1)
    assert np.median(sub[enhancing]) > 10 * _robust_sigma(sub[quiet])
    assert np.mean(sub[enhancing] > 0) > 0.95
    assert np.all(sub[~mask] == 0) and sub.dtype == np.float32


def test_map_ignores_each_image_scale_and_is_zero_for_the_t1_itself(phantom):
    arrays, mask = phantom["arrays"], phantom["mask"]
    rescaled = subtraction_map(3.0 * arrays["t1c"] + 50.0, 0.5 * arrays["t1"] + 7.0, mask)
    np.testing.assert_allclose(rescaled, phantom["map"], atol=1e-4)
    assert np.abs(subtraction_map(arrays["t1"], arrays["t1"], mask)).max() < 1e-5
    with pytest.raises(ValueError, match="differ in shape"):
        subtraction_map(arrays["t1c"][1:], arrays["t1"], mask)


def test_lesion_detection_and_false_blobs_follow_their_definitions(phantom):
    mask, seg, truth = phantom["mask"], phantom["seg"], phantom["map"]
    spacing = (SPACING,) * 3
    perfect = enhancement_metrics(truth, truth, seg, mask, spacing, threshold=0.2)
    assert perfect["lesions"] >= 1 and perfect["lesion_sensitivity"] == 1.0 and perfect["subtraction_psnr"] == math.inf
    # The phantom's vessels and dura enhance: blobs outside the tumour that the true map confirms are not false.
    assert perfect["blobs"] == perfect["true_blobs"] >= 1 and perfect["false_blobs"] == 0 and perfect["false_blob_ml"] == 0

    blank = enhancement_metrics(np.zeros_like(truth), truth, seg, mask, spacing, threshold=0.2)
    assert blank["lesions_detected"] == 0 and blank["blobs"] == 0 and blank["false_blobs"] == 0
    assert blank["subtraction_psnr"] < perfect["subtraction_psnr"]

    # A bright 3x3x3-voxel cube (729 mm³) added deep in quiet brain far from the tumour: one false blob of 0.729 ml.
    quiet = ndimage.binary_erosion(mask, iterations=3) & (ndimage.distance_transform_edt(seg == 0) > 10)
    quiet &= ndimage.minimum_filter(truth < 0.2, size=5)
    z, y, x = np.argwhere(quiet)[0]
    invented = truth.copy()
    invented[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] = 1.0
    extra = enhancement_metrics(invented, truth, seg, mask, spacing, threshold=0.2)
    assert extra["blobs"] == perfect["blobs"] + 1 and extra["false_blobs"] == 1
    assert extra["false_blob_ml"] == pytest.approx(27 * SPACING**3 / 1000)
    far = mask & ~near_tumour(seg > 0, spacing)
    assert perfect["far_false_colour"] == blank["far_false_colour"] == 0.0
    assert extra["far_false_colour"] == pytest.approx(27 / np.count_nonzero(far))
    # A glow over half the brain is at most one blob (none when it touches the tumour); far false colour counts every far
    # voxel it colours where the true map does not enhance.
    glow = np.where(np.arange(truth.shape[2]) < truth.shape[2] // 2, 0.3, 0.0)[None, None, :] * mask + truth
    glowing = enhancement_metrics(glow, truth, seg, mask, spacing, threshold=0.2)
    half = far & (np.arange(truth.shape[2]) < truth.shape[2] // 2)[None, None, :] & (truth <= 0.2) & (glow > 0.2)
    assert glowing["far_false_colour"] == pytest.approx(np.count_nonzero(half) / np.count_nonzero(far)) and glowing["far_false_colour"] > 0.2
    # Inside the tumour, colour must lie on the part that enhances: a tumour coloured whole counts as found, yet scores a low Dice.
    tumour, true_in = (seg > 0) & mask, (truth > 0.2) & (seg > 0) & mask
    assert perfect["tumour_dice"] == 1.0 and blank["tumour_dice"] == 0.0
    whole = enhancement_metrics(np.where(tumour, 0.3, truth), truth, seg, mask, spacing, threshold=0.2)
    assert whole["tumour_dice"] == pytest.approx(2 * np.count_nonzero(true_in) / (np.count_nonzero(tumour) + np.count_nonzero(true_in)))
    assert whole["tumour_dice"] < 0.9 and whole["lesion_sensitivity"] == 1.0  # found, yet drawn over the wrong part
    # The same cube on the tumour is no blob outside the tumour.
    on_tumour = np.zeros_like(truth)
    zt, yt, xt = np.argwhere(seg == 3)[0]
    on_tumour[max(zt - 1, 0):zt + 2, max(yt - 1, 0):yt + 2, max(xt - 1, 0):xt + 2] = 1.0
    assert enhancement_metrics(on_tumour, truth, seg, mask, spacing, threshold=0.2)["blobs"] == 0

    # A lesion counts as detected when at least DETECTION_FRACTION of its voxels are above the threshold.
    lesion = (seg == 3) & mask
    labels, _ = ndimage.label(lesion, structure=np.ones((3, 3, 3)))
    biggest = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    voxels = np.argwhere(biggest)
    for fraction, detected in ((DETECTION_FRACTION + 0.05, 1), (DETECTION_FRACTION - 0.05, 0)):
        partial = np.zeros_like(truth)
        chosen = voxels[: int(math.ceil(fraction * len(voxels)))]
        partial[tuple(chosen.T)] = 1.0
        assert enhancement_metrics(partial, truth, seg, mask, spacing, threshold=0.2)["lesions_detected"] == detected


def test_youden_threshold_separates_enhancing_tumour_from_quiet_brain(phantom):
    mask, seg, truth = phantom["mask"], phantom["seg"], phantom["map"]
    histograms = threshold_histograms(truth, seg, mask, (SPACING,) * 3)
    threshold, youden = youden_threshold([histograms, histograms])
    enhancing, quiet = truth[(seg == 3) & mask], truth[mask & (seg == 0)]
    assert youden > 0.8 and THRESHOLD_BINS[0] < threshold < THRESHOLD_BINS[-1]
    assert np.median(quiet) < threshold < np.median(enhancing)
    empty = threshold_histograms(truth, np.zeros_like(seg), mask, (SPACING,) * 3)
    with pytest.raises(ValueError, match="enhancing tumour"):
        youden_threshold([empty])


@pytest.mark.skipif(not GLIOBLASTOMA.is_dir(), reason=f"real BraTS case not on disk ({GLIOBLASTOMA}; see ../shared/realdata/README.md)")
def test_true_map_of_a_real_glioblastoma_is_positive_in_enhancing_tumour_and_zero_elsewhere():
    arrays = {m: _array(sitk.ReadImage(str(GLIOBLASTOMA / f"{m}.nii.gz"))) for m in ("t1", "t1c", "t2", "flair", "seg")}
    # VC-Eval-1 mask of skull-stripped data: every input and the target non-zero.
    mask = np.all([arrays[m] != 0 for m in ("t1", "t1c", "t2", "flair")], axis=0)
    sub = subtraction_map(arrays["t1c"], arrays["t1"], mask)
    enhancing = mask & (arrays["seg"] == 4)  # BraTS 2018: 4 = enhancing tumour
    quiet = mask & (arrays["seg"] == 0)
    assert enhancing.sum() > 1000
    assert abs(np.median(sub[quiet])) < 0.02
    assert np.median(sub[enhancing]) > 4 * _robust_sigma(sub[quiet])
    assert np.mean(sub[enhancing] > 0) > 0.9
