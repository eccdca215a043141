"""Reproduce the original study: an MLP on MNIST-format data tuned by particle swarm.

The study jaxswarm grows from tuned a Keras MNIST classifier with Optunity's
particle swarm, one network at a time: number of hidden layers, units per
layer, activation and learning rate; a maximin Latin hypercube start; k-fold
cross-validation as the fitness. This script runs the same study with the
swarm trained as one program, offline on Fashion-MNIST (Debian's
dataset-fashion-mnist) or on MNIST where its IDX files are available, and
writes the results directory plus a short markdown report.

    python experiments/original_study.py                       # Fashion-MNIST, defaults below
    python experiments/original_study.py --dataset mnist --data-dir ~/mnist
    python experiments/original_study.py --quick               # a few minutes on 2 CPU cores

Each particle's fitness is its mean validation accuracy over k folds of the
train+validation pool (particles x folds train in one program); the best
configuration is then retrained on train+validation and scored once on the
official test set.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import jax

from jaxswarm import data as data_lib
from jaxswarm import results
from jaxswarm.models import mlp_space
from jaxswarm.study import Study, StudyConfig


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion_mnist", choices=("fashion_mnist", "mnist", "digits"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=None, help="results dir [experiments/results/original_<dataset>]")
    p.add_argument("--swarm-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="small budget for a 2-core CPU (8 x 3 rounds, 2 epochs, 2 folds)")
    a = p.parse_args(argv)
    if a.quick:
        a.swarm_size, a.rounds, a.epochs, a.folds = 8, 3, 2, 2
    out = a.out or Path("experiments/results") / f"original_{a.dataset}"
    if (out / results.EVALUATIONS).exists():
        raise SystemExit(f"{out} already holds a study; remove it or pass --out")

    # The original study's space: layers, units per layer, activation, learning rate.
    space = mlp_space(max_layers=3, units=(16, 512), activations=("relu", "tanh", "sigmoid", "elu"),
                      learning_rate=(1e-4, 1e-1))
    dataset = data_lib.load_dataset(a.dataset, data_dir=a.data_dir, seed=a.seed)
    config = StudyConfig(swarm_size=a.swarm_size, rounds=a.rounds, epochs=a.epochs, batch_size=a.batch_size,
                         folds=a.folds, init="lhs", seed=a.seed)
    t0 = time.perf_counter()
    result = Study(space, dataset, config, out_dir=out).run()
    wall = time.perf_counter() - t0

    rounds = results.read_jsonl(out / results.ROUNDS)
    lines = [
        f"# Original study reproduced on {a.dataset}",
        "",
        f"- command: `python experiments/original_study.py {' '.join(argv or __import__('sys').argv[1:])}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M')}; device: {jax.devices()[0].device_kind} "
        f"({jax.default_backend()}); jax {jax.__version__}; host {platform.node()}",
        f"- data: {dataset.describe()}",
        f"- space: {space!r}",
        f"- budget: {a.swarm_size} particles x {result.rounds_run} rounds = "
        f"{a.swarm_size * result.rounds_run} configurations, {a.epochs} epochs each, "
        f"{a.folds}-fold CV ({a.swarm_size * a.folds} networks per program), maximin LHS start",
        f"- wall time: {wall:.1f} s (compile, all rounds, final retrain)",
        "",
        f"**Best configuration** (mean {a.folds}-fold validation accuracy {result.best_fitness:.4f}):",
        "",
        "```",
        "\n".join(f"{k} = {v}" for k, v in result.best_config.items()),
        "```",
        "",
        f"**Test accuracy** after retraining on train+validation: **{result.test_accuracy:.4f}**",
        "",
        "| round | best so far | round median | seconds |",
        "|---|---|---|---|",
    ]
    for r in rounds:
        med = "–" if r["median_fitness"] is None else f"{r['median_fitness']:.4f}"
        lines.append(f"| {r['round'] + 1} | {r['best_fitness']:.4f} | {med} | {r['seconds']:.1f} |")
    results.write_text(out / "report.md", "\n".join(lines) + "\n")
    print(f"report: {out / 'report.md'}")


if __name__ == "__main__":
    main()
