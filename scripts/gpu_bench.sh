#!/usr/bin/env bash
# Throughput on a lent GPU with JAX: float32 with the matmul peak, a larger
# batch, and bfloat16 mixed precision. Results land in $OUT (or runs/gpu-bench).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-bench}; mkdir -p "$OUT"
source scripts/device_env.sh
STEPS=${STEPS:-30}
$PY -m capslib bench --batch-size 100 --steps "$STEPS" --no-naive --sweep 1024 --json 2>&1 \
  | tee "$OUT/bench_float32.txt"
$PY -m capslib bench --batch-size 100 --steps "$STEPS" --no-naive --no-peak --mixed-precision \
  --json 2>&1 | tee "$OUT/bench_bfloat16.txt"
