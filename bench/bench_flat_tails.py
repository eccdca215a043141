"""The packed tails' optimizer on one flat array per group against leaf by leaf, side by side in one process.

Usage::

    .venv/bin/python bench/bench_flat_tails.py [--space all_batch] [--data-dir DIR] [--repeats 2]

For each repeat, `bench_trainer.bench_packed` (N = 32, 5 epochs, batch 128, the
100-step cut scaled to the full epoch, 8 groups) with ``flat_tails=True`` and
then ``False`` (`packed.make_packed_train`), caches cleared before each: what
compiling and training the same members cost either way. Prints one line per
run and writes them to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_trainer as bt  # noqa: E402

from jaxswarm import train  # noqa: E402
from jaxswarm.data import load_dataset  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", choices=tuple(bt.SPACES), default="all_batch")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    space = bt.SPACES[args.space]()
    ds = load_dataset("fashion_mnist", data_dir=args.data_dir)
    F, C, N, E, batch = ds.num_features, ds.num_classes, 32, 5, 128
    data, scale, full = bt.cut_data(ds, batch, 100)
    pos, keys, archs = bt.random_swarm(space, F, C, N, 0)
    config = train.TrainConfig(epochs=E, batch_size=batch)
    lines = [f"# flat vs leaf-by-leaf tails, space {args.space}, N={N}, {E} epochs ({bt.machine()})"]
    for _ in range(args.repeats):
        for flat in (True, False):
            jax.clear_caches()
            r = bt.bench_packed(space, config, data, keys, pos, F, C, archs, 8, examples=full * batch * E,
                                flat_tails=flat)
            lines.append(f"flat_tails={flat}: compile {r['compile_s']:.1f} s, train {r['train_s'] * scale:.1f} s "
                         f"(scaled), programs {r['programs']}, median fitness {np.median(r['fitness']):.4f}")
            print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
