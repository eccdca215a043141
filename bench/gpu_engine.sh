#!/usr/bin/env bash
# The engine issue's GPU study, prepared to run ONCE on a lent GPU machine (~8 min; bench/NOTES.md).
#
# Here (CPU), first copy the data next to the tree so it travels:
#   mkdir -p .gpudata/fashion_mnist && cp /usr/share/datasets/fashion-mnist/*.gz .gpudata/fashion_mnist/
# then, through the device tool, with .gpudata carried:
#   bash bench/gpu_engine.sh            (results under $OUT, copy them to bench/results/ with the device named)
# A CPU dry run with tiny sizes checks the script:  SIZES=4 STEPS=5 SEQ=2 bash bench/gpu_engine.sh
#
# The same bench as bench/results/engine_cpu_n32.md: each layout against one-at-a-time dense training on
# the same device, N = 32 ... 4096 members, one epoch (60 of 421 minibatches timed and scaled), then a
# 5-epoch row at N = 1024. Sequential rows time SEQ sampled configurations and scale by N / SEQ.
set -euo pipefail
PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu_engine}
SIZES=${SIZES:-32,128,512,1024,4096}
STEPS=${STEPS:-60}
SEQ=${SEQ:-4}
BIG=${BIG:-1024}
DATA=${DATA:-.gpudata/fashion_mnist}
mkdir -p "$OUT"
export PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/device.txt" 2>/dev/null || echo "no nvidia-smi" > "$OUT/device.txt"
$PY -c "import jax; print(jax.__version__, jax.devices())" >> "$OUT/device.txt"
$PY bench/bench_trainer.py --dataset fashion_mnist --data-dir "$DATA" --sizes "$SIZES" --epochs 1 \
    --layout auto,masked,packed,sequential --steps "$STEPS" --seq-sample "$SEQ" --out "$OUT/engine_gpu.md"
$PY bench/bench_trainer.py --dataset fashion_mnist --data-dir "$DATA" --sizes "$BIG" --epochs 5 \
    --layout auto,packed,sequential --steps "$STEPS" --seq-sample "$SEQ" --out "$OUT/engine_gpu_5ep.md" || true
