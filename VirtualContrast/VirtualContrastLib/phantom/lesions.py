"""Synthetic brain tumours: lobulated lesions with necrosis, enhancing rim, non-enhancing tumour and oedema.

Each lesion is a noisy ellipsoid. A normalized radius field ``rho`` (1 on the tumour surface) is divided
by ``1 + a * noise`` with smooth Gaussian noise, which makes the outline lobulated; thresholds of ``rho``
give the necrotic core (``rho < rho_necrosis``), the tumour (``rho < 1``) and, from a second noisy field,
the oedema, which spreads mostly through white matter. About a third of tumours do not enhance at all
(the paper's test set held both kinds); enhancing tumours also carry a non-enhancing part.

BraTS labels (2021+ convention): 1 = necrotic core *and* non-enhancing tumour (NETC merged into NCR),
2 = peritumoural oedema, 3 = enhancing tumour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

COMPARTMENTS = ("ncr", "net", "et", "ed")
LABEL_NCR, LABEL_ED, LABEL_ET = 1, 2, 3


@dataclass
class LesionMaps:
    """Soft compartment fractions (z, y, x), each in [0, 1], plus the BraTS label map and drawn values."""

    fractions: dict[str, np.ndarray]
    labels: np.ndarray
    gd_scale: np.ndarray
    params: list[dict[str, object]]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], spacing: float, scale_mm: float,
                 order: int = 3) -> np.ndarray:
    """Unit-variance smooth random field of correlation length ``scale_mm``: coarse noise, spline-upsampled.

    Cubic upsampling keeps iso-contours (lesion outlines) free of the facets linear upsampling leaves; it
    runs to a grid of ``scale_mm / 4`` only, and linear interpolation does the (invisible) rest.
    """
    coarse = [max(int(np.ceil(n * spacing / scale_mm)) + 1, 2) for n in shape]
    field = rng.standard_normal(coarse).astype(np.float32)
    middle = [min(n, max(int(np.ceil(n * spacing * 4.0 / scale_mm)), c)) for n, c in zip(shape, coarse)]
    for target, interpolation in ((middle, order), (list(shape), 1)):
        if list(field.shape) != target:
            field = ndimage.zoom(field, [t / f for t, f in zip(target, field.shape)], order=interpolation,
                                 grid_mode=True, mode="mirror")
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def _soft_below(rho: np.ndarray, threshold: float, width: float) -> np.ndarray:
    """Soft indicator of ``rho < threshold`` with a linear ramp ``width`` wide (partial volume at the edge)."""
    return np.clip(0.5 + (threshold - rho) / width, 0.0, 1.0).astype(np.float32)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def draw_lesions(rng: np.random.Generator, wm: np.ndarray, gm: np.ndarray, depth: np.ndarray, spacing: float,
                 count: int | None = None) -> LesionMaps:
    """Place 0-3 tumours (or ``count``) in brain tissue of a (z, y, x) grid with isotropic ``spacing`` mm."""
    shape = wm.shape
    fractions = {name: np.zeros(shape, np.float32) for name in COMPARTMENTS}
    gd_scale = np.zeros(shape, np.float32)
    params: list[dict[str, object]] = []
    n_lesions = int(rng.choice([0, 1, 1, 1, 2, 2, 3])) if count is None else int(count)
    for _ in range(n_lesions):
        radius = float(rng.uniform(6.0, 20.0))
        oedema = float(rng.uniform(0.2, 1.0))  # oedema reach, as a fraction of the tumour radius
        # Centre in tissue deep enough that the tumour stays inside the brain.
        candidates = np.flatnonzero((wm + gm > 0.8) & (depth > 0.6 * radius + 6.0))
        if candidates.size == 0:
            continue
        centre = np.array(np.unravel_index(int(rng.choice(candidates)), shape), dtype=np.float64)
        axes = radius * rng.uniform(0.75, 1.25, size=3)
        rotation = _random_rotation(rng)
        # Largest possible extent of the oedema (longest axis, lobulation at its clip): the box holds it all.
        reach = 1.25 * radius * 1.5 * (1.0 + oedema) + 2.0 * spacing
        half = int(np.ceil(reach / spacing))
        lo = np.maximum(centre.astype(int) - half, 0)
        hi = np.minimum(centre.astype(int) + half + 1, shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        grids = np.meshgrid(*(np.arange(s.start, s.stop) - c for s, c in zip(box, centre)), indexing="ij")
        offsets = np.stack([g * spacing for g in grids], axis=-1) @ rotation
        rho_ellipsoid = np.sqrt(((offsets / axes) ** 2).sum(axis=-1))
        box_shape = rho_ellipsoid.shape
        lobes = float(rng.uniform(0.12, 0.3))
        rho = rho_ellipsoid / np.clip(1.0 + lobes * smooth_noise(rng, box_shape, spacing, 8.0), 0.5, 1.5)
        rho_oedema = rho_ellipsoid / np.clip(1.0 + 0.35 * smooth_noise(rng, box_shape, spacing, 14.0), 0.5, 1.5)
        width = max(spacing, 1.0) / radius
        core = _soft_below(rho, 1.0, width)
        enhancing = bool(rng.uniform() < 0.7)
        necrosis_rho = float(rng.uniform(0.35, 0.75)) if enhancing and rng.uniform() < 0.8 else 0.0
        necrosis = _soft_below(rho, necrosis_rho, width) if necrosis_rho > 0 else np.zeros(box_shape, np.float32)
        if enhancing:
            # A patch of the solid tumour that does not take up contrast.
            patch = _soft_below(-smooth_noise(rng, box_shape, spacing, 10.0), -float(rng.uniform(0.6, 1.5)), 0.3)
            solid = np.clip(core - necrosis, 0.0, 1.0)
            net, et = solid * patch, solid * (1.0 - patch)
        else:
            et = np.zeros(box_shape, np.float32)
            net = np.clip(core - necrosis, 0.0, 1.0)
        tissue = np.clip(wm[box] + 0.4 * gm[box], 0.0, 1.0)  # oedema follows white matter tracts
        ed = _soft_below(rho_oedema, 1.0 + oedema, width) * (1.0 - core) * tissue
        # New compartments take their share of what earlier lesions left in this voxel.
        remaining = 1.0 - core - ed
        for name, value in zip(COMPARTMENTS, (necrosis, net, et, ed)):
            fractions[name][box] = fractions[name][box] * remaining + value
        gd_scale[box] = np.where(et > 0, np.exp(0.25 * smooth_noise(rng, box_shape, spacing, 6.0)), gd_scale[box])
        params.append({"centre_mm_from_corner": (centre * spacing).tolist(), "radius_mm": radius,
                       "axes_mm": axes.tolist(), "enhancing": enhancing, "necrosis_rho": necrosis_rho,
                       "oedema_reach": oedema, "lobularity": lobes})
    return LesionMaps(fractions, brats_labels(fractions), gd_scale, params)


def brats_labels(fractions: dict[str, np.ndarray]) -> np.ndarray:
    """BraTS label map from compartment fractions: tumour where its compartments hold half the voxel."""
    ncr = fractions["ncr"] + fractions["net"]
    et = fractions["et"]
    labels = np.zeros(ncr.shape, np.uint8)
    labels[fractions["ed"] >= 0.5] = LABEL_ED
    tumour = ncr + et >= 0.5
    labels[tumour & (et > ncr)] = LABEL_ET
    labels[tumour & (et <= ncr)] = LABEL_NCR
    return labels
