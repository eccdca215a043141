"""What per-member batch sizes cost the swarm: the chunked loop against the plain one, side by side.

Usage::

    .venv/bin/python bench/bench_batch.py [--dataset fashion_mnist] [--data-dir DIR] [--swarm-size 32]
        [--train-size 10000] [--epochs 1] [--sizes 32 64 128 256] [--out bench/results/batch_cpu.md]

A space with a ``batch_size`` choice trains every member in chunks of g =
gcd(sizes) examples a step, accumulating gradients until its own batch is
full (`train.fit_span`). Rows (the same S members, masked layout, one
program each, compile timed apart from one training call):

* ``fixed B``: the space with ``batch_size`` fixed at B (the plain loop, a
  batch a step), for every B of ``--sizes``;
* ``choice, all B``: the choice space, every member at batch size B (its
  chunked loop: B / g chunks an update), for every B;
* ``choice, mixed``: the choice space, members' batch sizes as drawn;
  ``choice, mixed, serial``: the same members one at a time (the serial
  layout: a chunk's skipped update is really skipped, no vmap).

``padding x`` is a ``choice, all B`` row's train time over ``fixed B``'s:
what making B one option among several costs (g-example steps, and the
optimizer's update evaluated each chunk under vmap). The sequential
column: each member alone with its batch size (`train.make_dense_train`),
K sampled and scaled, for the mixed swarm.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxswarm import execute, train  # noqa: E402
from jaxswarm.data import load_dataset  # noqa: E402
from jaxswarm.models import mlp_space  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trainer import bench_sequential  # noqa: E402  (the sequential rows' code: make_dense_train's program)


def timed(trainer, keys, pos, data, chunk_size=None):
    runner = execute.make_swarm_runner(trainer.train_member, chunk_size=chunk_size, log=None)
    t0 = time.perf_counter()
    runner.compile(keys, pos, data)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = jax.block_until_ready(runner(keys, pos, data))
    return compile_s, time.perf_counter() - t0, float(np.median(np.asarray(m.fitness)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--swarm-size", type=int, default=32)
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--seq-sample", type=int, default=4)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    n = min(args.train_size, len(ds.x_train))
    data = train.device_data(ds.x_train[:n], ds.y_train[:n], ds.x_val, ds.y_val)
    F, C = data.x_train.shape[1], ds.num_classes
    config = train.TrainConfig(epochs=args.epochs)
    kw = dict(max_layers=3, units=(16, 256))
    choice = mlp_space(**kw, batch_sizes=tuple(args.sizes))
    S = args.swarm_size
    pos = np.asarray(jax.random.uniform(jax.random.key(0), (S, choice.num_dims)))
    keys = jax.random.split(jax.random.key(1), S)
    col = choice.names.index("batch_size")
    rows = []

    def at(b):  # every member at batch size b (its other coordinates unchanged)
        q = pos.copy()
        q[:, col] = choice.encode({**choice.to_python(pos[0]), "batch_size": b})[col]
        return jnp.asarray(q)

    for b in args.sizes:
        fixed = mlp_space(**kw, batch_sizes=(b,))
        fpos = jnp.asarray(np.delete(pos, col, axis=1))
        c, t, f = timed(train.make_train(fixed, config, F, C), keys, fpos, data)
        rows.append(dict(row=f"fixed {b}", compile_s=c, train_s=t, fitness=f))
        c, t, f = timed(train.make_train(choice, config, F, C), keys, at(b), data)
        rows.append(dict(row=f"choice, all {b}", compile_s=c, train_s=t, fitness=f,
                         padding=t / rows[-1]["train_s"]))
    c, t, f = timed(train.make_train(choice, config, F, C), keys, jnp.asarray(pos), data)
    rows.append(dict(row="choice, mixed, serial", **dict(zip(("compile_s", "train_s", "fitness"), timed(
        train.make_train(choice, config, F, C, branching=True), keys, jnp.asarray(pos), data, chunk_size=1)))))
    drawn = [choice.to_python(q)["batch_size"] for q in pos]
    mixed = dict(row="choice, mixed", compile_s=c, train_s=t, fitness=f,
                 sizes={b: drawn.count(b) for b in args.sizes})
    archs = [train.make_dense_train(choice, config, F, C).describe(q)[0] for q in pos]
    seq = bench_sequential(choice, config, data, keys, pos, F, C, archs, args.seq_sample)  # scaled to S
    mixed.update(seq_compile_s=seq["compile_s"], seq_train_s=seq["train_s"],
                 x_seq_total=(seq["compile_s"] + seq["train_s"]) / (c + t), x_seq_train=seq["train_s"] / t)
    rows.append(mixed)
    meta = dict(command="bench/bench_batch.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), jax=jax.__version__, devices=str(jax.devices()),
                n_train=n, swarm_size=S, epochs=args.epochs, chunk=train.chunk_size(tuple(args.sizes), n))
    lines = ["| row | compile s | train s | padding x | median fitness |", "|---|---|---|---|---|"]
    for r in rows:
        pad = f"{r['padding']:.2f}" if "padding" in r else ""
        lines.append(f"| {r['row']} | {r['compile_s']:.1f} | {r['train_s']:.1f} | {pad} | {r['fitness']:.3f} |")
    lines.append("")
    lines.append(f"mixed swarm {mixed['sizes']}: sequential ({seq['sampled']} sampled, scaled to {S}) compile "
                 f"{mixed['seq_compile_s']:.1f} s + train {mixed['seq_train_s']:.1f} s; swarm x seq (total) "
                 f"{mixed['x_seq_total']:.2f}, (train) {mixed['x_seq_train']:.2f}")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1, default=str))
        args.out.write_text(f"```\n{json.dumps(meta, indent=1)}\n```\n\n{table}\n")


if __name__ == "__main__":
    main()
