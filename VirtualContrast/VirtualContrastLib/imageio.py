"""Reading and writing volumes: validated 3D float32 images in, atomically written files out.

``read_image`` accepts NIfTI, NRRD, MetaImage and DICOM series directories and refuses, with a
one-line :class:`InputError`, anything the engine cannot use (missing, unreadable, not 3D, NaN/Inf,
empty or constant). ``write_image`` writes through a temporary file in the target directory and
renames it, so a failure never leaves a partial file, and tags synthetic images in the metadata.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import INTENDED_USE
from .errors import InputError
from .fileutil import atomic_write

log = logging.getLogger(__name__)

#: Output extensions ``write_image`` accepts: single-file formats only, so the rename is atomic.
WRITABLE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")

#: Short enough for the 80-byte NIfTI ``descrip`` field, and ASCII so it survives every format.
SYNTHETIC_DESCRIPTION = "SYNTHETIC CE-T1 VirtualContrast - research use only"

#: Metadata keys written into NRRD / MetaImage headers (NIfTI keeps only ``descrip``).
SYNTHETIC_KEY = "VirtualContrast_synthetic"
DESCRIPTION_KEY = "VirtualContrast_description"
INTENDED_USE_KEY = "VirtualContrast_intended_use"


def _extension(path: Path) -> str:
    name = path.name.lower()
    for ext in WRITABLE_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def dicom_series_files(directory: Path) -> list[str]:
    """The files of the DICOM series ``read_image`` reads from ``directory``: the largest one, sorted."""
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(directory))
    if not series_ids:
        raise InputError(f"{directory} is a directory without a DICOM series (give a NIfTI/NRRD/MHA file or a DICOM series folder)")
    files_by_series = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(directory), sid) for sid in series_ids}
    chosen = max(series_ids, key=lambda sid: len(files_by_series[sid]))
    if len(series_ids) > 1:
        log.warning(
            "%s holds %d DICOM series; reading %s (%d files, the largest)",
            directory, len(series_ids), chosen, len(files_by_series[chosen]),
        )
    return list(files_by_series[chosen])


def _read_dicom_series(directory: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(dicom_series_files(directory))
    try:
        return reader.Execute()
    except RuntimeError:
        raise InputError(f"cannot read the DICOM series in {directory}: the files are damaged or not one volume") from None


def _as_3d(image: sitk.Image, path: Path) -> sitk.Image:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path.name} is a vector/multi-component image ({image.GetNumberOfComponentsPerPixel()} components); give one 3D scalar volume")
    size = image.GetSize()
    if image.GetDimension() == 4 and size[3] == 1:
        image = sitk.Extract(image, size=(*size[:3], 0), index=(0, 0, 0, 0))
        size = image.GetSize()
    if image.GetDimension() != 3:
        raise InputError(f"{path.name} is {image.GetDimension()}D (size {'x'.join(map(str, size))}); a 3D volume is needed")
    if min(size) < 2:
        raise InputError(f"{path.name} is a single slice (size {'x'.join(map(str, size))}); a 3D volume is needed")
    return image


def read_image(path: str | os.PathLike, mask: bool = False) -> sitk.Image:
    """Read and validate one 3D volume (file or DICOM directory) as float32, or UInt8 0/1 when ``mask``.

    Non-finite voxels are refused; ITK's NIfTI reader has already set them to 0 in NIfTI files.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        image = _read_dicom_series(path)
    else:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError:
            raise InputError(f"cannot read {path.name}: not a readable NIfTI, NRRD, MHA or DICOM image") from None
    image = _as_3d(image, path)
    array = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{path.name} contains NaN or infinite voxel values")
    if not np.any(array):
        raise InputError(f"{path.name} is empty (every voxel is 0)")
    if mask:
        return sitk.Cast(image > 0, sitk.sitkUInt8)
    if array.min() == array.max():
        raise InputError(f"{path.name} is constant (every voxel is {array.flat[0]}): it carries no image")
    return sitk.Cast(image, sitk.sitkFloat32)


def check_output_path(path: str | os.PathLike) -> Path:
    """Refuse, before any work is done, an output path ``write_image`` could not write."""
    path = Path(path)
    if _extension(path) not in WRITABLE_EXTENSIONS:
        raise InputError(f"cannot write {path.name}: unsupported extension; use one of {', '.join(WRITABLE_EXTENSIONS)}")
    if path.is_dir():
        raise InputError(f"output {path} is a folder; give a file name")
    return path


def write_image(image: sitk.Image, path: str | os.PathLike, synthetic: bool = True, description: str | None = None) -> Path:
    """Write ``image`` atomically (temp file + rename), tagging it synthetic in the file's metadata."""
    path = check_output_path(path)
    ext = _extension(path)
    image = sitk.Image(image)
    for key in image.GetMetaDataKeys():
        image.EraseMetaData(key)
    if synthetic:
        description = description or SYNTHETIC_DESCRIPTION
        image.SetMetaData(SYNTHETIC_KEY, "true")
        image.SetMetaData(INTENDED_USE_KEY, INTENDED_USE)
    if description:
        # NIfTI stores ITK_FileNotes in its 80-byte descrip field.
        image.SetMetaData("ITK_FileNotes", description.encode("ascii", "replace").decode()[:79])
        image.SetMetaData(DESCRIPTION_KEY, description)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, suffix=ext) as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=True)
    except (OSError, RuntimeError):
        raise InputError(f"cannot write {path}: the folder is not writable or the disk is full") from None
    return path


def is_synthetic(path: str | os.PathLike) -> bool:
    """True when the file's header carries the VirtualContrast synthetic tag."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    keys = set(reader.GetMetaDataKeys())
    if SYNTHETIC_KEY in keys:
        return reader.GetMetaData(SYNTHETIC_KEY) == "true"
    return "descrip" in keys and reader.GetMetaData("descrip").startswith("SYNTHETIC")
