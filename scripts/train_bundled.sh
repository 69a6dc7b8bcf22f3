#!/usr/bin/env bash
# How the bundled model (tvae/weights/default.*) was made, from a clone, on a 2-core CPU:
# `tvae train`'s defaults are the recipe (33-bar windows, the copy path reaching 32 bars back
# with per-step edits, the capped pointer loss on exact and near repeats, phrase augmentation,
# beta 0.3); the bundled run only sets its length (9,000 steps), its seed and one thread.
# recipes/bundled.json is the run's config.json: `tvae train corpus --config recipes/bundled.json`
# repeats it.
set -euo pipefail
cd "$(dirname "$0")/.."
tvae corpus corpus
tvae train corpus --out runs/bundled --epochs 100 --max-steps 9000 --patience 20 --seed 0 \
  --num-threads 1 --eval-windows 200 --quiet
tvae export runs/bundled/best.json tvae/weights/default
tvae evaluate corpus --model tvae/weights/default.json --json --record  # the model card
