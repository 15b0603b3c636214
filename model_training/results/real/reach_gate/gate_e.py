"""Design E: CE-T1 as gate B; the map (and overlay) also held at the cap beyond REACH mm of a detected voxel."""
import sys, glob, numpy as np
from scipy import ndimage
from VirtualContrastLib import enhancement as E
prefix, REACH = sys.argv[1], float(sys.argv[2])
rows = []
for f in sorted(glob.glob(f"gate2/{prefix}val_*.npz")):
    d = dict(np.load(f)); cid = f.split("/")[-1][len(prefix) + 4:-4]
    o = np.load(f"gate2/out_{prefix}val_{cid}.npz")
    brain = d["mask"].astype(bool); spacing = tuple(d["spacing"])
    detected = (d["probability"] >= float(d["threshold"])) & brain
    beyond = brain & (ndimage.distance_transform_edt(~detected, sampling=spacing) > REACH) if detected.any() else brain
    m = np.where(beyond, np.minimum(o["B_map"], E.GATE_CAP), o["B_map"])
    np.save(f"gate2/E_{prefix}{cid}.npy", m.astype(np.float32))
    e = E.enhancement_metrics(m, d["true"], d["labels"], brain, spacing)
    r = {x: e[x] for x in ("lesions_detected", "lesions", "false_blobs", "lesion_f1", "auc_brain", "auc_tumour", "far_false_colour")}
    rows.append(r)
    print(cid, "E", " ".join(f"{x}={y:.3f}" for x, y in r.items()), flush=True)
print("MEAN E", " ".join(f"{x}={np.nanmean([r[x] for r in rows]):.3f}" for x in rows[0]), "found", sum(r["lesions_detected"] for r in rows), "/", sum(r["lesions"] for r in rows))
