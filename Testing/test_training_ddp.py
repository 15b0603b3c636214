"""DistributedDataParallel on two CPU processes (gloo): both ranks end with identical parameters."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model_training.settings import load_config
from model_training.train import Trainer
from VirtualContrastLib.config import DEFAULT_NORMALIZATION

pytestmark = pytest.mark.slow


def _write_cache(folder: Path) -> None:
    """Two small prepared cases written in the cache format of ``prepare``."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    entries = []
    for number in range(2):
        mask = np.zeros((6, 16, 16), np.uint8)
        mask[1:5, 2:14, 2:14] = 1
        arrays = {f"norm_{m}": (rng.uniform(0, 1, mask.shape) * mask).astype(np.float16) for m in ("t1", "t2", "adc", "t1c")}
        np.savez_compressed(folder / f"c{number}.npz", mask=mask, **arrays)
        entries.append({"case": f"c{number}"})
    index = {"prepared": entries, "skipped": [], "options": {"normalization": DEFAULT_NORMALIZATION}}
    (folder / "index.json").write_text(json.dumps(index), encoding="utf-8")


def _worker(rank: int, port: int, cache: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    config = load_config("tiny", {"data": {"train": cache, "val": None}, "sampling": {"slabs_per_epoch": 8},
                                  "schedule": [{"epochs": 1, "weights": [1, 1, 1], "lr": 1e-2}]})
    trainer = Trainer(config, out, device="cpu", progress=False)
    # Different initial weights on each rank: DDP must broadcast rank 0's at construction.
    initial = {k: v.detach().clone() for k, v in trainer.network.state_dict().items()}
    trainer.fit()
    state = {k: v.detach().numpy() for k, v in trainer.network.state_dict().items()}
    changed = any(not torch.equal(initial[k], v) for k, v in trainer.network.state_dict().items() if v.is_floating_point())
    np.savez(Path(out) / f"rank{rank}.npz", changed=np.array(changed), **{k.replace(".", "/"): v for k, v in state.items()})
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_end_with_identical_parameters(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _write_cache(cache)
    mp.spawn(_worker, args=(_free_port(), str(cache), str(tmp_path)), nprocs=2, join=True)
    with np.load(tmp_path / "rank0.npz") as first, np.load(tmp_path / "rank1.npz") as second:
        assert first.files == second.files
        assert bool(first["changed"]) and bool(second["changed"])
        for key in first.files:
            np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    # 8 slabs / 2 ranks / batch 2 = 2 steps on each rank; only rank 0 writes the run folder.
    assert (tmp_path / "log.csv").is_file() and (tmp_path / "state.pt").is_file()
