"""Optional CPU runtime: OpenVINO for fp32 inference, used automatically where it is installed (not a dependency).

Issue 25 timed one real BraTS volume through the engine on 1 core: OpenVINO fp32 took 0.87-0.89 of PyTorch
fp32's time with the same output (PSNR between them > 128 dB), while ONNX Runtime took 1.64-1.68 and
``torch.compile(dynamic=True)`` failed in Inductor (README, "Speed on CPUs"). bf16 CPUs keep PyTorch's bf16,
which is faster still. ``VIRTUALCONTRAST_ENGINE=torch`` turns OpenVINO off.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .registry import LoadedModel

ENGINE_ENV = "VIRTUALCONTRAST_ENGINE"

#: Compiled networks by their checkpoint's SHA-256: a model is converted once per process, not per volume.
_CONVERTED: dict[str, "OpenVinoNetwork"] = {}


def openvino_usable(model: "LoadedModel") -> bool:
    """True when OpenVINO is installed, ``VIRTUALCONTRAST_ENGINE`` does not ask for PyTorch alone and ``model`` came
    from a checkpoint (its SHA-256 names its weights; an in-memory network, e.g. one in training, may change)."""
    wanted = os.environ.get(ENGINE_ENV, "auto").strip().lower() != "torch"
    return wanted and bool(model.sha256) and importlib.util.find_spec("openvino") is not None


class OpenVinoNetwork(torch.nn.Module):
    """A network compiled by OpenVINO for fp32 on this CPU, called like the PyTorch network it replaces.

    It has no PyTorch parameters, so the engine sees a CPU network in the contiguous layout.
    """

    def __init__(self, compiled: Any) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Run the compiled model on a float32 (B, C, D, H, W) batch."""
        return torch.from_numpy(self.compiled(batch.float().contiguous().numpy())[0].copy())


def openvino_network(model: "LoadedModel") -> OpenVinoNetwork:
    """``model``'s network compiled by OpenVINO (dynamic batch and in-plane size), converted once per checkpoint."""
    import openvino

    from .networks import build_network

    network = model.network
    if model.sha256 not in _CONVERTED:
        # A copy in the contiguous layout: the caller's network keeps its own (channels_last_3d) weights.
        plain = build_network(model.config).eval()
        plain.load_state_dict(network.state_dict())
        channels, depth = len(model.config.inputs), model.config.slab_depth
        converted = openvino.convert_model(plain, example_input=torch.rand(2, channels, depth, 32, 32),
                                           input=[([-1, channels, depth, -1, -1], openvino.Type.f32)])
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        _CONVERTED[model.sha256] = OpenVinoNetwork(openvino.Core().compile_model(converted, "CPU", config))
    return _CONVERTED[model.sha256]
