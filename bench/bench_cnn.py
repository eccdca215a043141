"""Bench: a swarm of CNNs as ONE program vs one real-size CNN at a time, on Fashion-MNIST.

For N random configurations of ``cnn.cnn_space()`` (1-3 conv blocks, 8-64
filters, 3x3 or 5x5 kernels, dense head 32-256, relu/tanh/sigmoid/elu, Adam),
train each for the same number of minibatch steps (batch 128):

* ``masked``: ``train.make_train`` through ``execute.make_swarm_runner``
  (``jit(vmap(member))`` over max-size masked CNNs), one compile;
* ``serial``: ``train.make_train(branching=True)`` through the runner with
  ``chunk_size=1``: the same members one at a time in one program, each
  running only its own blocks, kernel window and head
  (``cnn.CNNConfig.branching``), one compile;
* sequential: ``train.make_dense_train``: each configuration's real-size CNN,
  one ``jit`` each (what a sequential tuner that builds each trial's model pays).

All use ``train.fit`` (same loop, optimizer code, data) and the same
convolution implementation (``CNNConfig.conv`` "auto": the matmul form on
CPU, XLA's convolution elsewhere; ``conv_in_loop`` measures why). Compile
and run are timed apart; the run time of ``--steps`` steps is scaled to one epoch (54000 / 128 = 421 steps). Useful
FLOP/s counts each member's real network (``useful_flops_cnn``, x3 for a
training step); computed FLOP/s counts what the layout runs
(``computed_flops_cnn``). Both as a fraction of a float32 matmul peak timed
in the same run (a 4096^3 ``jnp.dot`` at default precision).

Run:  python bench/bench_cnn.py --sizes 8 32 --steps 20 --out bench/results/cnn_bench.md
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxswarm import execute, train
from jaxswarm.data import load_dataset
from jaxswarm.models import cnn

LAYOUTS = ("masked", "serial")


def matmul_peak(n: int = 4096, reps: int = 10) -> float:
    """float32 GFLOP/s of a large jnp.dot (default precision) on the default device."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, a).block_until_ready()
    t = time.perf_counter()
    for _ in range(reps):
        out = f(a, a)
    out.block_until_ready()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def _timed(fn, *args):
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t


def conv_in_loop(batch: int = 128, steps: int = 8) -> list[dict]:
    """GFLOP/s of a convolution's forward+backward, one jit per step vs inside a lax.scan, per implementation.

    The reason ``CNNConfig.conv`` is "matmul" on CPU: XLA:CPU runs a
    convolution inside a loop (every training step is one) far slower than
    the same convolution on its own.
    """
    rows = []
    for h, c, f, k in [(28, 1, 32, 5), (14, 32, 64, 5), (7, 64, 64, 3)]:
        x = jnp.ones((batch, h, h, c))
        w = jnp.full((k, k, c, f), 0.01)
        flop = 3 * 2 * batch * h * h * k * k * c * f * steps
        for impl in ("xla", "matmul"):
            grad = jax.grad(lambda w, x: jnp.sum(cnn.conv2d(x, w, jnp.zeros(f), impl) ** 2))
            one = jax.jit(grad)
            looped = jax.jit(lambda w, x: jax.lax.scan(lambda w, _: (w - 1e-6 * grad(w, x), None), w, None,
                                                       length=steps)[0])
            _timed(one, w, x), _timed(looped, w, x)  # compile
            t = time.perf_counter()
            for _ in range(steps):
                out = one(w, x)
            jax.block_until_ready(out)
            alone = time.perf_counter() - t
            _, in_scan = _timed(looped, w, x)
            rows.append({"shape": f"{h}x{h}x{c}->{f}, {k}x{k}", "impl": impl,
                         "alone": flop / alone / 1e9, "in_scan": flop / in_scan / 1e9})
            print(rows[-1], flush=True)
    return rows


def bench(n_members: int, steps: int, ds, space, seed: int, batch: int, peak: float, layouts):
    """One row per swarm layout; the sequential baseline is measured once and shared."""
    config = train.TrainConfig(epochs=1, batch_size=batch, fitness="accuracy", eval_batch_size=batch)
    n = steps * batch
    data = train.device_data(ds.x_train[:n], ds.y_train[:n], ds.x_val[:batch], ds.y_val[:batch])
    epoch_steps = len(ds.y_train) // batch
    shape, C, F = ds.input_shape, ds.num_classes, ds.num_features
    key = jax.random.key(seed)
    pos = jax.random.uniform(jax.random.fold_in(key, 1), (n_members, space.num_dims))
    keys = jax.random.split(jax.random.fold_in(key, 2), n_members)

    dense = train.make_dense_train(space, config, F, C, input_shape=shape)
    seq_compile = seq_run = 0.0
    archs = []
    for i in range(n_members):
        run, hp = dense.program(pos[i], n)
        archs.append(dense.describe(pos[i])[0])
        t = time.perf_counter()
        compiled = run.lower(keys[i], hp, data).compile()
        seq_compile += time.perf_counter() - t
        _, dt = _timed(compiled, keys[i], hp, data)
        seq_run += dt
    print(f"N={n_members} sequential: compile {seq_compile:.1f}s, run {seq_run:.2f}s", flush=True)

    per_example = 3 * n + batch  # forward + backward (x3) per training example, one forward per validation one
    useful_flop = per_example * sum(cnn.useful_flops_cnn(a, shape, C) for a in archs)
    epoch = epoch_steps / steps
    rows = []
    for layout in layouts:
        serial = layout == "serial"
        trainer = train.make_train(space, config, F, C, input_shape=shape, branching=serial)
        mcfg = trainer.model_config
        runner = execute.make_swarm_runner(trainer.train_member, chunk_size=1 if serial else None, log=None)
        t = time.perf_counter()
        runner.compile(keys, pos, data)
        swarm_compile = time.perf_counter() - t
        _timed(runner, keys, pos, data)  # first call
        _, swarm_run = _timed(runner, keys, pos, data)  # steady state
        computed = sum(cnn.computed_flops_cnn(mcfg, a if mcfg.branching else None) for a in archs)
        rows.append({
            "N": n_members, "layout": layout, "conv": cnn.conv_impl(mcfg.conv),
            "swarm_compile_s": swarm_compile, "swarm_epoch_s": swarm_run * epoch,
            "seq_compile_s": seq_compile, "seq_epoch_s": seq_run * epoch,
            "useful_gflops_swarm": useful_flop / swarm_run / 1e9,
            "computed_gflops_swarm": per_example * computed / swarm_run / 1e9,
            "useful_gflops_seq": useful_flop / seq_run / 1e9,
            "useful_fraction": useful_flop / (per_example * computed), "peak": peak,
        })
        print(rows[-1], flush=True)
    return rows


def _markdown(rows, args, device, peak) -> str:
    lines = [
        "# CNN swarm bench (Fashion-MNIST)",
        "",
        f"Device: {device}. jax {jax.__version__}. float32 matmul peak measured in this run "
        f"(jnp.dot 4096^3, default precision): **{peak:.0f} GFLOP/s**.",
        "Space: `cnn_space()` (1-3 blocks, filters 8-64 log, kernels 3/5, dense 32-256 log, "
        f"4 activations, Adam, lr 1e-4..1e-1 log); N random positions (seed {args.seed}); batch {args.batch}.",
        f"Each run trains {args.steps} minibatch steps (1 epoch of fit, {args.steps * args.batch} examples, "
        f"then validation on {args.batch}); run times are scaled to one Fashion-MNIST epoch (54000/{args.batch} = "
        f"{54000 // args.batch} steps). Compile = `lower().compile()`; run = second call (steady state).",
        f"Command: `python bench/bench_cnn.py {' '.join(args.argv)}`",
        "",
        "| N | swarm layout | conv | swarm compile s | swarm epoch s | seq compile s (sum) | seq epoch s (sum) | "
        "seq total / swarm total (1 epoch) | seq run / swarm run | useful GFLOP/s swarm (% peak) | "
        "computed GFLOP/s swarm (% peak) | useful GFLOP/s seq (% peak) | useful / computed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r["peak"]
        tot_sw = r["swarm_compile_s"] + r["swarm_epoch_s"]
        tot_seq = r["seq_compile_s"] + r["seq_epoch_s"]
        lines.append(
            f"| {r['N']} | {r['layout']} | {r['conv']} | {r['swarm_compile_s']:.1f} | {r['swarm_epoch_s']:.1f} | "
            f"{r['seq_compile_s']:.1f} | {r['seq_epoch_s']:.1f} | **{tot_seq / tot_sw:.2f}x** | "
            f"{r['seq_epoch_s'] / r['swarm_epoch_s']:.2f}x | "
            f"{r['useful_gflops_swarm']:.1f} ({100 * r['useful_gflops_swarm'] / p:.1f}%) | "
            f"{r['computed_gflops_swarm']:.1f} ({100 * r['computed_gflops_swarm'] / p:.1f}%) | "
            f"{r['useful_gflops_seq']:.1f} ({100 * r['useful_gflops_seq'] / p:.1f}%) | "
            f"{r['useful_fraction']:.3f} |"
        )
    lines += ["", "Ratios > 1 mean the swarm is faster.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    parser.add_argument("--no-conv-loop", dest="conv_loop", action="store_false",
                        help="skip the convolution-in-a-loop table")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else __import__("sys").argv[1:]
    ds = load_dataset("fashion_mnist", seed=0)
    space = cnn.cnn_space()
    device = f"{jax.devices()[0].device_kind} ({jax.default_backend()}), host {platform.node()}"
    peak = matmul_peak()
    print(f"device {device}; f32 matmul peak {peak:.0f} GFLOP/s", flush=True)
    conv_text = ""
    if args.conv_loop:
        conv_text = "\n".join([
            "", "## One convolution, forward + backward: alone vs inside `lax.scan` (GFLOP/s)", "",
            f"Batch 128, 8 steps; each step its own jit call, or all 8 in one `lax.scan` (as `train.fit` runs them).",
            "", "| conv | implementation | alone | inside lax.scan |", "|---|---|---|---|",
            *[f"| {r['shape']} | {r['impl']} | {r['alone']:.1f} | {r['in_scan']:.1f} |" for r in conv_in_loop()], ""])
    rows = []
    for n in args.sizes:
        rows += bench(n, args.steps, ds, space, args.seed, args.batch, peak, args.layouts)
        text = _markdown(rows, args, device, peak) + conv_text
        if args.out is not None:  # after every N: a long run that is cut off keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
