"""Bench: what limits the packed MLP layout's useful FLOP/s on this machine (issue 3's 60%-of-peak target).

Times, side by side in one run, the pieces of one packed training step at
the shapes the N = 32 Fashion-MNIST bench produces (batch 128, 784 inputs,
32 members with widths log-uniform in 16..256, so about 2800 first-layer
columns together and ~90-wide tail layers), each inside a ``lax.scan`` of
``--steps`` iterations as ``train.fit`` runs them:

* the float32 matmul peak (4096^3 ``jnp.dot``);
* the packed first layer, forward + backward: ``[128, 784] @ [784, W]``;
* one tail layer of every member, forward + backward, as one batched matmul
  ``[S, 128, u] @ [S, u, u]``;
* an Adam update over the first layer's ``784 x W`` parameters (memory-bound:
  it reads and writes ~5 arrays of that size per step) and an SGD update.

Prints GFLOP/s (matmuls) or GB/s and milliseconds per step, and the share of
a step each piece takes.

Run:  python bench/bench_limits.py --out bench/results/limits_cpu.md
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _scan_time(step, carry, steps: int) -> float:
    run = jax.jit(lambda c: jax.lax.scan(lambda c, _: (step(c), None), c, None, length=steps)[0])
    jax.block_until_ready(run(carry))
    t = time.perf_counter()
    jax.block_until_ready(run(carry))
    return (time.perf_counter() - t) / steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--inputs", type=int, default=784)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    widths = np.exp(rng.uniform(np.log(16), np.log(256), args.members)).round().astype(int)
    W, u, S, B, F = int(widths.sum()), int(np.mean(widths)), args.members, args.batch, args.inputs
    key = jax.random.key(args.seed)
    rows = []

    n = 4096
    a = jax.random.normal(key, (n, n))
    peak_s = _scan_time(lambda a: a @ a * 1e-3, a, 4)
    peak = 2 * n**3 / peak_s / 1e9
    rows.append(("matmul peak, 4096^3", f"{peak:.0f} GFLOP/s", None))

    x = jax.random.normal(key, (B, F))
    dz = jax.random.normal(key, (B, W))
    w1 = jax.random.normal(key, (F, W)) * 0.01

    def first_layer(w):  # forward, grad wrt W (x^T dz), grad wrt x (dz W^T): 3 matmuls
        z = x @ w
        gw = x.T @ (dz * z)
        gx = (dz * z) @ w.T
        return w - 1e-6 * gw - 1e-9 * jnp.sum(gx)

    t1 = _scan_time(first_layer, w1, args.steps)
    flop1 = 3 * 2 * B * F * W
    rows.append((f"packed first layer fwd+bwd [{B},{F}]@[{F},{W}]", f"{flop1 / t1 / 1e9:.0f} GFLOP/s", t1))

    h = jax.random.normal(key, (S, B, u))
    wt = jax.random.normal(key, (S, u, u)) * 0.1

    def tail(w):
        z = jnp.einsum("sbi,sij->sbj", h, w)
        gw = jnp.einsum("sbi,sbj->sij", h, z)
        gh = jnp.einsum("sbj,sij->sbi", z, w)
        return w - 1e-6 * gw - 1e-9 * jnp.sum(gh)

    t2 = _scan_time(tail, wt, args.steps)
    flop2 = 3 * 2 * S * B * u * u
    rows.append((f"one tail layer of {S} members fwd+bwd [{S},{B},{u}]@[{S},{u},{u}]",
                 f"{flop2 / t2 / 1e9:.0f} GFLOP/s", t2))

    for name, opt in [("adam", optax.adam(1e-3)), ("sgd", optax.sgd(1e-3))]:
        state = opt.init(w1)
        g = jax.random.normal(key, w1.shape) * 1e-3

        def update(c, opt=opt, g=g):
            w, s = c
            upd, s = opt.update(g + 1e-7 * w, s, w)
            return optax.apply_updates(w, upd), s

        t = _scan_time(update, (w1, state), args.steps)
        arrays = 5 if name == "adam" else 3  # read g, w (and m, v), write w (and m, v): about
        gbs = arrays * w1.size * 4 / t / 1e9
        rows.append((f"{name} update over {F}x{W} first-layer params", f"~{gbs:.0f} GB/s", t))

    step = t1 + 2 * t2 + rows[-2][2]  # first layer + ~2 tail layers + adam
    lines = [
        "# What limits the packed layout's useful FLOP/s (CPU)",
        "",
        f"Host {platform.node()}, {jax.devices()[0].device_kind}, jax {jax.__version__}. "
        f"Command: `python bench/bench_limits.py {' '.join(argv or __import__('sys').argv[1:])}`",
        f"{S} members, widths log-uniform 16..256 (sum {W}, mean {u}), batch {B}, {F} inputs; "
        f"each piece timed inside a lax.scan of {args.steps} steps.",
        "",
        "| piece | rate | ms per step | share of a step (first layer + 2 tail layers + adam) |",
        "|---|---|---|---|",
    ]
    for name, rate, t in rows:
        share = "" if t is None or "sgd" in name else f"{100 * t / step:.0f}%"
        lines.append(f"| {name} | {rate} | {'' if t is None else f'{1e3 * t:.2f}'} | {share} |")
    useful = (flop1 + 2 * flop2) / step / 1e9
    lines += ["", f"That step's matmul FLOPs over its time: {useful:.0f} GFLOP/s = "
              f"**{100 * useful / peak:.0f}% of the peak** (an upper bound for the real step, which also "
              "gathers rows, evaluates activations and the loss).", ""]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
