"""Output calibration: the fitted map undoes a compressed top, is monotone, is checked as it loads, and travels in checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from VirtualContrastLib.calibration import apply_output_map, check_output_map, fit_output_map
from VirtualContrastLib.checkpoints import load_checkpoint, save_checkpoint
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.networks import build_network


def _cases(seed: int = 0, count: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Targets with a bright 1 % tail (vessels, enhancement) and outputs that regress it towards the mean."""
    rng = np.random.default_rng(seed)
    targets, outputs = [], []
    for _ in range(count):
        target = np.clip(rng.normal(0.45, 0.12, 20000), 0, 1)
        target[:200] = rng.uniform(0.85, 1.0, 200)
        targets.append(target)
        outputs.append(0.6 * target + 0.15 + rng.normal(0, 0.005, target.size))
    return outputs, targets


def test_the_map_restores_the_target_distribution_of_a_compressed_output():
    outputs, targets = _cases()
    output_map = fit_output_map(outputs, targets)
    check_output_map(output_map)
    held_out_outputs, held_out_targets = _cases(seed=1, count=1)
    mapped = apply_output_map(held_out_outputs[0], output_map)
    levels = [0.05, 0.5, 0.95, 0.995]
    assert np.allclose(np.quantile(mapped, levels), np.quantile(held_out_targets[0], levels), atol=0.02)
    # Uncalibrated, the top is compressed: the brightest 0.5 % sits far below the target's.
    assert np.quantile(held_out_outputs[0], 0.995) < np.quantile(held_out_targets[0], 0.995) - 0.2
    # Order is kept: the map never swaps two voxels.
    order = np.argsort(held_out_outputs[0], kind="stable")
    assert np.all(np.diff(mapped[order]) >= 0)


def test_outputs_equal_to_targets_give_the_identity():
    _, targets = _cases()
    output_map = fit_output_map(targets, targets)
    values = np.linspace(0.05, 0.95, 19, dtype=np.float32)
    assert np.allclose(apply_output_map(values, output_map), values, atol=0.01)
    assert apply_output_map(values, None) is not None and np.array_equal(apply_output_map(values, None), values)


@pytest.mark.parametrize("bad, message", [
    ({"source": [0.0, 1.0]}, "exactly"),
    ({"source": [0.0, 0.5, 1.0], "target": [0.0, 1.0]}, "equally long"),
    ({"source": [0.0, 0.5, 0.4], "target": [0.0, 0.5, 1.0]}, "monotone"),
    ({"source": [0.0, 0.5, 1.0], "target": [0.0, 0.6, 0.5]}, "monotone"),
    ({"source": [0.0, 1.5], "target": [0.0, 1.0]}, "within"),
    ({"source": ["a", "b"], "target": [0.0, 1.0]}, "numbers"),
    ([0.0, 1.0], "dict"),
])
def test_bad_maps_are_refused_as_the_config_loads(bad, message):
    with pytest.raises(ValueError, match=message):
        check_output_map(bad)
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict({**ModelConfig().to_dict(), "output_map": bad})


def test_the_map_travels_in_a_weights_only_checkpoint(tmp_path):
    outputs, targets = _cases()
    config = ModelConfig(arch_kwargs={"width": 4}, output_map=fit_output_map(outputs, targets))
    path = tmp_path / "calibrated.pt"
    digest = save_checkpoint(path, config, build_network(config).state_dict(), {"note": "test"})
    loaded = load_checkpoint(path, expected_sha256=digest)
    assert loaded.config.output_map == config.output_map
    assert ModelConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "output_map"}).output_map is None
