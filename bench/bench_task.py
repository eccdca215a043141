"""Your own Flax MLP as a Task, beside the built-in MLP and a plain Flax + Optax loop (or the CNN preset beside the
built-in CNN), on the same configurations.

Usage::

    .venv/bin/python bench/bench_task.py [--data-dir /usr/share/datasets/fashion-mnist] [--swarm-size 32]
        [--epochs 5] [--rounds 3] [--train-rows 12800] [--group-size 1] [--out bench/results/task_cpu.md]
        [--family mlp|cnn]

The same R rounds of N configurations (drawn from a fixed seed: one hidden layer of width 32 / 64 / 128 / 256,
activation relu / tanh, Adam at a log-uniform learning rate in [1e-4, 1e-1]) train E epochs at
batch 64 on the first ``--train-rows`` Fashion-MNIST training images, scored on 2,000 validation
images, three ways, one after another in one process (JAX's caches cleared between rows):

* ``task``: a Flax module of static width and activation as a `jaxswarm.Task`, trained by
  `make_engine` round after round (each static group in ``jit(vmap)`` programs of ``--group-size``
  members, a study's default on a CPU being 1; a group's programs compile once, in the first round
  that reaches it).
* ``builtin``: the built-in MLP family (``mlp_space(max_layers=1, ...)``, the same configurations
  encoded into it), trained round after round by a `Study`'s program (layout auto, `Study.evaluate`).
* ``flax-loop``: what a script tuning one network at a time writes: for each of the R x N
  configurations a Flax module, ``optax.adam``, a ``jax.jit`` train step and a Python loop over the
  minibatches (one compile per configuration).

``--family cnn`` compares the two CNN paths instead, on R x N configurations of 1 or 2 conv blocks (16 or 32
filters, doubling in the second block, 3x3), a dense layer of 64 or 128 units, relu, Adam at a log-uniform
learning rate in [1e-4, 1e-2] (8 static signatures):

* ``preset``: the CNN preset (`jaxswarm.task.cnn_task`), a Flax CNN of static blocks, filters and dense
  width, through `Study.evaluate` (the path a study of it takes: groups of ``--group-size``).
* ``builtin``: the built-in CNN family (``cnn_space(max_blocks=2, ...)``, the same configurations), through
  `Study.evaluate` (layout auto).

Each row's seconds are wall time from its first line to its last result on the host: compiles
included, data loading excluded. ``x flax-loop`` is the flax-loop row's seconds over the row's.
The median validation accuracy is a sanity check (the three differ in initialization and
data order, not in the configurations).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxswarm as js
from jaxswarm.study import round_keys

WIDTHS = (32, 64, 128, 256)
ACTIVATIONS = ("relu", "tanh")
BATCH = 64
VAL_ROWS = 2000


class MLP(nn.Module):
    """One hidden layer, the user's own module."""

    width: int
    activation: str

    @nn.compact
    def __call__(self, x, hp=None, train=False):
        x = x.reshape(len(x), -1)
        return nn.Dense(10)(getattr(nn, self.activation)(nn.Dense(self.width)(x)))


def configurations(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"width": int(rng.choice(WIDTHS)), "activation": str(rng.choice(ACTIVATIONS)),
             "learning_rate": float(np.exp(rng.uniform(np.log(1e-4), np.log(1e-1))))} for _ in range(n)]


def task_row(configs, data, epochs, group_size, n):
    space = js.SearchSpace({"width": js.Choice(list(WIDTHS)), "activation": js.Choice(list(ACTIVATIONS)),
                            "learning_rate": js.Float(1e-4, 1e-1, log=True)})
    positions = np.stack([space.encode(c) for c in configs]).astype(np.float32)
    t0 = time.perf_counter()
    task = js.Task(lambda s: MLP(s["width"], s["activation"]), js.task.softmax_loss, js.task.classification_metrics,
                   js.Objective("accuracy"), data, batch_size=BATCH)
    engine = js.make_engine(js.supervised(task), space, epochs, task.objective, group_size=group_size)
    accuracy = []
    for r in range(len(configs) // n):  # one round of n members at a time, as a study trains them
        result = engine.train(round_keys(jax.random.key(0), r, n)[0], positions[r * n:(r + 1) * n])
        accuracy.append(np.asarray(result.metrics["accuracy"]))
    seconds = time.perf_counter() - t0
    return seconds, np.concatenate(accuracy), {"programs": engine.stats["compiles"],
                                               "signatures": len(engine.stats["signatures"])}


def builtin_row(configs, dataset, epochs, n):
    space = js.mlp_space(max_layers=1, units=(min(WIDTHS), max(WIDTHS)), activations=ACTIVATIONS,
                         learning_rate=(1e-4, 1e-1))
    return _builtin(space, [{"n_layers": 1, "units_1": c["width"], "activation": c["activation"],
                             "learning_rate": c["learning_rate"]} for c in configs], dataset, epochs, n)


def _builtin(space, configs, dataset, epochs, n):
    """The built-in family's `Study.evaluate`, round after round of n of `configs` (in `space`'s names)."""
    positions = np.stack([space.encode(c) for c in configs]).astype(np.float32)
    t0 = time.perf_counter()
    study = js.Study(space, dataset, js.StudyConfig(swarm_size=n, epochs=epochs, batch_size=BATCH,
                                                    retrain=False), progress=False)
    accuracy = [study.evaluate(positions[r * n:(r + 1) * n], r).val_accuracy for r in range(len(configs) // n)]
    seconds = time.perf_counter() - t0
    return seconds, np.concatenate(accuracy), {"layout": study.layout.name}


def flax_loop_row(configs, data, epochs):
    x, y = data.train["x"], data.train["y"]
    xv, yv = jnp.asarray(data.val["x"]), jnp.asarray(data.val["y"])
    steps = len(y) // BATCH
    accuracies = []
    t0 = time.perf_counter()
    for i, c in enumerate(configs):
        model, tx = MLP(c["width"], c["activation"]), optax.adam(c["learning_rate"])
        params = model.init(jax.random.key(i), x[:1])["params"]
        opt_state = tx.init(params)

        @jax.jit
        def step(params, opt_state, xb, yb, model=model, tx=tx):
            def loss(p):
                return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, xb), yb).mean()
            grads = jax.grad(loss)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        rng = np.random.default_rng(i)
        for _ in range(epochs):
            order = rng.permutation(len(y))
            for s in range(steps):
                idx = order[s * BATCH:(s + 1) * BATCH]
                params, opt_state = step(params, opt_state, x[idx], y[idx])
        logits = jax.jit(model.apply)({"params": params}, xv)
        accuracies.append(float(jnp.mean(jnp.argmax(logits, -1) == yv)))
    return time.perf_counter() - t0, np.asarray(accuracies), {"programs": len(configs)}


CNN_SPACE = js.SearchSpace({"blocks": js.Choice([1, 2]), "filters": js.Choice([16, 32]), "dense": js.Choice([64, 128]),
                            "learning_rate": js.Float(1e-4, 1e-2, log=True)})


def cnn_configurations(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"blocks": int(rng.choice([1, 2])), "filters": int(rng.choice([16, 32])),
             "dense": int(rng.choice([64, 128])),
             "learning_rate": float(np.exp(rng.uniform(np.log(1e-4), np.log(1e-2))))} for _ in range(n)]


def cnn_preset_row(configs, data, epochs, group_size, n):
    positions = np.stack([CNN_SPACE.encode(c) for c in configs]).astype(np.float32)
    t0 = time.perf_counter()
    task = js.task.cnn_task(data, space=CNN_SPACE, batch_size=BATCH)
    study = js.Study(CNN_SPACE, task, js.StudyConfig(swarm_size=n, epochs=epochs, batch_size=BATCH, retrain=False,
                                                     chunk_size=group_size), progress=False)
    accuracy = [study.evaluate(positions[r * n:(r + 1) * n], r).values["accuracy"] for r in range(len(configs) // n)]
    seconds = time.perf_counter() - t0
    return seconds, np.concatenate(accuracy), {"programs": study.engine.stats["compiles"],
                                               "signatures": len(study.engine.stats["signatures"])}


def cnn_builtin_row(configs, dataset, epochs, n):
    space = js.cnn_space(max_blocks=2, filters=(16, 64), kernels=(3,), dense_units=(64, 128), activations=("relu",),
                         learning_rate=(1e-4, 1e-2))
    return _builtin(space, [{"n_blocks": c["blocks"], "filters_1": c["filters"], "filters_2": 2 * c["filters"],
                             "dense_units": c["dense"], "activation": "relu", "learning_rate": c["learning_rate"]}
                            for c in configs],
                    dataset, epochs, n)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--swarm-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--train-rows", type=int, default=12800)
    p.add_argument("--group-size", type=int, default=1)
    p.add_argument("--rows", default=None, help="default: task,builtin,flax-loop (mlp); preset,builtin (cnn)")
    p.add_argument("--family", choices=("mlp", "cnn"), default="mlp")
    p.add_argument("--out", type=Path, default=Path("bench/results/task_cpu.md"))
    args = p.parse_args(argv)

    full = js.load_dataset("fashion_mnist", data_dir=args.data_dir)
    dataset = full._replace(x_train=full.x_train[:args.train_rows], y_train=full.y_train[:args.train_rows],
                            x_val=full.x_val[:VAL_ROWS], y_val=full.y_val[:VAL_ROWS])
    data = js.TaskData.from_dataset(dataset)
    n = args.swarm_size
    cnn = args.family == "cnn"
    configs = (cnn_configurations if cnn else configurations)(n * args.rounds, seed=0)  # round r: [r*n, (r+1)*n)
    rows = {}
    jax.block_until_ready(jax.jit(lambda a: a @ a)(jnp.ones((64, 64))))  # JAX's first-use setup, in no row
    for name in (args.rows or ("preset,builtin" if cnn else "task,builtin,flax-loop")).split(","):
        jax.clear_caches()
        if cnn:
            rows[name] = (cnn_preset_row(configs, data, args.epochs, args.group_size, n) if name == "preset" else
                          cnn_builtin_row(configs, dataset, args.epochs, n))
        elif name == "task":
            rows[name] = task_row(configs, data, args.epochs, args.group_size, n)
        elif name == "builtin":
            rows[name] = builtin_row(configs, dataset, args.epochs, n)
        else:
            rows[name] = flax_loop_row(configs, data, args.epochs)
        print(f"{name}: {rows[name][0]:.1f} s, median val accuracy {np.median(rows[name][1]):.4f}, {rows[name][2]}",
              flush=True)
    base_row = "builtin" if cnn else "flax-loop"
    base = rows.get(base_row, (None,))[0]
    title = ("The CNN preset as a Task vs the built-in CNN" if cnn else
             "Your own MLP as a Task vs the built-in MLP vs a plain Flax loop")
    lines = [f"# {title} ({platform.node()}, "
             f"{jax.devices()[0].device_kind}, {time.strftime('%Y-%m-%d %H:%M')})", "",
             f"`python bench/bench_task.py --swarm-size {n} --rounds {args.rounds} --epochs {args.epochs} "
             f"--train-rows {args.train_rows} --group-size {args.group_size}"
             f"{' --family cnn' if cnn else ''}`: Fashion-MNIST, {args.rounds} rounds "
             f"of {n} configurations ({len(configs)} in all), {args.epochs} epochs, batch {BATCH}, "
             f"{args.train_rows} training rows, {VAL_ROWS} validation rows.", "",
             f"| row | seconds | x {base_row} | median val accuracy | notes |", "|---|---|---|---|---|"]
    for name, (seconds, acc, notes) in rows.items():
        ratio = "-" if base is None else f"{base / seconds:.2f}"
        lines.append(f"| {name} | {seconds:.1f} | {ratio} | {np.median(acc):.4f} | {notes} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(
        {name: {"seconds": r[0], "val_accuracy": r[1].tolist(), **r[2]} for name, r in rows.items()}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
