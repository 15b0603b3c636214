"""Memory check before a synthesis: refuse, in one line, a volume that cannot fit in the memory left.

Without it a volume too large for the machine (512×512×400 under a 3 GB limit) loads the model and then
dies in a SimpleITK or numpy allocation traceback. The estimate is conservative: measured peaks of the
engine (tiny model, CPU, fp32) were 116 bytes per T1 voxel with two inputs and 148 with the network's
slab activations included; :func:`synthesis_bytes` allows 120 for two inputs and 40 more per extra input.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from .errors import InputError

#: Environment variable that caps the memory the check assumes available, in bytes or with a K, M or G
#: suffix (e.g. ``3G``): for machines whose limits the check cannot see, and for tests.
MEMORY_LIMIT_ENV = "VIRTUALCONTRAST_MEMORY_LIMIT"

#: float32 copies of the T1 grid that synthesis holds at its peak: per input channel, and besides them
#: (mask, working grid, blending sums, outputs); test-time augmentation adds its running variance.
COPIES_PER_INPUT, COPIES_BESIDES, COPIES_TTA = 10, 10, 8

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def synthesis_bytes(voxels: int, inputs: int, tta: bool = False) -> int:
    """A conservative estimate of the memory a synthesis on a T1 of ``voxels`` voxels with ``inputs`` inputs needs."""
    copies = COPIES_PER_INPUT * inputs + COPIES_BESIDES + (COPIES_TTA if tta else 0)
    return 4 * voxels * copies


def _parse_size(text: str) -> int:
    """``3G``, ``512M`` or plain bytes as an int."""
    number = text.strip().upper().removesuffix("B")
    unit = number[-1:] if number[-1:] in _UNITS else ""
    try:
        return int(float(number[: len(number) - len(unit)]) * _UNITS[unit])
    except ValueError:
        raise InputError(f"{MEMORY_LIMIT_ENV}={text!r} is not a size such as 3G, 512M or 3000000000") from None


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes (empty where there is none)."""
    try:
        lines = Path("/proc/meminfo").read_text(encoding="ascii").splitlines()
    except OSError:
        return {}
    return {name: int(value.split()[0]) * 1024 for name, value in (line.split(":", 1) for line in lines) if value.split()}


def _cgroup_room() -> int | None:
    """What the process's cgroup (v2) still allows, or None without a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text(encoding="ascii").strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text(encoding="ascii").strip()
    except OSError:
        return None
    return None if limit == "max" else max(int(limit) - int(used), 0)


def _address_space_room() -> int | None:
    """What ``ulimit -v`` (RLIMIT_AS) still allows this process, or None without a limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    size = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[0]) * os.sysconf("SC_PAGE_SIZE")
    return max(soft - size, 0)


def available_bytes() -> int | None:
    """Memory this process can still allocate: the least of free RAM + swap, the cgroup's and the rlimit's room,
    and :data:`MEMORY_LIMIT_ENV`; None when nothing is known."""
    info = _meminfo()
    system = info["MemAvailable"] + info.get("SwapFree", 0) if "MemAvailable" in info else None
    limits = [system, _cgroup_room(), _address_space_room()]
    if os.environ.get(MEMORY_LIMIT_ENV):
        limits.append(_parse_size(os.environ[MEMORY_LIMIT_ENV]))
    known = [value for value in limits if value is not None]
    return min(known) if known else None


def check_synthesis_memory(size: tuple[int, int, int], inputs: int, tta: bool = False) -> None:
    """Refuse a synthesis on a T1 of ``size`` voxels that would not fit in the memory available."""
    needed = synthesis_bytes(size[0] * size[1] * size[2], inputs, tta)
    available = available_bytes()
    if available is not None and needed > available:
        raise InputError(f"a {'x'.join(map(str, size))}-voxel T1 with {inputs} input(s) needs about {needed / 2**30:.1f} GiB of memory "
                         f"to synthesize, {available / 2**30:.1f} GiB is available: free memory, or resample the T1 to coarser voxels")
