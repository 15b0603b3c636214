"""Shared test material: synthetic 'heads' on real SimpleITK grids and tiny random-weight checkpoints.

Test modules import the builders (``from conftest import head``) and use the fixtures by name. Tests marked
``cuda`` are skipped where torch sees no CUDA GPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.spatial.transform import Rotation

from VirtualContrastLib.checkpoints import save_checkpoint
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.networks import build_network
from VirtualContrastLib.registry import MODELS_DIR_ENV


def rotation(degrees) -> tuple[float, ...]:
    """A SimpleITK direction (row-major 3x3) rotated by x, y, z Euler angles in degrees."""
    return tuple(Rotation.from_euler("xyz", degrees, degrees=True).as_matrix().ravel())


def head(shape=(14, 24, 20), spacing=(2.0, 2.0, 3.5), origin=(-20.0, -24.0, -24.0), direction=None, seed=0,
         level=100.0, texture=0.3, radii=(0.45, 0.45, 0.45), blob=False) -> sitk.Image:
    """Skull-stripped ellipsoid 'brain' (z, y, x ``shape``) with random texture, optionally a bright blob, 0 outside."""
    z, y, x = (np.indices(shape) + 0.5) / np.array(shape)[:, None, None, None] - 0.5
    inside = (z / radii[0]) ** 2 + (y / radii[1]) ** 2 + (x / radii[2]) ** 2 < 1
    bright = level * ((z**2 + (y - 0.1) ** 2 + (x + 0.1) ** 2) < 0.02) if blob else 0.0
    array = np.where(inside, level + texture * level * np.random.default_rng(seed).random(shape) + bright, 0)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def ball(shape: tuple[int, ...], centre: tuple[int, ...], radius: float) -> np.ndarray:
    """Boolean ball of ``radius`` voxels around ``centre`` in an array of ``shape``."""
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def tiny_checkpoint(path: Path, inputs: list[str], architecture: str = "hrfcn", seed: int = 0, target: str = "t1c") -> str:
    """Save a random width-4 network predicting ``target`` from ``inputs`` as a checkpoint; returns its SHA-256."""
    torch.manual_seed(seed)
    config = ModelConfig(architecture=architecture, arch_kwargs={"width": 4}, inputs=list(inputs), target=target)
    return save_checkpoint(path, config, build_network(config).state_dict(), {"note": "random weights for tests"})


def spread_outputs(network: torch.nn.Module, channels: int, seed: int = 0) -> torch.nn.Module:
    """Rescale the last (linear) convolution so random-weight outputs spread over (0, 1) instead of
    sitting at one value that the [0, 1] clamp would flatten (which would make the tests blind)."""
    last = [m for m in network.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.Conv2d))][-1]
    probe = torch.rand(2, channels, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = network(probe)
        scale = 0.15 / float(out.std())
        last.weight.mul_(scale)
        last.bias.mul_(scale).add_(0.5 - float(out.mean()) * scale)
    return network


def make_models_dir(folder: Path, specs: list[dict]) -> Path:
    """A bundled-models folder: one tiny checkpoint, model card and models.json entry per spec (name, inputs, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for number, spec in enumerate(specs):
        file = f"{spec['name']}.pt"
        digest = tiny_checkpoint(folder / file, spec["inputs"], seed=number, target=spec.get("output", "t1c"))
        entry = {"file": file, "sha256": digest, "size_bytes": (folder / file).stat().st_size, "output": "t1c",
                 "role": "synthesis", "description": f"test model {spec['name']}", "card": f"{spec['name']}.md", **spec}
        (folder / entry["card"]).write_text(f"# {spec['name']}\n\nRandom weights.\n", encoding="utf-8")
        entries.append(entry)
    (folder / "models.json").write_text(json.dumps({"models": entries}), encoding="utf-8")
    return folder


@pytest.fixture
def bundled_models(tmp_path, monkeypatch) -> Callable[[list[dict]], Path]:
    """Install tiny bundled models (see :func:`make_models_dir`) in ``tmp_path/models`` for this test."""

    def install(specs: list[dict]) -> Path:
        folder = make_models_dir(tmp_path / "models", specs)
        monkeypatch.setenv(MODELS_DIR_ENV, str(folder))
        return folder

    return install


@pytest.fixture(scope="session")
def tiny_t1_t2_checkpoint(tmp_path_factory) -> Path:
    """A width-4 HR-FCN checkpoint with random weights and T1 + T2 inputs."""
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    tiny_checkpoint(path, ["t1", "t2"])
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``cuda``-marked tests without a GPU (torch is imported only when such tests were collected)."""
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run Testing/gpu_check.sh on one)")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture
def scene():
    """A fresh MRML scene (slicer-core) installed as ``slicer.mrmlScene``, with the subject hierarchy the application always has."""
    import slicer

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    yield scene
    scene.Clear(1)
