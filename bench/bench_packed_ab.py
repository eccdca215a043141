"""Two settings of one packed-layout option, side by side in one process, on the same members.

Usage::

    .venv/bin/python bench/bench_packed_ab.py --compare batch_programs [--space all_batch] [--data-dir DIR]
    .venv/bin/python bench/bench_packed_ab.py --compare flat_tails

For each repeat, `bench_trainer.bench_packed` (N = 32, 5 epochs, batch 128, the
100-step cut scaled to the full epoch, 8 groups) with each setting of the
option in turn (`packed.make_packed_train`), caches cleared before each: what
compiling and training the same members cost either way. Prints one line per
run and writes them to ``--out``.

* ``flat_tails``: each tail group's optimizer on one flat array (True) or
  leaf by leaf (False).
* ``batch_programs``: a batch_size choice in one program, a chunk of the
  sizes' gcd a step (``one``), or one program per batch size (``per_size``).
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
from jaxswarm.layouts import packed  # noqa: E402

SETTINGS = {"flat_tails": (True, False), "batch_programs": packed.BATCH_PROGRAMS}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compare", choices=tuple(SETTINGS), required=True)
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
    lines = [f"# packed {args.compare} {' vs '.join(map(str, SETTINGS[args.compare]))}, space {args.space}, "
             f"N={N}, {E} epochs ({bt.machine()})"]
    for _ in range(args.repeats):
        for value in SETTINGS[args.compare]:
            jax.clear_caches()
            r = bt.bench_packed(space, config, data, keys, pos, F, C, archs, 8, examples=full * batch * E,
                                **{args.compare: value})
            lines.append(f"{args.compare}={value}: compile {r['compile_s']:.1f} s, train {r['train_s'] * scale:.1f} s "
                         f"(scaled), programs {r['programs']}, median fitness {np.median(r['fitness']):.4f}")
            print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
