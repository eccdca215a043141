"""Benchmark swarm training layouts against sequential per-configuration training.

Usage::

    .venv/bin/python bench/bench_trainer.py [--dataset fashion_mnist|digits]
        [--sizes 1,8,32,128] [--epochs 1] [--steps 0] [--full-steps-upto 32]
        [--layout masked,packed,sequential] [--seq-sample 16] [--groups 8]
        [--out bench/results/trainer_cpu.md]

For every swarm size N the same N random configurations (positions drawn
uniformly in the unit box of ``mlp_space(max_layers=3, units=(16, 256))``
from a fixed seed; Adam via the trainer's default) are trained for one round
of ``--epochs`` epochs by each layout:

* ``masked``: ``train.make_train``'s member through
  ``execute.make_swarm_runner`` (max-size masked networks, one ``jit(vmap)``
  program).
* ``packed``: ``layouts.packed.make_packed_train`` (shared minibatches, first
  layers packed into one matmul, tails in a few width groups).
* ``sequential``: what a sequential tuner pays: each configuration trained
  alone, dense at its real size, one ``jax.jit`` per configuration (the code
  of ``train.make_dense_train``, with its ahead-of-time compile timed apart).

Timings: compile (``lower().compile()``) and train (one call of the
compiled program, ``block_until_ready``) are timed apart; total = both.
``--steps S`` caps every epoch at S minibatches (the training set is cut to
S x batch examples and the validation set in proportion) and the measured
train times are scaled by full_steps / S, which is exact up to noise since
all work is per step (reported as "scaled"). With ``--full-steps-upto M``
sizes N <= M run uncapped. ``--seq-sample K`` trains only K of the N
configurations sequentially and scales the sum by N / K.

FLOPs: useful = sum over members of 3 x the real network's forward FLOPs per
example x examples trained, plus forward FLOPs x validation examples per
epoch; computed likewise with the size the layout really computes (the
max-size network for masked, the packed plan for packed). GFLOP/s divide by
the (scaled) train time; the peak is the best of a few large float32
``jnp.dot`` timings taken in the same run. Memory: XLA's
``memory_analysis()`` of the compiled program (arguments + outputs + temps)
and the process's max RSS so far (cumulative; a lower bound of nothing).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxswarm import execute, optim, train
from jaxswarm.data import load_dataset
from jaxswarm.models import mlp, mlp_space


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 matmul GFLOP/s of a few n x n jnp.dot calls."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def memory_bytes(compiled) -> int | None:
    try:
        m = compiled.memory_analysis()
        return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)
    except Exception:  # some backends have no analysis
        return None


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_swarm(space, F: int, C: int, N: int, seed: int):
    """The bench's N configurations: positions uniform in the unit box, member keys, real architectures."""
    k_pos, k_train = jax.random.split(jax.random.key(seed + N))
    pos = jax.random.uniform(k_pos, (N, space.num_dims))
    arch_S, _ = jax.jit(jax.vmap(mlp.decode(space, mlp.config(space, F, C))))(pos)
    archs = [mlp.arch_to_python(jax.tree.map(lambda a: a[i], arch_S)) for i in range(N)]
    return pos, jax.random.split(k_train, N), archs


def cut_data(ds, batch: int, steps: int):
    """Train set cut to steps x batch examples and val set in proportion (steps=0: all)."""
    xtr, ytr = ds.flat(ds.x_train), ds.y_train
    xva, yva = ds.flat(ds.x_val), ds.y_val
    full_steps = len(xtr) // batch
    if steps and steps < full_steps:
        n = steps * batch
        m = max(1, round(len(xva) * steps / full_steps))
        return train.device_data(xtr[:n], ytr[:n], xva[:m], yva[:m]), full_steps / steps, full_steps
    return train.device_data(xtr, ytr, xva, yva), 1.0, full_steps


def flops_per_round(fwd_train, fwd_eval, config, data):
    """FLOPs of one round given forward FLOPs per example for training and eval."""
    n = data.x_train.shape[0]
    steps = n // min(config.batch_size, n)
    ex = steps * min(config.batch_size, n) * config.epochs
    return 3 * fwd_train * ex + fwd_eval * data.x_val.shape[0] * config.epochs


def bench_masked(space, config, data, keys, pos, F, C, archs):
    trainer = train.make_train(space, config, F, C)
    runner = execute.make_swarm_runner(trainer.train_member, log=None)
    t0 = time.perf_counter()
    compiled = runner.compile(keys, pos, data)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = jax.block_until_ready(runner(keys, pos, data))  # runs the program compiled above
    train_s = time.perf_counter() - t0
    computed = mlp.computed_flops(trainer.model_config) * len(archs)
    return dict(programs=1, compile_s=compile_s, train_s=train_s, mem=memory_bytes(compiled),
                computed_fwd=computed, fitness=np.asarray(metrics.fitness))


def bench_packed(space, config, data, keys, pos, F, C, archs, groups):
    from jaxswarm.layouts import packed

    trainer = packed.make_packed_train(space, config, F, C, groups=groups)
    shuffle_key = jax.random.key(123)
    t0 = time.perf_counter()
    compiled, plan = trainer.compile(keys, pos, data, shuffle_key)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = jax.block_until_ready(compiled(keys, pos, data, shuffle_key, plan.tables))
    train_s = time.perf_counter() - t0
    return dict(programs=1, compile_s=compile_s, train_s=train_s, mem=memory_bytes(compiled),
                computed_fwd=packed.plan_flops(plan.shape, F, C), fitness=np.asarray(metrics.fitness),
                plan=packed.describe_plan(plan.shape))


def bench_sequential(space, config, data, keys, pos, F, C, archs, sample):
    """Each configuration alone, dense at its real size, one jit each (make_dense_train's code)."""
    hparams = mlp.decode(space, mlp.config(space, F, C))
    n = data.x_train.shape[0]
    steps_total = train.total_steps(config, n)
    idx = np.arange(len(archs)) if not sample or sample >= len(archs) else \
        np.random.default_rng(0).choice(len(archs), sample, replace=False)
    compile_s = train_s = 0.0
    mem = 0
    fitness = []
    for i in idx:
        arch, hp = hparams(pos[i])
        arch = mlp.arch_to_python(arch)
        hp = jax.tree.map(np.asarray, hp)
        opt = optim.make_optimizer((optim.optimizer_names(space)[int(hp.optimizer)],), total_steps=steps_total)
        hp = jax.tree.map(jnp.asarray, hp._replace(optimizer=np.int32(0)))
        init_fn = lambda k, a=arch: mlp.init_dense(k, a, F, C)

        def apply_fn(v, x, tr, k, a=arch):
            return mlp.apply_dense(v, x, a, train=tr, key=k, return_batch_stats=True)

        run = jax.jit(lambda k, h, d, i_=init_fn, a_=apply_fn, o=opt: train.fit(k, i_, a_, o, h, d, config)[0])
        t0 = time.perf_counter()
        compiled = run.lower(keys[i], hp, data).compile()
        compile_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        m = jax.block_until_ready(compiled(keys[i], hp, data))
        train_s += time.perf_counter() - t0
        mem = max(mem, memory_bytes(compiled) or 0)
        fitness.append(float(m.fitness))
    scale = len(archs) / len(idx)
    useful = sum(mlp.useful_flops(archs[i], F, C) for i in idx) * scale
    return dict(programs=len(archs), compile_s=compile_s * scale, train_s=train_s * scale, mem=mem,
                computed_fwd=useful, fitness=np.asarray(fitness), sampled=int(len(idx)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--sizes", default="1,8,32,128")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=0, help="cap minibatches per epoch (0: full) and scale")
    p.add_argument("--full-steps-upto", type=int, default=0, help="sizes <= this run uncapped")
    p.add_argument("--layout", default="masked,sequential")
    p.add_argument("--seq-sample", type=int, default=0, help="train only K configs sequentially, scale")
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="markdown results file (+ .json next to it)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    layouts = args.layout.split(",")

    ds = load_dataset(args.dataset)
    space = mlp_space(max_layers=3, units=(16, 256))
    config = train.TrainConfig(epochs=args.epochs, batch_size=args.batch)
    F, C = ds.num_features, ds.num_classes
    peak = matmul_peak()
    print(f"float32 matmul peak: {peak:.1f} GFLOP/s", flush=True)

    rows = []
    for N in sizes:
        steps = 0 if N <= args.full_steps_upto else args.steps
        data, scale, full_steps = cut_data(ds, args.batch, steps)
        pos, keys, archs = random_swarm(space, F, C, N, args.seed)
        useful_fwd = sum(mlp.useful_flops(a, F, C) for a in archs)
        useful = flops_per_round(useful_fwd, useful_fwd, config, data) * scale
        for layout in layouts:
            if layout == "masked":
                r = bench_masked(space, config, data, keys, pos, F, C, archs)
            elif layout == "packed":
                r = bench_packed(space, config, data, keys, pos, F, C, archs, args.groups)
            elif layout == "sequential":
                r = bench_sequential(space, config, data, keys, pos, F, C, archs, args.seq_sample)
            else:
                raise ValueError(f"unknown layout {layout!r}")
            train_s = r["train_s"] * scale
            computed = flops_per_round(r["computed_fwd"], r["computed_fwd"], config, data) * scale
            row = dict(
                dataset=args.dataset, N=N, layout=layout, programs=r["programs"],
                compile_s=r["compile_s"], train_s=train_s, total_s=r["compile_s"] + train_s,
                steps_timed=data.x_train.shape[0] // args.batch, steps_full=full_steps,
                scaled=scale != 1.0, useful_gflops=useful / train_s / 1e9,
                computed_gflops=computed / train_s / 1e9, useful_frac=useful / computed,
                mem_mb=(r["mem"] or 0) / 2**20, max_rss_mb=max_rss_mb(),
                median_fitness=float(np.median(r["fitness"])), sampled=r.get("sampled"),
                plan=r.get("plan"),
            )
            row["useful_pct_peak"] = 100 * row["useful_gflops"] / peak
            row["computed_pct_peak"] = 100 * row["computed_gflops"] / peak
            rows.append(row)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}),
                  flush=True)
        seq = [r for r in rows if r["N"] == N and r["layout"] == "sequential"]
        for r in rows:
            if r["N"] == N and seq:
                r["speedup_vs_sequential"] = seq[0]["total_s"] / r["total_s"]
                r["speedup_train_only"] = seq[0]["train_s"] / r["train_s"]

    table = render(rows, peak)
    print(table)
    if args.out:
        meta = dict(
            command=" ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            machine=machine(), jax=jax.__version__, peak_gflops=peak,
        )
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1, default=str))
        out.write_text(f"```\n{json.dumps(meta, indent=1)}\n```\n\n{table}\n")


def machine() -> str:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{platform.machine()}, {os.cpu_count()} cpus, {model}, devices {jax.devices()}"


def render(rows, peak) -> str:
    head = ("| dataset | N | layout | programs | compile s | train s | total s | x vs seq (total) "
            "| x vs seq (train) | useful GFLOP/s (% peak) | computed GFLOP/s (% peak) | useful/computed "
            "| XLA mem MB | max RSS MB | steps timed/full | median fitness |")
    lines = [f"float32 matmul peak: {peak:.1f} GFLOP/s", "", head, "|" + "---|" * 16]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['N']} | {r['layout']}"
            f"{' (%d sampled)' % r['sampled'] if r.get('sampled') and r['sampled'] < r['N'] else ''} "
            f"| {r['programs']} | {r['compile_s']:.1f} | {r['train_s']:.1f}{'*' if r['scaled'] else ''} "
            f"| {r['total_s']:.1f} | {r.get('speedup_vs_sequential', float('nan')):.2f} "
            f"| {r.get('speedup_train_only', float('nan')):.2f} "
            f"| {r['useful_gflops']:.1f} ({r['useful_pct_peak']:.0f}%) "
            f"| {r['computed_gflops']:.1f} ({r['computed_pct_peak']:.0f}%) | {r['useful_frac']:.2f} "
            f"| {r['mem_mb']:.0f} | {r['max_rss_mb']:.0f} | {r['steps_timed']}/{r['steps_full']} "
            f"| {r['median_fitness']:.3f} |")
    lines.append("")
    lines.append("`*` train time measured on the capped steps and scaled to a full epoch.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
