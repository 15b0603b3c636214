#!/usr/bin/env bash
# Rebuild the bundled real-data T1+T2+FLAIR model and its validation tables from the 42 BraTS 2018 cases of
# shared/realdata: extract -> prepare (train and val splits) -> train -> calibrate -> evaluate -> bundle.
# usage (from the repository root; the git dirs are what fetching github:koriavinash1/DeepBrainSeg and
# github:koriavinash1/BioExp returned, see shared/realdata/README.md):
#   bash model_training/reproduce_real.sh WORKDIR DEEPBRAINSEG_GIT_DIR BIOEXP_GIT_DIR
# STEPS picks the steps (default "extract prepare train calibrate evaluate bundle"), e.g. STEPS="evaluate" on a finished run.
# REALDATA points at shared/realdata (default: ../shared/realdata beside the repository).
set -euo pipefail
[[ $# == 3 ]] || { echo "usage: $0 WORKDIR DEEPBRAINSEG_GIT_DIR BIOEXP_GIT_DIR" >&2; exit 2; }
work=$1; dbs=$2; bioexp=$3
steps=" ${STEPS:-extract prepare train calibrate evaluate bundle} "
repo=$(cd "$(dirname "$0")/.." && pwd)
realdata=${REALDATA:-$repo/../shared/realdata}
results="$repo/model_training/results/real"
run="$work/runs/brats_flair"
mkdir -p "$work"

[[ $steps != *" extract "* ]] || bash "$realdata/extract.sh" "$work/brats" "$dbs" "$bioexp"

if [[ $steps == *" prepare "* ]]; then
  # BraTS cases are co-registered and skull-stripped: no registration; labels 4 (enhancing) are stored as 3.
  for split in train val; do
    virtual-contrast-train prepare "$work/brats" --layout brats2018 --split "$split" --modalities t1,t2,flair \
      --no-register --out "$work/cache/$split" --workers "$(nproc)" --quiet
  done
fi

data=(--set "data.train=$work/cache/train" --set "data.val=$work/cache/val")
# Resumable: re-running continues from the last finished epoch.
if [[ $steps == *" train "* ]]; then
  resume=(); [[ -f $run/state.pt ]] && resume=(--resume)
  virtual-contrast-train train brats_flair --out "$run" "${data[@]}" "${resume[@]}"
fi

# The output calibration, fitted on the 34 training cases only (run/output_map.json; export and bundle ship it).
[[ $steps != *" calibrate "* ]] || virtual-contrast-train calibrate "$run" --data "$work/cache/train"

if [[ $steps == *" evaluate "* ]]; then
  # The 8 val cases (the set the checkpoint was selected on): the shipped form (calibrated, as exported), the
  # network's own output, and the phantom-trained model it started from.
  # No montage in the repository: images of real scans stay out of it (shared/realdata terms).
  virtual-contrast-train export "$run" --out "$work/brats_flair.pt"
  virtual-contrast-train evaluate "$work/brats_flair.pt" "$run/best.pt" vc-hrfcn16-t1-t2-flair \
    --labels "BraTS-trained calibrated,BraTS-trained,phantom-trained" \
    --data "$work/cache/val" --table E --out "$results/val_E" --device cpu --no-montage
fi

if [[ $steps == *" bundle "* ]]; then
  virtual-contrast-train bundle "$run" --name vc-hrfcn16-t1-t2-flair-brats18 --training-data brats2018 \
    --evaluation "$results/val_E/table_E.md" \
    --description "Default model for T1 + T2 + FLAIR: 3D HR-FCN (width 16, 3.4 M parameters) fine-tuned from the phantom-trained vc-hrfcn16-t1-t2-flair on the 34 real BraTS 2018 training cases of shared/realdata, selected on its 8 val cases by the mean of brain and enhancing-tumour PSNR; local loss on the labelled tumour core, half of the slabs on enhancing tumour, two-stage schedule; trained on 2 CPU cores. Research use only. CPU time: median of 3 virtual-contrast bench runs."
fi
