"""The real training data: 42 BraTS 2018 cases held in two public GitHub repositories, and their extractor.

``model_training/data/brats2018_manifest.tsv`` lists every file: case, split (34 train, 8 val, fixed),
cohort, file name, repository, commit, path in the repository, SHA-256 and size. A user clones the two
repositories (``git clone https://github.com/koriavinash1/DeepBrainSeg`` and ``.../BioExp``) and runs
``virtual-contrast-train get-brats2018 DEST DEEPBRAINSEG_DIR BIOEXP_DIR``: each file is read from the
clone's work tree when it matches the manifest, else from the manifest's commit (``git show``), checked
against its SHA-256 and written atomically as ``DEST/<case>/<file>``, with ``DEST/splits.tsv`` for
``prepare --split``. Files already in place with the right SHA-256 are kept, so a rerun resumes.
The images are BraTS 2018 training data (terms and citations: the README and every model card).
"""

from __future__ import annotations

import csv
import hashlib
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from VirtualContrastLib.errors import InputError
from VirtualContrastLib.fileutil import atomic_write

MANIFEST = Path(__file__).parent / "data" / "brats2018_manifest.tsv"

#: The repositories the manifest draws on, in the order the command line takes their folders.
REPOSITORIES = ("koriavinash1/DeepBrainSeg", "koriavinash1/BioExp")


@dataclass(frozen=True)
class ManifestFile:
    """One file of the manifest."""

    case: str
    split: str
    cohort: str
    file: str
    repo: str
    commit: str
    path: str
    sha256: str
    size: int


def read_manifest(path: str | Path = MANIFEST) -> list[ManifestFile]:
    """The manifest's rows."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [ManifestFile(**{key: value for key, value in row.items() if key != "bytes"}, size=int(row["bytes"])) for row in rows]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(clone: Path, entry: ManifestFile) -> bytes:
    """The file's bytes from the clone's work tree if they match, else from the manifest's commit."""
    checked_out = clone / entry.path
    if checked_out.is_file():
        data = checked_out.read_bytes()
        if _sha256(data) == entry.sha256:
            return data
    shown = subprocess.run(["git", "-C", str(clone), "show", f"{entry.commit}:{entry.path}"], capture_output=True)
    if shown.returncode != 0:
        raise InputError(f"{entry.case}/{entry.file}: {entry.path} at commit {entry.commit[:12]} is not in {clone} "
                         f"(clone https://github.com/{entry.repo} with its history)")
    return shown.stdout


def extract(dest: str | Path, clones: dict[str, str | Path], cases: Sequence[str] | None = None,
            manifest: str | Path = MANIFEST, progress: Callable[[str], None] | None = None) -> int:
    """Write the manifest's files (of ``cases``, or all) into ``dest`` from the clones (repo -> folder); returns files written."""
    entries = [e for e in read_manifest(manifest) if cases is None or e.case in cases]
    unknown = sorted(set(cases or ()) - {e.case for e in entries})
    if unknown:
        raise InputError(f"not in the manifest: {', '.join(unknown)}")
    missing = sorted({e.repo for e in entries} - set(clones))
    if missing:
        raise InputError(f"no folder given for {', '.join(missing)}")
    dest = Path(dest)
    written = 0
    for entry in entries:
        out = dest / entry.case / entry.file
        if out.is_file() and _sha256(out.read_bytes()) == entry.sha256:
            continue
        data = _read(Path(clones[entry.repo]), entry)
        if _sha256(data) != entry.sha256:
            raise InputError(f"{entry.case}/{entry.file}: SHA-256 differs from the manifest's; the file in {clones[entry.repo]} is not the published one")
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(out, ".nii.gz") as tmp:
            tmp.write_bytes(data)
        written += 1
        if progress is not None:
            progress(f"{entry.case}/{entry.file}")
    splits = sorted({(e.case, e.split, e.cohort) for e in entries})
    with atomic_write(dest / "splits.tsv", ".tsv") as tmp:
        tmp.write_text("".join(f"{case}\t{split}\t{cohort}\n" for case, split, cohort in splits), encoding="utf-8")
    return written
