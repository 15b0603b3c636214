"""From user images to network input and back: T1 grid, brain mask, normalization, working grid.

Every input is resampled onto the T1 grid in physical space (the T1 defines the output grid),
a brain mask is taken from the user or computed, and each image is normalized with
:func:`VirtualContrastLib.normalization.normalize`. The network then works on an axial-slab
grid: the T1 grid reoriented with ``sitk.DICOMOrient`` to LPS (so array axis 0 runs inferior →
superior and slabs are axial), cropped to the brain bounding box plus a margin and padded
in-plane to the network's multiple. :class:`WorkingGrid` maps arrays to that grid and back onto
the T1 grid exactly (no interpolation: reorientation only permutes and flips axes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from .errors import GeometryError, InputError, MissingModalityError
from .normalization import intensity_range, normalize
from .options import MIN_OVERLAP

#: Orientation of the working grid: numpy axis 0 = S–I (slab axis), 1 = A–P, 2 = L–R.
WORKING_ORIENTATION = "LPS"

#: Voxels kept around the brain bounding box (slab axis, A–P, L–R) so convolutions near the
#: brain edge see the same zero background as on the whole volume.
CROP_MARGIN = (1, 16, 16)

#: A T1 with at least this fraction of voxels exactly 0 is treated as skull-stripped.
SKULL_STRIPPED_ZERO_FRACTION = 0.2


def resample_to_reference(moving: sitk.Image, reference: sitk.Image, interpolator: int = sitk.sitkLinear, default_value: float = 0.0) -> sitk.Image:
    """Resample ``moving`` onto ``reference``'s grid in physical space (identity transform)."""
    return sitk.Resample(moving, reference, sitk.Transform(), interpolator, default_value, moving.GetPixelID())


def coverage_fraction(moving: sitk.Image, reference: sitk.Image, region: sitk.Image) -> float:
    """Fraction of ``region`` voxels (on ``reference``'s grid) that lie inside ``moving``'s extent."""
    footprint = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    footprint.CopyInformation(moving)
    covered = sitk.GetArrayViewFromImage(resample_to_reference(footprint, reference, sitk.sitkNearestNeighbor)) > 0
    inside = sitk.GetArrayViewFromImage(region) > 0
    total = int(inside.sum())
    return float((covered & inside).sum()) / total if total else 0.0


#: Most voxels a morphological radius may span: a ball's cost grows with the cube of its radius,
#: so on very fine grids (0.1 mm: 20 voxels for 2 mm) the closing is bounded rather than exact.
MAX_RADIUS_VOXELS = 6


def _radius_voxels(image: sitk.Image, millimetres: float) -> list[int]:
    return [min(MAX_RADIUS_VOXELS, max(1, int(round(millimetres / s)))) for s in image.GetSpacing()]


def is_skull_stripped(t1: sitk.Image) -> bool:
    """True when the T1 looks skull-stripped: at least 20 % of its voxels are exactly 0."""
    array = sitk.GetArrayViewFromImage(t1)
    return float(np.count_nonzero(array == 0)) / array.size >= SKULL_STRIPPED_ZERO_FRACTION


def default_brain_mask(t1: sitk.Image) -> sitk.Image:
    """Brain (or head) mask used when the user gives none, as UInt8 0/1 on the T1 grid.

    Skull-stripped T1 (see :func:`is_skull_stripped`): ``T1 > 0``, closed with a 2 mm ball (at most
    :data:`MAX_RADIUS_VOXELS` voxels) and with enclosed holes filled. Otherwise: Otsu threshold,
    largest connected component, closing and hole filling, which gives a head mask (skull included); give a brain mask for better
    normalization of such images.
    """
    radius = _radius_voxels(t1, 2.0)
    if is_skull_stripped(t1):
        mask = sitk.Cast(t1 > 0, sitk.sitkUInt8)
    else:
        foreground = sitk.OtsuThreshold(t1, 0, 1)
        mask = sitk.Cast(sitk.RelabelComponent(sitk.ConnectedComponent(foreground), sortByObjectSize=True) == 1, sitk.sitkUInt8)
    mask = sitk.BinaryMorphologicalClosing(mask, radius, sitk.sitkBall, 1)
    mask = sitk.BinaryFillhole(mask, fullyConnected=False, foregroundValue=1)
    if not np.any(sitk.GetArrayViewFromImage(mask)):
        raise InputError("could not find the brain in the T1 (the automatic mask is empty); give a brain mask")
    return sitk.Cast(mask, sitk.sitkUInt8)


def _plain_copy(image: sitk.Image, pixel_type: int) -> sitk.Image:
    """Cast and drop file metadata so nothing from the input header leaks into outputs."""
    image = sitk.Cast(image, pixel_type)
    for key in image.GetMetaDataKeys():
        image.EraseMetaData(key)
    return image


@dataclass
class WorkingGrid:
    """The axial-slab working grid of one T1: reorientation, crop and in-plane padding."""

    reference: sitk.Image
    oriented_reference: sitk.Image
    original_orientation: str
    crop: tuple[slice, slice, slice]
    shape: tuple[int, int, int]

    @classmethod
    def create(cls, reference: sitk.Image, mask: sitk.Image, in_plane_multiple: int = 1, margin: tuple[int, int, int] = CROP_MARGIN) -> "WorkingGrid":
        """Working grid of ``reference`` cropped to ``mask``'s bounding box + ``margin``, in-plane padded."""
        orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(reference.GetDirection())
        geometry = sitk.Image(reference.GetSize(), sitk.sitkUInt8)
        geometry.CopyInformation(reference)
        oriented = sitk.DICOMOrient(geometry, WORKING_ORIENTATION)
        oriented_mask = sitk.GetArrayViewFromImage(sitk.DICOMOrient(mask, WORKING_ORIENTATION)) > 0
        full = oriented_mask.shape
        nonzero = np.nonzero(oriented_mask)
        crop = tuple(
            slice(max(int(idx.min()) - m, 0), min(int(idx.max()) + 1 + m, n))
            for idx, m, n in zip(nonzero, margin, full)
        )
        depth = crop[0].stop - crop[0].start
        height, width = (-(-(s.stop - s.start) // in_plane_multiple) * in_plane_multiple for s in crop[1:])
        return cls(reference, oriented, orientation, crop, (depth, height, width))

    def to_working(self, image: sitk.Image) -> np.ndarray:
        """Array (D, H, W) of an image on the reference grid, reoriented, cropped and zero-padded."""
        array = sitk.GetArrayFromImage(sitk.DICOMOrient(image, WORKING_ORIENTATION))[self.crop]
        out = np.zeros(self.shape, dtype=array.dtype)
        out[: array.shape[0], : array.shape[1], : array.shape[2]] = array
        return out

    def to_reference(self, array: np.ndarray) -> sitk.Image:
        """Put a working-grid array (D, H, W) back onto the reference grid exactly (0 outside the crop)."""
        full = np.zeros(self.oriented_reference.GetSize()[::-1], dtype=np.float32)
        cropped = tuple(s.stop - s.start for s in self.crop)
        full[self.crop] = array[: cropped[0], : cropped[1], : cropped[2]]
        image = sitk.GetImageFromArray(full)
        image.CopyInformation(self.oriented_reference)
        image = sitk.DICOMOrient(image, self.original_orientation)
        if image.GetSize() != self.reference.GetSize() or not np.allclose(image.GetDirection(), self.reference.GetDirection(), atol=1e-6):
            raise RuntimeError("reorienting back to the T1 grid did not restore its axes")
        # The permutation is exact; copying the reference geometry removes float round-off.
        image.CopyInformation(self.reference)
        return image


@dataclass
class PreparedInputs:
    """Normalized network inputs on the working grid, and what is needed to map results back."""

    grid: WorkingGrid
    channels: dict[str, np.ndarray]
    mask: sitk.Image
    working_mask: np.ndarray
    t1_range: tuple[float, float]
    notes: list[str] = field(default_factory=list)


def prepare_inputs(
    images: dict[str, sitk.Image],
    normalization: dict[str, Any],
    brain_mask: sitk.Image | None = None,
    in_plane_multiple: int = 1,
    min_overlap: float = MIN_OVERLAP,
) -> PreparedInputs:
    """Resample every image onto the T1 grid, mask, normalize and move to the working grid."""
    if images.get("t1") is None:
        raise MissingModalityError("a pre-contrast T1 is required: every output lands on the T1 grid")
    t1 = _plain_copy(images["t1"], sitk.sitkFloat32)
    notes: list[str] = []
    if brain_mask is not None:
        mask = resample_to_reference(_plain_copy(brain_mask > 0, sitk.sitkUInt8), t1, sitk.sitkNearestNeighbor)
        if not np.any(sitk.GetArrayViewFromImage(mask)):
            raise GeometryError("the brain mask does not overlap the T1 in physical space")
    else:
        mask = default_brain_mask(t1)
        rule = "T1 > 0, skull-stripped input" if is_skull_stripped(t1) else "Otsu head mask"
        notes.append(f"brain mask computed automatically ({rule})")
    mask_array = sitk.GetArrayFromImage(mask) > 0
    grid = WorkingGrid.create(t1, mask, in_plane_multiple)
    t1_array = sitk.GetArrayViewFromImage(t1)
    channels: dict[str, np.ndarray] = {}
    for name, image in images.items():
        if image is None:
            continue
        if name == "t1":
            on_grid = t1
        else:
            covered = coverage_fraction(image, t1, mask)
            if covered < min_overlap:
                raise GeometryError(
                    f"the {name.upper()} covers only {covered:.0%} of the T1 brain (at least {min_overlap:.0%} needed): "
                    "the images do not overlap in physical space; check their origin and orientation"
                )
            if covered < 0.99:
                notes.append(f"the {name.upper()} covers {covered:.0%} of the T1 brain; the rest is treated as 0")
            on_grid = resample_to_reference(_plain_copy(image, sitk.sitkFloat32), t1, sitk.sitkLinear)
        normalized = normalize(sitk.GetArrayViewFromImage(on_grid), mask_array, normalization)
        normalized_image = sitk.GetImageFromArray(normalized)
        normalized_image.CopyInformation(t1)
        channels[name] = grid.to_working(normalized_image)
    return PreparedInputs(
        grid=grid,
        channels=channels,
        mask=mask,
        working_mask=grid.to_working(mask) > 0,
        t1_range=intensity_range(t1_array, mask_array, normalization),
        notes=notes,
    )
