"""Python packages synthesis needs besides what Slicer bundles, installed without ever touching torch.

torch comes from the PyTorch extension (PyTorch Utils), built for the user's GPU. pip must not
replace it: a package whose newest release wants a newer torch (MONAI does) would otherwise make pip
swap the extension's CUDA build for a CPU wheel. So every install here runs with a constraints file
that pins the installed torch (as SlicerTotalSegmentator and SlicerNNUnet do); pip then picks
versions that work with it or fails, and the installed torch is checked against the requirement.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from VirtualContrastLib.errors import VirtualContrastError

#: What synthesis imports beyond Slicer's bundled packages (numpy, SimpleITK) and torch.
SYNTHESIS_REQUIREMENTS = ("monai>=1.4", "tqdm>=4.60")

#: What generating the phantom sample needs (nilearn ships the MNI template and brings nibabel).
SAMPLE_REQUIREMENTS = ("nilearn>=0.10",)

TORCH_REQUIREMENT = ">=2.4"


class InstallDeclined(VirtualContrastError):
    """The user declined installing required packages (not a network or pip failure)."""


def _parse(requirement: str) -> tuple[str, str]:
    name, _, minimum = requirement.partition(">=")
    return name.strip(), minimum.strip()


def versionTuple(version: str) -> tuple[int, ...]:
    """The leading numeric parts of a version ("2.13.0+cu126" -> (2, 13, 0))."""
    parts = []
    for piece in version.split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
        if match.end() < len(piece):
            break
    return tuple(parts)


def installedVersion(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def missingRequirements(requirements: tuple[str, ...] = SYNTHESIS_REQUIREMENTS) -> list[str]:
    """The requirements (``name>=version``) that are absent or older than required."""
    missing = []
    for requirement in requirements:
        name, minimum = _parse(requirement)
        installed = installedVersion(name)
        if installed is None or (minimum and versionTuple(installed) < versionTuple(minimum)):
            missing.append(requirement)
    return missing


def torchProblem() -> str | None:
    """Why the installed torch cannot be used (too old), or None; an absent torch is PyTorch Utils' to install."""
    installed = installedVersion("torch")
    minimum = _parse(f"torch{TORCH_REQUIREMENT}")[1]
    if installed is not None and versionTuple(installed) < versionTuple(minimum):
        return (f"PyTorch {installed} is installed but VirtualContrast needs torch{TORCH_REQUIREMENT}: update it in the "
                "'PyTorch Utils' module (it keeps the GPU build), then restart Slicer")
    return None


def writeTorchConstraints(folder: Path) -> Path:
    """A pip constraints file that pins the installed torch (an empty one when none is installed)."""
    installed = installedVersion("torch")
    path = Path(folder) / "virtualcontrast-constraints.txt"
    path.write_text(f"torch=={installed}\n" if installed else "", encoding="utf-8")
    return path


def pipArguments(requirements: list[str], constraints: Path) -> list[str]:
    """``pip install`` arguments for Slicer 5.8's ``slicer.util.pip_install`` (a list: paths may hold spaces)."""
    return [*requirements, "--constraint", str(constraints)]


def offlineInstructions(requirements: list[str]) -> str:
    """How to install ``requirements`` without network access, keeping the installed torch (e.g. on a hospital network)."""
    listed = " ".join(f'"{r}"' for r in requirements)
    installed = installedVersion("torch")
    # the installed torch named with its exact version: pip keeps it rather than the CPU wheel that the download
    # may have put into the folder, so the PyTorch extension's GPU build survives the offline install too
    pin = f' "torch=={installed}"' if installed and not any(_parse(r)[0] == "torch" for r in requirements) else ""
    return (
        "If this computer cannot reach the Python package index (e.g. a hospital network), on a computer with "
        "internet access run:\n"
        f"  PythonSlicer -m pip download {listed} -d wheels\n"
        "copy the 'wheels' folder here and install without network access:\n"
        f"  PythonSlicer -m pip install --no-index --find-links wheels {listed}{pin}\n"
        "PyTorch itself is installed by the PyTorch extension (module 'PyTorch Utils'); offline, install a torch "
        "wheel the same way. Then restart Slicer."
    )
