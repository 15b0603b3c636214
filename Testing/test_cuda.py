"""The CUDA path (marker ``cuda``: skipped without a GPU; ``Testing/gpu_check.sh`` runs them).

No SimpleITK and no conftest: the GPU check runs this file with ``pytest --noconftest`` on a machine
that has only torch, numpy, scipy and Testing/gpu_requirements.txt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.networks import build_network, place_network
from VirtualContrastLib.options import SynthesisOptions
from VirtualContrastLib.registry import LoadedModel
from VirtualContrastLib.synthesis import predict_volume, synthesize_array

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def tiny(device: str, width: int = 4) -> LoadedModel:
    """A random HR-FCN placed on ``device`` the way the engine's loader places it."""
    torch.manual_seed(0)
    config = ModelConfig(architecture="hrfcn", arch_kwargs={"width": width}, inputs=["t1"])
    network = build_network(config).eval()
    place_network(network, torch.device(device))
    return LoadedModel(name="tiny", config=config, network=network, sha256="", path=Path("tiny.pt"))


def test_fp32_on_the_gpu_matches_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    volume = np.random.default_rng(0).uniform(0.1, 1, (1, 7, 32, 24)).astype(np.float32)
    options = SynthesisOptions(precision="fp32")
    on_cpu, _ = predict_volume(tiny("cpu"), volume, options, torch.device("cpu"), "fp32", 2)
    on_gpu, _ = predict_volume(tiny("cuda"), volume, options, torch.device("cuda"), "fp32", 2)
    np.testing.assert_allclose(on_gpu[0], on_cpu[0], atol=1e-4)


def test_real_out_of_memory_halves_the_batch_and_finishes():
    """Cap this process's GPU memory so a large batch cannot fit: the engine must recover and say so."""
    volume = np.zeros((1, 24, 160, 160), np.float32)
    volume[0, 2:22, 20:140, 20:140] = np.random.default_rng(1).uniform(0.2, 0.9, (20, 120, 120))
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(96 * 2**20 / total)
    try:
        result = synthesize_array(tiny("cuda", width=16), volume, SynthesisOptions(device="cuda", batch_size=64, precision="fp32"))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert any("GPU out of memory" in note for note in result.notes)
    assert np.isfinite(result.prediction).all() and result.prediction.max() > 0
