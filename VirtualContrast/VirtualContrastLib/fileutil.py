"""Atomic file writes: a temporary file beside the target, renamed over it only on success."""

from __future__ import annotations

import csv
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence


@contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    ``suffix`` keeps the extension that writers such as SimpleITK use to pick the file format. The
    result gets the permissions of a normally created file (``mkstemp`` makes it owner-only).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], fields: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as CSV with a header, atomically; columns are ``fields`` or every key in first-seen order."""
    path = Path(path)
    columns = list(fields) if fields is not None else list(dict.fromkeys(key for row in rows for key in row))
    with atomic_write(path, suffix=".csv") as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return path
