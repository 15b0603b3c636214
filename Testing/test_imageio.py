"""Reading and writing volumes: formats, DICOM series, validation messages, atomic writes, synthetic tags."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import SimpleITK as sitk

from VirtualContrastLib.errors import InputError
from VirtualContrastLib.fileutil import write_csv
from VirtualContrastLib.imageio import SYNTHETIC_DESCRIPTION, is_synthetic, read_image, write_image


def volume(shape=(6, 10, 12), spacing=(0.8, 0.9, 2.5), origin=(1.0, -2.0, 3.0), seed=0) -> sitk.Image:
    array = (np.random.default_rng(seed).random(shape) * 1000).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def write_dicom_series(image: sitk.Image, folder, series_uid: str, slices: int | None = None) -> None:
    """Write ``image`` as one DICOM file per slice with the tags a series reader needs."""
    image = sitk.Cast(image, sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    for i in range(image.GetDepth() if slices is None else slices):
        item = image[:, :, i]
        tags = {
            "0008|0060": "MR",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0037": "\\".join(map(str, (d[0], d[3], d[6], d[1], d[4], d[7]))),
            "0020|0032": "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, i)))),
            "0020|0013": str(i + 1),
            "0018|0050": str(image.GetSpacing()[2]),
            "0008|0018": f"{series_uid}.{i + 1}",
        }
        for key, value in tags.items():
            item.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{series_uid[-3:]}_{i:03d}.dcm"))
        writer.Execute(item)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_geometry_values_and_synthetic_tag(tmp_path, ext):
    image = volume()
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    path = write_image(image, tmp_path / f"out{ext}")
    back = read_image(path)
    assert back.GetPixelID() == sitk.sitkFloat32
    assert np.allclose(back.GetSpacing(), image.GetSpacing()) and np.allclose(back.GetOrigin(), image.GetOrigin())
    assert np.allclose(back.GetDirection(), image.GetDirection())
    assert np.allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert is_synthetic(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    if ext.startswith(".nii"):
        assert reader.GetMetaData("descrip") == SYNTHETIC_DESCRIPTION
    else:
        assert reader.GetMetaData("VirtualContrast_synthetic") == "true"
        assert "research" in reader.GetMetaData("VirtualContrast_intended_use").lower()
    assert os.listdir(tmp_path) == [path.name]


def test_non_synthetic_write_has_no_tag(tmp_path):
    path = write_image(volume(), tmp_path / "input.nrrd", synthetic=False, description="phantom T1")
    assert not is_synthetic(path)


def test_dicom_series_picks_the_largest_series_and_says_so(tmp_path, caplog):
    image = volume(shape=(6, 10, 12))
    write_dicom_series(image, tmp_path, "1.2.826.0.1.3680043.2.1125.100")
    write_dicom_series(volume(shape=(6, 10, 12), seed=1), tmp_path, "1.2.826.0.1.3680043.2.1125.200", slices=3)
    with caplog.at_level(logging.WARNING):
        back = read_image(tmp_path)
    assert back.GetSize() == image.GetSize()
    assert np.allclose(back.GetSpacing(), image.GetSpacing()) and np.allclose(back.GetOrigin(), image.GetOrigin())
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkInt16)))
    assert "2 DICOM series" in caplog.text and "1.2.826.0.1.3680043.2.1125.100" in caplog.text


def test_directory_without_dicom_is_refused(tmp_path):
    with pytest.raises(InputError, match="without a DICOM series"):
        read_image(tmp_path)


def _write_raw(image: sitk.Image, path) -> str:
    sitk.WriteImage(image, str(path))
    return str(path)


def bad_inputs(tmp_path) -> dict[str, tuple[str, str]]:
    """Bad input files and the message each must produce.

    NaN/Inf use NRRD and MHA: ITK's NIfTI reader already turns non-finite voxels into 0.
    """
    base = sitk.GetArrayFromImage(volume())
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not an image" * 10)
    nan, inf = base.copy(), base.copy()
    nan[2, 3, 4] = np.nan
    inf[1, 1, 1] = np.inf
    four_d = sitk.JoinSeries([volume(), volume(seed=2)])
    return {
        "missing": (str(tmp_path / "nope.nii.gz"), "file not found"),
        "unreadable": (str(garbage), "cannot read garbage.nii.gz"),
        "2d": (_write_raw(sitk.GetImageFromArray(base[0]), tmp_path / "slice.nii.gz"), "is 2D"),
        "single slice": (_write_raw(sitk.GetImageFromArray(base[:1]), tmp_path / "one.nrrd"), "single slice"),
        "4d": (_write_raw(four_d, tmp_path / "series.nii.gz"), "is 4D"),
        "vector": (_write_raw(sitk.Compose(volume(), volume(seed=3)), tmp_path / "vector.mha"), "vector"),
        "nan": (_write_raw(sitk.GetImageFromArray(nan), tmp_path / "nan.nrrd"), "NaN or infinite"),
        "inf": (_write_raw(sitk.GetImageFromArray(inf), tmp_path / "inf.mha"), "NaN or infinite"),
        "constant": (_write_raw(sitk.GetImageFromArray(np.full_like(base, 7.0)), tmp_path / "constant.nii.gz"), "is constant"),
        "empty": (_write_raw(sitk.GetImageFromArray(np.zeros_like(base)), tmp_path / "empty.nii.gz"), "is empty"),
    }


@pytest.mark.parametrize("case", ["missing", "unreadable", "2d", "single slice", "4d", "vector", "nan", "inf", "constant", "empty"])
def test_bad_input_gets_its_message(tmp_path, case):
    path, message = bad_inputs(tmp_path)[case]
    with pytest.raises(InputError, match=message) as info:
        read_image(path)
    assert "\n" not in str(info.value)


def test_mask_is_binarized_and_may_be_all_ones(tmp_path):
    array = np.zeros((6, 10, 12), dtype=np.float32)
    array[2:4, 3:7, 3:9] = 5.0
    mask = read_image(_write_raw(sitk.GetImageFromArray(array), tmp_path / "mask.nii.gz"), mask=True)
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayFromImage(mask))) == {0, 1}
    ones = read_image(_write_raw(sitk.GetImageFromArray(np.ones_like(array)), tmp_path / "ones.nii.gz"), mask=True)
    assert sitk.GetArrayFromImage(ones).all()


def test_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(InputError, match="unsupported extension"):
        write_image(volume(), tmp_path / "out.png")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="cannot write"):
        write_image(volume(), blocker / "out.nii.gz")
    assert sorted(os.listdir(tmp_path)) == ["not-a-folder"]


def test_write_replaces_existing_file_atomically(tmp_path):
    path = tmp_path / "out.nii.gz"
    write_image(volume(seed=1), path)
    write_image(volume(seed=2), path)
    assert np.allclose(sitk.GetArrayFromImage(read_image(path)), sitk.GetArrayFromImage(volume(seed=2)))
    assert os.listdir(tmp_path) == ["out.nii.gz"]


def test_csv_is_written_whole_or_not_at_all(tmp_path):
    path = tmp_path / "table.csv"
    write_csv(path, [{"case": "a", "psnr": 30.5}, {"case": "b", "ssim": 0.9}])
    assert path.read_text(encoding="utf-8").splitlines() == ["case,psnr,ssim", "a,30.5,", "b,,0.9"]
    with pytest.raises(ValueError):
        write_csv(path, [{"case": "c"}, {"case": "d", "extra": 1}], fields=["case"])
    assert path.read_text(encoding="utf-8").splitlines()[0] == "case,psnr,ssim"
    assert os.listdir(tmp_path) == ["table.csv"]
