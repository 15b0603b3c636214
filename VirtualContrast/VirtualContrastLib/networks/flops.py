"""Parameter and FLOP counts of a network (FLOPs from ``torch.utils.flop_counter``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (works for models on the meta device)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs of one pass on an input of ``input_shape`` (2 FLOPs per multiply-add).

    The input is created on the model's device, so a model built under
    ``torch.device("meta")`` is counted without allocating memory. Only matrix products and
    convolutions are counted (BatchNorm, ReLU, additions and resampling are not). The model
    runs in eval mode, so BatchNorm statistics are left untouched.
    """
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(tuple(input_shape), device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
