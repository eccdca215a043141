"""A PSO study of the convolutional search space on Fashion-MNIST (target: test accuracy >= 93.5%).

The swarm's members are masked max-size CNNs (``jaxswarm.cnn``) trained as
one ``jit(vmap(...))`` program per round (compiled once for the study);
PSO moves the particles between rounds. Search: ``--swarm`` members x
``--rounds`` rounds, each member trained ``--epochs`` epochs on the first
``--search-train`` training images (the 54000-image train split by
default) and scored on the 6000-image validation split. Then the global
best configuration is retrained as its real-size dense CNN on train+val
(60000 images) for ``--retrain-epochs`` epochs and scored ONCE on the
official 10000-image test set (last epoch; no selection on test).

Run (GPU):  python experiments/cnn_fashion.py --out experiments/results/cnn_fashion
Run (CPU, small):  python experiments/cnn_fashion.py --swarm 4 --rounds 2 --epochs 1 --search-train 5000 \\
    --retrain-epochs 2 --max-filters 32

Writes ``report.md``, ``rounds.json`` and ``best.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxswarm import cnn, pso as pso_lib, sampling, train
from jaxswarm.data import load_dataset
from jaxswarm.space import Fixed, SearchSpace

TARGET = 0.935


def _runner():
    """The CNN runner helpers live in bench/bench_cnn.py (until train.py has model='cnn')."""
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_cnn.py"
    spec = importlib.util.spec_from_file_location("bench_cnn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def study_space(max_filters: int, lr_decay: float) -> SearchSpace:
    space = cnn.cnn_space(
        max_blocks=3,
        filters=(16, max_filters),
        kernels=(3, 5),
        dense_units=(64, 256),
        activations=("relu", "elu", "swish"),
        learning_rate=(3e-4, 1e-2),
        dropout=(0.0, 0.5),
        batch_norm=True,
        poolings=("max", "avg"),
    )
    return SearchSpace({**space.params, "lr_decay": Fixed(lr_decay)})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--swarm", type=int, default=16)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--search-train", type=int, default=None, help="training images used by the search")
    p.add_argument("--search-val", type=int, default=None, help="validation images used by the search")
    p.add_argument("--retrain-epochs", type=int, default=30)
    p.add_argument("--max-filters", type=int, default=64)
    p.add_argument("--lr-decay", type=float, default=0.01, help="cosine schedule's final lr / initial lr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("experiments/results/cnn_fashion"))
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    bench = _runner()
    ds = load_dataset("fashion_mnist", seed=args.seed)
    space = study_space(args.max_filters, args.lr_decay)
    n_search = len(ds.y_train) if args.search_train is None else min(args.search_train, len(ds.y_train))
    config = train.TrainConfig(epochs=args.epochs, batch_size=args.batch, eval_batch_size=1000)
    n_val = len(ds.y_val) if args.search_val is None else min(args.search_val, len(ds.y_val))
    data = train.device_data(ds.x_train[:n_search], ds.y_train[:n_search], ds.x_val[:n_val], ds.y_val[:n_val])
    trainer = bench.make_cnn_trainer(space, config, ds.input_shape, ds.num_classes, n_search)
    swarm = pso_lib.make_pso(args.swarm, space.num_dims, maximize=True, num_iterations=args.rounds)
    key = jax.random.key(args.seed)
    design = sampling.initial_design(jax.random.fold_in(key, 1), "lhs", args.swarm, space.num_dims)
    state = swarm.init(jax.random.fold_in(key, 2), design)

    keys0 = jax.random.split(jax.random.fold_in(key, 100), args.swarm)
    t = time.perf_counter()
    compiled = trainer.train_swarm.lower(keys0, state.position, data).compile()
    compile_s = time.perf_counter() - t
    print(f"{space.describe()}\ncompiled the swarm program in {compile_s:.1f}s", flush=True)

    rounds = []
    for r in range(args.rounds):
        t = time.perf_counter()
        k_train, k_tell = jax.random.split(jax.random.fold_in(key, 100 + r))
        positions = swarm.ask(state)
        metrics = compiled(jax.random.split(k_train, args.swarm), positions, data)
        state = swarm.tell(k_tell, state, metrics.fitness)
        fitness = np.asarray(metrics.fitness)
        seconds = time.perf_counter() - t
        best_cfg = space.to_python(np.asarray(state.global_best_position))
        rounds.append({
            "round": r, "seconds": seconds, "best_fitness": float(state.global_best_fitness),
            "round_max": float(fitness.max()), "round_median": float(np.median(fitness)),
            "diverged": int(np.asarray(metrics.diverged).sum()), "best_config": best_cfg,
            "configs": space.to_python_batch(np.asarray(positions)), "fitness": fitness.tolist(),
        })
        print(f"round {r + 1}/{args.rounds} {seconds:.1f}s best {float(state.global_best_fitness):.4f} "
              f"round max {fitness.max():.4f} median {np.median(fitness):.4f} | {best_cfg}", flush=True)
    search_s = time.perf_counter() - t_start

    # Retrain the global best as its real-size dense CNN on train+val; score once on test.
    best_pos = np.asarray(state.global_best_position)
    x_all = np.concatenate([ds.x_train, ds.x_val])
    y_all = np.concatenate([ds.y_train, ds.y_val])
    rconfig = train.TrainConfig(epochs=args.retrain_epochs, batch_size=args.batch, eval_batch_size=1000)
    test_data = train.device_data(x_all, y_all, ds.x_test, ds.y_test)
    build, describe = bench.make_dense_cnn_trainer(space, rconfig, ds.input_shape, ds.num_classes, len(y_all))
    run, hp, arch = build(best_pos)
    t = time.perf_counter()
    m = jax.block_until_ready(run(jax.random.fold_in(key, 2**30), hp, test_data))
    retrain_s = time.perf_counter() - t
    test_acc = float(m.val_accuracy)
    curve = np.asarray(m.val_accuracy_curve).tolist()
    wall = time.perf_counter() - t_start
    print(f"retrained {arch} for {args.retrain_epochs} epochs in {retrain_s:.1f}s: test accuracy {test_acc:.4f}")

    member_epochs = args.swarm * args.rounds * args.epochs
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    best = {
        "best_config": space.to_python(best_pos), "best_val_accuracy": float(state.global_best_fitness),
        "arch": arch, "learning_rate": float(hp.learning_rate), "test_accuracy": test_acc,
        "test_accuracy_curve": curve, "target": TARGET, "reached": test_acc >= TARGET,
        "compile_s": compile_s, "search_s": search_s, "retrain_s": retrain_s, "wall_s": wall,
        "budget": {"swarm": args.swarm, "rounds": args.rounds, "epochs": args.epochs,
                   "search_train": n_search, "search_val": n_val, "member_epochs": member_epochs,
                   "retrain_epochs": args.retrain_epochs},
        "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()})", "jax": jax.__version__,
        "argv": sys.argv[1:],
    }
    (out / "best.json").write_text(json.dumps(best, indent=1, default=str))
    (out / "rounds.json").write_text(json.dumps(rounds, indent=1, default=str))
    mcfg = trainer.model_config
    lines = [
        "# CNN search space on Fashion-MNIST",
        "",
        f"Device: {best['device']}, host {platform.node()}, jax {jax.__version__}. Seed {args.seed}.",
        f"Command: `python experiments/cnn_fashion.py {' '.join(sys.argv[1:])}`",
        "",
        f"**Test accuracy {100 * test_acc:.2f}%** (target {100 * TARGET:.1f}%: "
        f"{'reached' if test_acc >= TARGET else 'NOT reached'}), the PSO global best retrained once on "
        f"train+val ({len(y_all)} images, {args.retrain_epochs} epochs) and scored on the 10000-image test set "
        "after the last epoch.",
        "",
        "## Budget and wall time",
        "",
        f"- search: {args.swarm} particles x {args.rounds} rounds x {args.epochs} epochs on {n_search} training "
        f"images = {member_epochs} member-epochs; fitness = validation accuracy ({n_val} images) after the last epoch",
        f"- masked max-size network: {mcfg}; computed forward {cnn.computed_flops_cnn(mcfg) / 1e6:.1f} MFLOP "
        "per image per member",
        f"- compile {compile_s:.1f}s (once), search total {search_s:.1f}s (data loading and compile included), "
        f"retrain {retrain_s:.1f}s (compile included), wall {wall:.1f}s",
        "",
        "## Best configuration",
        "",
        f"- validation accuracy in the search: {100 * best['best_val_accuracy']:.2f}%",
        f"- {best['best_config']}",
        f"- real network: {arch}, useful forward {cnn.useful_flops_cnn(arch, ds.input_shape, 10) / 1e6:.2f} "
        "MFLOP per image",
        f"- test accuracy per retrain epoch: {', '.join(f'{100 * a:.2f}' for a in curve)}",
        "",
        "## Rounds",
        "",
        "| round | seconds | best val acc | round max | round median | diverged |",
        "|---|---|---|---|---|---|",
    ]
    for r in rounds:
        lines.append(f"| {r['round'] + 1} | {r['seconds']:.1f} | {r['best_fitness']:.4f} | {r['round_max']:.4f} | "
                     f"{r['round_median']:.4f} | {r['diverged']} |")
    lines += [
        "",
        "Search space:",
        "",
        "```",
        space.describe(),
        "```",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
