"""The training loss terms on hand-made tensors, and the two-stage schedule."""

from __future__ import annotations

import pytest
import torch

from model_training.losses import PAPER_SCHEDULE, VirtualContrastLoss, enhancement_mask, stage_at, total_epochs
from model_training.settings import load_config
from model_training.train import Trainer


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    t1 = torch.rand((2, 1, 3, 32, 24), generator=generator) * 0.5
    target = t1.clone()
    target[:, :, :, 8:16, 8:16] += 0.4  # an "enhancing" block: Y − X_T1 = 0.4 > δ
    prediction = target + 0.05 * torch.randn(target.shape, generator=generator)
    return prediction, target, t1


def test_enhancement_mask_thresholds_difference() -> None:
    _, target, t1 = _pair()
    mask = enhancement_mask(target, t1, delta=0.1)
    assert mask.sum() == 2 * 3 * 8 * 8
    assert enhancement_mask(target, t1, delta=0.1, delta_max=0.3).sum() == 0


def test_local_loss_ignores_unmasked_voxels_and_averages_over_all_voxels() -> None:
    prediction, target, t1 = _pair()
    loss = VirtualContrastLoss()
    before = loss.terms(prediction, target, t1)["local"]
    changed = prediction.clone()
    mask = enhancement_mask(target, t1, 0.1).bool()
    changed[~mask] += 0.3
    assert torch.allclose(loss.terms(changed, target, t1)["local"], before)
    # The authors' normalisation: mean over every voxel of the slab, not over |M|.
    expected = ((prediction - target).abs() * mask).sum() / prediction.numel()
    assert torch.allclose(before, expected)
    changed_inside = prediction.clone()
    changed_inside[mask] += 0.3
    assert loss.terms(changed_inside, target, t1)["local"] > before


def test_mae_and_ssim_terms() -> None:
    prediction, target, t1 = _pair()
    loss = VirtualContrastLoss()
    terms = loss.terms(prediction, target, t1)
    assert torch.allclose(terms["mae"], (prediction - target).abs().mean())
    assert loss.terms(target, target, t1)["ssim"].abs() < 1e-6
    assert terms["ssim"] > 0.01
    total, _ = VirtualContrastLoss(weights=(0.1, 0.1, 10.0))(prediction, target, t1)
    assert torch.allclose(total, 0.1 * terms["mae"] + 0.1 * terms["ssim"] + 10.0 * terms["local"])


def test_ssim_is_per_slice() -> None:
    """Swapping the depth order of both images leaves a per-slice SSIM unchanged."""
    prediction, target, t1 = _pair(1)
    loss = VirtualContrastLoss()
    flipped = loss.terms(prediction.flip(2), target.flip(2), t1.flip(2))["ssim"]
    assert torch.allclose(flipped, loss.terms(prediction, target, t1)["ssim"], atol=1e-6)


def test_paper_schedule_switches_at_epoch_40() -> None:
    assert total_epochs(PAPER_SCHEDULE) == 50
    assert stage_at(PAPER_SCHEDULE, 39)[1].weights == (1.0, 1.0, 1.0)
    assert stage_at(PAPER_SCHEDULE, 40)[1].weights == (0.1, 0.1, 10.0)
    with pytest.raises(ValueError):
        stage_at(PAPER_SCHEDULE, 50)


def test_trainer_applies_stage_weights_and_learning_rate(tmp_path) -> None:
    config = load_config("final", {"model": {"arch_kwargs": {"width": 2}}})
    trainer = Trainer(config, tmp_path, device="cpu", progress=False)
    trainer._enter_stage(39)
    first_optimizer = trainer.optimizer
    assert trainer.loss.weights == (1.0, 1.0, 1.0)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    trainer._enter_stage(40)
    assert trainer.loss.weights == (0.1, 0.1, 10.0)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)
    # The authors re-compiled the model for phase 2: a fresh Adam state.
    assert trainer.optimizer is not first_optimizer


def test_local_loss_uses_the_given_region_instead_of_the_difference_mask() -> None:
    torch.manual_seed(0)
    target = torch.rand(1, 1, 3, 16, 16)
    t1 = target.clone()  # no difference anywhere: M would be empty
    prediction = target + 0.2
    region = torch.zeros_like(target)
    region[..., 4:8, 4:8] = 1
    loss = VirtualContrastLoss()
    assert loss.terms(prediction, target, t1)["local"] == 0
    local = loss.terms(prediction, target, t1, region)["local"]
    assert torch.isclose(local, torch.tensor(0.2 * region.mean().item()), atol=1e-5)


def test_selection_rule_weighs_enhancement() -> None:
    """Under brain_et_psnr a checkpoint that renders the brain but not the enhancement loses."""
    from model_training.settings import ConfigError
    from model_training.train import selection_score

    brain_only = {"val_brain_psnr": 20.0, "val_enhancing_tumour_psnr": 6.0}
    both = {"val_brain_psnr": 18.0, "val_enhancing_tumour_psnr": 12.0}
    assert selection_score(brain_only, "brain_psnr") > selection_score(both, "brain_psnr")
    assert selection_score(both, "brain_et_psnr") == 15.0 > selection_score(brain_only, "brain_et_psnr")
    assert selection_score({"val_brain_psnr": 20.0, "val_enhancing_tumour_psnr": float("nan")}, "brain_et_psnr") is None
    with pytest.raises(ConfigError, match="validation.select must be one of"):
        load_config("tiny", {"validation": {"select": "brain_ssim"}})


def test_histogram_term_sees_the_intensity_distribution_not_where_it_is() -> None:
    """The histogram term is 0 for any rearrangement of the target's brain values, and sees a compressed top."""
    from model_training.losses import histogram_distance

    _, target, t1 = _pair(2)
    brain = torch.zeros_like(target, dtype=torch.bool)
    brain[..., 4:28, 4:20] = True
    shuffled = target.clone()
    for item in range(target.shape[0]):
        values = shuffled[item][brain[item]]
        shuffled[item][brain[item]] = values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(item))]
    assert histogram_distance(shuffled, target, brain) < 1e-7
    assert (shuffled - target).abs().mean() > 0.05  # …which MAE would punish
    compressed = torch.where(target > 0.5, 0.5 + 0.5 * (target - 0.5), target)
    expected = torch.stack([(target[i][brain[i]] - compressed[i][brain[i]]).abs().mean() for i in range(2)]).mean()
    assert torch.isclose(histogram_distance(compressed, target, brain), expected)
    # Voxels outside the brain do not count.
    outside = compressed.clone()
    outside[~brain] += 0.3
    assert torch.isclose(histogram_distance(outside, target, brain), expected)


def test_histogram_term_is_weighted_into_the_total_and_configured(tmp_path) -> None:
    from model_training.settings import ConfigError

    prediction, target, t1 = _pair(3)
    brain = torch.ones_like(target, dtype=torch.bool)
    terms = VirtualContrastLoss().terms(prediction, target, t1, None, brain)
    assert "histogram" not in terms  # off by default: the paper's loss unchanged
    total, terms = VirtualContrastLoss(histogram_weight=2.0)(prediction, target, t1, None, brain)
    assert torch.allclose(total, terms["mae"] + terms["ssim"] + terms["local"] + 2.0 * terms["histogram"])
    with pytest.raises(ValueError, match="brain mask"):
        VirtualContrastLoss(histogram_weight=2.0)(prediction, target, t1)
    assert load_config("tiny", {"loss": {"histogram": 0.5}}).histogram_weight == 0.5
    with pytest.raises(ConfigError, match="loss.histogram must be >= 0"):
        load_config("tiny", {"loss": {"histogram": -1}})
    # The trainer hands the slabs' brain mask to the loss.
    trainer = Trainer(load_config("tiny", {"loss": {"histogram": 1.0}}), tmp_path, device="cpu", progress=False)
    generator = torch.Generator().manual_seed(4)
    batch = {"inputs": torch.rand((2, 3, 3, 32, 32), generator=generator), "target": torch.rand((2, 1, 3, 32, 32), generator=generator),
             "t1": torch.rand((2, 1, 3, 32, 32), generator=generator), "mask": torch.ones((2, 1, 3, 32, 32), dtype=torch.uint8)}
    values = trainer.train_step(batch)
    assert values["histogram"] > 0 and values["loss"] > values["mae"] + values["ssim"]


def test_detection_loss_weighs_each_voxels_bce_term() -> None:
    from model_training.losses import detection_loss

    target = torch.zeros(1, 1, 4, 4, 4)
    target[..., 0, 0, 0] = 1.0
    brain = torch.ones_like(target, dtype=torch.bool)
    logits = torch.full_like(target, -3.0)
    logits[..., 1, 1, 1] = 3.0  # one confident false positive
    plain = detection_loss(logits, target, brain)
    assert detection_loss(logits, target, brain, torch.ones_like(target)) == pytest.approx(float(plain))
    weight = torch.ones_like(target)
    weight[..., 1, 1, 1] = 3.0  # e.g. necrosis next to the rim
    elsewhere = torch.ones_like(target)
    elsewhere[..., 2, 2, 2] = 3.0  # a voxel already right
    assert float(detection_loss(logits, target, brain, weight)) > float(detection_loss(logits, target, brain, elsewhere)) > float(plain)


def test_parts_loss_rewards_each_part_and_ignores_voxels_outside_the_brain() -> None:
    from model_training.losses import parts_loss

    parts = torch.zeros(1, 1, 4, 4, 4, dtype=torch.uint8)
    parts[..., 0, :, :] = 1  # necrosis
    parts[..., 1, :, :] = 2  # oedema
    parts[..., 2, :2, :] = 3  # enhancing
    brain = torch.ones_like(parts, dtype=torch.bool)
    right = torch.nn.functional.one_hot(parts[:, 0].long(), 4).movedim(-1, 1).float() * 12 - 6
    assert float(parts_loss(right, parts, brain)) < 0.05
    # Calling the enhancing rim necrosis is wrong even though both are tumour.
    swapped = right.clone()
    swapped[:, [1, 3]] = swapped[:, [3, 1]]
    assert float(parts_loss(swapped, parts, brain)) > 1.0
    brain[..., 3, :, :] = False  # logits outside the brain do not count
    noisy = right.clone()
    noisy[..., 3, :, :] = 5.0
    assert float(parts_loss(noisy, parts, brain)) == pytest.approx(float(parts_loss(right, parts, brain)))
    weight = torch.ones(1, 1, 4, 4, 4)
    weight[..., 0, :, :] = 3.0  # necrosis weighed three times
    assert float(parts_loss(swapped, parts, brain, weight)) > float(parts_loss(swapped, parts, brain))
