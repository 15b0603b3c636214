"""Shared pytest set-up: tests marked ``cuda`` are skipped where torch sees no CUDA GPU."""

from __future__ import annotations

import pytest


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
