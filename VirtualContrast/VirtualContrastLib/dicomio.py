"""DICOM output: the synthetic CE-T1 and the subtraction map as classic MR series, labelled SYNTHETIC.

Each output becomes one folder of single-slice MR Image Storage files on the T1's grid (one file
per slice of the T1's third axis, position and orientation per slice). When the T1 came from a
DICOM series, its patient and study identifiers and its frame of reference are copied so PACS
files the synthetic series into the same study and viewers overlay it on the T1; otherwise a new
study and frame of reference are made up and the patient name and ID are the case's name. Of
:data:`REQUIRED_KEYWORDS`, what a DICOM T1 lacks is made up the same way (and a note says so). Every
series gets new Series/SOP Instance UIDs, ``ImageType`` DERIVED\\SECONDARY, a ``SeriesDescription``
that begins with "SYNTHETIC" and the intended-use statement in ``ImageComments``.

pydicom writes the files: SimpleITK's GDCM writer picks the SOP class itself (asked for MR Image
Storage it writes Enhanced MR with functional groups), which many PACS and viewers handle poorly.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from . import INTENDED_USE, __version__
from .errors import InputError

#: Identifiers copied from a DICOM T1: patient, study and frame of reference (by pydicom keyword).
COPIED_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientWeight",
    "StudyInstanceUID", "StudyID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription", "FrameOfReferenceUID", "PositionReferenceIndicator", "BodyPartExamined",
)

#: Identifiers every output series needs (PACS files series by patient ID and study, viewers overlay by frame
#: of reference): made up where the T1 does not provide them.
REQUIRED_KEYWORDS = ("PatientName", "PatientID", "StudyInstanceUID", "FrameOfReferenceUID")

#: Largest stored value of the signed 16-bit pixels; the rescale slope maps it to the image's extreme.
_INT16_MAX = 32767


@dataclass(frozen=True)
class DicomSeries:
    """One output series: its folder name, description (LO: at most 64 characters) and number."""

    folder: str
    description: str
    number: int


#: The series written, by output name. Series numbers are high so they sort after the acquired ones.
SERIES = {
    "synthetic": DicomSeries("synthetic-ce-t1", "SYNTHETIC CE-T1 VirtualContrast - research use only", 9001),
    "subtraction": DicomSeries("subtraction", "SYNTHETIC subtraction CE-T1 minus T1 - research only", 9002),
}


def check_dicom_out(path: str | os.PathLike) -> Path:
    """Refuse, before any work is done, a ``--dicom-out`` path that is an existing file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"DICOM output {path} is a file; give a folder")
    return path


def source_identifiers(t1_path: str | os.PathLike) -> dict[str, Any] | None:
    """Patient, study and frame-of-reference elements of a DICOM T1 folder; None when the T1 is a file."""
    import pydicom

    from .imageio import dicom_series_files

    t1_path = Path(t1_path)
    if not t1_path.is_dir():
        return None
    header = pydicom.dcmread(dicom_series_files(t1_path)[0], stop_before_pixels=True)
    return {keyword: header.data_element(keyword).value for keyword in COPIED_KEYWORDS if keyword in header}


def _made_up_identifiers(case_id: str) -> dict[str, Any]:
    """A new study and frame of reference, patient name and ID ``case_id``."""
    from pydicom.uid import generate_uid

    now = datetime.datetime.now()
    return {
        "PatientName": case_id, "PatientID": case_id, "StudyInstanceUID": generate_uid(),
        "FrameOfReferenceUID": generate_uid(), "StudyDate": now.strftime("%Y%m%d"), "StudyTime": now.strftime("%H%M%S"),
        "StudyDescription": "VirtualContrast synthesis (T1 was not DICOM)",
    }


def identifiers_for(t1_path: str | os.PathLike, case_id: str) -> tuple[dict[str, Any], str | None]:
    """The DICOM T1's identifiers (what it lacks of :data:`REQUIRED_KEYWORDS` made up), or made-up ones
    (patient name and ID ``case_id``); and a note when anything was made up."""
    copied = source_identifiers(t1_path)
    made_up = _made_up_identifiers(case_id)
    if copied is None:
        return made_up, (
            f"the T1 is not DICOM: the DICOM series got patient name and ID {case_id!r} and a new study and frame of reference"
        )
    missing = [keyword for keyword in REQUIRED_KEYWORDS if not str(copied.get(keyword) or "").strip()]
    if not missing:
        return copied, None
    given = ", ".join(f"{keyword} {case_id!r}" if keyword.startswith("Patient") else f"a new {keyword}" for keyword in missing)
    return {**copied, **{keyword: made_up[keyword] for keyword in missing}}, (
        f"the DICOM T1 has no {', '.join(missing)}: the DICOM series got {given}"
    )


def _ds(value: float) -> str:
    """A decimal string (DS) of at most 16 characters, as precise as that allows."""
    for digits in range(12, 5, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"{value} does not fit a DICOM decimal string")


def _rescale(array: np.ndarray) -> tuple[np.ndarray, str]:
    """Signed 16-bit stored values and the rescale slope (as written) that maps them back to ``array``."""
    peak = float(np.abs(array).max())
    integral = np.array_equal(array, np.round(array)) and peak <= _INT16_MAX
    slope = "1" if integral or peak == 0.0 else _ds(peak / _INT16_MAX)
    stored = np.clip(np.round(array / float(slope)), -_INT16_MAX, _INT16_MAX).astype("<i2")
    return stored, slope


def write_series(
    image: sitk.Image, folder: Path, series: DicomSeries, identifiers: dict[str, Any], derivation: str,
) -> list[Path]:
    """Write ``image`` as one MR file per slice into ``folder`` (which must exist); returns the files."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID, generate_uid

    direction = np.array(image.GetDirection()).reshape(3, 3)
    row, column = direction[:, 0], direction[:, 1]
    spacing = image.GetSpacing()
    stored, slope = _rescale(sitk.GetArrayViewFromImage(image))
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    series_uid = generate_uid()
    files = []
    for k in range(image.GetDepth()):
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 192"
        for keyword, value in identifiers.items():
            setattr(ds, keyword, value)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality = "MR"
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, series.number, series.description
        ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = date
        ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = time
        ds.ImageComments = INTENDED_USE
        ds.DerivationDescription = derivation
        ds.Manufacturer, ds.SoftwareVersions = "VirtualContrast", __version__
        ds.BurnedInAnnotation = "NO"
        # MR Image module: a synthetic image has no pulse sequence; RM (research mode) says so.
        ds.ScanningSequence, ds.SequenceVariant = "RM", "NONE"
        ds.ScanOptions = ds.MRAcquisitionType = ds.EchoTime = ds.EchoTrainLength = None
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row, *column)]
        ds.SliceLocation = _ds(float(np.dot(position, np.cross(row, column))))
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # (between rows, between columns)
        ds.SliceThickness = ds.SpacingBetweenSlices = _ds(spacing[2])
        ds.Rows, ds.Columns = image.GetHeight(), image.GetWidth()
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", slope, "US"
        ds.PixelData = stored[k].tobytes()
        path = folder / f"IM{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def write_dicom_outputs(
    images: dict[str, sitk.Image], out_dir: str | os.PathLike, identifiers: dict[str, Any], derivation: str,
) -> dict[str, Path]:
    """Write each image (keys of :data:`SERIES`) as a series folder under ``out_dir``; returns the folders.

    The series are written into a temporary folder beside their targets and moved into place only
    when every file of every series is written; an existing series folder of the same name is replaced.
    """
    out_dir = check_dicom_out(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".dicom-", dir=out_dir))
    except OSError:
        raise InputError(f"cannot write DICOM into {out_dir}: the folder is not writable") from None
    try:
        for name, image in images.items():
            (staging / SERIES[name].folder).mkdir()
            write_series(image, staging / SERIES[name].folder, SERIES[name], identifiers, derivation)
        written = {}
        for name in images:
            target = out_dir / SERIES[name].folder
            if target.exists():
                target.rename(staging / f"old-{target.name}")
            (staging / SERIES[name].folder).rename(target)
            written[name] = target
        return written
    except OSError:
        raise InputError(f"cannot write DICOM into {out_dir}: the folder is not writable or the disk is full") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
