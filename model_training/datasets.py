"""Find the files of each case in the supported dataset layouts.

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

Each suffix is followed by one of :data:`EXTENSIONS`. The case id is the folder name. ``brats2018`` is
the plain naming that ``shared/realdata/extract.sh`` writes (``<case>/t1.nii.gz`` …); BraTS
2018–2020 downloads with their original names (``*_t1ce.nii.gz``) match ``brats2021``. Tumour labels
of BraTS 2018–2021 and UCSF-PDGM (4 = enhancing) are rewritten to the BraTS 2023 convention
(3 = enhancing) by :data:`LABEL_MAPS`. A generic
CSV manifest (:func:`read_manifest`) covers everything else: one row per case, a ``case_id``
column, one column per modality (``t1``, ``t2``, ``adc``, ``flair``, ``t1c``) and optional
``mask`` and ``labels`` columns; relative paths are relative to the CSV file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from VirtualContrastLib import MODALITIES
from VirtualContrastLib.errors import InputError, MissingModalityError

TARGET = "t1c"
IMAGE_ROLES = (*MODALITIES, TARGET)
EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")

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

#: Label values rewritten to the BraTS 2023 convention (3 = enhancing tumour) when preparing.
LABEL_MAPS: dict[str, dict[int, int]] = {"brats2018": {4: 3}, "brats2021": {4: 3}, "ucsf_pdgm": {4: 3}}

#: Optional table of fixed splits in a dataset folder: ``case<TAB>split[<TAB>cohort]`` per line.
SPLITS_FILE = "splits.tsv"


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
    hits = sorted(p for p in folder.iterdir() if p.is_file() and any(p.name.endswith(suffix + ext) for ext in EXTENSIONS))
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


def detect_layout(root: str | Path) -> str:
    """Name the layout that best matches the first case folder under ``root``.

    A layout must find the T1 and the CE-T1; among those, one whose every role is present wins,
    then the one that finds more files (the phantom layout is BraTS 2023 plus ADC and a mask).
    """
    folder = _case_folders(Path(root))[0]
    scores = {}
    for name, table in LAYOUTS.items():
        found = [role for role, suffix in table.items() if _find_suffix(folder, suffix)]
        if "t1" in found and "t1c" in found:
            scores[name] = (len(found) == len(table), len(found))
    if not scores:
        raise InputError(f"cannot recognise the layout of {folder}: no known T1/CE-T1 file names (layouts: {', '.join(LAYOUTS)})")
    return max(scores, key=scores.get)


def _case_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"no case folders in {root}")
    return folders


def read_manifest(csv_path: str | Path) -> list[CaseFiles]:
    """Read a CSV manifest (``case_id``, modality columns, optional ``mask``/``labels``)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"manifest not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        rows = list(reader)
    if "case_id" not in columns:
        raise InputError(f"{csv_path.name}: a manifest needs a header with a 'case_id' column")
    unknown = columns - {"case_id", "mask", "labels", *IMAGE_ROLES}
    if unknown:
        raise InputError(f"{csv_path.name}: unknown columns {sorted(unknown)}; allowed: case_id, {', '.join(IMAGE_ROLES)}, mask, labels")
    if not rows:
        raise InputError(f"{csv_path.name}: the manifest lists no cases")

    def resolve(value: str | None) -> Path | None:
        if not value or not value.strip():
            return None
        path = Path(value.strip())
        return path if path.is_absolute() else csv_path.parent / path

    cases = []
    for row in rows:
        images = {role: resolve(row.get(role)) for role in IMAGE_ROLES}
        cases.append(CaseFiles(
            row["case_id"],
            {role: path for role, path in images.items() if path is not None},
            mask=resolve(row.get("mask")),
            labels=resolve(row.get("labels")),
            info={"layout": "csv", "manifest": str(csv_path)},
        ))
    for case in cases:
        for path in [*case.images.values(), case.mask, case.labels]:
            if path is not None and not path.exists():
                raise InputError(f"{csv_path.name}: case {case.case_id}: file not found: {path}")
    return cases


def read_splits(root: str | Path) -> dict[str, tuple[str, str]]:
    """``{case: (split, cohort)}`` from the ``splits.tsv`` of a dataset folder (``case``-headed lines are skipped)."""
    path = Path(root) / SPLITS_FILE
    if not path.is_file():
        raise InputError(f"{root} has no {SPLITS_FILE} (lines: case<TAB>split[<TAB>cohort]); prepare without --split")
    splits: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        fields = line.rstrip("\r").split("\t")
        if not line.strip() or fields[0] == "case":
            continue
        if len(fields) < 2 or not fields[1]:
            raise InputError(f"{path.name} line {number}: expected case<TAB>split[<TAB>cohort], got {line!r}")
        splits[fields[0]] = (fields[1], fields[2] if len(fields) > 2 else "")
    return splits


def list_cases(source: str | Path, layout: str = "auto", split: str | None = None) -> list[CaseFiles]:
    """All cases of a dataset: a folder of case folders in ``layout`` (or detected) or a CSV manifest.

    With ``split`` only the folder's cases that its ``splits.tsv`` assigns to that split are listed,
    each with its split and cohort in :attr:`CaseFiles.info`.
    """
    source = Path(source)
    if layout == "csv" or source.suffix.lower() == ".csv":
        if split is not None:
            raise InputError("--split works on a dataset folder with a splits.tsv, not on a CSV manifest")
        return read_manifest(source)
    if layout == "auto":
        layout = detect_layout(source)
    cases = [read_case_folder(folder, layout) for folder in _case_folders(source)]
    if split is None:
        return cases
    splits = read_splits(source)
    known = sorted({name for name, _ in splits.values()})
    if split not in known:
        raise InputError(f"split {split!r} is not in {source / SPLITS_FILE} (splits there: {', '.join(known)})")
    missing = [case for case, (name, _) in splits.items() if name == split and not (source / case).is_dir()]
    if missing:
        raise InputError(f"{SPLITS_FILE} lists {len(missing)} {split} case(s) with no folder, e.g. {missing[0]}")
    chosen = [case for case in cases if splits.get(case.case_id, ("", ""))[0] == split]
    for case in chosen:
        case.info.update(split=split, cohort=splits[case.case_id][1])
    return chosen
