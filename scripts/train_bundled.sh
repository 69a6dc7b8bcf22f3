#!/usr/bin/env bash
# How the bundled model (tvae/weights/default.*) was made, from a clone, on a 2-core CPU: one
# `tvae train` run of the defaults, then its lead-in head and its learned prior fitted to it
# (the VAE's weights unchanged by either).
# 1. `tvae train`'s defaults (33-bar windows, the copy path reaching 32 bars back with per-step
#    edits, the encoder reading a repeat as its edits with the edit loss, the capped pointer
#    loss, phrase augmentation, reach batches, the posterior's repeat vectors, beta rising to
#    0.3 over 2,000 steps) for 100 epochs: 14,300 steps of 64 windows (--max-steps 16000 is
#    never reached), 2 threads, about 2 hours alone. With --repeat-beta 2 --repeat-beta-from
#    0.9 (today's defaults, spelled out as run), beta is doubled on the KL of repeats over the
#    last tenth (steps 12,870-14,300): the short last stage that used to be a separate
#    fine-tune. recipes/bundled.json is its config.json. Its last checkpoint (the learning
#    rate's cosine end) is the model.
#    As run: the run without the weight (--repeat-beta 1, runs/os_edits_16k) up to its step-12,870
#    checkpoint, which the flags do not change, then that checkpoint resumed with them in its
#    config.json (docs/experiments/one_stage/, "A short last stage inside the run").
# 2. The lead-in head (reads a pickup's lead-in from bar 1's latent), fitted on the VAE's
#    frozen posterior means: about 2 minutes.
# 3. The learned prior over its bar latents and copy choices: 3,000 steps, about 25 minutes on
#    2 threads.
set -euo pipefail
cd "$(dirname "$0")/.."
tvae corpus corpus
tvae train corpus --max-steps 16000 --epochs 100 --patience 100 --seed 0 --num-threads 2 \
  --eval-windows 200 --repeat-beta 2 --repeat-beta-from 0.9 --quiet --out runs/bundled
python scripts/fit_lead_in.py runs/bundled/last.json corpus -o runs/lead_fit
tvae export runs/lead_fit.json runs/vae
tvae prior corpus --model runs/vae.json -o tvae/weights/default --num-threads 2
tvae evaluate corpus --model tvae/weights/default.json --json --record  # the model card
