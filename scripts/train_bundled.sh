#!/usr/bin/env bash
# How the bundled model (tvae/models/default.*) was made, from a clone, on a 2-core CPU.
# 1) export the folk corpus; 2) train with a small KL weight (beta 0.05) and scheduled sampling;
# 3) fine-tune with beta 0.3 so that each bar's latent carries less redundant information;
# 4) export an inference-only float16 copy into the package; 5) evaluate it on the test split.
set -euo pipefail
cd "$(dirname "$0")/.."
tvae corpus corpus
tvae train corpus --out runs/bundled --d-model 256 --d-latent 64 --bar-hidden 512 --d-ff 512 \
  --enc-layers 2 --dec-layers 2 --epochs 14 --batch-size 64 --lr 1e-3 --beta-schedule linear \
  --beta 0.05 --beta-steps 3000 --tf-schedule linear --tf-max 1.0 --tf-min 0.6 --tf-steps 6000 \
  --patience 4 --seed 0 --num-threads 1 --quiet
tvae train corpus --out runs/bundled-finetune --init-from runs/bundled/best.json \
  --d-model 256 --d-latent 64 --bar-hidden 512 --d-ff 512 --enc-layers 2 --dec-layers 2 \
  --epochs 3 --batch-size 64 --lr 3e-4 --warmup-steps 50 --beta-schedule constant --beta 0.3 \
  --tf-schedule constant --tf-p 0.7 --patience 2 --seed 1 --num-threads 1 --quiet
tvae export runs/bundled-finetune/best.json tvae/models/default
tvae evaluate corpus --model tvae/models/default.json --json
