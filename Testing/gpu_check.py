"""The GPU check's steps (run by ``Testing/gpu_check.sh``): the CUDA path end to end, without SimpleITK.

Each step runs on arrays or through a command line, records its numbers in ``OUT/results.json`` and a row
of ``OUT/summary.md``, and a failing step is recorded and the next one runs, so one short call on a lent GPU
tells as much as it can. ``--device cpu`` runs the same steps at a small size (the Sizes below).
Exit status: 0 when every step passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: The bundled model the synthesis steps run: the default on phantoms, T1+T2+ADC.
MODEL = "vc-hrfcn16-t1-t2-adc"


@dataclass(frozen=True)
class Sizes:
    """How big each step runs: the real sizes on a GPU, small ones on the CPU (so it finishes in minutes there)."""

    phantom: tuple[int, int, int]  # the demo phantom's 1 mm T1 grid, rounded to the in-plane multiple
    real: tuple[int, int, int]  # a BraTS volume: 155 slices of 240 x 240
    bench_slabs: int
    train_steps: int
    train_crop: tuple[int, int] | None  # None: the config's own
    step_limit_s: int


SIZES = {
    "cuda": Sizes(phantom=(182, 220, 184), real=(155, 240, 240), bench_slabs=32, train_steps=8, train_crop=None, step_limit_s=150),
    "cpu": Sizes(phantom=(12, 48, 40), real=(16, 64, 64), bench_slabs=1, train_steps=4, train_crop=(32, 32), step_limit_s=300),
}


def head(shape: tuple[int, int, int], channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A skull-stripped head of ``channels`` smooth random contrasts (raw intensities 0-1000) and its brain mask."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij")
    brain = (z / 0.85) ** 2 + (y / 0.8) ** 2 + (x / 0.75) ** 2 < 1
    lesion = (z - 0.2) ** 2 + (y + 0.3) ** 2 + (x - 0.25) ** 2 < 0.04
    sigma = [max(n / 24, 1.0) for n in shape]
    images = []
    for _ in range(channels):
        tissue = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
        tissue = 400 + 300 * tissue / (np.abs(tissue).max() + 1e-6) + 250 * lesion * rng.uniform(0.5, 1)
        images.append(np.where(brain, tissue, 0).astype(np.float32))
    return np.stack(images), brain


def normalized(raw: np.ndarray, brain: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Each channel normalized as the model was trained (0 outside the brain)."""
    from VirtualContrastLib.normalization import normalize

    return np.stack([normalize(channel, brain, spec) for channel in raw])


def brain_psnr(a: np.ndarray, b: np.ndarray, brain: np.ndarray) -> float:
    """PSNR (dB, data range 1) between two [0, 1] predictions inside the brain."""
    from VirtualContrastLib.metrics import psnr

    return psnr(a, b, brain)


class Check:
    """Runs the steps, keeps their results, writes results.json and summary.md."""

    def __init__(self, device: str, out: Path) -> None:
        self.device, self.out, self.sizes = device, out, SIZES[device]
        self.results: dict[str, Any] = {"device": device, "steps": {}}
        self.rows: list[tuple[str, str]] = []
        self.failed: list[str] = []
        self.start = time.perf_counter()

    def step(self, name: str, run: Callable[[], tuple[dict[str, Any], str]]) -> None:
        """Run one step; record its result and summary row, or its one-line failure."""
        print(f"== {name} ({time.perf_counter() - self.start:.0f} s so far)", flush=True)
        began = time.perf_counter()
        try:
            result, row = run()
        except Exception as error:  # a failed step is reported and the check goes on
            traceback.print_exc()
            result, row = {"error": f"{type(error).__name__}: {error}"}, f"FAILED: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            self.failed.append(name)
        result["step_seconds"] = round(time.perf_counter() - began, 1)
        self.results["steps"][name] = result
        self.rows.append((name, row))
        self.write()

    def command(self, name: str, args: list[str]) -> str:
        """Run a command line of this checkout under the step limit; its output goes to OUT/NAME.log and is returned."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "VirtualContrast"), str(ROOT), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=self.sizes.step_limit_s)
        (self.out / f"{name}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(f"{' '.join(args[:3])} exited {done.returncode}: {tail[-1] if tail else 'no output'}")
        return done.stdout

    def write(self) -> None:
        """results.json and summary.md as they stand."""
        import torch

        self.results["torch"] = torch.__version__
        self.results["device_name"] = torch.cuda.get_device_name(0) if self.device == "cuda" else _cpu_name()
        self.results["total_seconds"] = round(time.perf_counter() - self.start, 1)
        self.results["failed"] = self.failed
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2) + "\n", encoding="utf-8")
        lines = [f"GPU check on {self.results['device_name']} ({self.device}, torch {self.results['torch']}), "
                 f"{self.results['total_seconds']:.0f} s{'' if self.device == 'cuda' else ', small sizes (CPU mode)'}; "
                 f"{'all steps passed' if not self.failed else 'FAILED: ' + ', '.join(self.failed)}", "",
                 "| step | result |", "|---|---|", *(f"| {name} | {row} |" for name, row in self.rows)]
        (self.out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _cpu_name() -> str:
    from VirtualContrastLib.bench import cpu_info

    return cpu_info()[0]


def run_check(device: str, out: Path) -> int:
    """All steps; returns the exit status."""
    import torch

    from VirtualContrastLib.options import SynthesisOptions
    from VirtualContrastLib.registry import load_model
    from VirtualContrastLib.synthesis import synthesize_array

    out.mkdir(parents=True, exist_ok=True)
    check = Check(device, out)
    sizes = check.sizes
    model = load_model(MODEL, device=device)
    raw, brain = head(sizes.phantom, len(model.config.inputs), seed=5)
    volume = normalized(raw, brain, model.config.normalization)

    def tests() -> tuple[dict[str, Any], str]:
        # --noconftest: Testing/conftest.py builds SimpleITK images, which this machine may not have.
        log = check.command("pytest", ["-m", "pytest", "--noconftest", "-q", "-p", "no:cacheprovider",
                                       "Testing/test_cuda.py", "Testing/test_core_without_io.py"])
        last = log.strip().splitlines()[-1]
        return {"pytest": last}, last

    def precision() -> tuple[dict[str, Any], str]:
        runs = {}
        for name in ("bf16", "fp32"):
            synthesize_array(model, volume[:, :model.config.slab_depth * 2], SynthesisOptions(device=device, precision=name))  # kernels warm
            runs[name] = synthesize_array(model, volume, SynthesisOptions(device=device, precision=name))
        agreement = brain_psnr(runs["bf16"].prediction, runs["fp32"].prediction, brain)
        result = {"shape": list(volume.shape), "bf16_vs_fp32_psnr_db": agreement, "seconds": {k: r.seconds for k, r in runs.items()},
                  "precisions": {k: r.precision for k, r in runs.items()}}
        if agreement < 35:
            raise AssertionError(f"bf16 and fp32 disagree: {agreement:.1f} dB PSNR between them (expected >= 35)")
        return result, (f"{MODEL} on a {'x'.join(map(str, sizes.phantom))} array head: bf16 vs fp32 {agreement:.1f} dB PSNR in the brain; "
                        f"{runs['bf16'].seconds:.2f} s (bf16) / {runs['fp32'].seconds:.2f} s (fp32)")

    def out_of_memory() -> tuple[dict[str, Any], str]:
        if device != "cuda":
            return {"skipped": "no GPU memory to exhaust on the CPU"}, "n/a on the CPU"
        # 256 MiB for the caching allocator: a batch of 64 slabs cannot fit, so the engine must back off.
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(256 * 2**20 / torch.cuda.get_device_properties(0).total_memory)
        try:
            result = synthesize_array(model, volume, SynthesisOptions(device=device, batch_size=64))
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
        if not any("GPU out of memory" in note for note in result.notes):
            raise AssertionError(f"no out-of-memory back-off happened: {result.notes}")
        return {"notes": result.notes, "device": result.device, "seconds": result.seconds}, f"recovered on {result.device} in {result.seconds:.1f} s: {'; '.join(result.notes)}"

    def bench() -> tuple[dict[str, Any], str]:
        results, rows = {}, []
        for width in (16, 64):
            log = check.command(f"bench_w{width}", ["-m", "VirtualContrastLib", "bench", "--device", device, "--width", str(width),
                                                  "--slabs", str(sizes.bench_slabs), "--json"])
            r = json.loads(log[log.index("\n{") + 1:])
            results[f"width_{width}"] = r
            rows.append(f"width {width} ({r['precision']}): {r['seconds_per_volume']:.2f} s/volume, {r['achieved_gflops_per_s']:.0f} GFLOP/s, "
                        f"ratio to Conv3d {r['ratio_to_conv3d']:.2f}, peak {r['peak_memory_mb']:.0f} MB")
        return results, "; ".join(rows)

    def training() -> tuple[dict[str, Any], str]:
        from model_training.settings import load_config
        from model_training.train import Trainer

        results, rows = {}, []
        for name in ("phantom_lite", "final"):
            args = ["throughput", name, "--device", device, "--steps", str(max(sizes.train_steps // 2, 2))]
            if sizes.train_crop:
                args += ["--height", str(sizes.train_crop[0]), "--width", str(sizes.train_crop[1])]
            throughput = json.loads(check.command(f"throughput_{name}", ["-m", "model_training", *args]))
            config = load_config(name)
            with tempfile.TemporaryDirectory(dir=out) as folder:
                trainer = Trainer(config, folder, device=device, progress=False)
                batch = _training_batch(config, sizes.train_crop)
                losses = [trainer.train_step(batch)["loss"] for _ in range(sizes.train_steps)]
            if not losses[-1] < losses[0]:
                raise AssertionError(f"{name}: the loss did not fall over {len(losses)} steps on one batch: {losses}")
            results[name] = {"throughput": throughput, "losses": losses}
            rows.append(f"{name} (width {throughput['width']}, {throughput['precision']}, {'x'.join(map(str, throughput['slab']))} slabs): "
                        f"{throughput['slabs_per_second']:.2f} slabs/s; loss {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps")
        return results, "; ".join(rows)

    def train_command() -> tuple[dict[str, Any], str]:
        # `train --device cuda` crashed before any GPU work (a device without an index): the whole command, on a tiny cache.
        cache = _tiny_cache(out / "train_cache", model.config.normalization)
        run = out / "train_run"
        log = check.command("train", ["-m", "model_training", "train", "tiny", "--out", str(run), "--device", device, "--quiet",
                                      "--set", f"data.train={cache}", "--set", "data.val=null"])
        epochs = (run / "log.csv").read_text(encoding="utf-8").strip().splitlines()[1:]
        if not epochs:
            raise AssertionError(f"train wrote no epoch to {run / 'log.csv'}")
        return {"output": log.strip().splitlines()[-1], "epochs": len(epochs)}, log.strip().splitlines()[-1]

    def real_size() -> tuple[dict[str, Any], str]:
        from VirtualContrastLib.normalization import denormalize, intensity_range

        raw_real, brain_real = head(sizes.real, len(model.config.inputs), seed=7)
        began = time.perf_counter()
        result = synthesize_array(model, normalized(raw_real, brain_real, model.config.normalization), SynthesisOptions(device=device))
        low, high = intensity_range(raw_real[0], brain_real, model.config.normalization)
        synthetic = np.where(brain_real, denormalize(result.prediction, low, high), 0)
        seconds = time.perf_counter() - began
        if not np.isfinite(synthetic).all():
            raise AssertionError("the synthetic volume has non-finite values")
        return ({"shape": list(sizes.real), "seconds": seconds, "network_seconds": result.seconds, "precision": result.precision},
                f"{'x'.join(map(str, sizes.real))} volume, raw arrays to synthetic CE-T1 ({result.precision}): {seconds:.2f} s end to end "
                f"({result.seconds:.2f} s in the network loop)")

    for name, run in (("tests (test_cuda.py, test_core_without_io.py)", tests), ("synthesis bf16 vs fp32", precision),
                      ("out-of-memory back-off", out_of_memory), ("bench", bench), ("training throughput and steps", training),
                      (f"virtual-contrast-train train --device {device}", train_command), ("real-size volume end to end", real_size)):
        check.step(name, run)
    print((out / "summary.md").read_text(encoding="utf-8"))
    return 1 if check.failed else 0


def _training_batch(config: Any, crop: tuple[int, int] | None) -> dict[str, Any]:
    """One learnable batch at the config's slab size (or ``crop``): the target is a smooth function of the inputs."""
    import torch

    height, width = crop or config.sampling.crop or (256, 192)
    raw, brain = head((config.model.slab_depth * config.batch_size, height, width), len(config.model.inputs), seed=3)
    inputs = torch.from_numpy(normalized(raw, brain, config.model.normalization))
    inputs = inputs.reshape(inputs.shape[0], config.batch_size, config.model.slab_depth, height, width).transpose(0, 1).contiguous()
    target = (0.6 * inputs[:, :1] + 0.4 * inputs[:, -1:]).clamp(0, 1)
    return {"inputs": inputs, "target": target, "t1": inputs[:, :1].clone(), "mask": (inputs[:, :1] > 0).float()}


def _tiny_cache(folder: Path, spec: dict[str, Any]) -> Path:
    """A prepared-cache folder (index.json + one .npz case, as ``prepare`` writes them) made from arrays, without SimpleITK."""
    shape = (12, 40, 40)
    modalities = ("t1", "t2", "adc", "flair", "t1c")
    raw, brain = head(shape, len(modalities), seed=11)
    arrays: dict[str, np.ndarray] = {"mask": brain.astype(np.uint8), "labels": np.where(raw[-1] > 600, 3, 0).astype(np.int16)}
    for modality, channel in zip(modalities, raw):
        arrays[f"raw_{modality}"] = channel
        arrays[f"norm_{modality}"] = normalized(channel[None], brain, spec)[0].astype(np.float16)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "check-0.npz", case_id=np.array("check-0"), **arrays)
    entry = {"case": "check-0", "file": "check-0.npz", "modalities": sorted(modalities), "labels": True, "shape": list(shape)}
    index = {"prepared": [entry], "skipped": [], "options": {"modalities": list(modalities), "register": False, "normalization": spec, "dtype": "float16"}}
    (folder / "index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder


def main() -> int:
    """Parse the arguments and run the check."""
    parser = argparse.ArgumentParser(description="GPU check: the CUDA path end to end, results in OUT/summary.md and OUT/results.json")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    return run_check(args.device, args.out)


if __name__ == "__main__":
    sys.exit(main())
