"""Train the enhancement detector (:mod:`VirtualContrastLib.networks.detector`) on labelled prepared cases.

``virtual-contrast-train train-detector --data TRAIN_CACHE --val VAL_CACHE --out RUN --steps N``:

- Target: the enhancing-tumour label alone (the earlier target, label ∪ true map above T outside the
  tumour, covered 11-12 % of the brain and taught a head to fire broadly). ``--tumour-weight W`` weighs the
  BCE term of the rest of the tumour (necrosis, oedema: labels 1 and 2) W times: telling the enhancing rim
  from the rest of the lesion is where detectors fail (voxel AUC ET vs rest 0.65). ``--classes 4`` learns
  every part of the tumour instead (softmax over background, necrosis, oedema, enhancing; cross-entropy + mean
  soft Dice of the parts, :func:`model_training.losses.parts_loss`), so that the rim is told from the rest by
  a class of its own; the detector's probability is then the softmax's enhancing channel. ``--init RUN`` starts
  from another detector run's selected weights (fine-tuning; same inputs and architecture).
- Each step: ``batch`` cubes of the detector's patch, half centred on an enhancing voxel, half on a
  random brain voxel; random flips on every axis; MONAI's bias field, gamma, noise and blur (all three
  axes, the depth axis up to 2 voxels: thick slices) per input channel (``--no-augmentation``: flips only,
  the ablation). Loss: BCE + soft Dice over the brain (:func:`model_training.losses.detection_loss`).
  AdamW, polynomial learning-rate decay over ``steps``.
- Every ``every`` steps: ``RUN/state.pt`` (network, optimizer, step; ``--resume`` goes on from it) and a
  validation on the val cases: the probability map scored like a model's map (p − 0.5 + T, so p > 0.5
  counts as enhancing): lesion F1, voxel AUCs. The rule, fixed before training: the checkpoint with
  the highest mean of lesion F1 and AUC (enhancing tumour vs brain > 5 mm) wins, and one that finds no
  lesion never does. The winner is ``RUN/best.pt`` (detector weights and its record); ``RUN/log.jsonl``
  has every validation.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from VirtualContrastLib.config import DETECTOR_CLASSES
from VirtualContrastLib.enhancement import ENHANCEMENT_THRESHOLD, enhancement_metrics
from VirtualContrastLib.errors import InputError
from VirtualContrastLib.fileutil import atomic_write
from VirtualContrastLib.metrics import ENHANCING_LABEL
from VirtualContrastLib.networks.detector import build_detector, detect_volume, footprint_box, output_classes, patch_size

from .cache import array_spacing, load_case, load_index, true_subtraction
from .sampling import robust_augment

#: What a detector run records in ``RUN/best.pt`` and ``RUN/state.pt`` (read with weights_only=True).
STATE_NAME, BEST_NAME, LOG_NAME = "state.pt", "best.pt", "log.jsonl"

#: Fraction of the cubes centred on an enhancing voxel.
ENHANCING_SHARE = 0.5


def load_training_case(cache_dir: str | Path, case_id: str, inputs: Sequence[str]) -> dict[str, Any]:
    """A labelled case cropped to its brain: inputs (C, D, H, W), brain, enhancing target."""
    case = load_case(cache_dir, case_id)
    if "labels" not in case:
        raise InputError(f"case {case_id} has no tumour labels, which the detector needs")
    missing = [m for m in inputs if f"norm_{m}" not in case]
    if missing:
        raise InputError(f"case {case_id} lacks {', '.join(missing)}")
    box = footprint_box(case["mask"] > 0)
    if box is None:
        raise InputError(f"case {case_id} has an empty brain mask")
    brain = case["mask"][box] > 0
    labels = case["labels"][box]
    return {"case_id": case_id,
            "inputs": np.stack([np.where(brain, case[f"norm_{m}"][box], 0.0) for m in inputs]).astype(np.float32),
            "brain": brain, "parts": np.where(brain, labels, 0).astype(np.uint8)}


def sample_cube(case: dict[str, Any], patch: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training cube (inputs, brain, tumour parts: 0 background, 1 necrosis, 2 oedema, 3 enhancing), zero-padded
    where it leaves the case's box."""
    enhancing = case["parts"] == ENHANCING_LABEL
    pool = enhancing if rng.random() < ENHANCING_SHARE and enhancing.any() else case["brain"]
    centre = np.argwhere(pool)[rng.integers(int(np.count_nonzero(pool)))]
    shape = case["brain"].shape
    out_in = np.zeros((case["inputs"].shape[0], *patch), np.float32)
    out_brain = np.zeros(tuple(patch), bool)
    out_parts = np.zeros(tuple(patch), np.uint8)
    src, dst = [], []
    for c, size, p in zip(centre, shape, patch):
        start = int(c) - p // 2 + int(rng.integers(-p // 4, p // 4 + 1))
        lo, hi = max(start, 0), min(start + p, size)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out_in[(slice(None), *dst)] = case["inputs"][(slice(None), *src)]
    out_brain[tuple(dst)] = case["brain"][tuple(src)]
    out_parts[tuple(dst)] = case["parts"][tuple(src)]
    for axis in range(3):
        if rng.random() < 0.5:
            out_in, out_brain, out_parts = np.flip(out_in, axis + 1), np.flip(out_brain, axis), np.flip(out_parts, axis)
    return tuple(np.ascontiguousarray(a) for a in (out_in, out_brain, out_parts))  # type: ignore[return-value]


def augment(inputs: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`model_training.sampling.robust_augment` on a cube, blurred along the depth axis too (up to 2 voxels: thick slices)."""
    return robust_augment(inputs, brain, rng, depth_sigma=(0.25, 2.0), plane_sigma=(0.25, 1.0))


def validate(network: Any, arch: dict[str, Any], cache_dir: str | Path, case_ids: Sequence[str], inputs: Sequence[str],
             device: Any) -> dict[str, float]:
    """Mean lesion F1, lesions found, false blobs and voxel AUCs of the detector's map (p − 0.5 + T) on labelled cases."""
    rows = []
    for case_id in case_ids:
        case = load_case(cache_dir, case_id)
        brain = case["mask"] > 0
        volume = np.stack([np.where(brain, case[f"norm_{m}"], 0.0) for m in inputs]).astype(np.float32)
        probability = detect_volume(network, volume, arch, device, None)
        shown = np.where(brain, probability - 0.5 + ENHANCEMENT_THRESHOLD, 0.0)
        rows.append(enhancement_metrics(shown, true_subtraction(case), case["labels"], brain, array_spacing(case)))
    keys = ("lesion_f1", "lesion_sensitivity", "false_blobs", "auc_brain", "auc_tumour", "lesions_detected", "lesions")
    record = {key: float(np.nanmean([r[key] for r in rows])) for key in keys}
    record["lesions_detected"] = float(sum(r["lesions_detected"] for r in rows))
    record["lesions"] = float(sum(r["lesions"] for r in rows))
    record["auc_brain_min"] = float(np.nanmin([r["auc_brain"] for r in rows]))
    return record


def clinical_score(record: dict[str, float]) -> float:
    """The selection rule's score: mean of lesion F1 and AUC vs brain; −inf when no lesion was found."""
    if record["lesions_detected"] < 1:
        return -math.inf
    return (record["lesion_f1"] + record["auc_brain"]) / 2


def train_detector(train_cache: str | Path, val_cache: str | Path, out: str | Path, steps: int, inputs: Sequence[str],
                   every: int = 250, batch: int = 2, lr: float = 1e-3, arch: dict[str, Any] | None = None, seed: int = 0,
                   resume: bool = False, max_val_cases: int | None = None, augmentation: bool = True,
                   tumour_weight: float = 1.0, init: str | Path | None = None, classes: int = 1,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (or go on training) a detector run; return the best validation record."""
    import torch

    from .losses import detection_loss, parts_loss

    progress = progress or (lambda text: None)
    out = Path(out)
    state_path = out / STATE_NAME
    if state_path.exists() and not resume:
        raise InputError(f"{out} already holds a detector run; pass --resume to go on with it")
    out.mkdir(parents=True, exist_ok=True)
    arch = dict(arch or {})
    train_ids = [e["case"] for e in load_index(train_cache)["prepared"]]
    val_ids = [e["case"] for e in load_index(val_cache)["prepared"]][:max_val_cases]
    if tumour_weight <= 0:
        raise InputError(f"--tumour-weight must be positive, got {tumour_weight:g}")
    if classes not in DETECTOR_CLASSES:
        raise InputError(f"--classes must be one of {', '.join(map(str, DETECTOR_CLASSES))}, got {classes}")
    state = torch.load(state_path, map_location="cpu", weights_only=True) if resume and state_path.exists() else None
    initial = None
    if state is not None:
        arch, inputs = dict(state["arch"]), list(state["inputs"])
        if output_classes(arch) != classes:
            raise InputError(f"{out} was trained with --classes {output_classes(arch)}; resume it with the same")
        if float(state.get("tumour_weight", 1.0)) != tumour_weight:
            raise InputError(f"{out} was trained with --tumour-weight {float(state.get('tumour_weight', 1.0)):g}; resume it with the same")
    elif init is not None:
        if not (Path(init) / BEST_NAME).is_file():
            raise InputError(f"{init} has no {BEST_NAME}: --init takes a trained detector run")
        initial = torch.load(Path(init) / BEST_NAME, map_location="cpu", weights_only=True)
        if list(initial["inputs"]) != list(inputs):
            raise InputError(f"{init} is a detector for {'+'.join(initial['inputs'])}, not {'+'.join(inputs)}")
        arch = dict(initial["arch"])
        if output_classes(arch) != classes:
            raise InputError(f"{init} is a detector with {output_classes(arch)} output classes, not {classes}")
    arch.setdefault("classes", classes)
    network = build_detector(len(inputs), arch)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    step, best = 0, {"score": -math.inf}
    if initial is not None:
        network.load_state_dict(initial["state_dict"])
    if state is not None:
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        step, best = int(state["step"]), dict(state["best"])
    progress(f"loading {len(train_ids)} training cases")
    cases = [load_training_case(train_cache, case_id, inputs) for case_id in train_ids]
    patch = patch_size(arch)
    device = torch.device("cpu")
    dtype = torch.bfloat16
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (1 - min(s, steps - 1) / steps) ** 0.9, last_epoch=step - 1)
    started = time.perf_counter()
    while step < steps:
        rng = np.random.default_rng([seed, step])
        cubes = [sample_cube(cases[int(rng.integers(len(cases)))], patch, rng) for _ in range(batch)]
        x = torch.from_numpy(np.stack([augment(c[0], c[1], rng) if augmentation else c[0] for c in cubes]))
        brain = torch.from_numpy(np.stack([c[1] for c in cubes]))[:, None]
        parts = torch.from_numpy(np.stack([c[2] for c in cubes]))[:, None]
        rest = (parts > 0) & (parts != ENHANCING_LABEL)
        weight = 1.0 + (tumour_weight - 1.0) * rest.float()
        network.train()
        with torch.autocast(device.type, dtype=dtype):
            logits = network(x)
        if classes == 1:
            loss = detection_loss(logits.float(), (parts == ENHANCING_LABEL).float(), brain, weight)
        else:
            loss = parts_loss(logits.float(), parts, brain, weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        if step % 25 == 0:
            progress(f"step {step}/{steps} loss {float(loss.detach()):.4f} ({(time.perf_counter() - started) / 25:.2f} s/step)")
            started = time.perf_counter()
        if step % every == 0 or step == steps:
            record = {"step": step, **validate(network, arch, val_cache, val_ids, inputs, device)}
            record["score"] = clinical_score(record)
            progress(json.dumps(record))
            with open(out / LOG_NAME, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            weights = {k: v.detach().clone() for k, v in network.state_dict().items()}
            if record["score"] > best["score"]:
                best = record
                with atomic_write(out / BEST_NAME, suffix=".tmp") as tmp:
                    torch.save({"arch": arch, "inputs": list(inputs), "record": record, "state_dict": weights,
                                "tumour_weight": float(tumour_weight), "init": None if init is None else str(init)}, tmp)
            with atomic_write(state_path, suffix=".tmp") as tmp:
                torch.save({"network": weights, "optimizer": optimizer.state_dict(), "step": step, "best": best,
                            "arch": arch, "inputs": list(inputs), "tumour_weight": float(tumour_weight)}, tmp)
            started = time.perf_counter()
    return best


def attach_detector(synthesis: str, detector_run: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """A run folder ``out`` whose ``best.pt`` is the synthesis model ``synthesis`` (bundled name or checkpoint) with the
    detector of ``detector_run`` inside it; ``fit-detection``, ``export``, ``bundle`` and ``evaluate`` take it as any run."""
    import dataclasses

    import torch

    from VirtualContrastLib.checkpoints import save_checkpoint
    from VirtualContrastLib.networks.detector import DETECTOR_PREFIX
    from VirtualContrastLib.registry import load_model

    from .train import BEST_NAME as RUN_BEST

    out, best_path = Path(out), Path(detector_run) / BEST_NAME
    if (out / RUN_BEST).exists() and not overwrite:
        raise InputError(f"{out / RUN_BEST} exists; pass --overwrite to replace it or choose another --out")
    if not best_path.is_file():
        raise InputError(f"{detector_run} has no {BEST_NAME}: train the detector first")
    detector = torch.load(best_path, map_location="cpu", weights_only=True)
    model = load_model(synthesis, device="cpu")
    if list(detector["inputs"]) != list(model.config.inputs):
        raise InputError(f"the detector takes {'+'.join(detector['inputs'])}, model {model.name} "
                         f"{'+'.join(model.config.inputs)}: they must see the same inputs")
    config = dataclasses.replace(model.config, detector={"arch": dict(detector["arch"])})
    weights = {k: v.contiguous() for k, v in model.network.state_dict().items()}
    weights.update({DETECTOR_PREFIX + k: v for k, v in detector["state_dict"].items()})
    training = {**model.training, "detector": {"run": str(detector_run), "validation": detector["record"]},
                "synthesis_model": {"name": model.name, "sha256": model.sha256}}
    save_checkpoint(out / RUN_BEST, config, weights, training)
    return out / RUN_BEST
