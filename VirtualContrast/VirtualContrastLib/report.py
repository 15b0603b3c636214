"""The machine-readable result of ``virtual-contrast synthesize --report result.json``.

Front ends that run the engine in another process (Slicer) read this file instead of parsing the
printed text. It is written atomically when the run ends, whether it succeeded or failed:
``error`` is None on success and the one-line message otherwise; ``outputs`` lists only files
that were completely written.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import INTENDED_USE
from .errors import InputError
from .fileutil import atomic_write


@dataclass
class RunReport:
    """Model, device, precision, notes, outputs (kind -> path) and error of one synthesis run."""

    model: str | None = None
    device: str | None = None
    precision: str | None = None
    notes: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    seconds: float | None = None
    intended_use: str = INTENDED_USE

    def write(self, path: str | os.PathLike) -> None:
        """Write the report as JSON, atomically (a reader never sees half a file)."""
        with atomic_write(path, suffix=".json") as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: str | os.PathLike) -> "RunReport":
        """Read a report written by :meth:`write`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})
        except (OSError, ValueError, TypeError) as error:
            raise InputError(f"cannot read the run report {Path(path).name}: {error}") from None


def check_report_path(path: str | os.PathLike) -> Path:
    """Refuse, before any work is done, a report path that could not be written (its folder is created)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"report {path} is a folder; give a file name such as result.json")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        raise InputError(f"cannot write the report {path}: cannot create its folder") from None
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"cannot write the report {path}: its folder is not writable")
    return path
