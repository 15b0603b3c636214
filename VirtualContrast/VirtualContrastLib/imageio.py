"""Reading and writing volumes: validated 3D float32 images in, atomically written files out.

``read_image`` accepts NIfTI, NRRD, MetaImage and DICOM series directories and refuses, with a
one-line :class:`InputError`, anything the engine cannot use: missing, unreadable, cut short, not 3D,
NaN/Inf, empty or constant, an absurd voxel spacing or size, a sheared (non-orthonormal) direction,
a DICOM series with a missing or uneven slice. :func:`check_image` applies the same image checks to
images handed to the engine directly (Slicer, training). ``write_images`` writes through temporary
files in the target folders, reads each back and compares it with what was meant to be written
(a full disk truncates files without an error from ITK's NIfTI writer), and renames them only when
all are right, so a failure leaves nothing behind; synthetic images are tagged in the metadata.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
import SimpleITK as sitk

from . import INTENDED_USE
from .errors import InputError
from .fileutil import atomic_writes

log = logging.getLogger(__name__)

#: Output extensions ``write_image`` accepts: single-file formats only, so the rename is atomic.
WRITABLE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")

#: Short enough for the 80-byte NIfTI ``descrip`` field, and ASCII so it survives every format.
SYNTHETIC_DESCRIPTION = "SYNTHETIC CE-T1 VirtualContrast - research use only"

#: Metadata keys written into NRRD / MetaImage headers (NIfTI keeps only ``descrip``).
SYNTHETIC_KEY = "VirtualContrast_synthetic"
DESCRIPTION_KEY = "VirtualContrast_description"
INTENDED_USE_KEY = "VirtualContrast_intended_use"

#: Voxel spacings (mm) outside this range are not a brain MRI (and a tiny one makes millimetre-sized
#: operations such as the mask's closing cost millions of voxels each).
SPACING_RANGE_MM = (0.1, 20.0)

#: At most 2**28 voxels (1 GiB as float32): four times a 0.5 mm whole-head 7T scan.
MAX_VOXELS = 2**28

#: Largest deviation of the direction matrix from orthonormal (D^T D = I) that is taken as round-off.
DIRECTION_TOLERANCE = 1e-4

#: Slice gaps in a DICOM series may differ from the median by this fraction (round-off in the tags).
SLICE_GAP_TOLERANCE = 0.01

#: NIfTI datatype codes of floating-point voxels (the only ones that can hold NaN/Inf).
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


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
    files = dicom_series_files(directory)
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    # ITK's multi-line warning about uneven slices is replaced by the one-line refusal below.
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        image = reader.Execute()
    except RuntimeError:
        raise InputError(f"cannot read the DICOM series in {directory}: the files are damaged or not one volume") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
    _check_slice_positions(reader, len(files), image, directory)
    return image


def _check_slice_positions(reader: sitk.ImageSeriesReader, count: int, image: sitk.Image, directory: Path) -> None:
    """Refuse a series whose slices are not evenly spaced (ITK only warns and averages the gap)."""
    normal = np.array(image.GetDirection()).reshape(3, 3)[:, 2]
    try:
        depths = np.array([np.dot(normal, [float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")]) for i in range(count)])
    except (RuntimeError, ValueError):
        raise InputError(f"the DICOM series in {directory} has slices without a readable position (ImagePositionPatient)") from None
    if depths.size < 2:
        return
    if np.any(np.diff(np.sort(depths)) < 1e-3):
        raise InputError(f"the DICOM series in {directory} has two or more slices at the same position; give one volume per folder")
    gaps = np.abs(np.diff(depths))
    typical = float(np.median(gaps))
    uneven = np.abs(gaps - typical) > SLICE_GAP_TOLERANCE * typical
    if np.any(uneven):
        worst = float(gaps[np.argmax(np.abs(gaps - typical))])
        raise InputError(
            f"the DICOM series in {directory} is not evenly spaced: slices are {typical:.2f} mm apart except "
            f"{int(uneven.sum())} gap(s) (the worst {worst:.2f} mm): a missing or damaged slice?"
        )


def _nifti_files(path: Path) -> tuple[Path, Path]:
    """(header file, voxel data file) of a NIfTI/Analyze image: one file, or a .hdr/.img pair."""
    name = path.name
    for header_ext, data_ext in ((".hdr", ".img"), (".hdr.gz", ".img.gz")):
        if name.lower().endswith(data_ext):
            return path.with_name(name[: -len(data_ext)] + header_ext), path
        if name.lower().endswith(header_ext):
            return path, path.with_name(name[: -len(header_ext)] + data_ext)
    return path, path


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _nifti_layout(header: bytes) -> tuple[str, int, int, int, bool]:
    """(byte order, datatype, voxel data bytes, data offset, single file) from a NIfTI-1/2 or Analyze header."""
    for order in "<>":
        size = struct.unpack(order + "i", header[:4])[0] if len(header) >= 4 else 0
        if size == 348 and len(header) >= 348:
            dims = struct.unpack(order + "8h", header[40:56])
            datatype, bitpix = struct.unpack(order + "2h", header[70:74])
            offset, magic = int(struct.unpack(order + "f", header[108:112])[0]), header[344:347]
        elif size == 540 and len(header) >= 540:
            datatype, bitpix = struct.unpack(order + "2h", header[12:16])
            dims = struct.unpack(order + "8q", header[16:80])
            offset, magic = struct.unpack(order + "q", header[168:176])[0], header[4:7]
        else:
            continue
        voxels = int(np.prod([max(int(d), 1) for d in dims[1 : 1 + min(max(int(dims[0]), 0), 7)]]))
        single = magic in (b"n+1", b"n+2")
        if single:  # as the NIfTI library does: data never starts inside the header
            offset = max(offset, size + 4)
        return order, datatype, voxels * max(int(bitpix), 0) // 8, offset, single
    raise ValueError("not a NIfTI header")


def _check_nifti_data(path: Path) -> None:
    """Refuse a NIfTI file whose voxel data is cut short, damaged or holds NaN/Inf.

    ITK's NIfTI reader reads a truncated file without error (the missing voxels become 0) and
    turns NaN into 0, so both are checked on the file itself.
    """
    header_file, data_file = _nifti_files(path)
    try:
        with _open(header_file) as handle:
            order, datatype, expected, offset, single = _nifti_layout(handle.read(540))
        if single:
            data_file = header_file
        dtype = np.dtype(order + _NIFTI_FLOATS[datatype]) if datatype in _NIFTI_FLOATS else None
        got, carry = 0, b""
        with _open(data_file) as handle:
            handle.seek(offset)
            while got < expected:
                chunk = handle.read(min(1 << 22, expected - got))
                if not chunk:
                    break
                got += len(chunk)
                if dtype is not None:
                    buffer = carry + chunk
                    usable = len(buffer) - len(buffer) % dtype.itemsize
                    if not np.all(np.isfinite(np.frombuffer(buffer[:usable], dtype))):
                        raise InputError(f"{path.name} contains NaN or infinite voxel values")
                    carry = buffer[usable:]
            handle.read()  # to the end, so gzip checks its CRC and length trailer
    except (OSError, EOFError, zlib.error, struct.error, ValueError):
        raise InputError(f"{path.name} is damaged or cut short: its header or data cannot be read to the end") from None
    if got < expected:
        raise InputError(f"{path.name} is cut short: its header promises {expected} bytes of voxel data, the file holds {got}")


def _as_3d(image: sitk.Image) -> sitk.Image:
    """Drop a trailing time axis of length 1 (a 3D volume saved as 4D)."""
    size = image.GetSize()
    if image.GetDimension() == 4 and size[3] == 1:
        return sitk.Extract(image, size=(*size[:3], 0), index=(0, 0, 0, 0))
    return image


def check_image(image: sitk.Image, name: str, mask: bool = False) -> None:
    """Refuse (:class:`InputError`, one line) an image the engine cannot use; ``name`` labels the message.

    The checks of :func:`read_image`, for images handed to the engine without a file (Slicer, training).
    A ``mask`` may be constant (all ones) but not empty.
    """
    size = image.GetSize()
    shape = "x".join(map(str, size))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name} is a vector/multi-component image ({image.GetNumberOfComponentsPerPixel()} components); give one 3D scalar volume")
    if image.GetDimension() != 3:
        raise InputError(f"{name} is {image.GetDimension()}D (size {shape}); a 3D volume is needed")
    if min(size) < 2:
        raise InputError(f"{name} is a single slice (size {shape}); a 3D volume is needed")
    spacing = image.GetSpacing()
    low, high = SPACING_RANGE_MM
    if not all(low <= s <= high for s in spacing):
        raise InputError(f"{name} has voxel spacing {' x '.join(f'{s:g}' for s in spacing)} mm; spacings from {low:g} to {high:g} mm are accepted (check the header's units)")
    if int(np.prod(size, dtype=np.int64)) > MAX_VOXELS:
        raise InputError(f"{name} has {shape} voxels, more than the {MAX_VOXELS} this tool handles; resample it first")
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=DIRECTION_TOLERANCE):
        raise InputError(f"{name} has a sheared (non-orthonormal) direction matrix; outputs could not stay on its grid (NIfTI cannot store it): resample it onto an orthonormal grid first")
    array = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or infinite voxel values")
    if not np.any(array):
        raise InputError(f"{name} is empty (every voxel is 0)")
    if not mask and array.min() == array.max():
        raise InputError(f"{name} is constant (every voxel is {array.flat[0]}): it carries no image")


def read_image(path: str | os.PathLike, mask: bool = False) -> sitk.Image:
    """Read and validate (:func:`check_image`) one 3D volume, file or DICOM folder, as float32 (UInt8 0/1 when ``mask``)."""
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
        if sitk.ImageFileReader.GetImageIOFromFileName(str(path)) == "NiftiImageIO":
            _check_nifti_data(path)
    image = _as_3d(image)
    check_image(image, path.name, mask=mask)
    if mask:
        return sitk.Cast(image > 0, sitk.sitkUInt8)
    return sitk.Cast(image, sitk.sitkFloat32)


def _nearest_existing(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path(path.anchor or ".")


def check_output_path(path: str | os.PathLike) -> Path:
    """Refuse, before any work is done, an output path ``write_image`` could not write.

    The folder (or, when it does not exist yet, the nearest existing folder above it) must accept a
    new file: a probe file is created and removed, which also catches read-only mounts and root.
    """
    path = Path(path)
    if _extension(path) not in WRITABLE_EXTENSIONS:
        raise InputError(f"cannot write {path.name}: unsupported extension; use one of {', '.join(WRITABLE_EXTENSIONS)}")
    if path.is_dir():
        raise InputError(f"output {path} is a folder; give a file name")
    folder = _nearest_existing(path)
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise InputError(f"cannot write {path}: the folder {folder} is not writable ({error.strerror})") from None
    return path


def _tagged(image: sitk.Image, synthetic: bool, description: str | None) -> sitk.Image:
    """A copy of ``image`` with the input's metadata replaced by the synthetic tags and description."""
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
    return image


def _write_and_verify(image: sitk.Image, tmp: Path, path: Path) -> None:
    """Write ``image`` to ``tmp`` and read it back: a short write (full disk) must not pass as success."""
    sitk.WriteImage(image, str(tmp), useCompression=True)
    try:
        if _extension(path).startswith(".nii"):
            _check_nifti_data(tmp)
        back = sitk.ReadImage(str(tmp))
    except (InputError, RuntimeError):
        back = None
    same = back is not None and (
        back.GetSize() == image.GetSize()
        and np.allclose(back.GetSpacing(), image.GetSpacing(), rtol=1e-5, atol=1e-5)
        and np.allclose(back.GetOrigin(), image.GetOrigin(), rtol=1e-5, atol=1e-4)
        and np.allclose(back.GetDirection(), image.GetDirection(), atol=DIRECTION_TOLERANCE)
        and np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
    )
    if not same:
        raise InputError(f"cannot write {path}: the file read back is incomplete or differs from the image (disk full, or a grid the format cannot store)")


def write_images(items: Sequence[tuple[sitk.Image, str | os.PathLike, str | None]], synthetic: bool = True) -> list[Path]:
    """Write every ``(image, path, description)`` or none: each is verified by reading it back before any is renamed into place.

    On failure no output file (and no folder this call created) is left behind, and earlier files
    at those paths are untouched. Images are tagged synthetic in the files' metadata unless ``synthetic`` is false.
    """
    paths = [check_output_path(path) for _, path, _ in items]
    created = [p for p in dict.fromkeys(parent for path in paths for parent in [path.parent, *path.parent.parents]) if not p.exists()]
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writes(paths, [_extension(p) for p in paths]) as temps:
            for (image, _, description), tmp, path in zip(items, temps, paths):
                _write_and_verify(_tagged(image, synthetic, description), tmp, path)
    except (OSError, RuntimeError) as error:
        _remove_empty(created)
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise InputError(f"cannot write {', '.join(map(str, paths))}: {detail[:200]}") from None
    except BaseException:
        _remove_empty(created)
        raise
    return paths


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed write created (deepest first), if they are still empty."""
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:  # not empty or already gone: leave it
            pass


def write_image(image: sitk.Image, path: str | os.PathLike, synthetic: bool = True, description: str | None = None) -> Path:
    """Write one image atomically and verified (see :func:`write_images`), tagged synthetic unless told otherwise."""
    return write_images([(image, path, description)], synthetic=synthetic)[0]


def is_synthetic(path: str | os.PathLike) -> bool:
    """True when the file's header carries the VirtualContrast synthetic tag."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    keys = set(reader.GetMetaDataKeys())
    if SYNTHETIC_KEY in keys:
        return reader.GetMetaData(SYNTHETIC_KEY) == "true"
    return "descrip" in keys and reader.GetMetaData("descrip").startswith("SYNTHETIC")
