#!/usr/bin/env bash
# Rebuild the bundled models and their evaluation report from scratch on this machine:
# phantom data (recorded seeds) -> prepared caches -> six trainings -> held-out evaluation -> bundle.
# On 2 CPU cores this takes about 2 hours; on a GPU far less. Run from the repository root:
#   bash model_training/reproduce_bundled.sh [WORKDIR]
set -euo pipefail
work=${1:-data/bundled}
repo=$(cd "$(dirname "$0")/.." && pwd)
train=(virtual-contrast-train)
mkdir -p "$work"

# Phantom cases: 16 with T2/ADC/FLAIR on the T1 grid, 16 with thick tilted slices (seeds 1000-1015, 1100-1115);
# validation 2000-2003 and test 3000-3007 with thick slices. The demo's seed 0 is in none of them.
virtual-contrast phantom --cases 16 --seed 1000 --out "$work/train"
virtual-contrast phantom --cases 16 --seed 1100 --thick-slices --out "$work/train"
virtual-contrast phantom --cases 4 --seed 2000 --thick-slices --out "$work/val"
virtual-contrast phantom --cases 8 --seed 3000 --thick-slices --out "$work/test"
for split in train val test; do
  "${train[@]}" prepare "$work/$split" --out "$work/cache/$split" --no-register --quiet
done

data=(--set "data.train=$work/cache/train" --set "data.val=$work/cache/val")
for config in phantom_lite phantom_lite_flair phantom_unet3d phantom_hrfcn_2d aux_t1_to_t2 aux_t1_to_adc; do
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "${train[@]}" train "$config" --out "$work/runs/$config" "${data[@]}"
done

results="$repo/model_training/results/phantom"
runs="$work/runs"
"${train[@]}" evaluate "$runs/phantom_lite/best.pt" "$runs/phantom_unet3d/best.pt" "$runs/phantom_hrfcn_2d/best.pt" \
  --labels "HR-FCN (3D),U-Net (3D),HR-FCN (2D)" --data "$work/cache/test" --table II --out "$results/table_II" --device cpu
"${train[@]}" evaluate "$runs/phantom_lite/best.pt" "$runs/phantom_lite_flair/best.pt" \
  --labels "T1+T2+ADC,T1+T2+FLAIR" --data "$work/cache/test" --table III --out "$results/table_III" --device cpu

models="$repo/Resources/Models"
"${train[@]}" bundle "$runs/phantom_lite" --name vc-hrfcn16-t1-t2-adc --models-dir "$models" \
  --evaluation "$results/table_II/table_II.md" \
  --description "Default model: 3D HR-FCN (width 16) from T1 + T2 + ADC, the paper's inputs; trained on physics phantoms."
"${train[@]}" bundle "$runs/phantom_lite_flair" --name vc-hrfcn16-t1-t2-flair --models-dir "$models" \
  --evaluation "$results/table_III/table_III.md" \
  --description "3D HR-FCN (width 16) from T1 + T2 + FLAIR (BraTS-style inputs, for data without ADC); trained on physics phantoms."
"${train[@]}" bundle "$runs/aux_t1_to_t2" --name vc-aux-t1-to-t2 --models-dir "$models" --role auxiliary \
  --description "Auxiliary model (paper section IV-E): predicts a missing T2 from the T1; trained on physics phantoms."
"${train[@]}" bundle "$runs/aux_t1_to_adc" --name vc-aux-t1-to-adc --models-dir "$models" --role auxiliary \
  --description "Auxiliary model (paper section IV-E): predicts a missing ADC from the T1; trained on physics phantoms."
