#!/usr/bin/env bash
# GPU check (issue 15, section 4): everything the CUDA path promises, on one CUDA machine, in < 8 minutes.
#
#   bash Testing/gpu_check.sh [OUT_DIR]        (default OUT_DIR: ./gpu_check_out; PYTHON=... picks the interpreter)
#
# 1. the test suite's CUDA-marked tests (pytest -m cuda);
# 2. the demo phantom synthesized on the GPU in bf16 and in fp32, the two outputs compared (and each scored
#    against the phantom's true CE-T1, VC-Eval-1 brain PSNR);
# 3. a real out-of-memory: GPU memory capped, a large batch asked for; the run must recover and say how;
# 4. virtual-contrast bench at the lite width (16) and the paper's (64): s/volume, ratio to a same-run
#    Conv3d, peak memory (goal: <= 2 s per volume at the paper's width);
# 5. training throughput of the lite and the paper's configs (virtual-contrast-train throughput).
# Results: OUT_DIR/*.json and *.log, and OUT_DIR/summary.md to paste into the README and model cards.
# Without a CUDA GPU it stops at once with one line and exit status 2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-gpu_check_out}
STEP_LIMIT=${STEP_LIMIT:-150}   # seconds per step; five steps stay under 8 minutes in total

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to torch ($PY); run this on a machine with one and a CUDA build of torch" >&2
    exit 2
fi
mkdir -p "$OUT"
start=$SECONDS
step() { echo "== $1 ($((SECONDS - start)) s so far)"; }

step "1/5 CUDA-marked tests"
timeout "$STEP_LIMIT" "$PY" -m pytest -q -m cuda Testing 2>&1 | tee "$OUT/pytest_cuda.log"

step "2/5 demo case on the GPU, bf16 vs fp32"
timeout "$STEP_LIMIT" "$PY" -m VirtualContrastLib phantom --cases 1 --seed 5 --out "$OUT/demo" > "$OUT/phantom.log"
case_dir=$(ls -d "$OUT"/demo/VCP-*/ | head -1)
name=$(basename "$case_dir")
for precision in bf16 fp32; do
    timeout "$STEP_LIMIT" "$PY" -m VirtualContrastLib synthesize --quiet --device cuda --precision "$precision" \
        --t1 "$case_dir/$name-t1n.nii.gz" --t2 "$case_dir/$name-t2w.nii.gz" --adc "$case_dir/$name-adc.nii.gz" \
        --mask "$case_dir/$name-brainmask.nii.gz" -o "$OUT/demo_$precision.nii.gz" --report "$OUT/demo_$precision.json"
done
"$PY" - "$OUT" "$case_dir" "$name" <<'EOF' | tee "$OUT/demo_compare.json"
import json, sys
import numpy as np, SimpleITK as sitk
from VirtualContrastLib.metrics import evaluate_case, psnr
out, case, name = sys.argv[1:]
read = lambda path: sitk.GetArrayFromImage(sitk.ReadImage(path))
brain = read(f"{case}/{name}-brainmask.nii.gz") > 0
target = read(f"{case}/{name}-t1c.nii.gz")
bf16, fp32 = read(f"{out}/demo_bf16.nii.gz"), read(f"{out}/demo_fp32.nii.gz")
scale = float(np.abs(fp32[brain]).max())
reports = {p: json.load(open(f"{out}/demo_{p}.json")) for p in ("bf16", "fp32")}
print(json.dumps({
    "bf16_vs_fp32_psnr_db": psnr(bf16 / scale, fp32 / scale, brain),
    "brain_psnr_db": {p: evaluate_case(a, target, brain)["brain"]["psnr"] for p, a in (("bf16", bf16), ("fp32", fp32))},
    "seconds": {p: r["seconds"] for p, r in reports.items()}, "devices": {p: r["device"] for p, r in reports.items()},
}, indent=2))
EOF

step "3/5 forced out-of-memory fallback"
timeout "$STEP_LIMIT" "$PY" - "$case_dir" "$name" <<'EOF' | tee "$OUT/oom.log"
import sys
import torch
from VirtualContrastLib.imageio import read_image
from VirtualContrastLib.options import SynthesisOptions
from VirtualContrastLib.registry import load_model
from VirtualContrastLib.synthesis import synthesize
case, name = sys.argv[1:]
images = {m: read_image(f"{case}/{name}-{s}.nii.gz") for m, s in (("t1", "t1n"), ("t2", "t2w"), ("adc", "adc"))}
model = load_model("vc-hrfcn16-t1-t2-adc", device="cuda")
# 256 MiB for the caching allocator: a batch of 64 slabs cannot fit, so the engine must back off.
torch.cuda.set_per_process_memory_fraction(256 * 2**20 / torch.cuda.get_device_properties(0).total_memory)
result = synthesize(images, model, options=SynthesisOptions(device="cuda", batch_size=64))
assert any("GPU out of memory" in note for note in result.notes), result.notes
print("recovered:", result.device, result.precision, f"{result.seconds:.1f} s;", "; ".join(result.notes))
EOF

step "4/5 bench: lite width and the paper's width"
for width in 16 64; do
    timeout "$STEP_LIMIT" "$PY" -m VirtualContrastLib bench --device cuda --width "$width" --slabs 32 --json \
        > "$OUT/bench_w$width.log"
    sed -n '/^{/,$p' "$OUT/bench_w$width.log" > "$OUT/bench_w$width.json"
done

step "5/5 training throughput"
for config in phantom_lite final; do
    timeout "$STEP_LIMIT" "$PY" -m model_training throughput "$config" --device cuda --steps 5 \
        > "$OUT/throughput_$config.json"
done

"$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json, sys
out = sys.argv[1]
demo = json.load(open(f"{out}/demo_compare.json"))
print("| GPU check | value |\n|---|---|")
print(f"| demo case bf16 vs fp32 | {demo['bf16_vs_fp32_psnr_db']:.1f} dB PSNR between them; brain PSNR vs true CE-T1 "
      f"{demo['brain_psnr_db']['bf16']:.2f} (bf16) / {demo['brain_psnr_db']['fp32']:.2f} (fp32) dB; "
      f"{demo['seconds']['bf16']:.1f} / {demo['seconds']['fp32']:.1f} s |")
print(f"| out-of-memory fallback | {open(f'{out}/oom.log').read().strip()} |")
for width in (16, 64):
    r = json.load(open(f"{out}/bench_w{width}.json"))
    print(f"| bench width {width} ({r['device_name']}, {r['precision']}) | {r['seconds_per_volume']:.2f} s/volume, "
          f"{r['achieved_gflops_per_s']:.0f} GFLOP/s, ratio to Conv3d {r['ratio_to_conv3d']:.2f}, peak {r['peak_memory_mb']:.0f} MB |")
for config in ("phantom_lite", "final"):
    r = json.load(open(f"{out}/throughput_{config}.json"))
    print(f"| training throughput {config} | {json.dumps(r)} |")
EOF
echo "gpu_check: done in $((SECONDS - start)) s; results in $OUT/"
