#!/bin/bash
# old (ddecfe2) vs new (HEAD), alternating, one after another
export JAXSWARM_COST_MODEL=builtin
ARGS="--dataset fashion_mnist --data-dir /usr/share/datasets/fashion-mnist --sizes 32 --epochs 5 --steps 100 --full-steps-upto 0 --layout auto,sequential --seq-sample 8 --space plain"
for i in 1 2; do
  (cd /tmp/old && PYTHONPATH=/tmp/old /work/main/.venv/bin/python bench/bench_trainer.py $ARGS --out /tmp/ab_old_$i.md > /tmp/ab_old_$i.log 2>&1)
  (cd /work/main && PYTHONPATH=/work/main /work/main/.venv/bin/python bench/bench_trainer.py $ARGS --out /tmp/ab_new_$i.md > /tmp/ab_new_$i.log 2>&1)
done
echo done > /tmp/ab.done
