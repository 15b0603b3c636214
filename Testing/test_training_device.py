"""``train --device cuda`` (issue 25): the trainer gives CUDA calls a device with an index, checked without a GPU."""

from __future__ import annotations

import pytest
import torch

from model_training.settings import load_config
from model_training.train import Trainer


class Stop(Exception):
    """Raised by the stand-in for torch.cuda.set_device, to end the trainer's set-up before any GPU work."""


@pytest.mark.parametrize(("asked", "local_rank", "expected"), [("cuda", None, "cuda:0"), ("cuda", "1", "cuda:1"), ("cuda:2", "1", "cuda:2")])
def test_the_trainer_sets_an_indexed_cuda_device(monkeypatch, tmp_path, asked, local_rank, expected) -> None:
    """torch.cuda.set_device refuses a device without an index: 'cuda' must become this rank's GPU."""
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    given = []

    def set_device(device: torch.device) -> None:
        given.append(device)
        raise Stop

    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    # A machine with 4 GPUs, as far as the device check can tell.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with pytest.raises(Stop):
        Trainer(load_config("tiny"), tmp_path, device=asked, progress=False)
    assert given == [torch.device(expected)]
