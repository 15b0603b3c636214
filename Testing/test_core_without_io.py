"""The compute core without file I/O (issue 25): it imports and runs with SimpleITK, pydicom and nilearn blocked.

Networks, checkpoints, synthesis on arrays, the losses and one training step need only torch, numpy, scipy and
MONAI, so the GPU check runs where nothing else is installed. A child process blocks the I/O packages (and
scikit-image and matplotlib, which the GPU machine's image or the check's venv may lack) with a meta-path finder
that raises ImportError, then imports and runs the core on arrays. No conftest fixtures: the GPU check runs
this file with ``pytest --noconftest``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("SimpleITK", "pydicom", "nilearn", "skimage", "matplotlib")

CHILD = textwrap.dedent('''
    import importlib.abc
    import sys
    import tempfile

    BLOCKED = set(sys.argv[1].split(","))


    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the compute core must not import it")


    sys.meta_path.insert(0, Block())

    import numpy as np
    import torch

    from model_training.losses import VirtualContrastLoss
    from model_training.settings import load_config
    from model_training.train import Trainer
    from VirtualContrastLib.checkpoints import save_checkpoint
    from VirtualContrastLib.config import ModelConfig
    from VirtualContrastLib.networks import build_network
    from VirtualContrastLib.options import SynthesisOptions
    from VirtualContrastLib.registry import load_model
    from VirtualContrastLib.synthesis import synthesize_array

    torch.manual_seed(0)
    config = ModelConfig(architecture="hrfcn", arch_kwargs={"width": 4}, inputs=["t1", "t2"])
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(f"{folder}/tiny.pt", config, build_network(config).state_dict(), half=True)
        model = load_model(f"{folder}/tiny.pt", device="cpu")
        volume = np.zeros((2, 7, 24, 20), np.float32)
        volume[:, 1:6, 4:20, 4:16] = np.random.default_rng(0).uniform(0.2, 0.9, (2, 5, 16, 12))
        result = synthesize_array(model, volume, SynthesisOptions(device="cpu", precision="fp32"))
        assert result.prediction.shape == (7, 24, 20) and np.isfinite(result.prediction).all(), result.prediction.shape
        assert 0 <= result.prediction.min() and result.prediction.max() <= 1

        target = torch.rand(2, 1, 3, 16, 16)
        total, terms = VirtualContrastLoss((1.0, 1.0, 1.0))(torch.rand(2, 1, 3, 16, 16), target, target * 0.8)
        assert torch.isfinite(total) and set(terms), terms

        trainer = Trainer(load_config("tiny"), folder, device="cpu", progress=False)
        before = [p.detach().clone() for p in trainer.network.parameters()]
        inputs = torch.rand(2, 3, 3, 32, 32)
        values = trainer.train_step({"inputs": inputs, "target": inputs[:, 1:2], "t1": inputs[:, :1]})
        assert np.isfinite(values["loss"]), values
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.network.parameters())), "the step changed no weight"

    loaded = sorted(name for name in sys.modules if name.partition(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("core ok")
''')


def test_the_core_imports_and_runs_with_the_io_packages_blocked() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "VirtualContrast"), str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", CHILD, ",".join(BLOCKED)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "core ok" in done.stdout, done.stderr[-3000:]
