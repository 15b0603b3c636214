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
    synthetic, shown = synthesize_case(model, case, "cpu")
    model_scores = score(synthetic, case, predicted_map=shown)
    identity = score(case["raw_t1"], case)
    for region in ("brain", "enhancing_tumour"):
        assert model_scores[region]["psnr"] > identity[region]["psnr"], (region, model_scores[region], identity[region])
