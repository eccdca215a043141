"""Benchmark swarm training layouts against sequential per-configuration training.

Usage::

    .venv/bin/python bench/bench_trainer.py [--dataset fashion_mnist|digits]
        [--sizes 1,8,32,128] [--epochs 1[,5,10]] [--steps 0] [--full-steps-upto 32]
        [--layout masked,packed,auto,sequential,sequential_torch] [--seq-sample 16] [--groups 8]
        [--out bench/results/trainer_cpu.md]

    .venv/bin/python bench/bench_trainer.py --study-rounds R [--dataset digits]
        [--sizes 16] [--epochs 5] [--steps 0] [--layout auto,masked,packed]
        [--out bench/results/trainer_study_cpu.md]

Layout rows (the default mode). For every swarm size N the same N random
configurations (positions drawn uniformly in the unit box of
``mlp_space(max_layers=3, units=(16, 256))`` from a fixed seed; Adam via the
trainer's default) are trained for one round of E epochs by each layout, for
every E of the comma list ``--epochs`` (all in one run; a single int works as
before):

* ``masked``: ``train.make_train``'s member through
  ``execute.make_swarm_runner`` (max-size masked networks, one ``jit(vmap)``
  program).
* ``serial``: the same member, ``branching``, one member at a time (the
  serial layout: ``execute``'s runner in chunks of one).
* ``packed``: ``layouts.packed.make_packed_train`` (shared minibatches, first
  layers packed into one matmul, tails in a few width groups).
* ``auto``: the layout ``jaxswarm.layouts.auto.choose`` picks for a study of
  this N and E (one round, the bench's batch size, the full training set's
  size), run by that layout's row code; labelled ``auto->packed`` (or what
  was chosen), the reason in the JSON row and under the table.
* ``sequential``: what a sequential tuner pays: each configuration trained
  alone, dense at its real size, one ``jax.jit`` per configuration (the code
  of ``train.make_dense_train``, with its ahead-of-time compile timed apart).
  Its programs depend on E, so it runs for every E as well.
* ``sequential_torch``: the same configurations one after another in PyTorch
  eager (``jaxswarm.tuners.torch_backend``, ``jaxswarm baseline --backend
  torch``): what a user tuning one PyTorch network at a time pays. Nothing
  compiles (``compile s`` 0); torch's first-use costs (lazy imports at the
  first optimizer step), the backend's one small JAX decoder program and the
  metrics' eager ops are warmed before the clock starts. ``--torch-threads``
  (default 0: torch's own, one per core, as a user runs it) sets torch's
  intra-op threads, recorded as the JSON row's ``torch_threads``. On a quiet
  2-core machine torch's default (2 threads) trained the configurations
  faster than 1 thread (median 85.3 s against 97.1 s for N = 32, 8 sampled
  and scaled, five seeds); on
  a CPU whose cores also run other work its pool waits for its threads at
  every tiny operation and 1 thread is faster (bench/NOTES.md).
  Needs ``pip install torch==2.13.0``.

Columns (one markdown table per dataset, one row per N, E and layout):

* ``compiles``: XLA programs really compiled during the row's compile+train,
  counted with a ``jax.monitoring`` listener on
  ``/jax/core/compile/backend_compile_duration`` (small eager helper
  programs included; sequential: only the sampled configurations ran).
  JAX's in-memory caches are cleared before every row, so each row pays
  what a fresh process would. In parentheses: those of >= 1 s
  (``BIG_COMPILE_S``, a heuristic), i.e. the training programs; the rest
  are the tiny programs of eager ops (5-700 ms each). The JSON row's
  ``compiled_names`` holds ``{name: [count, seconds]}`` to check.
* ``XLA compile s``: the seconds that listener saw (backend compile only, no
  tracing or lowering; not scaled by ``--seq-sample``).
* ``compile s``: wall time of ``lower().compile()`` (sequential: summed and
  scaled by N / K); ``train s``: one call of the compiled program,
  ``block_until_ready`` (``*``: scaled from capped steps); ``total s``: both.
* ``x seq (total)``, ``x seq (train)``: the sequential row of the same N and
  E divided by this row (total and train time); ``x torch (total)``: the
  sequential_torch row's total divided by this row's (jaxswarm against
  PyTorch eager, where ``x seq`` is against one jit per configuration).
* GFLOP/s useful and computed, each as % of the matmul peak measured in the
  same run; useful/computed; XLA memory and max RSS (below).

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

Study mode (``--study-rounds R``). Instead of the layout rows, for each N of
``--sizes`` (the first ``--epochs`` value is used) and each L of
``--layout`` (study layouts: ``auto``, ``masked``, ``serial``, ``packed``;
default ``auto,masked,packed``) a real ``jaxswarm.study.Study`` of R rounds
runs on ``mlp_space(max_layers=3, units=(16, 256))`` (fresh mode,
``retrain=False``, no progress, no output folder). ``--steps S`` cuts the
dataset's train split to S x batch examples (validation in proportion; N <=
``--full-steps-upto`` uncut); nothing is scaled here. Columns: ``resolved``
(``study.layout.name``), ``programs`` (XLA compiles counted by the listener
over building the Study and ``study.run()``; JAX's caches cleared before
each study; in parentheses those of >= 1 s, as above), ``XLA compile s``
(their summed seconds), ``init s`` (building the Study), ``run s`` (wall
clock of ``study.run()``), ``compile share`` (XLA compile s / (init s +
run s)), ``best fitness``, train/val examples, max RSS. The auto rows'
reasons are listed under the table.
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

from jaxswarm import execute, train
from jaxswarm.data import load_dataset
from jaxswarm.layouts import LAYOUT_NAMES
from jaxswarm.layouts import auto as auto_layout
from jaxswarm.layouts import packed
from jaxswarm.layouts.masked import DataShape
from jaxswarm.models import family_of, mlp, mlp_space
from jaxswarm.models.layers import INIT_SCHEMES
from jaxswarm.study import Study, StudyConfig
from jaxswarm.tuners import torch_backend

BENCH_LAYOUTS = ("masked", "packed", "serial", "auto", "sequential", "sequential_torch")  # the layout rows' names
AUTO_RUNS = ("masked", "packed", "serial")  # what an "auto" row can run (the layouts with a row function here)
# A heuristic: a compile this long is a training program. Eager ops (PSO steps, key splits,
# decodes) compile tiny programs of 5-700 ms each on the busy 2-core CPUs here, the layouts'
# programs took 1.5-10 s even at N=4 on digits. The JSON rows' compiled_names tell them apart.
BIG_COMPILE_S = 1.0


class CompileCounter:
    """Counts XLA backend compiles while entered: ``count``, their summed ``seconds``, ``programs``.

    ``programs`` lists ``(fun_name, seconds)`` of each compile.
    """

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __enter__(self):
        self.count, self.seconds, self.programs = 0, 0.0, []
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def _listen(self, event, duration, **kwargs):
        if event == self.EVENT:
            self.count += 1
            self.seconds += float(duration)
            self.programs.append((str(kwargs.get("fun_name")), float(duration)))

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)

    @property
    def big(self) -> int:
        """Compiles of at least `BIG_COMPILE_S` (the training programs, not eager ops' tiny ones)."""
        return sum(seconds >= BIG_COMPILE_S for _, seconds in self.programs)


def name_counts(programs) -> dict:
    """``{program name: [times compiled, seconds]}``, the most expensive first (for the JSON rows)."""
    counts: dict = {}
    for name, seconds in programs:
        n, t = counts.get(name, (0, 0.0))
        counts[name] = [n + 1, round(t + seconds, 4)]
    return dict(sorted(counts.items(), key=lambda kv: -kv[1][1]))


def parse_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--{what} takes an int or a comma list of ints, got {text!r}") from None
    if not values or min(values) < 1:
        raise SystemExit(f"--{what} needs values >= 1, got {text!r}")
    return values


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


def bench_masked(space, config, data, keys, pos, F, C, archs, serial=False):
    """The masked layout's program; `serial`: the serial layout's (branching members one at a time)."""
    trainer = train.make_train(space, config, F, C, branching=serial)
    runner = execute.make_swarm_runner(trainer.train_member, chunk_size=1 if serial else None, log=None)
    t0 = time.perf_counter()
    compiled = runner.compile(keys, pos, data)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = jax.block_until_ready(runner(keys, pos, data))  # runs the program compiled above
    train_s = time.perf_counter() - t0
    computed = mlp.computed_flops(trainer.model_config) * len(archs)
    return dict(programs=1, compile_s=compile_s, train_s=train_s, mem=memory_bytes(compiled),
                computed_fwd=computed, fitness=np.asarray(metrics.fitness))


def bench_packed(space, config, data, keys, pos, F, C, archs, groups, examples=None):
    """The packed layout's programs (a batch-size space: one per size)."""
    # `examples`: a full round's, so a capped epoch is planned as the full one it is scaled to
    trainer = packed.make_packed_train(space, config, F, C, groups=groups, examples=examples)
    shuffle_key = jax.random.key(123)
    if trainer.by_batch is None:
        parts = [(trainer, np.arange(len(archs)))]
    else:  # a batch-size space: each size's members in their own trainer (one program each)
        parts = [(trainer.by_batch[b], idx) for b, idx in trainer.split(pos).items()]
    compile_s = train_s = computed = mem = 0
    fitness, plans = [], []
    for t, idx in parts:
        t0 = time.perf_counter()
        compiled, plan = t.compile(keys[idx], pos[idx], data, shuffle_key)
        compile_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics = jax.block_until_ready(compiled(keys[idx], pos[idx], data, shuffle_key, plan.tables))
        train_s += time.perf_counter() - t0
        mem = max(mem, memory_bytes(compiled) or 0)
        computed += packed.plan_flops(plan.shape, F, C)
        fitness.append(np.asarray(metrics.fitness))
        plans.append(packed.describe_plan(plan.shape))
    return dict(programs=len(parts), compile_s=compile_s, train_s=train_s, mem=mem, computed_fwd=computed,
                fitness=np.concatenate(fitness), plan=" + ".join(plans))


def bench_sequential(space, config, data, keys, pos, F, C, archs, sample):
    """Each configuration alone, dense at its real size, one jit each (make_dense_train's program, with the
    configuration's own batch size where the space tunes it)."""
    dense = train.make_dense_train(space, config, F, C)
    n = data.x_train.shape[0]
    idx = np.arange(len(archs)) if not sample or sample >= len(archs) else \
        np.random.default_rng(0).choice(len(archs), sample, replace=False)
    compile_s = train_s = 0.0
    mem = 0
    fitness = []
    for i in idx:
        run, hp = dense.program(pos[i], n)
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


def bench_sequential_torch(space, config, data, keys, pos, F, C, archs, sample, threads):
    """Each configuration alone in PyTorch eager (`torch_backend.make_torch_train`: the same decoding, network,
    optimizer and loop as `bench_sequential`'s, nothing compiled), the same sample of configurations, on
    `threads` intra-op threads (0: torch's default)."""
    if not torch_backend.available():
        raise SystemExit(f"--layout sequential_torch needs PyTorch: {torch_backend.INSTALL}")
    import torch  # optional: only this row needs it

    if threads:
        torch.set_num_threads(threads)
    trainer = torch_backend.make_torch_train(space, config, F, C)
    tdata = trainer.data(*(np.asarray(a) for a in data))
    idx = np.arange(len(archs)) if not sample or sample >= len(archs) else \
        np.random.default_rng(0).choice(len(archs), sample, replace=False)
    # Warm, on one minibatch: torch's first-use costs (lazy imports at the first optimizer step) and what is JAX
    # in this row (the decoder's one program, the metrics' eager ops), which a torch user pays once or never.
    rows = min(config.batch_size, len(tdata.y_train))
    trainer.train_position(keys[idx[0]], pos[idx[0]], tdata._replace(x_train=tdata.x_train[:rows],
                                                                     y_train=tdata.y_train[:rows]))
    t0 = time.perf_counter()
    fitness = [float(trainer.train_position(keys[i], pos[i], tdata).fitness) for i in idx]
    train_s = time.perf_counter() - t0
    scale = len(archs) / len(idx)
    useful = sum(mlp.useful_flops(archs[i], F, C) for i in idx) * scale
    return dict(programs=0, compile_s=0.0, train_s=train_s * scale, mem=None, computed_fwd=useful,
                fitness=np.asarray(fitness), sampled=int(len(idx)), torch_threads=torch_backend.num_threads())


SPACES = {  # --space
    "plain": lambda: mlp_space(max_layers=3, units=(16, 256)),
    "all": lambda: mlp_space(max_layers=3, units=(16, 256), optimizers=("sgd", "adam", "adamw", "nadam", "adadelta"),
                             beta2=(0.9, 0.9999), eps=(1e-8, 1e-4), init_schemes=INIT_SCHEMES,
                             per_layer_activation=True),
    # "all" and each member's own batch size (packed: one trainer per size)
    "all_batch": lambda: mlp_space(max_layers=3, units=(16, 256),
                                   optimizers=("sgd", "adam", "adamw", "nadam", "adadelta"), beta2=(0.9, 0.9999),
                                   eps=(1e-8, 1e-4), init_schemes=INIT_SCHEMES, per_layer_activation=True,
                                   batch_sizes=(32, 64, 128, 256)),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-dir", default=None, help="where the dataset's files are (default: the usual places)")
    p.add_argument("--sizes", default="1,8,32,128")
    p.add_argument("--epochs", default="1", help="epochs per round: an int or a comma list (1,5,10)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=0, help="cap minibatches per epoch (0: full) and scale")
    p.add_argument("--full-steps-upto", type=int, default=0, help="sizes <= this run uncapped")
    p.add_argument("--layout", default=None,
                   help=f"comma list of {','.join(BENCH_LAYOUTS)} (default masked,sequential); "
                        f"with --study-rounds of {','.join(LAYOUT_NAMES)} (default auto,masked,packed)")
    p.add_argument("--seq-sample", type=int, default=0, help="train only K configs sequentially, scale")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="sequential_torch: torch's intra-op threads (default 0: torch's own, one per core)")
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--study-rounds", type=int, default=0,
                   help="R > 0: run R-round Studies per --layout instead of the layout rows")
    p.add_argument("--space", choices=tuple(SPACES), default="plain",
                   help="plain: the default MLP space; all: plus every per-member dimension of issue 16 "
                        "(nadam/adadelta/adamw/sgd, beta2, eps, init schemes, per-layer activations); "
                        "all_batch: all plus each member's batch size (32 64 128 256)")
    p.add_argument("--out", default=None, help="markdown results file (+ .json next to it)")
    args = p.parse_args(argv)
    sizes = parse_ints(args.sizes, "sizes")
    epochs_list = parse_ints(args.epochs, "epochs")
    study_mode = args.study_rounds > 0
    layouts = (args.layout or ("auto,masked,packed" if study_mode else "masked,sequential")).split(",")
    allowed = LAYOUT_NAMES if study_mode else BENCH_LAYOUTS
    unknown = [name for name in layouts if name not in allowed]
    if unknown:
        raise SystemExit(f"unknown layout(s) {unknown}{' for --study-rounds' if study_mode else ''}; "
                         f"choose from {','.join(allowed)}")

    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    space = SPACES[args.space]()
    if study_mode:
        rows = run_studies(args, ds, space, sizes, epochs_list[0], layouts)
        peak = None
        table = render_studies(rows)
    else:
        peak = matmul_peak()
        print(f"float32 matmul peak: {peak:.1f} GFLOP/s", flush=True)
        rows = run_layouts(args, ds, space, sizes, epochs_list, layouts, peak)
        table = render(rows, peak)
    print(table)
    if args.out:
        meta = dict(
            command=" ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            machine=machine(), jax=jax.__version__, peak_gflops=peak,
            mode="study" if study_mode else "layouts",
        )
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1, default=str))
        out.write_text(f"```\n{json.dumps(meta, indent=1)}\n```\n\n{table}\n")


def _show(row: dict) -> str:
    """The row as one printed JSON line (floats rounded, program names left out)."""
    return json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                       if k != "compiled_names"}, default=str)


def run_layouts(args, ds, space, sizes, epochs_list, layouts, peak) -> list[dict]:
    """The layout rows: for each N, each epoch count and each layout, one timed round."""
    F, C = ds.num_features, ds.num_classes
    family = family_of(space)
    rows = []
    for N in sizes:
        steps = 0 if N <= args.full_steps_upto else args.steps
        data, scale, full_steps = cut_data(ds, args.batch, steps)
        pos, keys, archs = random_swarm(space, F, C, N, args.seed)
        useful_fwd = sum(mlp.useful_flops(a, F, C) for a in archs)
        for E in epochs_list:
            config = train.TrainConfig(epochs=E, batch_size=args.batch)
            useful = flops_per_round(useful_fwd, useful_fwd, config, data) * scale
            for layout in layouts:
                label, run_as, reason = layout, layout, None
                if layout == "auto":
                    study_config = StudyConfig(swarm_size=N, epochs=E, rounds=1, batch_size=args.batch)
                    run_as, reason = auto_layout.choose(family, space, study_config, DataShape(F, C, None),
                                                        len(ds.x_train))
                    label = f"auto->{run_as}"
                    if run_as not in AUTO_RUNS:
                        print(f"# N={N} epochs={E}: auto chose {run_as!r}, which this bench has no row for "
                              f"({reason})", flush=True)
                        continue
                jax.clear_caches()  # every row compiles what a fresh process would
                with CompileCounter() as counter:
                    if run_as in ("masked", "serial"):
                        r = bench_masked(space, config, data, keys, pos, F, C, archs, serial=run_as == "serial")
                    elif run_as == "packed":
                        r = bench_packed(space, config, data, keys, pos, F, C, archs, args.groups,
                                         examples=full_steps * args.batch * E)
                    elif run_as == "sequential_torch":
                        r = bench_sequential_torch(space, config, data, keys, pos, F, C, archs, args.seq_sample,
                                                   args.torch_threads)
                    else:
                        r = bench_sequential(space, config, data, keys, pos, F, C, archs, args.seq_sample)
                train_s = r["train_s"] * scale
                computed = flops_per_round(r["computed_fwd"], r["computed_fwd"], config, data) * scale
                row = dict(
                    dataset=args.dataset, N=N, epochs=E, layout=label, programs=r["programs"],
                    compiles_counted=counter.count, compiles_big=counter.big,
                    compile_listener_s=counter.seconds,
                    compile_s=r["compile_s"], train_s=train_s, total_s=r["compile_s"] + train_s,
                    steps_timed=data.x_train.shape[0] // args.batch, steps_full=full_steps,
                    scaled=scale != 1.0, useful_gflops=useful / train_s / 1e9,
                    computed_gflops=computed / train_s / 1e9, useful_frac=useful / computed,
                    mem_mb=(r["mem"] or 0) / 2**20, max_rss_mb=max_rss_mb(),
                    median_fitness=float(np.median(r["fitness"])), sampled=r.get("sampled"),
                    plan=r.get("plan"), reason=reason, compiled_names=name_counts(counter.programs),
                    torch_threads=r.get("torch_threads"),
                )
                row["useful_pct_peak"] = 100 * row["useful_gflops"] / peak
                row["computed_pct_peak"] = 100 * row["computed_gflops"] / peak
                rows.append(row)
                print(_show(row), flush=True)
            same = [r for r in rows if r["N"] == N and r["epochs"] == E]
            seq = [r for r in same if r["layout"] == "sequential"]
            eager = [r for r in same if r["layout"] == "sequential_torch"]
            for r in same:
                if seq:
                    r["speedup_vs_sequential"] = seq[0]["total_s"] / r["total_s"]
                    r["speedup_train_only"] = seq[0]["train_s"] / r["train_s"]
                if eager:
                    r["speedup_vs_torch"] = eager[0]["total_s"] / r["total_s"]
    return rows


def cut_dataset(ds, batch: int, steps: int):
    """The Dataset with its train split cut to steps x batch examples and val in proportion (steps=0: as is)."""
    full_steps = len(ds.x_train) // batch
    if not steps or steps >= full_steps:
        return ds
    n = steps * batch
    m = max(1, round(len(ds.x_val) * steps / full_steps))
    return ds._replace(x_train=ds.x_train[:n], y_train=ds.y_train[:n], x_val=ds.x_val[:m], y_val=ds.y_val[:m])


def run_studies(args, ds, space, sizes, epochs, layouts) -> list[dict]:
    """Study mode: an R-round `Study` per N and layout, its programs and compile seconds counted."""
    rows = []
    for N in sizes:
        steps = 0 if N <= args.full_steps_upto else args.steps
        data = cut_dataset(ds, args.batch, steps)
        for layout in layouts:
            config = StudyConfig(swarm_size=N, rounds=args.study_rounds, epochs=epochs, batch_size=args.batch,
                                 layout=layout, retrain=False, seed=args.seed)
            jax.clear_caches()  # every study compiles what a fresh process would
            with CompileCounter() as built:
                t0 = time.perf_counter()
                study = Study(space, data, config, progress=False)
                init_s = time.perf_counter() - t0
            with CompileCounter() as ran:
                t0 = time.perf_counter()
                result = study.run()
                run_s = time.perf_counter() - t0
            compile_s = built.seconds + ran.seconds
            row = dict(
                dataset=args.dataset, N=N, epochs=epochs, rounds=args.study_rounds, layout=layout,
                resolved=study.layout.name, reason=study.layout_reason, rounds_run=result.rounds_run,
                programs=built.count + ran.count, programs_big=built.big + ran.big,
                programs_init=built.count, programs_run=ran.count,
                compile_listener_s=compile_s, init_s=init_s, run_s=run_s,
                compile_share=compile_s / (init_s + run_s), best_fitness=result.best_fitness,
                n_train=len(data.x_train), n_val=len(data.x_val), max_rss_mb=max_rss_mb(),
                compiled_names=name_counts(built.programs + ran.programs),
            )
            rows.append(row)
            print(_show(row), flush=True)
    return rows


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
    """The layout rows: one markdown table per dataset, then the auto rows' reasons."""
    head = ("| N | epochs | layout | compiles (>= 1 s) | XLA compile s | compile s | train s | total s "
            "| x seq (total) | x seq (train) | x torch (total) | useful GFLOP/s (% peak) "
            "| computed GFLOP/s (% peak) | useful/computed | XLA mem MB | max RSS MB | steps timed/full "
            "| median fitness |")
    lines = [f"float32 matmul peak: {peak:.1f} GFLOP/s"]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        lines += ["", f"### {dataset}", "", head, "|" + "---|" * 18]
        for r in (r for r in rows if r["dataset"] == dataset):
            sampled = r.get("sampled") and r["sampled"] < r["N"]
            lines.append(
                f"| {r['N']} | {r['epochs']} | {r['layout']}{' (%d sampled)' % r['sampled'] if sampled else ''} "
                f"| {r['compiles_counted']} ({r['compiles_big']}) | {r['compile_listener_s']:.1f} "
                f"| {r['compile_s']:.1f} | {r['train_s']:.1f}{'*' if r['scaled'] else ''} "
                f"| {r['total_s']:.1f} | {r.get('speedup_vs_sequential', float('nan')):.2f} "
                f"| {r.get('speedup_train_only', float('nan')):.2f} "
                f"| {r.get('speedup_vs_torch', float('nan')):.2f} "
                f"| {r['useful_gflops']:.1f} ({r['useful_pct_peak']:.0f}%) "
                f"| {r['computed_gflops']:.1f} ({r['computed_pct_peak']:.0f}%) | {r['useful_frac']:.2f} "
                f"| {r['mem_mb']:.0f} | {r['max_rss_mb']:.0f} | {r['steps_timed']}/{r['steps_full']} "
                f"| {r['median_fitness']:.3f} |")
    lines.append("")
    lines.append("`*` train time measured on the capped steps and scaled to a full epoch. "
                 "compiles / XLA compile s: counted by a jax.monitoring listener (sequential: the sampled "
                 "configurations only, unscaled), in parentheses those of >= 1 s (training programs; the "
                 "rest are eager ops' tiny programs); compile s: wall time of lower().compile().")
    reasons = [r for r in rows if r.get("reason")]
    if reasons:
        lines += ["", "auto's choices:", ""]
        lines += [f"* {r['dataset']} N={r['N']} epochs={r['epochs']}: {r['layout']}: {r['reason']}" for r in reasons]
    return "\n".join(lines)


def render_studies(rows) -> str:
    """Study mode: one markdown table per dataset."""
    head = ("| N | epochs | rounds | layout | resolved | programs (>= 1 s) | XLA compile s | init s | run s "
            "| compile share | best fitness | train/val examples | max RSS MB |")
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        lines += [f"### {dataset} (study mode)", "", head, "|" + "---|" * 13]
        for r in (r for r in rows if r["dataset"] == dataset):
            lines.append(
                f"| {r['N']} | {r['epochs']} | {r['rounds_run']}/{r['rounds']} | {r['layout']} | {r['resolved']} "
                f"| {r['programs']} ({r['programs_big']}) | {r['compile_listener_s']:.1f} "
                f"| {r['init_s']:.1f} | {r['run_s']:.1f} "
                f"| {100 * r['compile_share']:.0f}% | {r['best_fitness']:.3f} | {r['n_train']}/{r['n_val']} "
                f"| {r['max_rss_mb']:.0f} |")
        lines.append("")
    lines.append("programs / XLA compile s: XLA compiles counted by a jax.monitoring listener over building "
                 "the Study and study.run(), in parentheses those of >= 1 s (training programs; the rest are eager "
                 "ops' tiny programs); compile share = XLA compile s / (init s + run s).")
    reasons = [r for r in rows if r["layout"] == "auto"]
    if reasons:
        lines += ["", "auto's choices:", ""]
        lines += [f"* {r['dataset']} N={r['N']} epochs={r['epochs']}: {r['reason']}" for r in reasons]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
