"""Bench: a swarm of masked CNNs as ONE program vs one dense CNN at a time, on Fashion-MNIST.

For N random configurations of ``cnn.cnn_space()`` (1-3 conv blocks, 8-64
filters, 3x3 or 5x5 kernels, dense head 32-256, relu/tanh/sigmoid/elu, Adam),
train each for the same number of minibatch steps (batch 128):

* swarm: ``jit(vmap(train_member))`` over the max-size masked CNN
  (``cnn.init_cnn`` / ``cnn.apply_cnn``), one compile;
* sequential: for each configuration its real-size dense CNN
  (``cnn.init_dense_cnn`` / ``cnn.apply_dense_cnn``), one ``jit`` each (what a
  sequential tuner that builds each trial's model pays).

Both use ``train.fit`` (same loop, optimizer code, data). Timings are split
into compile and run; the run time of ``--steps`` steps is scaled to one
epoch (54000 / 128 = 421 steps) and reported as such. Useful FLOP/s counts
each member's real network (``useful_flops_cnn``, x3 for a training step);
computed FLOP/s counts the max-size network every member runs
(``computed_flops_cnn``). Both are given as a fraction of a float32 matmul
peak timed in the same run (a large ``jnp.dot`` at default precision, which
on an NVIDIA GPU means TF32 for both the peak and the training).

Run:  python bench/bench_cnn.py --sizes 8 32 --steps 4 --out bench/results/cnn_bench.md

The helpers ``make_cnn_trainer`` / ``make_dense_cnn_trainer`` are the
minimal CNN runner (``experiments/cnn_fashion.py`` uses them too) until
``train.make_train`` gets a ``model="cnn"`` switch.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxswarm import cnn, optim, train
from jaxswarm.data import load_dataset


class CNNTrainer(NamedTuple):
    train_member: Callable  # (key, position_D, data) -> Metrics (data flat [N, H*W*C])
    train_swarm: Callable  # jit(vmap(train_member))
    hparams: Callable  # position_D -> (CNNArch, OptHParams)
    model_config: cnn.CNNConfig
    fit_member: Callable  # (key, position_D, data) -> (Metrics, variables)


def _optimizer_names(space):
    """The space's optimizer options; ``OptHParams.optimizer`` indexes them (as train.optimizer_names)."""
    p = space.params.get("optimizer")
    return ("adam",) if p is None else tuple(getattr(p, "options", (getattr(p, "value", "adam"),)))


def make_cnn_trainer(space, config: train.TrainConfig, input_shape, num_classes, n_train) -> CNNTrainer:
    """Per-member masked-CNN trainer (the CNN twin of ``train.make_train``); data stays flat."""
    mcfg = cnn.CNNConfig(tuple(input_shape), num_classes, **cnn.cnn_limits(space))
    hparams = cnn.cnn_hparams(space, mcfg)
    opt = optim.make_optimizer(_optimizer_names(space), total_steps=train.total_steps(config, n_train))

    def fit_member(key, position_D, data):
        arch, hp = hparams(position_D)
        init_fn = lambda k: cnn.init_cnn(k, arch, mcfg)
        apply_fn = lambda v, x, tr, k: cnn.apply_cnn(v, x, arch, mcfg, train=tr, key=k)
        return train.fit(key, init_fn, apply_fn, opt, hp, data, config)

    train_member = lambda key, position_D, data: fit_member(key, position_D, data)[0]
    train_swarm = jax.jit(jax.vmap(train_member, in_axes=(0, 0, None)))
    return CNNTrainer(train_member, train_swarm, hparams, mcfg, fit_member)


def swarm_as_map(trainer: CNNTrainer):
    """The same members in ONE program, run one after another (``lax.map``) instead of vmapped.

    Under vmap, members' convolutions become one grouped convolution
    (``feature_group_count = S``), which XLA:CPU runs far below its plain
    convolution speed; ``lax.map`` keeps plain convolutions, still one
    compile for the whole swarm and no recompiles as particles move.
    """

    def run(keys, positions, data):
        return jax.lax.map(lambda kp: trainer.train_member(kp[0], kp[1], data), (keys, positions))

    return jax.jit(run)


def make_dense_cnn_trainer(space, config: train.TrainConfig, input_shape, num_classes, n_train):
    """Sequential counterpart: real-size CNN, one jit per configuration.

    Returns ``(train_position(key, position_D, data, lower_only=False), describe)``.
    """
    mcfg = cnn.CNNConfig(tuple(input_shape), num_classes, **cnn.cnn_limits(space))
    hparams = jax.jit(cnn.cnn_hparams(space, mcfg))
    steps = train.total_steps(config, n_train)

    def describe(position_D):
        arch, hp = hparams(jnp.asarray(position_D, jnp.float32))
        return cnn.cnn_arch_to_python(arch), jax.tree.map(np.asarray, hp)

    def build(position_D):
        arch, hp = describe(position_D)
        opt = optim.make_optimizer((_optimizer_names(space)[int(hp.optimizer)],), total_steps=steps)
        hp = jax.tree.map(jnp.asarray, hp._replace(optimizer=np.int32(0)))
        init_fn = lambda k: cnn.init_dense_cnn(k, arch, input_shape, num_classes)

        def apply_fn(v, x, tr, k):
            x = x.reshape(-1, *input_shape)
            return cnn.apply_dense_cnn(v, x, arch, train=tr, key=k, return_batch_stats=True)

        run = jax.jit(lambda k, h, d: train.fit(k, init_fn, apply_fn, opt, h, d, config)[0])
        return run, hp, arch

    return build, describe


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


def bench(n_members: int, steps: int, ds, space, seed: int, batch: int, peak: float, layouts) -> list[dict]:
    """One row per swarm layout; the sequential baseline is measured once and shared."""
    config = train.TrainConfig(epochs=1, batch_size=batch, fitness="accuracy", eval_batch_size=batch)
    n = steps * batch
    data = train.device_data(ds.x_train[:n], ds.y_train[:n], ds.x_val[:batch], ds.y_val[:batch])
    epoch_steps = len(ds.y_train) // batch
    shape, C = ds.input_shape, ds.num_classes
    key = jax.random.key(seed)
    pos = jax.random.uniform(jax.random.fold_in(key, 1), (n_members, space.num_dims))
    keys = jax.random.split(jax.random.fold_in(key, 2), n_members)

    build, describe = make_dense_cnn_trainer(space, config, shape, C, n)
    seq_compile = seq_run = 0.0
    useful = []
    for i in range(n_members):
        run, hp, arch = build(pos[i])
        useful.append(cnn.useful_flops_cnn(arch, shape, C))
        t = time.perf_counter()
        lowered = run.lower(keys[i], hp, data).compile()
        seq_compile += time.perf_counter() - t
        _, dt = _timed(lowered, keys[i], hp, data)
        seq_run += dt
    print(f"N={n_members} sequential: compile {seq_compile:.1f}s, run {seq_run:.2f}s", flush=True)

    trainer = make_cnn_trainer(space, config, shape, C, n)
    scale = epoch_steps / steps
    examples = steps * batch
    # forward + backward (x3) per training example, plus one forward per validation example
    useful_flop = (3 * examples + batch) * sum(useful)
    computed_flop = (3 * examples + batch) * n_members * cnn.computed_flops_cnn(trainer.model_config)
    rows = []
    for layout in layouts:
        program = trainer.train_swarm if layout == "vmap" else swarm_as_map(trainer)
        t = time.perf_counter()
        compiled = program.lower(keys, pos, data).compile()
        swarm_compile = time.perf_counter() - t
        _timed(compiled, keys, pos, data)  # first call
        _, swarm_run = _timed(compiled, keys, pos, data)  # steady state
        rows.append({
            "N": n_members,
            "layout": layout,
            "swarm_compile_s": swarm_compile,
            "swarm_epoch_s": swarm_run * scale,
            "seq_compile_s": seq_compile,
            "seq_epoch_s": seq_run * scale,
            "useful_gflops_swarm": useful_flop / swarm_run / 1e9,
            "computed_gflops_swarm": computed_flop / swarm_run / 1e9,
            "useful_gflops_seq": useful_flop / seq_run / 1e9,
            "useful_fraction": sum(useful) / (n_members * cnn.computed_flops_cnn(trainer.model_config)),
            "peak": peak,
        })
        print(rows[-1], flush=True)
    return rows


def _markdown(rows, args, device, peak) -> str:
    lines = [
        "# CNN swarm bench (Fashion-MNIST)",
        "",
        f"Device: {device}. jax {jax.__version__}. float32 matmul peak measured in this run "
        f"(jnp.dot 4096^3, default precision): **{peak:.0f} GFLOP/s**.",
        f"Space: `cnn_space()` (1-3 blocks, filters 8-64 log, kernels 3/5, dense 32-256 log, "
        f"4 activations, Adam, lr 1e-4..1e-1 log); N random positions (seed {args.seed}); batch {args.batch}.",
        f"Each run trains {args.steps} minibatch steps (1 epoch of fit, {args.steps * args.batch} examples, "
        f"then validation on {args.batch}); run times are scaled to one Fashion-MNIST epoch (54000/{args.batch} = "
        f"{54000 // args.batch} steps). Compile = `lower().compile()`; run = second call (steady state).",
        "",
        "| N | swarm layout | swarm compile s | swarm epoch s | seq compile s (sum) | seq epoch s (sum) | "
        "swarm total / seq total (1 epoch) | swarm run / seq run | useful GFLOP/s swarm (% peak) | "
        "computed GFLOP/s swarm (% peak) | useful GFLOP/s seq (% peak) | useful / computed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r["peak"]
        tot_sw = r["swarm_compile_s"] + r["swarm_epoch_s"]
        tot_seq = r["seq_compile_s"] + r["seq_epoch_s"]
        lines.append(
            f"| {r['N']} | {r['layout']} | {r['swarm_compile_s']:.1f} | {r['swarm_epoch_s']:.1f} | {r['seq_compile_s']:.1f} | "
            f"{r['seq_epoch_s']:.1f} | {tot_sw / tot_seq:.2f} | {r['swarm_epoch_s'] / r['seq_epoch_s']:.2f} | "
            f"{r['useful_gflops_swarm']:.1f} ({100 * r['useful_gflops_swarm'] / p:.1f}%) | "
            f"{r['computed_gflops_swarm']:.1f} ({100 * r['computed_gflops_swarm'] / p:.1f}%) | "
            f"{r['useful_gflops_seq']:.1f} ({100 * r['useful_gflops_seq'] / p:.1f}%) | "
            f"{r['useful_fraction']:.3f} |"
        )
    lines += ["", "Ratios < 1 mean the swarm is faster.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layouts", nargs="+", default=["vmap"], choices=["vmap", "map"],
                        help="vmap: jit(vmap(member)); map: jit(lax.map(member)), members in turn")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    ds = load_dataset("fashion_mnist", seed=0)
    space = cnn.cnn_space()
    device = f"{jax.devices()[0].device_kind} ({jax.default_backend()}), host {platform.node()}"
    peak = matmul_peak()
    print(f"device {device}; f32 matmul peak {peak:.0f} GFLOP/s", flush=True)
    rows = []
    for n in args.sizes:
        rows += bench(n, args.steps, ds, space, args.seed, args.batch, peak, args.layouts)
        text = _markdown(rows, args, device, peak)
        if args.out is not None:  # after every N: a long run that is cut off keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
