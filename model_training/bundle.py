"""Bundle a trained run as a shipped model: checkpoint, ``models.json`` entry and model card.

``virtual-contrast-train bundle RUN --name NAME`` exports the run's best weights into
``Resources/Models/NAME.pt`` (via :func:`model_training.export.exported_checkpoint`), records its SHA-256,
size, inputs and measured CPU seconds per 192×256×192 volume in ``models.json``, and writes
``NAME.md``, the model card the CLI and the Slicer module show. A name that is already bundled (entry,
checkpoint or card) is refused unless ``--replace`` is given; its entry is then replaced in place.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

from VirtualContrastLib import INTENDED_USE
from VirtualContrastLib.checkpoints import load_checkpoint, save_checkpoint
from VirtualContrastLib.errors import InputError
from VirtualContrastLib.fileutil import write_file
from VirtualContrastLib.networks.detector import output_classes

from .datacards import TRAINING_DATA
from .export import exported_checkpoint

#: A model name becomes NAME.pt and NAME.md in the models folder: a plain file name, no path separators, no "..".
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")


def _read_index(index_path: Path) -> dict[str, Any]:
    """The ``models.json`` of a models folder (an empty list when there is none yet)."""
    if not index_path.is_file():
        return {"models": []}
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise InputError(f"{index_path} is not valid JSON ({error}); repair it before bundling") from None
    if not isinstance(index, dict) or not isinstance(index.get("models"), list):
        raise InputError(f"{index_path} is not a model list ({{\"models\": [...]}}); repair it before bundling")
    return index


def check_bundle_name(models_dir: str | Path, name: str, replace: bool) -> None:
    """Refuse a name that is not a plain file name, and one already bundled in ``models_dir`` unless ``replace``."""
    if not MODEL_NAME_PATTERN.fullmatch(name) or ".." in name:
        raise InputError(f"model name {name!r} cannot be a file name (up to 100 letters, digits and . _ + -, "
                         "starting with a letter or digit; no path separators or '..')")
    models_dir = Path(models_dir)
    names = [e.get("name") for e in _read_index(models_dir / "models.json")["models"] if isinstance(e, dict)]
    existing = [f for f in (f"{name}.pt", f"{name}.md") if (models_dir / f).exists()]
    if (name in names or existing) and not replace:
        held = "models.json" if name in names else " and ".join(existing)
        raise InputError(f"a model named {name!r} is already bundled in {models_dir} ({held}); pass --replace to replace it "
                         "(every synthesis with that name will then use the new weights) or choose another --name")


def _metric_lines(best: dict[str, Any] | None) -> list[str]:
    if not best:
        return ["- no validation metrics were recorded"]
    metrics = best.get("validation", {})
    lines = [f"- best epoch: {best.get('epoch', '?')} (selected by {best.get('metric', '?')})"]
    for key in sorted(k for k in metrics if isinstance(metrics[k], (int, float))):
        lines.append(f"- {key}: {metrics[key]:.4f}")
    return lines


def _detector_lines(config: dict[str, Any], training: dict[str, Any]) -> list[str]:
    """The model card's section on the enhancement detector, where the model has one."""
    detector = config.get("detector")
    if not detector:
        return []
    record = training.get("detector", {}).get("validation", {})
    curve = detector.get("curve")
    lines = [
        "## Enhancement detector",
        f"- a 3D U-Net (`VirtualContrastLib.networks.detector`, options {detector.get('arch') or 'default'}) trained on the "
        + ("tumour's parts, a softmax over background, necrosis, oedema and enhancing whose enhancing channel is used"
           if output_classes(detector.get("arch")) > 1 else "enhancing-tumour label alone")
        + " (`virtual-contrast-train train-detector`); it decides where the CE-T1 enhances",
        f"- enhancement is shown only in regions that hold a voxel where its probability is >= {config['detection_threshold']:g} "
        "(other enhancing regions of the synthetic CE-T1 are removed)"
        + (f"; there the CE-T1 is raised at least to the mean true enhancement of the training cases at that probability "
           f"(a curve of {len(curve['probability'])} points, up to {max(curve['enhancement']):.3f})" if curve else "")
        + " (`virtual-contrast-train fit-detection`, training cases only)",
    ]
    if record:
        lines.append(f"- selected at step {record.get('step', '?')} on the validation cases: lesion F1 {record.get('lesion_f1', float('nan')):.3f}, "
                     f"AUC enhancing tumour vs brain {record.get('auc_brain', float('nan')):.3f}, "
                     f"vs rest of tumour {record.get('auc_tumour', float('nan')):.3f} (its own map, p > 0.5)")
    return [*lines, ""]


def model_card(name: str, description: str, training: dict[str, Any], config: dict[str, Any], cpu_seconds: float | None,
               evaluation: str | None, training_data: str = "phantom", half: bool = True) -> str:
    """The Markdown model card of a bundled model."""
    data = training.get("data", {})
    schedule = "; ".join(f"{s['epochs']} epochs at λ = {tuple(s['weights'])}, lr {s['lr']:g}" for s in training.get("schedule", []))
    sampling = training.get("config", {}).get("sampling", {})
    hardware = training.get("hardware", {})
    lines = [
        f"# Model card: {name}",
        "",
        "**SYNTHETIC images — research and demonstration use only, not for diagnosis.**",
        "",
        description,
        "",
        "## Model",
        f"- architecture: `{config['architecture']}` with {config.get('arch_kwargs', {})}; inputs {', '.join(config['inputs'])} → {config['target']}",
        f"- slab depth {config['slab_depth']}; normalization {config['normalization']}",
        (f"- output calibration (`VirtualContrastLib.calibration`): a monotone map of {len(config['output_map']['source'])} points, "
         f"fitted on the {len(training.get('calibration', {}).get('cases', []))} training cases (`virtual-contrast-train calibrate`)")
        if config.get("output_map") else "- output calibration: none",
        f"- CPU time per 192×256×192 volume: {cpu_seconds:.1f} s (measured with `virtual-contrast bench`, see below)" if cpu_seconds else "- CPU time: not measured",
        "- weights: stored as float16 (half the download), computed in float32" if half else "- weights: stored as float32",
        "",
        "## Training",
        f"- run `{training.get('run', '?')}`, seed {training.get('seed', '?')}, {training.get('epochs_done', '?')} epochs, "
        f"wall time {training.get('wall_time_s', 0) / 60:.1f} min on {hardware.get('device', '?')} "
        f"({hardware.get('gpu') or str(hardware.get('cpu_count', '?')) + ' CPU cores'}, torch {hardware.get('torch', '?')})",
        # The run folder and file name only: a shipped card names no folder of the machine it was made on.
        *([f"- initialized from `{'/'.join(Path(str(init)).parts[-2:])}` (fine-tuned, see the description)"] if (init := training.get("config", {}).get("init")) else []),
        f"- training cases ({len(data.get('train_cases', []))}): {', '.join(data.get('train_cases', []))}",
        f"- validation cases ({len(data.get('val_cases', []))}): {', '.join(data.get('val_cases', []))}",
        f"- schedule: {schedule}",
        f"- sampling: {sampling}",
        "",
        "## Validation (VC-Eval-1, best epoch)",
        *_metric_lines(training.get("best")),
        "",
        *_detector_lines(config, training),
    ]
    if evaluation:
        lines += ["## Evaluation", "", evaluation.strip(), ""]
    data_set = TRAINING_DATA[training_data]
    if data_set["terms"]:
        lines += ["## Data terms and citations", "", data_set["terms"], ""]
    lines += ["## Intended use", "", INTENDED_USE, "", "## Known limits", "", data_set["limits"], ""]
    return "\n".join(lines)


def bundle_run(run_dir: str | Path, name: str, models_dir: str | Path, description: str, role: str = "synthesis",
               cpu_seconds: float | None = None, evaluation_markdown: str | None = None,
               training_data: str = "phantom", output_map: bool = True, half: bool = True, replace: bool = False) -> dict[str, Any]:
    """Export ``run_dir`` as bundled model ``name`` into ``models_dir`` (with the run's output map unless ``output_map``
    is False, float16 weights unless ``half`` is False; a name already bundled only with ``replace``); returns its
    ``models.json`` entry."""
    models_dir = Path(models_dir)
    check_bundle_name(models_dir, name, replace)
    config, state_dict, summary = exported_checkpoint(run_dir, output_map)
    path = models_dir / f"{name}.pt"
    digest = save_checkpoint(path, config, state_dict, summary, half=half)
    checkpoint = load_checkpoint(path, expected_sha256=digest)
    config = checkpoint.config.to_dict()
    card_name = f"{name}.md"
    card = model_card(name, description, checkpoint.training, config, cpu_seconds, evaluation_markdown, training_data, half)
    write_file(models_dir / card_name, lambda tmp: tmp.write_text(card, encoding="utf-8"))
    entry = {
        "name": name, "file": path.name, "sha256": digest, "size_bytes": path.stat().st_size,
        "inputs": config["inputs"], "output": config["target"], "role": role, "description": description,
        "intended_use": INTENDED_USE, "card": card_name, "training_data": training_data,
        "cpu_seconds_per_volume": round(cpu_seconds, 1) if cpu_seconds else None, "gpu_seconds_per_volume": None,
    }
    index_path = models_dir / "models.json"
    index = _read_index(index_path)
    names = [e.get("name") if isinstance(e, dict) else None for e in index["models"]]
    # Re-bundling keeps the entry's place (models.json order breaks ties when the default model is chosen) and
    # the fields bundle does not write (preprocessing).
    if name in names:
        index["models"][names.index(name)] = {**index["models"][names.index(name)], **entry}
    else:
        index["models"].append(entry)
    write_file(index_path, lambda tmp: tmp.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8"))
    return entry


def measure_cpu_seconds(run_dir: str | Path, repeats: int = 3) -> float:
    """Median seconds per 192×256×192 volume of the run's architecture on this CPU (``virtual-contrast bench``).

    The median of several runs, because one run on a shared 2-core machine varied by half (26 to 41 s). A model
    with a detector counts it too (over the whole volume).
    """
    from VirtualContrastLib.bench import benchmark

    config = load_checkpoint(Path(run_dir) / "best.pt").config
    detector = None if config.detector is None else config.detector.get("arch", {})
    runs = [benchmark(int(config.arch_kwargs["width"]), config.architecture, len(config.inputs), device="cpu", slabs=8, detector=detector)
            for _ in range(repeats)]
    return float(statistics.median(r["seconds_per_volume"] for r in runs))
