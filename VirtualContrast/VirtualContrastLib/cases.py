"""Case folders: the file layouts of a case's images and the image extensions, for every front end.

``virtual-contrast batch`` reads case folders with them, the phantom writes its cases in the
``phantom`` layout, and training (``model_training.datasets``) prepares data sets from them.

A layout is a table: for every role (an input modality, the target ``t1c``, the brain ``mask``
and tumour ``labels``) the file-name suffix it carries inside the case folder. Add a layout by
adding a row to :data:`LAYOUTS`; nothing else needs to change.

=============  ============  =========  =========  ===========  =========  ======================  ======================
layout         t1            t1c        t2         flair        adc        mask                    labels
=============  ============  =========  =========  ===========  =========  ======================  ======================
phantom        -t1n          -t1c       -t2w       -t2f         -adc       -brainmask              -seg
brats2018      t1            t1c        t2         flair        (none)     (none)                  seg
brats2023      -t1n          -t1c       -t2w       -t2f         (none)     (none)                  -seg
brats2021      _t1           _t1ce      _t2        _flair       (none)     (none)                  _seg
ucsf_pdgm      _T1           _T1c       _T2        _FLAIR       _ADC       _brain_segmentation     _tumor_segmentation
=============  ============  =========  =========  ===========  =========  ======================  ======================

Each suffix is followed by one of :data:`IMAGE_EXTENSIONS`. The case id is the folder name.
``brats2018`` is the plain naming that ``shared/realdata/extract.sh`` writes (``<case>/t1.nii.gz`` …);
BraTS 2018–2020 downloads with their original names (``*_t1ce.nii.gz``) match ``brats2021``. Tumour
labels of BraTS 2018–2021 and UCSF-PDGM (4 = enhancing) are rewritten to the BraTS 2023 convention
(3 = enhancing) by :data:`LABEL_MAPS`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import MODALITIES
from .errors import InputError, MissingModalityError

#: The image a model predicts, as a role in a case folder.
TARGET = "t1c"
IMAGE_ROLES = (*MODALITIES, TARGET)
#: Extensions of image files in a case folder.
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")

LAYOUTS: dict[str, dict[str, str]] = {
    "phantom": {"t1": "-t1n", "t1c": "-t1c", "t2": "-t2w", "flair": "-t2f", "adc": "-adc", "mask": "-brainmask", "labels": "-seg"},
    "brats2018": {"t1": "t1", "t1c": "t1c", "t2": "t2", "flair": "flair", "labels": "seg"},
    "brats2023": {"t1": "-t1n", "t1c": "-t1c", "t2": "-t2w", "flair": "-t2f", "labels": "-seg"},
    "brats2021": {"t1": "_t1", "t1c": "_t1ce", "t2": "_t2", "flair": "_flair", "labels": "_seg"},
    "ucsf_pdgm": {
        "t1": "_T1", "t1c": "_T1c", "t2": "_T2", "flair": "_FLAIR", "adc": "_ADC",
        "mask": "_brain_segmentation", "labels": "_tumor_segmentation",
    },
}

#: A case id becomes a folder and file names under an output folder: a word character first (no hidden
#: names, no "..") and no path separators or characters some file systems refuse.
CASE_ID_PATTERN = re.compile(r"\w[\w .+-]{0,99}")

#: Columns of a CSV manifest besides ``case_id`` and the image roles.
MANIFEST_EXTRAS = ("mask", "labels")

#: Tumour label values of the BraTS 2023 convention (0 background, 1 necrosis/non-enhancing, 2 oedema,
#: 3 enhancing) that prepared data uses.
LABEL_VALUES = frozenset({0, 1, 2, 3})

#: Label values rewritten to the BraTS 2023 convention (3 = enhancing tumour) when preparing.
LABEL_MAPS: dict[str, dict[int, int]] = {"brats2018": {4: 3}, "brats2021": {4: 3}, "ucsf_pdgm": {4: 3}}


@dataclass
class CaseFiles:
    """The files of one case: images by role, plus an optional brain mask and tumour labels."""

    case_id: str
    images: dict[str, Path]
    mask: Path | None = None
    labels: Path | None = None
    info: dict[str, str] = field(default_factory=dict)
    label_map: dict[int, int] = field(default_factory=dict)

    def require(self, roles: list[str]) -> None:
        """Raise :class:`MissingModalityError` naming every role in ``roles`` this case lacks."""
        missing = [role for role in roles if role not in self.images]
        if missing:
            raise MissingModalityError(f"case {self.case_id}: missing {', '.join(missing)} (found {', '.join(sorted(self.images)) or 'nothing'})")


def _find_suffix(folder: Path, suffix: str) -> Path | None:
    """The one file in ``folder`` named ``*<suffix><ext>``; None when absent; error when ambiguous."""
    hits = sorted(p for p in folder.iterdir() if p.is_file() and any(p.name.endswith(suffix + ext) for ext in IMAGE_EXTENSIONS))
    if len(hits) > 1:
        raise InputError(f"case {folder.name}: several files end in {suffix!r}: {', '.join(p.name for p in hits)}")
    return hits[0] if hits else None


def read_case_folder(folder: str | Path, layout: str) -> CaseFiles:
    """Collect the files of one case folder in the named layout."""
    folder = Path(folder)
    if layout not in LAYOUTS:
        raise InputError(f"unknown dataset layout {layout!r}; known: {', '.join(sorted(LAYOUTS))}, csv")
    table = LAYOUTS[layout]
    found = {role: _find_suffix(folder, suffix) for role, suffix in table.items()}
    images = {role: path for role, path in found.items() if path is not None and role in IMAGE_ROLES}
    return CaseFiles(folder.name, images, mask=found.get("mask"), labels=found.get("labels"), info={"layout": layout, "folder": str(folder)},
                     label_map=dict(LABEL_MAPS.get(layout, {})))


def detect_layout(root: str | Path, required: tuple[str, ...] = ("t1", TARGET)) -> str:
    """Name the layout that best matches the first case folder under ``root`` that some layout recognises.

    A layout must find the ``required`` roles (training: T1 and CE-T1; synthesis: T1); among those,
    one whose every role is present wins, then the one that finds more files (the phantom layout is
    BraTS 2023 plus ADC and a mask), then the one listed first. Folders no layout recognises are
    passed over (a broken case must not hide the layout of the others).
    """
    folders = case_folders(root)
    for folder in folders:
        scores = {}
        for name, table in LAYOUTS.items():
            found = [role for role, suffix in table.items() if _find_suffix(folder, suffix)]
            if set(required) <= set(found):
                scores[name] = (len(found) == len(table), len(found))
        if scores:
            return max(scores, key=scores.get)
    names = "/".join(role.upper() for role in required)
    raise InputError(f"cannot recognise the layout of {folders[0]}: no known {names} file names (layouts: {', '.join(LAYOUTS)})")


def case_folders(root: str | Path) -> list[Path]:
    """The case folders under ``root`` (hidden ones excepted), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"no case folders in {root}")
    return folders


def read_manifest(manifest: str | Path, roles: Sequence[str] = (*IMAGE_ROLES, *MANIFEST_EXTRAS), required: Sequence[str] = ("t1",),
                  must_exist: bool = False) -> list[CaseFiles]:
    """The cases of a CSV manifest: a ``case_id`` column and one column per role; relative paths are from its folder.

    ``roles`` are the columns this front end accepts (synthesis: the inputs and ``mask``; training also
    ``t1c`` and ``labels``); header names are case-insensitive and a spreadsheet's byte-order mark is
    accepted. Case ids must be usable as folder names and distinct ignoring case; ``must_exist``
    checks every listed file up front (training), otherwise each case's reader reports its own.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise InputError(f"manifest not found: {manifest}")
    try:
        # utf-8-sig: spreadsheet programs (Excel) start a CSV with a byte-order mark.
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            reader.fieldnames = [(name or "").strip().lower() for name in reader.fieldnames or []]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"cannot read manifest {manifest.name}: {error}") from None
    known = ("case_id", *roles)
    columns = [name for name in reader.fieldnames if name]
    if not rows or not {"case_id", *required} <= set(columns):
        raise InputError(f"manifest {manifest.name} needs a header with at least {','.join(('case_id', *required))} and one row "
                         f"per case (columns: {','.join(known)})")
    unknown = [name for name in columns if name not in known]
    if unknown:
        raise InputError(f"manifest {manifest.name} has unknown columns {','.join(unknown)}; known: {','.join(known)}")
    cases = []
    for number, row in enumerate(rows, start=1):
        paths = {k: manifest.parent / v.strip() for k, v in row.items() if k in roles and v and v.strip()}
        case_id = (row.get("case_id") or "").strip() or f"row{number}"
        if not CASE_ID_PATTERN.fullmatch(case_id):
            raise InputError(
                f"manifest {manifest.name} row {number}: case id {case_id!r} cannot be a folder name (up to 100 letters, digits, "
                "spaces and . _ + -, starting with a letter or digit; no path separators)"
            )
        mask, labels = paths.pop("mask", None), paths.pop("labels", None)
        cases.append(CaseFiles(case_id, paths, mask=mask, labels=labels, info={"layout": "csv", "manifest": str(manifest)}))
    first: dict[str, str] = {}
    clashes = []
    for case in cases:
        if case.case_id.casefold() in first:
            clashes.append(f"{first[case.case_id.casefold()]!r} and {case.case_id!r}")
        first.setdefault(case.case_id.casefold(), case.case_id)
    if clashes:
        raise InputError(f"manifest {manifest.name} repeats case ids (ignoring case, as some file systems do): {', '.join(clashes)}; "
                         "each case needs its own id")
    if must_exist:
        for case in cases:
            for path in [*case.images.values(), case.mask, case.labels]:
                if path is not None and not path.exists():
                    raise InputError(f"manifest {manifest.name}: case {case.case_id}: file not found: {path}")
    return cases
