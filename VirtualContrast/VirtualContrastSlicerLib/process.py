"""The engine's command line run as a background process that can really be cancelled.

Slicer's GUI thread must not run a minutes-long synthesis, and a Python thread cannot be
stopped, so the engine runs as ``<python> -m VirtualContrastLib synthesize ...`` in its own
process group. A reader thread queues its output lines; :meth:`BackgroundProcess.poll`, called
from the caller's thread (a QTimer in Slicer, a loop in scripts), hands them to the callbacks.
Cancel kills the whole process tree (the group on POSIX, ``taskkill /T`` on Windows).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

#: Exit code reported for a process stopped by :meth:`BackgroundProcess.cancel`.
CANCELLED_RETURN_CODE = -1001

_KILL_GRACE_SECONDS = 2.0


def engineSearchPath() -> str:
    """Folder that holds the ``VirtualContrastLib`` package (beside the module in both layouts)."""
    import VirtualContrastLib

    return str(Path(VirtualContrastLib.__file__).resolve().parent.parent)


def pythonExecutable() -> str:
    """``PythonSlicer`` inside the Slicer application, else the running interpreter."""
    import shutil

    import slicer

    if hasattr(slicer, "app"):
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def engineEnvironment() -> dict[str, str]:
    """Current environment with the engine package first on ``PYTHONPATH``."""
    env = dict(os.environ)
    paths = [engineSearchPath()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    # the parent decodes the child's output as UTF-8: make the child write UTF-8 on every platform
    env["PYTHONUTF8"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


class BackgroundProcess:
    """One child process whose merged stdout/stderr lines reach ``onLine`` from :meth:`poll`."""

    def __init__(self, args: list[str], onLine: Callable[[str], None], env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.onLine = onLine
        self.env = env
        self.returnCode: int | None = None
        self.cancelled = False
        self._lines: "queue.Queue[str | None]" = queue.Queue()
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._killDeadline: float | None = None

    def start(self) -> None:
        """Launch the process in a new process group and start reading its output."""
        options: dict = {}
        if os.name == "nt":
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            options["start_new_session"] = True
        self._process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env, text=True, encoding="utf-8", errors="replace", bufsize=1, **options,
        )
        self._reader = threading.Thread(target=self._readLines, name="VirtualContrastReader", daemon=True)
        self._reader.start()

    def _readLines(self) -> None:
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\r\n"))
        self._lines.put(None)

    @property
    def pid(self) -> int | None:
        """Process id of the child (None before start)."""
        return self._process.pid if self._process else None

    def poll(self) -> bool:
        """Deliver queued output lines; return True while the process is still running."""
        if self._killDeadline is not None and time.monotonic() > self._killDeadline:
            self._killDeadline = None
            self._signalGroup(signal.SIGKILL)
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return True
            if line is None:
                code = self._process.wait()
                self.returnCode = CANCELLED_RETURN_CODE if self.cancelled else code
                return False
            self.onLine(line)

    def wait(self, pollInterval: float = 0.05) -> int:
        """Block (delivering lines) until the process ends; return its exit code."""
        while self.poll():
            time.sleep(pollInterval)
        return self.returnCode

    def cancel(self) -> None:
        """Stop the process and every process it started, without waiting (the GUI stays responsive).

        On POSIX the group gets SIGTERM now and SIGKILL from :meth:`poll` if it is still there after
        a grace period; on Windows ``taskkill /T`` ends the tree at once, without a console window.
        """
        if self._process is None or self._process.poll() is not None:
            return
        self.cancelled = True
        if os.name == "nt":
            subprocess.Popen(["taskkill", "/F", "/T", "/PID", str(self._process.pid)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, creationflags=subprocess.CREATE_NO_WINDOW)
            return
        self._signalGroup(signal.SIGTERM)
        self._killDeadline = time.monotonic() + _KILL_GRACE_SECONDS

    def _signalGroup(self, signalNumber: int) -> None:
        try:
            os.killpg(self._process.pid, signalNumber)
        except ProcessLookupError:
            pass
