"""``train --device cuda`` (issue 25): the trainer gives CUDA calls a device with an index, checked without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys

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


def test_bf16_training_on_the_cpu_stays_off_amx_unless_the_user_chose(monkeypatch) -> None:
    """oneDNN's AMX kernels abort the HR-FCN's bf16 backward (torch 2.13): CPU bf16 training caps the ISA, nothing else."""
    from model_training.train import CPU_BF16_TRAINING_ISA, cap_cpu_isa_for_training

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    cap_cpu_isa_for_training(torch.device("cpu"), None)
    cap_cpu_isa_for_training(torch.device("cuda:0"), torch.bfloat16)
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ
    cap_cpu_isa_for_training(torch.device("cpu"), torch.bfloat16)
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == CPU_BF16_TRAINING_ISA
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    cap_cpu_isa_for_training(torch.device("cpu"), torch.bfloat16)
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"


def test_a_bf16_training_step_of_the_hrfcn_on_the_cpu_completes() -> None:
    """The step that aborted on an AMX CPU ("double free or corruption"), in a fresh process (oneDNN reads its ISA once)."""
    code = """
import os, torch
os.environ.pop("ONEDNN_MAX_CPU_ISA", None)
from model_training.train import cap_cpu_isa_for_training
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.networks import build_network
cap_cpu_isa_for_training(torch.device("cpu"), torch.bfloat16)
torch.set_num_threads(1)
net = build_network(ModelConfig(arch_kwargs={"width": 16}, inputs=["t1", "t2", "flair"]))
with torch.autocast("cpu", dtype=torch.bfloat16):
    out = net(torch.rand(4, 3, 3, 128, 128))
out.float().mean().backward()
print("step done")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "step done" in done.stdout, done.stderr[-2000:]
