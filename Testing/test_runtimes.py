"""The optional OpenVINO runtime (issue 25): used for fp32 on the CPU only where installed, with PyTorch's output."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from conftest import spread_outputs
from VirtualContrastLib import runtimes
from VirtualContrastLib.checkpoints import save_checkpoint
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.networks import build_network
from VirtualContrastLib.options import SynthesisOptions
from VirtualContrastLib.registry import load_model
from VirtualContrastLib.synthesis import synthesize_array

CONFIG = ModelConfig(architecture="hrfcn", arch_kwargs={"width": 4}, inputs=["t1", "t2"])
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


@pytest.fixture
def checkpoint_model(tmp_path):
    """A small model loaded from a checkpoint (so it has a SHA-256), with outputs spread over (0, 1)."""
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", CONFIG, spread_outputs(build_network(CONFIG).eval(), 2).state_dict())
    return load_model(tmp_path / "m.pt", device="cpu")


def volume() -> np.ndarray:
    array = np.zeros((2, 7, 24, 20), np.float32)
    array[:, 1:6, 4:20, 4:16] = np.random.default_rng(0).uniform(0.2, 0.9, (2, 5, 16, 12))
    return array


def test_openvino_is_used_only_where_installed_wanted_and_for_checkpoints(monkeypatch, checkpoint_model) -> None:
    monkeypatch.delenv(runtimes.ENGINE_ENV, raising=False)
    monkeypatch.setattr(runtimes.importlib.util, "find_spec", lambda name: object() if name == "openvino" else None)
    assert runtimes.openvino_usable(checkpoint_model)
    in_memory = type(checkpoint_model)(**{**vars(checkpoint_model), "sha256": ""})
    assert not runtimes.openvino_usable(in_memory)  # its weights may change (training), a compiled copy would not
    monkeypatch.setenv(runtimes.ENGINE_ENV, "torch")
    assert not runtimes.openvino_usable(checkpoint_model)
    monkeypatch.delenv(runtimes.ENGINE_ENV)
    monkeypatch.setattr(runtimes.importlib.util, "find_spec", lambda name: None)
    result = synthesize_array(checkpoint_model, volume(), SynthesisOptions(device="cpu", precision="fp32"))
    assert not any("OpenVINO" in note for note in result.notes)


@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed (it is optional)")
def test_openvino_gives_pytorchs_output(monkeypatch, checkpoint_model) -> None:
    options = SynthesisOptions(device="cpu", precision="fp32")
    monkeypatch.setenv(runtimes.ENGINE_ENV, "torch")
    reference = synthesize_array(checkpoint_model, volume(), options)
    monkeypatch.delenv(runtimes.ENGINE_ENV)
    result = synthesize_array(checkpoint_model, volume(), options)
    assert any("OpenVINO" in note for note in result.notes) and not any("OpenVINO" in note for note in reference.notes)
    assert reference.prediction.std() > 0.01
    np.testing.assert_allclose(result.prediction, reference.prediction, atol=1e-4)
