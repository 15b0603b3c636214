"""The enhancement detector: a 3D U-Net beside the synthesis network, shipped in its checkpoint.

Its options are checked as the config loads, it runs in cubes over the inputs' bounding box with
progress and cancel, its weights travel under ``detector.`` in the checkpoint (SHA-256 and
weights-only loading as for every checkpoint), its probability and enhancement curve gate and raise
the CE-T1 so that image, map and overlay agree, and its training pieces sample and augment as documented.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import ball, head
from model_training.detector import augment, clinical_score, sample_cube
from VirtualContrastLib.checkpoints import save_checkpoint
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.enhancement import ENHANCEMENT_THRESHOLD, GATE_CAP, gate_enhancement, subtraction_map
from VirtualContrastLib.errors import CancelledError, CheckpointError
from VirtualContrastLib.metrics import ENHANCING_LABEL
from VirtualContrastLib.networks import build_network
from VirtualContrastLib.networks.detector import DETECTOR_PREFIX, build_detector, count_windows, detect_volume
from VirtualContrastLib.registry import load_model
from VirtualContrastLib.synthesis import SynthesisOptions, synthesize

TINY = {"channels": [4, 8], "strides": [2], "num_res_units": 0, "dropout": 0.0, "patch": [8, 16, 16]}
CURVE = {"probability": [0.1, 0.5, 0.9], "enhancement": [0.0, 0.1, 0.3]}


@pytest.mark.parametrize("detector", [
    {"arch": {"channels": [4, 8, 16], "strides": [2]}},        # one channel count too many
    {"arch": {"patch": [12, 16, 16], "strides": [2, 2, 2], "channels": [4, 8, 16, 32]}},  # 12 is not a multiple of 8
    {"arch": {"kernel": 3}},                                    # unknown option
    {"arch": {"classes": 3}},                                   # neither one logit nor the four tumour parts
    {"arch": {}, "curve": {"probability": [0.5, 0.2], "enhancement": [0.0, 0.1]}},  # probabilities not increasing
    {"arch": {}, "extra": 1},
])
def test_a_detector_that_cannot_be_built_is_refused_as_the_config_loads(detector: dict) -> None:
    with pytest.raises(ValueError, match="detector"):
        ModelConfig(inputs=["t1", "t2"], detector=detector)


def test_detection_runs_in_cubes_over_the_inputs_only_with_progress_and_cancel() -> None:
    torch.manual_seed(0)
    network = build_detector(2, TINY)
    shape = (20, 30, 28)
    brain = ball(shape, (10, 15, 14), 9)
    volume = np.stack([np.where(brain, 0.5, 0.0), np.where(brain, 0.3, 0.0)]).astype(np.float32)
    calls = []
    probability = detect_volume(network, volume, TINY, torch.device("cpu"), None, lambda: calls.append(1))
    assert probability.shape == shape and probability.dtype == np.float32
    assert not probability[~brain].any() and ((probability[brain] > 0) & (probability[brain] < 1)).all()
    box = [int(i.max()) - int(i.min()) + 1 for i in np.nonzero(brain)]
    assert len(calls) == count_windows(box, TINY) > 1
    with pytest.raises(CancelledError):
        detect_volume(network, volume, TINY, torch.device("cpu"), None, cancel=lambda: True)
    assert network.training  # the caller's mode is put back
    assert not detect_volume(network, np.zeros_like(volume), TINY, torch.device("cpu"), None).any()


def test_a_parts_detector_gives_the_softmax_probability_of_the_enhancing_part() -> None:
    torch.manual_seed(0)
    arch = {**TINY, "classes": 4}
    network = build_detector(2, arch)
    with torch.no_grad():  # constant logits: background 0, necrosis 1, oedema 0, enhancing 2
        last = [m for m in network.modules() if isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d)][-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 1.0, 0.0, 2.0]))
    shape = (12, 20, 20)
    brain = ball(shape, (6, 10, 10), 5)
    volume = np.stack([np.where(brain, 0.5, 0.0)] * 2).astype(np.float32)
    probability = detect_volume(network, volume, arch, torch.device("cpu"), None)
    expected = np.exp(2.0) / (2.0 + np.e + np.exp(2.0))  # softmax's enhancing channel, not the sigmoid of its logit
    assert np.allclose(probability[brain], expected, atol=1e-5) and not probability[~brain].any()


def _model_file(path: Path, bias: float, threshold: float = 0.5, curve: dict | None = None) -> tuple[str, dict]:
    """A random width-4 HR-FCN with a tiny detector whose logit is ``bias`` everywhere, as a half-precision checkpoint."""
    torch.manual_seed(0)
    config = ModelConfig(arch_kwargs={"width": 4}, inputs=["t1", "t2"], detection_threshold=threshold,
                         detector={"arch": TINY, **({"curve": curve} if curve else {})})
    detector = build_detector(2, TINY)
    with torch.no_grad():
        last = [m for m in detector.modules() if isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d)][-1]
        last.weight.zero_()
        last.bias.fill_(bias)
    weights = {**build_network(config).state_dict(), **{DETECTOR_PREFIX + k: v for k, v in detector.state_dict().items()}}
    save_checkpoint(path, config, weights, {"note": "random weights for tests"}, half=True)
    return str(path), weights


def test_the_detector_travels_in_the_checkpoint_and_a_mismatch_is_a_one_line_error(tmp_path: Path) -> None:
    path, weights = _model_file(tmp_path / "det.pt", 2.0)
    model = load_model(path, device="cpu")
    assert model.detector is not None and not model.detector.training
    for key, value in model.detector.state_dict().items():
        torch.testing.assert_close(value, weights[DETECTOR_PREFIX + key].half().float())
    config = model.config
    without = ModelConfig(arch_kwargs=config.arch_kwargs, inputs=config.inputs)
    save_checkpoint(tmp_path / "orphan.pt", without, weights)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path / "orphan.pt", device="cpu")
    save_checkpoint(tmp_path / "bare.pt", config, {k: v for k, v in weights.items() if not k.startswith(DETECTOR_PREFIX)})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path / "bare.pt", device="cpu")


def test_the_curve_raises_enhancement_where_the_detector_says_so_and_image_and_map_agree() -> None:
    rng = np.random.default_rng(0)
    shape = (24, 40, 40)
    brain = ball(shape, (12, 20, 20), 18)
    t1 = np.where(brain, 100 + 10 * rng.standard_normal(shape), 0).astype(np.float32)
    ce = 1.2 * t1  # the synthesis shows no enhancement anywhere ...
    said, painted = ball(shape, (12, 12, 20), 4), ball(shape, (12, 28, 20), 4)
    ce[painted] += 80  # ... except where the detector says no
    probability = np.where(said, 0.9, 0.1).astype(np.float32)
    gated, shown = gate_enhancement(ce, t1, brain, probability, 0.5, CURVE)
    # Where p = 0.9 the curve asks for 0.3: the passes bring the map there, but for the voxels the 99.5th percentile
    # clips (the raised ball is 1 % of the brain: its brightest half percent cannot rise above the window).
    assert np.median(shown[said]) == pytest.approx(0.3, abs=0.01) and (shown[said] > ENHANCEMENT_THRESHOLD).mean() > 0.95
    assert shown[painted].max() <= GATE_CAP and (shown[brain & ~said] <= ENHANCEMENT_THRESHOLD).all()
    own = subtraction_map(gated, t1, brain)
    assert np.array_equal(own[said] > ENHANCEMENT_THRESHOLD, shown[said] > ENHANCEMENT_THRESHOLD)
    assert (own[painted] > ENHANCEMENT_THRESHOLD).mean() < 0.05
    # Without a curve the detector only gates: the flat synthesis stays flat where it says yes.
    _, gated_only = gate_enhancement(ce, t1, brain, probability, 0.5)
    assert (gated_only[said] > ENHANCEMENT_THRESHOLD).mean() < 0.05


def test_synthesis_with_a_detector_returns_its_probability_and_agreeing_outputs(tmp_path: Path) -> None:
    t1, t2 = head(blob=True), head(seed=1)
    path, _ = _model_file(tmp_path / "det.pt", 2.0, curve=CURVE)  # p = sigmoid(2) = 0.88 inside the inputs
    model = load_model(path, device="cpu")
    seen: list[float] = []
    result = synthesize({"t1": t1, "t2": t2}, model, options=SynthesisOptions(device="cpu", precision="fp32"),
                        progress=lambda fraction, text: seen.append(fraction))
    assert seen == sorted(seen) and seen[-1] == 1.0
    probability = sitk.GetArrayFromImage(result.probability)
    brain = sitk.GetArrayFromImage(result.brain_mask) > 0
    assert np.allclose(probability[brain], 1 / (1 + np.exp(-2.0)), atol=0.02) and not probability[~brain].any()
    shown = sitk.GetArrayFromImage(result.subtraction)
    # The map is the image's own (the engine fits on its working copy of the T1, a few edge voxels apart).
    own = subtraction_map(sitk.GetArrayFromImage(result.synthetic), sitk.GetArrayFromImage(t1), brain)
    np.testing.assert_allclose(shown, own, atol=5e-3)
    strict_path, _ = _model_file(tmp_path / "strict.pt", 2.0, threshold=0.95, curve=CURVE)
    strict = synthesize({"t1": t1, "t2": t2}, load_model(strict_path, device="cpu"), options=SynthesisOptions(device="cpu", precision="fp32"))
    # A detector that confirms nothing: no voxel of the map reads as enhancement.
    assert sitk.GetArrayFromImage(strict.subtraction).max() <= ENHANCEMENT_THRESHOLD
    with pytest.raises(CancelledError):
        synthesize({"t1": t1, "t2": t2}, model, options=SynthesisOptions(device="cpu"), cancel=lambda: True)


def test_the_command_line_writes_the_detectors_probability_on_the_t1_grid_and_refuses_it_without_a_detector(tmp_path: Path, capsys) -> None:
    from VirtualContrastLib.cli import main
    from VirtualContrastLib.imageio import is_synthetic

    t1 = head(blob=True)
    sitk.WriteImage(t1, str(tmp_path / "t1.nii.gz"))
    sitk.WriteImage(head(seed=1), str(tmp_path / "t2.nii.gz"))
    path, _ = _model_file(tmp_path / "det.pt", 2.0, curve=CURVE)
    args = ["synthesize", "--t1", str(tmp_path / "t1.nii.gz"), "--t2", str(tmp_path / "t2.nii.gz"), "--device", "cpu", "--quiet"]
    assert main([*args, "--model", path, "-o", str(tmp_path / "ce.nii.gz"), "--probability", str(tmp_path / "p.nii.gz")]) == 0
    written = sitk.ReadImage(str(tmp_path / "p.nii.gz"))
    assert written.GetSize() == t1.GetSize() and np.allclose(written.GetDirection(), t1.GetDirection())
    values = sitk.GetArrayFromImage(written)
    assert values.max() == pytest.approx(1 / (1 + np.exp(-2.0)), abs=0.02) and values.min() == 0.0
    assert is_synthetic(str(tmp_path / "p.nii.gz"))
    # A model without a detector has no probability: one line, and nothing written.
    bare = tmp_path / "bare.pt"
    plain = ModelConfig(arch_kwargs={"width": 4}, inputs=["t1", "t2"])
    save_checkpoint(bare, plain, build_network(plain).state_dict())
    capsys.readouterr()
    assert main([*args, "--model", str(bare), "-o", str(tmp_path / "ce2.nii.gz"), "--probability", str(tmp_path / "p2.nii.gz")]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no enhancement detector" in error[0]
    assert not (tmp_path / "ce2.nii.gz").exists() and not (tmp_path / "p2.nii.gz").exists()


def test_training_cubes_centre_on_enhancing_tumour_half_the_time_and_augmentation_stays_in_the_brain() -> None:
    shape = (40, 40, 40)
    brain = ball(shape, (20, 20, 20), 18)
    parts = np.where(ball(shape, (10, 20, 20), 5), 2, 0).astype(np.uint8)  # oedema ringing ...
    parts[ball(shape, (10, 20, 20), 3)] = ENHANCING_LABEL  # ... an enhancing core
    case = {"inputs": np.stack([np.where(brain, 0.5, 0.0)] * 2).astype(np.float32), "brain": brain, "parts": parts}
    rng = np.random.default_rng(0)
    cubes = [sample_cube(case, (16, 16, 16), rng) for _ in range(200)]
    with_tumour = np.mean([(c[2] == ENHANCING_LABEL).any() for c in cubes])
    assert 0.45 < with_tumour < 0.8  # half centred on it, a few more reach it by chance
    # The parts travel with the cube, flips included: the oedema still rings the enhancing core.
    assert all(c[2].dtype == np.uint8 and set(np.unique(c[2])) <= {0, 2, ENHANCING_LABEL} for c in cubes)
    assert all((c[2] == 2).any() for c in cubes if (c[2] == ENHANCING_LABEL).any())
    assert all(not c[2][~c[1]].any() for c in cubes)
    inputs, cube_brain, _ = cubes[0]
    assert inputs.shape == (2, 16, 16, 16) and not inputs[:, ~cube_brain].any()
    changed = [augment(inputs, cube_brain, np.random.default_rng(seed)) for seed in range(6)]
    assert any(not np.allclose(c, inputs) for c in changed)
    assert all(not c[:, ~cube_brain].any() and c.min() >= 0 and c.max() <= 1 for c in changed)


def test_selection_never_picks_a_detector_that_finds_no_lesion() -> None:
    assert clinical_score({"lesions_detected": 0.0, "lesion_f1": 0.0, "auc_brain": 0.99}) == -np.inf
    assert clinical_score({"lesions_detected": 1.0, "lesion_f1": 0.4, "auc_brain": 0.9}) == pytest.approx(0.65)


def test_a_detector_for_other_inputs_is_refused_when_attached(tmp_path: Path) -> None:
    from conftest import tiny_checkpoint
    from model_training.detector import attach_detector
    from VirtualContrastLib.errors import InputError

    run = tmp_path / "detector"
    run.mkdir()
    torch.save({"arch": TINY, "inputs": ["t1", "t2", "flair"], "record": {}, "state_dict": build_detector(3, TINY).state_dict()},
               run / "best.pt")
    tiny_checkpoint(tmp_path / "synthesis.pt", ["t1", "t2"])
    with pytest.raises(InputError, match="same inputs"):
        attach_detector(str(tmp_path / "synthesis.pt"), run, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="train the detector first"):
        attach_detector(str(tmp_path / "synthesis.pt"), tmp_path, tmp_path / "out")
