#!/usr/bin/env bash
# Throughput on a lent GPU with JAX: float32 with the matmul peak, a larger
# batch, and bfloat16 mixed precision. Results land in $OUT (or runs/gpu-bench).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-bench}; mkdir -p "$OUT"
PY=${PYTHON:-python3}
if ! $PY -c "import keras" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
STEPS=${STEPS:-30}
$PY -m capslib bench --batch-size 100 --steps "$STEPS" --no-naive --sweep 1024 --json 2>&1 \
  | tee "$OUT/bench_float32.txt"
$PY -m capslib bench --batch-size 100 --steps "$STEPS" --no-naive --no-peak --mixed-precision \
  --json 2>&1 | tee "$OUT/bench_bfloat16.txt"
