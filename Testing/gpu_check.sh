#!/usr/bin/env bash
# GPU check (issues 15 and 25): the CUDA path end to end, on one CUDA GPU in under 8 minutes.
#
#   bash Testing/gpu_check.sh [OUT_DIR]            (default OUT_DIR: ./gpu_check_out; PYTHON=... picks the interpreter)
#   GPU_CHECK_DEVICE=cpu bash Testing/gpu_check.sh OUT_DIR    the same steps on the CPU at a small size
#
# Needs only torch, numpy, scipy, pytest and Testing/gpu_requirements.txt (no SimpleITK, pydicom or nilearn: the
# GPU machine's image has none of them and nothing can be installed there from a registry; carry the wheels):
#   pip install --no-index --find-links WHEELS -r Testing/gpu_requirements.txt
# Steps (Testing/gpu_check.py): the CUDA tests and the I/O-free core test; a phantom-sized array head through the
# default model in bf16 and fp32 (agreement in dB); a real out-of-memory back-off; virtual-contrast bench at the lite
# width (16) and the paper's (64); training throughput and a few training steps of the lite and paper configs (loss
# falling); `virtual-contrast-train train --device cuda` on a tiny cache; one BraTS-size volume timed end to end.
# Results: OUT_DIR/summary.md (to paste into the README and model cards), OUT_DIR/results.json, OUT_DIR/*.log.
# Without a CUDA GPU (and GPU_CHECK_DEVICE unset) it stops at once with one line and exit status 2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-gpu_check_out}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
export PYTHONPATH="$PWD/VirtualContrast:$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$DEVICE" = cuda ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to torch ($PY); run this on a machine with one, or set GPU_CHECK_DEVICE=cpu" >&2
    exit 2
fi
exec "$PY" Testing/gpu_check.py --device "$DEVICE" --out "$OUT"
