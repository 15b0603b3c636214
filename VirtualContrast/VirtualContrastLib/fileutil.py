"""Atomic file writes: temporary files beside the targets, renamed over them only when all succeed.

A temporary file is removed on any error, on Ctrl-C and on SIGTERM (what a GUI cancel or a
scheduler sends); one left by a harder kill (SIGKILL, power loss) is removed by the next write to
the same target once it is older than :data:`STALE_TEMP_SECONDS`.
"""

from __future__ import annotations

import csv
import errno
import os
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .errors import InputError

#: Age after which a leftover temporary file of a target is taken to be abandoned: far longer than
#: any write takes, so a concurrent writer's live temporary file is never removed.
STALE_TEMP_SECONDS = 3600.0

#: errno values of a write that found no room: a full disk, a full quota, a file-size limit.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def write_error_reason(error: BaseException | None) -> str:
    """Why a write failed, for a one-line message: "disk full" when no room was left, else the system's reason."""
    if getattr(error, "errno", None) in NO_SPACE_ERRNOS:
        return "disk full"
    return getattr(error, "strerror", None) or str(error) or "the write failed"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _remove_stale_temps(path: Path, suffix: str) -> None:
    """Remove temporary files of ``path`` abandoned by an earlier, killed writer."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for leftover in path.parent.glob(f"{_temp_prefix(path)}*{suffix}"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except OSError:  # already gone, or not ours to remove
            pass


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds through the ``finally`` below (temporary files removed) and ends the
    # process with the status a default SIGTERM death reports to shells.
    raise SystemExit(128 + signum)


@contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """Meanwhile, turn a default-handled SIGTERM into SystemExit so cleanup code (``finally``) runs."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _flush_to_disk(path: str) -> None:
    # Some file systems (NFS, quotas) report a full disk only when the data is flushed.
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_writes(paths: Sequence[str | os.PathLike], suffixes: Sequence[str]) -> Iterator[list[Path]]:
    """Yield one temporary path beside each of ``paths``; they replace ``paths`` only if the block succeeds.

    ``suffixes`` keep the extensions that writers such as SimpleITK use to pick the file format. On
    any error (or SIGTERM) every temporary file is removed and no target is touched. Results get the
    permissions of a normally created file (``mkstemp`` makes them owner-only).
    """
    targets = [Path(p) for p in paths]
    temps: list[str] = []
    with exit_on_sigterm():
        try:
            for path, suffix in zip(targets, suffixes):
                _remove_stale_temps(path, suffix)
                fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=suffix, dir=path.parent)
                os.close(fd)
                temps.append(tmp)
            yield [Path(t) for t in temps]
            for tmp in temps:
                _flush_to_disk(tmp)
            umask = os.umask(0)
            os.umask(umask)
            for tmp, path in zip(temps, targets):
                os.chmod(tmp, 0o666 & ~umask)
                os.replace(tmp, path)
        finally:
            for tmp in temps:
                if os.path.exists(tmp):
                    os.unlink(tmp)


@contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed."""
    with atomic_writes([path], [suffix]) as (tmp,):
        yield tmp


def write_file(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically through ``write(tmp)``; a failed write is a one-line :class:`InputError` ("disk full" when it is)."""
    path = Path(path)
    try:
        with atomic_write(path, suffix=path.suffix) as tmp:
            write(tmp)
    except OSError as error:
        raise InputError(f"cannot write {path}: {write_error_reason(error)}") from None
    return path


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
