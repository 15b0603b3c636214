"""The bundled real-data model on real scans: two BraTS 2018 validation cases from ``shared/realdata/cases``.

The cases are never committed to the repository; where the folder is absent (a plain clone) these tests
skip, saying why. They run each case exactly as ``virtual-contrast-train evaluate`` does: prepared with the
``brats2018`` layout (labels 4 -> 3), synthesized through the engine, scored with VC-Eval-1.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from model_training.datasets import read_case_folder
from model_training.evaluate import score, synthesize_case
from model_training.prepare import PrepareOptions, prepare_case
from VirtualContrastLib.registry import default_model_for, load_model

CASES = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "cases"
GLIOBLASTOMA = "brats18_TCIA03_265_1"

pytestmark = pytest.mark.skipif(not (CASES / GLIOBLASTOMA).is_dir(),
                                reason=f"real BraTS cases not found at {CASES} (they are not part of the repository)")


@functools.lru_cache(maxsize=None)
def synthesized(model_name: str) -> tuple:
    """The engine's synthetic CE-T1 and map for the prepared glioblastoma, as ``evaluate`` makes them."""
    return synthesize_case(load_model(model_name, device="cpu"), prepared(GLIOBLASTOMA), "cpu")


@functools.lru_cache(maxsize=None)
def prepared(case_id: str) -> dict:
    """One real case prepared as for evaluation (no registration: BraTS cases are co-registered)."""
    return prepare_case(read_case_folder(CASES / case_id, "brats2018"), PrepareOptions(modalities=("t1", "t2", "flair"), register=False))


@pytest.mark.slow
def test_the_flair_default_beats_the_identity_floor_on_a_real_glioblastoma() -> None:
    entry = default_model_for(["t1", "t2", "flair"])
    assert entry.training_data == "brats2018"  # the real-data model, not the phantom-trained one
    model = load_model(entry.name, device="cpu")
    case = prepared(GLIOBLASTOMA)
    assert (case["labels"] == 3).sum() >= 1000  # a large enhancing tumour, so the ET score means something
    synthetic, shown = synthesized(entry.name)
    model_scores = score(synthetic, case, predicted_map=shown)
    identity = score(case["raw_t1"], case)
    for region in ("brain", "enhancing_tumour"):
        assert model_scores[region]["psnr"] > identity[region]["psnr"], (region, model_scores[region], identity[region])


@pytest.mark.slow
def test_evaluation_scores_the_images_the_command_line_writes(tmp_path: Path) -> None:
    """``synthesize`` on the case's original files, scored with the same brain mask, agrees with what ``evaluate``
    scores (cache preprocessing, options, synthesis) to well within 0.1 dB."""
    import numpy as np
    import SimpleITK as sitk

    from VirtualContrastLib.cli import main

    name = default_model_for(["t1", "t2", "flair"]).name
    folder = CASES / GLIOBLASTOMA
    assert main(["synthesize", "--t1", str(folder / "t1.nii.gz"), "--t2", str(folder / "t2.nii.gz"), "--flair", str(folder / "flair.nii.gz"),
                 "-o", str(tmp_path / "synthetic.nii.gz"), "--model", name, "--device", "cpu", "--quiet"]) == 0
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "synthetic.nii.gz"))).astype(np.float32)
    case = prepared(GLIOBLASTOMA)
    from_cli, from_evaluate = score(written, case), score(synthesized(name)[0], case)
    for region in ("brain", "enhancing_tumour"):
        assert abs(from_cli[region]["psnr"] - from_evaluate[region]["psnr"]) < 0.1, (region, from_cli[region], from_evaluate[region])
