"""Python packages the engine needs besides what Slicer bundles (torch is handled by PyTorchUtils)."""

from __future__ import annotations

import importlib.metadata

#: Installed into Slicer's Python on demand, with the user's confirmation (never at import).
REQUIREMENTS = (
    "monai>=1.4",
    "scikit-image>=0.22",
    "nilearn>=0.10",
    "matplotlib>=3.7",
    "tqdm>=4.60",
)

TORCH_REQUIREMENT = ">=2.4"


def _parse(requirement: str) -> tuple[str, str]:
    name, _, minimum = requirement.partition(">=")
    return name.strip(), minimum.strip()


def _versionTuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def missingRequirements(requirements: tuple[str, ...] = REQUIREMENTS) -> list[str]:
    """The requirements (``name>=version``) that are absent or older than required."""
    missing = []
    for requirement in requirements:
        name, minimum = _parse(requirement)
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
            continue
        if minimum and _versionTuple(installed) < _versionTuple(minimum):
            missing.append(requirement)
    return missing


def offlineInstructions(requirements: list[str]) -> str:
    """What to tell a user whose Slicer cannot reach the package index (e.g. a hospital network)."""
    listed = " ".join(f'"{r}"' for r in requirements)
    return (
        "The packages could not be installed, most likely because this computer cannot reach the Python "
        "package index. On a computer with internet access run:\n"
        f"  PythonSlicer -m pip download {listed} -d wheels\n"
        "copy the 'wheels' folder here and install without network access:\n"
        f"  PythonSlicer -m pip install --no-index --find-links wheels {listed}\n"
        "PyTorch itself is installed by the PyTorch extension (module 'PyTorch Utils'); offline, install a torch "
        "wheel the same way. Then restart Slicer."
    )
