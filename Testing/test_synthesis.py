"""Synthesis engine: exact T1-grid outputs, slab tiling vs whole-volume passes, progress, cancel, missing inputs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import head as make_head
from conftest import rotation, spread_outputs
from VirtualContrastLib.checkpoints import save_checkpoint
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.enhancement import subtraction_map
from VirtualContrastLib.errors import CancelledError, DeviceError, InputError, MissingModalityError
from VirtualContrastLib.networks import build_network
from VirtualContrastLib.registry import LoadedModel
from VirtualContrastLib.synthesis import (
    SynthesisOptions,
    count_slabs,
    cpu_supports_bf16,
    load_auxiliaries,
    predict_volume,
    resolve_precision,
    synthesize,
)

FP32 = dict(device="cpu", precision="fp32")


def tiny_model(inputs=("t1", "t2", "adc"), architecture="hrfcn", slab_depth=3, seed=0) -> LoadedModel:
    """A random width-4 network in eval mode with non-trivial BatchNorm statistics and outputs in (0, 1)."""
    torch.manual_seed(seed)
    config = ModelConfig(architecture=architecture, arch_kwargs={"width": 4}, inputs=list(inputs), slab_depth=slab_depth)
    network = build_network(config)
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    network = spread_outputs(network.eval(), len(inputs), seed)
    return LoadedModel(name=f"tiny-{architecture}", config=config, network=network, sha256="", path=Path("tiny.pt"))


def head(shape=(14, 24, 20), spacing=(2.0, 2.0, 3.5), origin=(-20.0, -24.0, -24.0), direction=None, seed=0, level=100.0) -> sitk.Image:
    """This module's head: with a bright blob, on an identity-direction grid unless told otherwise."""
    return make_head(shape, spacing, origin, direction or rotation((0, 0, 0)), seed, level, blob=True)


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing()
            and a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection())


def test_outputs_land_exactly_on_an_oblique_anisotropic_t1_grid():
    t1 = head(spacing=(1.9, 2.3, 4.0), origin=(-18.5, -27.0, -25.0), direction=rotation((18, -7, 25)))
    t2 = head(shape=(30, 22, 22), spacing=(2.1, 2.1, 1.6), origin=(-21.0, -26.0, -23.0), direction=rotation((0, 5, 0)), seed=1, level=300.0)
    adc = head(shape=(12, 18, 18), spacing=(2.6, 2.6, 4.5), origin=(-22.0, -23.0, -26.0), seed=2, level=0.8)
    result = synthesize({"t1": t1, "t2": t2, "adc": adc}, tiny_model(), options=SynthesisOptions(tta=True, **FP32))
    for image in (result.synthetic, result.subtraction, result.uncertainty, result.brain_mask):
        assert same_grid(image, t1)
        assert image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkUInt8)
    mask = sitk.GetArrayFromImage(result.brain_mask) > 0
    synthetic = sitk.GetArrayFromImage(result.synthetic)
    assert np.all(synthetic[~mask] == 0) and np.all(sitk.GetArrayFromImage(result.subtraction)[~mask] == 0)
    uncertainty = sitk.GetArrayFromImage(result.uncertainty)
    assert uncertainty.min() >= 0 and uncertainty[mask].max() > 0 and np.all(uncertainty[~mask] == 0)


def test_synthetic_is_in_the_t1_window_and_subtraction_is_the_enhancement_map():
    t1 = head(direction=rotation((0, 0, 30)))
    t2 = head(seed=3, level=250.0)
    result = synthesize({"t1": t1, "t2": t2}, tiny_model(inputs=("t1", "t2")), options=SynthesisOptions(**FP32))
    mask = sitk.GetArrayFromImage(result.brain_mask) > 0
    t1_array = sitk.GetArrayFromImage(t1)
    low, high = np.percentile(t1_array[mask], [0.5, 99.5])
    synthetic = sitk.GetArrayFromImage(result.synthetic)[mask]
    assert synthetic.min() >= low - 1e-3 and synthetic.max() <= high + 1e-3
    # The engine's map is the one evaluation computes from a CE-T1 and the user's T1.
    expected = subtraction_map(sitk.GetArrayFromImage(result.synthetic), t1_array, mask)
    assert np.allclose(sitk.GetArrayFromImage(result.subtraction), expected, atol=1e-4)
    assert result.precision == "fp32" and result.device == "cpu"


def test_the_output_map_of_the_model_config_is_applied_to_the_synthetic_and_its_spread():
    t1, t2 = head(direction=rotation((0, 0, 30))), head(seed=3, level=250.0)
    plain = tiny_model(inputs=("t1", "t2"))
    output_map = {"source": [0.0, 0.5, 1.0], "target": [0.0, 0.8, 1.0]}
    mapped = LoadedModel(name="mapped", config=replace(plain.config, output_map=output_map), network=plain.network,
                         sha256="", path=Path("mapped.pt"))
    options = SynthesisOptions(tta=True, **FP32)
    before, after = (synthesize({"t1": t1, "t2": t2}, model, options=options) for model in (plain, mapped))
    mask = sitk.GetArrayFromImage(before.brain_mask) > 0
    low, high = np.percentile(sitk.GetArrayFromImage(t1)[mask], [0.5, 99.5])
    unit = (sitk.GetArrayFromImage(before.synthetic)[mask] - low) / (high - low)
    expected = np.interp(unit, output_map["source"], output_map["target"]) * (high - low) + low
    assert np.allclose(sitk.GetArrayFromImage(after.synthetic)[mask], expected, atol=1e-3 * (high - low))
    assert not np.allclose(sitk.GetArrayFromImage(after.synthetic)[mask], sitk.GetArrayFromImage(before.synthetic)[mask])
    # Below 0.5 the map's slope is 1.6, above it 0.4: the spread scales with it.
    spread_before, spread_after = (sitk.GetArrayFromImage(r.uncertainty)[mask] for r in (before, after))
    low_half = (unit < 0.4) & (spread_before > 0)
    assert np.allclose(spread_after[low_half], 1.6 * spread_before[low_half], rtol=0.05, atol=1e-4 * (high - low))
    # The subtraction map is computed from the calibrated synthetic.
    expected_map = subtraction_map(sitk.GetArrayFromImage(after.synthetic), sitk.GetArrayFromImage(t1), mask)
    assert np.allclose(sitk.GetArrayFromImage(after.subtraction), expected_map, atol=1e-4)


def test_3d_tiling_without_overlap_equals_separate_slab_passes():
    model = tiny_model()
    volume = np.random.default_rng(0).random((3, 9, 16, 24), dtype=np.float32)
    tiled, _ = predict_volume(model, volume, SynthesisOptions(overlap=0.0, blend="constant", **FP32), torch.device("cpu"), "fp32", batch_size=2)
    with torch.no_grad():
        slabs = [model.network(torch.from_numpy(volume[None, :, d : d + 3]))[0, 0].numpy() for d in (0, 3, 6)]
    assert np.allclose(tiled[0], np.concatenate(slabs), atol=1e-5)


def test_single_slab_volume_equals_one_whole_volume_pass():
    model = tiny_model()
    volume = np.random.default_rng(1).random((3, 3, 20, 12), dtype=np.float32)
    tiled, _ = predict_volume(model, volume, SynthesisOptions(**FP32), torch.device("cpu"), "fp32", batch_size=1)
    with torch.no_grad():
        whole = model.network(torch.from_numpy(volume[None]))[0, 0].numpy()
    assert np.allclose(tiled[0], whole, atol=1e-5)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_2d_model_with_default_overlap_equals_whole_volume_pass(blend):
    # Slices never mix in a 2D model, so overlapping slabs predict each slice identically and any
    # normalized blending must give the whole-volume pass. (A 3D model's slab edges see zero padding,
    # so overlapping 3D slabs legitimately differ from a whole-volume pass.)
    model = tiny_model(architecture="hrfcn_2d")
    volume = np.random.default_rng(2).random((3, 11, 16, 20), dtype=np.float32)
    tiled, _ = predict_volume(model, volume, SynthesisOptions(blend=blend, **FP32), torch.device("cpu"), "fp32", batch_size=3)
    with torch.no_grad():
        whole = model.network(torch.from_numpy(volume[None]))[0, 0].numpy()
    assert np.allclose(tiled[0], whole, atol=1e-5)


def test_count_slabs_matches_monai_windows():
    calls = []
    model = tiny_model(inputs=("t1",))
    volume = np.random.default_rng(0).random((1, 13, 8, 8), dtype=np.float32)
    predict_volume(model, volume, SynthesisOptions(**FP32), torch.device("cpu"), "fp32", 1, on_batch=calls.append)
    assert len(calls) == count_slabs(13, 3, 1 / 3) == 6
    assert count_slabs(192, 3, 1 / 3) == 96 and count_slabs(192, 3, 0.0) == 64 and count_slabs(2, 3, 0.5) == 1


def test_progress_is_monotonic_and_reaches_one():
    seen = []
    synthesize({"t1": head(), "t2": head(seed=1)}, tiny_model(inputs=("t1", "t2")),
               options=SynthesisOptions(batch_size=1, **FP32), progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert len(fractions) > 3 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(isinstance(m, str) and m for _, m in seen)


def test_cancel_after_first_slab_raises():
    slabs = []

    def cancel() -> bool:
        return len(slabs) >= 1

    with pytest.raises(CancelledError, match="cancelled"):
        synthesize({"t1": head(), "t2": head(seed=1)}, tiny_model(inputs=("t1", "t2")),
                   options=SynthesisOptions(batch_size=1, **FP32), progress=lambda f, m: slabs.append(f), cancel=cancel)
    assert len(slabs) == 1


def test_missing_input_policies(bundled_models):
    model = tiny_model(inputs=("t1", "t2", "adc"))
    images = {"t1": head(), "adc": head(seed=2, level=0.8)}
    with pytest.raises(MissingModalityError, match="needs T2.*'auxiliary'.*'zeros'"):
        synthesize(images, model, options=SynthesisOptions(**FP32))
    zero = synthesize(images, model, options=SynthesisOptions(missing_policy="zeros", **FP32))
    assert any("T2 was not given and was zero-filled" in note for note in zero.notes)

    folder = bundled_models([])
    with pytest.raises(MissingModalityError, match="no bundled auxiliary model predicts it"):
        load_auxiliaries(model, images, "auxiliary")
    with pytest.raises(MissingModalityError, match="no auxiliary model that predicts it from ADC\\+T1 was given"):
        synthesize(images, model, options=SynthesisOptions(missing_policy="auxiliary", **FP32))

    aux_config = ModelConfig(architecture="hrfcn", arch_kwargs={"width": 4}, inputs=["t1"], target="t2")
    aux_network = spread_outputs(build_network(aux_config).eval(), 1)
    digest = save_checkpoint(folder / "aux.pt", aux_config, aux_network.state_dict())
    entry = {"name": "t2-from-t1", "file": "aux.pt", "sha256": digest, "inputs": ["t1"], "output": "t2", "role": "auxiliary"}
    (folder / "models.json").write_text(json.dumps({"models": [entry]}), encoding="utf-8")
    seen = []
    auxiliaries = load_auxiliaries(model, images, "auxiliary")
    assert load_auxiliaries(model, images, "zeros") == {} and set(auxiliaries) == {"t2"}
    aux = synthesize(images, model, options=SynthesisOptions(missing_policy="auxiliary", **FP32), progress=lambda f, m: seen.append(f),
                     auxiliaries=auxiliaries)
    assert any("T2 was not given: predicted from T1 by auxiliary model t2-from-t1" in note for note in aux.notes)
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert not np.allclose(sitk.GetArrayFromImage(aux.synthetic), sitk.GetArrayFromImage(zero.synthetic))


def test_bad_options_and_devices_are_refused():
    images = {"t1": head()}
    model = tiny_model(inputs=("t1",))
    with pytest.raises(InputError, match="overlap must be in"):
        synthesize(images, model, options=SynthesisOptions(overlap=1.0))
    with pytest.raises(InputError, match="unknown precision"):
        synthesize(images, model, options=SynthesisOptions(precision="int8"))
    with pytest.raises(DeviceError, match="unknown device"):
        synthesize(images, model, options=SynthesisOptions(device="gpu7"))
    with pytest.raises(InputError, match="unknown modalities"):
        synthesize({"t1": head(), "pd": head()}, model)


def test_auto_precision_follows_cpu_bf16_support_and_bf16_stays_close_to_fp32():
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if cpu_supports_bf16() else "fp32")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    images = {"t1": head(), "t2": head(seed=1, level=200.0)}
    model = tiny_model(inputs=("t1", "t2"))
    fp32 = sitk.GetArrayFromImage(synthesize(images, model, options=SynthesisOptions(**FP32)).synthetic)
    bf16 = synthesize(images, model, options=SynthesisOptions(device="cpu", precision="bf16"))
    assert bf16.precision == "bf16"
    difference = np.abs(sitk.GetArrayFromImage(bf16.synthetic) - fp32)
    assert difference.max() < 0.05 * fp32.max()


def snapshot(network: torch.nn.Module) -> list[tuple]:
    """Where and how every parameter and buffer of a network is: device, layout, storage and values."""
    return [(name, t.device, t.dtype, t.stride(), t.data_ptr(), t.detach().clone())
            for name, t in [*network.named_parameters(), *network.named_buffers()]]


def test_synthesize_leaves_the_callers_network_where_and_how_it_was():
    model = tiny_model(inputs=("t1", "t2"))
    model.network.train()
    before = snapshot(model.network)
    synthesize({"t1": head(), "t2": head(seed=1, level=200.0)}, model, options=SynthesisOptions(**FP32))
    after = snapshot(model.network)
    assert model.network.training
    for (name, *was, values), (_, *now, new_values) in zip(before, after):
        assert was == now and torch.equal(values, new_values), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_out_of_memory_finishes_on_a_cpu_copy_and_leaves_the_network_on_the_gpu():
    model = tiny_model(inputs=("t1", "t2"))
    model.network.to("cuda")

    def out_of_memory(batch: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("forced by the test")

    model.network.forward = out_of_memory  # only this instance: the CPU copy is built afresh and runs
    result = synthesize({"t1": head(), "t2": head(seed=1, level=200.0)}, model, options=SynthesisOptions(device="cuda", precision="fp32"))
    assert result.device == "cpu" and any("finished on the CPU" in note for note in result.notes)
    assert all(p.device.type == "cuda" for p in model.network.parameters())
