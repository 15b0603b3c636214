"""Measurement: seconds to synthesize the real GBM case in one process, per slab-window margin and overlap.

Run once per precision (fp32 under ONEDNN_MAX_CPU_ISA=AVX2 emulates a CPU without bf16).
usage: python model_training/results/speed/time_margins.py PRECISION REPEATS [CASE_FOLDER]
"""
import json
import sys
import time

import SimpleITK as sitk

import VirtualContrastLib.synthesis as synthesis
from VirtualContrastLib.bench import cpu_info, onednn_isa
from VirtualContrastLib.options import SynthesisOptions
from VirtualContrastLib.registry import load_model

case = sys.argv[3] if len(sys.argv) > 3 else "../shared/realdata/cases/brats18_TCIA03_265_1"
precision, repeats = sys.argv[1], int(sys.argv[2])
images = {m: sitk.ReadImage(f"{case}/{m}.nii.gz", sitk.sitkFloat32) for m in ("t1", "t2", "flair")}
model = load_model("vc-hrfcn16-t1-t2-flair", device="cpu")
settings = [("margin 16, overlap 1/3", 16, 1 / 3), ("margin 8, overlap 1/3", 8, 1 / 3), ("margin 8, overlap 0", 8, 0.0)]

times = {name: [] for name, _, _ in settings}
for _ in range(repeats):
    for name, margin, overlap in settings:
        synthesis.SLAB_MARGIN = (margin, margin)
        start = time.perf_counter()
        result = synthesis.synthesize(images, model, options=SynthesisOptions(device="cpu", precision=precision, overlap=overlap))
        times[name].append(time.perf_counter() - start)
cpu, features = cpu_info()
print(json.dumps({"cpu": cpu, "features": features, "onednn_isa": onednn_isa(), "precision": result.precision, "seconds": times}, indent=1))
