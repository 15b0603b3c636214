"""The slab inference loop: MONAI's blending on whole slices, per-slab in-plane windows, the bf16 ISA cap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.networks import build_network
from VirtualContrastLib.registry import LoadedModel
from VirtualContrastLib.errors import InputError
from VirtualContrastLib.synthesis import (
    SLAB_MARGIN, SynthesisOptions, count_slabs, cpu_supports_bf16, predict_volume, resolve_precision, slab_starts, synthesize_array,
)

CPU = torch.device("cpu")


def model_of(network: torch.nn.Module, inputs: int = 2) -> LoadedModel:
    config = ModelConfig(architecture="hrfcn", arch_kwargs={"width": 4}, inputs=["t1", "t2", "adc"][:inputs])
    return LoadedModel(name="test", config=config, network=network.eval(), sha256="", path=Path("test.pt"))


def tiny_hrfcn() -> LoadedModel:
    torch.manual_seed(0)
    config = ModelConfig(architecture="hrfcn", arch_kwargs={"width": 4}, inputs=["t1", "t2"])
    return model_of(build_network(config))


@pytest.mark.parametrize("depth", [2, 3, 7, 10])
@pytest.mark.parametrize("overlap", [0.0, 1 / 3, 2 / 3])
def test_slab_starts_cover_every_slice_with_monai_count(depth, overlap):
    starts = slab_starts(depth, 3, overlap)
    assert len(starts) == count_slabs(depth, 3, overlap)
    covered = {z for s in starts for z in range(s, s + 3)}
    assert covered >= set(range(depth)) and max(starts) == max(depth - 3, 0)


@pytest.mark.parametrize("overlap,blend", [(1 / 3, "gaussian"), (0.0, "gaussian"), (2 / 3, "constant")])
def test_whole_slice_inputs_give_monai_sliding_window_result(overlap, blend):
    model = tiny_hrfcn()
    volume = np.random.default_rng(0).uniform(0.1, 1.0, (2, 8, 16, 12)).astype(np.float32)
    options = SynthesisOptions(overlap=overlap, blend=blend, precision="fp32")
    mean, std = predict_volume(model, volume, options, CPU, "fp32", 2)
    with torch.inference_mode():
        expected = sliding_window_inference(
            torch.from_numpy(volume)[None], (3, 16, 12), 2, model.network, overlap=(overlap, 0.0, 0.0),
            mode=blend, sigma_scale=(0.125, 1.0, 1.0),
        )[0, 0].numpy()
    assert std is None
    np.testing.assert_allclose(mean[0], expected, atol=1e-5)


def test_slab_windows_shrink_to_the_inputs_and_match_whole_slices_inside():
    """A 3x3x3 convolution sees only its neighbours: cropping each slab to its inputs + margin changes nothing inside."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(2, 1, 3, padding=1)
    shapes: list[tuple[int, ...]] = []
    conv.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    model = model_of(conv)
    volume = np.zeros((2, 9, 96, 80), dtype=np.float32)
    rng = np.random.default_rng(1)
    volume[:, 0:3, 40:44, 30:36] = rng.uniform(0.1, 1, (2, 3, 4, 6))  # a small top of the "brain"
    volume[:, 3:9, 10:90, 5:75] = rng.uniform(0.1, 1, (2, 6, 80, 70))
    options = SynthesisOptions(overlap=1 / 3, precision="fp32")
    cropped, _ = predict_volume(model, volume, options, CPU, "fp32", 1)
    with torch.inference_mode():
        whole = sliding_window_inference(
            torch.from_numpy(volume)[None], (3, 96, 80), 1, conv, overlap=(1 / 3, 0.0, 0.0), mode="gaussian",
            sigma_scale=(0.125, 1.0, 1.0),
        )[0, 0].numpy()
    footprint = np.any(volume != 0, axis=0)
    np.testing.assert_allclose(cropped[0][footprint], whole[footprint], atol=1e-5)
    first_h, first_w = shapes[0][3:]
    assert SLAB_MARGIN == (8, 8)
    assert (first_h, first_w) == (20, 24)  # 4x6 box + 8 each side, rounded up to the multiple of 4
    assert not cropped[0, 0][~np.pad(np.ones((20, 24), bool), ((32, 44), (22, 34)))].any()


def test_tta_is_mean_and_std_over_in_plane_flips_mapped_back():
    model = tiny_hrfcn()
    volume = np.random.default_rng(2).uniform(0.1, 1.0, (2, 5, 16, 12)).astype(np.float32)
    mean, std = predict_volume(model, volume, SynthesisOptions(tta=True, precision="fp32"), CPU, "fp32", 2)
    passes = []
    for axes in ((), (2,), (1,), (1, 2)):  # (D, H, W) axes of the flips
        flipped = np.ascontiguousarray(np.flip(volume, tuple(a + 1 for a in axes)))
        out, _ = predict_volume(model, flipped, SynthesisOptions(precision="fp32"), CPU, "fp32", 2)
        passes.append(np.flip(out, tuple(a + 1 for a in axes)))
    assert std is not None and std.max() > 0
    np.testing.assert_allclose(mean, np.mean(passes, axis=0), atol=1e-5)
    np.testing.assert_allclose(std, np.std(passes, axis=0), atol=1e-5)


def test_onednn_isa_cap_below_bf16_makes_auto_fp32(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not cpu_supports_bf16()
    assert resolve_precision("auto", CPU) == "fp32"


def test_synthesize_array_is_the_slab_loop_clipped_and_calibrated():
    """Synthesis on arrays (no images, no SimpleITK): predict_volume's mean, clipped to [0, 1] and put through the output map."""
    model = tiny_hrfcn()
    model.config.output_map = {"source": [0.0, 0.5, 1.0], "target": [0.0, 0.8, 1.0]}
    volume = np.random.default_rng(2).uniform(0.1, 1.0, (2, 8, 16, 12)).astype(np.float32)
    options = SynthesisOptions(device="cpu", precision="fp32")
    mean, _ = predict_volume(model, volume, options, CPU, "fp32", 2)
    result = synthesize_array(model, volume, options)
    expected = np.interp(np.clip(mean[0], 0, 1), [0.0, 0.5, 1.0], [0.0, 0.8, 1.0])
    np.testing.assert_allclose(result.prediction, expected, atol=1e-6)
    assert (result.device, result.precision, result.uncertainty) == ("cpu", "fp32", None)
    with pytest.raises(InputError, match="multiples of 4"):
        synthesize_array(model, volume[:, :, :15], options)
