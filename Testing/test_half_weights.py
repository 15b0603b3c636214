"""Half-size weights (issue 25): shipped checkpoints store float16, are read back as float32 and predict as the float32 file does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import spread_outputs
from model_training.export import export_run
from VirtualContrastLib.checkpoints import load_checkpoint, save_checkpoint
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.errors import CheckpointError
from VirtualContrastLib.metrics import psnr
from VirtualContrastLib.networks import build_network
from VirtualContrastLib.options import SynthesisOptions
from VirtualContrastLib.registry import load_model
from VirtualContrastLib.synthesis import synthesize_array

CONFIG = ModelConfig(architecture="hrfcn", arch_kwargs={"width": 8}, inputs=["t1", "t2"])


def stored_dtypes(path: Path) -> set[torch.dtype]:
    """The dtypes of a checkpoint file's floating-point tensors as stored."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return {v.dtype for v in payload["state_dict"].values() if v.is_floating_point()}


def test_half_and_fp32_files_agree_on_a_small_input(tmp_path) -> None:
    torch.manual_seed(0)
    network = spread_outputs(build_network(CONFIG).eval(), len(CONFIG.inputs))
    save_checkpoint(tmp_path / "full.pt", CONFIG, network.state_dict())
    save_checkpoint(tmp_path / "half.pt", CONFIG, network.state_dict(), half=True)
    assert stored_dtypes(tmp_path / "full.pt") == {torch.float32} and stored_dtypes(tmp_path / "half.pt") == {torch.float16}
    assert (tmp_path / "half.pt").stat().st_size < 0.6 * (tmp_path / "full.pt").stat().st_size
    assert {v.dtype for v in load_checkpoint(tmp_path / "half.pt").state_dict.values() if v.is_floating_point()} == {torch.float32}

    volume = np.zeros((2, 9, 32, 28), np.float32)
    volume[:, 1:8, 4:28, 4:24] = np.random.default_rng(0).uniform(0.1, 0.9, (2, 7, 24, 20))
    brain = volume[0] > 0
    options = SynthesisOptions(device="cpu", precision="fp32")
    full, half = (synthesize_array(load_model(tmp_path / name, device="cpu"), volume, options).prediction for name in ("full.pt", "half.pt"))
    assert full[brain].std() > 0.01  # outputs spread, so agreement is not that of two constants
    assert np.abs(half - full).max() < 5e-3
    assert psnr(half, full, brain) > 55


def test_export_writes_half_weights_unless_told_otherwise(tmp_path) -> None:
    torch.manual_seed(1)
    weights = build_network(CONFIG).state_dict()
    run = tmp_path / "run"
    save_checkpoint(run / "best.pt", CONFIG, weights, {"run": "test"})
    assert stored_dtypes(run / "best.pt") == {torch.float32}  # the training side keeps full precision
    path, _ = export_run(run, tmp_path / "shipped.pt")
    assert stored_dtypes(path) == {torch.float16}
    for key, value in load_checkpoint(path).state_dict.items():
        assert torch.allclose(value.float(), weights[key].float(), rtol=1e-3, atol=1e-4), key
    path, _ = export_run(run, tmp_path / "full.pt", half=False)
    assert stored_dtypes(path) == {torch.float32}


def test_half_refuses_weights_float16_cannot_hold(tmp_path) -> None:
    weights = build_network(CONFIG).state_dict()
    key = next(k for k, v in weights.items() if v.is_floating_point())
    weights[key] = weights[key] + 1e6
    with pytest.raises(CheckpointError, match="beyond float16"):
        save_checkpoint(tmp_path / "half.pt", CONFIG, weights, half=True)
