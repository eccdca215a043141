"""Scaling of the sharded swarm runner: time per round and memory vs swarm size and device count.

One round = one epoch on scikit-learn's digits (1294 train / 144 val rows,
batch 64: 20 optimizer steps per member, then validation), the study's MLP
space with up to 2 hidden layers of 8..64 units, 4 activations, log-uniform
learning rate; every member's optimizer is Adam (no optimizer choice).

Per swarm size S it reports: compile seconds; seconds per round (median of
`--repeats` rounds after the compile, new positions each round); members per
second; memory: `execute.estimate_memory` (before compiling), XLA's
`compiled.memory_analysis()` total (per device) and their ratio, and the
process's peak RSS (CPU; /proc/self/status VmHWM, a high-water mark over the
whole run) or the device's peak bytes in use (GPU). A one-at-a-time baseline
(`train.make_dense_train`: each configuration's dense network at its real size,
one `jax.jit` per configuration, as a sequential tuner trains) gives seconds
per configuration, compile included, and the swarm's speedup per member.

Device sweep (`--fake-devices 1 2 4`): the same round for a fixed S in a
subprocess per count with XLA_FLAGS=--xla_force_host_platform_device_count=N
(CPU only: fake devices share the same cores, so this measures the overhead
and correctness of sharding, not a speedup).

Usage:
    python bench/bench_scaling.py                       # CPU, S = 1..512, table to stdout
    python bench/bench_scaling.py --out bench/results/scaling_cpu.md
    python bench/bench_scaling.py --device gpu --max-swarm 4096
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def setup(epochs: int):
    import jax

    from jaxswarm import data as data_lib
    from jaxswarm import train
    from jaxswarm.models import mlp_space

    ds = data_lib.load_dataset("digits")
    xtr, xva, _ = ds.flat_splits()
    data = train.device_data(xtr, ds.y_train, xva, ds.y_val)
    space = mlp_space(max_layers=2, units=(8, 64))
    cfg = train.TrainConfig(epochs=epochs, batch_size=64)
    trainer = train.make_train(space, cfg, xtr.shape[1], ds.num_classes)
    dense = train.make_dense_train(space, cfg, xtr.shape[1], ds.num_classes)
    return jax, space, cfg, trainer, dense, data, (len(xtr), len(xva))


def peak_device_bytes(jax) -> int | None:
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def rss_bytes() -> int:
    """Peak resident memory of this process (VmHWM; ru_maxrss survives exec and would show the parent's)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(sizes, repeats: int, epochs: int, chunk_size=None) -> list[dict]:
    """One row per swarm size; `chunk_size` forces chunks (members per device at once)."""
    jax, space, cfg, trainer, _, data, (n_train, n_val) = setup(epochs)
    from jaxswarm import execute, optim

    optimizers = optim.optimizer_names(space)
    rows = []
    for s in sizes:
        est = execute.estimate_memory(trainer.family, trainer.model_config, cfg, s, n_train, n_val,
                                      optimizers=optimizers)
        runner = execute.make_swarm_runner(trainer.train_member, chunk_size=chunk_size, log=None)
        keys = jax.random.split(jax.random.key(s), s)
        pos = jax.random.uniform(jax.random.key(s + 1), (s, space.num_dims))
        compiled = runner.compile(keys, pos, data)
        ma = execute.memory_analysis(compiled)
        plan = runner.plan(s)
        per_dev_est = execute.estimate_memory(trainer.family, trainer.model_config, cfg, plan.chunk_size,
                                              n_train, n_val, optimizers=optimizers)["total"]
        times = []
        for r in range(repeats):
            pos = jax.random.uniform(jax.random.key(1000 * s + r), (s, space.num_dims))
            t0 = time.perf_counter()
            jax.block_until_ready(runner(keys, pos, data).fitness)
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        rows.append(dict(S=s, devices=plan.num_devices, chunks=plan.num_chunks, compile_s=runner.compile_seconds,
                         round_s=t, members_per_s=s / t, est_bytes=est["total"], est_per_device=per_dev_est,
                         xla_bytes=ma.get("total"), ratio=per_dev_est / ma["total"] if ma else None,
                         rss=rss_bytes(), device_peak=peak_device_bytes(jax)))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def dense_baseline(configs: int, epochs: int) -> dict:
    jax, space, cfg, trainer, dense, data, _ = setup(epochs)
    pos = jax.random.uniform(jax.random.key(7), (configs, space.num_dims))
    keys = jax.random.split(jax.random.key(8), configs)
    jax.block_until_ready(dense.train_position(keys[0], pos[0], data).fitness)  # warm JAX itself up
    t0 = time.perf_counter()
    for i in range(configs):
        jax.block_until_ready(dense.train_position(keys[i], pos[i], data).fitness)
    total = time.perf_counter() - t0
    # Train-only: the same configuration's compiled program run again.
    run, hp = dense.program(pos[0], data.x_train.shape[0])
    jax.block_until_ready(run(keys[0], hp, data).fitness)
    t1 = time.perf_counter()
    for i in range(3):
        jax.block_until_ready(run(keys[i], hp, data).fitness)
    run_only = (time.perf_counter() - t1) / 3
    return dict(configs=configs, seconds_per_config=total / configs, run_only_seconds=run_only)


def device_sweep(counts, s: int, repeats: int, epochs: int) -> list[dict]:
    rows = []
    for n in counts:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--sizes", str(s),
               "--repeats", str(repeats), "--epochs", str(epochs)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1])[0])
    return rows


def _mib(b) -> str:
    return "-" if b is None else f"{b / 2**20:.1f}"


def table(rows, dense: dict | None, device_name: str) -> str:
    lines = [
        "| S | devices | chunks | compile s | s / round | members / s | estimate MiB (per device) "
        "| XLA MiB (per device) | estimate / XLA | peak RSS MiB | device peak MiB | speedup per member vs one-at-a-time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        speed = "-"
        if dense:
            speed = (f"{dense['seconds_per_config'] / (r['round_s'] / r['S']):.1f}x "
                     f"({dense['run_only_seconds'] / (r['round_s'] / r['S']):.1f}x train-only)")
        lines.append(
            f"| {r['S']} | {r['devices']} | {r['chunks']} | {r['compile_s']:.1f} | {r['round_s']:.3f} "
            f"| {r['members_per_s']:.1f} | {_mib(r['est_per_device'])} | {_mib(r['xla_bytes'])} "
            f"| {r['ratio']:.2f} | {_mib(r['rss'])} | {_mib(r['device_peak'])} | {speed} |")
    text = f"Device: {device_name}\n\n" + "\n".join(lines)
    if dense:
        text += (f"\n\nOne-at-a-time baseline ({dense['configs']} configurations, dense network at real size, "
                 f"one jit each): {dense['seconds_per_config']:.2f} s per configuration including its compile, "
                 f"{dense['run_only_seconds']:.3f} s train-only (compiled program reused).")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--max-swarm", type=int, default=512)
    ap.add_argument("--sizes", type=int, nargs="*", help="swarm sizes (default: powers of 2 up to --max-swarm)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dense-configs", type=int, default=4)
    ap.add_argument("--fake-devices", type=int, nargs="*", default=None, help="CPU device sweep counts, e.g. 1 2 4")
    ap.add_argument("--sweep-swarm", type=int, default=64)
    ap.add_argument("--chunked", nargs="*", default=["512:64"], metavar="S:C",
                    help="extra rows with the swarm forced into chunks of C members per device")
    ap.add_argument("--out", help="write the markdown tables here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sizes = args.sizes or [2**k for k in range(args.max_swarm.bit_length()) if 2**k <= args.max_swarm]
    if args.worker:
        print(json.dumps(measure(sizes, args.repeats, args.epochs)))
        return
    import jax

    dev = jax.devices()[0]
    device_name = f"{dev.device_kind} ({dev.platform}, {jax.device_count()} device(s), jax {jax.__version__})"
    dense = dense_baseline(args.dense_configs, args.epochs) if args.dense_configs else None
    rows = measure(sizes, args.repeats, args.epochs)
    for pair in args.chunked:
        s, c = (int(v) for v in pair.split(":"))
        rows += measure([s], args.repeats, args.epochs, chunk_size=c)
    text = table(rows, dense, device_name)
    if args.fake_devices:
        sweep = device_sweep(args.fake_devices, args.sweep_swarm, args.repeats, args.epochs)
        text += f"\n\nFake CPU devices, S = {args.sweep_swarm} (the same 2 cores shared by all devices):\n\n"
        text += table(sweep, None, "cpu fake devices").split("\n\n", 1)[1]
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
