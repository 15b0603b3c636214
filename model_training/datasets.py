"""Training data sets: CSV manifests, fixed splits and the listing of a data set's cases.

Case folders, their layouts (:data:`VirtualContrastLib.cases.LAYOUTS`: phantom, BraTS 2018/2021/2023,
UCSF-PDGM) and image extensions are the engine's (:mod:`VirtualContrastLib.cases`), shared with
``virtual-contrast batch`` and the phantom writer. A generic CSV manifest
(:func:`VirtualContrastLib.cases.read_manifest`, the one ``batch`` reads) covers everything else: one
row per case, a ``case_id`` column, one column per modality (``t1``, ``t2``, ``adc``, ``flair``,
``t1c``) and optional ``mask`` and ``labels`` columns; relative paths are relative to the CSV file.
"""

from __future__ import annotations

from pathlib import Path

from VirtualContrastLib.cases import CaseFiles, case_folders, detect_layout, read_case_folder, read_manifest
from VirtualContrastLib.errors import InputError

#: Optional table of fixed splits in a dataset folder: ``case<TAB>split[<TAB>cohort]`` per line.
SPLITS_FILE = "splits.tsv"


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
        return read_manifest(source, required=("t1", "t1c"), must_exist=True)
    if layout == "auto":
        layout = detect_layout(source)
    cases = [read_case_folder(folder, layout) for folder in case_folders(source)]
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
