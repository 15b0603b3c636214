"""Evaluation: checkpoints over a prepared test set, the paper's tables and a Fig. 4-style montage.

Every prediction goes through the engine (:func:`VirtualContrastLib.synthesis.synthesize`), exactly
as a user would run it, and is scored with VC-Eval-1 (:mod:`VirtualContrastLib.metrics`): brain,
whole tumour (labels > 0) and enhancing tumour (label 3) where labels exist. The identity floor
(the pre-contrast T1 taken as the prediction) is scored on the same cases and shown beside the
models, and so is the per-case linear floor (a least-squares fit of the CE-T1 on each model's inputs, on
the case itself inside the brain). Enhancement is scored per lesion (:mod:`VirtualContrastLib.enhancement`):
each prediction's subtraction map against the true CE-T1's, region "enhancement". Tables give mean ± std
over cases and a paired t-test of each model against the reference model (the first checkpoint unless
``reference`` names another).

Table kinds (``--table``): ``I`` (brain MAE/PSNR/SSIM), ``II`` (brain and tumour), ``III`` (input
sets), ``V`` (architecture ablations), ``E`` (enhancement: lesion sensitivity, false blobs, subtraction
map in enhancing tumour), ``fig7`` (local-loss weights λ1/λ3, read from each
checkpoint's schedule), ``fig9`` (threshold δ, read from each checkpoint's loss settings).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.errors import InputError
from VirtualContrastLib.fileutil import atomic_write, write_csv

from .cache import array_spacing, true_subtraction
from .prepare import image_from_array, load_case, load_index

IDENTITY = "identity (T1)"
LINEAR = "linear"
BRAIN, TUMOUR, ENHANCING, ENHANCEMENT = "brain", "whole_tumour", "enhancing_tumour", "enhancement"

#: Columns (region, metric) of each table kind; "ssim_2d" is the paper's per-slice SSIM.
TABLES: dict[str, list[tuple[str, str]]] = {
    "I": [(BRAIN, "mae"), (BRAIN, "psnr"), (BRAIN, "ssim_2d"), (BRAIN, "ssim_3d")],
    "II": [(BRAIN, "psnr"), (TUMOUR, "psnr"), (ENHANCING, "psnr"), (BRAIN, "ssim_2d")],
    "III": [(BRAIN, "psnr"), (BRAIN, "ssim_2d"), (TUMOUR, "psnr"), (ENHANCING, "psnr")],
    "V": [(BRAIN, "psnr"), (TUMOUR, "psnr"), (ENHANCING, "psnr")],
    "E": [(BRAIN, "psnr"), (ENHANCING, "psnr"), (BRAIN, "sharpness"), (ENHANCEMENT, "subtraction_psnr"), (ENHANCEMENT, "subtraction_ssim_3d"),
          (ENHANCEMENT, "lesion_sensitivity"), (ENHANCEMENT, "pooled_lesion_sensitivity"), (ENHANCEMENT, "false_blobs"),
          (ENHANCEMENT, "false_blob_ml"), (ENHANCEMENT, "blobs"), (ENHANCEMENT, "true_blobs"), (ENHANCEMENT, "lesion_f1"),
          (ENHANCEMENT, "auc_brain"), (ENHANCEMENT, "auc_tumour"), (ENHANCEMENT, "far_false_colour"),
          (ENHANCEMENT, "tumour_dice")],
    "fig7": [(BRAIN, "psnr"), (TUMOUR, "psnr"), (ENHANCING, "psnr")],
    "fig9": [(BRAIN, "psnr"), (TUMOUR, "psnr"), (ENHANCING, "psnr")],
}


def regions_of(case: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tumour regions of a cached case (whole and enhancing tumour) when it has labels."""
    from VirtualContrastLib.metrics import brats_regions

    return brats_regions(case["labels"]) if "labels" in case else {}


def score(prediction: np.ndarray, case: dict[str, np.ndarray], target: str = "t1c",
          true_map: np.ndarray | None = None, predicted_map: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """VC-Eval-1 metrics ``{region: {metric: value}}`` of one prediction (z, y, x) on a cached case.

    A CE-T1 prediction on a labelled case also gets the enhancement metrics (region "enhancement") of
    ``predicted_map``, the enhancement map the product shows (the synthesis result's; computed from the
    prediction when not given, as for the floors); ``true_map`` (:func:`true_subtraction`, computed when not
    given) saves recomputing it per model.
    """
    from VirtualContrastLib import enhancement, metrics

    brain = case["mask"] > 0
    result = metrics.evaluate_case(prediction, case[f"raw_{target}"], brain, regions=regions_of(case))
    if target == "t1c" and "labels" in case:
        true_map = true_subtraction(case) if true_map is None else true_map
        predicted_map = enhancement.subtraction_map(prediction, case["raw_t1"], brain) if predicted_map is None else predicted_map
        result[ENHANCEMENT] = enhancement.enhancement_metrics(predicted_map, true_map, case["labels"], brain, array_spacing(case))
    return {region: {metric: float(value) for metric, value in values.items() if metric != "voxels"}
            for region, values in result.items() if values.get("voxels", 1) > 0}


#: Input perturbations of ``evaluate --perturb`` (robustness to other scanners and pipelines): a smooth random
#: multiplicative bias field on every input (up to about ±35 %, one field per input), or T2/ADC/FLAIR acquired as
#: 5 mm axial slices (averaged over 5-slice blocks and interpolated back onto the 1 mm grid, as the engine
#: resamples a thick series onto the T1's). The target and the T1 of the true map are never perturbed.
PERTURBATIONS = ("bias", "thick")

#: Slices per thick slice of the "thick" perturbation (5 mm on BraTS's 1 mm grid).
THICK_SLICES = 5


def perturb_inputs(case: dict[str, np.ndarray], inputs: Sequence[str], kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A copy of ``case`` whose model inputs (``raw_<input>``) carry perturbation ``kind`` (:data:`PERTURBATIONS`)."""
    from scipy import ndimage

    if kind not in PERTURBATIONS:
        raise InputError(f"unknown perturbation {kind!r}; known: {', '.join(PERTURBATIONS)}")
    rng = np.random.default_rng(seed)
    out = dict(case)
    for modality in inputs:
        image = case[f"raw_{modality}"].astype(np.float32)
        if kind == "bias":
            # A 4x4x4 grid of random log-gains, smoothly interpolated over the volume: a coil-like bias field.
            coarse = rng.uniform(-0.3, 0.3, (4, 4, 4))
            field = ndimage.zoom(coarse, [n / 4 for n in image.shape], order=3, mode="nearest")[tuple(slice(0, n) for n in image.shape)]
            out[f"raw_{modality}"] = (image * np.exp(field)).astype(np.float32)
        elif modality != "t1":
            depth = image.shape[0]
            blocks = -(-depth // THICK_SLICES)
            padded = np.concatenate([image, np.repeat(image[-1:], blocks * THICK_SLICES - depth, axis=0)])
            thick = padded.reshape(blocks, THICK_SLICES, *image.shape[1:]).mean(axis=1)
            centres = (np.arange(depth) - (THICK_SLICES - 1) / 2) / THICK_SLICES
            out[f"raw_{modality}"] = ndimage.map_coordinates(
                thick, np.meshgrid(np.clip(centres, 0, blocks - 1), *(np.arange(n) for n in image.shape[1:]), indexing="ij"),
                order=1).astype(np.float32)
    return out


def linear_label(inputs: Sequence[str]) -> str:
    """Row label of the per-case linear floor on ``inputs``."""
    return f"{LINEAR} ({'+'.join(m.upper() for m in inputs)})"


def is_floor(name: str) -> bool:
    """True for the rows of the floors (identity, linear and detection), which are not models."""
    from VirtualContrastLib.detection_floor import DETECTION_FLOOR

    return name in (IDENTITY, DETECTION_FLOOR) or name.startswith(f"{LINEAR} (")


def linear_prediction(case: dict[str, np.ndarray], inputs: Sequence[str]) -> np.ndarray:
    """The per-case linear floor: the CE-T1 fitted on ``inputs`` inside the brain of the case itself."""
    from VirtualContrastLib.metrics import linear_floor

    missing = [m for m in inputs if f"raw_{m}" not in case]
    if missing:
        raise InputError(f"case {case.get('case_id', '?')} lacks {', '.join(missing)} for the linear floor")
    return linear_floor(case["raw_t1c"], [case[f"raw_{m}"] for m in inputs], case["mask"] > 0)


def training_case_ids(cache_dir: str | Path, labelled: bool) -> list[str]:
    """The cases of a prepared cache that may be fitted on: all but those its index marks as another split than ``train``."""
    entries = load_index(cache_dir)["prepared"]
    cases = [e["case"] for e in entries if e.get("split", "train") == "train" and (e.get("labels", True) or not labelled)]
    if not cases:
        raise InputError(f"{cache_dir} holds no {'labelled ' if labelled else ''}training cases")
    return cases


def fit_threshold(cache_dir: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Fit the enhancement threshold on the TRUE subtraction maps of a prepared training cache; write it as JSON.

    Every case of the cache is used, except those its index marks as belonging to another split than
    ``train`` (a threshold fixed on validation cases would flatter them).
    """
    from VirtualContrastLib import enhancement

    cases = training_case_ids(cache_dir, labelled=True)
    histograms = []
    for case_id in cases:
        case = load_case(cache_dir, case_id, ("raw_t1", "raw_t1c", "mask", "labels", "spacing"))
        histograms.append(enhancement.threshold_histograms(true_subtraction(case), case["labels"], case["mask"] > 0, array_spacing(case)))
    try:
        threshold, youden = enhancement.youden_threshold(histograms)
    except ValueError as error:
        raise InputError(f"{cache_dir}: {error}") from None
    record = {"threshold": round(threshold, 3), "youden_j": round(youden, 4), "cache": str(cache_dir), "cases": cases,
              "rule": "Youden's J on the true subtraction maps: enhancing-label voxels vs brain farther than "
                      f"{enhancement.TUMOUR_MARGIN_MM:g} mm from the tumour, each case weighing the same"}
    with atomic_write(out_path, ".json") as tmp:
        tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record


def synthesize_case(model: Any, case: dict[str, np.ndarray], device: str = "auto", tta: bool = False,
                    overlap: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The engine's synthetic CE-T1 and enhancement map for a cached case (slab ``overlap``: the engine's default),
    as arrays on the case grid."""
    result = synthesis_of_case(model, case, device, tta, overlap)
    return sitk.GetArrayFromImage(result.synthetic), sitk.GetArrayFromImage(result.subtraction)


def synthesis_of_case(model: Any, case: dict[str, np.ndarray], device: str = "auto", tta: bool = False,
                      overlap: float | None = None) -> Any:
    """The engine's :class:`~VirtualContrastLib.synthesis.SynthesisResult` for a cached case, as a user would run it."""
    from VirtualContrastLib.synthesis import SynthesisOptions, synthesize

    grid = {key: case[key] for key in ("spacing", "origin", "direction")}
    missing = [m for m in model.config.inputs if f"raw_{m}" not in case]
    if missing:
        raise InputError(f"case {case.get('case_id', '?')} lacks {', '.join(missing)} needed by model {model.name}")
    images = {m: image_from_array(case[f"raw_{m}"], grid) for m in model.config.inputs}
    mask = image_from_array(case["mask"], grid)
    options = SynthesisOptions(device=str(device), tta=tta, **({} if overlap is None else {"overlap": overlap}))
    return synthesize(images, model, brain_mask=mask, options=options)


def evaluate_network(network: Any, config: ModelConfig, cache_dir: str | Path, case_ids: Sequence[str],
                     device: Any = "cpu", options: dict[str, Any] | None = None) -> list[dict[str, dict[str, float]]]:
    """Score a live network (e.g. during training) on cached cases through the engine; the brain region also
    carries the identity floor's PSNR (``identity_psnr``), which gated selection rules compare against."""
    from VirtualContrastLib.metrics import percentile_normalize, psnr
    from VirtualContrastLib.registry import LoadedModel

    was_training = network.training
    network.eval()
    model = LoadedModel(name="validation", config=config, network=network, sha256="", path=Path(cache_dir))
    scores = []
    try:
        for case in (load_case(cache_dir, case_id) for case_id in case_ids):
            synthetic, shown = synthesize_case(model, case, str(device), bool((options or {}).get("tta")))
            result = score(synthetic, case, config.target, predicted_map=shown)
            brain = case["mask"] > 0
            result[BRAIN]["identity_psnr"] = psnr(percentile_normalize(case["raw_t1"], brain),
                                                  percentile_normalize(case[f"raw_{config.target}"], brain), brain)
            scores.append(result)
        return scores
    finally:
        network.train(was_training)


def model_label(checkpoint: Any) -> str:
    """A short label for a checkpoint: its run name, else its file name."""
    return str(checkpoint.training.get("run") or Path(checkpoint.path).stem)


def sweep_value(training: dict[str, Any], table: str) -> str:
    """The swept setting of a run for Fig. 7 (λ1, λ3 of the last stage) or Fig. 9 (δ)."""
    config = training.get("config", {})
    if table == "fig7":
        weights = (training.get("schedule") or config.get("schedule") or [{}])[-1].get("weights", [None, None, None])
        return f"({weights[0]:g}, {weights[2]:g})"
    if table == "fig9":
        return f"{config.get('loss', {}).get('delta', 0.1):g}"
    return ""


def evaluate_checkpoints(checkpoints: Sequence[str | Path], cache_dir: str | Path, out_dir: str | Path, table: str = "I",
                         labels: Sequence[str] | None = None, reference: str | None = None, device: str = "auto",
                         max_cases: int | None = None, montage: bool = True, tta: bool = False,
                         overlap: float | None = None, detection_floor: str | Path | None = None,
                         perturb: str | None = None) -> dict[str, Any]:
    """Run checkpoints over a prepared test set and write the table (Markdown, CSV), per-case CSV and montage.

    With ``detection_floor`` (a prepared training cache with labels) the detection floor
    (:mod:`VirtualContrastLib.detection_floor`) is fitted on its training cases on the first model's inputs and
    scored beside the models: its map is the classifier's, its image the pre-contrast T1 (it synthesizes none).
    With ``perturb`` (:data:`PERTURBATIONS`) the models and the detection floor see perturbed inputs, scored
    against the unperturbed truth.
    """
    from VirtualContrastLib.detection_floor import DETECTION_FLOOR, fit_detection_floor, floor_map
    from VirtualContrastLib.registry import load_model

    if table not in TABLES:
        raise InputError(f"unknown table {table!r}; known: {', '.join(TABLES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = [load_model(str(path), device=device) for path in checkpoints]
    names = list(labels) if labels else [model_label(m) for m in models]
    if len(names) != len(models) or len(set(names)) != len(names):
        raise InputError(f"give one distinct label per checkpoint: {len(models)} checkpoint(s), labels {names} "
                         "(--labels is comma-separated, so a label cannot contain a comma)")
    for model, name in zip(models, names):
        model.name = name
    case_ids = [entry["case"] for entry in load_index(cache_dir)["prepared"]][: max_cases or None]
    if not case_ids:
        raise InputError(f"{cache_dir} holds no prepared cases")
    # One linear floor per distinct input set of the CE-T1 models, in model order.
    floors = {linear_label(m.config.inputs): list(m.config.inputs) for m in models if m.config.target == "t1c"}
    classifier = None
    if detection_floor is not None:
        training = (load_case(detection_floor, case_id) for case_id in training_case_ids(detection_floor, labelled=True))
        classifier = fit_detection_floor(training, models[0].config.inputs)
        floors[DETECTION_FLOOR] = list(models[0].config.inputs)
    results: dict[str, list[dict[str, dict[str, float]]]] = {IDENTITY: [], **{f: [] for f in floors}, **{name: [] for name in names}}
    first_case, first_predictions = None, {}
    for case_id in case_ids:
        case = load_case(cache_dir, case_id)
        seen = case if perturb is None else perturb_inputs(case, sorted({m for model in models for m in model.config.inputs}),
                                                           perturb, seed=len(results[IDENTITY]))
        true_map = true_subtraction(case) if "labels" in case else None
        results[IDENTITY].append(score(case["raw_t1"], case, true_map=true_map))
        for floor, inputs in floors.items():
            if floor == DETECTION_FLOOR:
                results[floor].append(score(case["raw_t1"], case, true_map=true_map, predicted_map=floor_map(classifier, seen, inputs)))
            else:
                results[floor].append(score(linear_prediction(case, inputs), case, true_map=true_map))
        for model, name in zip(models, names):
            prediction, shown = synthesize_case(model, seen, device, tta, overlap)
            results[name].append(score(prediction, case, model.config.target, true_map, shown))
            if first_case is None:
                first_predictions[name] = prediction
        if first_case is None:
            first_case = case
    reference = reference or names[0]
    if reference not in names:
        raise InputError(f"reference model {reference!r} is not among {names}")
    sweep = {name: sweep_value(model.training, table) for model, name in zip(models, names)}
    rows = table_rows(results, TABLES[table], reference, sweep)
    settings = (f", slab overlap {overlap:.2f}" if overlap is not None else "") + (f", inputs perturbed: {perturb}" if perturb else "")
    write_table(rows, out_dir / f"table_{table}",
                title=f"Table {table}: {len(case_ids)} cases of {Path(cache_dir).name}, reference {reference}{settings}")
    write_per_case(results, case_ids, out_dir / f"per_case_{table}.csv")
    if table in ("fig7", "fig9"):
        plot_sweep(rows, out_dir / f"{table}.png", xlabel="(λ1, λ3)" if table == "fig7" else "δ")
    if montage:
        write_montage(first_case, first_predictions, models[0].config.inputs, out_dir / "montage.png")
    return {"rows": rows, "cases": case_ids, "out_dir": str(out_dir)}


def table_rows(results: dict[str, list[dict[str, dict[str, float]]]], columns: list[tuple[str, str]], reference: str,
               sweep: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per model (identity first): mean, std and paired-t-test p against ``reference`` per column."""
    from VirtualContrastLib.metrics import paired_ttest, summarize

    rows = []
    for name, per_case in results.items():
        row: dict[str, Any] = {"model": name, "setting": (sweep or {}).get(name, "")}
        for region, metric in columns:
            key = f"{region}_{metric}"
            if metric == "pooled_lesion_sensitivity":
                # Detected lesions over all lesions of all cases: one number, no spread, no test.
                counts = [sum(c.get(region, {}).get(k, 0) for c in per_case) for k in ("lesions_detected", "lesions")]
                row[f"{key}_mean"], row[f"{key}_std"], row[f"{key}_p"] = counts[0] / counts[1] if counts[1] else np.nan, np.nan, np.nan
                continue
            values = [c.get(region, {}).get(metric, np.nan) for c in per_case]
            ref = [c.get(region, {}).get(metric, np.nan) for c in results[reference]]
            row[f"{key}_mean"], row[f"{key}_std"] = summarize(values)
            row[f"{key}_p"] = float(paired_ttest(values, ref)[1]) if name != reference else float("nan")
        rows.append(row)
    return rows


def write_table(rows: list[dict[str, Any]], stem: Path, title: str) -> None:
    """Write ``stem.csv`` (all numbers) and ``stem.md`` (mean ± std, p vs reference)."""
    write_csv(stem.with_suffix(".csv"), rows)
    columns = [k[: -len("_mean")] for k in rows[0] if k.endswith("_mean")]
    with_setting = any(row["setting"] for row in rows)
    header = ["Model", *(["Setting"] if with_setting else []), *(c.replace("_", " ") for c in columns)]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["model"], *([row["setting"]] if with_setting else [])]
        for column in columns:
            mean, std, p = row[f"{column}_mean"], row[f"{column}_std"], row[f"{column}_p"]
            digits = 3 if column.endswith(("mae", "ssim")) else 2
            cell = "n/a" if np.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}" if not np.isnan(std) else f"{mean:.{digits}f}"
            if not np.isnan(p):
                cell += f" (p={p:.2g})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Mean ± std over cases (VC-Eval-1); p: paired t-test against the reference model. "
              "'identity (T1)' is the floor: the normalized pre-contrast T1 taken as the prediction; 'linear (…)' is the "
              "per-case linear floor: a least-squares fit of the CE-T1 on those inputs inside the brain of the case itself; "
              "the detection floor (where shown) is a voxel classifier on multi-scale intensity features fitted on the "
              "training cases, scored on its map (its image is the T1). Sharpness: mean gradient magnitude in the brain, "
              "prediction ÷ true CE-T1."]
    if any(column.startswith(ENHANCEMENT) for column in columns):
        from VirtualContrastLib.enhancement import DEFINITION

        lines += ["", f"Enhancement (VirtualContrastLib.enhancement): {DEFINITION}"]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_per_case(results: dict[str, list[dict[str, dict[str, float]]]], case_ids: Sequence[str], path: Path) -> None:
    """Every metric of every case and model, one row per (model, case)."""
    rows = []
    for name, per_case in results.items():
        for case_id, values in zip(case_ids, per_case):
            rows.append({"model": name, "case": case_id, **{f"{r}_{m}": v for r, ms in values.items() for m, v in ms.items()}})
    write_csv(path, rows)


def plot_sweep(rows: list[dict[str, Any]], path: Path, xlabel: str) -> None:
    """Grouped bars of brain / tumour PSNR per swept setting (Fig. 7 / Fig. 9 style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [row for row in rows if not is_floor(row["model"])]
    series = [key[: -len("_mean")] for key in rows[0] if key.endswith("_mean")]
    fig, ax = plt.subplots(figsize=(1.6 * len(models) + 2, 3.5))
    width = 0.8 / len(series)
    for offset, key in enumerate(series):
        ax.bar(np.arange(len(models)) + offset * width, [row[f"{key}_mean"] for row in models], width,
               yerr=[0 if np.isnan(row[f"{key}_std"]) else row[f"{key}_std"] for row in models], label=key.replace("_", " "))
    ax.set_xticks(np.arange(len(models)) + width * (len(series) - 1) / 2)
    ax.set_xticklabels([row["setting"] or row["model"] for row in models])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("PSNR (dB)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_montage(case: dict[str, np.ndarray], predictions: dict[str, np.ndarray], inputs: Sequence[str], path: Path) -> None:
    """Fig. 4-style row on one axial slice: inputs, ground truth, each model, |last model − ground truth|, the true and
    the last model's subtraction maps side by side, and both again as Slicer's overlay over their CE-T1."""
    from VirtualContrastLib.enhancement import subtraction_map
    from VirtualContrastLib.metrics import percentile_normalize
    from VirtualContrastLib.montage import Panel
    from VirtualContrastLib.montage import write_montage as write_panels

    brain = case["mask"] > 0
    enhancing = regions_of(case).get(ENHANCING, brain)
    counts = enhancing.reshape(enhancing.shape[0], -1).sum(axis=1)
    z = int(np.argmax(counts)) if counts.any() else brain.shape[0] // 2
    show = lambda array: percentile_normalize(array, brain)[z]  # noqa: E731
    # Cached arrays are LPS (rows run anterior -> posterior): anterior is already up.
    panels = [Panel(m.upper(), show(case[f"raw_{m}"])) for m in inputs if f"raw_{m}" in case]
    truth = show(case["raw_t1c"])
    panels.append(Panel("ground truth", truth))
    panels += [Panel(name, show(pred)) for name, pred in predictions.items()]
    last = list(predictions)[-1]
    panels.append(Panel(f"|{last} − GT|", np.abs(show(predictions[last]) - truth)))
    maps = {"true": true_subtraction(case)[z], last: subtraction_map(predictions[last], case["raw_t1"], brain)[z]}
    panels += [Panel(f"enhancement, {name}", value, kind="map", brain=brain[z]) for name, value in maps.items()]
    # The maps once more as Slicer's overlay draws them (only what lies above the threshold is coloured).
    panels += [Panel(f"{name}, as Slicer shows", grey, brain=brain[z], overlay=maps[name])
               for name, grey in (("true", truth), (last, show(predictions[last])))]
    write_panels([panels], path, panel_size=(2.2, 2.3), title=(
        f"SYNTHETIC images (research use only): case {case.get('case_id', '')}, slice {z}; "
        "enhancement maps: white = none, red = enhancing; overlays: map above the threshold, dark red to yellow"))
