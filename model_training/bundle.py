"""Bundle a trained run as a shipped model: checkpoint, ``models.json`` entry and model card.

``virtual-contrast-train bundle RUN --name NAME`` exports the run's best weights into
``Resources/Models/NAME.pt`` (via :func:`model_training.export.export_run`), records its SHA-256,
size, inputs and measured CPU seconds per 192×256×192 volume in ``models.json`` (replacing an
entry of the same name in place), and writes ``NAME.md``, the model card the CLI and the Slicer module show.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from VirtualContrastLib import INTENDED_USE
from VirtualContrastLib.checkpoints import load_checkpoint
from VirtualContrastLib.fileutil import atomic_write

from .datacards import TRAINING_DATA
from .export import export_run

def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _metric_lines(best: dict[str, Any] | None) -> list[str]:
    if not best:
        return ["- no validation metrics were recorded"]
    metrics = best.get("validation", {})
    lines = [f"- best epoch: {best.get('epoch', '?')} (selected by {best.get('metric', '?')})"]
    for key in sorted(k for k in metrics if isinstance(metrics[k], (int, float))):
        lines.append(f"- {key}: {metrics[key]:.4f}")
    return lines


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
               training_data: str = "phantom", output_map: bool = True, half: bool = True) -> dict[str, Any]:
    """Export ``run_dir`` as bundled model ``name`` into ``models_dir`` (with the run's output map unless
    ``output_map`` is False, float16 weights unless ``half`` is False); returns its ``models.json`` entry."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    path, digest = export_run(run_dir, models_dir / f"{name}.pt", output_map, half)
    checkpoint = load_checkpoint(path, expected_sha256=digest)
    config = checkpoint.config.to_dict()
    card_name = f"{name}.md"
    _write_text_atomic(models_dir / card_name,
                       model_card(name, description, checkpoint.training, config, cpu_seconds, evaluation_markdown, training_data, half))
    entry = {
        "name": name, "file": path.name, "sha256": digest, "size_bytes": path.stat().st_size,
        "inputs": config["inputs"], "output": config["target"], "role": role, "description": description,
        "intended_use": INTENDED_USE, "card": card_name, "training_data": training_data,
        "cpu_seconds_per_volume": round(cpu_seconds, 1) if cpu_seconds else None, "gpu_seconds_per_volume": None,
    }
    index_path = models_dir / "models.json"
    index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.is_file() else {"models": []}
    names = [e.get("name") for e in index["models"]]
    # Re-bundling keeps the entry's place: models.json order breaks ties when the default model is chosen.
    if name in names:
        index["models"][names.index(name)] = entry
    else:
        index["models"].append(entry)
    _write_text_atomic(index_path, json.dumps(index, indent=2) + "\n")
    return entry


def measure_cpu_seconds(run_dir: str | Path, repeats: int = 3) -> float:
    """Median seconds per 192×256×192 volume of the run's architecture on this CPU (``virtual-contrast bench``).

    The median of several runs, because one run on a shared 2-core machine varied by half (26 to 41 s).
    """
    from VirtualContrastLib.bench import benchmark

    config = load_checkpoint(Path(run_dir) / "best.pt").config
    runs = [benchmark(int(config.arch_kwargs["width"]), config.architecture, len(config.inputs), device="cpu", slabs=8)
            for _ in range(repeats)]
    return float(statistics.median(r["seconds_per_volume"] for r in runs))
