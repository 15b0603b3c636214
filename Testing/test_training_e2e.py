"""End to end on coarse phantoms: make-phantoms → prepare → train → resume → evaluate → export → bundle → engine.

Three 4 mm phantom cases (train / val / test), the ``tiny`` config (width 4, 2 slabs per step),
everything through the ``virtual-contrast-train`` command line except the resume comparison and
the overfitting check, which drive :class:`model_training.train.Trainer` directly.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import spread_outputs
from model_training.__main__ import main
from model_training.bundle import model_card
from model_training.calibrate import fit_detection_threshold
from model_training.evaluate import evaluate_checkpoints, true_subtraction
from model_training.prepare import image_from_array, load_case
from model_training.settings import load_config
from model_training.train import Trainer, train
from VirtualContrastLib.checkpoints import load_checkpoint, save_checkpoint, sha256_file
from VirtualContrastLib.enhancement import ENHANCEMENT_THRESHOLD
from VirtualContrastLib.errors import InputError
from VirtualContrastLib.networks import build_network
from VirtualContrastLib.networks.detector import build_detector
from VirtualContrastLib.registry import load_model
from VirtualContrastLib.synthesis import SynthesisOptions, synthesize

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("training_e2e")
    assert main(["make-phantoms", "--out", str(root / "phantoms"), "--train", "1", "--val", "1", "--test", "1",
                 "--seed", "40", "--spacing", "4"]) == 0
    record = json.loads((root / "phantoms" / "phantoms.json").read_text(encoding="utf-8"))
    assert record["splits"]["val"]["seeds"] == [41, 41]
    out = {}
    for split in ("train", "val", "test"):
        out[split] = root / "cache" / split
        assert main(["prepare", str(root / "phantoms" / split), "--out", str(out[split]), "--no-register", "--quiet"]) == 0
    out["root"] = root
    return out


def _overrides(caches: dict[str, Path]) -> list[str]:
    return ["--set", f"data.train={caches['train']}", "--set", f"data.val={caches['val']}"]


def test_prepared_cache_is_on_the_working_grid(caches: dict[str, Path]) -> None:
    case = load_case(caches["train"], json.loads((caches["train"] / "index.json").read_text(encoding="utf-8"))["prepared"][0]["case"])
    assert {"norm_t1", "norm_t2", "norm_adc", "norm_flair", "norm_t1c", "raw_t1c", "labels", "mask"} <= set(case)
    image = image_from_array(case["mask"], case)
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection()) == "LPS"
    assert (case["labels"] == 3).any()


def test_fit_threshold_uses_only_training_cases(caches: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "threshold.json"
    assert main(["fit-threshold", str(caches["train"]), "--out", str(out)]) == 0
    record = json.loads(out.read_text(encoding="utf-8"))
    case = load_case(caches["train"], record["cases"][0])
    true_map = true_subtraction(case)
    brain = case["mask"] > 0
    assert np.median(true_map[brain & (case["labels"] == 0)]) < record["threshold"] < np.median(true_map[case["labels"] == 3])
    # A cache whose index marks its cases as validation gives no threshold.
    index = json.loads((caches["val"] / "index.json").read_text(encoding="utf-8"))
    marked = tmp_path / "val"
    marked.mkdir()
    for entry in index["prepared"]:
        entry["split"] = "val"
        (marked / entry["file"]).symlink_to(caches["val"] / entry["file"])
    (marked / "index.json").write_text(json.dumps(index), encoding="utf-8")
    assert main(["fit-threshold", str(marked), "--out", str(tmp_path / "val.json")]) == 2
    assert not (tmp_path / "val.json").exists()


def test_train_resume_evaluate_export_synthesize(caches: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    # One epoch, then resume for the second (stage-2) epoch, through the command line.
    assert main(["train", "tiny", "--out", str(run), "--stop-after-epoch", "1", "--quiet", *_overrides(caches)]) == 0
    assert load_checkpoint(run / "state.pt").training["epoch"] == 1
    assert main(["train", "tiny", "--out", str(run), "--resume", "--quiet", *_overrides(caches)]) == 0
    log = list(csv.DictReader(open(run / "log.csv", encoding="utf-8")))
    assert [row["epoch"] for row in log] == ["1", "2"]
    assert float(log[0]["lr"]) == pytest.approx(1e-3) and float(log[1]["lr"]) == pytest.approx(1e-4)
    assert all(np.isfinite(float(row["val_brain_psnr"])) for row in log)
    assert (run / "tb").is_dir() and any((run / "tb").iterdir())

    # The resumed run equals an uninterrupted one (deterministic CPU training).
    quick = {"data": {"train": str(caches["train"]), "val": None}, "sampling": {"slabs_per_epoch": 2}}
    config = load_config("tiny", quick)
    straight = Trainer(config, tmp_path / "straight", device="cpu", progress=False)
    straight.fit()
    resumed_config = load_config("tiny", quick)
    resumed = Trainer(resumed_config, tmp_path / "resumed", device="cpu", progress=False)
    resumed.fit(stop_after_epoch=1)
    resumed = Trainer(resumed_config, tmp_path / "resumed", device="cpu", progress=False)
    resumed.load_state(tmp_path / "resumed" / "state.pt")
    resumed.fit()
    for (name, a), b in zip(straight.network.state_dict().items(), resumed.network.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name

    model_path = tmp_path / "model.pt"
    assert main(["export", str(run), "--out", str(model_path)]) == 0
    exported = load_checkpoint(model_path)
    assert exported.training["data"]["train_cases"] and exported.training["hardware"]["torch"] == torch.__version__
    assert exported.training["schedule"][1]["weights"] == [0.1, 0.1, 10.0]
    assert "checkpointing" not in exported.config.arch_kwargs

    results = tmp_path / "results"
    assert main(["evaluate", str(model_path), str(run / "best.pt"), "--labels", "exported,best", "--data", str(caches["test"]),
                 "--out", str(results), "--table", "II", "--device", "cpu", "--overlap", "0.5"]) == 0
    table = (results / "table_II.md").read_text(encoding="utf-8")
    assert "identity (T1)" in table and "exported" in table and "slab overlap 0.50" in table
    rows = list(csv.DictReader(open(results / "table_II.csv", encoding="utf-8")))
    assert [r["model"] for r in rows] == ["identity (T1)", "linear (T1+T2+ADC)", "exported", "best"]
    # The same weights, exported in float16 (issue 25): within a hundredth of a dB.
    assert float(rows[2]["brain_psnr_mean"]) == pytest.approx(float(rows[3]["brain_psnr_mean"]), abs=0.01)
    per_case = list(csv.DictReader(open(results / "per_case_II.csv", encoding="utf-8")))
    assert {"enhancement_lesion_sensitivity", "enhancement_false_blobs", "linear (T1+T2+ADC)"} <= {*per_case[0], *(r["model"] for r in per_case)}
    assert (results / "montage.png").stat().st_size > 1000
    with pytest.raises(InputError, match="cannot contain a comma"):
        evaluate_checkpoints([model_path], caches["test"], tmp_path / "unused", labels=["HR-FCN (3D)", " overlap 2/3"])

    # Bundling ships the run as a named model that the registry verifies, loads and describes.
    models_dir = tmp_path / "models"
    assert main(["bundle", str(run), "--name", "tiny-test", "--models-dir", str(models_dir), "--description", "tiny",
                 "--evaluation", str(results / "table_II.md"), "--no-bench"]) == 0
    entry = json.loads((models_dir / "models.json").read_text(encoding="utf-8"))["models"][0]
    assert entry["name"] == "tiny-test" and entry["inputs"] == ["t1", "t2", "adc"] and entry["output"] == "t1c"
    assert entry["sha256"] == sha256_file(models_dir / "tiny-test.pt")
    card = (models_dir / "tiny-test.md").read_text(encoding="utf-8")
    assert "research" in card and "identity (T1)" in card and exported.training["data"]["train_cases"][0] in card
    monkeypatch.setenv("VIRTUALCONTRAST_MODELS_DIR", str(models_dir))
    bundled = load_model("tiny-test", device="cpu")
    assert bundled.sha256 == entry["sha256"] and "Known limits" in bundled.card
    # Re-bundling a name (--replace) replaces its entry in place: models.json order breaks ties between default models.
    for name, replace in (("tiny-second", []), ("tiny-test", ["--replace"])):
        assert main(["bundle", str(run), "--name", name, "--models-dir", str(models_dir), "--description", "tiny", "--no-bench", *replace]) == 0
    names = [e["name"] for e in json.loads((models_dir / "models.json").read_text(encoding="utf-8"))["models"]]
    assert names == ["tiny-test", "tiny-second"]

    # The exported checkpoint runs through the engine exactly as a user would run it.
    model = load_model(str(model_path), device="cpu")
    case = load_case(caches["test"], json.loads((caches["test"] / "index.json").read_text(encoding="utf-8"))["prepared"][0]["case"])
    images = {m: image_from_array(case[f"raw_{m}"], case) for m in model.config.inputs}
    result = synthesize(images, model, brain_mask=image_from_array(case["mask"], case), options=SynthesisOptions(device="cpu"))
    assert result.synthetic.GetSize() == images["t1"].GetSize()
    assert np.isfinite(sitk.GetArrayViewFromImage(result.synthetic)).all()


def test_loss_decreases_when_overfitting_one_batch(caches: dict[str, Path], tmp_path: Path) -> None:
    config = load_config("tiny", {"data": {"train": str(caches["train"]), "val": None}, "sampling": {"enhancement_fraction": 1.0}})
    trainer = Trainer(config, tmp_path, device="cpu", progress=False)
    dataset, _, _ = trainer._loader()
    batch = {key: torch.stack([dataset[i][key] for i in range(2)]) for key in ("inputs", "target", "t1")}
    losses = [trainer.train_step(batch)["loss"] for _ in range(10)]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_cli_reports_user_errors_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "no_such_config", "--out", str(tmp_path)]) == 2
    assert main(["prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "cache")]) == 2
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "m.pt")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("virtual-contrast-train ") for line in errors)
    assert "training config not found" in errors[0] and "not found" in errors[1] and "best.pt" in errors[2]


def test_fine_tuning_starts_from_the_given_weights(caches: dict[str, Path], tmp_path: Path) -> None:
    quick = {"data": {"train": str(caches["train"]), "val": None}, "sampling": {"slabs_per_epoch": 2}}
    source = Trainer(load_config("tiny", quick), tmp_path / "source", device="cpu", progress=False)
    save_checkpoint(tmp_path / "adc.pt", source.config.model, source.network.state_dict())

    # Another modality in the third channel (FLAIR for ADC) is allowed: the weights are copied as they are.
    flair = load_config("tiny", {**quick, "seed": 7, "init": str(tmp_path / "adc.pt"), "model": {"inputs": ["t1", "t2", "flair"]}})
    tuned = Trainer(flair, tmp_path / "tuned", device="cpu", progress=False)
    for (name, a), b in zip(source.network.state_dict().items(), tuned.network.state_dict().values()):
        assert torch.equal(a, b), name
    fresh = Trainer(load_config("tiny", {**quick, "seed": 7}), tmp_path / "fresh", device="cpu", progress=False)
    assert not all(torch.equal(a, b) for a, b in zip(source.network.state_dict().values(), fresh.network.state_dict().values()))

    # The bundled default model (width 16) cannot seed the width-4 network: a clear error, not a shape traceback.
    with pytest.raises(InputError, match="cannot initialize from vc-hrfcn16-t1-t2-adc"):
        Trainer(load_config("tiny", {**quick, "init": "vc-hrfcn16-t1-t2-adc"}), tmp_path / "bad", device="cpu", progress=False)


def test_model_card_names_the_initial_weights_without_local_folders() -> None:
    model = load_config("tiny").model.to_dict()
    for init, shown in (("/home/someone/runs/phantom_enh_round5/state.pt", "phantom_enh_round5/state.pt"),
                        ("vc-hrfcn16-t1-t2-adc", "vc-hrfcn16-t1-t2-adc")):
        card = model_card("m", "d", {"config": {"init": init}}, model, None, None)
        assert f"- initialized from `{shown}`" in card and "/home/someone" not in card


def test_training_loads_only_the_arrays_it_uses(caches: dict[str, Path]) -> None:
    case_id = json.loads((caches["train"] / "index.json").read_text(encoding="utf-8"))["prepared"][0]["case"]
    case = load_case(caches["train"], case_id, ["mask", "norm_t1", "no_such_array"])
    assert set(case) == {"mask", "norm_t1"}
    assert np.array_equal(case["norm_t1"], load_case(caches["train"], case_id)["norm_t1"])


def test_calibrate_fits_on_training_cases_and_export_ships_the_map(caches: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "tiny", "--out", str(run), "--stop-after-epoch", "1", "--quiet", *_overrides(caches)]) == 0
    # One tiny epoch leaves the output clamped at 0 (nothing to calibrate, refused); spread it as a trained network's.
    assert main(["calibrate", str(run), "--data", str(caches["train"]), "--device", "cpu", "--quiet"]) == 2
    best = load_checkpoint(run / "best.pt")
    network = build_network(best.config)
    network.load_state_dict(best.state_dict)
    save_checkpoint(run / "best.pt", best.config, spread_outputs(network.eval(), len(best.config.inputs)).state_dict(), best.training)
    assert main(["calibrate", str(run), "--data", str(caches["train"]), "--device", "cpu", "--quiet"]) == 0
    record = json.loads((run / "output_map.json").read_text(encoding="utf-8"))
    train_ids = [e["case"] for e in json.loads((caches["train"] / "index.json").read_text(encoding="utf-8"))["prepared"]]
    assert record["cases"] == train_ids and record["checkpoint_sha256"] == sha256_file(run / "best.pt")
    assert record["target"][0] == 0.0 and record["target"][-1] == 1.0  # the normalized target's own window

    assert main(["export", str(run), "--out", str(tmp_path / "model.pt")]) == 0
    exported = load_checkpoint(tmp_path / "model.pt")
    assert exported.config.output_map == {k: record[k] for k in ("source", "target")}
    assert exported.training["calibration"]["cases"] == train_ids
    models_dir = tmp_path / "models"
    assert main(["bundle", str(run), "--name", "calibrated", "--models-dir", str(models_dir), "--description", "tiny", "--no-bench"]) == 0
    assert f"fitted on the {len(train_ids)} training cases" in (models_dir / "calibrated.md").read_text(encoding="utf-8")
    # A selection rule may prefer the network's own output: --no-output-map leaves the fitted map out.
    assert main(["export", str(run), "--out", str(tmp_path / "plain.pt"), "--no-output-map"]) == 0
    assert load_checkpoint(tmp_path / "plain.pt").config.output_map is None
    assert "calibration" not in load_checkpoint(tmp_path / "plain.pt").training
    assert main(["bundle", str(run), "--name", "plain", "--models-dir", str(models_dir), "--description", "tiny", "--no-bench",
                 "--no-output-map"]) == 0
    assert "- output calibration: none" in (models_dir / "plain.md").read_text(encoding="utf-8")
    # Through the engine, the calibrated model's brain spans the target's whole window as the map says.
    model = load_model(str(tmp_path / "model.pt"), device="cpu")
    case = load_case(caches["train"], train_ids[0])
    images = {m: image_from_array(case[f"raw_{m}"], case) for m in model.config.inputs}
    mask = image_from_array(case["mask"], case)
    plain = load_model(str(run / "best.pt"), device="cpu")
    synthetic = {name: sitk.GetArrayFromImage(synthesize(images, m, brain_mask=mask, options=SynthesisOptions(device="cpu")).synthetic)
                 for name, m in (("calibrated", model), ("plain", plain))}
    assert not np.allclose(synthetic["calibrated"], synthetic["plain"])

    # New weights in best.pt (training went on): the old map is refused instead of shipped with them.
    best = load_checkpoint(run / "best.pt")
    save_checkpoint(run / "best.pt", best.config, {k: v + 0.01 if v.is_floating_point() else v for k, v in best.state_dict.items()},
                    best.training)
    assert main(["export", str(run), "--out", str(tmp_path / "stale.pt")]) == 2
    assert not (tmp_path / "stale.pt").exists()


# --- runs, caches and shipped models are not damaged silently (issue 26) -------------------------


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("virtual-contrast-train "), err
    return err


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_finished_run_folder_is_neither_overwritten_nor_resumed_with_another_config(
        caches: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    train = ["train", "tiny", "--out", str(run), "--stop-after-epoch", "1", "--quiet", *_overrides(caches)]
    assert main(train) == 0
    capsys.readouterr()
    finished = _contents(run)
    # Without --resume: refused (it overwrote best.pt and state.pt and appended a second run to steps.csv).
    assert main(train) == 2
    assert f"run folder {run} is not empty" in _one_line_error(capsys)
    assert main([*train, "--resume", "--overwrite"]) == 2
    assert "give one of them" in _one_line_error(capsys)
    # --resume with another schedule or other training data: refused, train_config.json still the run's own.
    assert main([*train, "--resume", "--set", "schedule=[{\"epochs\": 3, \"weights\": [1, 1, 1], \"lr\": 0.01}]"]) == 2
    assert "was trained with another config (schedule differ from train_config.json)" in _one_line_error(capsys)
    assert main([*train, "--resume", "--set", f"data.train={caches['test']}"]) == 2
    assert "(data.train differ" in _one_line_error(capsys)
    assert _contents(run) == finished
    # --overwrite starts afresh: one run's steps, not two runs mixed.
    (run / "notes.txt").write_text("mine", encoding="utf-8")
    assert main([*train, "--overwrite"]) == 0
    steps = list(csv.DictReader(open(run / "steps.csv", encoding="utf-8")))
    assert len(steps) == 2 and [row["epoch"] for row in csv.DictReader(open(run / "log.csv", encoding="utf-8"))] == ["1"]
    assert (run / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_resume_on_a_cache_whose_cases_changed_is_refused(caches: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    index = json.loads((caches["train"] / "index.json").read_text(encoding="utf-8"))
    for entry in index["prepared"]:
        (cache / entry["file"]).symlink_to(caches["train"] / entry["file"])
    (cache / "index.json").write_text(json.dumps(index), encoding="utf-8")
    config = load_config("tiny", {"data": {"train": str(cache), "val": None}, "sampling": {"slabs_per_epoch": 2}})
    train(config, tmp_path / "run", device="cpu", stop_after_epoch=1, progress=False)
    val = json.loads((caches["val"] / "index.json").read_text(encoding="utf-8"))["prepared"][0]
    (cache / val["file"]).symlink_to(caches["val"] / val["file"])
    index["prepared"].append(val)
    (cache / "index.json").write_text(json.dumps(index), encoding="utf-8")
    with pytest.raises(InputError, match=r"state.pt was trained on other cases than the config's caches now hold \(1 training cases then, 2 now\)"):
        train(config, tmp_path / "run", resume=True, device="cpu", progress=False)


def test_train_device_errors_are_one_line(caches: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for device, message in (("foo", "unknown device 'foo'"), ("cuda:7", "cuda:7")):
        assert main(["train", "tiny", "--out", str(tmp_path / "run"), "--device", device, "--quiet", *_overrides(caches)]) == 2
        assert message in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_checkpoint_save_on_a_full_disk_is_one_line(caches: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_bad_inputs import file_size_limit

    run = tmp_path / "run"
    with file_size_limit(8 * 1024):
        assert main(["train", "tiny", "--out", str(run), "--stop-after-epoch", "1", "--quiet", *_overrides(caches)]) == 2
    assert f"cannot write checkpoint {run / 'best.pt'}: disk full" in _one_line_error(capsys)
    assert not (run / "best.pt").exists() and not list(run.glob(".best.pt*"))


@pytest.fixture(scope="module")
def trained_run(caches: dict[str, Path]) -> Path:
    """A one-epoch run folder that tests export and bundle from (and leave as it is)."""
    run = caches["root"] / "trained"
    assert main(["train", "tiny", "--out", str(run), "--stop-after-epoch", "1", "--quiet", *_overrides(caches)]) == 0
    return run


def test_export_refuses_existing_files_folders_and_shipped_models(trained_run: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = trained_run
    target = tmp_path / "model.pt"
    target.write_bytes(b"someone's checkpoint")
    assert main(["export", str(run), "--out", str(target)]) == 2
    assert f"{target} exists; pass --overwrite" in _one_line_error(capsys)
    assert target.read_bytes() == b"someone's checkpoint"
    assert main(["export", str(run), "--out", str(target), "--overwrite"]) == 0
    assert load_checkpoint(target).config.inputs == ["t1", "t2", "adc"]
    assert main(["export", str(run), "--out", str(tmp_path)]) == 2
    assert "is a folder" in _one_line_error(capsys)
    # A shipped checkpoint is never exported over, --overwrite or not: its SHA-256 in models.json would no longer match.
    models = tmp_path / "models"
    assert main(["bundle", str(run), "--name", "shipped", "--models-dir", str(models), "--description", "tiny", "--no-bench"]) == 0
    capsys.readouterr()
    shipped = _contents(models)
    assert main(["export", str(run), "--out", str(models / "shipped.pt"), "--overwrite"]) == 2
    assert "is the bundled model 'shipped'" in _one_line_error(capsys)
    assert _contents(models) == shipped


@pytest.mark.parametrize("name", ["../../escaped", "sub/name", "..", ".hidden", ""])
def test_bundle_refuses_names_that_are_not_file_names(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      name: str) -> None:
    models = tmp_path / "deep" / "er" / "models"
    assert main(["bundle", str(trained_run), "--name", name, "--models-dir", str(models), "--description", "x", "--no-bench"]) == 2
    assert f"model name {name!r} cannot be a file name" in _one_line_error(capsys)
    assert not (tmp_path / "deep").exists()


def test_bundle_refuses_a_name_already_bundled_unless_replace(trained_run: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    run = trained_run
    models = tmp_path / "models"
    bundle = ["bundle", str(run), "--name", "shipped", "--models-dir", str(models), "--description", "tiny", "--no-bench"]
    assert main(bundle) == 0
    capsys.readouterr()
    shipped = _contents(models)
    # Refused before the CPU timing (no --no-bench needed to find out) and before anything is written.
    assert main([*bundle[:-1], "--description", "new"]) == 2
    assert "a model named 'shipped' is already bundled" in _one_line_error(capsys)
    assert _contents(models) == shipped
    (models / "models.json").write_text('{"models": [', encoding="utf-8")
    assert main([*bundle, "--replace"]) == 2
    assert "models.json is not valid JSON" in _one_line_error(capsys)
    (models / "models.json").write_bytes(shipped["models.json"])
    assert main([*bundle, "--replace", "--description", "replaced"]) == 0
    entries = json.loads((models / "models.json").read_text(encoding="utf-8"))["models"]
    assert [(e["name"], e["description"]) for e in entries] == [("shipped", "replaced")]


def test_a_residual_detection_model_trains_validates_and_is_evaluated_with_the_detection_floor(caches: dict[str, Path], tmp_path: Path) -> None:
    """The new design end to end: detection targets in the slabs, the gated map in validation, the clinical rule,
    the Table E columns that judge it and the detection floor beside it."""
    run = tmp_path / "resdet"
    assert main(["train", "tiny", "--out", str(run), "--quiet", *_overrides(caches),
                 "--set", 'model.arch_kwargs={"width": 4, "residual": true, "detection": true}',
                 "--set", "sampling.robust_augment=true", "--set", "sampling.enhancement_fraction=1.0",
                 "--set", "validation.select=clinical"]) == 0
    log = list(csv.DictReader(open(run / "log.csv", encoding="utf-8")))
    assert all(float(row["train_detection"]) > 0 for row in log)
    assert {"val_enhancement_lesion_f1", "val_enhancement_auc_brain", "val_brain_identity_psnr", "val_brain_sharpness"} <= set(log[-1])
    best = load_checkpoint(run / "best.pt")
    assert best.config.arch_kwargs["detection"] and best.training["best"]["metric"] == "clinical"

    # The detection threshold is fitted on training cases only and travels in the exported checkpoint.
    assert main(["fit-detection", str(run), "--data", str(caches["train"]), "--quiet"]) == 0
    record = json.loads((run / "detection_threshold.json").read_text(encoding="utf-8"))
    assert record["cases"] == [json.loads((caches["train"] / "index.json").read_text(encoding="utf-8"))["prepared"][0]["case"]]
    assert main(["export", str(run), "--out", str(tmp_path / "resdet.pt")]) == 0
    assert load_checkpoint(tmp_path / "resdet.pt").config.detection_threshold == record["threshold"]
    plain = tmp_path / "plain"
    assert main(["train", "tiny", "--out", str(plain), "--quiet", "--stop-after-epoch", "1", *_overrides(caches)]) == 0
    with pytest.raises(InputError, match="no detection head"):
        fit_detection_threshold(plain, caches["train"])

    results = tmp_path / "results"
    assert main(["evaluate", str(run / "best.pt"), "--labels", "resdet", "--data", str(caches["test"]), "--out", str(results),
                 "--table", "E", "--device", "cpu", "--no-montage", "--detection-floor", str(caches["train"])]) == 0
    rows = {r["model"]: r for r in csv.DictReader(open(results / "table_E.csv", encoding="utf-8"))}
    assert list(rows) == ["identity (T1)", "linear (T1+T2+ADC)", "detection floor (voxel classifier)", "resdet"]
    for column in ("brain_sharpness_mean", "enhancement_lesion_f1_mean", "enhancement_auc_brain_mean", "enhancement_auc_tumour_mean"):
        assert column in rows["resdet"]
    # (The 4 mm test phantom's enhancing tumour is below the lesion size, so its AUCs are n/a: test_residual_detection checks them.)
    assert float(rows["resdet"]["brain_sharpness_mean"]) > 0
    assert main(["evaluate", str(run / "best.pt"), "--labels", "resdet", "--data", str(caches["test"]), "--out", str(tmp_path / "bias"),
                 "--table", "E", "--device", "cpu", "--no-montage", "--perturb", "bias"]) == 0
    assert "inputs perturbed: bias" in (tmp_path / "bias" / "table_E.md").read_text(encoding="utf-8")


def test_detector_trains_resumes_and_ships_inside_a_synthesis_model(caches: dict[str, Path], tmp_path: Path) -> None:
    from conftest import tiny_checkpoint

    run = tmp_path / "detector"
    args = ["train-detector", "--data", str(caches["train"]), "--val", str(caches["val"]), "--out", str(run), "--inputs", "t1,t2,adc",
            "--quiet", "--every", "2"]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "2"]) == 2  # an existing run is not overwritten without --resume
    assert main([*args, "--steps", "4", "--resume"]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    assert torch.load(run / "state.pt", weights_only=True)["step"] == 4
    # The rule: a checkpoint that finds no lesion is never selected.
    assert (run / "best.pt").exists() == any(r["lesions_detected"] > 0 for r in log)
    if not (run / "best.pt").exists():  # select the last state by hand, to carry the pipeline on
        state = torch.load(run / "state.pt", weights_only=True)
        torch.save({"arch": state["arch"], "inputs": state["inputs"], "record": log[-1], "state_dict": state["network"]}, run / "best.pt")

    # Fine-tuning from it, necrosis and oedema weighted: it starts from its weights (one step stays near them); other inputs are refused.
    tuned = tmp_path / "tuned"
    tune = ["train-detector", "--data", str(caches["train"]), "--val", str(caches["val"]), "--out", str(tuned), "--quiet",
            "--every", "1", "--steps", "1", "--init", str(run), "--tumour-weight", "3"]
    assert main([*tune, "--inputs", "t1,t2"]) == 2
    assert main([*tune, "--inputs", "t1,t2,adc"]) == 0
    initial = torch.load(run / "best.pt", weights_only=True)
    start, after = initial["state_dict"], torch.load(tuned / "state.pt", weights_only=True)["network"]
    fresh = build_detector(3, initial["arch"]).state_dict()
    moved = sum(float((after[k].float() - start[k].float()).norm()) for k in start if start[k].is_floating_point())
    away = sum(float((fresh[k].float() - start[k].float()).norm()) for k in start if start[k].is_floating_point())
    assert moved < 0.2 * away
    assert main([*tune, "--inputs", "t1,t2,adc", "--steps", "2", "--resume", "--tumour-weight", "1"]) == 2  # not another weight

    synthesis = tmp_path / "synthesis.pt"
    tiny_checkpoint(synthesis, ["t1", "t2", "adc"])
    combined = tmp_path / "combined"
    assert main(["attach-detector", str(synthesis), str(run), "--out", str(combined)]) == 0
    assert main(["attach-detector", str(synthesis), str(run), "--out", str(combined)]) == 2  # no silent overwrite
    with pytest.raises(InputError, match="curve kind 'median'"):
        fit_detection_threshold(combined, caches["train"], "cpu", curve_kind="median")
    # The ablation's curve averages the truly enhancing voxels only: every voxel the gate confirms is drawn above T.
    enhancing = fit_detection_threshold(combined, caches["train"], "cpu", curve_kind="enhancing")
    assert enhancing["curve_kind"] == "enhancing" and min(enhancing["curve"]["enhancement"]) > ENHANCEMENT_THRESHOLD
    assert main(["fit-detection", str(combined), "--data", str(caches["train"]), "--quiet"]) == 0
    record = json.loads((combined / "detection_threshold.json").read_text(encoding="utf-8"))
    curve = record["curve"]
    assert record["curve_kind"] == "mean" and curve["enhancement"] == sorted(curve["enhancement"]) and min(curve["enhancement"]) >= 0
    assert curve["enhancement"] != enhancing["curve"]["enhancement"]
    assert main(["export", str(combined), "--out", str(tmp_path / "shipped.pt")]) == 0
    shipped = load_checkpoint(tmp_path / "shipped.pt")
    assert shipped.config.detector["curve"] == curve and shipped.config.detection_threshold == record["threshold"]
    assert shipped.training["detector"]["run"] == str(run)
    card = model_card("det", "d", shipped.training, shipped.config.to_dict(), None, None)
    assert "## Enhancement detector" in card and f">= {record['threshold']:g}" in card
    case = load_case(caches["test"], json.loads((caches["test"] / "index.json").read_text(encoding="utf-8"))["prepared"][0]["case"])
    grid = {key: case[key] for key in ("spacing", "origin", "direction")}
    images = {m: image_from_array(case[f"raw_{m}"], grid) for m in ("t1", "t2", "adc")}
    result = synthesize(images, load_model(tmp_path / "shipped.pt", device="cpu"), options=SynthesisOptions(device="cpu"))
    assert result.probability is not None and result.probability.GetSize() == images["t1"].GetSize()


def test_a_detector_of_the_tumours_parts_trains_and_ships_its_enhancing_probability(caches: dict[str, Path], tmp_path: Path) -> None:
    from conftest import tiny_checkpoint

    run = tmp_path / "parts"
    args = ["train-detector", "--data", str(caches["train"]), "--val", str(caches["val"]), "--out", str(run), "--inputs", "t1,t2,adc",
            "--quiet", "--every", "2", "--classes", "4"]
    assert main([*args, "--steps", "2"]) == 0
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["arch"]["classes"] == 4
    build_detector(3, state["arch"]).load_state_dict(state["network"])  # strict: four output channels were trained
    assert main([*args[:-1], "1", "--steps", "4", "--resume"]) == 2  # resumed with the classes it was trained with only
    if not (run / "best.pt").exists():  # no lesion found in 2 steps: select the last state by hand, to carry the pipeline on
        torch.save({"arch": state["arch"], "inputs": state["inputs"], "record": {}, "state_dict": state["network"]}, run / "best.pt")
    synthesis = tmp_path / "synthesis.pt"
    tiny_checkpoint(synthesis, ["t1", "t2", "adc"])
    assert main(["attach-detector", str(synthesis), str(run), "--out", str(tmp_path / "combined")]) == 0
    case = load_case(caches["test"], json.loads((caches["test"] / "index.json").read_text(encoding="utf-8"))["prepared"][0]["case"])
    grid = {key: case[key] for key in ("spacing", "origin", "direction")}
    images = {m: image_from_array(case[f"raw_{m}"], grid) for m in ("t1", "t2", "adc")}
    model = load_model(tmp_path / "combined" / "best.pt", device="cpu")
    assert model.config.detector["arch"]["classes"] == 4
    assert "tumour's parts" in model_card("parts", "d", model.training, model.config.to_dict(), None, None)
    probability = sitk.GetArrayFromImage(synthesize(images, model, options=SynthesisOptions(device="cpu")).probability)
    assert probability.shape == case["raw_t1"].shape and 0 <= probability.min() and probability.max() <= 1 and probability.max() > 0
