"""The residual CE-T1 output, the enhancement-detection head and the measures that judge them.

Network options (``residual``, ``detection``), the gate that makes the CE-T1, its map and the overlay agree
with the head, the voxel AUCs, lesion F1 and sharpness, the detection loss and target, MONAI's robustness
augmentation, the gated (clinical) selection rule, initialization from a model without the new heads, and
the detection floor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from conftest import ball, head
from model_training.losses import VirtualContrastLoss, detection_loss
from model_training.sampling import SamplingOptions, SlabDataset, detection_target, robust_augment
from model_training.train import initialize_from, selection_score
from VirtualContrastLib.checkpoints import save_checkpoint
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.detection_floor import fit_detection_floor, floor_map
from VirtualContrastLib.enhancement import ENHANCEMENT_THRESHOLD, GATE_CAP, enhancement_metrics, gate_enhancement, subtraction_map, voxel_auc
from VirtualContrastLib.errors import VirtualContrastError
from VirtualContrastLib.metrics import sharpness_ratio
from VirtualContrastLib.networks import build_network, output_channels
from VirtualContrastLib.registry import LoadedModel
from VirtualContrastLib.synthesis import SynthesisOptions, synthesize

NEW = {"width": 4, "residual": True, "detection": True}


def _config(**arch) -> ModelConfig:
    return ModelConfig(arch_kwargs={"width": 4, **arch}, inputs=["t1", "t2"])


def test_an_untrained_residual_network_returns_the_t1_and_a_low_enhancement_prior() -> None:
    torch.manual_seed(0)
    network = build_network(_config(residual=True, detection=True)).eval()
    x = torch.rand(2, 2, 3, 16, 12)
    with torch.no_grad():
        out = network(x)
    assert out.shape == (2, 2, 3, 16, 12) and output_channels(_config(detection=True)) == 2
    assert torch.equal(out[:, 0], x[:, 0])  # the identity floor, to the bit: the T1 passes unchanged
    assert float(torch.sigmoid(out[:, 1]).max()) < 0.05
    plain = build_network(_config()).eval()
    with torch.no_grad():
        assert plain(x).shape == (2, 1, 3, 16, 12) and not torch.equal(plain(x)[:, 0], x[:, 0])


@pytest.mark.parametrize("arch_kwargs,architecture", [({"width": 4, "residual": "yes"}, "hrfcn"),
                                                      ({"width": 4, "detection": True}, "unet3d")])
def test_bad_head_options_are_user_errors(arch_kwargs: dict, architecture: str) -> None:
    with pytest.raises(VirtualContrastError, match="arch_kwargs"):
        build_network(ModelConfig(architecture=architecture, arch_kwargs=arch_kwargs, inputs=["t1"]))


def test_the_gate_shows_enhancement_only_where_the_head_says_so_and_image_and_map_agree() -> None:
    rng = np.random.default_rng(0)
    shape = (24, 40, 40)
    brain = ball(shape, (12, 20, 20), 18)
    t1 = np.where(brain, 100 + 10 * rng.standard_normal(shape), 0).astype(np.float32)
    ce = 1.2 * t1
    kept, dropped = ball(shape, (12, 12, 20), 4), ball(shape, (12, 28, 20), 4)
    ce[kept | dropped] += 80
    probability = np.where(kept, 0.9, 0.1).astype(np.float32)
    gated, shown = gate_enhancement(ce, t1, brain, probability, 0.5)
    assert (shown[kept] > ENHANCEMENT_THRESHOLD).mean() > 0.9
    # Only enhancement the head does not confirm goes (held at T/2): the dropped ball and a few noise voxels that
    # read above T; every other voxel keeps its synthesized value, so the image's window does not move.
    assert shown[dropped].max() <= GATE_CAP and (shown[brain & ~kept] <= ENHANCEMENT_THRESHOLD).all()
    changed = gated != ce
    assert changed[dropped].mean() > 0.9 and np.count_nonzero(changed & ~dropped) < 1e-3 * brain.sum()
    # The image says the same as the map: its own subtraction map has no enhancement where the head says no.
    own = subtraction_map(gated, t1, brain)
    assert (own[dropped] > ENHANCEMENT_THRESHOLD).mean() < 0.05
    assert np.array_equal(own[kept] > ENHANCEMENT_THRESHOLD, shown[kept] > ENHANCEMENT_THRESHOLD)
    assert np.array_equal(gated[kept], ce[kept])


def test_voxel_auc_lesion_f1_and_sharpness_follow_their_definitions() -> None:
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.3])
    positive = np.array([1, 1, 0, 0, 0], bool)
    assert voxel_auc(scores, positive, ~positive) == 1.0
    assert voxel_auc(-scores, positive, ~positive) == 0.0
    assert np.isnan(voxel_auc(scores, positive, np.zeros(5, bool)))

    shape = (20, 48, 48)
    brain = np.ones(shape, bool)
    seg = np.zeros(shape, np.int16)
    lesions = [ball(shape, (10, 12, 12), 4), ball(shape, (10, 36, 36), 4)]
    seg[lesions[0] | lesions[1]] = 3
    seg[ball(shape, (10, 12, 36), 4)] = 1  # necrosis: tumour that does not enhance
    the_map = np.zeros(shape, np.float32)
    the_map[lesions[0]] = 0.3  # one lesion found, one missed
    the_map[ball(shape, (10, 36, 12), 3.5)] = 0.3  # a false blob far from the tumour
    result = enhancement_metrics(the_map, np.zeros(shape, np.float32), seg, brain)
    assert (result["lesions"], result["lesions_detected"], result["false_blobs"]) == (2, 1, 1)
    assert result["lesion_f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert 0.5 < result["auc_brain"] < 1.0 and result["auc_tumour"] == pytest.approx(0.75)

    image = np.random.default_rng(0).random(shape).astype(np.float32)
    assert sharpness_ratio(image, image, brain) == pytest.approx(1.0)
    assert sharpness_ratio(ndimage.gaussian_filter(image, 2), image, brain) < 0.3


def test_detection_loss_rewards_the_right_voxels_and_enters_the_total() -> None:
    target = torch.zeros(2, 1, 3, 16, 16)
    target[:, :, 1, 4:8, 4:8] = 1
    brain = torch.ones_like(target)
    right = torch.where(target > 0, 10.0, -10.0)
    assert float(detection_loss(right, target, brain)) < 0.05 < float(detection_loss(-right, target, brain))
    # Outside the brain nothing counts.
    assert float(detection_loss(right.masked_fill(brain == 0, 0), target, brain)) == pytest.approx(float(detection_loss(right, target, brain)))

    prediction = torch.cat([torch.rand(2, 1, 3, 16, 16), right], dim=1)
    loss = VirtualContrastLoss(detection_weight=2.0)
    total, terms = loss(prediction, torch.rand(2, 1, 3, 16, 16), torch.rand(2, 1, 3, 16, 16), brain=brain, enhancing=target)
    expected = terms["mae"] + terms["ssim"] + terms["local"] + 2.0 * terms["detection"]
    assert float(total) == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="enhancement target"):
        loss(prediction, torch.rand(2, 1, 3, 16, 16), torch.rand(2, 1, 3, 16, 16))


def _case(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (10, 32, 32)
    mask = ball(shape, (5, 16, 16), 14).astype(np.uint8)
    t1 = np.where(mask, rng.uniform(0.3, 0.6, shape), 0).astype(np.float32)
    t1c = t1.copy()
    labels = np.zeros(shape, np.int16)
    labels[4:7, 8:12, 8:12] = 3
    labels[4:7, 20:24, 8:12] = 1  # necrosis that (here) brightens on the CE-T1: still not enhancement
    vessel = (slice(4, 7), slice(8, 12), slice(20, 24))
    t1c[labels > 0] += 0.4
    t1c[vessel] += 0.4
    return {"case_id": f"c{seed}", "mask": mask, "labels": labels, "norm_t1": t1, "norm_t2": t1, "norm_t1c": t1c, "vessel": vessel}


def test_detection_target_is_enhancing_tumour_plus_enhancement_outside_the_tumour() -> None:
    case = _case()
    target = detection_target(case)
    assert target[case["labels"] == 3].all() and not target[case["labels"] == 1].any()
    assert target[case["vessel"]].mean() > 0.9
    assert target[case["labels"] == 0].sum() <= target[case["vessel"]].size + 5

    config = ModelConfig(arch_kwargs=NEW, inputs=["t1", "t2"])
    options = SamplingOptions(slabs_per_epoch=6, enhancement_fraction=1.0, min_enhancing_voxels=4, crop=(16, 16), robust_augment=True)
    dataset = SlabDataset([case], config, options, multiple=4)
    for index in range(6):
        item = dataset[index]
        assert item["enhancing"].shape == item["target"].shape and item["enhancing"].sum() > 0
        assert not item["inputs"][:, item["mask"][0] == 0].any()
        assert float(item["inputs"].min()) >= 0 and float(item["inputs"].max()) <= 1


def test_robust_augmentation_changes_each_input_inside_the_brain_only() -> None:
    case = _case()
    inputs = np.stack([case["norm_t1"], case["norm_t2"]])
    brain = case["mask"] > 0
    outs = [robust_augment(inputs, brain, np.random.default_rng(seed)) for seed in range(8)]
    assert any(not np.allclose(out, inputs) for out in outs)
    assert all(not out[:, ~brain].any() and out.min() >= 0 and out.max() <= 1 for out in outs)
    assert np.array_equal(robust_augment(inputs, brain, np.random.default_rng(3)), outs[3])  # reproducible


def test_clinical_selection_needs_lesions_found_and_the_identity_floor() -> None:
    row = {"val_enhancement_lesion_f1": 0.5, "val_enhancement_auc_brain": 0.9, "val_brain_psnr": 15.0,
           "val_brain_identity_psnr": 14.0, "val_enhancement_lesions_detected": 0.5}
    assert selection_score(row, "clinical") == pytest.approx(0.7)
    assert selection_score({**row, "val_brain_psnr": 13.9}, "clinical") is None
    assert selection_score({**row, "val_enhancement_lesions_detected": 0.0}, "clinical") is None
    assert selection_score({k: v for k, v in row.items() if k != "val_brain_identity_psnr"}, "clinical") is None


def _seeded(tmp_path: Path, source: ModelConfig, config: ModelConfig) -> tuple[dict, dict]:
    """State dicts of a network built from ``config`` and seeded from a saved random ``source`` network, and of that source."""
    network = build_network(source)
    save_checkpoint(tmp_path / "source.pt", source, network.state_dict())
    seeded = build_network(config)
    initialize_from(seeded, config, str(tmp_path / "source.pt"))
    return seeded.state_dict(), network.state_dict()


def test_a_plain_model_seeds_every_tensor_but_the_new_heads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    plain = ModelConfig(arch_kwargs={"width": 4}, inputs=["t1", "t2"])
    ours, theirs = _seeded(tmp_path, plain, ModelConfig(arch_kwargs=NEW, inputs=["t1", "t2"]))
    for name in ours:
        if name.startswith("head.1."):
            assert ours[name].shape[0] == 2
        else:
            assert torch.equal(ours[name], theirs[name]), name
    assert not ours["head.1.weight"][0].any()  # the residual still starts at the identity floor


def test_synthesis_with_a_detection_head_returns_agreeing_outputs() -> None:
    torch.manual_seed(0)
    config = ModelConfig(arch_kwargs=NEW, inputs=["t1", "t2"])
    network = build_network(config).eval()
    with torch.no_grad():  # the head says "enhancing", p = sigmoid(3) = 0.953, everywhere
        network.head[1].bias[1] = 3.0
        network.head[1].weight[1].zero_()
    t1, t2 = head(blob=True), head(seed=1)
    model = LoadedModel(name="resdet", config=config, network=network, sha256="", path=Path("resdet.pt"))
    result = synthesize({"t1": t1, "t2": t2}, model, options=SynthesisOptions(device="cpu", precision="fp32"))
    probability = sitk.GetArrayFromImage(result.probability)
    brain = sitk.GetArrayFromImage(result.brain_mask) > 0
    assert np.allclose(probability[brain], 1 / (1 + np.exp(-3.0)), atol=1e-4) and not probability[~brain].any()
    shown = sitk.GetArrayFromImage(result.subtraction)
    own = subtraction_map(sitk.GetArrayFromImage(result.synthetic), sitk.GetArrayFromImage(t1), brain)
    # p = 0.95 >= threshold 0.5: nothing is gated away. (The engine fits on its working copy of the T1 mapped
    # back to the grid, which differs from the file's at a few edge voxels: hence a tolerance far below T.)
    np.testing.assert_allclose(shown, own, atol=5e-3)
    assert ((shown > ENHANCEMENT_THRESHOLD) == (own > ENHANCEMENT_THRESHOLD)).all()
    strict = LoadedModel(name="strict", config=ModelConfig(arch_kwargs=NEW, inputs=["t1", "t2"], detection_threshold=0.99),
                         network=network, sha256="", path=Path("strict.pt"))
    gated = synthesize({"t1": t1, "t2": t2}, strict, options=SynthesisOptions(device="cpu", precision="fp32"))
    # The head says no everywhere: no enhancement shown.
    assert sitk.GetArrayFromImage(gated.subtraction).max() <= ENHANCEMENT_THRESHOLD


def test_detection_floor_learns_enhancing_tumour_from_training_cases() -> None:
    cases = []
    for seed in range(3):
        case = _case(seed)
        case["norm_t2"] = np.where(case["labels"] == 3, 0.95, case["norm_t1"]).astype(np.float32)  # T2 marks the rim
        cases.append({**case, "spacing": np.array([1.0, 1.0, 1.0])})
    classifier = fit_detection_floor(cases[:2], ["t1", "t2"])
    held_out = cases[2]
    the_map = floor_map(classifier, held_out, ["t1", "t2"])
    brain = held_out["mask"] > 0
    enhancing = held_out["labels"] == 3
    assert voxel_auc(the_map, enhancing & brain, brain & ~enhancing) > 0.95
    assert not the_map[~brain].any()
    assert (the_map[enhancing] > ENHANCEMENT_THRESHOLD).mean() > 0.9


def test_robustness_perturbations_change_only_the_model_inputs() -> None:
    from model_training.evaluate import perturb_inputs

    rng = np.random.default_rng(0)
    shape = (23, 16, 120)
    case = {f"raw_{m}": rng.uniform(50, 150, shape).astype(np.float32) for m in ("t1", "t2", "flair", "t1c")}
    biased = perturb_inputs(case, ["t1", "t2", "flair"], "bias", seed=1)
    assert biased["raw_t1c"] is case["raw_t1c"]
    for m in ("t1", "t2", "flair"):
        gain = biased[f"raw_{m}"] / case[f"raw_{m}"]
        assert 0.6 < gain.min() < gain.max() < 1.6 and gain.std() > 0.01
        assert np.abs(np.diff(gain, axis=2)).max() < 0.05  # smooth: a field, not noise
    thick = perturb_inputs(case, ["t1", "t2", "flair"], "thick")
    assert thick["raw_t1"] is case["raw_t1"]  # the 3D T1 stays thin
    for m in ("t2", "flair"):
        along_z = lambda a: np.abs(np.diff(a, axis=0)).mean()  # noqa: E731
        assert along_z(thick[f"raw_{m}"]) < 0.5 * along_z(case[f"raw_{m}"])
        np.testing.assert_allclose(thick[f"raw_{m}"][:20].mean(), case[f"raw_{m}"][:20].mean(), rtol=0.02)
    with pytest.raises(VirtualContrastError, match="unknown perturbation"):
        perturb_inputs(case, ["t1"], "motion")


def test_a_model_with_fewer_inputs_takes_the_stems_of_its_modalities(tmp_path: Path) -> None:
    torch.manual_seed(0)
    three = ModelConfig(arch_kwargs={"width": 4}, inputs=["t1", "t2", "flair"])
    ours, theirs = _seeded(tmp_path, three, ModelConfig(arch_kwargs=NEW, inputs=["t1", "flair"]))
    for name in ours:
        if name.startswith("stems.1."):
            assert torch.equal(ours[name], theirs[name.replace("stems.1.", "stems.2.")])  # FLAIR's stem, not T2's
    first = next(n for n in ours if n.startswith("stage2.x1.") and n.endswith("weight") and ours[n].dim() == 5)
    assert ours[first].shape[1] == 8 and theirs[first].shape[1] == 12
    assert torch.equal(ours[first], torch.cat([theirs[first][:, :4], theirs[first][:, 8:]], dim=1))
    with pytest.raises(VirtualContrastError, match="cannot initialize"):
        _seeded(tmp_path, three, ModelConfig(arch_kwargs=NEW, inputs=["t1", "adc"]))
