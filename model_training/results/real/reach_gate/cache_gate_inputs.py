"""Cache the gate's inputs (ungated CE-T1, T1, mask, probability) per case of a split, for a model with a detector: SPLIT MODEL PREFIX."""
import json, sys, numpy as np
import VirtualContrastLib.synthesis as syn
from model_training.evaluate import synthesis_of_case, true_subtraction, array_spacing
from model_training.prepare import load_case
from VirtualContrastLib.registry import load_model
split, model_path, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
captured = {}
real_gate = syn.gate_enhancement
def capture(ce, t1, mask, probability, threshold, curve=None):
    captured.update(ce=ce.copy(), t1=t1.copy(), mask=mask.copy(), probability=probability.copy(), threshold=threshold)
    return real_gate(ce, t1, mask, probability, threshold, curve)
syn.gate_enhancement = capture
model = load_model(model_path, device="cpu")
json.dump(model.config.detector["curve"], open(f"gate2/{prefix}curve.json", "w"))
for cid in [r["case"] for r in json.load(open(f"cache/{split}/index.json"))["prepared"]]:
    case = load_case(f"cache/{split}", cid)
    synthesis_of_case(model, case, "cpu")
    np.savez_compressed(f"gate2/{prefix}{split}_{cid}.npz", true=true_subtraction(case), labels=case["labels"],
                        spacing=np.array(array_spacing(case)), **captured)
    print(cid, flush=True)
