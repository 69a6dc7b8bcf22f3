#!/usr/bin/env bash
# Score a finished `tvae train` run on the folk corpus the way the bundled model is scored, to
# decide whether it should replace it: fit its lead-in head (as the bundled model's was), then
# `tvae evaluate --json` (the model card's numbers), the built song forms, songs longer than
# the window (and where their wrong steps come from), where near-repeats' bits go and where they
# lose their change, which repeats are copied from the wrong bar, and what becomes of B's edited
# repeats in transfers. Everything goes to OUT (default RUN/score/).
#
#   bash scripts/score_candidate.sh RUN [OUT] [CHECKPOINT]    e.g. runs/os_edits_16k
#
# CHECKPOINT is best (default) or last. About 5 minutes on 2 threads.
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?usage: score_candidate.sh RUN [OUT] [best|last]}
out=${2:-$run/score}
which=${3:-best}
mkdir -p "$out"
python scripts/fit_lead_in.py "$run/$which.json" corpus -o "$out/lead_in" > "$out/lead_in.log"
model="$out/lead_in.json"
tvae evaluate corpus --model "$model" --json > "$out/evaluate_test.json"
python -m bench.bench_forms --model "$model" --json "$out/forms.json" > "$out/forms.txt"
python -m experiments.long_songs "$model" --json "$out/long_songs.json" > "$out/long_songs.txt"
python -m experiments.long_songs "$model" --joined 40 --detail --block 16 \
  --json "$out/long_songs_joined.json" > "$out/long_songs_joined.txt"
python -m experiments.long_songs "$model" --errors --json "$out/long_songs_errors.json" \
  > "$out/long_songs_errors.txt"
python -m experiments.near_cost "$model" --json "$out/near_cost.json" > "$out/near_cost.txt"
python -m experiments.near_lost "$model" --json "$out/near_lost.json" > "$out/near_lost.txt"
python -m experiments.copy_misses "$model" --json "$out/copy_misses.json" > "$out/copy_misses.txt"
python -m experiments.edit_follow "$model" --json "$out/edit_follow.json" > "$out/edit_follow.txt"
python - "$out/evaluate_test.json" docs/bundled/evaluate_test.json <<'PY'
import json, sys
new, old = (json.load(open(p)) for p in sys.argv[1:3])
rows = [("free-running", "free_accuracy"), ("teacher-forced", "tf_accuracy"),
        ("KL bits per bar", "kl_bits_per_bar"), ("ELBO bits per bar", "elbo_bits_per_bar"),
        ("repeated / new", "kl_repeated_new_ratio"), ("paired ratio", "kl_paired_ratio"),
        ("near-repeats x new", "kl_near_new_ratio"), ("near-repeats exact", "near_repeats_exact"),
        ("near-repeats' changes kept", "near_changes_kept"),
        ("transfer follow", "transfer_follow_rate"), ("spurious", "transfer_spurious_rate"),
        ("edited repeats that follow", "transfer_edit_follow_rate")]
print(f"{'':28s} {'candidate':>10s} {'bundled':>10s}")
for name, key in rows:
    print(f"{name:28s} {new.get(key, float('nan')):10.4f} {old.get(key, float('nan')):10.4f}")
for bucket in new["by_distance"]:
    a, b = new["by_distance"][bucket], old["by_distance"][bucket]
    print(f"copy accuracy {bucket:>5s} bars back {a['copy_accuracy']:10.3f} {b['copy_accuracy']:10.3f}")
PY
