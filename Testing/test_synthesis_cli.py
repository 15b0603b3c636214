"""The ``virtual-contrast`` synthesis commands through the real entry point ``VirtualContrastLib.cli.main``."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import head as make_head
from conftest import make_models_dir, tiny_checkpoint
from VirtualContrastLib.cli import build_parser, main
from VirtualContrastLib.errors import CancelledError
from VirtualContrastLib.imageio import is_synthetic
from VirtualContrastLib.registry import load_model
from VirtualContrastLib.options import SynthesisOptions
from VirtualContrastLib.report import RunReport
from VirtualContrastLib.synthesis_cli import SynthesisJob, run_job


def head(seed=0, level=100.0, **grid) -> sitk.Image:
    """This module's head: a coarse (12, 20, 16) grid unless ``grid`` says otherwise."""
    grid = {"shape": (12, 20, 16), "spacing": (2.5, 2.5, 4.0), "origin": (-20.0, -25.0, -24.0), **grid}
    return make_head(seed=seed, level=level, **grid)


@pytest.fixture
def workspace(tmp_path, monkeypatch, bundled_models) -> Path:
    """Inputs t1/t2 (T2 on another grid), and a bundled-models folder with one T1+T2 model trained on real scans."""
    sitk.WriteImage(head(), str(tmp_path / "t1.nii.gz"))
    t2 = head(shape=(16, 24, 24), spacing=(2.0, 2.0, 3.0), origin=(-22.0, -26.0, -25.0), seed=1, level=250.0)
    sitk.WriteImage(t2, str(tmp_path / "t2.nrrd"))
    bundled_models([{"name": "tiny-t1-t2", "inputs": ["t1", "t2"], "cpu_seconds_per_volume": 1.0, "training_data": "brats2018"}])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_synthesize_writes_tagged_outputs_on_the_t1_grid(workspace, capsys):
    code = main(["synthesize", "--t1", "t1.nii.gz", "--t2", "t2.nrrd", "-o", "out/synthetic.nii.gz",
                 "--subtraction", "out/sub.nrrd", "--uncertainty", "out/unc.mha", "--device", "cpu", "--precision", "fp32"])
    out = capsys.readouterr().out
    assert code == 0
    assert "model: tiny-t1-t2" in out and "chosen for the given inputs" in out
    t1 = sitk.ReadImage("t1.nii.gz")
    for name in ("synthetic.nii.gz", "sub.nrrd", "unc.mha"):
        image = sitk.ReadImage(str(workspace / "out" / name))
        assert image.GetSize() == t1.GetSize()
        assert np.allclose(image.GetSpacing(), t1.GetSpacing()) and np.allclose(image.GetOrigin(), t1.GetOrigin())
        assert is_synthetic(workspace / "out" / name)
    assert "research use only" in out


def test_report_lists_model_device_precision_notes_and_outputs(workspace, capsys):
    code = main(["synthesize", "--t1", "t1.nii.gz", "--t2", "t2.nrrd", "-o", "out/synthetic.nrrd", "--subtraction", "out/sub.nrrd",
                 "--device", "cpu", "--precision", "fp32", "--report", "reports/result.json"])
    assert code == 0, capsys.readouterr().err
    report = RunReport.read(workspace / "reports" / "result.json")
    assert (report.model, report.device, report.precision, report.error) == ("tiny-t1-t2", "cpu", "fp32", None)
    assert report.outputs == {"synthetic": "out/synthetic.nrrd", "subtraction": "out/sub.nrrd"}
    assert all((workspace / path).is_file() for path in report.outputs.values())
    assert any("brain mask" in note for note in report.notes) and "SYNTHETIC" in report.intended_use


def test_report_is_written_on_failure_with_the_error_line(workspace, capsys):
    tiny_checkpoint(workspace / "t1_t2_adc.pt", ["t1", "t2", "adc"])
    code = main(["synthesize", "--t1", "t1.nii.gz", "--t2", "t2.nrrd", "--model", "t1_t2_adc.pt", "-o", "result.nrrd",
                 "--report", "result.json"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    report = RunReport.read(workspace / "result.json")
    assert report.error is not None and err.endswith(report.error) and "needs ADC" in report.error
    assert report.model == "t1_t2_adc" and report.outputs == {} and not (workspace / "result.nrrd").exists()
    assert not list(workspace.glob(".result.json*"))


def test_without_model_real_scans_get_only_a_real_data_model_and_a_named_phantom_model_warns(workspace, bundled_models, capsys):
    sitk.WriteImage(head(seed=2), str(workspace / "adc.nii.gz"))
    bundled_models([{"name": "phantom-t1-t2-adc", "inputs": ["t1", "t2", "adc"]},
                    {"name": "real-t1-t2-flair", "inputs": ["t1", "t2", "flair"], "training_data": "brats2018"}])
    code = main(["synthesize", "--t1", "t1.nii.gz", "--t2", "t2.nrrd", "--adc", "adc.nii.gz", "-o", "out.nrrd", "--report", "r.json"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not (workspace / "out.nrrd").exists()
    assert err.splitlines()[-1] == ("virtual-contrast synthesize: error: no bundled model trained on real scans works with T1+T2+ADC: load FLAIR "
                                    "(real-t1-t2-flair needs T1+T2+FLAIR), or name a model to run it anyway "
                                    "(trained on phantoms only: phantom-t1-t2-adc)")
    # named, the phantom-trained model runs, under a warning on stderr and in the report
    code = main(["synthesize", "--t1", "t1.nii.gz", "--t2", "t2.nrrd", "--adc", "adc.nii.gz", "-o", "out.nrrd", "--report", "r.json",
                 "--model", "phantom-t1-t2-adc", "--device", "cpu", "--precision", "fp32"])
    err = capsys.readouterr().err
    assert code == 0
    assert "warning: model phantom-t1-t2-adc was trained on phantoms only" in err
    assert any("trained on phantoms only" in note for note in RunReport.read(workspace / "r.json").notes)
    # on the phantom (the demo's, Slicer's sample) the phantom-trained model is the automatic choice, without warning
    code = main(["synthesize", "--t1", "t1.nii.gz", "--t2", "t2.nrrd", "--adc", "adc.nii.gz", "-o", "out.nrrd",
                 "--phantom-data", "--device", "cpu", "--precision", "fp32"])
    captured = capsys.readouterr()
    assert code == 0 and "model: phantom-t1-t2-adc" in captured.out and "phantoms only" not in captured.err


def test_the_automatic_choice_says_which_inputs_it_ignores(workspace, capsys):
    sitk.WriteImage(head(seed=2), str(workspace / "adc.nii.gz"))
    code = main(["synthesize", "--t1", "t1.nii.gz", "--t2", "t2.nrrd", "--adc", "adc.nii.gz", "-o", "out.nrrd", "--report", "r.json",
                 "--device", "cpu", "--precision", "fp32"])
    err = capsys.readouterr().err
    assert code == 0 and "note: model tiny-t1-t2 uses T1+T2; ignored: ADC" in err
    assert "model tiny-t1-t2 uses T1+T2; ignored: ADC" in RunReport.read(workspace / "r.json").notes


def test_options_turn_into_command_line_arguments_and_back():
    parser = build_parser()
    changed = SynthesisOptions(device="cpu", overlap=0.2, batch_size=3, precision="bf16", tta=True,
                               missing_policy="zeros", blend="constant", min_overlap=0.7)
    for options in (SynthesisOptions(), SynthesisOptions(overlap=1 / 7), changed):
        args = parser.parse_args(["synthesize", "--t1", "t1.nii.gz", "-o", "out.nrrd", *options.to_args()])
        assert SynthesisOptions.from_args(args) == options
    plain = parser.parse_args(["synthesize", "--t1", "t1.nii.gz", "-o", "out.nrrd"])
    assert SynthesisOptions.from_args(plain) == SynthesisOptions()


def bad_cases(ws: Path) -> dict[str, tuple[list[str], str]]:
    """Arguments for each foreseeable bad input and the message it must produce."""
    base = sitk.GetArrayFromImage(head())
    sitk.WriteImage(sitk.GetImageFromArray(base[5]), str(ws / "slice.nii.gz"))
    sitk.WriteImage(sitk.JoinSeries([head(), head(seed=2)]), str(ws / "four_d.nii.gz"))
    nan = base.copy()
    nan[3, 3, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(nan), str(ws / "nan.nrrd"))
    sitk.WriteImage(sitk.GetImageFromArray(np.full_like(base, 3.0)), str(ws / "constant.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros_like(base)), str(ws / "empty.nii.gz"))
    (ws / "garbage.nii.gz").write_bytes(b"not an image at all" * 20)
    sitk.WriteImage(head(origin=(400.0, 0.0, 0.0), seed=3), str(ws / "far_t2.nii.gz"))
    (ws / "corrupt.pt").write_bytes(b"\x80\x02garbage" * 40)
    tiny_checkpoint(ws / "t1_t2_adc.pt", ["t1", "t2", "adc"])
    t1 = ["--t1", "t1.nii.gz"]
    return {
        "missing file": (["--t1", "nope.nii.gz", "--t2", "t2.nrrd"], "file not found: nope.nii.gz"),
        "unreadable file": (["--t1", "garbage.nii.gz", "--t2", "t2.nrrd"], "cannot read garbage.nii.gz"),
        "2d": (["--t1", "slice.nii.gz", "--t2", "t2.nrrd"], "is 2D"),
        "4d": (t1 + ["--t2", "four_d.nii.gz"], "is 4D"),
        "nan": (t1 + ["--t2", "nan.nrrd"], "NaN or infinite"),
        "constant": (["--t1", "constant.nii.gz", "--t2", "t2.nrrd"], "is constant"),
        "empty": (t1 + ["--t2", "empty.nii.gz"], "is empty"),
        "non-overlapping": (t1 + ["--t2", "far_t2.nii.gz"], "T2 covers only 0% of the T1 brain"),
        "missing model input": (t1 + ["--t2", "t2.nrrd", "--model", "t1_t2_adc.pt"], "needs ADC, which was not given"),
        "no model for inputs": (t1, "no bundled model trained on real scans works with T1: load T2 (tiny-t1-t2 needs T1+T2)"),
        "unknown device": (t1 + ["--t2", "t2.nrrd", "--device", "quantum"], "unknown device 'quantum'"),
        "corrupt checkpoint": (t1 + ["--t2", "t2.nrrd", "--model", "corrupt.pt"], "cannot read checkpoint corrupt.pt"),
        "unknown model": (t1 + ["--t2", "t2.nrrd", "--model", "nonexistent"], "neither a bundled model"),
        "bad output extension": (t1 + ["--t2", "t2.nrrd", "--output-override", "out.png"], "unsupported extension"),
        "output overwrites input": (t1 + ["--t2", "t2.nrrd", "--output-override", "t2.nrrd"], "is one of the inputs"),
        "bad overlap": (t1 + ["--t2", "t2.nrrd", "--overlap", "1.5"], "overlap must be in"),
    }


@pytest.mark.parametrize("case", [
    "missing file", "unreadable file", "2d", "4d", "nan", "constant", "empty", "non-overlapping",
    "missing model input", "no model for inputs", "unknown device", "corrupt checkpoint", "unknown model",
    "bad output extension", "output overwrites input", "bad overlap",
])
def test_bad_input_is_one_line_exit_2_and_no_file(workspace, capsys, case):
    args, message = bad_cases(workspace)[case]
    output = "result.nii.gz"
    if "--output-override" in args:
        index = args.index("--output-override")
        output = args[index + 1]
        args = args[:index] + args[index + 2:]
    before = {p.name: p.stat().st_mtime_ns for p in workspace.iterdir()}
    code = main(["synthesize", *args, "-o", output, "--subtraction", "sub.nii.gz"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    assert {p.name: p.stat().st_mtime_ns for p in workspace.iterdir()} == before


def test_tampered_bundled_checkpoint_is_refused(workspace, capsys):
    path = workspace / "models" / "tiny-t1-t2.pt"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))
    code = main(["synthesize", "--t1", "t1.nii.gz", "--t2", "t2.nrrd", "-o", "result.nii.gz"])
    err = capsys.readouterr().err
    assert code == 2 and "failed its SHA-256 check" in err and len(err.strip().splitlines()) == 1
    assert not (workspace / "result.nii.gz").exists()


def test_cancel_after_first_slab_writes_nothing(workspace):
    model = load_model("tiny-t1-t2", device="cpu")
    slabs = []
    job = SynthesisJob(inputs={"t1": Path("t1.nii.gz"), "t2": Path("t2.nrrd")}, output=Path("cancelled.nii.gz"),
                       subtraction=Path("cancelled-sub.nii.gz"))
    with pytest.raises(CancelledError):
        run_job(job, model, SynthesisOptions(device="cpu", precision="fp32", batch_size=1), progress=lambda f, m: slabs.append(f), cancel=lambda: bool(slabs))
    assert len(slabs) == 1
    assert not list(workspace.glob("cancelled*")) and not list(workspace.glob(".cancelled*"))


def write_case(folder: Path, case: str, t1: sitk.Image | None, t2: sitk.Image | None) -> None:
    (folder / case).mkdir(parents=True)
    if t1 is not None:
        sitk.WriteImage(t1, str(folder / case / f"{case}-t1n.nii.gz"))
    if t2 is not None:
        sitk.WriteImage(t2, str(folder / case / f"{case}-t2w.nii.gz"))


def test_batch_folder_reports_failures_and_goes_on(workspace, capsys):
    cases = workspace / "cases"
    write_case(cases, "good", head(), head(seed=1, level=200.0))
    write_case(cases, "flat", sitk.GetImageFromArray(np.full((12, 20, 16), 5.0, np.float32)), head(seed=1))
    write_case(cases, "no-t1", None, head(seed=1))
    write_case(cases, "good2", head(seed=4), head(seed=5, level=200.0))
    code = main(["batch", "--input-dir", "cases", "--out-dir", "results", "--device", "cpu", "--precision", "fp32"])
    captured = capsys.readouterr()
    assert code == 1
    assert (workspace / "results" / "good" / "good-t1c-synthetic.nii.gz").is_file()
    assert (workspace / "results" / "good2" / "good2-subtraction.nii.gz").is_file()
    assert not (workspace / "results" / "flat").exists()
    assert "4 cases: 2 done, 2 failed" in captured.out
    assert "flat: error:" in captured.err and "is constant" in captured.err and "no T1" in captured.err
    with open(workspace / "results" / "batch_summary.csv", newline="", encoding="utf-8") as handle:
        rows = {row["case_id"]: row for row in csv.DictReader(handle)}
    assert {k: v["status"] for k, v in rows.items()} == {"flat": "failed", "good": "ok", "good2": "ok", "no-t1": "failed"}


def test_batch_loads_the_auxiliary_model_once_for_all_cases(workspace, capsys, monkeypatch):
    import VirtualContrastLib.synthesis as synthesis

    make_models_dir(workspace / "models", [{"name": "tiny-t1-t2", "inputs": ["t1", "t2"]},
                                           {"name": "tiny-t2-from-t1", "inputs": ["t1"], "output": "t2", "role": "auxiliary"}])
    loads = []
    real_load = synthesis.load_model
    monkeypatch.setattr(synthesis, "load_model", lambda name, **kw: loads.append(name) or real_load(name, **kw))
    cases = workspace / "cases"
    for number in range(2):
        write_case(cases, f"c{number}", head(seed=number), None)
    code = main(["batch", "--input-dir", "cases", "--out-dir", "results", "--model", "tiny-t1-t2", "--missing", "auxiliary",
                 "--device", "cpu", "--precision", "fp32"])
    assert code == 0, capsys.readouterr().err
    assert loads == ["tiny-t2-from-t1"]
    assert all((workspace / "results" / f"c{n}" / f"c{n}-t1c-synthetic.nii.gz").is_file() for n in range(2))


def test_batch_reads_case_folders_in_another_known_layout(workspace, capsys):
    (workspace / "brats" / "P1").mkdir(parents=True)
    sitk.WriteImage(head(), str(workspace / "brats" / "P1" / "P1_t1.nii.gz"))
    sitk.WriteImage(head(seed=1, level=200.0), str(workspace / "brats" / "P1" / "P1_t2.nii.gz"))
    code = main(["batch", "--input-dir", "brats", "--out-dir", "results", "--device", "cpu", "--precision", "fp32"])
    assert code == 0, capsys.readouterr().err
    assert is_synthetic(workspace / "results" / "P1" / "P1-t1c-synthetic.nii.gz")


def test_batch_manifest_with_relative_paths(workspace, capsys):
    (workspace / "list").mkdir()
    (workspace / "list" / "cases.csv").write_text("case_id,t1,t2,adc,flair,mask\nA,../t1.nii.gz,../t2.nrrd,,,\n", encoding="utf-8")
    code = main(["batch", "--manifest", "list/cases.csv", "--out-dir", "manifest-out", "--device", "cpu", "--precision", "fp32"])
    assert code == 0, capsys.readouterr().err
    image = sitk.ReadImage(str(workspace / "manifest-out" / "A" / "A-t1c-synthetic.nii.gz"))
    assert image.GetSize() == sitk.ReadImage("t1.nii.gz").GetSize()
    (workspace / "bad.csv").write_text("id,image\n1,x\n", encoding="utf-8")
    assert main(["batch", "--manifest", "bad.csv", "--out-dir", "x"]) == 2
    assert "needs a header with at least case_id,t1" in capsys.readouterr().err


def test_models_list_and_card(workspace, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "Research" in out and "--card NAME" in out
    row = next(line for line in out.splitlines() if line.startswith("tiny-t1-t2 "))
    assert row.split()[:5] == ["tiny-t1-t2", "T1+T2", "->", "CE-T1", "brats2018"] and row.endswith("test model tiny-t1-t2")
    assert main(["models", "--card", "tiny-t1-t2"]) == 0
    assert "Random weights." in capsys.readouterr().out
    assert main(["models", "--card", "nope"]) == 2
    assert "no bundled model named 'nope'" in capsys.readouterr().err


def test_the_model_list_fits_a_terminal_and_names_what_each_model_was_trained_on(capsys, monkeypatch):
    monkeypatch.delenv("VIRTUALCONTRAST_MODELS_DIR", raising=False)  # the bundled models, with their long descriptions
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = [line for line in lines if line.startswith("vc-")]
    assert len(table) == 5 and max(len(line) for line in table) <= 160
    assert any("brats2018" in line for line in table) and sum("phantoms only" in line for line in table) == 4


def test_model_descriptions_are_written_for_users():
    from VirtualContrastLib.registry import list_models, read_card

    for entry in list_models():
        for text in (entry.description, read_card(entry) or ""):
            assert not re.search(r"issue \d|shared/|/work/", text), entry.name


def test_bench_reports_table_and_json(capsys):
    code = main(["bench", "--width", "4", "--slabs", "1", "--device", "cpu", "--precision", "fp32", "--batch-size", "2", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    assert "| seconds per 192x256x192 volume |" in out and "| ratio model / Conv3d |" in out
    result = json.loads(out[out.index("{"):])
    assert result["slabs_per_volume"] == 96 and result["seconds_per_slab"] > 0
    assert result["gflops_per_volume"] == pytest.approx(result["gflops_per_slab"] * 96)
    assert 0 < result["ratio_to_conv3d"] and result["peak_memory_mb"] > 0
    assert "| CPU features / oneDNN ISA / ATen kernels |" in out and result["onednn_isa"] != "unknown"
    assert set(result["cpu_features"]) <= {"avx2", "avx512f", "avx512_bf16", "amx_bf16"} and result["aten_cpu_capability"]


def test_demo_writes_inputs_outputs_montage_and_metrics(tmp_path, bundled_models, capsys):
    bundled_models([{"name": "tiny-all", "inputs": ["t1", "t2", "adc", "flair"]}])
    # Seed 5 (the demo's) has an enhancing tumour, which the detection floor's AUC needs.
    code = main(["demo", "--out", str(tmp_path / "demo"), "--seed", "5", "--spacing", "4", "--device", "cpu", "--floor-cases", "2"])
    out = capsys.readouterr().out
    assert code == 0
    folder = tmp_path / "demo" / "phantom-0005"
    for suffix in ("t1n", "t2w", "adc", "t2f", "t1c", "t1c-synthetic", "subtraction"):
        assert (folder / f"phantom-0005-{suffix}.nii.gz").is_file(), suffix
    assert is_synthetic(folder / "phantom-0005-t1c-synthetic.nii.gz")
    assert (folder / "phantom-0005-montage.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((folder / "phantom-0005-metrics.json").read_text(encoding="utf-8"))
    assert report["model"] == "tiny-all" and {"brain", "enhancing_tumour", "whole_tumour"} <= set(report["metrics"])
    assert "identity_psnr" in report["metrics"]["brain"] and "linear_psnr" in report["metrics"]["brain"] and "wall time" in out
    assert set(report["enhancement"]) == {"synthetic", "identity", "linear", "detection_floor"}
    assert "lesion_sensitivity" in report["enhancement"]["synthetic"]
    assert report["enhancement"]["identity"]["far_false_colour"] == 0.0  # the T1 colours nothing
    # The detection floor: fitted on training phantoms only, never the demo's own seed; it finds enhancing tumour.
    assert report["detection_floor"]["training_phantom_seeds"] == [1300, 1301] and "detection floor" in out
    assert report["enhancement"]["detection_floor"]["auc_brain"] > report["enhancement"]["identity"]["auc_brain"]


def test_demo_without_bundled_model_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "models.json").write_text('{"models": []}', encoding="utf-8")
    monkeypatch.setenv("VIRTUALCONTRAST_MODELS_DIR", str(tmp_path))
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert "no bundled synthesis model" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "demo").exists()


def test_batch_rerun_skips_complete_cases_and_redoes_the_rest(workspace, capsys):
    # Issue 26: a rerun after Ctrl-C redid every case.
    cases = workspace / "cases"
    for number, case in enumerate(("a", "b", "c")):
        write_case(cases, case, head(seed=number), head(seed=number + 10, level=200.0))
    run = ["batch", "--input-dir", "cases", "--out-dir", "results", "--device", "cpu", "--precision", "fp32"]
    assert main(run) == 0
    capsys.readouterr()
    outputs = {case: workspace / "results" / case / f"{case}-t1c-synthetic.nii.gz" for case in ("a", "b", "c")}
    written = {case: path.stat().st_mtime_ns for case, path in outputs.items()}
    # b's output damaged, c's input replaced: only a is complete.
    outputs["b"].write_bytes(outputs["b"].read_bytes()[:-10])
    sitk.WriteImage(head(seed=7), str(cases / "c" / "c-t1n.nii.gz"))
    assert main(run) == 0
    out = capsys.readouterr().out
    assert "a: skipped, complete" in out and "b: skipped" not in out and "c: skipped" not in out
    assert "3 cases: 2 done, 1 skipped (complete before; --redo synthesizes them again), 0 failed" in out
    assert outputs["a"].stat().st_mtime_ns == written["a"] and outputs["c"].stat().st_mtime_ns != written["c"]
    assert sitk.ReadImage(str(outputs["b"])).GetSize() == (16, 20, 12)
    with open(workspace / "results" / "batch_summary.csv", newline="", encoding="utf-8") as handle:
        assert {row["case_id"]: row["status"] for row in csv.DictReader(handle)} == {"a": "skipped", "b": "ok", "c": "ok"}
    # Other options make other outputs; --redo synthesizes complete cases again.
    assert main([*run, "--overlap", "0.5"]) == 0
    assert "skipped" not in capsys.readouterr().out
    redone = outputs["a"].stat().st_mtime_ns
    assert main([*run, "--overlap", "0.5", "--redo"]) == 0
    assert "skipped" not in capsys.readouterr().out and outputs["a"].stat().st_mtime_ns != redone


def test_bench_adds_the_enhancement_detector_to_the_time_per_volume():
    from VirtualContrastLib.bench import benchmark, markdown_table

    arch = {"channels": [4, 8], "strides": [2], "num_res_units": 0, "patch": [64, 128, 128]}
    result = benchmark(4, slabs=1, device="cpu", precision="fp32", batch_size=2, detector=arch)
    assert result["detector_seconds_per_volume"] > 0
    assert result["seconds_per_volume"] == pytest.approx(result["seconds_per_slab"] * result["slabs_per_volume"]
                                                         + result["detector_seconds_per_volume"])
    assert "| enhancement detector seconds per volume |" in markdown_table(result)
