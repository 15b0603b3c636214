"""The bundled models in ``Resources/Models``: present, untampered, safe to load, and better than the identity floor.

Every entry of ``models.json`` is checked: the file exists with the recorded size and SHA-256, it
loads with ``torch.load(weights_only=True)`` through the engine, and, for the phantom-trained models, on a
held-out 1 mm phantom case (the demo's seed, never used in training; thick-slice T2/ADC/FLAIR like the demo)
its prediction beats the identity floor (the pre-contrast T1 taken as the prediction) in brain PSNR under
VC-Eval-1; and the default's subtraction map finds that case's enhancing tumour, with an enhancing-tumour PSNR
above the identity floor (issue 13). The model trained on real scans is checked on real scans (``test_realdata.py``).
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from VirtualContrastLib import DEMO_SEED, MODALITIES
from VirtualContrastLib.checkpoints import FORMAT, sha256_file
from VirtualContrastLib.enhancement import enhancement_metrics, subtraction_map
from VirtualContrastLib.metrics import brats_regions, evaluate_case
from VirtualContrastLib.phantom import generate_case
from VirtualContrastLib.registry import default_model_for, list_models, load_model, models_dir, read_card
from VirtualContrastLib.synthesis import SynthesisOptions, synthesize

ENTRIES = list_models()
PHANTOM_ENTRIES = [e for e in ENTRIES if e.training_data == "phantom"]


@functools.lru_cache(maxsize=1)
def held_out_case():
    """The demo's phantom case: its seed lies outside every training, validation and test seed range."""
    return generate_case(DEMO_SEED, spacing=1.0, thick_slices=True)


@functools.lru_cache(maxsize=None)
def synthesized(name: str) -> np.ndarray:
    """Bundled model ``name``'s synthetic image of the held-out case (z, y, x), on the T1 grid (checked)."""
    case = held_out_case()
    model = load_model(name, device="cpu")
    images = {m: case.images[m] for m in model.config.inputs}
    result = synthesize(images, model, brain_mask=case.brain_mask, options=SynthesisOptions(device="cpu"))
    t1 = case.images["t1"]
    assert result.synthetic.GetSize() == t1.GetSize() and result.synthetic.GetDirection() == t1.GetDirection()
    return sitk.GetArrayFromImage(result.synthetic)


def test_the_registry_ships_the_promised_models() -> None:
    synthesis = {tuple(e.inputs) for e in ENTRIES if e.role == "synthesis"}
    auxiliary = {e.output for e in ENTRIES if e.role == "auxiliary"}
    assert {("t1", "t2", "adc"), ("t1", "t2", "flair")} <= synthesis
    assert auxiliary == {"t2", "adc"}
    # On phantom images (the demo) the phantom-trained ADC model; on real scans with every input, or with
    # T1+T2+FLAIR, the model trained on real scans (issue 13).
    assert default_model_for(MODALITIES, phantom_data=True).inputs == ["t1", "t2", "adc"]
    for given in (MODALITIES, ["t1", "t2", "flair"]):
        entry = default_model_for(given)
        assert entry.inputs == ["t1", "t2", "flair"] and entry.training_data == "brats2018"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_file_matches_models_json_and_loads_safely(entry) -> None:
    path = models_dir() / entry.file
    assert path.is_file()
    assert path.stat().st_size == entry.size_bytes <= 20 * 1024 * 1024
    assert sha256_file(path) == entry.sha256
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["format"] == FORMAT and payload["config"]["inputs"] == entry.inputs
    # Half-size weights (issue 25): float16 on disk, float32 once loaded.
    assert {v.dtype for v in payload["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    assert all(p.dtype == torch.float32 for p in load_model(entry.name, device="cpu").network.parameters())
    card = read_card(entry)
    assert card and "research" in card.lower() and "Known limits" in card


@pytest.mark.slow
@pytest.mark.parametrize("entry", PHANTOM_ENTRIES, ids=[e.name for e in PHANTOM_ENTRIES])
def test_beats_the_identity_floor_on_a_held_out_phantom(entry) -> None:
    case = held_out_case()
    t1 = case.images["t1"]
    target_image = case.images[entry.output]
    if target_image.GetSize() != t1.GetSize():  # thick-slice T2/ADC: score on the T1 grid the model predicts on
        target_image = sitk.Resample(target_image, t1, sitk.Transform(), sitk.sitkLinear, 0.0)
    mask = sitk.GetArrayFromImage(case.brain_mask) > 0
    scores = evaluate_case(synthesized(entry.name), sitk.GetArrayFromImage(target_image), mask,
                           t1=sitk.GetArrayFromImage(t1))["brain"]
    assert np.isfinite(scores["psnr"])
    assert scores["psnr"] > scores["identity_psnr"] + 1.0, json.dumps(scores)


@pytest.mark.slow
def test_the_default_renders_the_held_out_tumours_enhancement() -> None:
    """Issue 13: on the demo's case the demo's model's subtraction map finds the enhancing tumour, above the floor."""
    entry = default_model_for(MODALITIES, phantom_data=True)
    case = held_out_case()
    arrays = {m: sitk.GetArrayFromImage(case.images[m]) for m in ("t1", "t1c")}
    mask = sitk.GetArrayFromImage(case.brain_mask) > 0
    seg = sitk.GetArrayFromImage(case.seg)
    synthetic = synthesized(entry.name)
    spacing = case.images["t1"].GetSpacing()[::-1]
    true_map = subtraction_map(arrays["t1c"], arrays["t1"], mask)
    found = enhancement_metrics(subtraction_map(synthetic, arrays["t1"], mask), true_map, seg, mask, spacing)
    assert found["lesions"] >= 1 and found["lesions_detected"] >= 1, json.dumps(found)
    scores = evaluate_case(synthetic, arrays["t1c"], mask, t1=arrays["t1"], regions=brats_regions(seg))["enhancing_tumour"]
    assert scores["psnr"] > scores["identity_psnr"], json.dumps(scores)
