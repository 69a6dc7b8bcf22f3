#!/usr/bin/env bash
# How the bundled model (tvae/weights/default.*) was made, from a clone, on a 2-core CPU.
# 1) export the folk corpus; 2) train the copy-path model from scratch at its final KL weight
# (beta 0.3, warmed up over 2,000 steps), with the pointer loss on the data's exact repeats
# through the run and a quarter of the windows given one extra repeat at a random offset;
# 3) fine-tune 3,000 steps without the pointer loss: the copies are learned by then, and the
# latents of repeated bars shed the bits the loss made them spend; 4) export an inference-only
# float16 copy of the best validation checkpoint into the package; 5) evaluate it on the test
# split and record the numbers in it as its model card.
set -euo pipefail
cd "$(dirname "$0")/.."
tvae corpus corpus
tvae train corpus --out runs/bundled --d-model 256 --d-latent 64 --bar-hidden 512 --d-ff 512 \
  --enc-layers 2 --dec-layers 2 --copy bar --copy-edit 0.02 --repeat-augment 0.25 \
  --epochs 100 --max-steps 12000 --batch-size 64 --lr 1e-3 --beta-schedule linear --beta 0.3 \
  --beta-steps 2000 --tf-schedule constant --tf-p 1.0 --pointer-weight 1.0 --pointer-steps 12000 \
  --patience 100 --seed 0 --num-threads 1 --eval-windows 500 --quiet
tvae train corpus --out runs/bundled_ft --init-from runs/bundled/best.json --d-model 256 \
  --d-latent 64 --bar-hidden 512 --d-ff 512 --enc-layers 2 --dec-layers 2 --copy bar \
  --copy-edit 0.02 --repeat-augment 0.25 --epochs 100 --max-steps 3000 --batch-size 64 \
  --lr 3e-4 --warmup-steps 50 --beta-schedule constant --beta 0.3 --tf-schedule constant \
  --tf-p 1.0 --pointer-weight 0 --patience 100 --seed 1 --num-threads 2 --eval-windows 500 --quiet
tvae export runs/bundled_ft/best.json tvae/weights/default
tvae evaluate corpus --model tvae/weights/default.json --json --record  # the model card
