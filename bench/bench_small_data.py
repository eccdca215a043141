"""Small data as a scikit-learn user meets it: SwarmSearchClassifier's defaults on raw X vs MLPClassifier.

Usage::

    .venv/bin/python bench/bench_small_data.py [--seeds 3] [--datasets iris,digits,mc200,mc1000,mc5000]
        [--out bench/results/small_data_cpu.md]

On each dataset (scikit-learn's iris and digits; ``make_classification(n_samples=N, n_features=20,
n_informative=10, n_classes=3, random_state=seed)`` for N = 200, 1000, 5000) and each seed, one
``train_test_split(random_state=seed)`` (25% test), then, one after the other in one process:

* ``swarm``: ``SwarmSearchClassifier(random_state=seed)`` with its defaults, fitted on the raw training
  X (it standardizes X itself and sizes its epochs by minibatch steps).
* ``swarm-old``: the defaults before that change, ``SwarmSearchClassifier(random_state=seed,
  standardize=False, epochs=10, batch_size=64)``, on the raw X.
* ``mlp``: ``make_pipeline(StandardScaler(), MLPClassifier(random_state=seed))``, scikit-learn's
  defaults behind the scaler its documentation recommends.

Reported: the test accuracy's median [min-max] over seeds and the median seconds of fit + score.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits, load_iris, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from jaxswarm.sklearn import SwarmSearchClassifier


def load(name: str, seed: int):
    if name == "iris":
        return load_iris(return_X_y=True)
    if name == "digits":
        return load_digits(return_X_y=True)
    return make_classification(n_samples=int(name[2:]), n_features=20, n_informative=10, n_classes=3,
                               random_state=seed)


def estimator(method: str, seed: int):
    if method == "swarm":
        return SwarmSearchClassifier(random_state=seed)
    if method == "swarm-old":
        return SwarmSearchClassifier(random_state=seed, standardize=False, epochs=10, batch_size=64)
    return make_pipeline(StandardScaler(), MLPClassifier(random_state=seed))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--datasets", default="iris,digits,mc200,mc1000,mc5000")
    p.add_argument("--methods", default="swarm,swarm-old,mlp")
    p.add_argument("--out", type=Path, default=Path("bench/results/small_data_cpu.md"))
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    rows = []
    for name in args.datasets.split(","):
        for method in args.methods.split(","):
            accuracy, seconds = [], []
            for seed in range(args.seeds):
                X, y = load(name, seed)
                Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=seed)
                t0 = time.perf_counter()
                accuracy.append(estimator(method, seed).fit(Xtr, ytr).score(Xte, yte))
                seconds.append(time.perf_counter() - t0)
            rows.append((name, method, accuracy, seconds))
            print(f"{name} {method}: accuracy {np.median(accuracy):.4f} [{min(accuracy):.4f}-{max(accuracy):.4f}], "
                  f"{np.median(seconds):.1f} s", flush=True)
    lines = [f"# Small data: SwarmSearchClassifier's defaults vs MLPClassifier ({platform.node()}, "
             f"{time.strftime('%Y-%m-%d %H:%M')})", "",
             f"`python bench/bench_small_data.py --seeds {args.seeds} --datasets {args.datasets}` (see the script's "
             "docstring: raw X for the swarm rows, StandardScaler + MLPClassifier() for mlp).", "",
             "| dataset | method | test accuracy, median [min-max] | seconds (median) |", "|---|---|---|---|"]
    for name, method, accuracy, seconds in rows:
        lines.append(f"| {name} | {method} | {np.median(accuracy):.4f} [{min(accuracy):.4f}-{max(accuracy):.4f}] | "
                     f"{np.median(seconds):.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(
        [{"dataset": n, "method": m, "accuracy": a, "seconds": t} for n, m, a, t in rows], indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
