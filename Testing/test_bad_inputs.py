"""Silent damage refused (issue 16): full disks, truncated files, broken series, hostile manifests, bad checkpoints.

Every refusal is one line, exit status 2, no output left behind, and, for bad input files, made
before any model is chosen or loaded. Full disks are produced with RLIMIT_FSIZE (a write past the
limit fails with EFBIG exactly where a full disk fails with ENOSPC) and, where this process may
mount one, a real 64 KiB tmpfs.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from test_imageio import volume, write_dicom_series
from test_synthesis_cli import head, workspace  # noqa: F401 (workspace is a fixture)

from VirtualContrastLib import imageio
from VirtualContrastLib.checkpoints import FORMAT, FORMAT_VERSION, load_checkpoint
from VirtualContrastLib.cli import main
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.errors import CheckpointError, InputError
from VirtualContrastLib.fileutil import STALE_TEMP_SECONDS, atomic_write
from VirtualContrastLib.imageio import read_image, write_image, write_images
from VirtualContrastLib.networks import build_network
from VirtualContrastLib.registry import load_model
from VirtualContrastLib.synthesis import SynthesisOptions, synthesize
from VirtualContrastLib.synthesis_cli import cases_from_manifest


@contextmanager
def file_size_limit(limit: int):
    """Writes past ``limit`` bytes of any file fail (EFBIG), as they do on a full disk (ENOSPC)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def everything_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def cut_short(path: Path, keep: float = 0.87) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def write_bad_files(ws: Path) -> None:
    """The bad inputs of the command-line test, on the 3 mm-scale phantom head."""
    for ext in (".nii.gz", ".nii"):
        sitk.WriteImage(head(seed=1, level=200.0), str(ws / f"truncated{ext}"))
        cut_short(ws / f"truncated{ext}")
    nan = sitk.GetArrayFromImage(head(seed=1))
    nan[6, 10, 8] = np.nan
    nan_image = sitk.GetImageFromArray(nan)
    nan_image.CopyInformation(head())
    sitk.WriteImage(nan_image, str(ws / "nan.nii.gz"))
    sheared = head(seed=1)
    sheared.SetDirection((1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(sheared, str(ws / "sheared.nrrd"))
    # Inside the T2's field of view, so that only the spacing is wrong with it.
    sitk.WriteImage(head(spacing=(0.01, 0.01, 0.01), origin=(0.0, 0.0, 0.0)), str(ws / "tiny_spacing.nii.gz"))
    (ws / "dicom").mkdir()
    write_dicom_series(head(shape=(10, 20, 16), spacing=(2.5, 2.5, 6.0), seed=1), ws / "dicom", "1.2.826.0.1.3680043.2.1125.100")
    (ws / "dicom" / "100_004.dcm").write_bytes(b"damaged" * 100)
    (ws / "blocker").write_text("a file where a folder should be", encoding="utf-8")


T1 = ["--t1", "t1.nii.gz"]
BAD_RUNS = {
    "truncated .nii.gz": (T1 + ["--t2", "truncated.nii.gz"], "truncated.nii.gz is damaged or cut short"),
    "truncated .nii": (T1 + ["--t2", "truncated.nii"], "truncated.nii is cut short"),
    "NaN in NIfTI": (T1 + ["--t2", "nan.nii.gz"], "nan.nii.gz contains NaN"),
    "sheared direction": (T1 + ["--t2", "sheared.nrrd"], "sheared (non-orthonormal) direction"),
    "0.01 mm spacing": (["--t1", "tiny_spacing.nii.gz", "--t2", "t2.nrrd"], "voxel spacing 0.01 x 0.01 x 0.01 mm"),
    "DICOM series with a damaged slice": (T1 + ["--t2", "dicom"], "not evenly spaced: slices are 6.00 mm apart except 1 gap(s) (the worst 12.00 mm)"),
    "unwritable output folder": (T1 + ["--t2", "t2.nrrd", "--subtraction", "blocker/sub.nii.gz"], "blocker is a file, not a folder"),
    "fp16 on the CPU": (T1 + ["--t2", "t2.nrrd", "--precision", "fp16", "--device", "cpu"], "fp16 on the CPU is emulated"),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_bad_input_is_refused_before_the_model_loads(workspace, capsys, case):
    write_bad_files(workspace)
    args, message = BAD_RUNS[case]
    before = everything_under(workspace)
    code = main(["synthesize", *args, "-o", "out/result.nii.gz"])
    captured = capsys.readouterr()
    assert code == 2
    assert len(captured.err.strip().splitlines()) == 1 and message in captured.err, captured.err
    # The default model is announced just before it loads: no announcement, no load.
    assert "model:" not in captured.out
    assert everything_under(workspace) == before


def test_checkpoint_with_unknown_normalization_is_refused_as_it_loads(workspace, capsys):
    config = ModelConfig(architecture="hrfcn", arch_kwargs={"width": 4}, inputs=["t1", "t2"]).to_dict()
    config["normalization"] = {"name": "zscore_whole_head"}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config, "training": {},
               "state_dict": build_network(ModelConfig.from_dict({**config, "normalization": {"name": "brain_percentile"}})).state_dict()}
    torch.save(payload, workspace / "odd.pt")
    with pytest.raises(CheckpointError, match="unknown normalization 'zscore_whole_head'"):
        load_checkpoint(workspace / "odd.pt")
    code = main(["synthesize", "--t1", "t1.nii.gz", "--t2", "t2.nrrd", "--model", "odd.pt", "-o", "result.nii.gz"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unknown normalization 'zscore_whole_head'" in err
    assert not (workspace / "result.nii.gz").exists()


@pytest.mark.parametrize("spec", [{"name": "brain_percentile", "lower": 99.5, "upper": 0.5},
                                  {"name": "brain_percentile", "lowr": 1.0}, "brain_percentile"])
def test_model_config_refuses_invalid_normalization_parameters(spec):
    with pytest.raises(ValueError, match="normalization"):
        ModelConfig(normalization=spec)


# --- full disk ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_full_disk_write_is_refused_and_leaves_the_old_file(tmp_path, ext):
    path = tmp_path / f"out{ext}"
    write_image(volume(seed=1), path)
    old = path.read_bytes()
    big = volume(shape=(30, 40, 50), seed=2)
    with file_size_limit(16 * 1024), pytest.raises(InputError, match=f"cannot write .*out{ext}"):
        write_image(big, path)
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_outputs_are_written_all_or_none(tmp_path):
    sheared = volume(seed=3)
    sheared.SetDirection((1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    # NIfTI cannot store a sheared grid (ITK coerces it): the read-back check refuses the second file.
    with pytest.raises(InputError, match="differs from the image"):
        write_images([(volume(seed=1), tmp_path / "new" / "a.nii.gz", None), (sheared, tmp_path / "new" / "b.nii.gz", None)])
    assert os.listdir(tmp_path) == []


def _finer_t1(workspace: Path) -> None:
    """The workspace T1 at four times the resolution (same field of view): outputs far larger than the limits below."""
    sitk.WriteImage(head(shape=(56, 96, 80), spacing=(0.5, 0.5, 0.875)), str(workspace / "t1.nii.gz"))


def test_cli_on_a_full_disk_exits_2_and_leaves_nothing(workspace, capsys):
    _finer_t1(workspace)
    with file_size_limit(2048):
        code = main(["synthesize", "--t1", "t1.nii.gz", "--t2", "t2.nrrd", "-o", "out/result.nii.gz",
                     "--subtraction", "out/sub.nii.gz", "--device", "cpu", "--precision", "fp32", "--quiet"])
    captured = capsys.readouterr()
    assert code == 2 and "cannot write" in captured.err and "wrote" not in captured.out
    assert not (workspace / "out").exists()


def _mount_tmpfs(folder: Path, size: str) -> bool:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True).returncode == 0


def test_cli_on_a_real_full_tmpfs_exits_2_and_leaves_nothing(workspace, capsys):
    disk = workspace / "small-disk"
    disk.mkdir()
    if not _mount_tmpfs(disk, "8k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE test covers full disks")
    _finer_t1(workspace)
    try:
        code = main(["synthesize", "--t1", "t1.nii.gz", "--t2", "t2.nrrd", "-o", f"{disk}/result.nii.gz",
                     "--subtraction", f"{disk}/sub.nii.gz", "--device", "cpu", "--precision", "fp32", "--quiet"])
        captured = capsys.readouterr()
        assert code == 2 and "cannot write" in captured.err and "wrote" not in captured.out
        assert os.listdir(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# --- files and folders -------------------------------------------------------------------------


def test_nifti_with_nan_is_refused(tmp_path):
    array = sitk.GetArrayFromImage(volume())
    array[2, 3, 4] = np.nan
    for ext in (".nii.gz", ".nii", ".hdr"):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / f"nan{ext}"))
        with pytest.raises(InputError, match=f"nan{ext} contains NaN"):
            read_image(tmp_path / f"nan{ext}")


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_truncated_nifti_is_refused(tmp_path, ext):
    path = tmp_path / f"t1{ext}"
    sitk.WriteImage(volume(shape=(30, 40, 50)), str(path))
    cut_short(path)
    with pytest.raises(InputError, match="cut short"):
        read_image(path)


def test_damaged_gzip_trailer_is_refused(tmp_path):
    path = tmp_path / "t1.nii.gz"
    sitk.WriteImage(volume(), str(path))
    path.write_bytes(path.read_bytes()[:-4])  # the voxels decode, the length/CRC trailer is gone
    with pytest.raises(InputError, match="damaged or cut short"):
        read_image(path)


@pytest.mark.parametrize("damage", ["damaged file", "missing file"])
def test_dicom_series_with_a_gap_is_refused(tmp_path, damage):
    write_dicom_series(volume(shape=(12, 8, 8), spacing=(2.0, 2.0, 6.0)), tmp_path, "1.2.826.0.1.3680043.2.1125.100")
    victim = tmp_path / "100_005.dcm"
    if damage == "missing file":
        victim.unlink()
    else:
        victim.write_bytes(b"\x00" * 200)
    with pytest.raises(InputError, match="not evenly spaced: slices are 6.00 mm apart"):
        read_image(tmp_path)


def test_dicom_series_with_two_slices_at_one_position_is_refused(tmp_path):
    image = volume(shape=(6, 8, 8), spacing=(2.0, 2.0, 6.0))
    write_dicom_series(image, tmp_path, "1.2.826.0.1.3680043.2.1125.100")
    copy = sitk.ReadImage(str(tmp_path / "100_002.dcm"))
    copy.SetMetaData("0008|0018", "1.2.826.0.1.3680043.2.1125.100.99")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(tmp_path / "100_099.dcm"))
    writer.Execute(copy)
    with pytest.raises(InputError, match="two or more slices at the same position"):
        read_image(tmp_path)


@pytest.mark.parametrize("spacing", [(0.01, 1.0, 1.0), (1.0, 1.0, 50.0)])
def test_absurd_spacing_is_refused(tmp_path, spacing):
    image = volume(spacing=spacing)
    sitk.WriteImage(image, str(tmp_path / "t1.nrrd"))
    with pytest.raises(InputError, match="spacings from 0.1 to 20 mm are accepted"):
        read_image(tmp_path / "t1.nrrd")


def test_too_many_voxels_is_refused(tmp_path, monkeypatch):
    # A real 2**28-voxel volume is 1 GiB; the bound is lowered so that a small file crosses it.
    monkeypatch.setattr(imageio, "MAX_VOXELS", 6 * 10 * 12 - 1)
    sitk.WriteImage(volume(shape=(6, 10, 12)), str(tmp_path / "t1.nrrd"))
    with pytest.raises(InputError, match="has 12x10x6 voxels, more than the 719"):
        read_image(tmp_path / "t1.nrrd")


def test_engine_entry_checks_images_given_without_files(workspace):
    """Slicer and training hand images straight to ``synthesize``: the same refusals as for files."""
    model = load_model("tiny-t1-t2", device="cpu")
    t1 = read_image("t1.nii.gz")
    nan = sitk.GetArrayFromImage(head(seed=1))
    nan[6, 10, 8] = np.nan
    t2 = sitk.GetImageFromArray(nan)
    t2.CopyInformation(t1)
    options = SynthesisOptions(device="cpu", precision="fp32")
    with pytest.raises(InputError, match="T2 contains NaN or infinite voxel values"):
        synthesize({"t1": t1, "t2": t2}, model, options=options)
    tiny = sitk.Image(t1)
    tiny.SetSpacing((0.01, 0.01, 0.01))
    with pytest.raises(InputError, match="T1 has voxel spacing 0.01"):
        synthesize({"t1": tiny, "t2": read_image("t2.nrrd")}, model, options=options)
    with pytest.raises(InputError, match="the brain mask is empty"):
        synthesize({"t1": t1, "t2": read_image("t2.nrrd")}, model, brain_mask=t1 * 0, options=options)


# --- temporary files ---------------------------------------------------------------------------


def test_sigterm_during_a_write_leaves_no_temporary_file(tmp_path):
    code = (
        "import os, signal, sys, time\n"
        "from VirtualContrastLib.fileutil import atomic_write\n"
        f"with atomic_write({str(tmp_path / 'out.nii.gz')!r}, suffix='.nii.gz') as tmp:\n"
        "    tmp.write_bytes(b'half an image')\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 128 + signal.SIGTERM
    assert os.listdir(tmp_path) == []


def test_abandoned_temporary_files_are_removed_by_the_next_write(tmp_path):
    old = tmp_path / ".out.nii.gz.killed.nii.gz"
    young = tmp_path / ".out.nii.gz.running.nii.gz"
    for leftover in (old, young):
        leftover.write_bytes(b"partial")
    stale = time.time() - 2 * STALE_TEMP_SECONDS
    os.utime(old, (stale, stale))
    with atomic_write(tmp_path / "out.nii.gz", suffix=".nii.gz") as tmp:
        tmp.write_bytes(b"complete")
    assert sorted(os.listdir(tmp_path)) == sorted([young.name, "out.nii.gz"])


# --- batch manifests ---------------------------------------------------------------------------


def run_manifest(ws: Path, text: str, encoding: str = "utf-8") -> int:
    (ws / "lists").mkdir(exist_ok=True)
    (ws / "lists" / "cases.csv").write_text(text, encoding=encoding)
    return main(["batch", "--manifest", "lists/cases.csv", "--out-dir", "runs/out", "--device", "cpu", "--precision", "fp32"])


@pytest.mark.parametrize("case_id", ["../../escaped", "/tmp/escaped", "sub/dir", "..", ".hidden", "a\\b"])
def test_manifest_case_id_cannot_escape_the_output_folder(workspace, capsys, case_id):
    before = everything_under(workspace)
    assert run_manifest(workspace, f"case_id,t1,t2\n{case_id},../t1.nii.gz,../t2.nrrd\n") == 2
    err = capsys.readouterr().err
    assert "row 1: case id" in err and "cannot be a folder name" in err and len(err.strip().splitlines()) == 1
    assert everything_under(workspace) - before == {"lists", "lists/cases.csv"}


def test_manifest_with_repeated_case_ids_is_refused(workspace, capsys):
    before = everything_under(workspace)
    text = "case_id,t1,t2\nA,../t1.nii.gz,../t2.nrrd\nB,../t1.nii.gz,../t2.nrrd\na,../t1.nii.gz,../t2.nrrd\n"
    assert run_manifest(workspace, text) == 2
    assert "repeats case ids (ignoring case, as some file systems do): 'A' and 'a'" in capsys.readouterr().err
    assert everything_under(workspace) - before == {"lists", "lists/cases.csv"}


def test_manifest_from_a_spreadsheet_bom_and_upper_case_columns(tmp_path):
    manifest = tmp_path / "cases.csv"
    manifest.write_text("Case_ID,T1,T2,ADC\nA,t1.nii.gz,t2.nii.gz,adc.nii.gz\n", encoding="utf-8-sig")
    [(case_id, inputs, mask)] = cases_from_manifest(manifest)
    assert case_id == "A" and mask is None
    assert inputs == {"t1": tmp_path / "t1.nii.gz", "t2": tmp_path / "t2.nii.gz", "adc": tmp_path / "adc.nii.gz"}


def test_manifest_with_an_unknown_column_is_refused(tmp_path):
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case_id,t1,flare\nA,t1.nii.gz,flair.nii.gz\n", encoding="utf-8")
    with pytest.raises(InputError, match="unknown columns flare; known: case_id,t1,t2,adc,flair,mask"):
        cases_from_manifest(manifest)


# --- memory and signals (issue 26) -------------------------------------------------------------


def test_volume_too_large_for_the_memory_left_is_refused_before_the_model_loads(workspace, capsys, monkeypatch):
    # The workspace T1 (16x20x12 voxels, 2 inputs) needs about 450 KB by the estimate (120 bytes a voxel):
    # a limit of 100 KiB (the documented variable) refuses it as a 512x512x400 T1 is refused under 3 GB.
    monkeypatch.setenv("VIRTUALCONTRAST_MEMORY_LIMIT", "100K")
    code = main(["synthesize", "--t1", "t1.nii.gz", "--t2", "t2.nrrd", "-o", "out/result.nii.gz", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 2 and len(captured.err.strip().splitlines()) == 1, captured.err
    assert "a 16x20x12-voxel T1 with 2 input(s) needs about 0.0 GiB of memory to synthesize, 0.0 GiB is available" in captured.err
    assert "model:" not in captured.out and not (workspace / "out").exists()
    monkeypatch.setenv("VIRTUALCONTRAST_MEMORY_LIMIT", "1G")
    assert main(["synthesize", "--t1", "t1.nii.gz", "--t2", "t2.nrrd", "-o", "out/result.nii.gz", "--device", "cpu", "--quiet"]) == 0


def test_sigterm_during_synthesis_still_writes_the_report(workspace):
    # The run is terminated from inside its first slab, as a scheduler or a GUI cancel would do it.
    code = (
        "import os, signal, sys\n"
        "import VirtualContrastLib.synthesis as synthesis\n"
        "from VirtualContrastLib.cli import main\n"
        "real = synthesis.predict_volume\n"
        "def killed(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return real(*args, **kwargs)\n"
        "synthesis.predict_volume = killed\n"
        "sys.exit(main(['synthesize', '--t1', 't1.nii.gz', '--t2', 't2.nrrd', '-o', 'out/result.nii.gz', '--device', 'cpu',\n"
        "               '--quiet', '--report', 'result.json']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, cwd=workspace)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr.decode()
    from VirtualContrastLib.report import RunReport

    report = RunReport.read(workspace / "result.json")
    assert report.error == "terminated (SIGTERM)" and report.model == "tiny-t1-t2" and report.outputs == {}
    assert not (workspace / "out").exists() and not list(workspace.glob(".result.json*"))


def test_memory_estimate_refuses_a_512x512x400_volume_under_3_gb(monkeypatch):
    from VirtualContrastLib.memory import check_synthesis_memory

    monkeypatch.setenv("VIRTUALCONTRAST_MEMORY_LIMIT", "3G")
    with pytest.raises(InputError, match=r"a 512x512x400-voxel T1 with 3 input\(s\) needs about 15.6 GiB of memory to synthesize, 3.0 GiB"):
        check_synthesis_memory((512, 512, 400), 3)
    check_synthesis_memory((96, 128, 96), 3)  # a small brain volume fits
    monkeypatch.setenv("VIRTUALCONTRAST_MEMORY_LIMIT", "lots")
    with pytest.raises(InputError, match="VIRTUALCONTRAST_MEMORY_LIMIT='lots' is not a size"):
        check_synthesis_memory((10, 10, 10), 1)
