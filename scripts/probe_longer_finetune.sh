#!/usr/bin/env bash
# A probe, not the bundled recipe: does fine-tuning the bundled run 6,000 more steps with the
# same settings (no pointer loss, beta 0.3) reach the targets (free-running accuracy >= 0.95 at
# <= 16 KL bits per bar)? Needs runs/bundled_ft from scripts/train_bundled.sh. 13 minutes on
# 2 CPU cores. Result: docs/bundled/evaluate_test_longer_finetune.json (not adopted).
set -euo pipefail
cd "$(dirname "$0")/.."
tvae train corpus --out runs/bundled_ft2 --init-from runs/bundled_ft/best.json --d-model 256 \
  --d-latent 64 --bar-hidden 512 --d-ff 512 --enc-layers 2 --dec-layers 2 --copy bar \
  --copy-edit 0.02 --repeat-augment 0.25 --epochs 100 --max-steps 6000 --batch-size 64 \
  --lr 3e-4 --warmup-steps 50 --beta-schedule constant --beta 0.3 --tf-schedule constant \
  --tf-p 1.0 --pointer-weight 0 --patience 100 --seed 2 --num-threads 2 --eval-windows 500 --quiet
tvae evaluate corpus --model runs/bundled_ft2/best.json --json \
  > docs/bundled/evaluate_test_longer_finetune.json
