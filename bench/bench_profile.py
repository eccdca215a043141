"""Bench: where one round of the packed MLP layout spends its time, op by op (issue 3).

Trains the N random configurations of ``bench_trainer.py`` (same space,
seed, batch and data) for one epoch with the packed layout, once to warm up
and once under ``jax.profiler``, then reads the profiler's trace: every XLA
operation the CPU runtime executed is an event named after its HLO
instruction. Each instruction is sorted into a category from its HLO text
(a fusion by the operations inside it):

* ``matmul``: a dot or convolution (YNNPACK / Eigen kernels);
* ``gather``: gathers, scatters, dynamic slices and updates (row gathers of the
  packed columns, minibatch rows, parameter/state indexing);
* ``transcendental``: elementwise work with exp / log / tanh / logistic / erf
  (activations, softmax, Adam's sqrt is ``elementwise``);
* ``reduce``: reductions (loss means, argmax, bias gradients);
* ``copy``: copies and transposes;
* ``rng``: random bits (the epoch's permutation);
* ``elementwise``: any other fusion (selects, Adam updates, adds).

Times are summed over the runtime's threads (CPU time, so they can exceed
the wall time when ops run in parallel); the container ops (while loops,
calls, conditionals) are left out so nothing counts twice. The table gives
each category's share of the summed op time and the top operations with
the JAX operation (``metadata.op_name``) they came from.

Run:  python bench/bench_profile.py --out bench/results/profile_packed_cpu.md
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from jaxswarm import train
from jaxswarm.data import load_dataset
from jaxswarm.layouts import packed
from jaxswarm.models import mlp

sys.path.insert(0, str(Path(__file__).parent))
from bench_trainer import SPACES, cut_data, random_swarm  # noqa: E402  (the trainer bench's data, spaces, draws)

CONTAINERS = {"while", "conditional", "call", "parameter", "get-tuple-element", "tuple", "constant", "bitcast"}
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?\s([a-z][a-z0-9\-]*)\((.*)$")
_COMP = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*(?:\(.*\))?.*\{\s*$")


def parse_hlo(text: str) -> tuple[dict, dict]:
    """HLO module text -> ({instruction: (opcode, calls, op_name)}, {computation: [opcodes]})."""
    instrs, comps, current = {}, collections.defaultdict(list), None
    for line in text.splitlines():
        m = _COMP.match(line)
        if m and "=" not in line.split("{")[0]:
            current = m.group(1)
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name, opcode, rest = m.groups()
        calls = re.search(r"calls=%?([\w.\-]+)", rest)
        op_name = re.search(r'op_name="([^"]*)"', rest)
        instrs[name] = (opcode, calls.group(1) if calls else None, op_name.group(1) if op_name else "")
        comps[current].append(opcode)
    return instrs, comps


def category(opcodes: list[str]) -> str:
    ops = set(opcodes)
    if ops & {"dot", "convolution"}:
        return "matmul"
    if ops & {"gather", "scatter", "dynamic-slice", "dynamic-update-slice"}:
        return "gather"
    if ops & {"rng-bit-generator", "rng"}:
        return "rng"
    if ops & {"exponential", "log", "tanh", "logistic", "erf", "log-plus-one", "exponential-minus-one"}:
        return "transcendental"
    if "reduce" in ops or "reduce-window" in ops:
        return "reduce"
    if ops <= {"copy", "transpose", "parameter", "bitcast", "reshape", "broadcast"}:
        return "copy"
    return "elementwise"


def classify(name: str, instrs: dict, comps: dict) -> tuple[str, str] | None:
    """(category, op_name) of an event's instruction; None for containers and non-XLA events."""
    if name not in instrs:
        return None
    opcode, calls, op_name = instrs[name]
    if opcode in CONTAINERS:
        return None
    if opcode == "fusion" or (opcode == "custom-call" and calls):
        return category(comps.get(calls, [])), op_name
    return category([opcode]), op_name


def trace_events(log_dir: Path) -> list[dict]:
    files = sorted(log_dir.rglob("*.trace.json.gz")) or sorted(log_dir.rglob("*.json.gz"))
    if not files:
        raise RuntimeError(f"jax.profiler wrote no trace under {log_dir}")
    d = json.load(gzip.open(files[-1]))
    return [e for e in (d["traceEvents"] if isinstance(d, dict) else d) if e.get("ph") == "X"]


def union_length(intervals) -> float:
    """Total length covered by a set of [start, end) intervals."""
    total, end = 0.0, -np.inf
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def short(op_name: str) -> str:
    """The last few path parts of a JAX op_name (the primitive and what it sits in)."""
    parts = [p for p in op_name.split("/") if p and not p.startswith("jit(")]
    return "/".join(parts[-3:]) or "-"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--members", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=60,
                   help="minibatches profiled (the training set is cut to steps x batch images, the validation "
                        "set in proportion): the profiler keeps a bounded number of events")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--space", default="plain", choices=tuple(SPACES),
                   help="bench_trainer.py's space (all: five optimizers, beta2, eps, init schemes, per-layer "
                        "activations; all_batch: and a batch-size choice, see --batch-group)")
    p.add_argument("--batch-group", type=int, default=None,
                   help="with a batch-size space: profile the members of this batch size alone, in their "
                        "size's trainer (default: the size most members draw)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    ds = load_dataset(args.dataset)
    space = SPACES[args.space]()  # as bench_trainer.py
    config = train.TrainConfig(epochs=1, batch_size=args.batch)
    F, C, N = ds.num_features, ds.num_classes, args.members
    data, _, full_steps = cut_data(ds, args.batch, args.steps)
    pos, keys, archs = random_swarm(space, F, C, N, args.seed)
    trainer = packed.make_packed_train(space, config, F, C, groups=args.groups,
                                       examples=full_steps * args.batch * config.epochs)  # plan for the full epoch
    if trainer.by_batch is not None:  # one packed trainer per batch size: profile one size's members
        members = trainer.split(pos)  # batch size -> its members
        b = args.batch_group or max(sorted(members), key=lambda b: len(members[b]))  # ties: the smallest
        if b not in members:
            raise SystemExit(f"--batch-group {b}: no member of the {N} draws that batch size "
                             f"(sizes drawn: {sorted(members)})")
        idx = members[b]
        trainer, pos, keys, archs = trainer.by_batch[b], pos[idx], keys[idx], [archs[i] for i in idx]
        args.batch, N = b, len(idx)  # its steps are batches of b
    elif args.batch_group is not None:
        raise SystemExit(f"--batch-group needs a space with a batch-size choice, not {args.space!r}")
    shuffle_key = jax.random.key(123)
    compiled, plan = trainer.compile(keys, pos, data, shuffle_key)
    instrs, comps = parse_hlo(compiled.as_text())
    jax.block_until_ready(compiled(keys, pos, data, shuffle_key, plan.tables))  # warm-up
    t = time.perf_counter()
    jax.block_until_ready(compiled(keys, pos, data, shuffle_key, plan.tables))
    plain = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            jax.block_until_ready(compiled(keys, pos, data, shuffle_key, plan.tables))
        wall = time.perf_counter() - t
        events = trace_events(Path(tmp))
    ts = [e["ts"] for e in events if e["name"] == "ThunkExecutor::Execute"]
    span = (max(ts) - min(ts)) / 1e6 if ts else 0.0

    by_cat, by_op, intervals = collections.Counter(), collections.Counter(), []
    for e in events:
        c = classify(e["name"], instrs, comps)
        if c is None:
            continue
        by_cat[c[0]] += e["dur"]
        by_op[(e["name"], c[0], short(c[1]))] += e["dur"]
        intervals.append((e["ts"], e["ts"] + e["dur"]))
    total = sum(by_cat.values())
    busy = union_length(intervals) / 1e6
    steps = data.x_train.shape[0] // args.batch
    useful = sum(mlp.useful_flops(a, F, C) for a in archs)
    useful_flop = 3 * useful * steps * args.batch + useful * data.x_val.shape[0]

    lines = [
        f"# Packed layout, one epoch, op by op ({args.dataset}, N = {N}, batch {args.batch}, space {args.space})",
        "",
        f"Command: `python bench/bench_profile.py {' '.join(sys.argv[1:])}`",
        f"Machine: {platform.machine()}, {jax.device_count()} device(s) {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}.",
        f"Plan: {packed.describe_plan(plan.shape)}.",
        "",
        f"One epoch cut to {steps} of its {full_steps} minibatches (validation set in proportion). "
        f"Without the profiler: {plain:.2f} s, {1e3 * plain / steps:.2f} ms per step, useful "
        f"{useful_flop / plain / 1e9:.1f} GFLOP/s. Under the profiler: {wall:.2f} s; its trace spans "
        f"{span:.2f} s (a trace much shorter than the run has lost events: lower --steps).",
        f"Op time summed over threads: {total / 1e6:.2f} s; some op running: {busy:.2f} s of the span, so "
        f"{span - busy:.2f} s ({100 * (span - busy) / max(span, 1e-9):.0f}%) passes between ops (the runtime's "
        "dispatch, loop control and waits).",
        "",
        "| category | op time s | share |",
        "|---|---|---|",
    ]
    for cat, us in by_cat.most_common():
        lines.append(f"| {cat} | {us / 1e6:.3f} | {100 * us / total:.1f}% |")
    lines += ["", f"Top {args.top} operations:", "", "| HLO instruction | category | from (JAX op) | op time s | share |",
              "|---|---|---|---|---|"]
    for (name, cat, src), us in by_op.most_common(args.top):
        lines.append(f"| {name} | {cat} | {src} | {us / 1e6:.3f} | {100 * us / total:.1f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
