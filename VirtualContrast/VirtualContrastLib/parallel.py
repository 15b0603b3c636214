"""Ordered parallel map over processes, shared by the phantom generator and dataset preparation."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def ordered_map(function: Callable[[Item], Result], items: Sequence[Item], workers: int = 1) -> Iterator[Result]:
    """Yield ``function(item)`` for each item in order, over ``workers`` processes when there is more than one.

    All items are submitted at once, so later items run while earlier results are consumed; with one
    worker (or one item) everything runs in this process, which keeps tracebacks and debuggers simple.
    ``function`` must be picklable (a module-level function or a ``functools.partial`` of one).
    """
    if workers > 1 and len(items) > 1:
        with ProcessPoolExecutor(min(workers, len(items))) as pool:
            yield from pool.map(function, items)
    else:
        yield from map(function, items)
