"""Current gate (B) vs reach gate (D, REACH mm) on cached gate inputs: brain PSNR, ET PSNR, Table E enhancement terms."""
import json, sys, glob, numpy as np
from scipy import ndimage
from model_training.prepare import load_case
from VirtualContrastLib import enhancement as E
from VirtualContrastLib.metrics import evaluate_case, brats_regions
from VirtualContrastLib.normalization import intensity_range
REACH = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
curve = json.load(open("gate2/curve.json"))

def gate_reach(ce, t1, brain, probability, threshold, curve, spacing, reach):
    detected = (probability >= threshold) & brain
    beyond = brain & (ndimage.distance_transform_edt(~detected, sampling=spacing) > reach) if detected.any() else brain
    floor = np.where(detected, E.expected_enhancement(probability, curve), -np.inf).astype(np.float32)
    gated, shown = ce, E.subtraction_map(ce, t1, brain)
    removed = np.zeros(brain.shape, bool); raised = np.zeros(brain.shape, bool)
    for _ in range(E.GATE_PASSES):
        low, high = intensity_range(gated, brain, {"name": "brain_percentile", "lower": 0.5, "upper": 99.5})
        removed |= E.undetected_blobs(shown, brain, detected) | (beyond & (shown > E.ENHANCEMENT_THRESHOLD))
        change = np.where(removed, -np.maximum(shown - E.GATE_CAP, 0.0), 0.0)
        raised |= floor > shown
        change = np.where(raised, floor - shown, change)
        gated = (gated + change * np.float32(high - low)).astype(np.float32)
        shown = E.subtraction_map(gated, t1, brain)
    return gated, np.where(removed, np.minimum(shown, E.GATE_CAP), shown).astype(np.float32)

rows = {}
for f in sorted(glob.glob(f"gate2/{sys.argv[1]}_*.npz")):
    d = dict(np.load(f)); cid = f.split("/")[-1][len(sys.argv[1]) + 1:-4]
    case = load_case(f"cache/{sys.argv[1]}", cid)
    brain = d["mask"].astype(bool); spacing = tuple(d["spacing"])
    out = {"B": E.gate_enhancement(d["ce"], d["t1"], brain, d["probability"], float(d["threshold"]), curve),
           "D": gate_reach(d["ce"], d["t1"], brain, d["probability"], float(d["threshold"]), curve, spacing, REACH)}
    for k, (img, m) in out.items():
        v = evaluate_case(img, case["raw_t1c"], brain, regions=brats_regions(case["labels"]))
        e = E.enhancement_metrics(m, d["true"], d["labels"], brain, spacing)
        r = {"brain": v["brain"]["psnr"], "et": v["enhancing_tumour"]["psnr"], **{x: e[x] for x in
             ("lesions_detected", "lesions", "false_blobs", "lesion_f1", "auc_brain", "auc_tumour", "far_false_colour")}}
        rows.setdefault(k, []).append(r)
        print(cid, k, " ".join(f"{x}={y:.3f}" for x, y in r.items()), flush=True)
    np.savez_compressed(f"gate2/out_{sys.argv[1]}_{cid}.npz", B_ce=out["B"][0], B_map=out["B"][1], D_ce=out["D"][0], D_map=out["D"][1])
for k, rs in rows.items():
    print("MEAN", k, " ".join(f"{x}={np.nanmean([r[x] for r in rs]):.3f}" for x in rs[0]), "found", sum(r["lesions_detected"] for r in rs), "/", sum(r["lesions"] for r in rs))
