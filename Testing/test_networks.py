"""Networks: the slab contract, gradient flow, what each ablation variant is, and FLOP counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from VirtualContrastLib import MODALITIES
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.errors import VirtualContrastError
from VirtualContrastLib.networks import (
    ARCHITECTURES,
    LITE_WIDTH,
    build_network,
    count_flops,
    count_parameters,
    in_plane_multiple,
)
from VirtualContrastLib.networks.blocks import ResBlock

HRFCN_VARIANTS = [name for name in ARCHITECTURES if name.startswith("hrfcn")]


def _config(arch: str, n_inputs: int = 3, width: int = 4, depth: int = 3, **kwargs) -> ModelConfig:
    return ModelConfig(
        architecture=arch, arch_kwargs={"width": width, **kwargs}, inputs=list(MODALITIES[:n_inputs]), slab_depth=depth
    )


def _slab(config: ModelConfig, batch: int = 1, h: int = 16, w: int = 32) -> torch.Tensor:
    return torch.rand(batch, len(config.inputs), config.slab_depth, h, w, generator=torch.Generator().manual_seed(0))


def _conv_input_sizes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, int]]:
    """In-plane size of the tensor each Conv3d receives in one forward pass."""
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        module.register_forward_pre_hook(lambda m, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:])))
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv3d)
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return sizes


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_shape_and_every_parameter_gets_a_finite_gradient(arch):
    config = _config(arch)
    model = build_network(config).train()
    x = _slab(config, batch=2)
    out = model(x)
    assert out.shape == (2, 1, config.slab_depth, 16, 32)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{arch}: parameters without a finite gradient: {missing[:5]}"
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("n_inputs", [1, 2, 3, 4])
@pytest.mark.parametrize("arch", ["hrfcn", "hrfcn_a", "unet3d"])
def test_one_to_four_input_modalities(arch, n_inputs):
    config = _config(arch, n_inputs=n_inputs)
    model = build_network(config).eval()
    with torch.no_grad():
        assert model(_slab(config)).shape == (1, 1, 3, 16, 32)


@pytest.mark.parametrize("depth", [1, 2, 5])
@pytest.mark.parametrize("arch", ["hrfcn", "hrfcn_2d", "unet2d", "unet3d"])
def test_any_slab_depth(arch, depth):
    config = _config(arch, depth=depth)
    with torch.no_grad():
        assert build_network(config).eval()(_slab(config)).shape == (1, 1, depth, 16, 32)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_in_plane_multiple_is_enough_and_sizes_not_multiple_fail(arch):
    config = _config(arch)
    multiple = in_plane_multiple(config)
    model = build_network(config).eval()
    with torch.no_grad():
        assert model(_slab(config, h=3 * multiple, w=2 * multiple)).shape[-2:] == (3 * multiple, 2 * multiple)
        if multiple > 1:
            with pytest.raises(RuntimeError):
                model(_slab(config, h=3 * multiple + 2, w=2 * multiple))


def test_final_model_has_three_stems_three_branches_and_full_exchange():
    model = build_network(_config("hrfcn"))
    assert len(model.stems) == 3 and all(stem.conv[0].in_channels == 1 for stem in model.stems)
    assert set(model.stage3) == set(model.stage4) == {"x1", "x2", "x4"}
    # The paper's equations: F31 <- U2(F22); F32 <- D2(F21); F33 <- D4(F21) (F23 already is D2(F22)).
    assert set(model.fuse3) == {"x2_to_x1", "x1_to_x2", "x1_to_x4"}
    assert set(model.fuse4) == {f"x{t}_to_x{s}" for s in (1, 2, 4) for t in (1, 2, 4) if s != t}
    # Widths w/2w/4w; phi reduces each concatenation to the branch width.
    assert [model.stage4[k].blocks[-1].conv2.out_channels for k in ("x1", "x2", "x4")] == [4, 8, 16]
    assert model.stage4["x2"].blocks[0].conv1.in_channels == 3 * 8
    assert model.head[0].conv1.in_channels == 4 + 8 + 16


def test_model_a_has_a_single_fused_stem():
    model = build_network(_config("hrfcn_a", n_inputs=3))
    assert len(model.stems) == 1 and model.stems[0].conv[0].in_channels == 3


def test_model_b_has_nothing_below_full_resolution():
    config = _config("hrfcn_b")
    model = build_network(config)
    assert in_plane_multiple(config) == 1
    assert not [n for n, _ in model.named_parameters() if "x2" in n or "x4" in n]
    assert not any(m.stride != (1, 1, 1) for m in model.modules() if isinstance(m, nn.Conv3d))
    sizes = _conv_input_sizes(model.eval(), _slab(config, h=17, w=13))
    assert set(sizes.values()) == {(17, 13)}


def test_model_c_has_no_full_resolution_branch():
    config = _config("hrfcn_c")
    model = build_network(config)
    assert "x1" not in model.stage2 and set(model.stage3) == set(model.stage4) == {"x2", "x4"}
    sizes = _conv_input_sizes(model.eval(), _slab(config))
    full = {name.split(".")[0] for name, size in sizes.items() if size == (16, 32)}
    # At full resolution only the stems, the first down-sampling and the output head run.
    assert full == {"stems", "transition", "head"}


def test_model_d_has_no_fusion_in_stages_3_and_4():
    model = build_network(_config("hrfcn_d"))
    assert len(model.fuse3) == 0 and len(model.fuse4) == 0
    for stage in (model.stage3, model.stage4):
        assert all(isinstance(fcn.blocks[0].skip, nn.Identity) for fcn in stage.values())
    assert set(model.fuse5) == {"x2_to_x1", "x4_to_x1"}


def test_2d_version_has_no_cross_slice_kernel_and_slices_are_independent():
    config = _config("hrfcn_2d")
    model = build_network(config).eval()
    assert all(m.kernel_size[0] == 1 for m in model.modules() if isinstance(m, nn.Conv3d))
    x = _slab(config)
    changed = x.clone()
    changed[:, :, 0] = 0.0
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert torch.equal(a[:, :, 1:], b[:, :, 1:]) and not torch.equal(a[:, :, 0], b[:, :, 0])


def test_3d_model_mixes_neighbouring_slices():
    config = _config("hrfcn")
    model = build_network(config).eval()
    x = _slab(config)
    changed = x.clone()
    changed[:, :, 0] = 0.0
    with torch.no_grad():
        assert not torch.allclose(model(x)[:, :, 1], model(changed)[:, :, 1])


def test_unet2d_treats_slices_independently():
    config = _config("unet2d")
    model = build_network(config).eval()
    x = _slab(config)
    changed = x.clone()
    changed[:, :, 2] = 0.0
    with torch.no_grad():
        assert torch.equal(model(x)[:, :, :2], model(changed)[:, :, :2])


def test_checkpointing_gives_the_same_output_and_gradients():
    config = _config("hrfcn")
    plain = build_network(config).train()
    ckpt = build_network(config, checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = _slab(config)
    out_plain, out_ckpt = plain(x), ckpt(x)
    torch.testing.assert_close(out_ckpt, out_plain)
    out_plain.sum().backward()
    out_ckpt.sum().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    assert any(getattr(m, "checkpointing", False) for m in ckpt.modules())
    # A training-only option: a model config that carries it is refused.
    with pytest.raises(VirtualContrastError, match="unknown arch_kwargs \\['checkpointing'\\]"):
        build_network(_config("hrfcn", checkpointing=True))


def test_channels_last_3d_and_bf16_autocast_run():
    config = _config("hrfcn", width=8)
    model = build_network(config).eval()
    x = _slab(config, batch=2)
    with torch.inference_mode():
        reference = model(x)
        model_cl = model.to(memory_format=torch.channels_last_3d)
        out = model_cl(x.to(memory_format=torch.channels_last_3d))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = model_cl(x.to(memory_format=torch.channels_last_3d)).float()
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
    assert out_bf16.shape == reference.shape and torch.isfinite(out_bf16).all()


def test_unknown_architecture_or_argument_is_a_user_error():
    with pytest.raises(VirtualContrastError, match="hrfcn_b"):
        build_network(ModelConfig(architecture="resnet"))
    with pytest.raises(VirtualContrastError, match="depth"):
        build_network(ModelConfig(arch_kwargs={"depth": 2}))
    with pytest.raises(VirtualContrastError, match="width"):
        build_network(ModelConfig(arch_kwargs={"width": 0}))


def test_lite_width_is_the_default_width():
    assert isinstance(LITE_WIDTH, int) and LITE_WIDTH >= 1
    model = build_network(ModelConfig())
    assert model.stems[0].conv[0].out_channels == LITE_WIDTH


def test_flop_count_of_a_single_conv_matches_the_formula():
    cin, cout, d, h, w = 3, 5, 3, 8, 6
    conv = nn.Conv3d(cin, cout, 3, padding=1, bias=False)
    assert count_flops(conv, (2, cin, d, h, w)) == 2 * 2 * cin * cout * 27 * d * h * w


def test_flop_and_parameter_count_of_a_resblock_match_the_formula():
    cin, cout, d, h, w = 6, 4, 3, 8, 6
    block = ResBlock(cin, cout)
    voxels = d * h * w
    macs = (cin * cout * 27 + cout * cout * 27 + cin * cout) * voxels
    assert count_flops(block, (1, cin, d, h, w)) == 2 * macs
    bn = 2 * cout
    assert count_parameters(block) == cin * cout * 27 + bn + cout * cout * 27 + bn + cin * cout + bn
    assert block.training, "counting must not leave the model in eval mode"


def test_flops_on_the_meta_device_equal_flops_on_a_real_tensor():
    config = _config("hrfcn", width=4)
    real = build_network(config)
    with torch.device("meta"):
        meta = build_network(config)
    shape = (1, 3, 3, 16, 12)
    assert count_flops(meta, shape) == count_flops(real, shape) > 0
    assert count_parameters(meta) == count_parameters(real)
