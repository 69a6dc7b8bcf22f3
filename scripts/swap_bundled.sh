#!/usr/bin/env bash
# Make a finished `tvae train` run on the folk corpus the bundled model, and regenerate every
# file in the repo that quotes the bundled model, from a clone, on a 2-core CPU (about 25
# minutes): the lead-in head and the learned prior fitted to RUN's last checkpoint (as
# scripts/train_bundled.sh does), the model card recorded inside the weights, the card's JSON,
# the example melodies' and built song forms' scores, the samples' statistics, the training
# curves, the demo site, the README's picture and recipes/bundled.json. The model being
# replaced is scored the same way into docs/bundled/evaluate_test_previous.json.
#
#   bash scripts/swap_bundled.sh RUN        e.g. runs/os_rbf8
#
# What it does not do: the README's words and tables, scripts/train_bundled.sh's command, and
# the tests that pin the bundled model's behaviour (tests/cli/test_bundled_model.py,
# tests/cli/test_transfer_edits_bundled.py, tests/test_outputs.py): read the new numbers and
# write them (tests/test_readme.py checks the README's card tables against the card).
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?usage: swap_bundled.sh RUN}
test -f "$run/last.json" || { echo "swap_bundled.sh: $run/last.json not found" >&2; exit 2; }
mkdir -p runs/swap
cp tvae/weights/default.json runs/swap/previous.json
cp tvae/weights/default.safetensors runs/swap/previous.safetensors
python scripts/fit_lead_in.py "$run/last.json" corpus -o runs/swap/lead_fit
tvae export runs/swap/lead_fit.json runs/swap/vae
tvae prior corpus --model runs/swap/vae.json -o tvae/weights/default --num-threads 2
tvae evaluate corpus --model tvae/weights/default.json --json --record \
  > docs/bundled/evaluate_test.json
tvae evaluate corpus --model runs/swap/previous.json --json \
  > docs/bundled/evaluate_test_previous.json
tvae evaluate data --model tvae/weights/default.json --json > docs/bundled/evaluate_examples.json
python -m bench.bench_forms --model tvae/weights/default.json runs/swap/previous.json \
  --json docs/bundled/forms.json > runs/swap/forms.txt
python -m bench.bench_samples --json docs/bundled/bench_samples.json \
  > docs/bundled/bench_samples.txt
mkdir -p docs/bundled/training
cp "$run/metrics.csv" "$run/command.txt" docs/bundled/training/
cp "$run"/plots/*.png docs/bundled/training/
cp "$run/config.json" recipes/bundled.json
tvae demo demos
python scripts/screenshot.py demos/mary_x_jingle.html docs/transfer_page.png
echo "swapped: tvae/weights/default.* is now $run's last checkpoint with its lead-in head and prior"
