#!/usr/bin/env bash
# The full recipe on one lent GPU (H100/H200) with KERAS_BACKEND=jax, sized to
# fit one 10-minute device call: benchmark first, then train with a time
# budget (the epochs that fit are sized from the epochs measured), select on
# validation, evaluate the test set once. Results land in $OUT (or runs/gpu).
#
#   bash scripts/gpu_run.sh                      # on the GPU machine
#   CAPSLIB_PROFILE=quick bash scripts/gpu_run.sh   # CPU rehearsal (~9 min: JAX is slow on CPU)
#
# Carried wheels (.whl/, see README "Performance") are installed when Keras is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
RUN_DIR=${RUN_DIR:-$OUT/run}  # on a device, point it outside $OUT: only 8 small files come back
TRAIN_BUDGET_S=${TRAIN_BUDGET_S:-400}   # training seconds (the call's limit is 600)
EPOCHS=${EPOCHS:-50}
mkdir -p "$OUT"
source scripts/device_env.sh

echo "== device"; (nvidia-smi -L 2>/dev/null || echo "no NVIDIA GPU") | tee "$OUT/device.txt"
$PY -c "import keras, jax; print('keras', keras.__version__, 'jax', jax.__version__, jax.devices())" \
  | tee -a "$OUT/device.txt"

STEPS=30; SWEEP=100,256,512; TRAIN_ARGS=${TRAIN_ARGS:-}
if [ "${CAPSLIB_PROFILE:-}" = quick ]; then  # JAX trains ~2 images/s on a 2-core CPU
  STEPS=2; SWEEP=8; TRAIN_ARGS="--epochs 1 --train-limit 64 $TRAIN_ARGS"
fi
echo "== benchmark (batch 100 against the naive reference, then a batch sweep)"
$PY -m capslib bench --batch-size 100 --steps $STEPS --sweep $SWEEP --json 2>&1 \
  | tee "$OUT/bench.txt"

echo "== training (time budget ${TRAIN_BUDGET_S}s)"
$PY -m capslib train --run-dir "$RUN_DIR" --epochs "$EPOCHS" \
  --time-budget "$TRAIN_BUDGET_S" --time-budget-action finish --verbose 2 $TRAIN_ARGS 2>&1 | tee "$OUT/train.log"
status=${PIPESTATUS[0]}
# Keep what is small enough to come back (the .keras model stays behind).
for f in metrics.json log.csv learning_curves.png reconstructions.png; do
  [ -f "$RUN_DIR/$f" ] && cp "$RUN_DIR/$f" "$OUT/$f"
done
exit $status
