"""``python -m model_training`` / ``virtual-contrast-train``: phantoms, prepare, train, evaluate, export.

Examples::

    virtual-contrast-train make-phantoms --out data/phantoms --train 20 --val 4 --test 6 --spacing 2
    virtual-contrast-train get-brats2018 data/brats DeepBrainSeg BioExp
    virtual-contrast-train prepare data/phantoms/train --out data/cache/train --no-register
    virtual-contrast-train train phantom_lite --out runs/lite --set data.train=data/cache/train --set data.val=data/cache/val
    torchrun --nproc_per_node 4 -m model_training train final --out runs/final
    virtual-contrast-train evaluate runs/a/model.pt runs/b/model.pt --data data/cache/test --table I --out results
    virtual-contrast-train fit-threshold data/cache/train --out threshold.json
    virtual-contrast-train calibrate runs/lite --data data/cache/train
    virtual-contrast-train export runs/lite --out Resources/Models/phantom_lite.pt
    virtual-contrast-train bundle runs/lite --name vc-hrfcn16-t1-t2-adc --description "..."
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from VirtualContrastLib import INTENDED_USE, MODALITIES
from VirtualContrastLib.cases import LAYOUTS
from VirtualContrastLib.cli import run_command
from VirtualContrastLib.config import CURVE_KINDS, DETECTOR_CLASSES
from VirtualContrastLib.model_info import parse_modalities

from .datacards import TRAINING_DATA
from .evaluate import PERTURBATIONS

PROG = "virtual-contrast-train"
NO_MAP_HELP = "ship the network's own output: leave out the run's output map (calibrate) even where one was fitted"
FP32_HELP = "store the weights in float32 (default: float16, half the size, read back as float32)"


def cmd_make_phantoms(args: argparse.Namespace) -> int:
    """Generate domain-randomized phantom cases into train/val/test folders with their seed ranges."""
    from .phantoms import make_phantoms

    record = make_phantoms(args.out, {"train": args.train, "val": args.val, "test": args.test}, args.seed, args.spacing)
    print(json.dumps(record["splits"], indent=2))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Prepare a dataset into a cache folder."""
    from .datasets import list_cases
    from .prepare import PrepareOptions, prepare_dataset

    cases = list_cases(args.data, args.layout, split=args.split)
    options = PrepareOptions(modalities=args.modalities, register=not args.no_register,
                             normalization=_normalization_spec(args.normalization), dtype=args.dtype)
    index = prepare_dataset(cases, args.out, options, progress=None if args.quiet else lambda c: print(f"prepared {c}", file=sys.stderr),
                            workers=args.workers)
    if index["kept"]:
        print(f"merged into the existing cache {args.out}: kept {len(index['kept'])} cases prepared before")
    print(f"prepared {len(index['prepared'])} cases into {args.out}; skipped {len(index['skipped'])} (see {Path(args.out) / 'skipped.csv'})")
    return 0 if index["prepared"] else 2


def _normalization_spec(text: str | None) -> dict[str, Any] | None:
    """The ``--normalization`` JSON object, checked as a model config checks it."""
    from VirtualContrastLib.errors import InputError
    from VirtualContrastLib.normalization import check_spec

    if text is None:
        return None
    try:
        spec = json.loads(text)
        check_spec(spec)
    except ValueError as error:
        raise InputError(f"--normalization {text!r} is not a valid normalization spec: {str(error).splitlines()[0]}") from None
    return spec


def _load_train_config(args: argparse.Namespace) -> Any:
    from .settings import load_config, parse_override, _merge

    overrides: dict[str, Any] = {}
    for text in args.set or []:
        overrides = _merge(overrides, parse_override(text))
    return load_config(args.config, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume) a run."""
    from .train import train

    config = _load_train_config(args)
    summary = train(config, args.out, resume=args.resume, device=args.device, stop_after_epoch=args.stop_after_epoch,
                    progress=not args.quiet, overwrite=args.overwrite)
    best = summary.get("best") or {}
    print(f"{config.name}: {summary['epochs_done']} epochs in {summary['wall_time_s']} s; best epoch {best.get('epoch')} "
          f"({best.get('metric')} {best.get('score', 'n/a')}); run folder {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate checkpoints and write the tables."""
    from .evaluate import evaluate_checkpoints

    result = evaluate_checkpoints(args.checkpoints, args.data, args.out, table=args.table,
                                  labels=args.labels.split(",") if args.labels else None, reference=args.reference,
                                  device=args.device, max_cases=args.max_cases, montage=not args.no_montage, tta=args.tta,
                                  overlap=args.overlap, detection_floor=args.detection_floor, perturb=args.perturb)
    print((Path(args.out) / f"table_{args.table}.md").read_text(encoding="utf-8"))
    print(f"{len(result['cases'])} cases; tables and montage in {args.out}")
    return 0


def cmd_fit_threshold(args: argparse.Namespace) -> int:
    """Fit the enhancement threshold on the true subtraction maps of training cases."""
    from .evaluate import fit_threshold

    record = fit_threshold(args.data, args.out)
    print(f"threshold {record['threshold']} (Youden's J {record['youden_j']}) from {len(record['cases'])} training cases; written to {args.out}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit a run's output calibration on the training cases of a prepared cache."""
    from .calibrate import MAP_NAME, calibrate_run

    record = calibrate_run(args.run, args.data, args.device, progress=None if args.quiet else lambda text: print(text, file=sys.stderr))
    print(f"output map fitted on {len(record['cases'])} training cases in {record['seconds']:.0f} s; "
          f"written to {args.run / MAP_NAME} (export and bundle put it into the checkpoint)")
    return 0


def cmd_fit_detection(args: argparse.Namespace) -> int:
    """Fit a detection model's probability threshold on the training cases of a prepared cache."""
    from .calibrate import THRESHOLD_NAME, fit_detection_threshold

    record = fit_detection_threshold(args.run, args.data, args.device, args.max_cases,
                                     progress=None if args.quiet else lambda text: print(text, file=sys.stderr), curve_kind=args.curve)
    print(f"detection threshold {record['threshold']} (mean lesion F1 {record['mean_lesion_f1'][record['threshold']]:.3f}) from "
          f"{len(record['cases'])} training cases in {record['seconds']:.0f} s; written to {args.run / THRESHOLD_NAME} "
          "(export and bundle put it into the checkpoint)")
    return 0


def cmd_train_detector(args: argparse.Namespace) -> int:
    """Train (or resume) an enhancement detector run on labelled prepared caches."""
    from .detector import BEST_NAME, train_detector

    best = train_detector(args.data, args.val, args.out, args.steps, parse_modalities(args.inputs), every=args.every,
                          batch=args.batch, lr=args.lr, resume=args.resume, max_val_cases=args.max_val_cases,
                          augmentation=not args.no_augmentation, tumour_weight=args.tumour_weight, init=args.init,
                          classes=args.classes, progress=None if args.quiet else lambda text: print(text, file=sys.stderr))
    if "step" not in best:
        print(f"no validation has found an enhancing lesion yet, so nothing is selected (no {args.out / BEST_NAME}); train longer")
        return 0
    print(f"best detector: step {best['step']} (score {best['score']:.3f}) in {args.out / BEST_NAME}")
    return 0


def cmd_attach_detector(args: argparse.Namespace) -> int:
    """Put a trained detector into a synthesis model's checkpoint, as a new run folder."""
    from .detector import attach_detector

    path = attach_detector(args.synthesis, args.detector_run, args.out, args.overwrite)
    print(f"wrote {path}; next: fit-detection {args.out} --data TRAIN_CACHE, then evaluate, export or bundle it")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a run's best model as an engine checkpoint."""
    from .export import export_run

    path, digest = export_run(args.run, args.out, not args.no_output_map, not args.fp32_weights, overwrite=args.overwrite)
    print(f"exported {path} (sha256 {digest})")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    """Ship a run as a bundled model: checkpoint + models.json entry + model card."""
    from .bundle import bundle_run, check_bundle_name, measure_cpu_seconds

    # Before the minutes of CPU timing: a name that would replace a shipped model, or escape the folder, is refused.
    check_bundle_name(args.models_dir, args.name, args.replace)
    evaluation = args.evaluation.read_text(encoding="utf-8") if args.evaluation else None
    seconds = args.cpu_seconds if args.cpu_seconds or args.no_bench else measure_cpu_seconds(args.run)
    entry = bundle_run(args.run, args.name, args.models_dir, args.description, args.role, seconds, evaluation, args.training_data,
                       not args.no_output_map, not args.fp32_weights, replace=args.replace)
    print(json.dumps(entry, indent=2))
    return 0


def cmd_throughput(args: argparse.Namespace) -> int:
    """Measure training slabs per second for a config."""
    from .throughput import measure_throughput

    config = _load_train_config(args)
    print(json.dumps(measure_throughput(config, args.height, args.width, args.steps, device=args.device), indent=2))
    return 0


def cmd_get_brats2018(args: argparse.Namespace) -> int:
    """Extract the 42 real BraTS 2018 cases of the project's manifest from clones of the two public repositories."""
    from .realdata import REPOSITORIES, extract

    clones = dict(zip(REPOSITORIES, (args.deepbrainseg, args.bioexp)))
    written = extract(args.dest, clones, args.cases.split(",") if args.cases else None,
                      progress=None if args.quiet else lambda text: print(f"extracted {text}", file=sys.stderr))
    print(f"{written} file(s) written, every file SHA-256-checked; cases and splits in {args.dest} ({args.dest / 'splits.tsv'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The training command line parser."""
    parser = argparse.ArgumentParser(prog=PROG, description="Train and evaluate VirtualContrast models. " + INTENDED_USE)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("make-phantoms", help="generate phantom train/val/test cases")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--train", type=int, default=20)
    p.add_argument("--val", type=int, default=4)
    p.add_argument("--test", type=int, default=6)
    p.add_argument("--seed", type=int, default=1000, help="first seed; splits take consecutive seed ranges")
    p.add_argument("--spacing", type=float, default=1.0, help="isotropic voxel size in mm")
    p.set_defaults(func=cmd_make_phantoms)

    p = sub.add_parser("get-brats2018", help="extract the 42 real BraTS 2018 cases (34 train, 8 val) from clones of their public repositories")
    p.add_argument("dest", type=Path, help="output folder: DEST/<case>/{t1,t1c,t2,flair,seg}.nii.gz and DEST/splits.tsv")
    p.add_argument("deepbrainseg", type=Path, help="clone of https://github.com/koriavinash1/DeepBrainSeg (or its bare git folder)")
    p.add_argument("bioexp", type=Path, help="clone of https://github.com/koriavinash1/BioExp (or its bare git folder)")
    p.add_argument("--cases", help="comma-separated case ids (default: all 42)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_get_brats2018)

    p = sub.add_parser("prepare", help="register, resample, mask, normalize and cache a dataset")
    p.add_argument("data", type=Path, help="folder of case folders, or a CSV manifest")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--layout", default="auto", help=f"auto, {', '.join(LAYOUTS)} or csv")
    p.add_argument("--split", help="only the cases that the folder's splits.tsv assigns to this split (e.g. train, val)")
    p.add_argument("--modalities", type=parse_modalities, default=MODALITIES, help="comma-separated inputs to cache (default: all found)")
    p.add_argument("--no-register", action="store_true", help="skip rigid registration (data already co-registered, e.g. BraTS)")
    p.add_argument("--normalization", help="normalization spec as JSON (default: brain_percentile 0.5/99.5)")
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    p.add_argument("--workers", type=int, default=1, help="cases prepared in parallel processes (default 1)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_prepare)

    for name, func, text in (("train", cmd_train, "train a model"), ("throughput", cmd_throughput, "measure training slabs per second")):
        p = sub.add_parser(name, help=text)
        p.add_argument("config", help="config file or bundled config name (model_training/configs)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. data.train=cache/train")
        p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
        if name == "train":
            p.add_argument("--out", required=True, type=Path, help="run folder")
            p.add_argument("--resume", action="store_true", help="continue from RUN/state.pt (with the config the run recorded)")
            p.add_argument("--overwrite", action="store_true", help="replace the run already in RUN (a non-empty RUN is refused otherwise)")
            p.add_argument("--stop-after-epoch", type=int, default=None, help="stop once this many epochs are done")
            p.add_argument("--quiet", action="store_true")
        else:
            p.add_argument("--height", type=int, default=256)
            p.add_argument("--width", type=int, default=192)
            p.add_argument("--steps", type=int, default=3)
        p.set_defaults(func=func)

    p = sub.add_parser("evaluate", help="evaluate checkpoints on a prepared test set")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", required=True, type=Path, help="prepared test cache folder")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--table", default="I", help="I, II, III, V, E (enhancement), fig7 or fig9")
    p.add_argument("--labels", help="comma-separated model labels (default: run names)")
    p.add_argument("--reference", help="label of the model the t-tests compare against (default: the first)")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-cases", type=int)
    p.add_argument("--tta", action="store_true")
    p.add_argument("--overlap", type=float, help="slab overlap fraction (default: the engine's, 1/3)")
    p.add_argument("--no-montage", action="store_true")
    p.add_argument("--detection-floor", type=Path, metavar="TRAIN_CACHE",
                   help="also score the detection floor, a voxel classifier fitted on this prepared training cache")
    p.add_argument("--perturb", choices=PERTURBATIONS, help="score robustness: the models see inputs with a random bias field "
                   "or T2/ADC/FLAIR as 5 mm slices (the truth is unchanged)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("fit-threshold", help="fit the enhancement threshold on training cases' true subtraction maps")
    p.add_argument("data", type=Path, help="prepared training cache folder (cases of other splits are left out)")
    p.add_argument("--out", required=True, type=Path, help="JSON file to write")
    p.set_defaults(func=cmd_fit_threshold)

    p = sub.add_parser("calibrate", help="fit a run's output calibration on training cases (output_map.json in the run)")
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--data", required=True, type=Path, help="prepared training cache folder (cases of other splits are left out)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no per-case progress")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("fit-detection", help="fit a detection model's probability threshold on training cases (detection_threshold.json in the run)")
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--data", required=True, type=Path, help="prepared training cache folder with labels (cases of other splits are left out)")
    p.add_argument("--max-cases", type=int, help="only the first N labelled training cases (default: all)")
    p.add_argument("--curve", choices=CURVE_KINDS, default="mean",
                   help="average the true map of all brain voxels per probability bin (default, the shipped models') or only of the "
                        "enhancing ones (every confirmed voxel drawn above T; the README's ablation)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no per-case progress")
    p.set_defaults(func=cmd_fit_detection)

    p = sub.add_parser("train-detector", help="train the enhancement detector (3D U-Net on the enhancing label) on labelled caches")
    p.add_argument("--data", required=True, type=Path, help="prepared training cache with labels")
    p.add_argument("--val", required=True, type=Path, help="prepared validation cache with labels and CE-T1 (selection)")
    p.add_argument("--out", required=True, type=Path, help="run folder (state.pt, best.pt, log.jsonl)")
    p.add_argument("--inputs", default="t1,t2,flair", help="input modalities, comma-separated, T1 first")
    p.add_argument("--steps", type=int, default=4000, help="optimizer steps in all (the learning rate decays over them)")
    p.add_argument("--every", type=int, default=250, help="validate and save every N steps")
    p.add_argument("--batch", type=int, default=2, help="cubes per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-val-cases", type=int, help="validate on the first N val cases only")
    p.add_argument("--no-augmentation", action="store_true", help="flips only: no bias field, gamma, noise or blur (ablation)")
    p.add_argument("--tumour-weight", type=float, default=1.0,
                   help="weight of the BCE term on necrosis and oedema (labels 1, 2): >1 teaches the rim from the rest (default 1)")
    p.add_argument("--classes", type=int, default=1, choices=DETECTOR_CLASSES,
                   help="1: one logit, enhancing vs not (default); 4: a softmax over background, necrosis, oedema and enhancing")
    p.add_argument("--init", type=Path, help="start from this detector run's best.pt (fine-tuning; same inputs)")
    p.add_argument("--resume", action="store_true", help="go on from the run's state.pt")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_train_detector)

    p = sub.add_parser("attach-detector", help="put a trained detector into a synthesis model (new run folder)")
    p.add_argument("synthesis", help="bundled model name or checkpoint file of the synthesis model")
    p.add_argument("detector_run", type=Path, help="train-detector run folder")
    p.add_argument("--out", required=True, type=Path, help="run folder to write (best.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace the folder's best.pt")
    p.set_defaults(func=cmd_attach_detector)

    p = sub.add_parser("export", help="export a run's best model as an engine checkpoint")
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--overwrite", action="store_true", help="replace an existing file (never a bundled model's checkpoint)")
    p.add_argument("--no-output-map", action="store_true", help=NO_MAP_HELP)
    p.add_argument("--fp32-weights", action="store_true", help=FP32_HELP)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bundle", help="ship a run as a bundled model (checkpoint, models.json entry, model card)")
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--name", required=True, help="model name (file NAME.pt and card NAME.md)")
    p.add_argument("--replace", action="store_true", help="replace a model of that name already bundled (refused otherwise)")
    p.add_argument("--models-dir", type=Path, default=Path(__file__).resolve().parent.parent / "Resources" / "Models")
    p.add_argument("--description", required=True)
    p.add_argument("--role", choices=("synthesis", "auxiliary"), default="synthesis")
    p.add_argument("--training-data", choices=tuple(TRAINING_DATA), default="phantom",
                   help="what the model was trained on: sets the model card's known limits and data terms")
    p.add_argument("--evaluation", type=Path, help="Markdown evaluation table to put in the model card")
    p.add_argument("--no-bench", action="store_true", help="do not measure CPU seconds per volume")
    p.add_argument("--cpu-seconds", type=float, help="CPU seconds per volume measured earlier with virtual-contrast bench")
    p.add_argument("--no-output-map", action="store_true", help=NO_MAP_HELP)
    p.add_argument("--fp32-weights", action="store_true", help=FP32_HELP)
    p.set_defaults(func=cmd_bundle)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the training command line; returns the exit code."""
    return run_command(build_parser().parse_args(argv), PROG)


if __name__ == "__main__":
    sys.exit(main())
