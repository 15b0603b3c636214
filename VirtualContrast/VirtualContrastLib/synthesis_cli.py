"""``virtual-contrast synthesize | batch | models``: synthesis from files, in bulk, and the model list.

torch is imported only when a command runs, so ``virtual-contrast --help`` stays fast.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import INTENDED_USE, MODALITIES
from .errors import InputError, VirtualContrastError

if TYPE_CHECKING:
    from .registry import LoadedModel
    from .synthesis import SynthesisOptions, SynthesisResult

#: BraTS-style file suffixes of a case folder (``<case>/<case>-t1n.nii.gz`` ...).
BRATS_SUFFIXES = {"t1": "t1n", "t2": "t2w", "flair": "t2f", "adc": "adc", "mask": "brainmask"}
INPUT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")
MANIFEST_COLUMNS = ("case_id", "t1", "t2", "adc", "flair", "mask")

SUBTRACTION_DESCRIPTION = "SYNTHETIC subtraction (CE-T1 minus T1) VirtualContrast - research only"
UNCERTAINTY_DESCRIPTION = "SYNTHETIC uncertainty (TTA std) VirtualContrast - research only"


@dataclass
class SynthesisJob:
    """The files of one synthesis: inputs by modality, optional mask, outputs."""

    inputs: dict[str, Path]
    output: Path
    mask: Path | None = None
    subtraction: Path | None = None
    uncertainty: Path | None = None


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="bundled model name or checkpoint file (default: the bundled model matching the inputs)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    parser.add_argument("--overlap", type=float, default=None, help="slab overlap fraction in [0, 1) (default 1/3)")
    parser.add_argument("--batch-size", type=int, default=None, help="slabs per forward pass (default 2 on CPU, 4 on GPU)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="auto: bf16 on CPUs/GPUs that support it, else fp32 (CPU) / fp16 (GPU)")
    parser.add_argument("--missing", default="error", choices=("error", "auxiliary", "zeros"),
                        help="when a model input is not given: stop (default), predict it from T1 with an auxiliary model, or zero-fill")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation with flips (4x slower; gives an uncertainty map)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synthesize``, ``batch`` and ``models`` sub-commands."""
    single = subparsers.add_parser(
        "synthesize", help="synthesize a CE-T1 from one set of pre-contrast images",
        description="Synthesize a contrast-enhanced T1 on the T1 grid. " + INTENDED_USE,
    )
    single.add_argument("--t1", required=True, type=Path, help="pre-contrast T1 (file or DICOM folder); outputs use its grid")
    for name in MODALITIES[1:]:
        single.add_argument(f"--{name}", type=Path, help=f"{name.upper()} image (any grid overlapping the T1)")
    single.add_argument("--mask", type=Path, help="brain mask (default: computed from the T1)")
    single.add_argument("-o", "--output", required=True, type=Path, help="synthetic CE-T1 file (.nii.gz, .nii, .nrrd, .mha)")
    single.add_argument("--subtraction", type=Path, help="also write the enhancement (subtraction) map: synthetic CE-T1 minus its robust linear fit on the T1")
    single.add_argument("--uncertainty", type=Path, help="also write the TTA uncertainty map (turns on --tta)")
    single.add_argument("--quiet", action="store_true", help="no progress bar")
    single.add_argument("--progress-lines", action="store_true",
                        help="report progress as 'PROGRESS <fraction> <step>' lines on stderr (for front ends such as Slicer)")
    _add_engine_options(single)
    single.set_defaults(func=run)

    batch = subparsers.add_parser(
        "batch", help="synthesize many cases (folder of BraTS-style cases or a CSV manifest)",
        description="Synthesize every case; a failing case is reported and the batch goes on. " + INTENDED_USE,
    )
    source = batch.add_mutually_exclusive_group(required=True)
    source.add_argument("--input-dir", type=Path, help="folder of case folders <case>/<case>-t1n.nii.gz, -t2w, -t2f, -adc, -brainmask")
    source.add_argument("--manifest", type=Path, help="CSV with columns case_id,t1,t2,adc,flair,mask (paths relative to the CSV)")
    batch.add_argument("--out-dir", required=True, type=Path, help="outputs go to <out-dir>/<case>/")
    _add_engine_options(batch)
    batch.set_defaults(func=run_batch)

    models = subparsers.add_parser("models", help="list the bundled models or print a model card")
    models.add_argument("--card", metavar="NAME", help="print the model card of NAME")
    models.set_defaults(func=run_models)


def options_from_args(args: argparse.Namespace) -> "SynthesisOptions":
    """Engine options from parsed command-line arguments (validated)."""
    from .synthesis import DEFAULT_OVERLAP, SynthesisOptions

    options = SynthesisOptions(
        device=args.device,
        overlap=DEFAULT_OVERLAP if args.overlap is None else args.overlap,
        batch_size=args.batch_size,
        precision=args.precision,
        tta=bool(args.tta or getattr(args, "uncertainty", None)),
        missing_policy=args.missing,
    )
    options.validate()
    return options


def choose_model(model: str | None, modalities: list[str], device: str, say: Callable[[str], None]) -> "LoadedModel":
    """Load ``model``, or the bundled model matching ``modalities`` (announcing the choice)."""
    from .registry import default_model_for, load_model

    if model is None:
        entry = default_model_for(modalities)
        say(f"model: {entry.name} (bundled; inputs {'+'.join(m.upper() for m in entry.inputs)}; chosen for the given inputs)")
        return load_model(entry.name, device=device)
    loaded = load_model(model, device=device)
    say(f"model: {loaded.name} (inputs {'+'.join(m.upper() for m in loaded.config.inputs)})")
    return loaded


def run_job(
    job: SynthesisJob,
    model: "LoadedModel",
    options: "SynthesisOptions",
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> "SynthesisResult":
    """Read the job's inputs, synthesize and write the outputs (only once everything has run)."""
    from .imageio import check_output_path, read_image, write_image
    from .synthesis import synthesize

    outputs = [p for p in (job.output, job.subtraction, job.uncertainty) if p is not None]
    for path in outputs:
        check_output_path(path)
    given = [p.resolve() for p in [*job.inputs.values(), job.mask] if p is not None]
    if any(p.resolve() in given for p in outputs):
        raise InputError("an output path is one of the inputs; choose another output name")
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise InputError("two outputs have the same path")
    images = {name: read_image(path) for name, path in job.inputs.items()}
    mask = read_image(job.mask, mask=True) if job.mask is not None else None
    result = synthesize(images, model, brain_mask=mask, options=options, progress=progress, cancel=cancel)
    write_image(result.synthetic, job.output, synthetic=True)
    if job.subtraction is not None:
        write_image(result.subtraction, job.subtraction, synthetic=True, description=SUBTRACTION_DESCRIPTION)
    if job.uncertainty is not None and result.uncertainty is not None:
        write_image(result.uncertainty, job.uncertainty, synthetic=True, description=UNCERTAINTY_DESCRIPTION)
    return result


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


#: Prefix of the machine-readable progress lines of ``--progress-lines``.
PROGRESS_PREFIX = "PROGRESS"


def run(args: argparse.Namespace) -> int:
    """``virtual-contrast synthesize``."""
    from tqdm import tqdm

    from .imageio import check_output_path

    options = options_from_args(args)
    inputs = {name: getattr(args, name) for name in MODALITIES if getattr(args, name) is not None}
    job = SynthesisJob(inputs=inputs, output=args.output, mask=args.mask, subtraction=args.subtraction, uncertainty=args.uncertainty)
    # Cheap checks first, so a typo is reported before a large model is loaded.
    for path in [*inputs.values(), args.mask]:
        if path is not None and not path.exists():
            raise InputError(f"file not found: {path}")
    for path in (job.output, job.subtraction, job.uncertainty):
        if path is not None:
            check_output_path(path)
    model = choose_model(args.model, list(inputs), options.device, print)
    bars: list[tqdm] = []

    def progress(fraction: float, message: str) -> None:
        # The bar appears with the first slab, so errors found before that stay one clean line.
        if args.quiet:
            return
        if args.progress_lines:
            print(f"{PROGRESS_PREFIX} {fraction:.4f} {message}", file=sys.stderr, flush=True)
            return
        if not bars:
            bars.append(tqdm(total=100, desc="synthesis", unit="%", file=sys.stderr, leave=False))
        bars[0].update(round(100 * fraction) - bars[0].n)

    try:
        result = run_job(job, model, options, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote synthetic CE-T1: {job.output}")
    if job.subtraction is not None:
        print(f"wrote subtraction map: {job.subtraction}")
    if job.uncertainty is not None:
        print(f"wrote uncertainty map: {job.uncertainty}")
    print(f"{result.device}, {result.precision}, {result.seconds:.1f} s. SYNTHETIC image: research use only.")
    return 0


def _find_input(folder: Path, case: str, suffix: str) -> Path | None:
    return next((folder / f"{case}-{suffix}{ext}" for ext in INPUT_EXTENSIONS if (folder / f"{case}-{suffix}{ext}").exists()), None)


def cases_from_folder(folder: Path) -> list[tuple[str, dict[str, Path], Path | None]]:
    """(case_id, inputs, mask) for every BraTS-style case folder under ``folder``."""
    if not folder.is_dir():
        raise InputError(f"input folder not found: {folder}")
    cases = []
    for case_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        found = {name: _find_input(case_dir, case_dir.name, suffix) for name, suffix in BRATS_SUFFIXES.items()}
        mask = found.pop("mask")
        cases.append((case_dir.name, {k: v for k, v in found.items() if v is not None}, mask))
    if not cases:
        raise InputError(f"{folder} holds no case folders (<case>/<case>-t1n.nii.gz ...)")
    return cases


def cases_from_manifest(manifest: Path) -> list[tuple[str, dict[str, Path], Path | None]]:
    """(case_id, inputs, mask) for every row of a CSV manifest; relative paths are from its folder."""
    if not manifest.is_file():
        raise InputError(f"manifest not found: {manifest}")
    try:
        with manifest.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"cannot read manifest {manifest.name}: {error}") from None
    if not rows or not {"case_id", "t1"} <= set(rows[0]):
        raise InputError(f"manifest {manifest.name} needs a header with at least case_id,t1 (columns: {','.join(MANIFEST_COLUMNS)})")
    cases = []
    for row in rows:
        paths = {k: manifest.parent / v.strip() for k, v in row.items() if k in MANIFEST_COLUMNS[1:] and v and v.strip()}
        mask = paths.pop("mask", None)
        cases.append(((row.get("case_id") or "").strip() or f"row{len(cases) + 1}", paths, mask))
    return cases


def run_batch(args: argparse.Namespace) -> int:
    """``virtual-contrast batch``: every case, errors reported per case, summary at the end."""
    from tqdm import tqdm

    options = options_from_args(args)
    cases = cases_from_folder(args.input_dir) if args.input_dir else cases_from_manifest(args.manifest)
    models: dict[str, "LoadedModel"] = {}
    summary: list[dict[str, str]] = []
    bar = tqdm(cases, desc="cases", unit="case", file=sys.stderr)
    for case_id, inputs, mask in bar:
        start = time.perf_counter()
        status, message, model_name = "ok", "", ""
        try:
            if "t1" not in inputs:
                raise InputError("no T1 (<case>-t1n) found")
            key = args.model or ""
            if args.model is None:
                from .registry import default_model_for

                key = default_model_for(list(inputs)).name
            if key not in models:
                models[key] = choose_model(key, list(inputs), options.device, tqdm.write)
            model_name = models[key].name
            out = args.out_dir / case_id
            job = SynthesisJob(
                inputs=inputs, mask=mask, output=out / f"{case_id}-t1c-synthetic.nii.gz",
                subtraction=out / f"{case_id}-subtraction.nii.gz",
                uncertainty=out / f"{case_id}-uncertainty.nii.gz" if options.tta else None,
            )
            result = run_job(job, models[key], options)
            message = "; ".join(result.notes)
        except VirtualContrastError as error:
            status, message = "failed", str(error)
            tqdm.write(f"{case_id}: error: {error}", file=sys.stderr)
        except Exception as error:  # one broken case must not stop the batch
            status, message = "failed", f"internal error {type(error).__name__}: {error}"
            tqdm.write(f"{case_id}: {message}", file=sys.stderr)
        summary.append({"case_id": case_id, "status": status, "model": model_name,
                        "seconds": f"{time.perf_counter() - start:.1f}", "message": message})
    bar.close()
    failed = [row for row in summary if row["status"] != "ok"]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with (args.out_dir / "batch_summary.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    print(f"{len(summary)} cases: {len(summary) - len(failed)} done, {len(failed)} failed; summary in {args.out_dir / 'batch_summary.csv'}")
    for row in failed:
        print(f"  failed {row['case_id']}: {row['message']}")
    return 1 if failed else 0


def run_models(args: argparse.Namespace) -> int:
    """``virtual-contrast models``: the bundled models, or one model card."""
    from .errors import CheckpointError
    from .registry import find_model, list_models, models_dir, read_card

    if args.card:
        entry = find_model(args.card)
        if entry is None:
            raise CheckpointError(f"no bundled model named {args.card!r}; run 'virtual-contrast models' for the list")
        print(read_card(entry) or f"{entry.name}: {entry.description} (no model card file)")
        return 0
    entries = list_models()
    if not entries:
        print(f"no bundled models installed (models folder: {models_dir() or 'not found'})")
        return 0
    print("| name | role | inputs -> output | size (MB) | CPU s/volume | GPU s/volume | description |")
    print("|---|---|---|---|---|---|---|")
    for e in entries:
        size = f"{e.size_bytes / 1e6:.1f}" if e.size_bytes else "?"
        cpu = f"{e.cpu_seconds_per_volume:.0f}" if e.cpu_seconds_per_volume else "?"
        gpu = f"{e.gpu_seconds_per_volume:.1f}" if e.gpu_seconds_per_volume else "?"
        print(f"| {e.name} | {e.role} | {'+'.join(e.inputs)} -> {e.output} | {size} | {cpu} | {gpu} | {e.description} |")
    print(INTENDED_USE)
    return 0
