"""The phantom case offered in the Sample Data module: bundled files, loaded like any other sample.

The case (the demo's phantom, seed ``DEMO_SEED``, 2 mm) is bundled as small NRRD files in
``Resources/SampleData`` and registered with ``file://`` addresses, so Slicer's own Sample Data code
copies and loads it: from the GUI and from scripts (``SampleData.downloadSample``), in about a second,
with no phantom packages (nibabel, nilearn) and no generation in the GUI thread. The phantom's true
CE-T1 is loaded as well, to compare the synthetic image with.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import SimpleITK as sitk

CATEGORY = "VirtualContrast"
SAMPLE_NAME = "VirtualContrastPhantom"

#: phantom image key -> (bundled file, node name). The node names are what input auto-assignment matches.
SAMPLE_FILES: dict[str, tuple[str, str]] = {
    "t1": ("VirtualContrastPhantom-T1.nrrd", "Phantom_T1"),
    "t2": ("VirtualContrastPhantom-T2.nrrd", "Phantom_T2"),
    "adc": ("VirtualContrastPhantom-ADC.nrrd", "Phantom_ADC"),
    "flair": ("VirtualContrastPhantom-FLAIR.nrrd", "Phantom_FLAIR"),
    "t1c": ("VirtualContrastPhantom-CE-T1-true.nrrd", "Phantom_true_CE_T1"),
    "brainmask": ("VirtualContrastPhantom-brain-mask.nrrd", "Phantom_brain_mask"),
}

SAMPLE_SPACING_MM = 2.0


def sha256(path: Path) -> str:
    """SHA-256 of a file, as Sample Data checks it (``SHA256:<hex>``)."""
    return "SHA256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sampleSource(folder: Path) -> dict:
    """Keyword arguments of ``SampleDataLogic.registerCustomSampleDataSource`` for the bundled files in ``folder``."""
    paths = [Path(folder) / fileName for fileName, _ in SAMPLE_FILES.values()]
    return {
        "category": CATEGORY,
        "sampleName": SAMPLE_NAME,
        "uris": [path.resolve().as_uri() for path in paths],
        "fileNames": [path.name for path in paths],
        "nodeNames": [nodeName for _, nodeName in SAMPLE_FILES.values()],
        # a changed bundled file replaces a stale copy in Slicer's cache
        "checksums": [sha256(path) for path in paths],
        "loadFileTypes": ["VolumeFile"] * len(paths),
    }


def writeSampleFiles(images: dict[str, sitk.Image], folder: Path) -> list[Path]:
    """Write a phantom case's images (``t1``, ..., ``t1c``, ``brainmask``) as the bundled sample files."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key, (fileName, _) in SAMPLE_FILES.items():
        image = sitk.Image(images[key])
        image.SetMetaData("ITK_FileNotes", "VirtualContrast phantom: SYNTHETIC, research use only")
        sitk.WriteImage(image, str(folder / fileName), useCompression=True)
        written.append(folder / fileName)
    return written
