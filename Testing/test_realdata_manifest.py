"""The project's own manifest of the real BraTS 2018 cases and its extractor (``get-brats2018``).

Tested on the two val cases of ``../shared/realdata/cases``: laid out as a clone of their repository
would hold them, they are extracted, SHA-256-checked and listed with their split; a file that differs
from the published one is refused in one line. Skipped, saying why, where those cases are absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model_training.__main__ import main
from model_training.realdata import MANIFEST, REPOSITORIES, read_manifest

CASES = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "cases"
TWO = ["brats18_TCIA03_265_1", "brats18_TCIA10_628_1"]

pytestmark = pytest.mark.skipif(not CASES.is_dir(), reason="../shared/realdata/cases is absent (a plain clone)")


def test_manifest_lists_42_cases_with_the_fixed_splits() -> None:
    entries = read_manifest()
    cases = {e.case: e.split for e in entries}
    assert len(cases) == 42 and sorted(cases.values()).count("train") == 34 and sorted(cases.values()).count("val") == 8
    assert {e.repo for e in entries} == set(REPOSITORIES)
    assert all(len(e.sha256) == 64 and len(e.commit) == 40 for e in entries)
    shared = CASES.parent / "MANIFEST.tsv"
    if shared.is_file():
        assert MANIFEST.read_text(encoding="utf-8") == shared.read_text(encoding="utf-8")


def _clones(root: Path) -> dict[str, Path]:
    """Two folders laid out as clones of the repositories, holding just the two test cases' files."""
    clones = {repo: root / repo.split("/")[1] for repo in REPOSITORIES}
    for entry in read_manifest():
        if entry.case in TWO:
            target = clones[entry.repo] / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(CASES / entry.case / entry.file, target)
    for folder in clones.values():
        folder.mkdir(parents=True, exist_ok=True)
    return clones


def test_get_brats2018_extracts_checks_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clones = _clones(tmp_path / "clones")
    args = ["get-brats2018", str(tmp_path / "brats"), *(str(clones[r]) for r in REPOSITORIES), "--cases", ",".join(TWO), "--quiet"]
    assert main(args) == 0
    assert "10 file(s) written" in capsys.readouterr().out
    for case in TWO:
        for name in ("t1", "t1c", "t2", "flair", "seg"):
            assert (tmp_path / "brats" / case / f"{name}.nii.gz").read_bytes() == (CASES / case / f"{name}.nii.gz").read_bytes()
    assert (tmp_path / "brats" / "splits.tsv").read_text(encoding="utf-8").splitlines()[0].split("\t")[:2] == [TWO[0], "val"]
    assert main(args) == 0  # a rerun keeps what is in place
    assert "0 file(s) written" in capsys.readouterr().out

    entry = next(e for e in read_manifest() if e.case == TWO[0] and e.file == "t1.nii.gz")
    (clones[entry.repo] / entry.path).write_bytes(b"not the published image")
    (tmp_path / "brats" / TWO[0] / "t1.nii.gz").unlink()
    assert main(args) == 2  # a user error: one line, exit 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "t1.nii.gz" in error[0] and "not in" in error[0]
    assert not (tmp_path / "brats" / TWO[0] / "t1.nii.gz").exists()  # nothing half-written
