"""``virtual-contrast demo``: a phantom case, synthesized and scored, in one command.

Generates a physics-phantom case (1 mm, with thick-slice T2/ADC/FLAIR like a clinical protocol),
synthesizes a CE-T1 with the default bundled model, and writes the inputs (BraTS-style, via
``phantom.write_case``), the synthetic CE-T1, the subtraction (enhancement) map, a PNG montage with the
true and synthetic enhancement maps side by side, and the VC-Eval-1 and enhancement metrics (with the
identity and per-case linear floors, and the detection floor fitted on training phantoms) to
``<out>/phantom-<seed>/``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import DEMO_SEED, INTENDED_USE, MODALITIES
from .montage import Panel, grey_window, write_montage
from .options import DEVICE_HELP

#: Phantom options the demo asks for: clinical-like thick slices for T2, ADC and FLAIR.
PHANTOM_OPTIONS: dict[str, Any] = {"thick_slices": True}

#: The detection floor's training phantoms: the first seeds of the default model's lesion-bearing, thick-slice
#: training cases (``model_training/reproduce_bundled.sh``), never the demo's own case.
FLOOR_FIRST_SEED = 1300
FLOOR_PHANTOM_OPTIONS: dict[str, Any] = {**PHANTOM_OPTIONS, "lesion_count": 2}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser("demo", help="synthesize a phantom case end to end and score it",
                                   description="Phantom case -> synthetic CE-T1, montage and metrics. " + INTENDED_USE)
    parser.add_argument("--out", type=Path, default=Path("vc-demo"), help="output folder (default ./vc-demo)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED,
                        help=f"phantom seed (default {DEMO_SEED}: held out from training, with an enhancing tumour)")
    parser.add_argument("--model", help="bundled model name or checkpoint (default: the bundled model for T1+T2+ADC+FLAIR, phantom-trained ones first)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--spacing", type=float, default=1.0, help="phantom T1 voxel size in mm (default 1; 2-3 for a quick look)")
    parser.add_argument("--floor-cases", type=int, default=4, metavar="N",
                        help=f"training phantoms (seeds {FLOOR_FIRST_SEED}, ...) the detection floor is fitted on (default 4; 0 leaves it out)")
    parser.set_defaults(func=run)


def montage_rows(panels: dict[str, np.ndarray], maps: dict[str, np.ndarray], mask: np.ndarray, seg: np.ndarray,
                 overlays: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> tuple[int, list[Panel]]:
    """The axial slice through the most tumour and its panels: grey ``panels``, the subtraction ``maps``, then each
    ``overlays`` (grey image, map) pair drawn as Slicer's overlay shows it."""
    index = int(np.argmax((seg > 0).sum(axis=(1, 2)))) if seg.any() else mask.shape[0] // 2
    row = [Panel(title, volume[index], grey_window(volume, mask)) for title, volume in panels.items()]
    row += [Panel(title, volume[index], kind="map", brain=mask[index]) for title, volume in maps.items()]
    row += [Panel(title, grey[index], grey_window(grey, mask), brain=mask[index], overlay=shown[index])
            for title, (grey, shown) in (overlays or {}).items()]
    return index, row


def on_t1_grid(case: Any) -> dict[str, np.ndarray]:
    """A phantom case's T1, T2, ADC and FLAIR as arrays on its T1 grid (thick-slice inputs resampled)."""
    import SimpleITK as sitk

    from .preprocessing import resample_to_reference

    reference = case.images["t1"]
    return {m: sitk.GetArrayFromImage(reference if m == "t1" else resample_to_reference(case.images[m], reference)).astype(np.float32)
            for m in ("t1", "t2", "adc", "flair")}


def phantom_floor_case(case: Any, inputs: list[str], spec: dict[str, Any]) -> dict[str, Any]:
    """A phantom case in the detection floor's form, its ``inputs`` normalized as the model normalizes them."""
    import SimpleITK as sitk

    from .detection_floor import floor_case

    arrays = on_t1_grid(case)
    return floor_case({m: arrays[m] for m in inputs}, sitk.GetArrayFromImage(case.brain_mask) > 0,
                      case.images["t1"].GetSpacing(), spec, labels=sitk.GetArrayFromImage(case.seg))


def run(args: argparse.Namespace) -> int:
    """``virtual-contrast demo``."""
    import SimpleITK as sitk

    from .detection_floor import DETECTION_FLOOR, fit_detection_floor, floor_case, floor_map
    from .enhancement import DEFINITION, enhancement_metrics, subtraction_map
    from .errors import InputError
    from .imageio import write_image
    from .metrics import brats_regions, evaluate_case, linear_floor
    from .phantom import generate_case, write_case
    from .registry import default_model_for, load_model
    from .synthesis import SynthesisOptions, synthesize
    from .synthesis_cli import SUBTRACTION_DESCRIPTION

    if not 0.5 <= args.spacing <= 6.0:
        raise InputError("--spacing must be between 0.5 and 6 mm")
    if args.floor_cases < 0:
        raise InputError("--floor-cases must be 0 or more")
    start = time.perf_counter()
    name = args.model or default_model_for(MODALITIES, phantom_data=True).name
    model = load_model(name, device=args.device)
    print(f"model: {model.name} (inputs {'+'.join(m.upper() for m in model.config.inputs)})")
    case = generate_case(args.seed, spacing=args.spacing, **PHANTOM_OPTIONS)
    inputs = {m: case.images[m] for m in ("t1", "t2", "adc", "flair")}
    result = synthesize(inputs, model, brain_mask=case.brain_mask, options=SynthesisOptions(device=args.device))

    case_id = f"phantom-{args.seed:04d}"
    out = write_case(case, args.out, case_id)["t1"].parent
    synthetic_path = write_image(result.synthetic, out / f"{case_id}-t1c-synthetic.nii.gz")
    subtraction_path = write_image(result.subtraction, out / f"{case_id}-subtraction.nii.gz", description=SUBTRACTION_DESCRIPTION)

    array = {k: sitk.GetArrayFromImage(v).astype(np.float32) for k, v in case.images.items()}
    mask = sitk.GetArrayFromImage(case.brain_mask) > 0
    seg = sitk.GetArrayFromImage(case.seg)
    synthetic = sitk.GetArrayFromImage(result.synthetic)
    # T2, ADC and FLAIR may live on thick-slice grids; the floors and the montage use them on the T1 grid.
    on_t1 = on_t1_grid(case)
    model_inputs = [on_t1[m] for m in model.config.inputs]
    metrics = evaluate_case(synthetic, array["t1c"], mask, t1=array["t1"], regions=brats_regions(seg), linear_inputs=model_inputs)
    spacing = case.images["t1"].GetSpacing()[::-1]
    maps = {"true": subtraction_map(array["t1c"], array["t1"], mask), "synthetic": sitk.GetArrayFromImage(result.subtraction),
            "identity": subtraction_map(array["t1"], array["t1"], mask),
            "linear": subtraction_map(linear_floor(array["t1c"], model_inputs, mask), array["t1"], mask)}
    floor_inputs = list(model.config.inputs)
    if args.floor_cases:
        seeds = list(range(FLOOR_FIRST_SEED, FLOOR_FIRST_SEED + args.floor_cases))
        print(f"detection floor: fitting a voxel classifier on {len(seeds)} training phantoms (seeds {seeds[0]}-{seeds[-1]})", flush=True)
        training = (phantom_floor_case(generate_case(number, spacing=args.spacing, **FLOOR_PHANTOM_OPTIONS), floor_inputs,
                                       model.config.normalization) for number in seeds)
        classifier = fit_detection_floor(training, floor_inputs)
        # The demo case's inputs are already on the T1 grid (on_t1): no second resampling.
        shown = floor_case({m: on_t1[m] for m in floor_inputs}, mask, case.images["t1"].GetSpacing(), model.config.normalization)
        maps["detection_floor"] = floor_map(classifier, shown, floor_inputs)
    enhancement = {kind: enhancement_metrics(maps[kind], maps["true"], seg, mask, spacing) for kind in maps if kind != "true"}
    index, row = montage_rows(
        {"T1": array["t1"], "T2": on_t1["t2"], "ADC": on_t1["adc"], "CE-T1 (ground truth)": array["t1c"], "CE-T1 (SYNTHETIC)": synthetic},
        {"enhancement (ground truth)": maps["true"], "enhancement (SYNTHETIC)": maps["synthetic"]}, mask, seg,
        {"overlay as in Slicer (ground truth)": (array["t1c"], maps["true"]), "overlay as in Slicer (SYNTHETIC)": (synthetic, maps["synthetic"])},
    )
    montage = write_montage([row], out / f"{case_id}-montage.png", panel_size=(3.0, 3.4), title=(
        f"VirtualContrast phantom demo, axial slice {index}: SYNTHETIC images, research use only; "
        "enhancement maps: white = none, red = enhancing; overlays: map above the threshold, dark red to yellow"))
    seconds = time.perf_counter() - start
    report = {
        "case": case_id, "seed": args.seed, "model": model.name, "model_sha256": model.sha256,
        "device": result.device, "precision": result.precision, "synthesis_seconds": result.seconds,
        "wall_seconds": seconds, "notes": result.notes, "protocol": "VC-Eval-1 (DESIGN.md)", "metrics": metrics,
        "enhancement": enhancement, "enhancement_definition": DEFINITION, "intended_use": INTENDED_USE,
    }
    if args.floor_cases:
        report["detection_floor"] = {"label": DETECTION_FLOOR, "inputs": floor_inputs, "training_phantom_seeds": seeds,
                                     "phantom_options": FLOOR_PHANTOM_OPTIONS, "spacing_mm": args.spacing}
    metrics_path = out / f"{case_id}-metrics.json"
    metrics_path.write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    print(f"synthetic CE-T1: {synthetic_path}")
    print(f"subtraction map: {subtraction_path}")
    print(f"montage: {montage}")
    print(f"metrics: {metrics_path}")
    print(f"all files in {Path(out).resolve()}; wall time {seconds:.1f} s (synthesis {result.seconds:.1f} s on {result.device}, {result.precision})")
    print("SYNTHETIC images: research use only.")
    return 0
