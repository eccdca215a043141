#!/usr/bin/env bash
# The GPU studies, prepared to run ONCE on a lent GPU machine (bench/NOTES.md).
#
# Here (CPU), first copy the data next to the tree so it travels:
#   mkdir -p .gpudata/fashion_mnist && cp /usr/share/datasets/fashion-mnist/*.gz .gpudata/fashion_mnist/
# then, through the device tool, with .gpudata carried:
#   bash bench/gpu_engine.sh            (results under $OUT, copy them to bench/results/ with the device named)
# A CPU dry run with tiny sizes checks the script:
#   SIZES=4 SPACE_SIZES=4 STEPS=5 SEQ=2 BIG=4 EPOCHS=1 TASK_N=4 TASK_ROUNDS=1 TASK_EPOCHS=1 TASK_ROWS=256 \
#     bash bench/gpu_engine.sh
#
# STUDIES (default "spaces engine", in that order; each writes its own files, so a run cut short keeps
# what finished):
# * spaces (issue 16, ~4 min): the engine bench of bench/results/engine_batch_n32_e5_{plain,all,all_batch}.md
#   on the GPU: auto (masked on a GPU: one program for every batch size) against one-at-a-time dense
#   training, for the plain space, every per-member dimension ("all") and those plus each member's batch
#   size ("all_batch"), at N = SPACE_SIZES members, EPOCHS epochs. The bound: all_batch's ratio
#   vs sequential within 20% of plain's.
# * engine (~8 min): the same bench as bench/results/engine_cpu_n32.md: each layout against one-at-a-time
#   dense training, N = 32 ... 4096 members, one epoch, then a 5-epoch row at N = BIG.
# * task (issue 33, ~4 min): bench/bench_task.py: your own Flax MLP as a Task (groups of 8 members in one
#   vmapped call, then one member per call) vs the built-in MLP vs a plain Flax + Optax loop, TASK_ROUNDS
#   rounds of TASK_N configurations, TASK_EPOCHS epochs on TASK_ROWS Fashion-MNIST rows.
# Timed minibatches: STEPS of 421 per epoch, scaled; sequential rows time SEQ sampled configurations and
# scale by N / SEQ.
set -euo pipefail
PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu_engine}
STUDIES=${STUDIES:-spaces engine task}
SIZES=${SIZES:-32,128,512,1024,4096}
SPACE_SIZES=${SPACE_SIZES:-32,1024}
EPOCHS=${EPOCHS:-5}
STEPS=${STEPS:-60}
SEQ=${SEQ:-4}
BIG=${BIG:-1024}
DATA=${DATA:-.gpudata/fashion_mnist}
TASK_N=${TASK_N:-32}
TASK_ROUNDS=${TASK_ROUNDS:-3}
TASK_EPOCHS=${TASK_EPOCHS:-5}
TASK_ROWS=${TASK_ROWS:-12800}
mkdir -p "$OUT"
export PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/device.txt" 2>/dev/null || echo "no nvidia-smi" > "$OUT/device.txt"
$PY -c "import jax; print(jax.__version__, jax.devices())" >> "$OUT/device.txt"
bench() { $PY bench/bench_trainer.py --dataset fashion_mnist --data-dir "$DATA" --steps "$STEPS" --seq-sample "$SEQ" "$@"; }
for study in $STUDIES; do
  case $study in
    spaces)
      for space in plain all all_batch; do
        bench --sizes "$SPACE_SIZES" --epochs "$EPOCHS" --layout auto,sequential --space "$space" \
            --out "$OUT/engine_gpu_e${EPOCHS}_$space.md" || echo "spaces: $space failed" >&2
      done ;;
    engine)
      bench --sizes "$SIZES" --epochs 1 --layout auto,masked,packed,sequential --out "$OUT/engine_gpu.md"
      bench --sizes "$BIG" --epochs 5 --layout auto,packed,sequential --out "$OUT/engine_gpu_5ep.md" || true ;;
    task)
      for g in 8 1; do
        $PY bench/bench_task.py --data-dir "$DATA" --swarm-size "$TASK_N" --rounds "$TASK_ROUNDS" \
          --epochs "$TASK_EPOCHS" --train-rows "$TASK_ROWS" --group-size "$g" --out "$OUT/task_gpu_g$g.md" || true
      done ;;
    *) echo "unknown study $study (spaces, engine, task)" >&2; exit 2 ;;
  esac
done
