#!/usr/bin/env bash
# Issue 18's GPU check: one prepared run of about 5 minutes on one H100 or H200 (the device
# tool), for a session that is lent a GPU. Not for CI. Prepare it here, on the CPU machine:
#
#   mkdir -p .gpu .git/info && (grep -qx /.gpu/ .git/info/exclude || echo /.gpu/ >> .git/info/exclude)
#   pip download symusic platformdirs pySmartDL --no-deps --only-binary :all: -d .gpu
#   tvae prepare corpus .gpu/folk            # the folk corpus as one shard (about 7 MB)
#
# then run it there: run(command="bash scripts/gpu_check.sh", carry=[".gpu"], timeout_s=480).
# Its outputs come back from $OUT: the bench sweep, two 2-minute training runs at batch 4,096
# and 16,384 with the default lr rule (their logs and metrics; neither may diverge), and
# `tvae evaluate --device cuda` of the larger one. GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 runs
# the same steps at toy size on a CPU, to check the script itself.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check_out}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
mkdir -p "$OUT"
python -c "import symusic" 2>/dev/null || pip install -q --no-index --find-links .gpu symusic
python -c "import tvae" 2>/dev/null || pip install -q --no-deps -e .
if [ -n "${GPU_CHECK_QUICK:-}" ]; then
  BATCHES="64 128"; STEPS=3; MINUTES=0.1; BIG="64 128"; COMPILE=""
else
  BATCHES="64 1024 4096 16384"; STEPS=20; MINUTES=2; BIG="4096 16384"; COMPILE="--compile"
fi
python -m bench.bench_gpu .gpu/folk --device "$DEVICE" --batches $BATCHES --steps "$STEPS" \
  $COMPILE 2>&1 | tee "$OUT/bench_gpu.txt"
for batch in $BIG; do
  run="/tmp/gpu_check_run$batch"
  rm -rf "$run"
  tvae train .gpu/folk --device "$DEVICE" --batch-size "$batch" --max-minutes "$MINUTES" \
    --epochs 1000 \
    --out "$run" --quiet 2>&1 | tee "$OUT/train_$batch.log"
  cp "$run/metrics.csv" "$OUT/metrics_$batch.csv"
  last=$batch
done
tvae evaluate .gpu/folk --model "/tmp/gpu_check_run$last/best.json" --device "$DEVICE" \
  --json > "$OUT/evaluate_$last.json"
echo "gpu check done: $OUT"
