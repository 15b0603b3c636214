"""``--dicom-out``: synthetic series read back with SimpleITK and pydicom (geometry, values, labels, identifiers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from VirtualContrastLib import INTENDED_USE
from VirtualContrastLib.checkpoints import save_checkpoint
from VirtualContrastLib.cli import main
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.dicomio import SERIES
from VirtualContrastLib.networks import build_network
from VirtualContrastLib.report import RunReport

SOURCE_TAGS = {
    "0010|0010": "Doe^Jane", "0010|0020": "PID-0042", "0020|000d": "1.2.826.0.1.3680043.2.1125.7.1",
    "0020|0052": "1.2.826.0.1.3680043.2.1125.7.2", "0008|0050": "ACC-9", "0008|0020": "20240102",
}
SOURCE_SERIES_UID = "1.2.826.0.1.3680043.2.1125.7.3"


def oblique_head(shape=(10, 18, 14), spacing=(1.1, 0.9, 3.0), seed=0) -> sitk.Image:
    """Skull-stripped ellipsoid 'brain' on an oblique, anisotropic grid (rotated about two axes)."""
    z, y, x = (np.indices(shape) + 0.5) / np.array(shape)[:, None, None, None] - 0.5
    inside = (z / 0.45) ** 2 + (y / 0.45) ** 2 + (x / 0.45) ** 2 < 1
    array = np.where(inside, 100 + 30 * np.random.default_rng(seed).random(shape), 0).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 20.25, -7.0))
    rotation = sitk.VersorTransform((0.3, 0.1, 0.95), 0.35)
    image.SetDirection(rotation.GetMatrix())
    return image


def write_source_series(image: sitk.Image, folder: Path) -> None:
    """An acquired-looking T1 DICOM series (SimpleITK's writer, not the code under test)."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    for k in range(image.GetDepth()):
        item = image[:, :, k]
        tags = {
            **SOURCE_TAGS, "0008|0060": "MR", "0020|000e": SOURCE_SERIES_UID, "0008|0018": f"{SOURCE_SERIES_UID}.{k + 1}",
            "0020|0037": "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0013": str(k + 1), "0018|0050": str(image.GetSpacing()[2]),
        }
        for key, value in tags.items():
            item.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"t1_{k:03d}.dcm"))
        writer.Execute(item)


@pytest.fixture
def case(tmp_path, monkeypatch) -> Path:
    """A T1 as DICOM series and as NIfTI (same grid), a T2 on another grid, a tiny T1+T2 checkpoint."""
    t1 = oblique_head()
    write_source_series(t1, tmp_path / "t1_dicom")
    sitk.WriteImage(sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "t1_dicom"))), str(tmp_path / "t1.nii.gz"))
    t2 = oblique_head(shape=(12, 20, 16), spacing=(1.0, 1.0, 2.5), seed=1)
    sitk.WriteImage(sitk.Cast(t2, sitk.sitkFloat32) * 2.5, str(tmp_path / "t2.nii.gz"))
    # Seed 1: a random width-4 network whose prediction is not flat, so the subtraction map is not all 0.
    torch.manual_seed(1)
    config = ModelConfig(architecture="hrfcn", arch_kwargs={"width": 4}, inputs=["t1", "t2"])
    save_checkpoint(tmp_path / "tiny.pt", config, build_network(config).state_dict())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_synthesize(t1: str, *extra: str) -> int:
    return main(["synthesize", "--t1", t1, "--t2", "t2.nii.gz", "-o", "out/synthetic.nii.gz", "--subtraction", "out/sub.nii.gz",
                 "--model", "tiny.pt", "--device", "cpu", "--precision", "fp32", "--quiet", *extra])


def read_series(folder: Path) -> tuple[sitk.Image, list[pydicom.Dataset]]:
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    assert len(files) == len(list(folder.iterdir())), "one series per folder"
    return sitk.ReadImage(files), [pydicom.dcmread(f) for f in files]


def assert_same_grid(image: sitk.Image, reference: sitk.Image) -> None:
    # DICOM stores positions and cosines as decimal strings of at most 16 characters.
    assert image.GetSize() == reference.GetSize()
    assert np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-5)
    assert np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-5)
    assert np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-7)


def check_series(out: Path, t1: sitk.Image) -> dict[str, list[pydicom.Dataset]]:
    """Geometry, values and labels of both series; returns their datasets by output name."""
    datasets = {}
    for name, nifti in (("synthetic", "out/synthetic.nii.gz"), ("subtraction", "out/sub.nii.gz")):
        image, headers = read_series(out / SERIES[name].folder)
        assert_same_grid(image, t1)
        expected = sitk.GetArrayFromImage(sitk.ReadImage(nifti))
        assert np.abs(expected).max() > 0
        assert np.allclose(sitk.GetArrayFromImage(image), expected, atol=float(headers[0].RescaleSlope))
        for ds in headers:
            assert ds.SOPClassUID == pydicom.uid.MRImageStorage and ds.Modality == "MR"
            assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
            assert ds.SeriesDescription.startswith("SYNTHETIC") and ds.ImageComments == INTENDED_USE
            assert "tiny" in ds.DerivationDescription
        assert len({ds.SOPInstanceUID for ds in headers}) == len(headers)
        assert len({ds.SeriesInstanceUID for ds in headers}) == 1
        datasets[name] = headers
    assert datasets["synthetic"][0].SeriesInstanceUID != datasets["subtraction"][0].SeriesInstanceUID
    return datasets


def test_dicom_t1_gives_series_in_its_study_and_frame_on_its_grid(case, capsys):
    assert run_synthesize("t1_dicom", "--dicom-out", "dcm", "--report", "result.json") == 0
    assert "wrote DICOM series" in capsys.readouterr().out
    assert RunReport.read("result.json").outputs["dicom"] == "dcm"
    source = pydicom.dcmread(next((case / "t1_dicom").iterdir()))
    t1 = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(case / "t1_dicom")))
    for headers in check_series(case / "dcm", t1).values():
        for ds in headers:
            for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "AccessionNumber", "StudyDate"):
                assert ds.data_element(keyword).value == source.data_element(keyword).value
            assert ds.SeriesInstanceUID != SOURCE_SERIES_UID and ds.SOPInstanceUID not in {f"{SOURCE_SERIES_UID}.{k}" for k in range(1, 11)}


def test_nifti_t1_gets_made_up_identifiers_and_says_so(case, capsys):
    assert run_synthesize("t1.nii.gz", "--dicom-out", "dcm") == 0
    assert "the T1 is not DICOM" in capsys.readouterr().out
    datasets = check_series(case / "dcm", sitk.ReadImage("t1.nii.gz"))
    every = [ds for headers in datasets.values() for ds in headers]
    assert {(ds.PatientID, str(ds.PatientName)) for ds in every} == {("t1", "t1")}
    assert len({ds.StudyInstanceUID for ds in every}) == 1 and len({ds.FrameOfReferenceUID for ds in every}) == 1
    assert every[0].StudyInstanceUID != SOURCE_TAGS["0020|000d"]


def test_batch_writes_one_dicom_folder_per_case(case, capsys):
    cases = case / "cases" / "c1"
    cases.mkdir(parents=True)
    for source, suffix in (("t1.nii.gz", "t1n"), ("t2.nii.gz", "t2w")):
        (cases / f"c1-{suffix}.nii.gz").write_bytes((case / source).read_bytes())
    assert main(["batch", "--input-dir", "cases", "--out-dir", "results", "--model", "tiny.pt", "--device", "cpu",
                 "--precision", "fp32", "--dicom-out", "dcm"]) == 0
    image, headers = read_series(case / "dcm" / "c1" / SERIES["synthetic"].folder)
    assert_same_grid(image, sitk.ReadImage("t1.nii.gz"))
    assert headers[0].PatientID == "c1"


def test_dicom_out_that_is_a_file_is_refused_before_work(case, capsys):
    Path("dcm").write_text("not a folder", encoding="utf-8")
    assert run_synthesize("t1.nii.gz", "--dicom-out", "dcm") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a file" in err
    assert not Path("out").exists()
    assert main(["batch", "--input-dir", ".", "--out-dir", "results", "--model", "tiny.pt", "--dicom-out", "dcm"]) == 2
    assert "is a file" in capsys.readouterr().err and not Path("results").exists()


def test_dicom_t1_without_patient_id_and_study_uid_gets_them_made_up_and_says_so(case, capsys):
    # Issue 26: such a T1 gave series without them (not valid DICOM; a PACS rejects or mis-files them).
    for path in (case / "t1_dicom").iterdir():
        ds = pydicom.dcmread(path)
        del ds.PatientID, ds.StudyInstanceUID
        ds.save_as(path)
    assert run_synthesize("t1_dicom", "--dicom-out", "dcm", "--report", "result.json") == 0
    out = capsys.readouterr().out
    assert "note: the DICOM T1 has no PatientID, StudyInstanceUID: the DICOM series got PatientID 't1_dicom'" in out
    assert any("has no PatientID, StudyInstanceUID" in note for note in RunReport.read("result.json").notes)
    t1 = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(case / "t1_dicom")))
    every = [ds for headers in check_series(case / "dcm", t1).values() for ds in headers]
    assert {ds.PatientID for ds in every} == {"t1_dicom"} and {str(ds.PatientName) for ds in every} == {"Doe^Jane"}
    assert len({ds.StudyInstanceUID for ds in every}) == 1 and pydicom.uid.UID(every[0].StudyInstanceUID).is_valid
    # What the T1 has is still copied: its frame of reference, so viewers overlay the series on it.
    assert {ds.FrameOfReferenceUID for ds in every} == {SOURCE_TAGS["0020|0052"]}
