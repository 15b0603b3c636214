"""``virtual-contrast synthesize | batch | models``: synthesis from files, in bulk, and the model list.

torch is imported only when a command runs, so ``virtual-contrast --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional

from . import INTENDED_USE, MODALITIES
from .errors import InputError, VirtualContrastError
from .fileutil import exit_on_sigterm, write_csv, write_file
from .options import SynthesisOptions
from .report import RunReport, check_report_path

if TYPE_CHECKING:
    import SimpleITK as sitk

    from .registry import LoadedModel
    from .synthesis import SynthesisResult

#: Columns of a ``batch`` manifest.
MANIFEST_COLUMNS = ("case_id", *MODALITIES, "mask")

SUBTRACTION_DESCRIPTION = "SYNTHETIC subtraction (CE-T1 minus T1) VirtualContrast - research only"
UNCERTAINTY_DESCRIPTION = "SYNTHETIC uncertainty (TTA std) VirtualContrast - research only"
PROBABILITY_DESCRIPTION = "SYNTHETIC enhancement probability (detector) VirtualContrast - research only"


@dataclass
class SynthesisJob:
    """The files of one synthesis: inputs by modality, optional mask, outputs."""

    inputs: dict[str, Path]
    output: Path
    mask: Path | None = None
    subtraction: Path | None = None
    uncertainty: Path | None = None
    probability: Path | None = None
    dicom_out: Path | None = None
    case_id: str = ""


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="bundled model name or checkpoint file (default: the bundled model trained on real scans "
                        "that uses the most of the given inputs; refused when there is none)")
    parser.add_argument("--phantom-data", action="store_true",
                        help="the inputs are physics phantoms (the demo's, Slicer's sample): the default may then be phantom-trained")
    SynthesisOptions.add_arguments(parser)
    parser.add_argument("--dicom-out", type=Path, metavar="DIR",
                        help="also write the synthetic CE-T1 and the subtraction map as DICOM series (labelled SYNTHETIC) into DIR"
                        " (batch: DIR/<case>/)")


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
    single.add_argument("--probability", type=Path, help="also write the probability that each voxel enhances, from the "
                        "model's enhancement detector (models with one; the subtraction map is gated at its fitted threshold)")
    single.add_argument("--quiet", action="store_true", help="no progress bar")
    single.add_argument("--progress-lines", action="store_true",
                        help="report progress as 'PROGRESS <fraction> <step>' lines on stderr (for front ends such as Slicer)")
    single.add_argument("--report", type=Path, metavar="RESULT.json",
                        help="write model, device, precision, notes, outputs and error as JSON, also when the run fails")
    _add_engine_options(single)
    single.set_defaults(func=run)

    batch = subparsers.add_parser(
        "batch", help="synthesize many cases (folder of BraTS-style cases or a CSV manifest)",
        description="Synthesize every case; a failing case is reported and the batch goes on. " + INTENDED_USE,
    )
    source = batch.add_mutually_exclusive_group(required=True)
    source.add_argument("--input-dir", type=Path, help="folder of case folders, e.g. <case>/<case>-t1n.nii.gz, -t2w, -t2f, -adc, -brainmask "
                        "(or another known layout: BraTS 2018/2021/2023, UCSF-PDGM)")
    source.add_argument("--manifest", type=Path, help="CSV with columns case_id,t1,t2,adc,flair,mask (paths relative to the CSV)")
    batch.add_argument("--out-dir", required=True, type=Path, help="outputs go to <out-dir>/<case>/")
    batch.add_argument("--redo", action="store_true",
                       help="synthesize every case again, also those whose outputs a previous run completed (skipped otherwise)")
    _add_engine_options(batch)
    batch.set_defaults(func=run_batch)

    models = subparsers.add_parser("models", help="list the bundled models or print a model card")
    models.add_argument("--card", metavar="NAME", help="print the model card of NAME")
    models.set_defaults(func=run_models)


def options_from_args(args: argparse.Namespace) -> SynthesisOptions:
    """Engine options from parsed command-line arguments (validated); an uncertainty output turns on TTA."""
    options = SynthesisOptions.from_args(args)
    options.tta = bool(options.tta or getattr(args, "uncertainty", None))
    return options


def choose_model(model: str | None, modalities: list[str], device: str, say: Callable[[str], None],
                 phantom_data: bool = False) -> "LoadedModel":
    """Load ``model``, or the automatic choice for ``modalities`` (announcing the choice; see ``registry.default_model_for``)."""
    from .registry import default_model_for, load_model

    if model is None:
        entry = default_model_for(modalities, phantom_data=phantom_data)
        say(f"model: {entry.name} (bundled; inputs {'+'.join(m.upper() for m in entry.inputs)}; chosen for the given inputs)")
        return load_model(entry.name, device=device)
    loaded = load_model(model, device=device)
    say(f"model: {loaded.name} (inputs {'+'.join(m.upper() for m in loaded.config.inputs)})")
    return loaded


def model_notes(model: "LoadedModel", modalities: list[str], phantom_data: bool) -> list[str]:
    """The inputs the run ignores and the phantom-only warning, printed on stderr; they go into the report's notes too."""
    from .registry import ignored_inputs_note, training_warning

    note, warning = ignored_inputs_note(model.entry, modalities), training_warning(model.entry, phantom_data)
    for prefix, text in (("note", note), ("warning", warning)):
        if text:
            print(f"{prefix}: {text}", file=sys.stderr)
    return [text for text in (note, warning) if text]


def read_job(job: SynthesisJob, tta: bool = False) -> tuple[dict[str, "sitk.Image"], Optional["sitk.Image"]]:
    """Check the job's output paths, then read and validate its inputs and check the memory the synthesis
    (with ``tta``) needs: everything that needs no model."""
    from .imageio import check_output_path, read_image
    from .memory import check_synthesis_memory

    outputs = [p for p in (job.output, job.subtraction, job.uncertainty, job.probability) if p is not None]
    for path in outputs:
        check_output_path(path)
    given = [p.resolve() for p in [*job.inputs.values(), job.mask] if p is not None]
    if any(p.resolve() in given for p in outputs):
        raise InputError("an output path is one of the inputs; choose another output name")
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise InputError("two outputs have the same path")
    images = {name: read_image(path) for name, path in job.inputs.items()}
    mask = read_image(job.mask, mask=True) if job.mask is not None else None
    if "t1" in images:
        check_synthesis_memory(images["t1"].GetSize(), len(images), tta)
    return images, mask


def run_job(
    job: SynthesisJob,
    model: "LoadedModel",
    options: "SynthesisOptions",
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    inputs: tuple[dict[str, "sitk.Image"], Optional["sitk.Image"]] | None = None,
    auxiliaries: "Mapping[str, LoadedModel] | None" = None,
) -> "SynthesisResult":
    """Synthesize (``auxiliaries``: see ``synthesize``) and write the outputs, all or none, once everything has run;
    ``inputs`` is :func:`read_job`'s result if already read."""
    from .imageio import write_images
    from .networks import has_detection
    from .synthesis import synthesize

    if job.probability is not None and model.detector is None and not has_detection(model.config):
        raise InputError(f"model {model.name} has no enhancement detector: it gives no probability map to write")
    images, mask = inputs if inputs is not None else read_job(job, options.tta)
    result = synthesize(images, model, brain_mask=mask, options=options, progress=progress, cancel=cancel, auxiliaries=auxiliaries)
    outputs = [(result.synthetic, job.output, None)]
    if job.subtraction is not None:
        outputs.append((result.subtraction, job.subtraction, SUBTRACTION_DESCRIPTION))
    if job.uncertainty is not None and result.uncertainty is not None:
        outputs.append((result.uncertainty, job.uncertainty, UNCERTAINTY_DESCRIPTION))
    if job.probability is not None:
        outputs.append((result.probability, job.probability, PROBABILITY_DESCRIPTION))
    write_images(outputs, synthetic=True)
    if job.dicom_out is not None:
        from .dicomio import identifiers_for, write_dicom_outputs

        identifiers, note = identifiers_for(job.inputs["t1"], job.case_id or job.inputs["t1"].name.split(".")[0])
        derivation = f"Predicted from pre-contrast {'+'.join(m.upper() for m in job.inputs)} by VirtualContrast model {model.name}; not acquired"
        write_dicom_outputs({"synthetic": result.synthetic, "subtraction": result.subtraction}, job.dicom_out, identifiers, derivation)
        result.notes.extend([note] if note else [])
    return result


#: Prefix of the machine-readable progress lines of ``--progress-lines``.
PROGRESS_PREFIX = "PROGRESS"


def run(args: argparse.Namespace) -> int:
    """``virtual-contrast synthesize``; with ``--report`` the outcome is also written as JSON, success or not
    (Ctrl-C and SIGTERM included)."""
    report = RunReport()
    if args.report is not None:
        check_report_path(args.report)
    try:
        with exit_on_sigterm():
            return _run(args, report)
    except SystemExit as exit_:
        report.error = "terminated (SIGTERM)" if exit_.code == 128 + signal.SIGTERM else f"exited with status {exit_.code}"
        raise
    except VirtualContrastError as error:
        report.error = str(error)
        raise
    except KeyboardInterrupt:
        report.error = "interrupted"
        raise
    except Exception as error:
        report.error = f"internal error {type(error).__name__}: {error}"
        raise
    finally:
        if args.report is not None:
            report.write(args.report)


def _run(args: argparse.Namespace, report: RunReport) -> int:
    """Synthesize one case, filling ``report`` as the run goes."""
    from tqdm import tqdm

    from .registry import resolve_device
    from .synthesis import load_auxiliaries, resolve_precision

    options = options_from_args(args)
    inputs = {name: getattr(args, name) for name in MODALITIES if getattr(args, name) is not None}
    job = SynthesisJob(inputs=inputs, output=args.output, mask=args.mask, subtraction=args.subtraction, uncertainty=args.uncertainty,
                       probability=args.probability, dicom_out=args.dicom_out)
    # Everything that needs no model first, so bad input is reported before a large model is loaded.
    resolve_precision(options.precision, resolve_device(options.device))
    if job.dicom_out is not None:
        from .dicomio import check_dicom_out

        check_dicom_out(job.dicom_out)
    loaded = read_job(job, options.tta)
    model = choose_model(args.model, list(inputs), options.device, print, args.phantom_data)
    report.model = model.name
    report.notes = model_notes(model, list(inputs), args.phantom_data)
    auxiliaries = load_auxiliaries(model, inputs, options.missing_policy)
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
        result = run_job(job, model, options, progress=progress, inputs=loaded, auxiliaries=auxiliaries)
    finally:
        for bar in bars:
            bar.close()
    written = {"synthetic": job.output, "subtraction": job.subtraction, "uncertainty": job.uncertainty, "probability": job.probability,
               "dicom": job.dicom_out}
    report.outputs = {kind: str(path) for kind, path in written.items() if path is not None}
    report.device, report.precision, report.seconds = result.device, result.precision, result.seconds
    report.notes += result.notes
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote synthetic CE-T1: {job.output}")
    if job.subtraction is not None:
        print(f"wrote subtraction map: {job.subtraction}")
    if job.uncertainty is not None:
        print(f"wrote uncertainty map: {job.uncertainty}")
    if job.probability is not None:
        print(f"wrote enhancement probability map: {job.probability}")
    if job.dicom_out is not None:
        print(f"wrote DICOM series (SYNTHETIC CE-T1 and subtraction map): {job.dicom_out}")
    print(f"{result.device}, {result.precision}, {result.seconds:.1f} s. SYNTHETIC image: research use only.")
    return 0


def cases_from_folder(folder: Path) -> list[tuple[str, dict[str, Path], Path | None]]:
    """(case_id, inputs, mask) for every case folder under ``folder``, in any layout of :mod:`VirtualContrastLib.cases`."""
    from .cases import case_folders, detect_layout, read_case_folder

    layout = detect_layout(folder, required=("t1",))
    cases = [read_case_folder(case_dir, layout) for case_dir in case_folders(folder)]
    return [(case.case_id, {m: path for m, path in case.images.items() if m in MODALITIES}, case.mask) for case in cases]


def cases_from_manifest(manifest: Path) -> list[tuple[str, dict[str, Path], Path | None]]:
    """(case_id, inputs, mask) for every row of a CSV manifest (:func:`VirtualContrastLib.cases.read_manifest`)."""
    from .cases import read_manifest

    return [(case.case_id, case.images, case.mask) for case in read_manifest(manifest, roles=MANIFEST_COLUMNS[1:])]


#: File in each case's output folder that records a completed case: model, options, inputs and outputs with their SHA-256.
COMPLETE_RECORD = "batch-complete.json"


def _digests(paths: list[Path]) -> dict[str, str]:
    """SHA-256 of every file of ``paths`` (files, or folders such as DICOM series, searched recursively)."""
    from .checkpoints import sha256_file

    files = [f for p in paths for f in (sorted(p.rglob("*")) if p.is_dir() else [p])]
    return {str(f): sha256_file(f) for f in files if f.is_file()}


def _model_digest(key: str) -> str | None:
    """SHA-256 of a bundled model (by name) or checkpoint file, without loading it; None if neither."""
    from .checkpoints import sha256_file
    from .registry import find_model

    entry = find_model(key)
    if entry is not None:
        return entry.sha256
    return sha256_file(key) if Path(key).is_file() else None


def _job_record(job: SynthesisJob, model_digest: str | None, options: SynthesisOptions) -> dict[str, object]:
    """What makes a case's outputs what they are: model, options (the device aside) and input files."""
    inputs = [*job.inputs.values(), *([job.mask] if job.mask is not None else [])]
    return {"model_sha256": model_digest, "options": {k: v for k, v in asdict(options).items() if k != "device"},
            "inputs": _digests(inputs)}


def _job_outputs(job: SynthesisJob) -> list[Path]:
    return [p for p in (job.output, job.subtraction, job.uncertainty, job.probability, job.dicom_out) if p is not None]


def _is_complete(job: SynthesisJob, record: dict[str, object]) -> bool:
    """Whether a previous run recorded this job, same model, options and inputs, and its outputs are unchanged."""
    path = job.output.parent / COMPLETE_RECORD
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    outputs = earlier.pop("outputs", None) if isinstance(earlier, dict) else None
    return earlier == json.loads(json.dumps(record)) and bool(outputs) and outputs == _digests(_job_outputs(job))


def _record_complete(job: SynthesisJob, record: dict[str, object]) -> None:
    """Record the job as complete, with the SHA-256 of every output, once they are all written."""
    text = json.dumps({**record, "outputs": _digests(_job_outputs(job))}, indent=2) + "\n"
    write_file(job.output.parent / COMPLETE_RECORD, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def run_batch(args: argparse.Namespace) -> int:
    """``virtual-contrast batch``: every case, errors reported per case, summary at the end; a case whose
    outputs a previous run completed (same model, options and inputs, outputs unchanged) is skipped unless ``--redo``."""
    from tqdm import tqdm

    from .registry import resolve_device
    from .synthesis import load_auxiliaries, resolve_precision

    options = options_from_args(args)
    if args.dicom_out is not None:
        from .dicomio import check_dicom_out

        check_dicom_out(args.dicom_out)
    cases = cases_from_folder(args.input_dir) if args.input_dir else cases_from_manifest(args.manifest)
    resolve_precision(options.precision, resolve_device(options.device))
    # Models are loaded once per batch, auxiliary ones too (by name), and shared by the cases.
    models: dict[str, "LoadedModel"] = {}
    auxiliary_models: dict[str, "LoadedModel"] = {}
    summary: list[dict[str, str]] = []
    bar = tqdm(cases, desc="cases", unit="case", file=sys.stderr)
    for case_id, inputs, mask in bar:
        start = time.perf_counter()
        status, message, model_name = "ok", "", ""
        try:
            if "t1" not in inputs:
                raise InputError("no T1 found")
            out = args.out_dir / case_id
            job = SynthesisJob(
                inputs=inputs, mask=mask, output=out / f"{case_id}-t1c-synthetic.nii.gz",
                subtraction=out / f"{case_id}-subtraction.nii.gz",
                uncertainty=out / f"{case_id}-uncertainty.nii.gz" if options.tta else None,
                dicom_out=args.dicom_out / case_id if args.dicom_out else None, case_id=case_id,
            )
            key = args.model or ""
            if args.model is None:
                from .registry import default_model_for

                key = default_model_for(list(inputs), phantom_data=args.phantom_data).name
            record = _job_record(job, _model_digest(key), options)
            if not args.redo and _is_complete(job, record):
                status, model_name, message = "skipped", key, "complete (outputs verified against the previous run's record)"
                tqdm.write(f"{case_id}: skipped, complete")
            else:
                loaded = read_job(job, options.tta)
                if key not in models:
                    models[key] = choose_model(key, list(inputs), options.device, tqdm.write)
                model_name = models[key].name
                notes = model_notes(models[key], list(inputs), args.phantom_data)
                auxiliaries = load_auxiliaries(models[key], inputs, options.missing_policy, auxiliary_models)
                result = run_job(job, models[key], options, inputs=loaded, auxiliaries=auxiliaries)
                _record_complete(job, record)
                message = "; ".join(notes + result.notes)
        except VirtualContrastError as error:
            status, message = "failed", str(error)
            tqdm.write(f"{case_id}: error: {error}", file=sys.stderr)
        except Exception as error:  # one broken case must not stop the batch
            status, message = "failed", f"internal error {type(error).__name__}: {error}"
            tqdm.write(f"{case_id}: {message}", file=sys.stderr)
        summary.append({"case_id": case_id, "status": status, "model": model_name,
                        "seconds": f"{time.perf_counter() - start:.1f}", "message": message})
    bar.close()
    failed = [row for row in summary if row["status"] == "failed"]
    skipped = [row for row in summary if row["status"] == "skipped"]
    try:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        write_csv(args.out_dir / "batch_summary.csv", summary)
    except OSError as error:
        raise InputError(f"cannot write {args.out_dir / 'batch_summary.csv'}: {error.strerror}") from None
    skipped_text = f"{len(skipped)} skipped (complete before; --redo synthesizes them again), " if skipped else ""
    print(f"{len(summary)} cases: {len(summary) - len(failed) - len(skipped)} done, {skipped_text}{len(failed)} failed; "
          f"summary in {args.out_dir / 'batch_summary.csv'}")
    for row in failed:
        print(f"  failed {row['case_id']}: {row['message']}")
    return 1 if failed else 0


#: Widest one-line summary in the ``models`` table (the full description is in ``--card``).
SUMMARY_WIDTH = 60


def one_line_summary(description: str, width: int = SUMMARY_WIDTH) -> str:
    """The first sentence of a model description, cut to ``width`` characters."""
    sentence = description.split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= width else sentence[: width - 1].rstrip() + "…"


def run_models(args: argparse.Namespace) -> int:
    """``virtual-contrast models``: a compact table of the bundled models, or one model card (``--card NAME``)."""
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
    rows = [("name", "inputs -> output", "trained on", "size", "CPU s/vol", "summary")]
    for e in entries:
        rows.append((e.name, f"{'+'.join(m.upper() for m in e.inputs)} -> {'CE-T1' if e.output == 't1c' else e.output.upper()}",
                     "phantoms only" if e.training_data == "phantom" else e.training_data,
                     f"{e.size_bytes / 1e6:.1f} MB" if e.size_bytes else "?",
                     f"{e.cpu_seconds_per_volume:.0f}" if e.cpu_seconds_per_volume else "?", one_line_summary(e.description)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    print("Details, data, metrics and limits: virtual-contrast models --card NAME")
    print(INTENDED_USE)
    return 0
