"""The subtraction map that means enhancement, and per-lesion enhancement metrics.

Subtraction map (the same function for a synthetic and a true CE-T1):

1. The CE-T1 and the T1 are each clipped to their own 0.5/99.5 percentiles inside the brain and scaled
   to [0, 1] (VC-Eval-1 step 2, :func:`VirtualContrastLib.metrics.percentile_normalize`).
2. A straight line ``CE ≈ a + b·T1`` is fitted by least squares on the brain voxels, robustly: after
   each fit the residuals' scale σ is taken as 1.4826 × their median absolute deviation over the whole
   brain, voxels with a residual above +2 σ (enhancement) or below −3 σ are left out of the next fit,
   until the kept set stops changing (at most 10 fits). Enhancing voxels are a minority of the brain,
   so the line follows the brain that does not enhance.
3. Map = CE − (a + b·T1) inside the brain, 0 outside: ≈ 0 in non-enhancing brain, positive where the
   CE-T1 is brighter than the T1 predicts. Unit: a fraction of the CE-T1's brain intensity window.

Enhancement metrics (per case; the true map is made from the true CE-T1 in the same way):

- Enhancing lesions: connected components (26-connectivity) of the enhancing label of at least
  :data:`MIN_BLOB_MM3` (100 mm³, i.e. 100 voxels at 1 mm). A lesion is **detected** when at least
  :data:`DETECTION_FRACTION` of its voxels have a synthetic map above :data:`ENHANCEMENT_THRESHOLD`.
  Lesion sensitivity = detected / lesions.
- Enhancing blobs outside tumour: connected components (26-connectivity) of "synthetic map > threshold"
  inside the brain, of at least 100 mm³, with no voxel within :data:`TUMOUR_MARGIN_MM` of a tumour
  label (any label > 0); their number and total volume (ml), and the same on the true map
  (``true_blobs``). Vessels, dura and choroid plexus enhance in real CE-T1 too, so a perfect prediction
  has as many blobs as the truth. **False** enhancing blobs are those of them that the true map does not
  confirm: fewer than :data:`DETECTION_FRACTION` of their voxels are above the threshold on the true map;
  their number and total volume (ml).
- PSNR and SSIM (data range 1) of the synthetic map against the true map inside the enhancing tumour.
- Lesion F1: detected lesions as true positives, missed lesions as false negatives, false enhancing blobs
  as false positives.
- Voxel AUCs of the map (threshold-free): enhancing tumour against brain farther than
  :data:`TUMOUR_MARGIN_MM` from the tumour (``auc_brain``), and against the rest of the tumour, necrosis
  and oedema (``auc_tumour``): telling which part of a lesion enhances.
- Far false colour: the fraction of the brain farther than :data:`TUMOUR_MARGIN_MM` from the tumour that the
  overlay colours (map above the threshold) where the true map does not. Voxel-level, so it sees what blob
  counts miss: broad coloured areas that touch the tumour region, and a map that glows over a whole lobe.
- Tumour Dice: Dice of the coloured voxels against the truly enhancing ones (true map above the threshold)
  inside the tumour labels: colour over the wrong part of a lesion (oedema, a necrotic core, the whole tumour
  instead of its rim), which neither blob counts nor far false colour see.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from .metrics import ENHANCING_LABEL, percentile_normalize, psnr, ssim_2d_slices, ssim_3d

if TYPE_CHECKING:
    import matplotlib.axes

#: Residual band (in robust σ) kept for the next fit: above +2 σ is taken as enhancement.
FIT_BAND = (-3.0, 2.0)

#: At most this many robust fits (the kept set usually stops changing after 3-6).
MAX_FITS = 10

#: Passes of :func:`gate_enhancement` (measured on test volumes: after two, under 1 % of the gated voxels stay above T;
#: raised voxels reach the curve within 0.04 after two and 0.001 after three, Testing/test_detector.py).
GATE_PASSES = 3

#: Smallest enhancing lesion and false blob, in mm³: 100 voxels at BraTS's 1 mm.
MIN_BLOB_MM3 = 100.0

#: A lesion is detected (and a blob confirmed by the true map) when at least this fraction of its voxels
#: lie above the threshold.
DETECTION_FRACTION = 0.5

#: Tumour labels are dilated by this distance before false blobs are looked for outside them.
TUMOUR_MARGIN_MM = 5.0

#: Subtraction-map value that separates enhancement from non-enhancing brain, fixed on training cases only:
#: Youden's J (0.776) on the true maps of the 34 ``train`` rows of the BraTS 2018 set (../shared/realdata,
#: splits.tsv; no val case): ``virtual-contrast-train prepare <extracted cases> --layout brats2018 --split train
#: --no-register --modalities t1,t2,flair --out cache/train``, then ``virtual-contrast-train fit-threshold cache/train
#: --out threshold.json``.
ENHANCEMENT_THRESHOLD = 0.087

#: Enhancement the detector does not confirm is held at most this high (half of T, so that the rescaling between
#: passes cannot lift a held voxel over T and the image's own map agrees with the map returned).
GATE_CAP = ENHANCEMENT_THRESHOLD / 2

#: The definitions above in one sentence, for tables and metrics files.
DEFINITION = (
    "subtraction map = CE-T1 minus its robust linear fit on the T1 inside the brain (both percentile-normalized), "
    "for the prediction and for the true CE-T1; subtraction PSNR/SSIM: the prediction's map against the true map "
    f"inside the enhancing tumour (data range 1); a lesion (26-connected enhancing-label component of >= {MIN_BLOB_MM3:g} mm³) "
    f"is detected when >= {DETECTION_FRACTION:.0%} of its voxels have a map above T = {ENHANCEMENT_THRESHOLD:g}; "
    f"blobs: 26-connected components of map > T in the brain of >= {MIN_BLOB_MM3:g} mm³ with no voxel within "
    f"{TUMOUR_MARGIN_MM:g} mm of a tumour label (count and ml per case; true_blobs: the same on the true map); "
    f"false blobs: those blobs with < {DETECTION_FRACTION:.0%} of their voxels above T on the true map; lesion F1: "
    "detected lesions vs missed lesions and false blobs; AUC brain / tumour: voxel AUC of the map for enhancing tumour "
    f"vs brain > {TUMOUR_MARGIN_MM:g} mm from tumour / vs the rest of the tumour; far false colour: fraction of brain > "
    f"{TUMOUR_MARGIN_MM:g} mm from tumour with map > T where the true map is not."
)

#: Montages show subtraction maps in [-MAP_LIMIT, MAP_LIMIT] (fixed, so maps of different cases compare).
MAP_LIMIT = 0.5

#: The enhancement overlay's colours, from T (0) to MAP_LIMIT (1): dark red -> red -> yellow; below T transparent.
#: Slicer's colour node and the montages' overlay panels are both made from these points.
OVERLAY_COLOURS = ((0.0, (0.55, 0.0, 0.0)), (0.5, (1.0, 0.25, 0.0)), (1.0, (1.0, 1.0, 0.3)))

#: Opacity of the overlay over the synthetic CE-T1 (the Slicer panel's default, and the montages').
OVERLAY_OPACITY = 0.5

#: Bin edges of the histograms ``fit_threshold`` pools over cases (map values are within [-1, 1]).
THRESHOLD_BINS = np.linspace(-1.0, 1.0, 2001)


def _robust_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Intercept and slope of ``y ≈ a + b x`` fitted with the trimming of the module docstring."""
    keep = np.ones(x.shape, dtype=bool)
    a, b = 0.0, 1.0
    for _ in range(MAX_FITS):
        if keep.sum() < 2 or np.ptp(x[keep]) == 0:
            break
        b, a = np.polyfit(x[keep], y[keep], 1)
        residual = y - (a + b * x)
        sigma = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
        if sigma == 0.0:
            break
        kept = (residual >= FIT_BAND[0] * sigma) & (residual <= FIT_BAND[1] * sigma)
        if np.array_equal(kept, keep):
            break
        keep = kept
    return float(a), float(b)


def subtraction_map(ce: np.ndarray, t1: np.ndarray, brain_mask: np.ndarray) -> np.ndarray:
    """Enhancement map (float32, 0 outside the brain): CE-T1 minus its robust linear fit on the T1."""
    brain = np.asarray(brain_mask, dtype=bool)
    if np.shape(ce) != brain.shape or np.shape(t1) != brain.shape:
        raise ValueError(f"CE-T1 {np.shape(ce)}, T1 {np.shape(t1)} and brain mask {brain.shape} differ in shape")
    out = np.zeros(brain.shape, dtype=np.float32)
    if not brain.any():
        return out
    y = percentile_normalize(ce, brain)[brain].astype(np.float64)
    x = percentile_normalize(t1, brain)[brain].astype(np.float64)
    a, b = _robust_line(x, y)
    out[brain] = y - (a + b * x)
    return out


def expected_enhancement(probability: np.ndarray, curve: dict[str, list[float]]) -> np.ndarray:
    """The mean true subtraction map at each detection probability (``curve`` fitted on training cases), interpolated."""
    return np.interp(probability, curve["probability"], curve["enhancement"]).astype(np.float32)


def undetected_blobs(shown: np.ndarray, brain_mask: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Voxels of the 26-connected components of "map > T" in the brain that have no ``detected`` voxel."""
    enhancing = (np.asarray(shown) > ENHANCEMENT_THRESHOLD) & np.asarray(brain_mask, dtype=bool)
    labels, _, sizes = _components(enhancing, (1.0, 1.0, 1.0), 0.0)
    confirmed = np.bincount(labels[np.asarray(detected, dtype=bool)], minlength=sizes.size) > 0
    confirmed[0] = True  # background
    return ~confirmed[labels]


def gate_enhancement(ce: np.ndarray, t1: np.ndarray, brain_mask: np.ndarray, probability: np.ndarray,
                     threshold: float, curve: dict[str, list[float]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Make a synthetic CE-T1 and its map agree with a detection head or detector: (gated CE-T1, its enhancement map).

    Enhancement the detector does not confirm is removed: every connected region of the map above
    :data:`ENHANCEMENT_THRESHOLD` with no voxel at or above ``threshold`` probability (:func:`undetected_blobs`) is
    brought down to at most :data:`GATE_CAP` above its fit on the T1; the rest of the image is left as synthesized,
    so the intensities a CE-T1 has everywhere (and the image's percentile window, which every score and map is
    read in) stay. Where the detector says the voxel enhances, the CE-T1 is kept and, with a ``curve``, raised where
    it enhances less than the training cases' true CE-T1 did on average at that probability
    (:func:`expected_enhancement`): the synthesis network draws the anatomy and its own enhancement, the detector
    decides which enhancement is real and how strong it is at least. The map returned is the subtraction map of the
    gated CE-T1, held at <= :data:`GATE_CAP` in the removed regions, so the image, the map and the overlay
    (transparent up to T) show enhancement in the same voxels.

    (Holding the map at the cap wherever the probability is below the threshold, the previous gate, removed normal
    enhancement too and moved the window: 13.29 dB brain PSNR against 15.12 for this one on the 8 val cases, README.)
    """
    from .normalization import intensity_range

    brain = np.asarray(brain_mask, dtype=bool)
    ce = np.asarray(ce, dtype=np.float32)
    if not brain.any():
        return ce, np.zeros(brain.shape, dtype=np.float32)
    detected = (np.asarray(probability) >= threshold) & brain
    floor = None
    if curve is not None:
        floor = np.where(detected, expected_enhancement(np.asarray(probability), curve), -np.inf).astype(np.float32)
    gated, shown = ce, subtraction_map(ce, t1, brain)
    removed = np.zeros(brain.shape, dtype=bool)
    raised = np.zeros(brain.shape, dtype=bool)
    # Changing voxels moves the image's own percentiles, and so its map: each pass corrects what the last one's
    # rescaling left off (raised voxels are brought back onto the curve, up or down; regions lifted over T removed).
    for _ in range(GATE_PASSES):
        low, high = intensity_range(gated, brain, {"name": "brain_percentile", "lower": 0.5, "upper": 99.5})
        removed |= undetected_blobs(shown, brain, detected)
        change = np.where(removed, -np.maximum(shown - GATE_CAP, 0.0), 0.0)
        if floor is not None:
            raised |= floor > shown
            change = np.where(raised, floor - shown, change)
        gated = (gated + change * np.float32(high - low)).astype(np.float32)
        shown = subtraction_map(gated, t1, brain)
    return gated, np.where(removed, np.minimum(shown, GATE_CAP), shown).astype(np.float32)


def voxel_auc(scores: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``positive`` against ``negative`` voxels (NaN when either is empty)."""
    from scipy.stats import rankdata

    pos, neg = np.asarray(scores)[positive], np.asarray(scores)[negative]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def _components(mask: np.ndarray, spacing: Sequence[float], min_mm3: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """26-connected components of ``mask``: label image, ids of those of at least ``min_mm3``, all voxel counts."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return labels, np.flatnonzero(sizes * float(np.prod(spacing)) >= min_mm3), sizes


def _blobs_outside_tumour(candidates: np.ndarray, near_tumour: np.ndarray, spacing: Sequence[float],
                          confirm: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Voxel counts of the components of ``candidates`` (≥ 100 mm³) with no voxel near the tumour, and
    whether ``confirm`` (when given) covers at least :data:`DETECTION_FRACTION` of each."""
    labels, big, sizes = _components(candidates, spacing, MIN_BLOB_MM3)
    touching = np.bincount(labels[near_tumour], minlength=sizes.size) > 0
    blobs = big[~touching[big]]
    if confirm is None:
        return sizes[blobs], np.zeros(blobs.size, dtype=bool)
    confirmed = np.bincount(labels[confirm], minlength=sizes.size)[blobs] >= DETECTION_FRACTION * sizes[blobs]
    return sizes[blobs], confirmed


def enhancement_metrics(
    synthetic_map: np.ndarray,
    true_map: np.ndarray,
    seg: np.ndarray,
    brain_mask: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    enhancing_label: int = ENHANCING_LABEL,
    threshold: float = ENHANCEMENT_THRESHOLD,
) -> dict[str, float]:
    """Per-lesion detection, false enhancing blobs and map PSNR/SSIM in enhancing tumour (module docstring).

    ``spacing`` is the voxel size in mm along the array axes (z, y, x).
    """
    brain = np.asarray(brain_mask, dtype=bool)
    seg = np.asarray(seg)
    enhancing = (seg == enhancing_label) & brain
    near = near_tumour(seg > 0, spacing)
    counts = lesion_counts(synthetic_map, true_map, seg, brain, spacing, enhancing_label, threshold, near)
    true_above = (np.asarray(true_map) > threshold) & brain
    far = brain & ~near
    synthetic_above = (np.asarray(synthetic_map) > threshold) & brain
    false_colour = synthetic_above & far & ~true_above
    return {
        **counts,
        "far_false_colour": float(np.count_nonzero(false_colour) / np.count_nonzero(far)) if far.any() else math.nan,
        "tumour_dice": tumour_dice(synthetic_above, true_above, seg > 0),
        "auc_brain": voxel_auc(synthetic_map, enhancing, brain & ~near),
        "auc_tumour": voxel_auc(synthetic_map, enhancing, (seg > 0) & (seg != enhancing_label) & brain),
        "true_blobs": int(_blobs_outside_tumour(true_above, near, spacing)[0].size),
        "subtraction_psnr": psnr(synthetic_map, true_map, enhancing),
        "subtraction_ssim_2d": ssim_2d_slices(synthetic_map, true_map, enhancing),
        "subtraction_ssim_3d": ssim_3d(synthetic_map, true_map, enhancing),
    }


def tumour_dice(synthetic_above: np.ndarray, true_above: np.ndarray, tumour: np.ndarray) -> float:
    """Dice of the coloured voxels (map above T) against the truly enhancing ones, inside the tumour labels only.

    Lesions found and false blobs do not see colour that lies on the tumour but over the wrong part of it (a whole
    tumour glowing instead of its rim, colour over oedema); this does. NaN when neither map is above T in the tumour.
    """
    synthetic, true = synthetic_above & tumour, true_above & tumour
    total = np.count_nonzero(synthetic) + np.count_nonzero(true)
    return 2.0 * np.count_nonzero(synthetic & true) / total if total else math.nan


def lesion_counts(
    synthetic_map: np.ndarray,
    true_map: np.ndarray,
    seg: np.ndarray,
    brain_mask: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    enhancing_label: int = ENHANCING_LABEL,
    threshold: float = ENHANCEMENT_THRESHOLD,
    near: np.ndarray | None = None,
) -> dict[str, float]:
    """The per-lesion part of :func:`enhancement_metrics`: lesions found, blobs, false blobs and lesion F1
    (``near``: :func:`near_tumour` of the labels, when already computed)."""
    brain = np.asarray(brain_mask, dtype=bool)
    seg = np.asarray(seg)
    above = (np.asarray(synthetic_map) > threshold) & brain
    labels, lesions, sizes = _components((seg == enhancing_label) & brain, spacing, MIN_BLOB_MM3)
    fraction_above = np.bincount(labels[above], minlength=sizes.size)[lesions] / np.maximum(sizes[lesions], 1)
    detected = int(np.count_nonzero(fraction_above >= DETECTION_FRACTION))
    near = near_tumour(seg > 0, spacing) if near is None else near
    blobs, confirmed = _blobs_outside_tumour(above, near, spacing, (np.asarray(true_map) > threshold) & brain)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    false_blobs = int(np.count_nonzero(~confirmed))
    found = 2 * detected + (lesions.size - detected) + false_blobs
    return {
        "lesions": int(lesions.size),
        "lesions_detected": detected,
        "lesion_sensitivity": detected / lesions.size if lesions.size else math.nan,
        # Lesion F1: detected lesions are true positives, missed ones false negatives, false blobs false positives.
        "lesion_f1": 2 * detected / found if lesions.size else math.nan,
        "blobs": int(blobs.size),
        "blob_ml": float(blobs.sum()) * voxel_ml,
        "false_blobs": false_blobs,
        "false_blob_ml": float(blobs[~confirmed].sum()) * voxel_ml,
    }


def near_tumour(tumour: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Tumour voxels and every voxel within :data:`TUMOUR_MARGIN_MM` of one."""
    tumour = np.asarray(tumour, dtype=bool)
    if not tumour.any():
        return tumour
    return ndimage.distance_transform_edt(~tumour, sampling=spacing) <= TUMOUR_MARGIN_MM


def threshold_histograms(
    true_map: np.ndarray,
    seg: np.ndarray,
    brain_mask: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    enhancing_label: int = ENHANCING_LABEL,
) -> np.ndarray:
    """Normalized histograms (2, bins) of a true map: enhancing-label voxels, and brain away from the tumour.

    The brain class leaves out the tumour dilated by :data:`TUMOUR_MARGIN_MM`, as blobs do; a
    class with no voxel gives a row of zeros (and is not counted by :func:`youden_threshold`).
    """
    brain = np.asarray(brain_mask, dtype=bool)
    seg = np.asarray(seg)
    classes = ((seg == enhancing_label) & brain, brain & ~near_tumour(seg > 0, spacing))
    rows = []
    for region in classes:
        counts = np.histogram(np.clip(np.asarray(true_map)[region], THRESHOLD_BINS[0], THRESHOLD_BINS[-1]), THRESHOLD_BINS)[0]
        rows.append(counts / counts.sum() if counts.sum() else counts.astype(np.float64))
    return np.stack(rows)


def youden_threshold(histograms: Sequence[np.ndarray]) -> tuple[float, float]:
    """Threshold maximizing Youden's J (sensitivity + specificity − 1) over cases, each case weighing the same.

    ``histograms`` are :func:`threshold_histograms` of the cases; returns (threshold, J).
    """
    stack = np.asarray(histograms, dtype=np.float64)
    present = stack.sum(axis=2) > 0
    if not present[:, 0].any() or not present[:, 1].any():
        raise ValueError("fitting a threshold needs cases with enhancing tumour and with brain away from the tumour")
    pooled = [stack[present[:, k], k].mean(axis=0) for k in (0, 1)]
    # Fraction of each class strictly above each inner bin edge.
    above = [1.0 - np.cumsum(hist)[:-1] for hist in pooled]
    youden = above[0] - above[1]
    best = int(np.argmax(youden))
    return float(THRESHOLD_BINS[best + 1]), float(youden[best])


def show_map(ax: "matplotlib.axes.Axes", map_slice: np.ndarray, brain_slice: np.ndarray) -> None:
    """Draw a subtraction-map slice: white (neutral) where nothing enhances, red enhancing, blue darker; black outside the brain."""
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="black")
    ax.imshow(np.ma.masked_where(~np.asarray(brain_slice, dtype=bool), map_slice), cmap=cmap, vmin=-MAP_LIMIT, vmax=MAP_LIMIT)


def show_overlay(ax: "matplotlib.axes.Axes", map_slice: np.ndarray, brain_slice: np.ndarray, aspect: float = 1.0) -> None:
    """Draw a subtraction-map slice over the image already on ``ax`` as Slicer's overlay shows it: transparent up to
    :data:`ENHANCEMENT_THRESHOLD`, dark red there to yellow at :data:`MAP_LIMIT` (:data:`OVERLAY_COLOURS`)."""
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("vc_enhancement", list(OVERLAY_COLOURS))
    shown = np.ma.masked_where(~(np.asarray(brain_slice, dtype=bool) & (map_slice > ENHANCEMENT_THRESHOLD)), map_slice)
    ax.imshow(shown, cmap=cmap, vmin=ENHANCEMENT_THRESHOLD, vmax=MAP_LIMIT, alpha=OVERLAY_OPACITY, aspect=aspect,
              interpolation="nearest")
