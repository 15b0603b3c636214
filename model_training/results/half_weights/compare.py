"""Half-size weights (issue 25): each bundled model's float16 file against its float32 original, in brain PSNR.

    python model_training/results/half_weights/compare.py FP32_DIR [REAL_CASES_DIR] [--models NAME ...] > model_training/results/half_weights/table.md

FP32_DIR holds the float32 files as bundled before issue 25 (``git show 4438090:Resources/Models/NAME.pt``).
Each model runs through the engine on the demo's phantom (seed DEMO_SEED, 1 mm, thick-slice T2/ADC/FLAIR)
and, when its inputs and its output's true image exist there, on the real BraTS cases (prepared as ``test_realdata.py`` does); each output
is scored against the true image with VC-Eval-1, and the two outputs are also compared with each other.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from model_training.datasets import read_case_folder
from model_training.prepare import PrepareOptions, image_from_array, prepare_case
from VirtualContrastLib import DEMO_SEED
from VirtualContrastLib.demo import PHANTOM_OPTIONS
from VirtualContrastLib.metrics import evaluate_case, percentile_normalize, psnr
from VirtualContrastLib.phantom import generate_case
from VirtualContrastLib.registry import list_models, load_model
from VirtualContrastLib.synthesis import SynthesisOptions, synthesize

OPTIONS = SynthesisOptions(device="cpu", precision="fp32")


def phantom_case() -> tuple[str, dict[str, sitk.Image], sitk.Image, dict[str, np.ndarray]]:
    """The demo's phantom: (name, images, brain mask, true arrays on the T1 grid)."""
    case = generate_case(DEMO_SEED, spacing=1.0, **PHANTOM_OPTIONS)
    t1 = case.images["t1"]
    truth = {m: sitk.GetArrayFromImage(image if image.GetSize() == t1.GetSize()
                                       else sitk.Resample(image, t1, sitk.Transform(), sitk.sitkLinear, 0.0))
             for m, image in case.images.items()}
    return f"phantom seed {DEMO_SEED}", case.images, case.brain_mask, truth


def main(fp32_dir: Path, real_dir: Path | None, names: list[str] | None) -> None:
    """Print the Markdown table: per model and case, brain PSNR from each file, their difference, and the outputs' mutual PSNR."""
    cases = [phantom_case()]
    for folder in sorted(real_dir.iterdir()) if real_dir else []:
        prepared = prepare_case(read_case_folder(folder, "brats2018"), PrepareOptions(modalities=("t1", "t2", "flair"), register=False))
        grid = {k: prepared[k] for k in ("spacing", "origin", "direction")}
        images = {m: image_from_array(prepared[f"raw_{m}"], grid) for m in ("t1", "t2", "flair")}
        truth = {m: prepared[f"raw_{m}"] for m in ("t1", "t2", "flair", "t1c")}
        cases.append((folder.name, images, image_from_array(prepared["mask"], grid), truth))
    print("| model | case | brain PSNR fp32 file (dB) | brain PSNR fp16 file (dB) | difference (dB) | fp16 output vs fp32 output, PSNR (dB) |")
    print("|---|---|---|---|---|---|")
    for entry in (e for e in list_models() if not names or e.name in names):
        half = load_model(entry.name, device="cpu")
        full = load_model(fp32_dir / entry.file, device="cpu")
        for name, images, mask, truth in cases:
            if not set(entry.inputs) <= set(images) or entry.output not in truth:
                continue
            given = {m: images[m] for m in entry.inputs}
            brain = sitk.GetArrayFromImage(mask) > 0
            out = {label: sitk.GetArrayFromImage(synthesize(given, model, brain_mask=mask, options=OPTIONS).synthetic)
                   for label, model in (("fp32", full), ("fp16", half))}
            scores = {label: evaluate_case(array, truth[entry.output], brain)["brain"]["psnr"] for label, array in out.items()}
            reference = percentile_normalize(out["fp32"], brain)
            agreement = psnr(percentile_normalize(out["fp16"], brain), reference, brain)
            print(f"| {entry.name} | {name} | {scores['fp32']:.3f} | {scores['fp16']:.3f} | {scores['fp16'] - scores['fp32']:+.4f} | {agreement:.1f} |",
                  flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32_dir", type=Path, help="the float32 files as bundled before issue 25")
    parser.add_argument("real_dir", type=Path, nargs="?", help="folder of real BraTS case folders (optional)")
    parser.add_argument("--models", nargs="*", help="only these bundled models (default: all)")
    args = parser.parse_args()
    main(args.fp32_dir, args.real_dir, args.models)
