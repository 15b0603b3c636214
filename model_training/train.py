"""The training loop: schedule stages, mixed precision, DDP, validation, resume and logging.

Run as ``python -m model_training train CONFIG --out RUN_DIR`` (one process) or through
``torchrun --nproc_per_node N -m model_training train ...`` for several GPUs or nodes
(DistributedDataParallel; NCCL on GPUs, gloo on CPUs). ``batch_size`` is per process, as the
paper's "batch 3" was per GPU.

A run folder holds: ``state.pt`` (the training state after the last finished epoch: model,
optimizer, GradScaler, epoch, RNG, history — written with
:func:`VirtualContrastLib.checkpoints.save_checkpoint`, so it is read back with
``torch.load(weights_only=True)``), ``best.pt`` (an engine checkpoint of the epoch with the best
validation score under the config's selection rule, ``validation.select``), ``log.csv`` (one row per epoch), ``steps.csv`` (one row per step),
``tb/`` (TensorBoard) and ``train_config.json``.

Validation runs each epoch (or every ``validation.every`` epochs) on whole validation volumes
through the engine's own inference path (:func:`VirtualContrastLib.synthesis.synthesize`) and
scores them with VC-Eval-1 (:func:`VirtualContrastLib.metrics.evaluate_case`).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from VirtualContrastLib.checkpoints import load_checkpoint, save_checkpoint
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.errors import InputError
from VirtualContrastLib.fileutil import write_csv, write_error_reason, write_file
from VirtualContrastLib.networks import build_network, in_plane_multiple
from VirtualContrastLib.options import autocast_dtype
from VirtualContrastLib.registry import resolve_device

from .cache import check_normalization, load_case, load_index
from .losses import VirtualContrastLoss, stage_at, total_epochs
from .sampling import SlabDataset
from .settings import SELECTION_GATES, SELECTION_RULES, TrainConfig

STATE_NAME = "state.pt"
BEST_NAME = "best.pt"
CONFIG_NAME = "train_config.json"
#: What a run writes into its folder: ``--overwrite`` removes exactly these before a new run starts.
RUN_FILES = (STATE_NAME, BEST_NAME, "log.csv", "steps.csv", CONFIG_NAME, "tb")


def selection_score(row: dict[str, Any], rule: str) -> float | None:
    """The score of a validated epoch under a selection rule; None when a key it needs is missing or NaN, or the
    rule's gate (:data:`SELECTION_GATES`: each value must exceed, or equal, the other key's, or 0) is not passed."""
    values = [row.get(key) for key in SELECTION_RULES[rule]]
    if any(value is None or not np.isfinite(value) for value in values):
        return None
    for key, floor in SELECTION_GATES.get(rule, ()):
        value, bar = row.get(key), row.get(floor) if floor else 0.0
        if value is None or bar is None or not np.isfinite(value) or not np.isfinite(bar) or value < bar or (not floor and value <= 0):
            return None
    return float(np.mean(values))


def split_cases(config: TrainConfig) -> tuple[tuple[Path, list[str]], tuple[Path, list[str]] | None]:
    """(train cache, case ids) and (validation cache, case ids) or None, from the ``data`` section.

    Each cache must have been normalized as the model config says (:func:`check_normalization`).
    """
    if "train" not in config.data:
        raise InputError("the config's data section needs a 'train' cache folder (see 'prepare')")
    train_dir = Path(config.data["train"])
    train_ids = [entry["case"] for entry in _checked_index(train_dir, config)["prepared"]]
    if not train_ids:
        raise InputError(f"{train_dir} holds no prepared cases")
    if config.data.get("val"):
        val_dir = Path(config.data["val"])
        val = (val_dir, [entry["case"] for entry in _checked_index(val_dir, config)["prepared"]])
    elif config.data.get("val_fraction"):
        order = np.random.default_rng(config.seed).permutation(len(train_ids))
        count = max(1, int(round(len(train_ids) * float(config.data["val_fraction"]))))
        if count >= len(train_ids):
            raise InputError("val_fraction leaves no training cases")
        val = (train_dir, [train_ids[i] for i in sorted(order[:count])])
        train_ids = [train_ids[i] for i in sorted(order[count:])]
    else:
        val = None
    if val is not None and config.data.get("max_val_cases"):
        val = (val[0], val[1][: int(config.data["max_val_cases"])])
    return (train_dir, train_ids), val


def _checked_index(cache_dir: Path, config: TrainConfig) -> dict[str, Any]:
    index = load_index(cache_dir)
    check_normalization(cache_dir, index, config.model)
    return index


def initialize_from(network: torch.nn.Module, config: ModelConfig, source: str) -> None:
    """Copy the weights of a bundled model or checkpoint ``source`` into ``network`` (built from ``config``).

    The architecture and width must match. With as many inputs, the weights are copied as they are (the inputs
    may differ, e.g. FLAIR in place of ADC). With fewer inputs, all of them among the source's, each stem comes
    from the source's stem of the same modality and the layers that read the stems' concatenation keep the
    channels of those stems (a T1+T2 model from a T1+T2+FLAIR one). Where only the output heads differ
    (``residual``, ``detection``), the last convolution keeps its own initialization (the residual's starts at
    zero, the identity floor).
    """
    from VirtualContrastLib.registry import load_model

    loaded = load_model(source, device="cpu")
    theirs, ours = loaded.config, config
    width = lambda c: c.arch_kwargs.get("width")  # noqa: E731
    same_count = len(theirs.inputs) == len(ours.inputs)
    if theirs.architecture != ours.architecture or width(theirs) != width(ours) or not (same_count or set(ours.inputs) < set(theirs.inputs)):
        raise InputError(f"cannot initialize from {source}: it is a {theirs.architecture} {theirs.arch_kwargs} with inputs "
                         f"{'+'.join(theirs.inputs)}, this run a {ours.architecture} {ours.arch_kwargs} with {'+'.join(ours.inputs)}")
    if theirs.arch_kwargs == ours.arch_kwargs and same_count:
        network.load_state_dict(loaded.network.state_dict(), strict=True)
        return
    kept = list(range(len(ours.inputs))) if same_count else [theirs.inputs.index(m) for m in ours.inputs]
    heads_differ = {k: v for k, v in theirs.arch_kwargs.items() if k != "width"} != {k: v for k, v in ours.arch_kwargs.items() if k != "width"}
    state, source_state = network.state_dict(), loaded.network.state_dict()
    last = [name for name in state if name.startswith("head.")][-2:] if heads_differ else []
    for name, tensor in state.items():
        if name in last:
            continue
        parts = name.split(".")
        origin = ".".join([parts[0], str(kept[int(parts[1])]), *parts[2:]]) if parts[0] == "stems" else name
        weights = source_state.get(origin)
        if weights is not None and weights.shape != tensor.shape and weights.dim() > 1 and weights.shape[0] == tensor.shape[0] \
                and weights.shape[2:] == tensor.shape[2:] and weights.shape[1] == tensor.shape[1] // len(ours.inputs) * len(theirs.inputs):
            # A layer reading the stems' concatenation: keep the channel blocks of the kept stems.
            block = tensor.shape[1] // len(ours.inputs)
            weights = torch.cat([weights[:, i * block:(i + 1) * block] for i in kept], dim=1)
        if weights is None or weights.shape != tensor.shape:
            raise InputError(f"cannot initialize from {source}: its {origin} does not match this network's {name}")
        tensor.copy_(weights)


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting on a device (None = fp32)."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return autocast_dtype(precision)


#: oneDNN's highest instruction set for bf16 training on a CPU: torch 2.13's AMX kernels abort the HR-FCN's 3D
#: convolution backward in bf16 ("double free or corruption" at 4 x 3 x 128 x 128 slabs, Intel Xeon with amx_bf16,
#: 2026-12-05); AVX-512 BF16 runs the same step. Inference keeps AMX (it has no backward).
CPU_BF16_TRAINING_ISA = "AVX512_CORE_BF16"


def cap_cpu_isa_for_training(device: torch.device, dtype: torch.dtype | None) -> None:
    """Keep oneDNN off AMX for bf16 training on the CPU, unless the user set ``ONEDNN_MAX_CPU_ISA`` themselves.

    oneDNN reads the variable once, at its first primitive: call this before the first convolution runs.
    """
    if device.type == "cpu" and dtype == torch.bfloat16:
        os.environ.setdefault("ONEDNN_MAX_CPU_ISA", CPU_BF16_TRAINING_ISA)


def hardware_summary(device: torch.device, world_size: int) -> dict[str, Any]:
    """What the run ran on, for the training summary."""
    summary = {"device": str(device), "world_size": world_size, "torch": str(torch.__version__),
               "python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if device.type == "cuda":
        summary["gpu"] = torch.cuda.get_device_name(device)
    return summary


def training_device(device: str | torch.device | None) -> torch.device:
    """The device of this process: "auto"/None picks this rank's GPU or the CPU; "cuda" without an index gets
    this rank's (``LOCAL_RANK``), because ``torch.cuda.set_device`` and DDP need one."""
    local = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    if device is None or device == "auto":
        return torch.device(local if torch.cuda.is_available() else "cpu")
    # resolve_device refuses an unknown name or a GPU this machine lacks in one line.
    chosen = device if isinstance(device, torch.device) else resolve_device(device)
    return torch.device(local) if chosen.type == "cuda" and chosen.index is None else chosen


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """One training run: the network, optimizer, loss and data, on one process of a (DDP) group."""

    def __init__(self, config: TrainConfig, out_dir: str | Path, device: str | torch.device | None = None, progress: bool = True) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.distributed and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
            dist.init_process_group(backend=backend)
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        self.device = training_device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            # Training slabs have one fixed size, so cuDNN's per-shape algorithm search pays off at once.
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)

        self.network = build_network(config.model, checkpointing=config.gradient_checkpointing)
        if config.init:
            initialize_from(self.network, config.model, config.init)
        self.network = self.network.to(self.device)
        self.memory_format = torch.channels_last_3d if config.channels_last else torch.contiguous_format
        self.network = self.network.to(memory_format=self.memory_format)
        self.model = DistributedDataParallel(self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None) if self.distributed else self.network
        self.amp_dtype = amp_dtype(config.precision, self.device)
        cap_cpu_isa_for_training(self.device, self.amp_dtype)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.loss = VirtualContrastLoss(config.stages[0].weights, config.delta, config.delta_max, config.histogram_weight,
                                        config.detection_weight).to(self.device)
        self.optimizer = self._new_optimizer(config.stages[0].lr)
        self.epoch = 0
        self.stage_index = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.wall_time = 0.0
        self.step_log: list[dict[str, Any]] = []

    def _new_optimizer(self, lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.network.parameters(), lr=lr, betas=self.config.betas)

    # -- one step ------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimizer step on a batch; returns the total loss and its unweighted terms."""
        self.model.train()
        inputs = batch["inputs"].to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        target = batch["target"].to(self.device, non_blocking=True)
        t1 = batch["t1"].to(self.device, non_blocking=True)
        region = batch["region"].to(self.device, non_blocking=True) if "region" in batch else None
        enhancing = batch["enhancing"].to(self.device, non_blocking=True) if "enhancing" in batch else None
        # Only the histogram and detection terms read the brain mask: no copy to the device on every step otherwise.
        needs_brain = self.loss.histogram_weight > 0 or enhancing is not None
        brain = batch["mask"].to(self.device, non_blocking=True) if needs_brain and "mask" in batch else None
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext()
        with autocast:
            prediction = self.model(inputs)
        # The loss runs in fp32: SSIM's variance terms lose too much in half precision.
        total, terms = self.loss(prediction.float(), target, t1, region, brain, enhancing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}}

    def _enter_stage(self, epoch: int) -> None:
        index, stage = stage_at(self.config.stages, epoch)
        if index != self.stage_index and self.config.reset_between_stages:
            self.optimizer = self._new_optimizer(stage.lr)
        self.stage_index = index
        self.loss.weights = stage.weights
        for group in self.optimizer.param_groups:
            group["lr"] = stage.lr

    # -- data ----------------------------------------------------------------------------
    def _loader(self) -> tuple[SlabDataset, DataLoader, DistributedSampler | None]:
        (train_dir, train_ids), _ = split_cases(self.config)
        # Only the normalized images and the mask: the raw float32 copies would double the memory.
        model = self.config.model
        keys = ["case_id", "mask", "labels", *(f"norm_{m}" for m in dict.fromkeys([*model.inputs, model.target, "t1"]))]
        cases = [load_case(train_dir, case_id, keys) for case_id in train_ids]
        dataset = SlabDataset(cases, self.config.model, self.config.sampling, in_plane_multiple(self.config.model), seed=self.config.seed)
        sampler = DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=False, drop_last=True) if self.distributed else None
        loader = DataLoader(dataset, batch_size=self.config.batch_size, sampler=sampler, shuffle=False, drop_last=True,
                            num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=self.config.num_workers > 0)
        return dataset, loader, sampler

    # -- validation ----------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """VC-Eval-1 means over the validation volumes, through the engine's synthesis."""
        _, val = split_cases(self.config)
        if val is None:
            return {}
        # evaluate builds SimpleITK images: imported only by runs that validate (the GPU check's run has no SimpleITK).
        from .evaluate import evaluate_network

        val_dir, ids = val
        options = {"tta": bool(self.config.validation.get("tta", False))}
        per_case = evaluate_network(self.network, self.config.model, val_dir, ids, device=self.device, options=options)
        return _mean_metrics(per_case)

    # -- state ---------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The training summary stored in checkpoints (data, seeds, schedule, metrics, time, hardware)."""
        (train_dir, train_ids), val = split_cases(self.config)
        return {
            "run": self.config.name,
            "config": self.config.raw,
            "data": {"train": str(train_dir), "train_cases": train_ids,
                     "val": str(val[0]) if val else None, "val_cases": val[1] if val else []},
            "seed": self.config.seed,
            "schedule": [{"epochs": s.epochs, "weights": list(s.weights), "lr": s.lr} for s in self.config.stages],
            "epochs_done": self.epoch,
            "best": self.best,
            "history": self.history,
            "wall_time_s": round(self.wall_time, 1),
            "hardware": hardware_summary(self.device, self.world_size),
        }

    def save_state(self) -> None:
        """Write ``state.pt`` (rank 0 only)."""
        training = {
            "kind": "training-state",
            "epoch": self.epoch,
            "stage_index": self.stage_index,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            "best": self.best,
            "history": self.history,
            "wall_time_s": self.wall_time,
            "cases": self._case_lists(),
        }
        save_checkpoint(self.out_dir / STATE_NAME, self.config.model, self.network.state_dict(), training)

    def _case_lists(self) -> dict[str, list[str]]:
        """The training and validation case ids the config selects now."""
        (_, train_ids), val = split_cases(self.config)
        return {"train": train_ids, "val": val[1] if val else []}

    def load_state(self, path: str | Path) -> None:
        """Resume from a ``state.pt`` written by :meth:`save_state`."""
        checkpoint = load_checkpoint(path)
        state = checkpoint.training
        if state.get("kind") != "training-state":
            raise InputError(f"{Path(path).name} is not a training state (use the run folder's {STATE_NAME})")
        if checkpoint.config.to_dict() != self.config.model.to_dict():
            raise InputError(f"{Path(path).name} was trained with another model configuration than {self.config.name!r}")
        cases = self._case_lists()
        if "cases" in state and state["cases"] != cases:
            raise InputError(f"{Path(path).name} was trained on other cases than the config's caches now hold "
                             f"({len(state['cases']['train'])} training cases then, {len(cases['train'])} now); "
                             "resume on the same data or train into a new run folder")
        self.network.load_state_dict(checkpoint.state_dict)
        self.epoch = int(state["epoch"])
        self.stage_index = int(state["stage_index"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.best = state.get("best")
        self.history = list(state.get("history", []))
        self.wall_time = float(state.get("wall_time_s", 0.0))

    # -- the loop ------------------------------------------------------------------------
    def fit(self, stop_after_epoch: int | None = None) -> dict[str, Any]:
        """Train until the schedule ends (or ``stop_after_epoch`` epochs are done); returns the summary."""
        from tqdm.auto import tqdm

        dataset, loader, sampler = self._loader()
        main = self.rank == 0
        writer = None
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_file(self.out_dir / CONFIG_NAME, lambda tmp: tmp.write_text(json.dumps(self.config.raw, indent=2), encoding="utf-8"))
            writer = _tensorboard(self.out_dir / "tb")
        end = total_epochs(self.config.stages) if stop_after_epoch is None else min(stop_after_epoch, total_epochs(self.config.stages))
        every = int(self.config.validation.get("every", 1))
        while self.epoch < end:
            start = time.perf_counter()
            self._enter_stage(self.epoch)
            dataset.set_epoch(self.epoch)
            if sampler is not None:
                sampler.set_epoch(self.epoch)
            sums: dict[str, float] = {}
            bar = tqdm(loader, desc=f"{self.config.name} epoch {self.epoch + 1}/{end}", disable=not (self.progress and main), leave=False)
            for step, batch in enumerate(bar):
                values = self.train_step(batch)
                for key, value in values.items():
                    sums[key] = sums.get(key, 0.0) + value
                bar.set_postfix(loss=f"{values['loss']:.4f}")
                if main:
                    global_step = self.epoch * len(loader) + step
                    self.step_log.append({"epoch": self.epoch, "step": global_step, **values})
                    if writer is not None:
                        writer.add_scalar("train/loss_step", values["loss"], global_step)
            row: dict[str, Any] = {"epoch": self.epoch + 1, "stage": self.stage_index + 1, "lr": self.optimizer.param_groups[0]["lr"],
                                   **{f"train_{k}": v / max(len(loader), 1) for k, v in sums.items()}}
            self.epoch += 1
            if self.distributed:
                self._broadcast_buffers()
            if main and (self.epoch % every == 0 or self.epoch == end):
                row.update(self.validate())
            self.wall_time += time.perf_counter() - start
            row["seconds"] = round(time.perf_counter() - start, 2)
            if main:
                self._record(row, writer)
            if self.distributed:
                dist.barrier()
        if writer is not None:
            writer.close()
        return self.summary()

    def _broadcast_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm statistics (DDP syncs buffers only before a forward)."""
        for buffer in self.network.buffers():
            dist.broadcast(buffer.data, src=0)

    def _record(self, row: dict[str, Any], writer: Any) -> None:
        self.history.append(row)
        for key, value in row.items():
            if key != "epoch" and writer is not None:
                writer.add_scalar(key.replace("_", "/", 1), value, row["epoch"])
        rule = self.config.validation.get("select", "brain_psnr")
        score = selection_score(row, rule)
        # Without validation scores the latest epoch is kept; a scored epoch only yields to a better score.
        if self.best is None or (score is not None and score > self.best.get("score", -np.inf)) or (score is None and "score" not in self.best):
            self.best = {"epoch": row["epoch"], "metric": rule, **({"score": score} if score is not None else {}),
                         "validation": {k: v for k, v in row.items() if k.startswith("val_")}}
            save_checkpoint(self.out_dir / BEST_NAME, self.config.model, self.network.state_dict(), self.summary())
        self.save_state()
        try:
            write_csv(self.out_dir / "log.csv", self.history)
            with open(self.out_dir / "steps.csv", "a", newline="", encoding="utf-8") as handle:
                writer_csv = csv.DictWriter(handle, fieldnames=list(self.step_log[0]) if self.step_log else ["epoch"])
                if handle.tell() == 0:
                    writer_csv.writeheader()
                writer_csv.writerows(self.step_log)
        except OSError as error:
            raise InputError(f"cannot write the logs of run folder {self.out_dir}: {write_error_reason(error)}") from None
        self.step_log = []


def _tensorboard(folder: Path) -> Any:
    """A TensorBoard writer into ``folder``, or None where tensorboard is not installed (log.csv and steps.csv still are written)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the GPU check's machine has no tensorboard (Testing/gpu_requirements.txt)
        print("tensorboard is not installed: no TensorBoard logs, only log.csv and steps.csv", file=sys.stderr)
        return None
    return SummaryWriter(str(folder))


def _mean_metrics(per_case: list[dict[str, dict[str, float]]]) -> dict[str, float]:
    """Mean of every region/metric over cases, keyed ``val_<region>_<metric>``."""
    keys = sorted({(region, metric) for case in per_case for region, values in case.items() for metric in values})
    from VirtualContrastLib.metrics import summarize

    return {f"val_{region}_{metric}": summarize([case.get(region, {}).get(metric, np.nan) for case in per_case])[0]
            for region, metric in keys}


def _differences(recorded: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON configs."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        return [key for name in dict.fromkeys([*recorded, *current])
                for key in _differences(recorded.get(name), current.get(name), f"{prefix}{name}.")]
    return [] if recorded == current else [prefix.rstrip(".")]


def check_run_folder(out_dir: Path, config: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one folder: a non-empty folder needs ``resume`` (same config) or ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"run folder {out_dir} is a file")
    if resume and overwrite:
        raise InputError("--resume continues a run and --overwrite starts afresh: give one of them")
    if resume:
        recorded = out_dir / CONFIG_NAME
        if recorded.is_file():
            try:
                changed = _differences(json.loads(recorded.read_text(encoding="utf-8")), json.loads(json.dumps(config.raw)))
            except ValueError:
                raise InputError(f"{recorded} is not valid JSON; cannot check that the resumed run keeps its config") from None
            if changed:
                raise InputError(f"{out_dir} was trained with another config ({', '.join(changed)} differ from {recorded.name}): "
                                 "resume with the recorded config or train into a new run folder")
        return
    contents = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if contents and not overwrite:
        raise InputError(f"run folder {out_dir} is not empty ({', '.join(contents[:4])}{', ...' if len(contents) > 4 else ''}): "
                         "--resume continues it, --overwrite replaces the run in it, or choose another --out")


def clear_run_folder(out_dir: Path) -> None:
    """Remove a previous run's files (only :data:`RUN_FILES`; anything else in the folder stays)."""
    for name in RUN_FILES:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def train(config: TrainConfig, out_dir: str | Path, resume: bool = False, device: str | None = None,
          stop_after_epoch: int | None = None, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Train ``config`` into ``out_dir``; with ``resume`` continue from ``out_dir/state.pt``, with ``overwrite``
    replace a run already there (a non-empty folder is refused otherwise)."""
    out_dir = Path(out_dir)
    check_run_folder(out_dir, config, resume, overwrite)
    trainer = Trainer(config, out_dir, device=device, progress=progress)
    if overwrite and trainer.rank == 0:
        clear_run_folder(out_dir)
    if resume:
        state = Path(out_dir) / STATE_NAME
        if not state.is_file():
            raise InputError(f"nothing to resume: {state} does not exist")
        trainer.load_state(state)
    try:
        return trainer.fit(stop_after_epoch=stop_after_epoch)
    finally:
        if trainer.distributed and dist.is_initialized():
            dist.destroy_process_group()
