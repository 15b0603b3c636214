"""Measurement (issue 25 item 4): one real BraTS volume through the engine with PyTorch fp32, ONNX Runtime and OpenVINO fp32, torch.compile.

usage: python model_training/results/speed/time_runtimes.py OUT_JSON [CASE_FOLDER [RUNTIME,...]]
Run under ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` to emulate an AVX2 CPU without bf16 (PyTorch only:
ONNX Runtime and OpenVINO dispatch on the CPU's own features, which these variables do not cap). Each runtime replaces the network
inside the engine's own synthesis (slab loop, windows, blending, post-processing), runs once to warm up (export
or compilation included), then is timed; quality is VC-Eval-1 brain PSNR against the true CE-T1, and the PSNR
between each runtime's output and PyTorch's. Needs onnx, onnxruntime and openvino in the environment (not project dependencies).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from VirtualContrastLib.bench import cpu_info, onednn_isa
from VirtualContrastLib.metrics import percentile_normalize, psnr
from VirtualContrastLib.options import SynthesisOptions
from VirtualContrastLib.registry import load_model
from VirtualContrastLib.runtimes import ENGINE_ENV
from VirtualContrastLib.synthesis import synthesize

MODEL = "vc-hrfcn16-t1-t2-flair-brats18"


def export_onnx(network: torch.nn.Module, channels: int, folder: Path) -> Path:
    """The network as an ONNX file with dynamic batch, height and width (the engine's slab windows vary in-plane)."""
    path = folder / "network.onnx"
    if not path.is_file():
        axes = {0: "batch", 3: "height", 4: "width"}
        torch.onnx.export(network.eval().to(memory_format=torch.contiguous_format), (torch.rand(2, channels, 3, 64, 48),), str(path),
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": axes, "y": axes}, dynamo=False)
    return path


class OrtNetwork(torch.nn.Module):
    """An ONNX Runtime session standing in for the network inside the engine's slab loop."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        super().__init__()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the session on a float32 batch."""
        return torch.from_numpy(self.session.run(None, {"x": x.float().contiguous().numpy()})[0])




def main(out: Path, case: Path, runtimes: list[str]) -> None:
    """Time each runtime on the case and write the JSON."""
    images = {m: sitk.ReadImage(str(case / f"{m}.nii.gz"), sitk.sitkFloat32) for m in ("t1", "t2", "flair")}
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "t1c.nii.gz"), sitk.sitkFloat32))
    base = load_model(MODEL, device="cpu")
    options = SynthesisOptions(device="cpu", precision="fp32")
    results: dict[str, dict] = {}
    outputs: dict[str, np.ndarray] = {}
    brain = np.zeros(truth.shape, bool)
    with tempfile.TemporaryDirectory() as scratch:
        for runtime in runtimes:
            began = time.perf_counter()
            try:
                # The engine runs fp32 on the CPU through OpenVINO where it is installed (VirtualContrastLib.runtimes).
                os.environ[ENGINE_ENV] = "auto" if runtime == "openvino" else "torch"
                if runtime in ("pytorch", "openvino"):
                    model = base
                elif runtime == "onnxruntime":
                    path = export_onnx(load_model(MODEL, device="cpu").network, len(base.config.inputs), Path(scratch))
                    model = dataclasses.replace(base, network=OrtNetwork(path))
                else:
                    model = dataclasses.replace(base, network=torch.compile(base.network, dynamic=True))
                synthesize(images, model, options=options)
                warm_seconds = time.perf_counter() - began
                timed = synthesize(images, model, options=options)
                if (runtime == "openvino") != any("OpenVINO" in note for note in timed.notes):
                    raise RuntimeError(f"the engine did not run {runtime} as asked: {timed.notes}")
            except Exception as error:  # a runtime that cannot run here is reported, not fatal
                results[runtime] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
                continue
            brain = sitk.GetArrayFromImage(timed.brain_mask) > 0
            outputs[runtime] = sitk.GetArrayFromImage(timed.synthetic)
            results[runtime] = {"seconds": timed.seconds, "first_run_seconds": warm_seconds,
                                "brain_psnr_db": psnr(percentile_normalize(outputs[runtime], brain), percentile_normalize(truth, brain), brain)}
    reference = results.get("pytorch", {})
    for runtime, result in results.items():
        if "seconds" in result and "seconds" in reference:
            result["ratio_to_pytorch"] = result["seconds"] / reference["seconds"]
            result["brain_psnr_change_db"] = result["brain_psnr_db"] - reference["brain_psnr_db"]
            result["psnr_to_pytorch_output_db"] = psnr(percentile_normalize(outputs[runtime], brain),
                                                       percentile_normalize(outputs["pytorch"], brain), brain)
    cpu, features = cpu_info()
    record = {"case": case.name, "model": MODEL, "cpu": cpu, "features": features, "onednn_isa": onednn_isa(),
              "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "runtimes": results}
    out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else Path("../shared/realdata/cases/brats18_TCIA03_265_1"),
         sys.argv[3].split(",") if len(sys.argv) > 3 else ["pytorch", "onnxruntime", "torch.compile"])
