"""Model registry: models.json lookup, SHA-256 checks, default model choice, devices, folder layouts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import VirtualContrastLib
from conftest import make_models_dir, tiny_checkpoint
from VirtualContrastLib.checkpoints import save_checkpoint
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.errors import CheckpointError, DeviceError, MissingModalityError
from VirtualContrastLib.networks import build_network
from VirtualContrastLib.registry import (
    auxiliary_model_for,
    default_model_for,
    find_model,
    ignored_inputs_note,
    training_warning,
    list_models,
    load_model,
    models_dir,
    resolve_device,
)


@pytest.fixture
def models(bundled_models) -> Path:
    return bundled_models([
        {"name": "t1-only", "inputs": ["t1"]},
        {"name": "t1-t2", "inputs": ["t1", "t2"]},
        {"name": "t1-t2-adc", "inputs": ["t1", "t2", "adc"]},
        {"name": "t1-t2-adc-b", "inputs": ["t1", "t2", "adc"]},
        {"name": "t2-from-t1", "inputs": ["t1"], "output": "t2", "role": "auxiliary"},
    ])


def test_list_and_load_bundled_model(models):
    assert [e.name for e in list_models()] == ["t1-only", "t1-t2", "t1-t2-adc", "t1-t2-adc-b", "t2-from-t1"]
    loaded = load_model("t1-t2", device="cpu")
    assert loaded.config.inputs == ["t1", "t2"] and loaded.name == "t1-t2"
    assert loaded.sha256 == loaded.entry.sha256
    assert loaded.card.startswith("# t1-t2")
    assert not loaded.network.training
    with torch.no_grad():
        out = loaded.network(torch.rand(1, 2, 3, 16, 16))
    assert out.shape == (1, 1, 3, 16, 16)


def test_tampered_bundled_checkpoint_fails_sha_check(models):
    path = models / "t1-t2.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="failed its SHA-256 check"):
        load_model("t1-t2", device="cpu")


def test_missing_bundled_file_and_unknown_name(models):
    (models / "t1-only.pt").unlink()
    with pytest.raises(CheckpointError, match="t1-only.pt is missing"):
        load_model("t1-only", device="cpu")
    with pytest.raises(CheckpointError, match="neither a bundled model .*t1-t2.* nor a checkpoint file"):
        load_model("no-such-model", device="cpu")


def test_user_checkpoint_path_format_checks(tmp_path, models):
    good = tmp_path / "mine.pt"
    tiny_checkpoint(good, ["t1", "adc"])
    assert load_model(good, device="cpu").config.inputs == ["t1", "adc"]
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(CheckpointError, match="cannot read checkpoint corrupt.pt"):
        load_model(corrupt, device="cpu")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a VirtualContrast checkpoint"):
        load_model(foreign, device="cpu")
    mismatched = tmp_path / "mismatched.pt"
    config = ModelConfig(architecture="hrfcn", arch_kwargs={"width": 8}, inputs=["t1"])
    wrong = ModelConfig(architecture="hrfcn", arch_kwargs={"width": 4}, inputs=["t1"])
    save_checkpoint(mismatched, config, build_network(wrong).state_dict())
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_model(mismatched, device="cpu")


@pytest.mark.parametrize("available, expected", [
    (["t1"], "t1-only"),
    (["t1", "flair"], "t1-only"),
    (["t1", "t2"], "t1-t2"),
    (["t1", "t2", "adc"], "t1-t2-adc"),
    (["t1", "t2", "adc", "flair"], "t1-t2-adc"),
    (["t1", "adc"], "t1-only"),
])
def test_default_model_uses_the_most_available_inputs(models, available, expected):
    assert default_model_for(available, phantom_data=True).name == expected


def test_default_model_errors(models, tmp_path, monkeypatch):
    with pytest.raises(MissingModalityError, match="no bundled model works with t2"):
        default_model_for(["t2"], phantom_data=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "models.json").write_text('{"models": []}', encoding="utf-8")
    monkeypatch.setenv("VIRTUALCONTRAST_MODELS_DIR", str(empty))
    with pytest.raises(CheckpointError, match="no bundled synthesis model"):
        default_model_for(["t1"])
    (empty / "models.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="not a valid model list"):
        list_models()
    monkeypatch.setenv("VIRTUALCONTRAST_MODELS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match="is not a folder"):
        list_models()


def test_auxiliary_model_lookup(models):
    assert auxiliary_model_for("t2", ["t1"]).name == "t2-from-t1"
    assert auxiliary_model_for("adc", ["t1"]) is None
    assert auxiliary_model_for("t2", ["adc"]) is None


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda")
    else:
        with pytest.raises(DeviceError, match="does not exist"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_source_tree_models_folder_is_found(monkeypatch):
    monkeypatch.delenv("VIRTUALCONTRAST_MODELS_DIR", raising=False)
    repo = Path(VirtualContrastLib.__file__).resolve().parents[2]
    assert models_dir() == repo / "Resources" / "Models"


def test_slicer_installed_layout_models_folder_is_found(tmp_path):
    # Slicer installs the module as <dir>/VirtualContrast.py, <dir>/VirtualContrastLib/, <dir>/Resources/.
    package = Path(VirtualContrastLib.__file__).resolve().parent
    installed = tmp_path / "qt-scripted-modules"
    shutil.copytree(package, installed / "VirtualContrastLib", ignore=shutil.ignore_patterns("__pycache__"))
    make_models_dir(installed / "Resources" / "Models", [{"name": "installed", "inputs": ["t1"]}])
    env = {k: v for k, v in os.environ.items() if k != "VIRTUALCONTRAST_MODELS_DIR"}
    env["PYTHONPATH"] = str(installed)
    code = "import VirtualContrastLib.registry as r; print(r.models_dir()); print([e.name for e in r.list_models()])"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [str(installed / "Resources" / "Models"), "['installed']"]


def test_a_model_trained_on_real_scans_wins_a_tie_with_a_phantom_one(bundled_models) -> None:
    bundled_models([{"name": "phantom-flair", "inputs": ["t1", "t2", "flair"]},
                    {"name": "real-flair", "inputs": ["t1", "t2", "flair"], "training_data": "brats2018"}])
    assert default_model_for(["t1", "t2", "flair"]).name == "real-flair"
    # Phantom images (the demo) go to the phantom-trained one.
    assert default_model_for(["t1", "t2", "flair"], phantom_data=True).name == "phantom-flair"


def test_on_real_scans_the_automatic_choice_is_only_a_model_trained_on_real_scans(bundled_models) -> None:
    folder = bundled_models([{"name": "phantom-adc", "inputs": ["t1", "t2", "adc"]},
                             {"name": "real-flair", "inputs": ["t1", "t2", "flair"], "training_data": "brats2018"}])
    # a subset of the inputs: the ADC is ignored, and the note says so
    entry = default_model_for(["t1", "t2", "adc", "flair"])
    assert entry.name == "real-flair"
    assert ignored_inputs_note(entry, ["t1", "t2", "adc", "flair"]) == "model real-flair uses T1+T2+FLAIR; ignored: ADC"
    assert ignored_inputs_note(entry, ["t1", "t2", "flair"]) is None
    # no real-data model fits: one line naming what to load and the phantom model to name instead
    with pytest.raises(MissingModalityError) as refused:
        default_model_for(["t1", "t2", "adc"])
    assert str(refused.value) == ("no bundled model trained on real scans works with T1+T2+ADC: load FLAIR (real-flair needs "
                                  "T1+T2+FLAIR), or name a model to run it anyway (trained on phantoms only: phantom-adc)")
    # phantom images keep the phantom-trained model, without warning; on real scans it warns
    assert default_model_for(["t1", "t2", "adc"], phantom_data=True).name == "phantom-adc"
    assert "trained on phantoms only" in training_warning(find_model("phantom-adc"))
    assert training_warning(find_model("phantom-adc"), phantom_data=True) is None
    assert training_warning(find_model("real-flair")) is None
    # a real-data T1+T2 model listed later is picked up as soon as models.json lists it
    import json

    listing = json.loads((folder / "models.json").read_text(encoding="utf-8"))
    listing["models"].append({**listing["models"][1], "name": "real-t1-t2", "inputs": ["t1", "t2"]})
    (folder / "models.json").write_text(json.dumps(listing), encoding="utf-8")
    assert default_model_for(["t1", "t2", "adc"]).name == "real-t1-t2"
    assert default_model_for(["t1", "t2", "adc", "flair"]).name == "real-flair"


def test_with_no_model_trained_on_real_scans_the_refusal_names_the_phantom_models(models) -> None:
    with pytest.raises(MissingModalityError, match=r"^no bundled model is trained on real scans: name a model to run it anyway "
                                                   r"\(trained on phantoms only: t1-only, t1-t2\)$"):
        default_model_for(["t1", "t2"])
