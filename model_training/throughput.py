"""Training throughput: optimizer steps on random slabs of a given size, in slabs per second."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .settings import TrainConfig


def measure_throughput(config: TrainConfig, height: int = 256, width: int = 192, steps: int = 3, warmup: int = 1,
                       device: str | None = None) -> dict[str, Any]:
    """Time ``steps`` full training steps (forward, loss, backward, Adam) after ``warmup`` steps."""
    import tempfile

    import torch

    from .train import Trainer

    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(config, Path(scratch), device=device, progress=False)
        generator = torch.Generator().manual_seed(config.seed)
        shape = (config.batch_size, 1, config.model.slab_depth, height, width)
        target = torch.rand(shape, generator=generator)
        batch = {"inputs": torch.rand((config.batch_size, len(config.model.inputs), *shape[2:]), generator=generator),
                 "target": target, "t1": (target - 0.2 * torch.rand(shape, generator=generator)).clamp(0, 1)}
        for _ in range(warmup):
            trainer.train_step(batch)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(batch)
        seconds = time.perf_counter() - start
    slabs = steps * config.batch_size
    return {"slabs_per_second": slabs / seconds, "seconds_per_step": seconds / steps, "batch_size": config.batch_size,
            "slab": [config.model.slab_depth, height, width], "architecture": config.model.architecture,
            "width": config.model.arch_kwargs.get("width"), "precision": config.precision, "device": str(trainer.device),
            "threads": torch.get_num_threads()}
