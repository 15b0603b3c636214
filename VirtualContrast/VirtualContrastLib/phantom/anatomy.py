"""Normal brain anatomy: the MNI ICBM152 2009 template shipped inside nilearn, warped per case.

nilearn stores the template (T1, GM and WM probability maps) inside its wheel, so nothing is downloaded.
Images come out as SimpleITK images in LPS; NIfTI affines are RAS, so the first two rows change sign.
Besides the tissue fractions, the template space holds the structures that take up gadolinium without a
blood-brain barrier (venous sinuses and large arteries, choroid plexus, dura), placed from MNI coordinates
and the distance to the brain surface, so they deform with the anatomy of each case.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

#: Channels of the template stack, in order.
CHANNELS = ("gm", "wm", "mask", "blood", "choroid", "dura", "depth")

#: Field of view of the phantom's T1 grid (mm, LPS x/y/z); the warped brain fits inside with margin.
FIELD_OF_VIEW = (180.0, 216.0, 180.0)

# Centre of the template brain in MNI RAS (mm): the point the head is rotated and scaled about.
_BRAIN_CENTRE_RAS = np.array([0.0, -18.0, 8.0])
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def ras_to_lps_affine(affine: np.ndarray) -> np.ndarray:
    """Convert a 4x4 voxel-to-RAS affine (NIfTI) into the voxel-to-LPS affine ITK uses."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ np.asarray(affine, dtype=np.float64)


def nifti_to_sitk(image: nib.spatialimages.SpatialImage, data: np.ndarray | None = None) -> sitk.Image:
    """Turn a nibabel image (array indexed i, j, k; RAS affine) into a SimpleITK image with LPS geometry."""
    array = np.asarray(image.get_fdata(dtype=np.float32) if data is None else data)
    lps = ras_to_lps_affine(image.affine)
    linear = lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    result = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    result.SetSpacing(tuple(float(s) for s in spacing))
    result.SetDirection(tuple(float(v) for v in (linear / spacing).ravel()))
    result.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    return result


def _tube(points_ras: np.ndarray, coords: tuple[np.ndarray, ...], radius: float) -> np.ndarray:
    """Soft tube (1 on the axis, Gaussian fall-off) around a polyline given by RAS points."""
    x, y, z = coords
    dist2 = np.full(np.broadcast_shapes(x.shape, y.shape, z.shape), np.inf, dtype=np.float32)
    for a, b in zip(points_ras[:-1], points_ras[1:]):
        ab = b - a
        t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / float(ab @ ab), 0.0, 1.0)
        d2 = (x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2
        np.minimum(dist2, d2, out=dist2)
    return np.exp(-0.5 * dist2 / radius**2).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def _gd_structures(gm: np.ndarray, wm: np.ndarray, mask: np.ndarray, depth: np.ndarray, affine: np.ndarray) -> dict[str, np.ndarray]:
    """Fractions of blood (sinuses, arteries), choroid plexus and dura on the template grid."""
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in mask.shape), indexing="ij", sparse=True)
    x = affine[0, 0] * i + affine[0, 3]
    y = affine[1, 1] * j + affine[1, 3]
    z = affine[2, 2] * k + affine[2, 3]
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    surface = np.exp(-0.5 * ((depth - 2.0) / 1.6) ** 2) * mask
    # Superior sagittal sinus along the midline convexity; transverse sinuses around the occipital surface.
    sss = np.exp(-0.5 * (x / 3.0) ** 2) * surface * _sigmoid((z - 5.0) / 4.0)
    z_transverse = 6.0 - 0.35 * np.abs(x)
    transverse = np.exp(-0.5 * ((z - z_transverse) / 3.0) ** 2) * surface * _sigmoid((-y - 55.0) / 5.0)
    straight = _tube(np.array([[0.0, -55.0, 10.0], [0.0, -80.0, 8.0], [0.0, -100.0, 6.0]]), (x, y, z), 2.2)
    arteries = sum(
        _tube(np.array([[side * 10.0, 4.0, -14.0], [side * 32.0, 6.0, -10.0], [side * 42.0, -4.0, -2.0],
                        [side * 46.0, -24.0, 12.0]]), (x, y, z), 1.3)
        for side in (-1.0, 1.0)
    )
    blood = np.clip(sss + transverse + straight + arteries, 0.0, 1.0) * mask
    # Choroid plexus: the ventricular atria and bodies (deep CSF), about (+-28, -40, 14) and (+-16, -18, 22).
    ventricles = csf * (depth > 12.0)
    blobs = sum(np.exp(-0.5 * ((x - s * cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / r**2)
                for s in (-1.0, 1.0) for cx, cy, cz, r in ((28.0, -40.0, 14.0, 7.0), (17.0, -20.0, 22.0, 4.5)))
    choroid = np.clip(1.2 * blobs * ventricles, 0.0, 0.9)
    # Dura: a thin shell on the brain surface plus the falx in the interhemispheric fissure.
    falx = np.exp(-0.5 * (x / 1.2) ** 2) * _sigmoid((z - 25.0) / 3.0) * _sigmoid((y + 95.0) / 4.0) * csf
    dura = np.clip(0.35 * np.exp(-depth / 0.7) * mask + 0.6 * falx, 0.0, 0.8)
    return {"blood": blood.astype(np.float32), "choroid": choroid.astype(np.float32), "dura": dura.astype(np.float32)}


@lru_cache(maxsize=1)
def template_channels() -> tuple[sitk.Image, ...]:
    """The 1 mm template stack (see :data:`CHANNELS`) as SimpleITK images in LPS; cached per process."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    mask = datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32)
    if not np.allclose(np.abs(np.diag(t1.affine)[:3]), 1.0) or np.count_nonzero(t1.affine[:3, :3] - np.diag(np.diag(t1.affine)[:3])):
        raise RuntimeError("unexpected MNI template affine: expected 1 mm axis-aligned voxels")
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    gm *= mask
    wm *= mask
    depth = ndimage.distance_transform_edt(mask > 0).astype(np.float32)
    arrays = {"gm": gm, "wm": wm, "mask": mask, **_gd_structures(gm, wm, mask, depth, t1.affine), "depth": depth}
    return tuple(nifti_to_sitk(t1, arrays[name]) for name in CHANNELS)


@lru_cache(maxsize=4)
def template_arrays(spacing: float) -> tuple[np.ndarray, ...]:
    """Template channels as (z, y, x) arrays, low-pass filtered for sampling a ``spacing`` mm grid."""
    channels = template_channels()
    sigma = 0.4 * spacing if spacing > 1.2 else 0.0  # anti-aliasing before sampling a coarser grid
    if sigma > 0:
        channels = tuple(sitk.SmoothingRecursiveGaussian(c, sigma) for c in channels)
    return tuple(sitk.GetArrayFromImage(c) for c in channels)


@dataclass(frozen=True)
class Warp:
    """Per-case pose and shape change from the phantom's T1 grid into template space."""

    transform: sitk.Transform
    rotation_deg: tuple[float, float, float]
    scale: tuple[float, float, float]
    shift_mm: tuple[float, float, float]
    elastic_mm: float

    def params(self) -> dict[str, object]:
        """Drawn values for the case's parameter file."""
        return {"rotation_deg": list(self.rotation_deg), "scale": list(self.scale), "shift_mm": list(self.shift_mm),
                "elastic_rms_mm": self.elastic_mm}


def output_grid(rng: np.random.Generator, spacing: float) -> sitk.Image:
    """An empty image holding the geometry of one case's T1 grid (axis-aligned LPS, random scanner origin)."""
    size = [int(round(f / spacing)) for f in FIELD_OF_VIEW]
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing((spacing,) * 3)
    centre = rng.uniform(-15.0, 15.0, size=3) + np.array([0.0, 15.0, 10.0])
    grid.SetOrigin(tuple(float(c - (n - 1) * spacing / 2.0) for c, n in zip(centre, size)))
    return grid


def grid_centre(grid: sitk.Image) -> np.ndarray:
    """Physical (LPS) centre of an image's voxel grid."""
    return np.array(grid.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in grid.GetSize()]))


def draw_warp(rng: np.random.Generator, grid: sitk.Image, elastic: bool = True) -> Warp:
    """Random rotation, anisotropic scaling, shift and smooth B-spline deformation for one case."""
    rotation = rng.uniform(-1.0, 1.0, size=3) * np.array([8.0, 6.0, 6.0])  # pitch varies most
    scale = rng.uniform(0.93, 1.05, size=3)
    shift = rng.uniform(-4.0, 4.0, size=3)
    affine = sitk.Euler3DTransform()
    affine.SetRotation(*np.deg2rad(rotation))
    matrix = np.array(affine.GetMatrix()).reshape(3, 3) @ np.diag(1.0 / scale)
    centre = grid_centre(grid)
    template_centre = _RAS_TO_LPS @ _BRAIN_CENTRE_RAS
    pose = sitk.AffineTransform(3)
    pose.SetMatrix(tuple(matrix.ravel()))
    pose.SetCenter(tuple(centre))
    pose.SetTranslation(tuple(template_centre - centre + shift))
    transform = sitk.CompositeTransform(3)
    transform.AddTransform(pose)
    rms = 0.0
    if elastic:
        # A coarse control mesh over the field of view: smooth, brain-scale shape differences.
        domain = sitk.Image([8, 8, 8], sitk.sitkUInt8)
        domain.SetSpacing(tuple(f / 7.0 for f in FIELD_OF_VIEW))
        domain.SetOrigin(grid.GetOrigin())
        bspline = sitk.BSplineTransformInitializer(domain, [4, 4, 4], 3)
        rms = float(rng.uniform(1.5, 3.5))
        coefficients = rng.normal(0.0, rms, size=len(bspline.GetParameters()))
        bspline.SetParameters(tuple(coefficients))
        transform.AddTransform(bspline)  # applied first: composite transforms run last-added first
    return Warp(_as_displacement_field(transform, grid), tuple(rotation.tolist()), tuple(scale.tolist()),
                tuple(shift.tolist()), rms)


def _as_displacement_field(transform: sitk.Transform, grid: sitk.Image, field_spacing: float = 6.0) -> sitk.Transform:
    """Sample a smooth transform on a coarse grid: B-spline evaluation per voxel is far too slow at 1 mm."""
    spacing = np.array(grid.GetSpacing())
    extent = spacing * (np.array(grid.GetSize()) - 1)
    size = [int(np.ceil(e / field_spacing)) + 3 for e in extent]
    origin = np.array(grid.GetOrigin()) - field_spacing
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, size, tuple(origin),
                                              (field_spacing,) * 3, grid.GetDirection())
    return sitk.DisplacementFieldTransform(field)


def warped_anatomy(grid: sitk.Image, warp: Warp) -> dict[str, np.ndarray]:
    """Resample the template stack onto ``grid`` through ``warp``; returns (z, y, x) float32 arrays.

    SimpleITK turns the warp into a dense displacement field once; the channels are then sampled with
    trilinear interpolation at those points, all but the brain mask only where the mask is non-zero.
    Per-channel ``sitk.Resample`` re-evaluates the transform for every channel and was about 4x slower
    per core (and vector images 10x slower) at 1 mm.
    """
    field = sitk.TransformToDisplacementField(warp.transform, sitk.sitkVectorFloat32, grid.GetSize(),
                                              grid.GetOrigin(), grid.GetSpacing(), grid.GetDirection())
    displacement = sitk.GetArrayViewFromImage(field)
    index = [np.arange(n, dtype=np.float32) for n in grid.GetSize()]
    direction = np.array(grid.GetDirection()).reshape(3, 3) * np.array(grid.GetSpacing())
    reference = template_channels()[0]
    offset = np.array(grid.GetOrigin()) - np.array(reference.GetOrigin())
    physical = [np.float32(offset[a]) + np.float32(direction[a, 0]) * index[0][None, None, :]
                + np.float32(direction[a, 1]) * index[1][None, :, None]
                + np.float32(direction[a, 2]) * index[2][:, None, None] + displacement[..., a] for a in range(3)]
    to_index = np.linalg.inv(np.array(reference.GetDirection()).reshape(3, 3) * np.array(reference.GetSpacing()))
    # Continuous template index (k, j, i) of every output voxel: map_coordinates wants the array's axis order.
    points = np.stack([sum(np.float32(to_index[axis, a]) * physical[a] for a in range(3) if to_index[axis, a] != 0)
                       for axis in (2, 1, 0)]).reshape(3, -1)
    arrays = dict(zip(CHANNELS, template_arrays(float(grid.GetSpacing()[0]))))
    shape = tuple(grid.GetSize()[::-1])

    def sample(array: np.ndarray, at: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(array, at, order=1, mode="constant", cval=0.0, prefilter=False)

    mask = sample(arrays["mask"], points)
    inside = np.flatnonzero(mask > 0)
    at = points[:, inside]
    out = {"mask": mask.reshape(shape).astype(np.float32)}
    others = [name for name in CHANNELS if name != "mask"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for name, values in zip(others, pool.map(lambda n: sample(arrays[n], at), others)):
            full = np.zeros(mask.size, np.float32)
            full[inside] = values
            out[name] = full.reshape(shape)
    return out
