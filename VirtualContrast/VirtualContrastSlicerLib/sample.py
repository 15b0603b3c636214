"""The phantom case offered in the Sample Data module: generated on the spot, then loaded like any other sample.

No image ships with the extension. The first time the sample is asked for, the demo's phantom (seed
``DEMO_SEED``) is generated at 2 mm with the engine's own generator (a few seconds; it needs nilearn for
the MNI template, installed with the user's confirmation) and written as NRRD files into a folder of the
temporary directory. The source registered with Slicer's Sample Data points at those files (``file://``
addresses), so Slicer's own Sample Data code copies them into its cache and loads them, from the GUI (its
custom downloader generates first) and from scripts (``VirtualContrast.loadPhantomSample()``). The phantom's
true CE-T1 is loaded as well, to compare the synthetic image with.

The file names carry a fingerprint of the generator's source, so Slicer's cache (which keeps a file by its
name) never serves a case an older generator made; a case already in that cache is not generated again
when the temporary directory has been cleared.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path

import SimpleITK as sitk

from VirtualContrastLib.errors import VirtualContrastError

CATEGORY = "VirtualContrast"
SAMPLE_NAME = "VirtualContrastPhantom"

#: phantom image key -> (file name ending, node name). The node names are what input auto-assignment matches.
SAMPLE_FILES: dict[str, tuple[str, str]] = {
    "t1": ("T1.nrrd", "Phantom_T1"),
    "t2": ("T2.nrrd", "Phantom_T2"),
    "adc": ("ADC.nrrd", "Phantom_ADC"),
    "flair": ("FLAIR.nrrd", "Phantom_FLAIR"),
    "t1c": ("CE-T1-true.nrrd", "Phantom_true_CE_T1"),
    "brainmask": ("brain-mask.nrrd", "Phantom_brain_mask"),
}

SAMPLE_SPACING_MM = 2.0

#: Node attribute marking the sample's volumes as phantom images: for them the automatic model choice
#: prefers phantom-trained models (on real scans, one trained on real scans wins).
PHANTOM_ATTRIBUTE = "VirtualContrast.Phantom"


def isPhantom(node) -> bool:
    """Whether ``node`` is one of the phantom sample's volumes."""
    return node is not None and node.GetAttribute(PHANTOM_ATTRIBUTE) == "true"


def sampleFolder() -> Path:
    """Where the generated sample files live (the same case every time, so one copy serves all sessions)."""
    return Path(tempfile.gettempdir()) / f"VirtualContrastPhantom-{SAMPLE_SPACING_MM:g}mm"


def generatorFingerprint() -> str:
    """8 hex digits that change whenever the phantom generator's source (or the demo seed, or the spacing) does."""
    from VirtualContrastLib import DEMO_SEED, phantom

    digest = hashlib.sha256(f"{DEMO_SEED}/{SAMPLE_SPACING_MM:g}".encode())
    for path in sorted(Path(phantom.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


def sampleFileNames() -> list[str]:
    """The sample's file names, in the order of :data:`SAMPLE_FILES`."""
    fingerprint = generatorFingerprint()
    return [f"VirtualContrastPhantom-{fingerprint}-{ending}" for ending, _ in SAMPLE_FILES.values()]


def samplePaths(folder: Path) -> list[Path]:
    """The sample's files in ``folder``, in the order of :data:`SAMPLE_FILES`."""
    return [Path(folder) / fileName for fileName in sampleFileNames()]


def sampleSource(folder: Path) -> dict:
    """Keyword arguments of ``SampleDataLogic.registerCustomSampleDataSource`` for the sample files in ``folder``."""
    paths = samplePaths(folder)
    return {
        "category": CATEGORY,
        "sampleName": SAMPLE_NAME,
        "uris": [path.resolve().as_uri() for path in paths],
        "fileNames": [path.name for path in paths],
        "nodeNames": [nodeName for _, nodeName in SAMPLE_FILES.values()],
        "loadFileTypes": ["VolumeFile"] * len(paths),
    }


def generateSampleFiles(folder: Path, cache: Path | None = None) -> list[Path]:
    """Generate the phantom case into ``folder`` unless all its files are there or in Slicer's ``cache``; returns the files."""
    paths = samplePaths(folder)
    if all(path.is_file() for path in paths) or (cache is not None and all(path.is_file() for path in samplePaths(cache))):
        return paths
    from VirtualContrastLib import DEMO_SEED
    from VirtualContrastLib.phantom import generate_case

    case = generate_case(DEMO_SEED, spacing=SAMPLE_SPACING_MM)
    return writeSampleFiles({**case.images, "brainmask": case.brain_mask}, Path(folder))


def writeSampleFiles(images: dict[str, sitk.Image], folder: Path) -> list[Path]:
    """Write a phantom case's images (``t1``, ..., ``t1c``, ``brainmask``) as the sample files, each whole or not at all."""
    from VirtualContrastLib.fileutil import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key, fileName in zip(SAMPLE_FILES, sampleFileNames()):
        image = sitk.Image(images[key])
        image.SetMetaData("ITK_FileNotes", "VirtualContrast phantom: SYNTHETIC, research use only")
        with atomic_write(folder / fileName, suffix=".nrrd") as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=True)
        written.append(folder / fileName)
    return written


def nodesByKey(nodes: list) -> dict:
    """The loaded sample nodes by key (``t1``, ..., ``brainmask``), matched by name, not by position: a file that failed
    to load (Sample Data leaves it out of its list) shifts nothing; a second copy is named ``Phantom_T1_1`` and so on.

    Refuses in one line, naming what did not load.
    """
    found = {}
    for key, (_, nodeName) in SAMPLE_FILES.items():
        pattern = re.compile(re.escape(nodeName) + r"(_\d+)?")
        found[key] = next((n for n in nodes if hasattr(n, "GetName") and pattern.fullmatch(n.GetName() or "")), None)
    missing = [key for key, node in found.items() if node is None]
    if missing:
        raise VirtualContrastError(f"the phantom sample's {', '.join(m.upper() for m in missing)} did not load; see the Python console")
    return found
