"""VC-Eval-1 metrics against hand computations, scikit-image and SciPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from VirtualContrastLib.metrics import (
    brats_regions,
    evaluate_case,
    linear_floor,
    mae,
    paired_ttest,
    percentile_normalize,
    psnr,
    ssim_2d_slices,
    ssim_3d,
    summarize,
)


def _pair(shape=(12, 20, 16), seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.random(shape)
    pred = np.clip(target + 0.1 * rng.standard_normal(shape), 0, 1)
    return pred, target


def _border(shape, width) -> np.ndarray:
    """True everywhere except a border of ``width`` voxels along every axis (or in-plane only)."""
    region = np.zeros(shape, dtype=bool)
    region[tuple(slice(w, n - w) for n, w in zip(shape, width))] = True
    return region


def test_percentile_normalize_clips_to_its_own_percentiles_inside_the_mask():
    image = np.arange(2 * 10 * 10, dtype=np.float32).reshape(2, 10, 10)
    mask = np.zeros(image.shape, dtype=bool)
    mask[:, 2:8, 2:8] = True
    out = percentile_normalize(image, mask, lower=10, upper=90)
    lo, hi = np.percentile(image[mask], [10, 90])
    expected = np.clip((image - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(out[mask], expected[mask], rtol=1e-5, atol=1e-6)
    assert out[~mask].max() == 0 and out[mask].min() == 0 and out[mask].max() == 1
    assert percentile_normalize(np.full((3, 3, 3), 5.0), np.ones((3, 3, 3), bool)).max() == 0
    assert percentile_normalize(image, np.zeros(image.shape, bool)).max() == 0


def test_mae_and_psnr_by_hand():
    target = np.array([[[0.5, 0.5, 0.0, 0.9]]])
    pred = np.array([[[0.4, 0.7, 0.0, 0.1]]])
    region = np.array([[[True, True, True, False]]])
    assert mae(pred, target, region) == pytest.approx((0.1 + 0.2 + 0.0) / 3)
    assert psnr(pred, target, region) == pytest.approx(10 * math.log10(1 / ((0.01 + 0.04) / 3)))
    assert psnr(target, target, region) == math.inf and mae(target, target, region) == 0


def test_psnr_over_the_whole_image_equals_skimage():
    pred, target = _pair()
    full = np.ones(target.shape, dtype=bool)
    assert psnr(pred, target, full) == pytest.approx(peak_signal_noise_ratio(target, pred, data_range=1.0))


def test_paper_ssim_equals_skimage_per_slice_on_the_full_slice():
    pred, target = _pair()
    # skimage's mean SSIM crops a (7 - 1) / 2 = 3 pixel border of the map.
    region = _border(target.shape, (0, 3, 3))
    expected = np.mean([structural_similarity(target[z], pred[z], data_range=1.0) for z in range(target.shape[0])])
    assert ssim_2d_slices(pred, target, region) == pytest.approx(expected)


def test_paper_ssim_only_uses_slices_that_contain_the_region():
    pred, target = _pair()
    region = np.zeros(target.shape, dtype=bool)
    region[4, 3:-3, 3:-3] = True
    assert ssim_2d_slices(pred, target, region) == pytest.approx(structural_similarity(target[4], pred[4], data_range=1.0))


def test_brasyn_ssim_equals_skimage_3d_gaussian_ssim():
    pred, target = _pair(shape=(16, 20, 18))
    # Gaussian window of sigma 1.5 -> 11 voxels -> skimage crops a 5 voxel border.
    region = _border(target.shape, (5, 5, 5))
    expected = structural_similarity(
        target, pred, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim_3d(pred, target, region) == pytest.approx(expected)
    assert ssim_3d(target, target, region) == pytest.approx(1.0)


def test_empty_region_gives_nan_not_an_error():
    pred, target = _pair()
    empty = np.zeros(target.shape, dtype=bool)
    for metric in (mae, psnr, ssim_2d_slices, ssim_3d):
        assert math.isnan(metric(pred, target, empty))


def test_region_of_the_wrong_shape_is_rejected():
    pred, target = _pair()
    with pytest.raises(ValueError, match="shape"):
        mae(pred, target, np.ones((2, 2, 2), dtype=bool))


def test_evaluate_case_normalizes_reports_regions_and_the_identity_floor():
    rng = np.random.default_rng(1)
    shape = (14, 24, 20)
    brain = _border(shape, (1, 2, 2))
    t1 = rng.random(shape) * 300 * brain
    target = (t1 + 60 * rng.random(shape)) * brain
    pred = (0.8 * target + 10 * rng.random(shape)) * brain
    seg = np.zeros(shape, dtype=np.uint8)
    seg[5:9, 8:14, 6:12] = 2
    seg[6:8, 10:12, 8:10] = 3
    seg[0, 0, 0] = 1  # outside the brain: must be dropped from the region
    result = evaluate_case(pred, target, brain, t1=t1, regions=brats_regions(seg))
    assert set(result) == {"brain", "enhancing_tumour", "whole_tumour"}
    assert result["enhancing_tumour"]["voxels"] == 2 * 2 * 2
    assert result["whole_tumour"]["voxels"] == 4 * 6 * 6
    pn, tn, t1n = (percentile_normalize(a, brain) for a in (pred, target, t1))
    assert result["brain"]["mae"] == pytest.approx(mae(pn, tn, brain))
    assert result["brain"]["ssim_3d"] == pytest.approx(ssim_3d(pn, tn, brain))
    assert result["whole_tumour"]["psnr"] == pytest.approx(psnr(pn, tn, (seg > 0) & brain))
    assert result["brain"]["identity_psnr"] == pytest.approx(psnr(t1n, tn, brain))
    assert result["brain"]["identity_ssim_2d"] == pytest.approx(ssim_2d_slices(t1n, tn, brain))
    assert "identity_mae" not in evaluate_case(pred, target, brain)["brain"]


def test_linear_floor_recovers_a_linear_target_and_is_scored_beside_the_identity_floor():
    rng = np.random.default_rng(2)
    shape = (14, 24, 20)
    brain = _border(shape, (1, 2, 2))
    t1, t2 = (rng.random(shape) * 100 * brain for _ in range(2))
    # Inside the clipping window the target is linear in the normalized inputs: the floor fits it exactly there.
    target = (0.5 * percentile_normalize(t1, brain) + 2.0 * percentile_normalize(t2, brain) + 0.3) * brain
    floor = linear_floor(target, [t1, t2], brain)
    np.testing.assert_allclose(floor[brain], percentile_normalize(target, brain)[brain], atol=0.05)
    assert np.all(floor[~brain] == 0)
    result = evaluate_case(t1, target, brain, t1=t1, linear_inputs=[t1, t2])["brain"]
    assert result["linear_psnr"] > result["identity_psnr"] + 10 and result["identity_psnr"] == pytest.approx(result["psnr"])
    # The floor is scored exactly like a prediction: its own percentile normalization, then VC-Eval-1.
    expected = psnr(percentile_normalize(floor, brain), percentile_normalize(target, brain), brain)
    assert result["linear_psnr"] == pytest.approx(expected)


def test_evaluate_case_with_an_absent_label_gives_nan():
    pred, target = _pair()
    brain = np.ones(target.shape, dtype=bool)
    result = evaluate_case(pred, target, brain, regions=brats_regions(np.zeros(target.shape, np.uint8)))
    assert result["enhancing_tumour"]["voxels"] == 0 and math.isnan(result["enhancing_tumour"]["psnr"])
    assert np.isfinite(result["brain"]["psnr"])


def test_paired_ttest_equals_scipy_and_drops_incomplete_pairs():
    a = [27.1, 28.3, 26.9, 29.0, 27.7]
    b = [26.5, 27.9, 26.8, 28.1, 27.0]
    expected = stats.ttest_rel(a, b)
    t, p = paired_ttest(a, b)
    assert (t, p) == pytest.approx((expected.statistic, expected.pvalue))
    t_nan, p_nan = paired_ttest(a + [math.nan], b + [30.0])
    assert (t_nan, p_nan) == pytest.approx((t, p))
    with pytest.raises(ValueError):
        paired_ttest(a, b[:-1])


def test_summarize_mean_and_sample_std():
    mean, std = summarize([1.0, 2.0, 4.0, math.nan])
    assert mean == pytest.approx(7 / 3)
    assert std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert summarize([3.0]) == (3.0, 0.0)
    assert all(math.isnan(v) for v in summarize([]))
